"""Every resource type the embedded AWS can create; a template using any other type is refused."""

from __future__ import annotations

from devtools.embedded_aws.event_rules import EventsRule, LambdaEventInvokeConfig, LambdaPermission
from devtools.embedded_aws.resources import (
    CloudWatchAlarm,
    DynamoDbTable,
    EventsEventBus,
    LogsLogGroup,
    ResourceType,
    S3Bucket,
    S3BucketPolicy,
    SecretsManagerResourcePolicy,
    SecretsManagerSecret,
    SnsTopic,
    SqsQueue,
    SqsQueuePolicy,
    SsmParameter,
    UnsupportedResourceTypeError,
)
from devtools.embedded_aws.serverless import (
    LambdaEventSourceMapping,
    ServerlessFunction,
    ServerlessStateMachine,
)

RESOURCE_TYPES: dict[str, ResourceType] = {
    resource_type.type_name: resource_type
    for resource_type in (
        S3Bucket(),
        S3BucketPolicy(),
        SqsQueue(),
        SqsQueuePolicy(),
        DynamoDbTable(),
        SecretsManagerSecret(),
        SecretsManagerResourcePolicy(),
        SsmParameter(),
        LogsLogGroup(),
        CloudWatchAlarm(),
        SnsTopic(),
        EventsEventBus(),
        ServerlessFunction(),
        ServerlessStateMachine(),
        LambdaEventSourceMapping(),
        EventsRule(),
        LambdaPermission(),
        LambdaEventInvokeConfig(),
    )
}


def resource_type_for(logical_id: str, type_name: str) -> ResourceType:
    try:
        return RESOURCE_TYPES[type_name]
    except KeyError:
        raise UnsupportedResourceTypeError(
            f"{logical_id}: resource type {type_name} is not supported by the embedded AWS"
            f" (supported: {', '.join(sorted(RESOURCE_TYPES))}); add a creator in devtools/embedded_aws/resources.py"
        ) from None
