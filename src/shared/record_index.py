"""The results table's sparse indexes for reprocessing: records by the object version they processed, and by
the reprocess run that made them. Each is a Query on a global secondary index, never a scan.

Every upload record carries `objectVersion` (shared.records.object_version), so a run without `force` skips an
object whose current version already has a COMPLETED record, however it was made; `runId` is on the records a
reprocess run made.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shared.records import OBJECT_VERSION_ATTRIBUTE, RUN_ATTRIBUTE, Status, query_pages

OBJECT_VERSION_INDEX = "ObjectVersionIndex"
RUN_INDEX = "RunIndex"


def has_completed_record(table: Any, version: str) -> bool:
    """Whether any record of this object version is COMPLETED (its index holds only a few per version)."""
    request: dict[str, Any] = {
        "IndexName": OBJECT_VERSION_INDEX,
        "KeyConditionExpression": "#version = :version",
        "FilterExpression": "#status = :completed",
        "ExpressionAttributeNames": {"#version": OBJECT_VERSION_ATTRIBUTE, "#status": "status"},
        "ExpressionAttributeValues": {":version": version, ":completed": Status.COMPLETED.value},
        "Select": "COUNT",
    }
    return any(page.get("Count") for page in query_pages(table.query, request))


def run_records(table: Any, run_id: str) -> Iterator[dict[str, Any]]:
    """The records a reprocess run made (requestId, status, source, updatedAt), page by page."""
    request: dict[str, Any] = {
        "IndexName": RUN_INDEX,
        "KeyConditionExpression": "#run = :run",
        "ExpressionAttributeNames": {"#run": RUN_ATTRIBUTE},
        "ExpressionAttributeValues": {":run": run_id},
    }
    for page in query_pages(table.query, request):
        yield from page.get("Items", [])
