"""FinishRequestFunction: ends a request that waited for tools: completes or fails its record once every
execution has ended, or fails it when its poller failed (the poller's Catch, or EventBridge's word that a
poller execution failed, was aborted or timed out)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import Logger

from handlers.event_shapes import finish_state
from shared import logs
from shared.notifications import announce_for_attempt
from shared.records import Status
from shared.runtime import runtime
from shared.stranded import fail_poller
from shared.tool_executions import finish_request

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
logs.use_service_logger(logger)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    asked = finish_state("FinishRequestFunction", event)
    logs.bind(requestId=asked.request_id)
    rt = runtime()
    if asked.failure is not None:
        settled = fail_poller(
            asked.request_id,
            asked.attempt,
            asked.failure,
            records=rt.records,
            notifier=rt.notifier,
            telemetry=rt.telemetry,
        )
        return {
            "requestId": asked.request_id,
            "finishedNow": settled.record is not None,
            "status": settled.status,
        }
    finished = finish_request(
        asked.request_id,
        asked.executions or [],
        attempt=asked.attempt,
        records=rt.records,
        results=rt.results,
    )
    if finished is not None:
        if finished["status"] == Status.COMPLETED:
            rt.telemetry.request_completed()
        else:
            rt.telemetry.request_failed("ToolExecutionFailed")
    record = finished or rt.records.get(asked.request_id) or {}
    # Unless an earlier try of this step already did (a retried step lands here).
    announce_for_attempt(record, asked.attempt, rt.notifier, rt.records)
    return {
        "requestId": asked.request_id,
        "finishedNow": finished is not None,
        "status": record.get("status"),
    }
