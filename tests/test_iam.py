"""IAM as AWS enforces it: every call of a function is checked against the role SAM makes for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError

from devtools.embedded_aws import FunctionError
from devtools.embedded_aws.aws_server import Credentials
from devtools.embedded_aws.template import load_document
from tests.plugins.pipeline import emulator_gateway, pipeline_parameters

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
FAKE_TEMPLATE = DATA / "fake_template.yaml"


def refused(call) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    return raised.value.response["Error"]["Code"]


def test_a_role_that_may_only_read_one_bucket_may_do_nothing_else(deploy_stack):
    stack = deploy_stack(template=FAKE_TEMPLATE, start_pollers=False)
    admin_s3 = stack.client("s3")
    for bucket in ("bkt-one", "bkt-two"):
        admin_s3.create_bucket(Bucket=bucket)
        admin_s3.put_object(Bucket=bucket, Key="a.txt", Body=b"a")
    iam = stack.client("iam")
    deployer = stack.client("sts").get_caller_identity()["Arn"]
    trust = {"Statement": [{"Effect": "Allow", "Principal": {"AWS": deployer}, "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName="reader", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    only_get = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bkt-one/*"}],
    }
    iam.put_role_policy(RoleName="reader", PolicyName="get", PolicyDocument=json.dumps(only_get))
    # Through the STS API, signed and checked like any other call.
    assumed = stack.client("sts").assume_role(RoleArn=arn, RoleSessionName="reader")["Credentials"]
    credentials = Credentials(assumed["AccessKeyId"], assumed["SecretAccessKey"], assumed["SessionToken"])

    def client(service):
        return stack.server.client(service, credentials)

    s3 = client("s3")
    assert s3.get_object(Bucket="bkt-one", Key="a.txt")["Body"].read() == b"a"
    assert refused(lambda: s3.get_object(Bucket="bkt-two", Key="a.txt")) == "AccessDenied"
    assert refused(lambda: s3.put_object(Bucket="bkt-one", Key="b.txt", Body=b"b")) == "AccessDenied"
    table = stack.physical_id("RunsTable")
    item = {"runId": {"S": "r"}}
    # Each service's own error code, as botocore reads it from AWS.
    denied = "AccessDeniedException"
    assert refused(lambda: client("dynamodb").put_item(TableName=table, Item=item)) == denied
    queue = stack.physical_id("WorkQueue")
    assert refused(lambda: client("sqs").send_message(QueueUrl=queue, MessageBody="x")) == "AccessDenied"
    flow = stack.physical_id("Flow")
    assert refused(lambda: client("stepfunctions").start_execution(stateMachineArn=flow)) == denied
    entry = {"Source": "a", "DetailType": "b", "Detail": "{}"}
    assert refused(lambda: client("events").put_events(Entries=[entry])) == denied
    assert refused(lambda: client("secretsmanager").get_secret_value(SecretId="any")) == denied
    function = stack.physical_id("EchoFunction")
    assert refused(lambda: client("lambda").invoke(FunctionName=function, Payload=b"{}")) == denied


def test_a_role_scoped_to_a_resource_may_use_it_and_only_it(deploy_stack):
    """moto checked these services against the resource "*" (no scoped policy ever matched); the fixes give it
    the resource each request names."""
    stack = deploy_stack(template=FAKE_TEMPLATE, start_pollers=False)
    admin_dynamodb = stack.client("dynamodb")
    other = "other-table"
    admin_dynamodb.create_table(
        TableName=other,
        KeySchema=[{"AttributeName": "runId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "runId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    iam = stack.client("iam")
    trust = {
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
    }
    arn = iam.create_role(RoleName="writer", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "dynamodb:PutItem",
                "Resource": stack.attribute("RunsTable", "Arn"),
            },
            {
                "Effect": "Allow",
                "Action": "lambda:InvokeFunction",
                "Resource": stack.attribute("EchoFunction", "Arn"),
            },
            {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": stack.attribute("WorkQueue", "Arn")},
        ],
    }
    iam.put_role_policy(RoleName="writer", PolicyName="scoped", PolicyDocument=json.dumps(policy))
    credentials = stack.server.assume_role(arn, "writer")
    dynamodb = stack.server.client("dynamodb", credentials)
    item = {"runId": {"S": "r"}}
    dynamodb.put_item(TableName=stack.physical_id("RunsTable"), Item=item)
    assert refused(lambda: dynamodb.put_item(TableName=other, Item=item)) == "AccessDeniedException"
    response = stack.server.client("lambda", credentials).invoke(
        FunctionName=stack.physical_id("EchoFunction"), Payload=b"{}"
    )
    assert json.loads(response["Payload"].read())["greeting"] == "hello"
    # A batch is authorised as its single action, as in AWS.
    sqs = stack.server.client("sqs", credentials)
    entries = [{"Id": "1", "MessageBody": "a"}]
    assert not sqs.send_message_batch(QueueUrl=stack.physical_id("WorkQueue"), Entries=entries).get("Failed")


def template_copy(tmp_path: Path, edit) -> Path:
    """template.yaml elsewhere, its paths made absolute, changed by `edit(document)`."""
    text = (ROOT / "template.yaml").read_text()
    text = text.replace("CodeUri: src/", f"CodeUri: {ROOT / 'src'}/")
    text = text.replace("DefinitionUri: statemachine/", f"DefinitionUri: {ROOT / 'statemachine'}/")
    copy = tmp_path / "template.yaml"
    copy.write_text(text)
    document = load_document(copy)
    edit(document)
    # The loader turned short-form tags into their long form, which dumps as plain YAML.
    copy.write_text(yaml.safe_dump(document, sort_keys=False))
    return copy


def without_statement(function: str, sid: str):
    """An edit that removes the statement `sid` from the function's policies (found, or the test is wrong)."""

    def edit(document) -> None:
        removed = 0
        for policy in document["Resources"][function]["Properties"]["Policies"]:
            if isinstance(policy, dict) and isinstance(policy.get("Statement"), list):
                kept = [s for s in policy["Statement"] if s.get("Sid") != sid]
                removed += len(policy["Statement"]) - len(kept)
                policy["Statement"] = kept
        assert removed == 1, f"{function} has no statement {sid}"

    return edit


without_record_access = without_statement("FinishRequestFunction", "RecordReadWrite")


def finish_event() -> dict:
    return json.loads((ROOT / "events" / "finish_request.json").read_text())


def test_a_statement_removed_from_the_template_makes_the_local_run_fail_with_access_denied(
    deploy_stack, tmp_path
):
    stack = deploy_stack(template=template_copy(tmp_path, without_record_access), start_pollers=False)
    with pytest.raises(FunctionError) as raised:
        stack.invoke("FinishRequestFunction", finish_event())
    assert type(raised.value).__name__ == "ClientError"
    assert "(AccessDeniedException)" in str(raised.value) and "dynamodb:GetItem" in str(raised.value)


def test_the_same_run_passes_the_check_with_the_template_as_it_is(deploy_stack):
    stack = deploy_stack(start_pollers=False)
    result = stack.invoke("FinishRequestFunction", finish_event())
    assert result["requestId"] == "example-image-request"


def without_delay_retries(document) -> None:
    """The queue statement without sqs:ChangeMessageVisibility (receive and delete kept)."""
    (statement,) = [
        s
        for p in document["Resources"]["SqsRequestFunction"]["Properties"]["Policies"]
        if isinstance(p, dict) and isinstance(p.get("Statement"), list)
        for s in p["Statement"]
        if s.get("Sid") == "OwnQueue"
    ]
    statement["Action"] = [a for a in statement["Action"] if a != "sqs:ChangeMessageVisibility"]


def test_without_its_change_message_visibility_statement_the_queue_function_cannot_delay_a_retry(
    deploy_stack, emulator, tmp_path
):
    """The permission once found only by reading: now the local run shows it missing."""
    log = tmp_path / "functions.log"
    stack = deploy_stack(
        parameters={**pipeline_parameters(emulator), "RetryBaseDelaySeconds": "1"},
        extra_environment=emulator_gateway(emulator).environment(),
        template=template_copy(tmp_path, without_delay_retries),
        function_log=log,
    )
    emulator.fail_next("503", count=2)  # both attempts of the first delivery: a transient failure
    stack.client("sqs").send_message(
        QueueUrl=stack.physical_id("RequestQueue"),
        MessageBody=json.dumps({"requestId": "r1", "prompt": "hi"}),
    )
    stack.drain(timeout=60)
    delays = [line for line in log.read_text().splitlines() if "could not delay message" in line]
    assert delays and "AccessDenied" in delays[0] and "sqs:ChangeMessageVisibility" in delays[0], delays
