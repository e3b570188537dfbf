"""Queued requests: SQS messages from other systems become pipeline jobs."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from shared.batch import SqsMessage
from shared.errors import InvalidRequestError
from shared.messages import REQUEST_ID_PATTERN, RequestMessage
from shared.models import ChatRequest, parse
from shared.pipeline import Job, Outcome
from shared.request_builder import build_chat_request, prepare, with_attachments
from shared.sources import S3Source, parse_s3_uri

if TYPE_CHECKING:
    from shared.runtime import Runtime


def parse_message(message: SqsMessage) -> tuple[str, RequestMessage]:
    """The requestId to record under, and the message; raises with the requestId it could read."""
    try:
        body = json.loads(message.body)
    except json.JSONDecodeError as error:
        raise UnreadableMessage(
            message.message_id, InvalidRequestError("body", f"not valid JSON: {error}")
        ) from None
    request_id = message.message_id
    candidate = body.get("requestId") if isinstance(body, dict) else None
    if isinstance(candidate, str) and re.fullmatch(REQUEST_ID_PATTERN, candidate):
        request_id = candidate
    try:
        parsed = parse(RequestMessage, body, root="body")
    except InvalidRequestError as error:
        raise UnreadableMessage(request_id, error) from None
    return parsed.request_id or message.message_id, parsed


class UnreadableMessage(Exception):
    def __init__(self, request_id: str, reason: InvalidRequestError):
        self.request_id = request_id
        self.reason = reason
        super().__init__(str(reason))


def build_queued_request(rt: Runtime, parsed: RequestMessage) -> ChatRequest:
    items = []
    for attachment in parsed.attachments:
        bucket, key = parse_s3_uri(attachment.uri)
        source = S3Source(rt.s3, bucket, key)
        items.append(prepare(source, label=attachment.label, max_request_bytes=rt.settings.max_request_bytes))
    if parsed.request is not None:
        return with_attachments(parsed.request, items)
    return build_chat_request(
        items,
        parsed.prompt or "",
        model_id=parsed.model_id or rt.settings.default_model_id,
        **parsed.options(),
    )


def process_request_message(rt: Runtime, message: SqsMessage, *, budget_seconds: float) -> Outcome:
    source: dict[str, Any] = {"type": "sqs", "queue": message.queue_arn, "messageId": message.message_id}
    rt.telemetry.request_received("queue")
    try:
        request_id, parsed = parse_message(message)
    except UnreadableMessage as unreadable:
        return rt.pipeline.fail(unreadable.request_id, unreadable.reason, source=source)
    job = Job(
        request_id=request_id,
        source=source,
        build=lambda: build_queued_request(rt, parsed),
        result_key=rt.pipeline.results.key_for_request(request_id),
        receive_count=message.receive_count,
        metadata=parsed.metadata,
    )
    return rt.pipeline.run(job, budget_seconds=budget_seconds)
