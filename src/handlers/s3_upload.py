"""S3UploadFunction: uploads under the input prefix, via UploadEventsQueue (or a plain S3 event)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import Logger

from handlers.event_shapes import sqs_or_s3_event
from shared import logs
from shared.batch import handle_sqs_event, is_sqs_event
from shared.errors import ConfigurationError
from shared.lambda_context import time_budget
from shared.runtime import runtime
from shared.uploads import process_upload, process_upload_message, uploads_in

logger = Logger()
logs.use_service_logger(logger)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    event = sqs_or_s3_event("S3UploadFunction", event)
    rt = runtime()
    budget = time_budget(context)
    try:
        _ = rt.routing_rules  # validated at cold start, so a bad rule file is loud at once
    except ConfigurationError:
        logger.exception(
            "routing rules are invalid; every upload fails (and is retried) until they are fixed"
        )
    if is_sqs_event(event):
        return handle_sqs_event(
            event,
            lambda message: process_upload_message(rt, message, budget_seconds=budget),
            sqs=rt.sqs,
            retry_base_delay_seconds=rt.settings.retry_base_delay_seconds,
            max_workers=rt.settings.batch_parallelism,
        )
    # A plain S3 notification (sam local invoke, or a bucket wired straight to the function).
    outcomes = [
        process_upload(rt, upload, receive_count=1, budget_seconds=budget) for upload in uploads_in(event)
    ]
    return {"outcomes": [o.__dict__ for o in outcomes if o]}
