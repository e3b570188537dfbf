"""Where moto 5.2.5 differs from AWS in a way the stack would notice; patched while a stack is deployed."""

from __future__ import annotations

import copy
import datetime
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any
from unittest import mock
from urllib.parse import quote_plus, unquote

from botocore.config import Config
from moto.core.exceptions import JsonRESTError
from moto.dynamodb.exceptions import ItemSizeToUpdateTooLarge
from moto.dynamodb.models import DynamoDBBackend
from moto.events.models import Rule as EventsRule
from moto.iam.access_control import IAMPolicy, IAMRequest, IAMRequestBase, PermissionResult
from moto.s3 import notifications as s3_notifications
from moto.s3.exceptions import S3ClientError
from moto.s3.models import FakeBucket, S3Backend
from moto.sqs import models as sqs_models
from moto.sqs.models import Queue, SQSBackend
from moto.stepfunctions.parser.api import ExecutionStatus
from moto.stepfunctions.parser.asl.component.state import state as asl_state
from moto.stepfunctions.parser.asl.eval.environment import Environment
from moto.stepfunctions.parser.asl.eval.program_state import ProgramStopped
from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication, Execution
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

from devtools.embedded_aws.aws_api import local_client
from devtools.embedded_aws.distributed_map import distributed_map_fixes

_original_start_execution = StepFunctionsParserBackend.start_execution
_original_start_execution_details = Execution.get_start_execution_details
_original_state_data = asl_state.StateData
_original_execution_init = Execution.__init__
# StartExecution is atomic in AWS. moto checks that the name is free, copies the state machine, then adds the
# execution: two starts with one name at once (a redelivered request) would both run.
_start_execution_lock = threading.Lock()


def aws_timestamp(moment: datetime.datetime | str) -> str:
    """Step Functions' context object format: UTC, milliseconds, `Z` (2026-01-02T03:04:05.678Z)."""
    if isinstance(moment, str):
        moment = datetime.datetime.fromisoformat(moment)
    moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _start_execution_with_generated_name(
    backend: StepFunctionsParserBackend,
    state_machine_arn: str,
    name: str | None = None,
    *args: Any,
    **kwargs: Any,
) -> Any:
    # moto names an unnamed execution "None", so a second unnamed start with the same input returns the first
    # execution (and with another input fails as a duplicate). AWS generates a UUID.
    with _start_execution_lock:
        return _original_start_execution(
            backend, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs
        )


def _execution_running_from_the_start(execution: Execution, *args: Any, **kwargs: Any) -> None:
    # moto lists a new execution before start() sets its status; until then it has none, and ListExecutions
    # with a status filter raises AttributeError. AWS answers StartExecution with a RUNNING execution.
    _original_execution_init(execution, *args, **kwargs)
    execution.exec_status = ExecutionStatus.RUNNING


# Step Functions tells EventBridge when an execution ends (FAILED, ABORTED, TIMED_OUT, SUCCEEDED); moto tells
# no one. Each deployed stack listens here (devtools.embedded_aws.event_rules) while it is up.
EXECUTION_END_LISTENERS: list[Callable[[Execution], None]] = []
_original_terminated = BaseExecutionWorkerCommunication.terminated


def _terminated_and_announced(communication: BaseExecutionWorkerCommunication) -> None:
    _original_terminated(communication)
    for listener in list(EXECUTION_END_LISTENERS):
        listener(communication.execution)


_original_set_error = Environment.set_error


def _set_error_unless_stopped(env: Environment, error: Any) -> None:
    # StopExecution during a Map: its iterations then fail to move on ("Could not set NextState value when in
    # state ProgramStopped") and moto records that as the execution's error, so it ends FAILED. In AWS a
    # stopped execution is ABORTED, whatever its states were doing.
    if isinstance(env._program_state, ProgramStopped):
        return
    _original_set_error(env, error)


_original_send_to_targets = EventsRule.send_to_targets


def _send_to_targets_but_functions(rule: EventsRule, event: Any, transform_input: bool = True) -> None:
    # moto raises on a Lambda target (and matches every event against a schedule's rule, which has no pattern):
    # functions are the event router's to invoke (devtools.embedded_aws.event_rules); the rest is moto's.
    if rule.scheduled_expression:
        return
    others = [target for target in rule.targets if ":lambda:" not in target["Arn"]]
    if others:
        shallow = copy.copy(rule)
        shallow.targets = others
        _original_send_to_targets(shallow, event, transform_input)


def _under_queue_lock(method: Any) -> Any:
    # moto's queue is not thread-safe: a delete rebuilds the message list and assigns it back, so two deletes
    # at once can put a deleted message back (it is delivered again), and a receive iterating the in-flight set
    # while another thread deletes raises "Set changed size during iteration". The queue's own lock (the
    # reentrant Condition that SendMessage already holds) makes each of these calls atomic, as in SQS.
    def locked(backend: SQSBackend, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with backend.get_queue(queue_name)._messages_lock:
            return method(backend, queue_name, *args, **kwargs)

    return locked


# moto reads a queue's clock once per message on every scan (Message.visible and .delayed each call
# unix_time_millis), and every SendMessage scans the queue three times (it reads queue.attributes, which counts
# the messages visible, delayed and in flight): sending grew quadratic, 6,000 messages into one queue took
# minutes. SQS is not. These scans read the clock once.
def _visible_messages(queue: Queue) -> list[Any]:
    now = sqs_models.unix_time_millis()
    return [m for m in queue._messages if now > m.visible_at and not now < m.delayed_until]


def _count_delayed(queue: Queue) -> int:
    now = sqs_models.unix_time_millis()
    return sum(1 for m in queue._messages if now < m.delayed_until)


def _count_not_visible(queue: Queue) -> int:
    now = sqs_models.unix_time_millis()
    return sum(1 for m in queue._messages if not now > m.visible_at)


def _start_execution_details_with_aws_start_time(execution: Execution) -> Any:
    # moto puts a datetime in $$.Execution.StartTime, which reaches handlers as "...T..:..:..123456+00:00"
    # (and cannot go into a DynamoDB string attribute); AWS gives a string like $$.State.EnteredTime's.
    details = _original_start_execution_details(execution)
    details.start_time = aws_timestamp(execution.start_date)
    return details


def _state_data_with_aws_entered_time(**fields: Any) -> Any:
    # moto writes $$.State.EnteredTime with microseconds and "+00:00"; AWS with milliseconds and "Z".
    return _original_state_data(**{**fields, "EnteredTime": aws_timestamp(fields["EnteredTime"])})


# What every request carries here: it comes from an SDK, over HTTPS.
REQUEST_CONTEXT = {"aws:SecureTransport": "true"}


def _statement_applies(statement: dict[str, Any]) -> bool:
    """False when a Bool condition on a key of REQUEST_CONTEXT rules the statement out."""
    for key, expected in statement.get("Condition", {}).get("Bool", {}).items():
        expected_values = expected if isinstance(expected, list) else [expected]
        if key in REQUEST_CONTEXT and REQUEST_CONTEXT[key] not in [
            str(value).lower() for value in expected_values
        ]:
            return False
    return True


def _bucket_permission_over_https(bucket: FakeBucket, action: str, resource: str) -> Any:
    # moto checks a bucket policy without the request's context, ignores condition operators it does not know
    # (Bool), and makes a statement whose condition fails DENY even when its effect is Deny: template.yaml's
    # "deny when aws:SecureTransport is false" then denies every object request. Statements that the request
    # context rules out are dropped before moto evaluates the rest.
    if bucket.policy is None:
        return PermissionResult.NEUTRAL
    policy = json.loads(bucket.policy)
    statements = policy["Statement"] if isinstance(policy["Statement"], list) else [policy["Statement"]]
    policy["Statement"] = [statement for statement in statements if _statement_applies(statement)]
    if not policy["Statement"]:
        return PermissionResult.NEUTRAL
    return IAMPolicy(json.dumps(policy)).is_action_permitted(action, resource)


def _quote_key_like_s3(key: str) -> str:
    # S3 event notifications URL-encode the key but keep "/" ("incoming/a+b.txt"); moto encodes it too.
    return quote_plus(key, safe="/")


# --- IAM ---------------------------------------------------------------------------------------------------------
# moto checks every action of these services against the resource "*", so a policy scoped to a table, a state
# machine, a secret, a bus, a parameter or a function (as SAM's policy templates are) never matches, and
# everything is refused. AWS checks the resource the request names; these give moto that resource.


def _json_body(response: Any) -> dict[str, Any]:
    if isinstance(response.body, dict):  # moto's DynamoDB handler has parsed it already
        return response.body
    try:
        body = json.loads(response.body or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _arn(response: Any, service: str, resource: str) -> str:
    return f"arn:aws:{service}:{response.region}:{response.current_account}:{resource}"


def _dynamodb_resource(response: Any) -> str:
    body = _json_body(response)
    table = body.get("TableName")
    if not table:
        return "*"
    # A Query or Scan of an index is allowed (or not) on the index's own ARN, as AWS checks it.
    index = f"/index/{body['IndexName']}" if body.get("IndexName") else ""
    return _arn(response, "dynamodb", f"table/{table}{index}")


def _stepfunctions_resource(response: Any) -> str:
    body = _json_body(response)
    return body.get("stateMachineArn") or body.get("executionArn") or "*"


def _secretsmanager_resource(response: Any) -> str:
    from moto.secretsmanager.models import secretsmanager_backends

    secret_id = _json_body(response).get("SecretId")
    if not secret_id:
        return "*"
    secrets = secretsmanager_backends[response.current_account][response.region].secrets
    # A secret named by name is checked by its ARN (with the random suffix), as in AWS.
    return secrets[secret_id].arn if secret_id in secrets else secret_id


def _events_resource(response: Any) -> str:
    entries = _json_body(response).get("Entries") or [{}]
    # One resource per request here: the first entry's bus (an event to two buses at once is checked as one).
    bus = entries[0].get("EventBusName") or "default"
    return bus if bus.startswith("arn:") else _arn(response, "events", f"event-bus/{bus}")


def _ssm_resource(response: Any) -> str:
    body = _json_body(response)
    name = body.get("Name") or (body.get("Names") or [None])[0]
    if not name:
        return "*"
    return name if name.startswith("arn:") else _arn(response, "ssm", f"parameter/{name.lstrip('/')}")


def _lambda_resource(response: Any) -> str:
    parts = response.path.split("/")
    if "functions" not in parts or parts.index("functions") + 1 >= len(parts):
        return "*"
    name = unquote(parts[parts.index("functions") + 1])
    return name if name.startswith("arn:") else _arn(response, "lambda", f"function:{name}")


# API operation -> the IAM action AWS checks, where they differ and moto uses the operation's name.
IAM_ACTION_OF_OPERATION = {
    "lambda:Invoke": "lambda:InvokeFunction",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}
_original_iam_request_init = IAMRequestBase.__init__


def _iam_request_with_aws_action_names(request: IAMRequestBase, *args: Any, **kwargs: Any) -> None:
    _original_iam_request_init(request, *args, **kwargs)
    request._action = IAM_ACTION_OF_OPERATION.get(request._action, request._action)


_original_create_aws_request = IAMRequestBase._create_aws_request


def _aws_request_with_the_body_sent(request: IAMRequestBase) -> Any:
    # To check a signature moto re-signs the request, with the request's parameters as its body when it had
    # none: every GET of a REST API (Lambda's GetFunction, ListFunctions...) then fails SignatureDoesNotMatch.
    # The client signed the body it sent, empty for these.
    aws_request = _original_create_aws_request(request)
    if request._method in ("GET", "HEAD", "DELETE") and not request._body:
        aws_request.data = b""
    return aws_request


# moto refuses every service in S3's XML; services that speak JSON answer in JSON, with these error codes
# (by signing name), which is what botocore and the handlers read (an XML body gives code "403").
JSON_ACCESS_DENIED_CODES = {
    "dynamodb": "AccessDeniedException",
    "states": "AccessDeniedException",
    "events": "AccessDeniedException",
    "secretsmanager": "AccessDeniedException",
    "ssm": "AccessDeniedException",
    "lambda": "AccessDeniedException",
    "logs": "AccessDeniedException",
    "kms": "AccessDeniedException",
    "sqs": "AccessDenied",
}


def _access_denied_in_the_services_protocol(request: IAMRequest) -> None:
    code = JSON_ACCESS_DENIED_CODES.get(request._service)
    if code is None:
        _original_raise_access_denied(request)
    message = f"User: {request._access_key.arn} is not authorized to perform: {request._action}"
    raise JsonRESTError(code, message)


_original_raise_access_denied = IAMRequest._raise_access_denied


def _iam_fixes() -> list[Any]:
    from moto.awslambda.responses import LambdaResponse
    from moto.dynamodb.responses import DynamoHandler
    from moto.events.responses import EventsHandler
    from moto.secretsmanager.responses import SecretsManagerResponse
    from moto.ssm.responses import SimpleSystemManagerResponse
    from moto.stepfunctions.responses import StepFunctionResponse

    resources = {
        DynamoHandler: _dynamodb_resource,
        StepFunctionResponse: _stepfunctions_resource,
        SecretsManagerResponse: _secretsmanager_resource,
        EventsHandler: _events_resource,
        SimpleSystemManagerResponse: _ssm_resource,
        LambdaResponse: _lambda_resource,
    }
    return [
        *(
            mock.patch.object(response_class, "_determine_resource", resource, create=True)
            for response_class, resource in resources.items()
        ),
        mock.patch.object(IAMRequestBase, "__init__", _iam_request_with_aws_action_names),
        mock.patch.object(IAMRequestBase, "_create_aws_request", _aws_request_with_the_body_sent),
        mock.patch.object(IAMRequest, "_raise_access_denied", _access_denied_in_the_services_protocol),
    ]


# --- Step Functions' own calls ------------------------------------------------------------------------------------
# moto's interpreter calls Lambda, DynamoDB and the rest with the fixed keys "ak"/"sk", which IAM refuses.
# Step Functions makes them as the execution's role: so do these clients, on the embedded AWS's endpoint.
STEP_FUNCTIONS_CLIENT_MODULES = tuple(
    f"moto.stepfunctions.parser.asl.component.state.exec.{name}"
    for name in (
        "state_map.result_writer.resource_eval.resource_eval_s3",
        "state_map.item_reader.eval.resource_eval_s3",
        "state_task.lambda_eval_utils",
        "state_task.service.state_task_service_unsupported",
        "state_task.service.state_task_service_glue",
        "state_task.service.state_task_service_events",
        "state_task.service.state_task_service_ecs",
        "state_task.service.state_task_service_sqs",
        "state_task.service.state_task_service_sfn",
        "state_task.service.state_task_service_dynamodb",
        "state_task.service.state_task_service_batch",
        "state_task.service.state_task_service_sns",
        "state_task.service.state_task_service_aws_sdk",
    )
)


def step_functions_as_their_role(
    endpoint: str, role_credentials: Callable[[str], dict[str, Any]]
) -> list[Any]:
    """Patchers making the interpreter's clients use `role_credentials(role_arn)` (boto3 client arguments)."""
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds

    def client_as_role(region: str, service: str, state_credentials: Any = None) -> Any:
        return local_client(
            service,
            region_name=region,
            endpoint_url=endpoint,
            config=Config(
                parameter_validation=False,
                retries={"max_attempts": 0, "total_max_attempts": 1},
                connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
                read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
            ),
            **role_credentials(state_credentials.role_arn),
        )

    return [
        mock.patch(f"{module}.boto_client_for", client_as_role) for module in STEP_FUNCTIONS_CLIENT_MODULES
    ]


# --- Limits AWS enforces -------------------------------------------------------------------------------------------
# S3 refuses an object key over 1,024 bytes of UTF-8; moto stores it.
S3_MAX_KEY_BYTES = 1024


class KeyTooLongError(S3ClientError):
    code = "KeyTooLongError"
    message = "Your key is too long"


def _checking_key_length(method: Any, key_argument: str, position: int) -> Any:
    def checked(backend: S3Backend, *args: Any, **kwargs: Any) -> Any:
        key = kwargs[key_argument] if key_argument in kwargs else args[position]
        if len(key.encode("utf-8")) > S3_MAX_KEY_BYTES:
            raise KeyTooLongError()
        return method(backend, *args, **kwargs)

    return checked


_original_update_item = DynamoDBBackend.update_item


def _update_item_whole_or_not_at_all(
    backend: DynamoDBBackend, table_name: str, key: Any, *args: Any, **kwargs: Any
) -> Any:
    # DynamoDB refuses an update that would take the item over 400 KB and changes nothing. moto applies the
    # update's actions one by one and raises when the item grows too big, keeping those already applied (and
    # an item it created for the update); this puts the item back as it was.
    table = backend.get_table(table_name)
    hash_value, range_value = backend.get_keys_value(table, key)
    existing = table.get_item(hash_value, range_value)
    attributes_before = copy.deepcopy(existing.attrs) if existing is not None else None
    try:
        return _original_update_item(backend, table_name, key, *args, **kwargs)
    except ItemSizeToUpdateTooLarge:
        if attributes_before is None:
            table.delete_item(hash_value, range_value)
        else:
            table.get_item(hash_value, range_value).attrs = attributes_before
        raise


def moto_fixes() -> list[Any]:
    """Patchers (not started) for every known gap."""
    return [
        mock.patch.object(
            StepFunctionsParserBackend, "start_execution", _start_execution_with_generated_name
        ),
        mock.patch.object(
            Execution, "get_start_execution_details", _start_execution_details_with_aws_start_time
        ),
        mock.patch.object(asl_state, "StateData", _state_data_with_aws_entered_time),
        mock.patch.object(FakeBucket, "get_permission", _bucket_permission_over_https),
        mock.patch.object(s3_notifications, "quote_plus", _quote_key_like_s3),
        mock.patch.object(Execution, "__init__", _execution_running_from_the_start),
        mock.patch.object(BaseExecutionWorkerCommunication, "terminated", _terminated_and_announced),
        mock.patch.object(EventsRule, "send_to_targets", _send_to_targets_but_functions),
        mock.patch.object(Environment, "set_error", _set_error_unless_stopped),
        *(
            mock.patch.object(SQSBackend, name, _under_queue_lock(getattr(SQSBackend, name)))
            for name in ("receive_message", "delete_message", "change_message_visibility", "purge_queue")
        ),
        mock.patch.object(Queue, "messages", property(_visible_messages)),
        mock.patch.object(Queue, "approximate_number_of_messages_delayed", property(_count_delayed)),
        mock.patch.object(Queue, "approximate_number_of_messages_not_visible", property(_count_not_visible)),
        *_iam_fixes(),
        mock.patch.object(DynamoDBBackend, "update_item", _update_item_whole_or_not_at_all),
        mock.patch.object(S3Backend, "put_object", _checking_key_length(S3Backend.put_object, "key_name", 1)),
        mock.patch.object(
            S3Backend,
            "create_multipart_upload",
            _checking_key_length(S3Backend.create_multipart_upload, "key_name", 1),
        ),
        mock.patch.object(
            S3Backend, "copy_object", _checking_key_length(S3Backend.copy_object, "dest_key_name", 2)
        ),
        *distributed_map_fixes(),
    ]
