"""The results table's sparse indexes for reprocessing: records by the object version they processed, and by
the reprocess run that made them. Each is a Query on a global secondary index, never a scan.

`objectVersion` names one object's content (bucket, key and ETag: a listing gives the ETag, not the event's
sequencer, so it is what a reprocess run and an upload both know); every upload record carries it, so a run
without `force` skips an object whose current version already has a COMPLETED record, however it was made.
`runId` is on the records a reprocess run made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

OBJECT_VERSION_ATTRIBUTE = "objectVersion"
OBJECT_VERSION_INDEX = "ObjectVersionIndex"
RUN_ATTRIBUTE = "runId"
RUN_INDEX = "RunIndex"


def object_version(bucket: str, key: str, etag: str) -> str:
    """S3 events give the ETag bare, listings in quotes: the same version either way."""
    digest = hashlib.sha256(f"{bucket}\n{key}\n{etag.strip(chr(34))}".encode()).hexdigest()
    return digest[:32]


def has_completed_record(table: Any, version: str) -> bool:
    """Whether any record of this object version is COMPLETED (its index holds only a few per version)."""
    request: dict[str, Any] = {
        "IndexName": OBJECT_VERSION_INDEX,
        "KeyConditionExpression": "#version = :version",
        "FilterExpression": "#status = :completed",
        "ExpressionAttributeNames": {"#version": OBJECT_VERSION_ATTRIBUTE, "#status": "status"},
        "ExpressionAttributeValues": {":version": version, ":completed": "COMPLETED"},
        "Select": "COUNT",
    }
    while True:
        page = table.query(**request)
        if page.get("Count"):
            return True
        if "LastEvaluatedKey" not in page:
            return False
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def run_records(table: Any, run_id: str) -> Iterator[dict[str, Any]]:
    """The records a reprocess run made (requestId, status, source, updatedAt), page by page."""
    request: dict[str, Any] = {
        "IndexName": RUN_INDEX,
        "KeyConditionExpression": "#run = :run",
        "ExpressionAttributeNames": {"#run": RUN_ATTRIBUTE},
        "ExpressionAttributeValues": {":run": run_id},
    }
    while True:
        page = table.query(**request)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
