"""Lambda's SQS event source: polls a queue, hands batches to the function, deletes what it processed.

moto's own event source mapping invokes inside `send_message`, one record at a time, and deletes failed
messages too; this poller behaves like Lambda's instead:
- batches of up to BatchSize, gathered for up to MaximumBatchingWindowInSeconds;
- up to ScalingConfig.MaximumConcurrency batches in flight per queue;
- a batch is deleted when the function succeeds; with ReportBatchItemFailures only the messages it did not
  report; nothing when it fails. What is not deleted reappears after the queue's visibility timeout (or the
  one the handler set), and the queue's redrive policy moves it to the dead-letter queue after
  maxReceiveCount receives (moto applies the redrive policy on receive, as SQS does).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Any

from devtools.embedded_aws.lambda_runtime import FunctionRuntime, Invocation
from devtools.embedded_aws.serverless import SqsEventSource

logger = logging.getLogger("devtools.embedded_aws")

# System attributes Lambda copies into each record's `attributes` when SQS returns them.
RECORD_SYSTEM_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
)
SQS_MAX_MESSAGES_PER_RECEIVE = 10
# Pause after an empty receive. Short polls and a short pause rather than long polling, so that stop() is
# immediate (a long poll inside moto cannot be interrupted) and a message that became visible again is seen soon.
IDLE_SECONDS = 0.05
# The pause when the poller is woken by every message sent to its queue (`arrivals`): only a message that turns
# visible again (its visibility timeout or delay over) waits for the next look.
IDLE_SECONDS_WITH_ARRIVALS = 0.25
# The order queue_counts() reads them in. Time moves a message only towards visible (hidden or delayed ->
# visible), so reading the visible count last sees a message that moves between two reads at least once.
# moto computes each attribute at its own moment, even within one GetQueueAttributes call.
COUNT_ATTRIBUTES = (
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessages",
)


def lambda_sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One record of Lambda's SQS event, from a ReceiveMessage message."""
    system_attributes = message.get("Attributes", {})
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {
            name: system_attributes[name] for name in RECORD_SYSTEM_ATTRIBUTES if name in system_attributes
        },
        "messageAttributes": {
            name: _record_message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record.update({"eventSource": "aws:sqs", "eventSourceARN": queue_arn, "awsRegion": region})
    return record


def _record_message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    # Lambda's casing; binary values arrive base64-encoded, like everything else in a JSON event.
    attribute: dict[str, Any] = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    attribute["stringListValues"] = value.get("StringListValues", [])
    attribute["binaryListValues"] = [
        base64.b64encode(item).decode() for item in value.get("BinaryListValues", [])
    ]
    attribute["dataType"] = value["DataType"]
    return attribute


def lambda_sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    return {"Records": [lambda_sqs_record(message, queue_arn, region) for message in messages]}


def reported_failures(response: Any, message_ids: set[str]) -> set[str] | None:
    """Message ids a ReportBatchItemFailures response marks as failed; None means the whole batch failed.

    Lambda's rules: a null or empty response or `batchItemFailures` means success; an unparseable response, or
    an `itemIdentifier` that is missing, empty or not a message of the batch, fails the whole batch.
    """
    if response is None:
        return set()
    if not isinstance(response, dict):
        return None
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    failed: set[str] = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not identifier or identifier not in message_ids:
            return None
        failed.add(identifier)
    return failed


def messages_to_delete(
    messages: list[dict[str, Any]], invocation: Invocation, report_batch_item_failures: bool
) -> list[dict[str, Any]]:
    if not invocation.succeeded:
        return []
    if not report_batch_item_failures:
        return messages
    failed = reported_failures(invocation.result, {message["MessageId"] for message in messages})
    if failed is None:
        logger.warning("%s: invalid batchItemFailures response, the whole batch failed", invocation.function)
        return []
    return [message for message in messages if message["MessageId"] not in failed]


class SqsPoller:
    def __init__(
        self,
        source: SqsEventSource,
        runtime: FunctionRuntime,
        sqs_client: Any,
        region: str,
        *,
        counting_client: Any = None,
        arrivals: Any = None,
    ) -> None:
        """`sqs_client` receives and deletes (with the function's role, as Lambda's poller does);
        `counting_client` reads the queue's counts for drain() (by default the same); `arrivals`, when given
        (a QueueArrivals), wakes idle workers as soon as a message is sent to the queue."""
        self.source = source
        self._runtime = runtime
        self._sqs = sqs_client
        self._counting_sqs = counting_client or sqs_client
        self._region = region
        self._stop = threading.Event()
        # The workers of one queue take turns receiving, so one batch fills before the next starts, and
        # queue_counts() holds the same lock so that nothing is received while it counts. Handlers still run
        # concurrently.
        self._receive_lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._batches_in_flight = 0
        # Until when the queue counts as empty (monotonic): after an empty receive, the workers of the queue
        # wait out IDLE_SECONDS together instead of each asking SQS in turn; with five workers that made
        # five times the requests of one, each signed, checked against IAM and answered by moto, for nothing.
        self._idle_until = 0.0
        self._arrivals = arrivals
        self._idle_seconds = IDLE_SECONDS if arrivals is None else IDLE_SECONDS_WITH_ARRIVALS
        self._threads: list[threading.Thread] = []
        self.failure: BaseException | None = None

    @property
    def started(self) -> bool:
        return bool(self._threads)

    @property
    def batches_in_flight(self) -> int:
        with self._counter_lock:
            return self._batches_in_flight

    def queue_counts(self) -> dict[str, int]:
        """The queue's messages by state (`MessagesNotVisible`, `MessagesDelayed`, `Messages`), none missed.

        Receiving is the one move back from visible to hidden; the workers do it under the receive lock, which
        is held here, so a batch is either not received yet or received and already counted in flight.
        """
        with self._receive_lock:
            attributes = self._counting_sqs.get_queue_attributes(
                QueueUrl=self.source.queue_url, AttributeNames=list(COUNT_ATTRIBUTES)
            )["Attributes"]
        return {name.removeprefix("ApproximateNumberOf"): int(attributes[name]) for name in COUNT_ATTRIBUTES}

    def start(self) -> None:
        for index in range(self.source.maximum_concurrency):
            name = f"sqs-poller-{self.source.function_logical_id}-{self.source.event_name}-{index}"
            thread = threading.Thread(target=self._run, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        if self._arrivals is not None:
            self._arrivals.wake()

    def join(self, timeout: float) -> list[str]:
        """Waits for the workers to end; returns the names of those still running after `timeout`."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread.name for thread in self._threads if thread.is_alive()]

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                messages = self._receive_batch()
                if messages:
                    self._process(messages)
                elif self._arrivals is None:
                    self._stop.wait(IDLE_SECONDS)
                elif self._arrivals.wait(self._idle_seconds, self._stop):
                    self._idle_until = 0.0  # a message came: ask at once
        except BaseException as error:
            # Kept so that drain() reports it rather than waiting on a dead worker; re-raised for the log.
            self.failure = error
            raise

    def _receive_batch(self) -> list[dict[str, Any]]:
        if not self._receive_lock.acquire(timeout=0.2):
            return []
        try:
            if self._stop.is_set() or time.monotonic() < self._idle_until:
                return []
            messages = self._receive(self.source.batch_size)
            if not messages:
                self._idle_until = time.monotonic() + self._idle_seconds
                return []
            with self._counter_lock:
                self._batches_in_flight += 1
            window_end = time.monotonic() + self.source.maximum_batching_window_seconds
            while len(messages) < self.source.batch_size and time.monotonic() < window_end:
                more = self._receive(self.source.batch_size - len(messages))
                if not more:
                    time.sleep(IDLE_SECONDS)
                messages.extend(more)
            return messages
        finally:
            self._receive_lock.release()

    def _receive(self, wanted: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self.source.queue_url,
            MaxNumberOfMessages=min(wanted, SQS_MAX_MESSAGES_PER_RECEIVE),
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return response.get("Messages", [])

    def _process(self, messages: list[dict[str, Any]]) -> None:
        try:
            event = lambda_sqs_event(messages, self.source.queue_arn, self._region)
            invocation = self._runtime.invoke(event, trigger="sqs")
            processed = messages_to_delete(messages, invocation, self.source.report_batch_item_failures)
            self._delete(processed)
            if len(processed) < len(messages):
                logger.info(
                    "%s: %d of %d messages failed and stay on the queue",
                    self.source.function_logical_id,
                    len(messages) - len(processed),
                    len(messages),
                )
        finally:
            with self._counter_lock:
                self._batches_in_flight -= 1

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), SQS_MAX_MESSAGES_PER_RECEIVE):
            chunk = messages[start : start + SQS_MAX_MESSAGES_PER_RECEIVE]
            response = self._sqs.delete_message_batch(
                QueueUrl=self.source.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(chunk)
                ],
            )
            for failure in response.get("Failed", []):
                # Typically a stale receipt handle: the message's visibility timeout expired while the handler
                # ran, so it was received again (and will be processed again), as in AWS.
                logger.warning(
                    "%s: deleting a processed message failed (%s); was the queue's visibility timeout shorter"
                    " than the handler's run?",
                    self.source.function_logical_id,
                    failure.get("Code"),
                )
