"""One creator per CloudFormation resource type: makes the resource in moto and returns its Ref and attributes.

Every creator lists the properties it applies and the ones it deliberately ignores (with the reason); any
other property fails the deploy, so a template change the embedded AWS would silently drop is noticed.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from devtools.embedded_aws.aws_api import call, tag_list, tag_map
from devtools.embedded_aws.template import TemplateError

if TYPE_CHECKING:
    from devtools.embedded_aws.event_rules import RulesCreated
    from devtools.embedded_aws.serverless import FunctionInfo


class UnsupportedResourceTypeError(TemplateError):
    pass


class UnsupportedPropertyError(TemplateError):
    pass


@dataclass(frozen=True)
class CreatedResource:
    physical_id: Any  # what Ref returns
    attributes: Mapping[str, Any] = field(default_factory=dict)  # what Fn::GetAtt returns


@dataclass
class DeployContext:
    """What creators need from the stack being deployed."""

    stack_name: str
    region: str
    account_id: str
    partition: str
    template_dir: Path
    client: Callable[[str], Any]
    # The role SAM generates for a function or state machine (by its logical id), created on first use.
    role_arn: Callable[[str], str]
    # Tests and local runs only: replaces every queue's VisibilityTimeout so failed messages come back in
    # seconds instead of the template's minutes. None keeps the template's values.
    visibility_timeout_override: int | None = None
    # Tests only: replaces every SQS event source's MaximumBatchingWindowInSeconds, so that a lone message is
    # handled at once instead of after the template's window. None keeps the template's values.
    batching_window_override: float | None = None
    # Benchmarks only: the Timeout (seconds) of the functions named (by logical id), instead of the template's.
    function_timeout_override: Mapping[str, int] = field(default_factory=dict)
    functions: dict[str, FunctionInfo] = field(default_factory=dict)  # filled by the function creator
    event_rules: RulesCreated = field(default_factory=lambda: _rules_created())  # filled by the rule creators
    _service_roles: dict[str, str] = field(default_factory=dict)

    def function_named(self, logical_id: str, name: str) -> FunctionInfo:
        """The stack's function a resource names (by its name or ARN), or a refusal naming the resource."""
        for function in self.functions.values():
            if name in (function.name, function.arn):
                return function
        raise UnsupportedPropertyError(f"{logical_id}: FunctionName {name} is not a function of this stack")

    def physical_name(self, logical_id: str, max_length: int, lowercase: bool = False) -> str:
        """`<stack>-<LogicalId>-<random>`, shortened like CloudFormation to fit the service's limit."""
        alphabet = (
            string.ascii_lowercase + string.digits if lowercase else string.ascii_uppercase + string.digits
        )
        suffix = "".join(secrets.choice(alphabet) for _ in range(12))
        prefix = f"{self.stack_name}-{logical_id}"[: max_length - len(suffix) - 1]
        name = f"{prefix}-{suffix}"
        return name.lower() if lowercase else name

    def arn(self, service: str, resource: str, region: str | None = None, account: str | None = None) -> str:
        region = self.region if region is None else region
        account = self.account_id if account is None else account
        return f"arn:{self.partition}:{service}:{region}:{account}:{resource}"


def _rules_created() -> RulesCreated:
    from devtools.embedded_aws.event_rules import RulesCreated  # it builds on this module

    return RulesCreated()


class ResourceType:
    type_name: ClassVar[str]
    applied: ClassVar[frozenset[str]] = frozenset()
    ignored: ClassVar[Mapping[str, str]] = {}  # property -> why it has no effect locally
    required: ClassVar[frozenset[str]] = frozenset()

    def check_properties(self, logical_id: str, properties: Mapping[str, Any]) -> None:
        unsupported = sorted(set(properties) - self.applied - set(self.ignored))
        if unsupported:
            raise UnsupportedPropertyError(
                f"{logical_id} ({self.type_name}): properties {unsupported} are not supported by the embedded AWS;"
                f" apply them in {type(self).__name__} (devtools/embedded_aws) or list them as ignored"
            )
        missing = sorted(self.required - set(properties))
        if missing:
            raise TemplateError(f"{logical_id} ({self.type_name}): required properties {missing} are missing")

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        raise NotImplementedError


# --- S3 ---------------------------------------------------------------------------------------------------------


class S3Bucket(ResourceType):
    type_name = "AWS::S3::Bucket"
    applied = frozenset(
        {
            "BucketName",
            "BucketEncryption",
            "PublicAccessBlockConfiguration",
            "NotificationConfiguration",
            "VersioningConfiguration",
            "Tags",
        }
    )

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        s3 = context.client("s3")
        name = properties.get("BucketName") or context.physical_name(logical_id, 63, lowercase=True)
        s3.create_bucket(Bucket=name)
        if "BucketEncryption" in properties:
            rules = [
                # The API names the template's ServerSideEncryptionByDefault "ApplyServerSideEncryptionByDefault".
                {
                    (
                        "ApplyServerSideEncryptionByDefault"
                        if key == "ServerSideEncryptionByDefault"
                        else key
                    ): value
                    for key, value in rule.items()
                }
                for rule in properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            ]
            call(s3, "PutBucketEncryption", Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in properties:
            call(
                s3,
                "PutPublicAccessBlock",
                Bucket=name,
                PublicAccessBlockConfiguration=properties["PublicAccessBlockConfiguration"],
            )
        if "VersioningConfiguration" in properties:
            call(
                s3,
                "PutBucketVersioning",
                Bucket=name,
                VersioningConfiguration=properties["VersioningConfiguration"],
            )
        if "Tags" in properties:
            s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": tag_list(properties["Tags"])})
        if "NotificationConfiguration" in properties:
            notifications = _bucket_notifications(logical_id, properties["NotificationConfiguration"])
            call(
                s3, "PutBucketNotificationConfiguration", Bucket=name, NotificationConfiguration=notifications
            )
        return CreatedResource(
            name,
            {
                "Arn": f"arn:{context.partition}:s3:::{name}",
                "DomainName": f"{name}.s3.amazonaws.com",
                "RegionalDomainName": f"{name}.s3.{context.region}.amazonaws.com",
                "DualStackDomainName": f"{name}.s3.dualstack.{context.region}.amazonaws.com",
                "WebsiteURL": f"http://{name}.s3-website-{context.region}.amazonaws.com",
            },
        )


# CloudFormation's notification shape -> the API's: (CFN list, API list, CFN target key, API target key).
_NOTIFICATION_KINDS = (
    ("QueueConfigurations", "QueueConfigurations", "Queue", "QueueArn"),
    ("TopicConfigurations", "TopicConfigurations", "Topic", "TopicArn"),
    ("LambdaConfigurations", "LambdaFunctionConfigurations", "Function", "LambdaFunctionArn"),
)


def _bucket_notifications(logical_id: str, configuration: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(configuration) - {kind[0] for kind in _NOTIFICATION_KINDS} - {"EventBridgeConfiguration"}
    if unknown:
        raise UnsupportedPropertyError(
            f"{logical_id}: NotificationConfiguration {sorted(unknown)} not supported"
        )
    notifications: dict[str, Any] = {}
    for cfn_list, api_list, cfn_target, api_target in _NOTIFICATION_KINDS:
        for entry in configuration.get(cfn_list, []):
            api_entry: dict[str, Any] = {api_target: entry[cfn_target], "Events": [entry["Event"]]}
            rules = entry.get("Filter", {}).get("S3Key", {}).get("Rules")
            if rules:
                api_entry["Filter"] = {"Key": {"FilterRules": rules}}
            notifications.setdefault(api_list, []).append(api_entry)
    if configuration.get("EventBridgeConfiguration", {}).get("EventBridgeEnabled") in (True, "true"):
        notifications["EventBridgeConfiguration"] = {}
    return notifications


class S3BucketPolicy(ResourceType):
    type_name = "AWS::S3::BucketPolicy"
    applied = frozenset({"Bucket", "PolicyDocument"})
    required = applied

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        call(
            context.client("s3"),
            "PutBucketPolicy",
            Bucket=properties["Bucket"],
            Policy=properties["PolicyDocument"],
        )
        return CreatedResource(context.physical_name(logical_id, 255))


# --- SQS --------------------------------------------------------------------------------------------------------


class SqsQueue(ResourceType):
    type_name = "AWS::SQS::Queue"
    # Properties that are queue attributes of the same name in the API.
    _attributes = frozenset(
        {
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "DelaySeconds",
            "FifoQueue",
            "FifoThroughputLimit",
            "KmsDataKeyReusePeriodSeconds",
            "KmsMasterKeyId",
            "MaximumMessageSize",
            "MessageRetentionPeriod",
            "ReceiveMessageWaitTimeSeconds",
            "RedriveAllowPolicy",
            "RedrivePolicy",
            "SqsManagedSseEnabled",
            "VisibilityTimeout",
        }
    )
    applied = _attributes | {"QueueName", "Tags"}

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        fifo = str(properties.get("FifoQueue", "false")).lower() == "true"
        name = properties.get("QueueName")
        if name is None:
            name = context.physical_name(logical_id, 75 if fifo else 80) + (".fifo" if fifo else "")
        attributes = {key: value for key, value in properties.items() if key in self._attributes}
        if context.visibility_timeout_override is not None:
            attributes["VisibilityTimeout"] = context.visibility_timeout_override
        sqs = context.client("sqs")
        url = call(
            sqs, "CreateQueue", QueueName=name, Attributes=attributes, tags=tag_map(properties.get("Tags"))
        )["QueueUrl"]
        arn = context.arn("sqs", name)
        return CreatedResource(url, {"Arn": arn, "QueueName": name, "QueueUrl": url})


class SqsQueuePolicy(ResourceType):
    type_name = "AWS::SQS::QueuePolicy"
    applied = frozenset({"Queues", "PolicyDocument"})
    required = applied

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        for queue_url in properties["Queues"]:
            call(
                context.client("sqs"),
                "SetQueueAttributes",
                QueueUrl=queue_url,
                Attributes={"Policy": properties["PolicyDocument"]},
            )
        return CreatedResource(context.physical_name(logical_id, 255))


# --- DynamoDB ---------------------------------------------------------------------------------------------------


class DynamoDbTable(ResourceType):
    type_name = "AWS::DynamoDB::Table"
    # Properties with the same name and shape in CreateTable.
    _create_table_properties = frozenset(
        {
            "AttributeDefinitions",
            "KeySchema",
            "BillingMode",
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "ProvisionedThroughput",
            "TableClass",
            "DeletionProtectionEnabled",
        }
    )
    applied = _create_table_properties | {
        "TableName",
        "StreamSpecification",
        "SSESpecification",
        "TimeToLiveSpecification",
        "PointInTimeRecoverySpecification",
        "Tags",
    }
    ignored = {"ContributorInsightsSpecification": "CloudWatch Contributor Insights has no local effect"}
    required = frozenset({"KeySchema", "AttributeDefinitions"})

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        dynamodb = context.client("dynamodb")
        name = properties.get("TableName") or context.physical_name(logical_id, 255)
        request = {key: value for key, value in properties.items() if key in self._create_table_properties}
        if "StreamSpecification" in properties:
            request["StreamSpecification"] = {"StreamEnabled": True, **properties["StreamSpecification"]}
        if "SSESpecification" in properties:
            sse = properties["SSESpecification"]
            request["SSESpecification"] = {
                "Enabled": sse.get("SSEEnabled", False),
                **{key: sse[key] for key in ("SSEType", "KMSMasterKeyId") if key in sse},
            }
        if "Tags" in properties:
            request["Tags"] = tag_list(properties["Tags"])
        table = call(dynamodb, "CreateTable", TableName=name, **request)["TableDescription"]
        if "TimeToLiveSpecification" in properties:
            call(
                dynamodb,
                "UpdateTimeToLive",
                TableName=name,
                TimeToLiveSpecification=properties["TimeToLiveSpecification"],
            )
        if "PointInTimeRecoverySpecification" in properties:
            call(
                dynamodb,
                "UpdateContinuousBackups",
                TableName=name,
                PointInTimeRecoverySpecification=properties["PointInTimeRecoverySpecification"],
            )
        attributes = {"Arn": table["TableArn"]}
        if "LatestStreamArn" in table:
            attributes["StreamArn"] = table["LatestStreamArn"]
        return CreatedResource(name, attributes)


# --- Secrets Manager and SSM ------------------------------------------------------------------------------------


class SecretsManagerSecret(ResourceType):
    type_name = "AWS::SecretsManager::Secret"
    applied = frozenset({"Name", "Description", "SecretString", "GenerateSecretString", "KmsKeyId", "Tags"})
    ignored = {"ReplicaRegions": "the embedded AWS has one region"}

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        secretsmanager = context.client("secretsmanager")
        name = properties.get("Name") or context.physical_name(logical_id, 512)
        request = {
            key: properties[key] for key in ("Description", "KmsKeyId", "SecretString") if key in properties
        }
        if "GenerateSecretString" in properties:
            request["SecretString"] = _generated_secret(secretsmanager, properties["GenerateSecretString"])
        if "Tags" in properties:
            request["Tags"] = tag_list(properties["Tags"])
        arn = call(secretsmanager, "CreateSecret", Name=name, **request)["ARN"]
        return CreatedResource(arn, {"Id": arn})


class SecretsManagerResourcePolicy(ResourceType):
    type_name = "AWS::SecretsManager::ResourcePolicy"
    applied = frozenset({"SecretId", "ResourcePolicy", "BlockPublicPolicy"})
    required = frozenset({"SecretId", "ResourcePolicy"})

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        # Stored (moto does not evaluate secret policies; see README "The local AWS").
        call(
            context.client("secretsmanager"),
            "PutResourcePolicy",
            SecretId=properties["SecretId"],
            ResourcePolicy=json.dumps(properties["ResourcePolicy"]),
            **(
                {"BlockPublicPolicy": properties["BlockPublicPolicy"]}
                if "BlockPublicPolicy" in properties
                else {}
            ),
        )
        return CreatedResource(properties["SecretId"])


def _generated_secret(secretsmanager: Any, generate: Mapping[str, Any]) -> str:
    options = {
        key: value
        for key, value in generate.items()
        if key not in ("SecretStringTemplate", "GenerateStringKey")
    }
    password = call(secretsmanager, "GetRandomPassword", **options)["RandomPassword"]
    if "SecretStringTemplate" not in generate:
        return password
    document = json.loads(generate["SecretStringTemplate"])
    document[generate["GenerateStringKey"]] = password
    return json.dumps(document)


class SsmParameter(ResourceType):
    type_name = "AWS::SSM::Parameter"
    applied = frozenset(
        {"Name", "Type", "Value", "Description", "AllowedPattern", "Tier", "DataType", "Tags"}
    )
    required = frozenset({"Type", "Value"})

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        name = properties.get("Name") or context.physical_name(f"CFN-{logical_id}", 2048)
        request = {key: value for key, value in properties.items() if key not in ("Name", "Tags")}
        if "Tags" in properties:
            request["Tags"] = tag_list(properties["Tags"])
        call(context.client("ssm"), "PutParameter", Name=name, **request)
        return CreatedResource(name, {"Type": properties["Type"], "Value": properties["Value"]})


# --- Logs, CloudWatch, SNS, EventBridge -------------------------------------------------------------------------


class LogsLogGroup(ResourceType):
    type_name = "AWS::Logs::LogGroup"
    applied = frozenset({"LogGroupName", "RetentionInDays", "KmsKeyId", "LogGroupClass", "Tags"})

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        logs = context.client("logs")
        name = properties.get("LogGroupName") or context.physical_name(logical_id, 512)
        request = {"logGroupName": name}
        if "KmsKeyId" in properties:
            request["kmsKeyId"] = properties["KmsKeyId"]
        if "LogGroupClass" in properties:
            request["logGroupClass"] = properties["LogGroupClass"]
        if "Tags" in properties:
            request["tags"] = tag_map(properties["Tags"])
        call(logs, "CreateLogGroup", **request)
        if "RetentionInDays" in properties:
            call(logs, "PutRetentionPolicy", logGroupName=name, retentionInDays=properties["RetentionInDays"])
        return CreatedResource(name, {"Arn": context.arn("logs", f"log-group:{name}:*")})


class CloudWatchAlarm(ResourceType):
    type_name = "AWS::CloudWatch::Alarm"
    # The properties are PutMetricAlarm's parameters, with the same names and shapes.
    applied = frozenset(
        {
            "AlarmName",
            "AlarmDescription",
            "ActionsEnabled",
            "OKActions",
            "AlarmActions",
            "InsufficientDataActions",
            "MetricName",
            "Namespace",
            "Statistic",
            "ExtendedStatistic",
            "Dimensions",
            "Period",
            "Unit",
            "EvaluationPeriods",
            "DatapointsToAlarm",
            "Threshold",
            "ComparisonOperator",
            "TreatMissingData",
            "EvaluateLowSampleCountPercentile",
            "Metrics",
            "ThresholdMetricId",
            "Tags",
        }
    )

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        name = properties.get("AlarmName") or context.physical_name(logical_id, 255)
        request = {key: value for key, value in properties.items() if key not in ("AlarmName", "Tags")}
        if "Tags" in properties:
            request["Tags"] = tag_list(properties["Tags"])
        call(context.client("cloudwatch"), "PutMetricAlarm", AlarmName=name, **request)
        return CreatedResource(name, {"Arn": context.arn("cloudwatch", f"alarm:{name}")})


class SnsTopic(ResourceType):
    type_name = "AWS::SNS::Topic"
    # Properties that are topic attributes of the same name in the API.
    _attributes = frozenset(
        {
            "DisplayName",
            "KmsMasterKeyId",
            "FifoTopic",
            "ContentBasedDeduplication",
            "SignatureVersion",
            "TracingConfig",
        }
    )
    applied = _attributes | {"TopicName", "Subscription", "Tags"}

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        sns = context.client("sns")
        fifo = str(properties.get("FifoTopic", "false")).lower() == "true"
        name = properties.get("TopicName")
        if name is None:
            name = context.physical_name(logical_id, 251 if fifo else 256) + (".fifo" if fifo else "")
        attributes = {key: value for key, value in properties.items() if key in self._attributes}
        request: dict[str, Any] = {"Name": name, "Attributes": attributes}
        if "Tags" in properties:
            request["Tags"] = tag_list(properties["Tags"])
        arn = call(sns, "CreateTopic", **request)["TopicArn"]
        for subscription in properties.get("Subscription", []):
            sns.subscribe(TopicArn=arn, Protocol=subscription["Protocol"], Endpoint=subscription["Endpoint"])
        return CreatedResource(arn, {"TopicArn": arn, "TopicName": name})


class EventsEventBus(ResourceType):
    type_name = "AWS::Events::EventBus"
    applied = frozenset({"Name", "Description", "Tags"})
    required = frozenset({"Name"})

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        request = dict(properties)
        if "Tags" in properties:
            request["Tags"] = tag_list(properties["Tags"])
        arn = call(context.client("events"), "CreateEventBus", **request)["EventBusArn"]
        return CreatedResource(properties["Name"], {"Arn": arn, "Name": properties["Name"]})
