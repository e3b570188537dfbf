"""Where moto 5.2.5 differs from AWS in a way the stack would notice; patched while a stack is deployed."""

from __future__ import annotations

import datetime
import json
import threading
import uuid
from typing import Any
from unittest import mock
from urllib.parse import quote_plus

from moto.iam.access_control import IAMPolicy, PermissionResult
from moto.s3 import notifications as s3_notifications
from moto.s3.models import FakeBucket
from moto.sqs.models import SQSBackend
from moto.stepfunctions.parser.api import ExecutionStatus
from moto.stepfunctions.parser.asl.component.state import state as asl_state
from moto.stepfunctions.parser.backend.execution import Execution
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

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


def _under_queue_lock(method: Any) -> Any:
    # moto's queue is not thread-safe: a delete rebuilds the message list and assigns it back, so two deletes
    # at once can put a deleted message back (it is delivered again), and a receive iterating the in-flight set
    # while another thread deletes raises "Set changed size during iteration". The queue's own lock (the
    # reentrant Condition that SendMessage already holds) makes each of these calls atomic, as in SQS.
    def locked(backend: SQSBackend, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with backend.get_queue(queue_name)._messages_lock:
            return method(backend, queue_name, *args, **kwargs)

    return locked


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
        *(
            mock.patch.object(SQSBackend, name, _under_queue_lock(getattr(SQSBackend, name)))
            for name in ("receive_message", "delete_message", "change_message_visibility", "purge_queue")
        ),
    ]
