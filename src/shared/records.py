"""The request record in DynamoDB: one item per requestId, whose status only moves forward.

PROCESSING -> WAITING_FOR_TOOLS -> COMPLETED | FAILED, and PROCESSING -> COMPLETED | FAILED. A worker
claims a record (a lease) before calling the gateway, so two deliveries of one event never both call it;
a record FAILED only because retries ran out (retryable) can be claimed again, for a DLQ redrive.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from botocore.exceptions import ClientError

from shared.errors import (
    TRANSIENT_AWS_CODES,
    GatewayCallsExhaustedError,
    PipelineError,
    RecordRefusedError,
    TransientStoreError,
    aws_error_code,
)

logger = logging.getLogger(__name__)

# DynamoDB's item limit is 400 KB; leave room for the other attributes and the attribute names.
MAX_INLINE_RESULT_BYTES = 300 * 1024
# A billed answer S3 refused, kept in its PROCESSING record until it reaches S3 (the record is small then).
MAX_PENDING_ANSWER_BYTES = 300 * 1024


class Status(StrEnum):
    PROCESSING = "PROCESSING"
    WAITING_FOR_TOOLS = "WAITING_FOR_TOOLS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED})

# The sweeper's sparse index: only a record that has not ended, or has ended but is not yet announced, carries
# sweepShard and sweepAt, the moment after which nothing but the sweeper will move it on. The shards spread the
# index's writes.
SWEEP_INDEX = "SweepIndex"
SWEEP_SHARDS = 8
SWEEP_ATTRIBUTES = ("sweepShard", "sweepAt")


def sweep_shard(request_id: str) -> str:
    return str(zlib.crc32(request_id.encode()) % SWEEP_SHARDS)


@dataclass(frozen=True)
class SweepPolicy:
    """When a record that has not ended counts as stranded. PROCESSING: `grace_seconds` after its lease
    ended (time for its message's next delivery; more than the queues' visibility timeout). WAITING_FOR_TOOLS:
    `poller_seconds` (the poller's own timeout) plus the grace, after it began waiting."""

    grace_seconds: int = 900
    poller_seconds: int = 3600


def of_attempt(attempt: int | None) -> dict[str, Any] | None:
    """The condition (`expected`) that a record is still in the given attempt (its claim count); None when
    any attempt will do (a poller started before attempts were named)."""
    return None if attempt is None else {"attempts": attempt}


def in_attempt(record: dict[str, Any], attempt: int | None) -> bool:
    """What of_attempt() asks of DynamoDB, asked of a record already read."""
    return attempt is None or record.get("attempts") == attempt


def utc_now_iso(clock: float | None = None) -> str:
    moment = datetime.now(UTC) if clock is None else datetime.fromtimestamp(clock, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# An error's message can echo what it refused (a huge value, say): the record keeps its start.
MAX_ERROR_MESSAGE_CHARS = 2000


def truncated(text: str, limit: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def error_fields(error: PipelineError | Exception, message: str | None = None) -> dict[str, Any]:
    retryable = isinstance(error, PipelineError) and error.retryable
    kind = error.kind if isinstance(error, PipelineError) else type(error).__name__
    return {"kind": kind, "message": truncated(message or str(error)), "retryable": retryable}


def to_dynamo(value: Any) -> Any:
    """DynamoDB wants Decimal, not float."""
    return json.loads(json.dumps(value), parse_float=Decimal)


def from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    return value


@dataclass(frozen=True)
class Claim:
    # conflict: the record belongs to another request (its fingerprint differs), which this one may not touch
    outcome: Literal["claimed", "done", "busy", "conflict"]
    record: dict[str, Any]

    @property
    def attempts(self) -> int:
        return int(self.record.get("attempts", 0))


class RecordStore:
    def __init__(
        self, table: Any, *, ttl_days: int, clock: Any = time.time, sweep: SweepPolicy | None = None
    ):
        self._table = table
        self._ttl_days = ttl_days
        self._clock = clock
        self._sweep = sweep or SweepPolicy()

    def get(self, request_id: str) -> dict[str, Any] | None:
        item = self._call(self._table.get_item, Key={"requestId": request_id}, ConsistentRead=True).get(
            "Item"
        )
        return from_dynamo(item) if item else None

    def claim(
        self,
        request_id: str,
        *,
        source: dict[str, Any],
        lease_seconds: float,
        metadata: dict[str, Any] | None,
        fingerprint: str,
        attributes: dict[str, str] | None = None,
    ) -> Claim:
        """Takes the record for one attempt: creates it, or takes over an expired lease, or re-opens a
        record that failed only because retries ran out. Otherwise says why not. `fingerprint` names the
        request's content: only the same request (a redelivery, a redrive, the same message sent again) may
        take over a record, never another one that reuses its requestId. `attributes`: top-level string
        attributes the table's indexes read (shared.record_index), set when the record is made."""
        now = self._clock()
        values = {
            ":processing": Status.PROCESSING.value,
            ":failed": Status.FAILED.value,
            ":now": utc_now_iso(now),
            ":now_epoch": to_dynamo(now),
            ":lease": to_dynamo(now + lease_seconds),
            ":source": to_dynamo(source),
            ":zero": 0,
            ":one": 1,
            ":true": True,
            ":fingerprint": fingerprint,
            ":shard": sweep_shard(request_id),
            ":sweep_at": int(now + lease_seconds + self._sweep.grace_seconds),
        }
        sets = [
            "#status = :processing",
            "#source = if_not_exists(#source, :source)",
            "createdAt = if_not_exists(createdAt, :now)",
            "updatedAt = :now",
            "leaseUntil = :lease",
            "attempts = if_not_exists(attempts, :zero) + :one",
            "fingerprint = if_not_exists(fingerprint, :fingerprint)",
            "sweepShard = :shard",
            "sweepAt = :sweep_at",
        ]
        if self._ttl_days:
            sets.append("expiresAt = :expires")
            values[":expires"] = int(now + self._ttl_days * 86400)
        if metadata:
            sets.append("metadata = :metadata")
            values[":metadata"] = to_dynamo(metadata)
        names = {"#status": "status", "#source": "source", "#error": "error"}
        for index, (name, value) in enumerate((attributes or {}).items()):
            names[f"#index{index}"] = name
            values[f":index{index}"] = value
            sets.append(f"#index{index} = if_not_exists(#index{index}, :index{index})")
        try:
            result = self._call(
                self._table.update_item,
                Key={"requestId": request_id},
                # A re-opened record (a redrive) will end anew and be announced anew.
                UpdateExpression="SET " + ", ".join(sets) + " REMOVE #error, notifiedAt",
                ConditionExpression=(
                    "attribute_not_exists(requestId)"
                    " OR ((attribute_not_exists(fingerprint) OR fingerprint = :fingerprint) AND"
                    " ((#status = :processing AND leaseUntil < :now_epoch)"
                    " OR (#status = :failed AND #error.retryable = :true)))"
                ),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            # The error carries the item in DynamoDB's typed JSON ({"S": ...}), which the resource layer
            # does not convert.
            typed = error.response.get("Item")
            record = from_dynamo(_untyped(typed)) if typed else (self.get(request_id) or {})
            if record.get("fingerprint") not in (None, fingerprint):
                return Claim("conflict", record)
            outcome = "busy" if record.get("status") == Status.PROCESSING else "done"
            return Claim(outcome, record)
        return Claim("claimed", from_dynamo(result["Attributes"]))

    def release(self, request_id: str, error: PipelineError | Exception) -> None:
        """Gives the lease back after a transient failure, so the next delivery may try at once."""
        self._update(
            request_id,
            {"leaseUntil": 0, "lastError": error_fields(error)},
            allowed_from=(Status.PROCESSING,),
        )

    def finish(
        self,
        request_id: str,
        status: Status,
        fields: dict[str, Any],
        *,
        allowed_from: tuple[Status, ...],
        expected: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Moves the record forward to `status` and returns it; None when it had already moved on (or does not
        hold the `expected` attributes)."""
        return self._update(
            request_id, {"status": status.value, **fields}, allowed_from=allowed_from, expected=expected
        )

    def fail(
        self,
        request_id: str,
        error: PipelineError | Exception,
        *,
        message: str | None = None,
        source: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        create_only: bool = False,
        allowed_from: tuple[Status, ...] = (Status.PROCESSING, Status.WAITING_FOR_TOOLS),
        expected: dict[str, Any] | None = None,
        create: bool = True,
    ) -> dict[str, Any] | None:
        """Records FAILED (and returns the record), creating it if the request never got as far as a claim;
        None when the record had already ended. `create_only`: only a new record, never one that exists
        (for a message that could not be read: whatever id it names, it touches no other request).
        `expected`: attributes the record must hold (its attempt, say), or it is left alone. `create=False`:
        only a record that exists."""
        fields: dict[str, Any] = {
            "status": Status.FAILED.value,
            "error": error_fields(error, message),
            **(extra or {}),
        }
        if source is not None:
            fields["source"] = source
        return self._update(
            request_id,
            fields,
            allowed_from=() if create_only else allowed_from,
            create=create and expected is None,
            remove=("leaseUntil",),
            expected=expected,
        )

    def overdue(self, now: float | None = None) -> Iterator[dict[str, Any]]:
        """The records whose sweep moment has passed ({requestId, sweepAt}), from the sparse index: a query per
        shard, never a scan. The index is eventually consistent: settle each with a condition."""
        moment = int(self._clock() if now is None else now)
        for shard in range(SWEEP_SHARDS):
            query: dict[str, Any] = {
                "IndexName": SWEEP_INDEX,
                "KeyConditionExpression": "sweepShard = :shard AND sweepAt <= :now",
                "ExpressionAttributeValues": {":shard": str(shard), ":now": moment},
            }
            for page in query_pages(lambda **request: self._call(self._table.query, **request), query):
                for item in page.get("Items", []):
                    yield from_dynamo(item)

    def keep_answer(self, request_id: str, document: str) -> bool:
        """Keeps a billed answer S3 would not take in the record, while it is PROCESSING, when it fits; True
        when kept. Best effort: the caller is already failing, and DynamoDB may be failing too."""
        if len(document.encode()) > MAX_PENDING_ANSWER_BYTES:
            return False
        try:
            kept = self._update(request_id, {"pendingAnswer": document}, allowed_from=(Status.PROCESSING,))
        except (PipelineError, ClientError) as error:
            logger.warning(
                "request %s: the answer could not be kept in the record either: %s", request_id, error
            )
            return False
        return kept is not None

    def take_gateway_call(self, request_id: str, limit: int) -> int:
        """Counts one more chat call the gateway may bill for the request (over all its deliveries), and
        returns the count; raises GatewayCallsExhaustedError when `limit` calls were already made."""
        try:
            result = self._call(
                self._table.update_item,
                Key={"requestId": request_id},
                UpdateExpression="ADD gatewayCalls :one",
                ConditionExpression="attribute_exists(requestId) AND"
                " (attribute_not_exists(gatewayCalls) OR gatewayCalls < :limit)",
                ExpressionAttributeValues={":one": 1, ":limit": limit},
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            raise GatewayCallsExhaustedError(limit) from None
        return int(result["Attributes"]["gatewayCalls"])

    def return_gateway_call(self, request_id: str) -> None:
        """Takes back a counted call that the gateway did not bill (refused at the door, or never sent)."""
        try:
            self._call(
                self._table.update_item,
                Key={"requestId": request_id},
                UpdateExpression="ADD gatewayCalls :minus_one",
                ConditionExpression="gatewayCalls > :zero",
                ExpressionAttributeValues={":minus_one": -1, ":zero": 0},
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def mark_notified(self, request_id: str) -> None:
        """Announced: out of the sweeper's index for good."""
        self._update(
            request_id,
            {"notifiedAt": utc_now_iso(self._clock())},
            allowed_from=tuple(TERMINAL),
            remove=SWEEP_ATTRIBUTES,
        )

    def _update(
        self,
        request_id: str,
        fields: dict[str, Any],
        *,
        allowed_from: tuple[Status, ...],
        create: bool = False,
        remove: tuple[str, ...] = (),
        expected: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        now = self._clock()
        fields = {"updatedAt": utc_now_iso(now), **fields}
        status = fields.get("status")
        retryable = bool((fields.get("error") or {}).get("retryable"))
        if status in (Status.COMPLETED, Status.WAITING_FOR_TOOLS) or (
            status == Status.FAILED and not retryable
        ):
            # In S3 by now, or never to be used (see keep_answer); a retryable failure keeps it for a redrive.
            remove = (*remove, "pendingAnswer")
        if status in TERMINAL:
            # Still in the sweeper's index until announced (mark_notified): an event that every delivery
            # failed to send (its message redriven under a new id, say) is sent by the sweeper.
            fields["sweepShard"] = sweep_shard(request_id)
            fields["sweepAt"] = int(now + self._sweep.grace_seconds)
        elif status == Status.WAITING_FOR_TOOLS:
            fields["sweepAt"] = int(now + self._sweep.poller_seconds + self._sweep.grace_seconds)
        if create:
            fields.setdefault("createdAt", None)
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values: dict[str, Any] = {}
        sets = []
        for placeholder, name in names.items():
            value = fields[name]
            if name == "createdAt":
                sets.append(f"{placeholder} = if_not_exists({placeholder}, :createdAt)")
                values[":createdAt"] = utc_now_iso(now)
            else:
                sets.append(f"{placeholder} = :v{placeholder[2:]}")
                values[f":v{placeholder[2:]}"] = to_dynamo(value)
        if self._ttl_days:
            sets.append("expiresAt = :expires")
            values[":expires"] = int(now + self._ttl_days * 86400)
        if allowed_from:
            names["#status"] = "status"
        allowed = [f":from{i}" for i in range(len(allowed_from))]
        values.update({f":from{i}": status.value for i, status in enumerate(allowed_from)})
        condition = f"#status IN ({', '.join(allowed)})" if allowed else ""
        for i, (name, value) in enumerate((expected or {}).items()):
            names[f"#e{i}"] = name
            values[f":e{i}"] = to_dynamo(value)
            condition = " AND ".join(c for c in (condition, f"#e{i} = :e{i}") if c)
        if create:
            condition = " OR ".join(c for c in ("attribute_not_exists(requestId)", condition) if c)
        expression = "SET " + ", ".join(sets)
        if remove:
            expression += " REMOVE " + ", ".join(remove)
        try:
            result = self._call(
                self._table.update_item,
                Key={"requestId": request_id},
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",  # the caller usually needs the record next: no second read
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return None
            raise
        return from_dynamo(result["Attributes"])

    @staticmethod
    def _call(operation: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return operation(**kwargs)
        except decimal.DecimalException as error:  # boto3 checks DynamoDB's number range before sending
            raise RecordRefusedError(
                f"DynamoDB refused the record: a number out of its range ({error!r})"
            ) from None
        except ClientError as error:
            if aws_error_code(error) in TRANSIENT_AWS_CODES:
                raise TransientStoreError(f"DynamoDB {aws_error_code(error)}") from error
            if aws_error_code(error) == "ValidationException":
                # What the request would store is more than DynamoDB takes (over 400 KB, say): permanent.
                message = error.response["Error"].get("Message")
                raise RecordRefusedError(f"DynamoDB refused the record: {message}") from None
            raise


def query_pages(query: Callable[..., dict[str, Any]], request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every page of a DynamoDB Query, one at a time (never all of them in memory)."""
    request = dict(request)
    while True:
        page = query(**request)
        yield page
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _untyped(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in item.items()}


def split_for_item(result: dict[str, Any], reserved: Any = None) -> tuple[dict[str, Any], bool]:
    """The result fields to keep in the item: all of them, or none of the bulky ones when too big.
    `reserved` is what else the item holds (source, metadata, executions): it counts toward the limit."""
    room = MAX_INLINE_RESULT_BYTES - (len(json.dumps(reserved, default=str).encode()) if reserved else 0)
    if len(json.dumps(result, default=str).encode()) <= room:
        return result, False
    slim = {k: v for k, v in result.items() if k not in ("content", "toolUse")}
    return slim, True


# The attributes the table's sparse indexes read (queried in shared.record_index). `objectVersion` names one
# object's content: bucket, key and ETag (a listing gives the ETag, not an event's sequencer, so it is what a
# reprocess run and an upload both know). `runId`: the reprocess run that made the record.
OBJECT_VERSION_ATTRIBUTE = "objectVersion"
RUN_ATTRIBUTE = "runId"


def object_version(bucket: str, key: str, etag: str) -> str:
    """S3 events give the ETag bare, listings in quotes: the same version either way."""
    digest = hashlib.sha256(f"{bucket}\n{key}\n{etag.strip(chr(34))}".encode()).hexdigest()
    return digest[:32]
