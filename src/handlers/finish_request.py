"""FinishRequestFunction: after every execution of a request ended, completes or fails its record."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import Logger

from handlers.event_shapes import finish_state
from shared import logs
from shared.notifications import announce
from shared.records import Status
from shared.runtime import runtime
from shared.tool_executions import finish_request

logger = Logger()
logs.use_service_logger(logger)


@logger.inject_lambda_context(correlation_id_path="requestId", clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    event = finish_state("FinishRequestFunction", event)
    rt = runtime()
    request_id = event["requestId"]
    finished = finish_request(request_id, event["executions"], records=rt.records, results=rt.results)
    if finished is not None:
        if finished["status"] == Status.COMPLETED:
            rt.telemetry.request_completed()
        else:
            rt.telemetry.request_failed("ToolExecutionFailed")
    record = finished or rt.records.get(request_id) or {}
    # Unless an earlier try of this step already did (a retried step lands here).
    announce(record, rt.notifier, rt.records)
    return {"requestId": request_id, "finishedNow": finished is not None, "status": record.get("status")}
