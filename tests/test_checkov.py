"""What security teams run: checkov (the IaC scanner) on template.yaml finds nothing; what it would find and
the template deliberately does otherwise is skipped in the resource's Metadata, each with its reason."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from devtools.embedded_aws.template import Template

ROOT = Path(__file__).resolve().parents[1]
# Its own virtual environment (make setup): checkov's dependencies conflict with requirements-dev.txt.
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run `make setup` (it installs requirements-checkov.txt)"
    completed = subprocess.run(
        # --skip-download: nothing is fetched from the vendor's platform (no network in CI but the registries).
        [
            str(CHECKOV),
            "-f",
            "template.yaml",
            "--framework",
            "cloudformation",
            "--skip-download",
            "-o",
            "json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.stdout, completed.stderr
    return json.loads(completed.stdout)


def test_checkov_finds_nothing_in_template_yaml(report):
    summary = report["summary"]
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report["results"]["failed_checks"]
    ]
    assert summary["parsing_errors"] == 0
    assert summary["failed"] == 0, "\n".join(failed)
    # It did read the template: every resource scanned, checks passed.
    assert summary["resource_count"] == len(Template.load(ROOT / "template.yaml").resources)
    assert summary["passed"] >= 30


def test_every_skip_says_why(report):
    skipped = report["results"]["skipped_checks"]
    assert skipped
    for check in skipped:
        comment = check["check_result"].get("suppress_comment", "")
        assert len(comment) >= 30, f"{check['check_id']} {check['resource']}: no reason given ({comment!r})"


# --- KmsKeyArn: one optional customer key for everything that stores data ------------------------------------

KEYED = {
    # resource type -> where its key goes
    "AWS::S3::Bucket": (
        "BucketEncryption",
        "ServerSideEncryptionConfiguration",
        0,
        "ServerSideEncryptionByDefault",
        "KMSMasterKeyID",
    ),
    "AWS::SQS::Queue": ("KmsMasterKeyId",),
    "AWS::DynamoDB::Table": ("SSESpecification", "KMSMasterKeyId"),
    "AWS::Logs::LogGroup": ("KmsKeyId",),
    "AWS::SecretsManager::Secret": ("KmsKeyId",),
}
WITH_KEY = {"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AWS::NoValue"}]}


def test_kms_key_arn_puts_every_store_under_the_customer_key():
    template = Template.load(ROOT / "template.yaml")
    assert template.parameters["KmsKeyArn"]["Default"] == ""
    assert template.conditions["HasKmsKey"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "KmsKeyArn"}, ""]}]}
    stores = {k: r for k, r in template.resources.items() if r["Type"] in KEYED}
    assert len(stores) == 1 + 5 + 1 + 6 + 1  # bucket, queues, table, log groups, secret
    for logical_id, resource in stores.items():
        value: Any = resource["Properties"]
        for step in KEYED[resource["Type"]]:
            value = value[step]
        assert value == WITH_KEY, logical_id
    # The queues use SQS-managed encryption without it (the two are exclusive), the table KMS with it.
    for logical_id, resource in stores.items():
        properties = resource["Properties"]
        if resource["Type"] == "AWS::SQS::Queue":
            assert properties["SqsManagedSseEnabled"] == {
                "Fn::If": ["HasKmsKey", {"Ref": "AWS::NoValue"}, True]
            }, logical_id
    table = template.resources["ResultsTable"]["Properties"]["SSESpecification"]
    assert table["SSEType"] == {"Fn::If": ["HasKmsKey", "KMS", {"Ref": "AWS::NoValue"}]}
    # The functions' environment too, and every function may use the key (and only that key).
    assert template.document["Globals"]["Function"]["KmsKeyArn"] == WITH_KEY
    for logical_id in template.resources:
        if template.resource_type(logical_id) == "AWS::Serverless::Function":
            grants = [
                p["Fn::If"][1]["Statement"]
                for p in template.resources[logical_id]["Properties"]["Policies"]
                if isinstance(p, dict) and p.get("Fn::If", [None])[0] == "HasKmsKey"
            ]
            assert grants == [
                [
                    {
                        "Sid": "CustomerKey",
                        "Effect": "Allow",
                        "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                        "Resource": {"Ref": "KmsKeyArn"},
                    }
                ]
            ], logical_id


def test_with_a_customer_key_the_stack_deploys_with_everything_under_it(deploy_stack):
    key = "arn:aws:kms:us-east-1:123456789012:key/0b7e8f0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    stack = deploy_stack(parameters={"KmsKeyArn": key}, start_pollers=False)
    for queue in ("UploadEventsQueue", "UploadEventsDLQ", "RequestQueue", "RequestDLQ"):
        attributes = stack.client("sqs").get_queue_attributes(
            QueueUrl=stack.physical_id(queue), AttributeNames=["All"]
        )["Attributes"]
        # (moto reports SqsManagedSseEnabled true whatever is set; SQS turns it off with a KMS key.)
        assert attributes["KmsMasterKeyId"] == key, queue
    encryption = stack.client("s3").get_bucket_encryption(Bucket=stack.physical_id("UploadsBucket"))
    (rule,) = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    sse = stack.client("dynamodb").describe_table(TableName=stack.physical_id("ResultsTable"))["Table"]
    assert sse["SSEDescription"]["SSEType"] == "KMS"
    secret = stack.client("secretsmanager").describe_secret(SecretId=stack.physical_id("GatewayTokenSecret"))
    assert secret["KmsKeyId"] == key
    iam = stack.client("iam")
    for function in (
        "S3UploadFunction",
        "SqsRequestFunction",
        "PollExecutionFunction",
        "FinishRequestFunction",
    ):
        role = stack.roles.names[function]
        documents = [
            iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
        ]
        kms = [s for d in documents for s in d["Statement"] if s.get("Sid") == "CustomerKey"]
        assert [(s["Action"], s["Resource"]) for s in kms] == [(["kms:Decrypt", "kms:GenerateDataKey"], key)]
