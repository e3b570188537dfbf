"""Least privilege, read from the roles SAM generates (its translator, offline) and tried against the deployed
stack (moto with IAM enforced, each call under the function's own role)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devtools.embedded_aws.roles import managed_policy_document, translate
from devtools.embedded_aws.template import Template

ROOT = Path(__file__).resolve().parents[1]

# What every function may do on "*": Lambda's own log delivery (AWSLambdaBasicExecutionRole, which SAM
# attaches to every role it makes) and X-Ray's trace upload (AWSXrayWriteOnlyAccess, for `Tracing: Active`);
# neither API takes a resource-level permission.
LAMBDA_LOGS = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
XRAY = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "xray:GetSamplingStatisticSummaries",
}
# The state machine's log delivery to CloudWatch Logs (documented as taking only "*").
LOG_DELIVERY = {
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}
STAR_RESOURCE_ACTIONS = LAMBDA_LOGS | XRAY | LOG_DELIVERY

OWN_QUEUE = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ChangeMessageVisibility",
}
RECORD = {"dynamodb:GetItem", "dynamodb:UpdateItem"}
CUSTOMER_KEY = {"kms:Decrypt", "kms:GenerateDataKey"}
# Per role: every action it may be granted (the optional statements included: SSM, the customer key).
ALLOWED_ACTIONS = {
    "S3UploadFunction": LAMBDA_LOGS
    | XRAY
    | OWN_QUEUE
    | RECORD
    | CUSTOMER_KEY
    | {
        "s3:GetObject",
        "s3:PutObject",
        "states:StartExecution",
        "events:PutEvents",
        "secretsmanager:GetSecretValue",
        "ssm:GetParameter",
    },
    "SqsRequestFunction": LAMBDA_LOGS
    | XRAY
    | OWN_QUEUE
    | RECORD
    | CUSTOMER_KEY
    | {
        "s3:GetObject",
        "s3:PutObject",
        "states:StartExecution",
        "events:PutEvents",
        "secretsmanager:GetSecretValue",
    },
    "PollExecutionFunction": LAMBDA_LOGS
    | XRAY
    | CUSTOMER_KEY
    | {"s3:PutObject", "secretsmanager:GetSecretValue"},
    "FinishRequestFunction": LAMBDA_LOGS
    | XRAY
    | RECORD
    | CUSTOMER_KEY
    | {"s3:GetObject", "s3:PutObject", "events:PutEvents", "sqs:SendMessage"},
    "SweeperFunction": LAMBDA_LOGS
    | XRAY
    | RECORD
    | CUSTOMER_KEY
    | {"dynamodb:Query", "events:PutEvents", "sqs:SendMessage"},
    "ToolExecutionPoller": LOG_DELIVERY | XRAY | {"lambda:InvokeFunction"},
}


def _branches(value: Any) -> Iterator[Any]:
    """Every value a policy element may take: both branches of each Fn::If (AWS::NoValue dropped)."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        for branch in value["Fn::If"][1:]:
            yield from _branches(branch)
    elif value != {"Ref": "AWS::NoValue"}:
        yield value


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(translated: dict[str, Any], owner: str) -> list[tuple[str, dict[str, Any]]]:
    """(policy name, statement) of the owner's generated role: inline policies and SAM's managed ones."""
    properties = translated["Resources"][f"{owner}Role"]["Properties"]
    found = []
    for policy in properties.get("Policies", []):
        for taken in _branches(policy):
            for statement in _as_list(taken["PolicyDocument"]["Statement"]):
                for statement_branch in _branches(statement):
                    found.append((taken["PolicyName"], statement_branch))
    for arn in properties.get("ManagedPolicyArns", []):
        for statement in _as_list(managed_policy_document(arn)["Statement"]):
            found.append((arn.rsplit("/", 1)[-1], statement))
    return found


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return translate(Template.load(ROOT / "template.yaml"), "us-east-1")


def test_every_role_is_checked(translated):
    roles = {
        k.removesuffix("Role") for k, r in translated["Resources"].items() if r["Type"] == "AWS::IAM::Role"
    }
    assert roles == set(ALLOWED_ACTIONS)


@pytest.mark.parametrize("owner", sorted(ALLOWED_ACTIONS))
def test_no_wildcard_action_no_star_resource_no_action_outside_the_allowlist(translated, owner):
    problems = []
    statements = role_statements(translated, owner)
    assert statements, owner
    for policy, statement in statements:
        assert statement["Effect"] == "Allow", (owner, policy, statement)
        assert "NotAction" not in statement and "NotResource" not in statement, (owner, policy)
        actions = set(_as_list(statement["Action"]))
        resources = _as_list(statement["Resource"])
        problems += [f"{policy}: wildcard action {a}" for a in actions if "*" in a]
        problems += [f"{policy}: {a} not in {owner}'s allowlist" for a in actions - ALLOWED_ACTIONS[owner]]
        if "*" in resources:
            problems += [f"{policy}: {a} on '*'" for a in actions - STAR_RESOURCE_ACTIONS]
        for resource in resources:
            # A plain string resource other than "*" with a wildcard (arn:...:*) is as wide as "*" for its service.
            if isinstance(resource, str) and resource != "*" and resource.endswith(":*"):
                problems.append(f"{policy}: resource {resource}")
    assert not problems, "\n".join(problems)


def test_no_managed_policy_grants_more_than_logs_and_traces(translated):
    for owner in ALLOWED_ACTIONS:
        arns = translated["Resources"][f"{owner}Role"]["Properties"].get("ManagedPolicyArns", [])
        names = {arn if isinstance(arn, str) else str(arn) for arn in arns}
        assert {name.rsplit("/", 1)[-1] for name in names} <= {
            "AWSLambdaBasicExecutionRole",
            "AWSXrayWriteOnlyAccess",
            "AWSXRayDaemonWriteAccess",
        }, owner


# --- the roles as the deployed stack holds them: each call made with the function's own credentials ---------


def _outcome(operation, **parameters) -> str:
    try:
        operation(**parameters)
    except ClientError as error:
        return error.response["Error"]["Code"]
    return "ok"


def test_each_function_reaches_only_its_own_prefixes_and_buckets(deploy_stack):
    stack = deploy_stack(parameters={"AttachmentBuckets": "partner-one,partner-two"}, start_pollers=False)
    bucket = stack.physical_id("UploadsBucket")
    admin = stack.client("s3")
    for name in ("partner-one", "partner-two", "partner-three"):
        admin.create_bucket(Bucket=name)
        admin.put_object(Bucket=name, Key="a.png", Body=b"a")
    for key in ("incoming/a.png", "attachments/a.png", "results/r/result.json", "other/a.png"):
        admin.put_object(Bucket=bucket, Key=key, Body=b"a")

    def s3(function):
        return stack.server.client("s3", stack.function_credentials[function])

    def reads(function, bucket_name, key):
        return _outcome(s3(function).get_object, Bucket=bucket_name, Key=key)

    def writes(function, key):
        return _outcome(s3(function).put_object, Bucket=bucket, Key=key, Body=b"x")

    denied = "AccessDenied"
    expected_reads = {
        # The entry points read results for the answer a previous delivery stored (billed once).
        "S3UploadFunction": {"incoming/a.png", "results/r/result.json"},
        "SqsRequestFunction": {"attachments/a.png", "results/r/result.json"},
        "PollExecutionFunction": set(),
        "FinishRequestFunction": {"results/r/result.json"},
    }
    for function, readable in expected_reads.items():
        for key in ("incoming/a.png", "attachments/a.png", "results/r/result.json", "other/a.png"):
            assert reads(function, bucket, key) == ("ok" if key in readable else denied), (function, key)
        # Every function writes results, nowhere else.
        assert writes(function, "results/r/new.json") == "ok", function
        for key in ("incoming/new.png", "attachments/new.png", "other/new.png"):
            assert writes(function, key) == denied, (function, key)
        # No list, ACL, delete or lifecycle permission anywhere.
        client = s3(function)
        assert _outcome(client.list_objects_v2, Bucket=bucket) == denied, function
        assert _outcome(client.delete_object, Bucket=bucket, Key="results/r/result.json") == denied
        assert (
            _outcome(client.put_object_acl, Bucket=bucket, Key="results/r/result.json", ACL="private")
            == denied
        )
        assert _outcome(client.get_bucket_lifecycle_configuration, Bucket=bucket) == denied
        partner_reads = {
            b: reads(function, b, "a.png") for b in ("partner-one", "partner-two", "partner-three")
        }
        granted = function == "SqsRequestFunction"
        assert partner_reads == {
            "partner-one": "ok" if granted else denied,
            "partner-two": "ok" if granted else denied,
            "partner-three": denied,
        }, function


def test_each_queue_function_reaches_only_its_own_queue(deploy_stack):
    stack = deploy_stack(start_pollers=False)
    queues = {"S3UploadFunction": "UploadEventsQueue", "SqsRequestFunction": "RequestQueue"}
    for function, own in queues.items():
        sqs = stack.server.client("sqs", stack.function_credentials[function])
        for queue in ("UploadEventsQueue", "RequestQueue", "UploadEventsDLQ", "RequestDLQ"):
            url = stack.physical_id(queue)
            outcome = _outcome(sqs.receive_message, QueueUrl=url, WaitTimeSeconds=0)
            assert outcome == ("ok" if queue == own else "AccessDenied"), (function, queue)
            # Not even its own queue takes messages from it.
            assert _outcome(sqs.send_message, QueueUrl=url, MessageBody="{}") == "AccessDenied"


# --- resource policies and parameters, from the template as written -----------------------------------------


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return Template.load(ROOT / "template.yaml").document


def test_the_upload_queue_takes_messages_only_from_the_bucket(document):
    statements = document["Resources"]["UploadEventsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    (allow,) = [s for s in statements if s["Effect"] == "Allow"]
    denies = [s for s in statements if s["Effect"] == "Deny"]
    bucket_arn = allow["Condition"]["ArnEquals"]["aws:SourceArn"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    # Everyone else is denied SendMessage: a missing aws:SourceArn (any direct sender) counts as not equal.
    assert [(d["Principal"], _as_list(d["Action"]), d["Condition"]) for d in denies] == [
        ("*", ["sqs:SendMessage"], {"ArnNotEquals": {"aws:SourceArn": bucket_arn}})
    ]
    # The function's own calls on the queue are not denied.
    assert denies[0]["Resource"] == {"Fn::GetAtt": ["UploadEventsQueue", "Arn"]}


def test_the_created_token_secret_has_no_placeholder_an_update_would_write_back(document):
    secret = document["Resources"]["GatewayTokenSecret"]["Properties"]
    assert "SecretString" not in secret
    assert int(secret["GenerateSecretString"]["PasswordLength"]) >= 32


def test_only_the_functions_that_call_the_gateway_may_read_the_token(document, translated):
    resource = document["Resources"]["GatewayTokenSecretPolicy"]
    assert resource["Condition"] == document["Resources"]["GatewayTokenSecret"]["Condition"]
    policy = resource["Properties"]
    assert policy["SecretId"] == {"Ref": "GatewayTokenSecret"} and policy["BlockPublicPolicy"] is True
    (deny,) = policy["ResourcePolicy"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == (
        "Deny",
        "*",
        "secretsmanager:GetSecretValue",
    )
    admitted = {
        ref["Fn::GetAtt"][0].removesuffix("Role")
        for ref in deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    }
    readers = {
        owner
        for owner in ALLOWED_ACTIONS
        for _, statement in role_statements(translated, owner)
        if "secretsmanager:GetSecretValue" in _as_list(statement["Action"])
    }
    assert admitted == readers == {"S3UploadFunction", "SqsRequestFunction", "PollExecutionFunction"}


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("https://dashboard.quantcdn.io", True),
        ("https://dash.quantgov.cloud/", True),
        ("http://127.0.0.1:8787", True),
        ("http://localhost:8787/", True),
        ("http://localhost", True),
        ("http://dashboard.quantcdn.io", False),
        ("http://127.0.0.1.evil.example", False),
        ("http://localhost@evil.example", False),
        ("http://127.0.0.1:80@evil.example/", False),
        ("ftp://dashboard.quantcdn.io", False),
    ],
)
def test_the_gateway_is_reached_over_https_only_loopback_excepted(url, accepted):
    from devtools.embedded_aws.template import TemplateError

    template = Template.load(ROOT / "template.yaml")
    if accepted:
        assert template.parameter_values({"GatewayBaseUrl": url})["GatewayBaseUrl"] == url
    else:
        with pytest.raises(TemplateError, match="GatewayBaseUrl"):
            template.parameter_values({"GatewayBaseUrl": url})


def test_without_list_permission_a_missing_result_reads_as_absent(deploy_stack):
    """No role may list the bucket, so S3 answers GetObject of a missing key with 403, not 404 (moto answers
    404 whatever the role: here a role that may not read results gives S3's 403 for real). The entry points
    look for a stored answer on every later delivery: a 403 there means "none stored", not a failure."""
    from shared.results import ResultStore

    stack = deploy_stack(start_pollers=False)
    bucket = stack.physical_id("UploadsBucket")
    no_read = stack.server.client("s3", stack.function_credentials["PollExecutionFunction"])
    assert _outcome(no_read.get_object, Bucket=bucket, Key="results/none.json") == "AccessDenied"
    assert ResultStore(no_read, bucket, "results/").get_json("results/none.json") is None
