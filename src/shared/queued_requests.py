"""Queued requests: SQS messages from other systems become pipeline jobs."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from shared.batch import SqsMessage
from shared.errors import InvalidRequestError
from shared.messages import RequestMessage
from shared.models import ChatRequest, parse
from shared.pipeline import Job, Outcome
from shared.request_builder import (
    build_chat_request,
    check_inline_text,
    check_model_allowed,
    prepare,
    with_attachments,
)
from shared.sources import S3Source, parse_s3_uri

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.runtime import Runtime


def parse_message(message: SqsMessage) -> tuple[str, RequestMessage]:
    """The requestId to record under, and the message; UnreadableMessage (keyed by the message id) when it
    cannot be read."""
    try:
        body = json.loads(message.body)
    except (ValueError, RecursionError) as error:  # RecursionError: nested deeper than the parser goes
        raise UnreadableMessage(
            message.message_id, InvalidRequestError("body", f"not valid JSON: {error}")
        ) from None
    try:
        parsed = parse(RequestMessage, body, root="body")
    except InvalidRequestError as error:
        # Recorded under its own message id, whatever requestId it names: it must not touch that request.
        raise UnreadableMessage(message.message_id, error) from None
    return parsed.request_id or message.message_id, parsed


class UnreadableMessage(Exception):
    def __init__(self, request_id: str, reason: InvalidRequestError):
        self.request_id = request_id
        self.reason = reason
        super().__init__(str(reason))


def build_queued_request(rt: Runtime, parsed: RequestMessage) -> ChatRequest:
    settings = rt.settings
    named_model = parsed.request.model_id if parsed.request is not None else parsed.model_id
    if named_model is not None:
        field = "request.modelId" if parsed.request is not None else "modelId"
        check_model_allowed(named_model, settings.allowed_model_ids, field)
    limits = rt.limits
    items = []
    seen: set[str] = set()
    for index, attachment in enumerate(parsed.attachments):
        bucket, key = parse_s3_uri(attachment.uri)
        check_attachment_location(settings, bucket, key, f"attachments.{index}.uri")
        if attachment.uri in seen:  # the same object twice is read and sent once
            continue
        seen.add(attachment.uri)
        items.append(prepare(S3Source(rt.s3, bucket, key), label=attachment.label, limits=limits))
    check_inline_text(items, limits)
    if parsed.request is not None:
        return with_attachments(parsed.request, items)
    return build_chat_request(
        items,
        parsed.prompt or "",
        model_id=parsed.model_id or settings.default_model_id,
        **parsed.options(),
    )


def check_attachment_location(settings: Settings, bucket: str, key: str, field: str) -> None:
    """Attachments come from the attachments prefix of the stack's bucket or from a bucket the operator
    granted (AttachmentBuckets); never from the results prefix, where other requests' answers are."""
    own_bucket = bucket == settings.results_bucket
    allowed = (
        own_bucket and key.startswith(settings.attachments_prefix)
    ) or bucket in settings.attachment_buckets
    if not allowed or (own_bucket and key.startswith(settings.results_prefix)):
        raise InvalidRequestError(
            field,
            f"attachment outside the allowed location: s3://{bucket}/{key} (allowed: s3://"
            f"{settings.results_bucket}/{settings.attachments_prefix}..., or a bucket in AttachmentBuckets)",
        )


def process_request_message(rt: Runtime, message: SqsMessage, *, budget_seconds: float) -> Outcome:
    source: dict[str, Any] = {"type": "sqs", "queue": message.queue_arn, "messageId": message.message_id}
    rt.telemetry.request_received("queue")
    try:
        request_id, parsed = parse_message(message)
    except UnreadableMessage as unreadable:
        return rt.pipeline.fail(unreadable.request_id, unreadable.reason, source=source, create_only=True)
    job = Job(
        request_id=request_id,
        source=source,
        build=lambda: build_queued_request(rt, parsed),
        result_key=rt.pipeline.results.key_for_request(request_id),
        receive_count=message.receive_count,
        metadata=parsed.metadata,
        fingerprint=hashlib.sha256(message.body.encode()).hexdigest(),
        conflict_id=message.message_id,
    )
    return rt.pipeline.run(job, budget_seconds=budget_seconds)
