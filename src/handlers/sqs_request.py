"""SqsRequestFunction: JSON chat requests from RequestQueue, the messages of a batch run concurrently."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import Logger

from handlers.event_shapes import sqs_event
from shared import logs
from shared.batch import handle_sqs_event
from shared.lambda_context import time_budget
from shared.queued_requests import process_request_message
from shared.runtime import runtime

logger = Logger()
logs.use_service_logger(logger)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    event = sqs_event("SqsRequestFunction", event)
    rt = runtime()
    budget = time_budget(context)
    return handle_sqs_event(
        event,
        lambda message: process_request_message(rt, message, budget_seconds=budget),
        sqs=rt.sqs,
        retry_base_delay_seconds=rt.settings.retry_base_delay_seconds,
        max_workers=rt.settings.batch_parallelism,
    )
