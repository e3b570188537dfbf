"""What each entry point takes, checked before any work: an event of another shape (an S3 notification sent
to the queue function, a hand-written event to a state machine step) fails with an error that names the shape
expected and what was given, rather than a KeyError deep inside."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SQS_EVENT = "an SQS event {'Records': [{'eventSource': 'aws:sqs', 'messageId': ..., 'body': ...}]}"
S3_EVENT = "an S3 notification {'Records': [{'eventSource': 'aws:s3', 's3': {'bucket': ..., 'object': ...}}]}"
POLL_STATE = (
    "the poller's state {'requestId': str, 'execution': {'executionId': str, ...}, 'startedAt': str,"
    " 'policy': {...}}"
)
FINISH_STATE = (
    "the poller's state {'requestId': str, 'attempt': int, 'executions': [{'executionId': str, ...}, ...]}"
    " (with 'pollerError': {'Error': str, 'Cause': str} when it failed), or EventBridge's"
    " 'Step Functions Execution Status Change' of a poller execution"
)
SWEEP_EVENT = "EventBridge's 'Scheduled Event', or {} (an invocation by hand)"
EXECUTION_STATUS_CHANGE = "Step Functions Execution Status Change"


class InvalidEventError(ValueError):
    """The function was given an event it does not take; retrying the same event cannot help."""

    def __init__(self, function: str, expected: str, event: Any) -> None:
        super().__init__(f"{function} takes {expected}; got {describe(event)}")


def describe(event: Any) -> str:
    """What an event looks like, in a few words (never its values: they may be large or sensitive)."""
    if not isinstance(event, dict):
        return f"a JSON {type(event).__name__}"
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict):
        source = records[0].get("eventSource") or records[0].get("EventSource")
        return f"an event whose Records[0].eventSource is {source!r}"
    return f"an object with keys {sorted(event)[:8]}"


def is_sqs_event(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    return (
        isinstance(records, list)
        and bool(records)
        and all(
            isinstance(r, dict) and r.get("eventSource") == "aws:sqs" and "messageId" in r for r in records
        )
    )


def is_s3_event(event: Any) -> bool:
    if isinstance(event, dict) and event.get("Event") == "s3:TestEvent":
        return True
    records = event.get("Records") if isinstance(event, dict) else None
    return isinstance(records, list) and all(
        isinstance(r, dict) and isinstance(r.get("s3"), dict) for r in records
    )


def sqs_event(function: str, event: Any) -> dict[str, Any]:
    if not is_sqs_event(event):
        raise InvalidEventError(function, SQS_EVENT, event)
    return event


def sqs_or_s3_event(function: str, event: Any) -> dict[str, Any]:
    if not (is_sqs_event(event) or is_s3_event(event)):
        raise InvalidEventError(function, f"{SQS_EVENT} or {S3_EVENT}", event)
    return event


def poll_state(function: str, event: Any) -> dict[str, Any]:
    execution = event.get("execution") if isinstance(event, dict) else None
    if not (
        isinstance(execution, dict)
        and isinstance(execution.get("executionId"), str)
        and isinstance(event.get("requestId"), str)
        and isinstance(event.get("startedAt"), str)
        and isinstance(event.get("policy"), dict)
    ):
        raise InvalidEventError(function, POLL_STATE, event)
    return event


@dataclass(frozen=True)
class FinishEvent:
    """What the FinishRequestFunction is asked: to finish a request from its executions' outcomes, or to record
    that its poller failed (`failure` says how)."""

    request_id: str
    # None: a poller started before attempts were named (it finishes whichever attempt is waiting).
    attempt: int | None
    executions: list[dict[str, Any]] | None = None
    failure: str | None = None


def finish_state(function: str, event: Any) -> FinishEvent:
    if isinstance(event, dict) and event.get("detail-type") == EXECUTION_STATUS_CHANGE:
        return _poller_ended(function, event)
    if not isinstance(event, dict) or not isinstance(event.get("requestId"), str):
        raise InvalidEventError(function, FINISH_STATE, event)
    attempt = event.get("attempt")
    if attempt is not None and (not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1):
        raise InvalidEventError(function, FINISH_STATE, event)
    failure = event.get("pollerError")  # what the poller's Catch adds to its state
    if isinstance(failure, dict):
        error, cause = failure.get("Error"), failure.get("Cause")
        return FinishEvent(event["requestId"], attempt, failure=f"the poller failed: {error}: {cause}")
    executions = event.get("executions")
    if not (
        isinstance(executions, list)
        and all(isinstance(e, dict) and isinstance(e.get("executionId"), str) for e in executions)
    ):
        raise InvalidEventError(function, FINISH_STATE, event)
    return FinishEvent(event["requestId"], attempt, executions=executions)


def _poller_ended(function: str, event: dict[str, Any]) -> FinishEvent:
    """The poller's own input names the request and the attempt; EventBridge carries it as a JSON string."""
    detail = event.get("detail")
    started_with: Any = None
    if isinstance(detail, dict) and isinstance(detail.get("input"), str):
        try:
            started_with = json.loads(detail["input"])
        except ValueError:
            started_with = None
    if not (isinstance(started_with, dict) and isinstance(started_with.get("requestId"), str)):
        raise InvalidEventError(function, FINISH_STATE + " whose detail.input names the requestId", event)
    attempt = started_with.get("attempt")
    name, status = detail.get("name"), detail.get("status")  # type: ignore[union-attr]
    reason = f"{detail.get('error')}: {detail.get('cause')}" if detail.get("error") else "no error given"  # type: ignore[union-attr]
    return FinishEvent(
        started_with["requestId"],
        attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        failure=f"the poller execution {name} ended {status}: {reason}",
    )


def sweep_event(function: str, event: Any) -> dict[str, Any]:
    if event == {} or (
        isinstance(event, dict)
        and event.get("detail-type") == "Scheduled Event"
        and event.get("source") == "aws.events"
    ):
        return event
    raise InvalidEventError(function, SWEEP_EVENT, event)


REPROCESS_STEP = (
    "a ReprocessObjects step {'step': 'plan', 'input': {...}, 'runId': str}, {'step': 'queue', 'plan': {...},"
    " 'items': [...]} or {'step': 'finish', 'plan': {...}, 'batches': [...]}"
)


def reprocess_step(function: str, event: Any) -> dict[str, Any]:
    step = event.get("step") if isinstance(event, dict) else None
    shapes = {
        "plan": lambda e: isinstance(e.get("runId"), str) and "input" in e,
        "queue": lambda e: isinstance(e.get("plan"), dict) and isinstance(e.get("items"), list),
        "finish": lambda e: isinstance(e.get("plan"), dict) and isinstance(e.get("batches"), list),
    }
    if step not in shapes or not shapes[step](event):
        raise InvalidEventError(function, REPROCESS_STEP, event)
    return event
