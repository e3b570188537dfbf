"""SQS batches the way Lambda's ReportBatchItemFailures wants them: items run concurrently, each failure is
reported by message id, and a failed message comes back after a backoff that doubles per delivery."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from shared import logs
from shared.errors import PipelineError

logger = logging.getLogger(__name__)

# Most a message may be hidden (SQS's own cap is 12 hours; a queue's timeout is usually far less).
MAX_BACKOFF_SECONDS = 12 * 3600


@dataclass(frozen=True)
class SqsMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    queue_arn: str
    raw: dict[str, Any]

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SqsMessage:
        attributes = record.get("attributes") or {}
        return cls(
            message_id=record["messageId"],
            receipt_handle=record.get("receiptHandle", ""),
            body=record.get("body", ""),
            receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
            queue_arn=record.get("eventSourceARN", ""),
            raw=record,
        )


def is_sqs_event(event: dict[str, Any]) -> bool:
    records = event.get("Records") or []
    return bool(records) and all(r.get("eventSource") == "aws:sqs" for r in records)


def process_batch(
    messages: Sequence[SqsMessage],
    handle: Callable[[SqsMessage], None],
    *,
    max_workers: int,
    on_failure: Callable[[SqsMessage, BaseException], None] | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Runs `handle` on every message; the response names each one that raised."""
    failures: list[dict[str, str]] = []

    def run(message: SqsMessage) -> BaseException | None:
        logs.unbind_all()  # pool threads are reused: drop the previous message's keys
        logs.bind(messageId=message.message_id)
        try:
            handle(message)
        except Exception as error:  # reported to SQS, which delivers the message again: nothing is hidden
            if isinstance(error, PipelineError) and error.retryable:
                logger.warning("message %s will be retried: %s", message.message_id, error)
            else:
                logger.exception("message %s failed", message.message_id)
            return error
        return None

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(messages)))) as pool:
        for message, error in zip(messages, pool.map(run, messages), strict=True):
            if error is not None:
                failures.append({"itemIdentifier": message.message_id})
                if on_failure:
                    on_failure(message, error)
    return {"batchItemFailures": failures}


def handle_sqs_event(
    event: dict[str, Any],
    handle: Callable[[SqsMessage], Any],
    *,
    sqs: Any,
    retry_base_delay_seconds: int,
    max_workers: int,
) -> dict[str, list[dict[str, str]]]:
    """What both queue-fed functions do with their event: every message through `handle`, concurrently,
    failures reported and delayed with the doubling backoff."""
    messages = [SqsMessage.from_record(r) for r in event.get("Records", [])]
    return process_batch(
        messages, handle, max_workers=max_workers, on_failure=RetryBackoff(sqs, retry_base_delay_seconds)
    )


@dataclass
class RetryBackoff:
    """Hides a failed message for base * 2^(deliveries-1) seconds (0 keeps the queue's own timeout)."""

    sqs: Any
    base_delay_seconds: int

    def __call__(self, message: SqsMessage, error: BaseException) -> None:
        if self.base_delay_seconds <= 0 or not message.receipt_handle:
            return
        delay = min(MAX_BACKOFF_SECONDS, self.base_delay_seconds * 2 ** (message.receive_count - 1))
        try:
            self.sqs.change_message_visibility(
                QueueUrl=queue_url(self.sqs, message.queue_arn),
                ReceiptHandle=message.receipt_handle,
                VisibilityTimeout=delay,
            )
        except ClientError as failure:
            # The queue's own visibility timeout still brings the message back; only the backoff is lost.
            logger.warning("could not delay message %s: %s", message.message_id, failure)


def queue_url(sqs: Any, queue_arn: str) -> str:
    """From the event's queue ARN and the client's regional endpoint: no GetQueueUrl call (and no permission
    for it) needed."""
    _, _, _, _, account, name = queue_arn.split(":", 5)
    return f"{sqs.meta.endpoint_url.rstrip('/')}/{account}/{name}"
