"""SAM's function and state machine resources, created in moto as Lambda functions and Step Functions."""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.embedded_aws.aws_api import call, tag_list, tag_map
from devtools.embedded_aws.resources import (
    CreatedResource,
    DeployContext,
    ResourceType,
    UnsupportedPropertyError,
)
from devtools.embedded_aws.template import TemplateError, to_cfn_string

# Set by the Lambda runtime itself; AWS rejects a function whose environment sets them.
RESERVED_ENVIRONMENT_VARIABLES = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)

# Lambda's defaults when the template (and Globals) say nothing.
DEFAULT_TIMEOUT_SECONDS = 3
DEFAULT_MEMORY_MB = 128
# Lambda starts five concurrent batches per SQS source when no MaximumConcurrency caps it.
DEFAULT_SQS_CONCURRENCY = 5


@dataclass(frozen=True)
class SqsEventSource:
    function_logical_id: str
    event_name: str
    queue_arn: str
    queue_url: str
    batch_size: int
    maximum_batching_window_seconds: float
    report_batch_item_failures: bool
    maximum_concurrency: int
    enabled: bool


@dataclass(frozen=True)
class FunctionInfo:
    logical_id: str
    name: str
    arn: str
    handler: str
    code_dir: Path
    runtime: str
    timeout: int
    memory: int
    environment: dict[str, str]
    events: dict[str, SqsEventSource] = field(default_factory=dict)
    log_group: str = ""
    role_arn: str = ""


class ServerlessFunction(ResourceType):
    type_name = "AWS::Serverless::Function"
    applied = frozenset(
        {
            "Handler",
            "Runtime",
            "CodeUri",
            "FunctionName",
            "Description",
            "MemorySize",
            "Timeout",
            "Environment",
            "Events",
            "Architectures",
            "LoggingConfig",
            "Tracing",
            "Tags",
            "Policies",  # through the role SAM generates (devtools.embedded_aws.roles)
        }
    )
    ignored = {
        "PermissionsBoundary": "moto does not enforce permissions boundaries",
        "KmsKeyArn": "the environment reaches the function process as plain variables; KMS is not emulated",
    }
    required = frozenset({"Handler", "Runtime", "CodeUri"})

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        runtime = properties["Runtime"]
        if not runtime.startswith("python"):
            raise UnsupportedPropertyError(
                f"{logical_id}: Runtime {runtime}: only Python handlers run in the embedded AWS"
            )
        code_dir = _code_dir(context, logical_id, properties["CodeUri"])
        environment = _environment(logical_id, properties.get("Environment", {}))
        name = properties.get("FunctionName") or context.physical_name(logical_id, 64)
        timeout = int(properties.get("Timeout", DEFAULT_TIMEOUT_SECONDS))
        timeout = context.function_timeout_override.get(logical_id, timeout)
        request: dict[str, Any] = {
            "FunctionName": name,
            "Runtime": runtime,
            "Role": context.role_arn(logical_id),
            "Handler": properties["Handler"],
            "Code": {"ZipFile": _placeholder_zip()},  # the code runs from CodeUri, not from this package
            "Timeout": timeout,
            "MemorySize": properties.get("MemorySize", DEFAULT_MEMORY_MB),
            "Environment": {"Variables": environment},
        }
        for key in ("Description", "Architectures", "LoggingConfig"):
            if key in properties:
                request[key] = properties[key]
        if "Tracing" in properties:
            request["TracingConfig"] = {"Mode": properties["Tracing"]}
        if "Tags" in properties:
            request["Tags"] = tag_map(properties["Tags"])
        arn = call(context.client("lambda"), "CreateFunction", **request)["FunctionArn"]
        events = {
            event_name: _event_source(context, logical_id, event_name, event, timeout)
            for event_name, event in properties.get("Events", {}).items()
        }
        log_group = properties.get("LoggingConfig", {}).get("LogGroup", f"/aws/lambda/{name}")
        context.functions[logical_id] = FunctionInfo(
            logical_id=logical_id,
            name=name,
            arn=arn,
            handler=properties["Handler"],
            code_dir=code_dir,
            runtime=runtime,
            timeout=timeout,
            memory=int(request["MemorySize"]),
            environment=environment,
            events=events,
            log_group=log_group,
            role_arn=request["Role"],
        )
        return CreatedResource(name, {"Arn": arn})


def _code_dir(context: DeployContext, logical_id: str, code_uri: Any) -> Path:
    if not isinstance(code_uri, str):
        raise UnsupportedPropertyError(f"{logical_id}: CodeUri must be a local directory, got {code_uri!r}")
    code_dir = (context.template_dir / code_uri).resolve()
    if not code_dir.is_dir():
        raise TemplateError(f"{logical_id}: CodeUri {code_uri} is not a directory ({code_dir})")
    return code_dir


def _environment(logical_id: str, environment: dict[str, Any]) -> dict[str, str]:
    variables = {name: to_cfn_string(value) for name, value in environment.get("Variables", {}).items()}
    reserved = sorted(RESERVED_ENVIRONMENT_VARIABLES & set(variables))
    if reserved:
        raise TemplateError(f"{logical_id}: environment variables {reserved} are reserved by Lambda")
    return variables


def _placeholder_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "The embedded AWS runs this function's handler from its CodeUri.\n")
    return buffer.getvalue()


_SQS_EVENT_PROPERTIES = frozenset(
    {
        "Queue",
        "BatchSize",
        "MaximumBatchingWindowInSeconds",
        "FunctionResponseTypes",
        "ScalingConfig",
        "Enabled",
    }
)


def _event_source(
    context: DeployContext, logical_id: str, event_name: str, event: dict[str, Any], function_timeout: int
) -> SqsEventSource:
    if event.get("Type") != "SQS":
        raise UnsupportedPropertyError(
            f"{logical_id}: event {event_name} of type {event.get('Type')} is not supported by the embedded AWS"
        )
    properties = event.get("Properties", {})
    unsupported = sorted(set(properties) - _SQS_EVENT_PROPERTIES)
    if unsupported:
        raise UnsupportedPropertyError(
            f"{logical_id}: SQS event {event_name}: properties {unsupported} not supported"
        )
    batch_size = int(properties.get("BatchSize", 10))
    window = float(properties.get("MaximumBatchingWindowInSeconds", 0))
    # Lambda's own validation of an SQS event source mapping.
    if not 1 <= batch_size <= 10000 or (batch_size > 10 and window < 1):
        raise TemplateError(
            f"{logical_id}: event {event_name}: BatchSize {batch_size} needs 1-10, or up to 10000 with a"
            " MaximumBatchingWindowInSeconds of at least 1"
        )
    sqs = context.client("sqs")
    queue_arn = properties["Queue"]
    queue_url = sqs.get_queue_url(QueueName=queue_arn.rsplit(":", 1)[-1])["QueueUrl"]
    visibility = int(
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])["Attributes"][
            "VisibilityTimeout"
        ]
    )
    # The override exists precisely to make redelivery fast in tests, so only the template's values are checked.
    if context.visibility_timeout_override is None and visibility < function_timeout:
        raise TemplateError(
            f"{logical_id}: event {event_name}: Queue visibility timeout: {visibility} seconds is less than"
            f" Function timeout: {function_timeout} seconds (Lambda rejects this event source)"
        )
    maximum_concurrency = properties.get("ScalingConfig", {}).get("MaximumConcurrency")
    return SqsEventSource(
        function_logical_id=logical_id,
        event_name=event_name,
        queue_arn=queue_arn,
        queue_url=queue_url,
        batch_size=batch_size,
        maximum_batching_window_seconds=window
        if context.batching_window_override is None
        else context.batching_window_override,
        report_batch_item_failures="ReportBatchItemFailures" in properties.get("FunctionResponseTypes", []),
        maximum_concurrency=int(maximum_concurrency or DEFAULT_SQS_CONCURRENCY),
        enabled=str(properties.get("Enabled", "true")).lower() == "true",
    )


class LambdaEventSourceMapping(ResourceType):
    """An SQS event source mapping written as a resource, not as a SAM `Events` entry: SAM's SQS event attaches
    AWSLambdaSQSQueueExecutionRole (sqs actions on "*") to the function's role; with the resource, the role
    holds only what the template grants. Polled like a SAM SQS event (devtools.embedded_aws.sqs_poller)."""

    type_name = "AWS::Lambda::EventSourceMapping"
    applied = frozenset(
        {
            "FunctionName",
            "EventSourceArn",
            "BatchSize",
            "MaximumBatchingWindowInSeconds",
            "FunctionResponseTypes",
            "ScalingConfig",
            "Enabled",
        }
    )
    required = frozenset({"FunctionName", "EventSourceArn"})

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        function = context.function_named(logical_id, properties["FunctionName"])
        if ":sqs:" not in properties["EventSourceArn"]:
            raise UnsupportedPropertyError(f"{logical_id}: only SQS event sources are supported")
        event = {
            "Type": "SQS",
            "Properties": {
                "Queue" if key == "EventSourceArn" else key: value
                for key, value in properties.items()
                if key != "FunctionName"
            },
        }
        # Keyed by the mapping's logical id, as SAM names the mapping it generates `<Function><Event>`.
        function.events[logical_id] = _event_source(
            context, function.logical_id, logical_id, event, function.timeout
        )
        uuid = context.physical_name(logical_id, 36, lowercase=True)
        return CreatedResource(uuid, {"EventSourceMappingId": uuid})


class ServerlessStateMachine(ResourceType):
    type_name = "AWS::Serverless::StateMachine"
    applied = frozenset(
        {
            "Definition",
            "DefinitionUri",
            "DefinitionSubstitutions",
            "Type",
            "Name",
            "Tracing",
            "Logging",
            "Tags",
            "Policies",  # through the role SAM generates (devtools.embedded_aws.roles)
        }
    )
    ignored = {
        "PermissionsBoundary": "moto does not enforce permissions boundaries",
        "RolePath": "a role's path does not change what it may do",
    }

    def create(self, context: DeployContext, logical_id: str, properties: dict[str, Any]) -> CreatedResource:
        definition = substitute_definition(
            logical_id,
            _definition_text(context, logical_id, properties),
            properties.get("DefinitionSubstitutions", {}),
        )
        name = properties.get("Name") or context.physical_name(logical_id, 80)
        request: dict[str, Any] = {
            "name": name,
            "definition": definition,
            "roleArn": context.role_arn(logical_id),
            "type": properties.get("Type", "STANDARD"),
        }
        if "Logging" in properties:
            request["loggingConfiguration"] = _lower_camel_keys(properties["Logging"])
        if "Tracing" in properties:
            request["tracingConfiguration"] = _lower_camel_keys(properties["Tracing"])
        if "Tags" in properties:
            request["tags"] = [
                {"key": tag["Key"], "value": tag["Value"]} for tag in tag_list(properties["Tags"])
            ]
        arn = call(context.client("stepfunctions"), "CreateStateMachine", **request)["stateMachineArn"]
        return CreatedResource(arn, {"Arn": arn, "Name": name})


def _definition_text(context: DeployContext, logical_id: str, properties: dict[str, Any]) -> str:
    if "Definition" in properties:
        return json.dumps(properties["Definition"])
    definition_uri = properties.get("DefinitionUri")
    if not isinstance(definition_uri, str):
        raise UnsupportedPropertyError(
            f"{logical_id}: needs Definition or a local DefinitionUri, got {definition_uri!r}"
        )
    return (context.template_dir / definition_uri).read_text(encoding="utf-8")


_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def substitute_definition(logical_id: str, text: str, substitutions: dict[str, Any]) -> str:
    """Replaces `${Name}` like Step Functions' DefinitionSubstitutions; the result must be valid JSON."""
    missing = sorted({name for name in _PLACEHOLDER.findall(text) if name not in substitutions})
    if missing:
        raise TemplateError(
            f"{logical_id}: the definition uses {missing}, which DefinitionSubstitutions lacks"
        )
    definition = _PLACEHOLDER.sub(lambda match: to_cfn_string(substitutions[match.group(1)]), text)
    try:
        json.loads(definition)
    except json.JSONDecodeError as error:
        raise TemplateError(
            f"{logical_id}: the definition is not valid JSON after substitution: {error}"
        ) from None
    return definition


def _lower_camel_keys(value: Any) -> Any:
    """SAM's `Logging`/`Tracing` use CloudFormation's casing; the Step Functions API starts keys lower case."""
    if isinstance(value, dict):
        return {key[:1].lower() + key[1:]: _lower_camel_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_lower_camel_keys(item) for item in value]
    return value
