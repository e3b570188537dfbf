"""The embedded AWS (devtools/embedded_aws): template resolution, resources in moto, Lambda-like SQS polling,
Step Functions running the real ASL with the functions (or stand-ins in this process)."""

from __future__ import annotations

import itertools
import json
import os
import re
import textwrap
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import moto.sqs.models
import pytest
from moto.stepfunctions.parser.backend.execution import Execution

from devtools.embedded_aws import (
    EmbeddedAws,
    LambdaRuntimeError,
    Template,
    TemplateError,
    UnsupportedPropertyError,
    UnsupportedResourceTypeError,
)
from devtools.embedded_aws.moto_fixes import aws_timestamp
from devtools.embedded_aws.serverless import substitute_definition
from devtools.embedded_aws.sqs_poller import SqsPoller, lambda_sqs_record, reported_failures
from devtools.embedded_aws.template import NO_VALUE, PseudoParameters, Resolver, creation_order, merge_globals

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
FAKE_TEMPLATE = DATA / "fake_template.yaml"
FAKE_CODE = DATA / "fake_lambda"
AWS_TIMESTAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


# --- template resolution ----------------------------------------------------------------------------------------


def load_template(tmp_path: Path, text: str) -> Template:
    path = tmp_path / "template.yaml"
    path.write_text(textwrap.dedent(text))
    return Template.load(path)


def resolver_for(template: Template, parameters: dict[str, Any] | None = None) -> Resolver:
    """A resolver whose resources are fakes: Ref gives `ref-<id>`, GetAtt gives `<id>.<attribute>`."""
    return Resolver(
        template,
        template.parameter_values(parameters or {}),
        PseudoParameters("demo-stack", "123456789012", "eu-west-1"),
        resource_ref=lambda logical_id: f"ref-{logical_id}",
        resource_attribute=lambda logical_id, attribute: f"{logical_id}.{attribute}",
    )


INTRINSICS_TEMPLATE = """
    Parameters:
      Stage: {Type: String, Default: test, AllowedValues: [test, prod]}
      Prefix: {Type: String, Default: incoming/}
      Count: {Type: Number, Default: 3, MinValue: 1, MaxValue: 5}
      Names: {Type: CommaDelimitedList, Default: "a,b"}
      Empty: {Type: String, Default: ""}
    Conditions:
      IsProd: !Equals [!Ref Stage, prod]
      HasEmpty: !Not [!Equals [!Ref Empty, ""]]
      ProdOrEmpty: !Or [!Condition IsProd, !Condition HasEmpty]
      TestAndThree: !And [!Not [!Condition IsProd], !Equals [!Ref Count, 3]]
    Resources:
      Queue: {Type: AWS::SQS::Queue}
      Table: {Type: AWS::DynamoDB::Table}
      ProdTopic: {Type: AWS::SNS::Topic, Condition: IsProd}
    """


def test_sub_resolves_pseudo_parameters_parameters_attributes_and_the_list_form(tmp_path):
    resolver = resolver_for(load_template(tmp_path, INTRINSICS_TEMPLATE))
    resolve = resolver.resolve

    assert resolve({"Fn::Sub": "${AWS::StackName}-${AWS::Region}-${AWS::AccountId}"}) == (
        "demo-stack-eu-west-1-123456789012"
    )
    assert resolve({"Fn::Sub": "arn:${AWS::Partition}:s3:::${Queue}/${Prefix}${Count}"}) == (
        "arn:aws:s3:::ref-Queue/incoming/3"
    )
    assert resolve({"Fn::Sub": "${Queue.Arn}/*"}) == "Queue.Arn/*"
    assert resolve(
        {"Fn::Sub": ["${Greeting}, ${Who}! ${!Literal}", {"Greeting": "hi", "Who": {"Ref": "Table"}}]}
    ) == ("hi, ref-Table! ${Literal}")
    assert resolve({"Ref": "AWS::URLSuffix"}) == "amazonaws.com"
    assert resolve({"Ref": "Count"}) == "3"  # Number parameters are strings once referenced
    assert resolve({"Ref": "Names"}) == ["a", "b"]


def test_if_follows_conditions_and_no_value_removes_what_it_stands_for(tmp_path):
    template = load_template(tmp_path, INTRINSICS_TEMPLATE)
    test = resolver_for(template)
    prod = resolver_for(template, {"Stage": "prod", "Count": 4})

    value = {
        "Label": {"Fn::If": ["IsProd", "production", {"Fn::Sub": "${Stage}-only"}]},
        "Topic": {"Fn::If": ["IsProd", {"Ref": "ProdTopic"}, {"Ref": "AWS::NoValue"}]},
        "Actions": [{"Fn::If": ["ProdOrEmpty", "page", {"Ref": "AWS::NoValue"}]}, "log"],
    }
    assert test.resolve(value) == {"Label": "test-only", "Actions": ["log"]}
    assert prod.resolve(value) == {
        "Label": "production",
        "Topic": "ref-ProdTopic",
        "Actions": ["page", "log"],
    }
    assert test.condition("TestAndThree") is True and prod.condition("TestAndThree") is False
    assert test.condition("HasEmpty") is False
    assert test.is_included("ProdTopic") is False and prod.is_included("ProdTopic") is True
    with pytest.raises(TemplateError, match="condition is false"):
        test.resolve({"Ref": "ProdTopic"})
    assert test.resolve({"Ref": "AWS::NoValue"}) is NO_VALUE


def test_select_split_join_and_friends(tmp_path):
    resolver = resolver_for(load_template(tmp_path, INTRINSICS_TEMPLATE))
    resolve = resolver.resolve

    assert resolve({"Fn::Select": [1, {"Fn::Split": ["/", "a/b/c"]}]}) == "b"
    assert resolve({"Fn::Select": ["0", {"Ref": "Names"}]}) == "a"
    assert resolve({"Fn::Join": ["-", [{"Ref": "Stage"}, {"Fn::GetAtt": ["Queue", "QueueName"]}, 7]]}) == (
        "test-Queue.QueueName-7"
    )
    assert resolve({"Fn::Split": [",", {"Fn::Join": [",", ["x", "y"]]}]}) == ["x", "y"]
    assert resolve({"Fn::Base64": "hi"}) == "aGk="
    assert resolve({"Fn::Select": [0, {"Fn::GetAZs": ""}]}) == "eu-west-1a"
    with pytest.raises(TemplateError, match="index 5"):
        resolve({"Fn::Select": [5, ["only"]]})
    with pytest.raises(TemplateError, match="Fn::ImportValue is not supported"):
        resolve({"Fn::ImportValue": "shared-vpc"})
    with pytest.raises(TemplateError, match="no such parameter, pseudo parameter or resource"):
        resolve({"Ref": "Missing"})


def test_short_form_tags_load_as_the_long_form(tmp_path):
    template = load_template(
        tmp_path,
        """
        Resources:
          Queue:
            Type: AWS::SQS::Queue
            Properties:
              A: !GetAtt Other.Endpoint.Address
              B: !Sub ["${X}", {X: !Ref Y}]
              C: !If [Cond, !Select [0, !Split [",", "a,b"]], !Ref AWS::NoValue]
        """,
    )
    properties = template.resource_properties("Queue")
    assert properties["A"] == {"Fn::GetAtt": ["Other", "Endpoint.Address"]}
    assert properties["B"] == {"Fn::Sub": ["${X}", {"X": {"Ref": "Y"}}]}
    assert properties["C"] == {
        "Fn::If": ["Cond", {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]}, {"Ref": "AWS::NoValue"}]
    }


def test_parameters_are_validated_like_cloudformation(tmp_path):
    template = load_template(tmp_path, INTRINSICS_TEMPLATE)
    assert template.parameter_values({"Count": 5})["Count"] == "5"
    with pytest.raises(TemplateError, match="must be one of"):
        template.parameter_values({"Stage": "staging"})
    with pytest.raises(TemplateError, match="must be <= 5"):
        template.parameter_values({"Count": 6})
    with pytest.raises(TemplateError, match="not declared"):
        template.parameter_values({"Unknown": "x"})


def test_sam_globals_merge_maps_override_scalars_and_append_lists():
    merged = merge_globals(
        {"Timeout": 120, "Environment": {"Variables": {"A": "1", "B": "2"}}, "Layers": ["g"]},
        {"Timeout": 30, "Environment": {"Variables": {"B": "3", "C": "4"}}, "Layers": ["r"]},
    )
    assert merged == {
        "Timeout": 30,
        "Environment": {"Variables": {"A": "1", "B": "3", "C": "4"}},
        "Layers": ["g", "r"],
    }
    # An intrinsic is not merged into: the resource's value wins whole.
    assert merge_globals({"A": "1"}, {"Fn::If": ["C", {"B": "2"}, {}]}) == {"Fn::If": ["C", {"B": "2"}, {}]}


def test_dependencies_count_only_the_taken_if_branch_and_cycles_are_refused(tmp_path):
    resolver = resolver_for(load_template(tmp_path, INTRINSICS_TEMPLATE))
    value = {
        "A": {"Fn::Sub": "${Queue.Arn}:${Param}", "ignored": 1},
        "B": {"Fn::If": ["IsProd", {"Ref": "ProdTopic"}, {"Fn::GetAtt": ["Table", "Arn"]}]},
        "C": {"Fn::Sub": ["${Name}", {"Name": {"Ref": "Queue"}}]},
    }
    assert resolver.dependencies(value) == {"Queue", "Table"}
    assert creation_order({"A": {"B"}, "B": {"C"}, "C": set(), "D": set()}) == ["C", "B", "A", "D"]
    with pytest.raises(TemplateError, match="circular dependency: A -> B -> A"):
        creation_order({"A": {"B"}, "B": {"A"}})


def test_definition_substitutions_must_all_be_given_and_give_json():
    text = '{"MaxConcurrency": ${N}, "Resource": "${Arn}"}'
    assert json.loads(substitute_definition("M", text, {"N": "10", "Arn": "arn:x"})) == {
        "MaxConcurrency": 10,
        "Resource": "arn:x",
    }
    with pytest.raises(TemplateError, match=r"\['Arn'\]"):
        substitute_definition("M", text, {"N": "10"})
    with pytest.raises(TemplateError, match="not valid JSON"):
        substitute_definition("M", text, {"N": "", "Arn": "x"})


def test_unknown_resource_types_and_properties_are_refused_by_name(tmp_path):
    unknown_type = tmp_path / "unknown_type.yaml"
    unknown_type.write_text("Resources:\n  Stream:\n    Type: AWS::Kinesis::Stream\n")
    with pytest.raises(UnsupportedResourceTypeError, match="Stream: resource type AWS::Kinesis::Stream"):
        EmbeddedAws.deploy(unknown_type)

    unknown_property = tmp_path / "unknown_property.yaml"
    unknown_property.write_text(
        "Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n    Properties: {Shiny: true}\n"
    )
    with pytest.raises(UnsupportedPropertyError, match=r"Queue \(AWS::SQS::Queue\): properties \['Shiny'\]"):
        EmbeddedAws.deploy(unknown_property)


# --- the Lambda SQS event and partial batch responses ------------------------------------------------------------


def test_sqs_records_have_lambdas_shape():
    message = {
        "MessageId": "m-1",
        "ReceiptHandle": "rh-1",
        "MD5OfBody": "md5",
        "Body": '{"a": 1}',
        "Attributes": {
            "ApproximateReceiveCount": "2",
            "SentTimestamp": "1",
            "ApproximateFirstReceiveTimestamp": "2",
        },
        "MD5OfMessageAttributes": "md5attrs",
        "MessageAttributes": {
            "kind": {"StringValue": "upload", "DataType": "String"},
            "blob": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
        },
    }
    record = lambda_sqs_record(message, "arn:aws:sqs:us-east-1:123456789012:q", "us-east-1")
    assert record == {
        "messageId": "m-1",
        "receiptHandle": "rh-1",
        "body": '{"a": 1}',
        "attributes": {
            "ApproximateReceiveCount": "2",
            "SentTimestamp": "1",
            "ApproximateFirstReceiveTimestamp": "2",
        },
        "messageAttributes": {
            "kind": {
                "stringValue": "upload",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            },
            "blob": {
                "binaryValue": "AAE=",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Binary",
            },
        },
        "md5OfBody": "md5",
        "md5OfMessageAttributes": "md5attrs",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
        "awsRegion": "us-east-1",
    }


@pytest.mark.parametrize(
    ("response", "failed"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"b"}),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, None),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, None),
        ({"batchItemFailures": [{"messageId": "b"}]}, None),
        ({"batchItemFailures": [{"itemIdentifier": "zz"}]}, None),
        ("not an object", None),
    ],
)
def test_batch_item_failures_follow_lambdas_rules(response, failed):
    assert reported_failures(response, {"a", "b"}) == failed


# --- template.yaml in moto -----------------------------------------------------------------------------------------


def check_bucket(stack, resource):
    s3, name, properties = stack.client("s3"), resource.physical_id, resource.properties
    s3.head_bucket(Bucket=name)
    rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    expected = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rules[0]["ApplyServerSideEncryptionByDefault"] == expected["ServerSideEncryptionByDefault"]
    block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    assert block == properties["PublicAccessBlockConfiguration"]
    notifications = s3.get_bucket_notification_configuration(Bucket=name)["QueueConfigurations"]
    expected_queues = properties["NotificationConfiguration"]["QueueConfigurations"]
    assert [(n["QueueArn"], n["Events"], n["Filter"]["Key"]["FilterRules"]) for n in notifications] == [
        (q["Queue"], [q["Event"]], q["Filter"]["S3Key"]["Rules"]) for q in expected_queues
    ]


def check_bucket_policy(stack, resource):
    policy = stack.client("s3").get_bucket_policy(Bucket=resource.properties["Bucket"])["Policy"]
    assert json.loads(policy) == resource.properties["PolicyDocument"]


def queue_attributes(stack, url):
    return stack.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def check_queue(stack, resource):
    attributes, properties = queue_attributes(stack, resource.physical_id), resource.properties
    assert attributes["QueueArn"] == resource.attributes["Arn"]
    for name in ("VisibilityTimeout", "MessageRetentionPeriod"):
        if name in properties:
            assert attributes[name] == str(properties[name]), name
    assert attributes["SqsManagedSseEnabled"] == str(properties.get("SqsManagedSseEnabled", False)).lower()
    if "RedrivePolicy" in properties:
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == properties["RedrivePolicy"]["deadLetterTargetArn"]
        assert redrive["maxReceiveCount"] == int(properties["RedrivePolicy"]["maxReceiveCount"])


def check_queue_policy(stack, resource):
    for url in resource.properties["Queues"]:
        assert json.loads(queue_attributes(stack, url)["Policy"]) == resource.properties["PolicyDocument"]


def check_table(stack, resource):
    dynamodb, name, properties = stack.client("dynamodb"), resource.physical_id, resource.properties
    table = dynamodb.describe_table(TableName=name)["Table"]
    assert table["TableArn"] == resource.attributes["Arn"]
    assert table["KeySchema"] == properties["KeySchema"]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(
        properties["AttributeDefinitions"], key=str
    )
    assert table["BillingModeSummary"]["BillingMode"] == properties["BillingMode"]
    indexes = {index["IndexName"]: index for index in table.get("GlobalSecondaryIndexes", [])}
    for expected in properties.get("GlobalSecondaryIndexes", []):
        index = indexes[expected["IndexName"]]
        assert (index["KeySchema"], index["Projection"]) == (expected["KeySchema"], expected["Projection"])
    ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == (
        properties["TimeToLiveSpecification"]["AttributeName"],
        "ENABLED",
    )
    backups = dynamodb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    assert table["SSEDescription"]["Status"] == "ENABLED"


def check_secret(stack, resource):
    secretsmanager = stack.client("secretsmanager")
    description = secretsmanager.describe_secret(SecretId=resource.physical_id)
    assert description["Description"] == resource.properties["Description"]
    value = secretsmanager.get_secret_value(SecretId=resource.physical_id)["SecretString"]
    if "SecretString" in resource.properties:
        assert value == resource.properties["SecretString"]
    else:  # GenerateSecretString
        assert len(value) == int(resource.properties["GenerateSecretString"]["PasswordLength"])


def check_secret_policy(stack, resource):
    stored = stack.client("secretsmanager").get_resource_policy(SecretId=resource.physical_id)
    assert json.loads(stored["ResourcePolicy"]) == resource.properties["ResourcePolicy"]


def check_parameter(stack, resource):
    parameter = stack.client("ssm").get_parameter(Name=resource.physical_id)["Parameter"]
    assert (parameter["Type"], parameter["Value"]) == (
        resource.properties["Type"],
        resource.properties["Value"],
    )


def check_function(stack, resource):
    configuration = stack.client("lambda").get_function_configuration(FunctionName=resource.physical_id)
    properties, function = resource.properties, stack.functions[resource.logical_id]
    assert configuration["FunctionArn"] == resource.attributes["Arn"] == function.arn
    assert configuration["Handler"] == function.handler == properties["Handler"]
    assert configuration["Timeout"] == function.timeout == int(properties["Timeout"])
    assert configuration["MemorySize"] == function.memory == int(properties["MemorySize"])
    assert configuration["Environment"]["Variables"] == function.environment
    # Every variable the template gives (Globals included) is there, resolved to a plain string.
    assert set(function.environment) == set(properties["Environment"]["Variables"])
    for name, value in function.environment.items():
        assert (
            isinstance(value, str) and "${" not in value and "Fn::" not in value and "'Ref'" not in value
        ), name
        assert stack.function_environments[resource.logical_id][name] == value
    assert (function.code_dir / function.handler.rsplit(".", 2)[0]).is_dir()
    for event_name, event in properties.get("Events", {}).items():
        source = function.events[event_name]
        assert source.queue_arn == event["Properties"]["Queue"]
        assert source.batch_size == int(event["Properties"]["BatchSize"])
        assert source.report_batch_item_failures is True
        assert source.maximum_concurrency == int(event["Properties"]["ScalingConfig"]["MaximumConcurrency"])


def check_event_source_mapping(stack, resource):
    properties = resource.properties
    (function,) = [f for f in stack.functions.values() if f.name == properties["FunctionName"]]
    source = function.events[resource.logical_id]
    assert source.queue_arn == properties["EventSourceArn"]
    assert source.batch_size == int(properties["BatchSize"])
    assert source.maximum_batching_window_seconds == float(properties["MaximumBatchingWindowInSeconds"])
    assert source.report_batch_item_failures is True
    assert source.maximum_concurrency == int(properties["ScalingConfig"]["MaximumConcurrency"])


def check_state_machine(stack, resource):
    description = stack.client("stepfunctions").describe_state_machine(stateMachineArn=resource.physical_id)
    assert description["name"] == resource.attributes["Name"]
    assert "${" not in description["definition"]
    definition = json.loads(description["definition"])
    source = (stack.template.directory / resource.properties["DefinitionUri"]).read_text()
    assert definition == json.loads(
        substitute_definition(resource.logical_id, source, resource.properties["DefinitionSubstitutions"])
    )
    for value in resource.properties["DefinitionSubstitutions"].values():
        assert str(value) in description["definition"]


def check_log_group(stack, resource):
    groups = stack.client("logs").describe_log_groups(logGroupNamePrefix=resource.physical_id)["logGroups"]
    group = next(group for group in groups if group["logGroupName"] == resource.physical_id)
    assert group["retentionInDays"] == int(resource.properties["RetentionInDays"])


def check_alarm(stack, resource):
    (alarm,) = stack.client("cloudwatch").describe_alarms(AlarmNames=[resource.physical_id])["MetricAlarms"]
    properties = resource.properties
    assert alarm["AlarmDescription"] == properties["AlarmDescription"]
    assert alarm["Threshold"] == float(properties["Threshold"])
    assert alarm["ComparisonOperator"] == properties["ComparisonOperator"]
    assert alarm["EvaluationPeriods"] == int(properties["EvaluationPeriods"])
    assert alarm["TreatMissingData"] == properties["TreatMissingData"]
    assert alarm["AlarmActions"] == properties.get("AlarmActions", [])
    if "Metrics" in properties:
        assert [metric["Id"] for metric in alarm["Metrics"]] == [
            metric["Id"] for metric in properties["Metrics"]
        ]
        dimensions = [m["MetricStat"]["Metric"]["Dimensions"] for m in alarm["Metrics"] if "MetricStat" in m]
        # Each metric is one of the stack's own resources (a function, queue, table or state machine).
        names = {str(r.physical_id) for r in stack.resources.values()} | {
            str(value) for r in stack.resources.values() for value in r.attributes.values()
        }
        assert dimensions and all(dimension[0]["Value"] in names for dimension in dimensions)
    else:
        assert (alarm["Namespace"], alarm["MetricName"]) == (
            properties["Namespace"],
            properties["MetricName"],
        )
        assert alarm["Dimensions"] == properties["Dimensions"]


def check_topic(stack, resource):
    assert stack.client("sns").get_topic_attributes(TopicArn=resource.physical_id)["Attributes"]


def check_event_bus(stack, resource):
    assert (
        stack.client("events").describe_event_bus(Name=resource.physical_id)["Arn"]
        == resource.attributes["Arn"]
    )


def check_rule(stack, resource):
    events = stack.client("events")
    rule = events.describe_rule(Name=resource.physical_id)
    assert rule["Arn"] == resource.attributes["Arn"] and rule["State"] == resource.properties["State"]
    if "EventPattern" in resource.properties:
        assert json.loads(rule["EventPattern"]) == resource.properties["EventPattern"]
    else:
        assert rule["ScheduleExpression"] == resource.properties["ScheduleExpression"]
    targets = events.list_targets_by_rule(Rule=resource.physical_id)["Targets"]
    assert [(t["Id"], t["Arn"]) for t in targets] == [
        (t["Id"], t["Arn"]) for t in resource.properties["Targets"]
    ]
    assert stack.events.undelivered == []


def check_permission(stack, resource):
    properties = resource.properties
    policy = json.loads(stack.client("lambda").get_policy(FunctionName=properties["FunctionName"])["Policy"])
    (statement,) = [s for s in policy["Statement"] if s["Sid"] == resource.logical_id]
    assert statement["Principal"] == {"Service": properties["Principal"]}
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == properties["SourceArn"]


def check_invoke_config(stack, resource):
    properties = resource.properties
    function = next(f for f in stack.functions.values() if f.name == properties["FunctionName"])
    config = stack.events_created.invoke_configs[function.logical_id]
    assert config.maximum_retry_attempts == int(properties["MaximumRetryAttempts"])
    assert config.on_failure == properties["DestinationConfig"]["OnFailure"]["Destination"]


RESOURCE_CHECKS = {
    "AWS::S3::Bucket": check_bucket,
    "AWS::S3::BucketPolicy": check_bucket_policy,
    "AWS::SQS::Queue": check_queue,
    "AWS::SQS::QueuePolicy": check_queue_policy,
    "AWS::DynamoDB::Table": check_table,
    "AWS::SecretsManager::Secret": check_secret,
    "AWS::SecretsManager::ResourcePolicy": check_secret_policy,
    "AWS::SSM::Parameter": check_parameter,
    "AWS::Serverless::Function": check_function,
    "AWS::Serverless::StateMachine": check_state_machine,
    "AWS::Lambda::EventSourceMapping": check_event_source_mapping,
    "AWS::Logs::LogGroup": check_log_group,
    "AWS::CloudWatch::Alarm": check_alarm,
    "AWS::SNS::Topic": check_topic,
    "AWS::Events::EventBus": check_event_bus,
    "AWS::Events::Rule": check_rule,
    "AWS::Lambda::Permission": check_permission,
    "AWS::Lambda::EventInvokeConfig": check_invoke_config,
}


def test_every_resource_of_template_yaml_exists_in_moto_with_the_templates_settings(deploy_stack):
    stack = deploy_stack(
        {"GatewayOrganisation": "acme"},
        visibility_timeout_override=None,
        batching_window_override=None,
        start_pollers=False,
    )
    template = Template.load(ROOT / "template.yaml")
    for logical_id, declaration in template.resources.items():
        condition = declaration.get("Condition")
        assert logical_id in stack.resources or condition, f"{logical_id} was not created"
        if logical_id in stack.resources:
            check = RESOURCE_CHECKS.get(declaration["Type"])
            assert check, f"add a check of {declaration['Type']} to RESOURCE_CHECKS"
            check(stack, stack.resources[logical_id])

    # The settings that matter most, spelled out.
    declared = template.resources["UploadEventsQueue"]["Properties"]["VisibilityTimeout"]
    assert queue_attributes(stack, stack.physical_id("UploadEventsQueue"))["VisibilityTimeout"] == str(
        declared
    )
    redrive = json.loads(queue_attributes(stack, stack.physical_id("RequestQueue"))["RedrivePolicy"])
    assert redrive == {"deadLetterTargetArn": stack.attribute("RequestDLQ", "Arn"), "maxReceiveCount": 3}
    bucket = stack.physical_id("UploadsBucket")
    assert bucket == "quant-ai-local-uploads-123456789012-us-east-1"
    environment = stack.function_environments["S3UploadFunction"]
    assert environment["GATEWAY_ORGANISATION"] == "acme"
    assert environment["RESULTS_TABLE"] == stack.physical_id("ResultsTable")
    assert environment["GATEWAY_TOKEN_SECRET_ARN"] == stack.physical_id("GatewayTokenSecret")
    assert environment["POLLER_STATE_MACHINE_ARN"] == stack.physical_id("ToolExecutionPoller")
    assert environment["RETRY_BASE_DELAY_SECONDS"] == "0"
    assert environment["RESULTS_BUCKET"] == bucket
    # The functions' variables are theirs: this process only got the endpoint and the deployer's keys.
    assert "RESULTS_BUCKET" not in os.environ and os.environ["AWS_ENDPOINT_URL"] == stack.endpoint
    assert stack.physical_id("S3UploadLogGroup") == f"/aws/lambda/{stack.physical_id('S3UploadFunction')}"
    assert stack.outputs["UploadsBucketName"] == bucket
    assert stack.outputs["RequestQueueUrl"] == stack.physical_id("RequestQueue")
    assert set(stack.outputs) == set(template.outputs)
    assert all(isinstance(value, str) for value in stack.outputs.values())
    # The default event bus exists, as in every account.
    assert stack.client("events").describe_event_bus(Name="default")["Name"] == "default"

    # Objects can be written and read despite the bucket's deny-insecure-transport policy, and an upload under
    # the input prefix reaches the queue (after S3's test event), its key URL-encoded as S3 does.
    s3 = stack.client("s3")
    s3.put_object(Bucket=bucket, Key="incoming/a b.txt", Body=b"hi")
    assert s3.get_object(Bucket=bucket, Key="incoming/a b.txt")["Body"].read() == b"hi"
    s3.put_object(Bucket=bucket, Key="elsewhere/c.txt", Body=b"ignored")
    messages = stack.client("sqs").receive_message(
        QueueUrl=stack.physical_id("UploadEventsQueue"), MaxNumberOfMessages=10
    )["Messages"]
    bodies = [json.loads(message["Body"]) for message in messages]
    assert bodies[0]["Event"] == "s3:TestEvent"
    assert [body["Records"][0]["s3"]["object"]["key"] for body in bodies[1:]] == ["incoming/a+b.txt"]


def test_an_existing_token_secret_replaces_the_stacks_own(deploy_stack):
    existing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:gateway-token-AbCdEf"
    stack = deploy_stack({"GatewayTokenSecretArn": existing}, start_pollers=False)
    assert "GatewayTokenSecret" not in stack.resources
    environment = stack.function_environments["SqsRequestFunction"]
    assert environment["GATEWAY_TOKEN_SECRET_ARN"] == stack.outputs["GatewayTokenSecretArn"] == existing


# --- the real poller ASL, with stand-in handlers ------------------------------------------------------------------


class TransientGatewayError(Exception):
    """Same name as shared.errors.TransientGatewayError: the name is what the ASL's Retry matches."""


class PermanentGatewayError(Exception):
    pass


def test_the_tool_execution_poller_asl_runs_with_in_process_handlers(deploy_stack):
    stack = deploy_stack(start_pollers=False)
    poll_events: list[dict[str, Any]] = []
    finish_events: list[dict[str, Any]] = []
    polls_per_execution: dict[str, int] = {}

    def poll(event, context):
        poll_events.append(event)
        execution_id = event["execution"]["executionId"]
        count = polls_per_execution[execution_id] = polls_per_execution.get(execution_id, 0) + 1
        if execution_id == "e-broken":
            raise PermanentGatewayError("gone")
        if execution_id == "e-slow" and count == 1:
            raise TransientGatewayError("gateway hiccup")
        status = "complete" if execution_id != "e-slow" or count >= 3 else "running"
        return {**event, "status": status, "nextWaitSeconds": 1, "polls": count}

    def finish(event, context):
        finish_events.append(event)
        if event.get("requestId") == "r-unfinishable" or "detail-type" in event:
            raise RuntimeError("records store unavailable")
        return {"requestId": event["requestId"], "status": "COMPLETED"}

    stack.replace_handler("PollExecutionFunction", poll)
    stack.replace_handler("FinishRequestFunction", finish)
    table = stack.physical_id("ResultsTable")
    stack.client("dynamodb").put_item(
        TableName=table, Item={"requestId": {"S": "r-unfinishable"}, "status": {"S": "WAITING_FOR_TOOLS"}}
    )

    stepfunctions = stack.client("stepfunctions")
    machine = stack.physical_id("ToolExecutionPoller")
    execution = {"toolName": "generate_image", "toolUseId": "t"}
    started = stepfunctions.start_execution(
        stateMachineArn=machine,
        input=json.dumps(
            {
                "requestId": "r-ok",
                "executions": [
                    {**execution, "executionId": "e-slow"},
                    {**execution, "executionId": "e-broken"},
                ],
            }
        ),
    )
    failing = stepfunctions.start_execution(
        stateMachineArn=machine,
        input=json.dumps(
            {"requestId": "r-unfinishable", "executions": [{**execution, "executionId": "e-fast"}]}
        ),
    )
    descriptions = {d["executionArn"]: d for d in stack.wait_for_executions(timeout=45)}

    ok = descriptions[started["executionArn"]]
    assert ok["status"] == "SUCCEEDED", ok
    assert json.loads(ok["output"]) == {"requestId": "r-ok", "status": "COMPLETED"}
    # Retry on the handler's exception class name, then the Wait/Choice loop until complete.
    assert polls_per_execution["e-slow"] == 3
    first_poll = next(event for event in poll_events if event["execution"]["executionId"] == "e-slow")
    assert first_poll["policy"] == {"timeoutSeconds": 300, "maxWaitSeconds": 1}
    assert first_poll["requestId"] == "r-ok"
    assert first_poll["startedAt"] == aws_timestamp(ok["startDate"])
    # A permanent error is caught and becomes a failed execution entry via States.Format.
    (ok_finish,) = [event for event in finish_events if event.get("requestId") == "r-ok"]
    slow, broken = ok_finish["executions"]
    assert slow["status"] == "complete" and slow["polls"] == 3
    assert broken["status"] == "failed" and broken["executionId"] == "e-broken"
    assert broken["error"].startswith("poll step failed: PermanentGatewayError: {")
    assert json.loads(broken["error"].split(": ", 2)[2])["errorMessage"] == "gone"

    failed = descriptions[failing["executionArn"]]
    assert failed["status"] == "FAILED"
    assert failed["error"] == "PollerFailed"
    stack.drain(timeout=30)  # the status change's deliveries, retried
    unfinishable = [event for event in finish_events if event.get("requestId") == "r-unfinishable"]
    # States.TaskFailed retried 4 times after the first try; then the Catch's step, retried 3 times.
    assert [("pollerError" in event) for event in unfinishable] == [False] * 5 + [True] * 4
    assert unfinishable[5]["pollerError"]["Error"] == "RuntimeError"
    # Then EventBridge's word that the execution FAILED, tried three times as Lambda tries an async
    # invocation, and its record in the function's OnFailure queue.
    ended = [e for e in finish_events if e.get("detail-type") == "Step Functions Execution Status Change"]
    assert [e["detail"]["executionArn"] for e in ended] == [failing["executionArn"]] * 3
    sqs = stack.client("sqs")
    url = sqs.get_queue_url(QueueName=stack.attribute("AsyncEventsDLQ", "QueueName"))["QueueUrl"]
    [dead] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    record = json.loads(dead["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestPayload"]["detail"]["status"] == "FAILED"
    assert record["responsePayload"]["errorType"] == "RuntimeError"


# --- the fake stack: SQS polling ---------------------------------------------------------------------------------


def send(stack, *bodies: dict[str, Any]) -> list[str]:
    """Sends the bodies in one SendMessageBatch; returns their message ids in order."""
    response = stack.client("sqs").send_message_batch(
        QueueUrl=stack.physical_id("WorkQueue"),
        Entries=[{"Id": str(index), "MessageBody": json.dumps(body)} for index, body in enumerate(bodies)],
    )
    by_entry = {entry["Id"]: entry["MessageId"] for entry in response["Successful"]}
    return [by_entry[str(index)] for index in range(len(bodies))]


def deliveries(stack, message_id: str) -> list[Any]:
    """The invocations whose batch held the message."""
    return [
        invocation
        for invocation in stack.invocations.for_function("BatchFunction")
        if any(record["messageId"] == message_id for record in invocation.event["Records"])
    ]


def queue_counts(stack, logical_id: str) -> tuple[int, int]:
    attributes = queue_attributes(stack, stack.physical_id(logical_id))
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_partial_batch_failure_deletes_only_successes_and_the_failure_reaches_the_dlq(deploy_stack):
    receives = []  # (started, ended, message ids) of each ReceiveMessage of the pollers
    real_receive = SqsPoller._receive

    def timed_receive(poller, wanted):
        started = time.monotonic()
        messages = real_receive(poller, wanted)
        receives.append((started, time.monotonic(), {message["MessageId"] for message in messages}))
        return messages

    # Patched before the pollers start: a receive already under way when the patch began would go unrecorded.
    with mock.patch.object(SqsPoller, "_receive", timed_receive):
        stack = deploy_stack(template=FAKE_TEMPLATE)
        ok_one, failing, ok_two = send(stack, {"id": 1}, {"id": 2, "action": "fail"}, {"id": 3})
        stack.drain(timeout=20)

    assert len(deliveries(stack, ok_one)) == len(deliveries(stack, ok_two)) == 1
    failed_deliveries = deliveries(stack, failing)
    assert len(failed_deliveries) == 3  # MaxReceiveCount
    receive_counts = [
        next(r for r in invocation.event["Records"] if r["messageId"] == failing)["attributes"][
            "ApproximateReceiveCount"
        ]
        for invocation in failed_deliveries
    ]
    assert receive_counts == ["1", "2", "3"]
    # Each redelivery waited for the visibility timeout (2 s in tests): SQS hides the message inside one
    # receive and shows it again inside a later one, so those two calls span at least 2 s.
    received = [(started, ended) for started, ended, ids in receives if failing in ids]
    assert len(received) == 3
    spans = [later[1] - earlier[0] for earlier, later in itertools.pairwise(received)]
    assert all(span >= 1.99 for span in spans), spans
    assert queue_counts(stack, "WorkQueue") == (0, 0)
    (dead,) = stack.client("sqs").receive_message(QueueUrl=stack.physical_id("WorkDLQ"))["Messages"]
    assert dead["MessageId"] == failing


def test_a_handler_exception_fails_the_whole_batch(deploy_stack):
    stack = deploy_stack(template=FAKE_TEMPLATE)
    innocent, culprit = send(stack, {"id": "innocent"}, {"id": "culprit", "action": "raise-once"})
    stack.drain(timeout=20)

    first, second = deliveries(stack, culprit)
    assert first.error.error_type == "BatchExplodedError"
    assert {r["messageId"] for r in first.event["Records"]} == {innocent, culprit}
    # Nothing of the failed batch was deleted: the innocent message came back too, then both succeeded.
    assert len(deliveries(stack, innocent)) == 2
    assert second.succeeded
    assert queue_counts(stack, "WorkQueue") == (0, 0)
    assert queue_counts(stack, "WorkDLQ") == (0, 0)


def test_batches_respect_batch_size_and_records_look_like_lambdas(deploy_stack):
    stack = deploy_stack(template=FAKE_TEMPLATE)
    message_ids = send(stack, *({"id": index} for index in range(7)))
    stack.drain(timeout=20)

    invocations = stack.invocations.for_function("BatchFunction")
    assert sorted(len(invocation.event["Records"]) for invocation in invocations) == [1, 3, 3]
    assert sorted(r["messageId"] for i in invocations for r in i.event["Records"]) == sorted(message_ids)
    record = invocations[0].event["Records"][0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == stack.attribute("WorkQueue", "Arn")
    assert record["awsRegion"] == "us-east-1"
    assert set(record["attributes"]) >= {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    }
    assert record["md5OfBody"] and record["receiptHandle"] and json.loads(record["body"])["id"] in range(7)


def test_a_handler_may_make_its_failed_message_visible_sooner(deploy_stack):
    stack = deploy_stack(template=FAKE_TEMPLATE, visibility_timeout_override=20)
    (message_id,) = send(stack, {"id": "soon", "action": "retry-now"})
    stack.drain(timeout=10)

    first, second = deliveries(stack, message_id)
    assert second.started_at - first.started_at < 5  # far less than the queue's 20 s
    assert second.succeeded and second.result == {"batchItemFailures": []}


def test_batches_of_one_source_run_concurrently_up_to_maximum_concurrency(deploy_stack):
    stack = deploy_stack(template=FAKE_TEMPLATE)
    lock = threading.Lock()
    running, peak = 0, 0

    def slow(event, context):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        # Long enough that the second batch starts while the first runs, however slow the machine.
        time.sleep(1.2)
        with lock:
            running -= 1
        return {"batchItemFailures": []}

    stack.replace_handler("BatchFunction", slow)
    send(stack, *({"id": index} for index in range(9)))
    stack.drain(timeout=20)
    assert stack.invocations.count("BatchFunction") == 3
    assert peak == 2  # ScalingConfig.MaximumConcurrency of the fake template


def test_drain_reports_what_is_still_busy(deploy_stack):
    # A visibility timeout longer than the handler, or the message would be delivered twice (as in Lambda).
    stack = deploy_stack(template=FAKE_TEMPLATE, visibility_timeout_override=10)
    stack.replace_handler("BatchFunction", lambda event, context: time.sleep(1.5))
    send(stack, {"id": "slow"})
    with pytest.raises(TimeoutError, match=r"queue arn:aws:sqs:.*WorkQueue.*NotVisible 1"):
        stack.drain(timeout=0.5)
    stack.drain(timeout=10)
    assert queue_counts(stack, "WorkQueue") == (0, 0)


def test_queue_counts_see_a_message_that_turns_visible_between_two_reads(deploy_stack):
    # moto computes each count at its own moment; a hidden message whose timeout ends between the reads must
    # still be counted, or drain() returns while a redelivery is due. A clock that jumps past the timeout at
    # the n-th reading provokes that moment at every point of the reading.
    stack = deploy_stack(template=FAKE_TEMPLATE, start_pollers=False)
    (poller,) = stack.pollers
    send(stack, {"id": "hidden"})
    stack.client("sqs").receive_message(QueueUrl=poller.source.queue_url, VisibilityTimeout=60)
    real_clock = moto.sqs.models.unix_time_millis
    for readings_before_the_jump in range(12):
        readings = itertools.count()

        def clock(readings=readings, jump=readings_before_the_jump):
            return real_clock() + (120_000 if next(readings) >= jump else 0)

        with mock.patch("moto.sqs.models.unix_time_millis", clock):
            counts = poller.queue_counts()
        # Counted twice is harmless (drain only asks whether anything is left); never counted is the bug.
        assert sum(counts.values()) >= 1, (readings_before_the_jump, counts)


def test_two_deletes_at_once_both_stick(deploy_stack):
    # moto's delete rebuilds the queue's message list and assigns it back; a delete that finished meanwhile was
    # undone and its message delivered again. Slowing one delete's rebuild provokes that every time.
    stack = deploy_stack(template=FAKE_TEMPLATE, start_pollers=False)
    (poller,) = stack.pollers
    sqs = stack.client("sqs")
    send(stack, *({"id": index} for index in range(4)))
    first, second, *_ = sqs.receive_message(QueueUrl=poller.source.queue_url, MaxNumberOfMessages=4)[
        "Messages"
    ]
    real_match = moto.sqs.models.Message.had_receipt_handle

    def slow_in_the_first_delete(message, handle):
        if threading.current_thread().name == "first-delete":
            time.sleep(0.01)
        return real_match(message, handle)

    def delete(message):
        sqs.delete_message(QueueUrl=poller.source.queue_url, ReceiptHandle=message["ReceiptHandle"])

    with mock.patch.object(moto.sqs.models.Message, "had_receipt_handle", slow_in_the_first_delete):
        slow = threading.Thread(target=delete, args=(first,), name="first-delete")
        slow.start()
        time.sleep(0.015)  # inside the slow delete's rebuild
        delete(second)
        slow.join()
    assert poller.queue_counts() == {"MessagesNotVisible": 2, "MessagesDelayed": 0, "Messages": 0}


# --- the fake stack: Step Functions -------------------------------------------------------------------------------


def test_state_machine_runs_the_asl_with_retry_on_the_exception_name_catch_wait_and_dynamodb(deploy_stack):
    stack = deploy_stack(template=FAKE_TEMPLATE)
    stepfunctions = stack.client("stepfunctions")
    items = [
        {"id": "plain"},
        {"id": "flaky", "flaky": 1},
        {"id": "broken", "permanent": True},
        {"id": "slow", "polls": 2},
    ]
    started = stepfunctions.start_execution(
        stateMachineArn=stack.physical_id("Flow"), input=json.dumps({"runId": "run-1", "items": items})
    )
    stack.drain(timeout=30)

    description = stepfunctions.describe_execution(executionArn=started["executionArn"])
    assert description["status"] == "SUCCEEDED", description
    plain, flaky, broken, slow = json.loads(description["output"])["results"]
    assert plain["status"] == "done" and plain["attempt"] == 1
    assert flaky["status"] == "done" and flaky["attempt"] == 2  # retried on "FlakyError"
    assert broken["status"] == "failed" and broken["error"].startswith("PermanentError: {")
    assert json.loads(broken["error"].removeprefix("PermanentError: "))["errorType"] == "PermanentError"
    assert slow["attempt"] == 2  # Choice -> Wait (SecondsPath) -> Work again
    assert re.match(AWS_TIMESTAMP, plain["startedAt"])  # $$.Execution.StartTime, in AWS's format
    errors = [i.error.error_type for i in stack.invocations.for_function("StepFunction") if i.error]
    assert sorted(errors) == ["FlakyError", "PermanentError"]
    assert {i.trigger for i in stack.invocations.for_function("StepFunction")} == {"lambda:Invoke"}
    run = stack.client("dynamodb").get_item(
        TableName=stack.physical_id("RunsTable"), Key={"runId": {"S": "run-1"}}
    )
    assert run["Item"]["status"] == {"S": "FINISHED"}


def test_unnamed_executions_get_their_own_names(deploy_stack):
    stack = deploy_stack(template=FAKE_TEMPLATE)
    stepfunctions = stack.client("stepfunctions")
    run = json.dumps({"runId": "same", "items": []})
    first = stepfunctions.start_execution(stateMachineArn=stack.physical_id("Flow"), input=run)
    second = stepfunctions.start_execution(stateMachineArn=stack.physical_id("Flow"), input=run)
    assert first["executionArn"] != second["executionArn"]
    assert [d["status"] for d in stack.wait_for_executions(timeout=10)] == ["SUCCEEDED", "SUCCEEDED"]


def test_an_execution_is_listed_running_while_it_starts(deploy_stack):
    # moto lists a new execution before giving it a status; ListExecutions by status then raised, and drain()
    # with it. Holding the start open shows that moment.
    stack = deploy_stack(template=FAKE_TEMPLATE, start_pollers=False)
    real_worker = Execution._get_start_execution_worker

    def slow_worker(execution):
        time.sleep(0.5)
        return real_worker(execution)

    start = threading.Thread(
        target=stack.client("stepfunctions").start_execution,
        kwargs={
            "stateMachineArn": stack.physical_id("Flow"),
            "input": json.dumps({"runId": "r", "items": []}),
        },
    )
    with mock.patch.object(Execution, "_get_start_execution_worker", slow_worker):
        start.start()
        time.sleep(0.2)
        listed = stack.client("stepfunctions").list_executions(
            stateMachineArn=stack.physical_id("Flow"), statusFilter="RUNNING"
        )["executions"]
        stack.drain(timeout=10)  # waits for it
        start.join()
    assert len(listed) == 1
    [finished] = stack.wait_for_executions(timeout=1)
    assert finished["status"] == "SUCCEEDED"


def test_two_starts_with_one_name_at_once_make_one_execution(deploy_stack):
    # A redelivered request starts its execution again under the same name; AWS runs it once. moto checked the
    # name, then built the execution: two starts in that gap both ran.
    stack = deploy_stack(template=FAKE_TEMPLATE, start_pollers=False)
    stepfunctions = stack.client("stepfunctions")
    real_init = Execution.__init__

    def slow_init(execution, *args, **kwargs):
        time.sleep(0.2)
        real_init(execution, *args, **kwargs)

    arns: list[str] = []

    def start():
        arns.append(
            stepfunctions.start_execution(
                stateMachineArn=stack.physical_id("Flow"),
                name="request-1",
                input=json.dumps({"runId": "r", "items": []}),
            )["executionArn"]
        )

    with mock.patch.object(Execution, "__init__", slow_init):
        starts = [threading.Thread(target=start) for _ in range(2)]
        for thread in starts:
            thread.start()
        for thread in starts:
            thread.join()
    assert len(arns) == 2 and arns[0] == arns[1]
    assert [d["executionArn"] for d in stack.wait_for_executions(timeout=10)] == arns[:1]


# --- the fake stack: invoke, environment, cold start ---------------------------------------------------------------


def test_invoke_runs_the_handler_with_the_stacks_environment_and_a_lambda_context(deploy_stack):
    stack = deploy_stack({"Greeting": "ahoy"}, {"GATEWAY_TOKEN": "local-token"}, template=FAKE_TEMPLATE)
    result = stack.invoke("EchoFunction", {"n": 1})

    assert result["event"] == {"n": 1}
    assert result["greeting"] == "ahoy"
    assert result["stage_label"] == "test-quant-ai-local"  # !If with !Sub of a parameter and AWS::StackName
    assert result["echo_only"] == "a,b,c" and result["second_zone"] == "us-east-1b"
    assert result["token"] == "local-token"
    assert result["function_name"] == stack.physical_id("EchoFunction")
    assert result["invoked_function_arn"] == stack.attribute("EchoFunction", "Arn")
    assert result["memory_limit_in_mb"] == "256"
    # The function's Timeout is 7 s (not the 3 s default): a cold process on a loaded machine takes a few s.
    assert 3000 < result["remaining_ms"] <= 7000
    assert result["price"] == 1.5  # Decimal marshalled as a number, as Lambda's runtime does
    assert stack.function_environments["EchoFunction"]["WORK_QUEUE_URL"] == stack.physical_id("WorkQueue")

    overridden = stack.invoke("EchoFunction", {}, environment_overrides={"GREETING": "hey"})
    assert overridden["greeting"] == "hey" and "GREETING" not in os.environ
    assert stack.invoke("EchoFunction", {})["greeting"] == "ahoy"  # the override was that invocation's only
    assert [i.trigger for i in stack.invocations.for_function("EchoFunction")] == ["invoke"] * 3


def test_invoke_reraises_the_handlers_exception_and_reports_runtime_errors(deploy_stack):
    stack = deploy_stack(template=FAKE_TEMPLATE)
    with pytest.raises(Exception, match="asked to refuse") as raised:
        stack.invoke("EchoFunction", {"refuse": True})
    assert type(raised.value).__name__ == "EchoRefusedError"
    with pytest.raises(LambdaRuntimeError, match=r"Runtime\.MarshalError"):
        stack.invoke("EchoFunction", {"unserialisable": True})

    # Through moto's Lambda API (what Step Functions uses): Lambda's error payload.
    lambda_client = stack.client("lambda")
    response = lambda_client.invoke(
        FunctionName=stack.physical_id("EchoFunction"), Payload=b'{"refuse": true}'
    )
    payload = json.loads(response["Payload"].read())
    assert response["FunctionError"]
    assert payload["errorType"] == "EchoRefusedError" and payload["errorMessage"] == "asked to refuse"
    assert any("echo.py" in frame for frame in payload["stackTrace"])
    assert not any("embedded_aws" in frame for frame in payload["stackTrace"])


def test_runtime_failures_look_like_lambdas_import_error_and_timeout(deploy_stack, tmp_path):
    template = tmp_path / "template.yaml"
    template.write_text(
        textwrap.dedent(
            f"""
            Globals:
              Function: {{Runtime: python3.13, CodeUri: {FAKE_CODE}, Timeout: 1}}
            Resources:
              Ghost:
                Type: AWS::Serverless::Function
                Properties: {{Handler: fake_handlers.ghost.handler}}
              Sleepy:
                Type: AWS::Serverless::Function
                Properties: {{Handler: fake_handlers.echo.lambda_handler}}
            """
        )
    )
    stack = deploy_stack(template=template)
    with pytest.raises(LambdaRuntimeError, match=r"Runtime\.ImportModuleError: Unable to import module"):
        stack.invoke("Ghost", {})
    stack.replace_handler("Sleepy", lambda event, context: time.sleep(1.1))
    with pytest.raises(LambdaRuntimeError, match=r"Sandbox\.Timedout: .*Task timed out after 1\.00 seconds"):
        stack.invoke("Sleepy", {})
