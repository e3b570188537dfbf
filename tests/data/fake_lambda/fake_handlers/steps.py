"""StepFunction: one step of the Flow state machine; `item` says how it behaves."""

from __future__ import annotations

import os
from typing import Any

import boto3


class FlakyError(Exception):
    """Raised on purpose; the state machine retries on this error name."""


class PermanentError(Exception):
    """Raised on purpose; the state machine catches it."""


def _count_attempt(run_id: str, item_id: str) -> int:
    # In the table, not in module state: a retry may run in another process (Map items run concurrently,
    # each concurrent invocation in an environment of its own), as in Lambda.
    response = boto3.client("dynamodb").update_item(
        TableName=os.environ["RUNS_TABLE"],
        Key={"runId": {"S": f"{run_id}#{item_id}"}},
        UpdateExpression="ADD attempts :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
        ReturnValues="UPDATED_NEW",
    )
    return int(response["Attributes"]["attempts"]["N"])


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    item = event["item"]
    attempt = _count_attempt(event["runId"], item["id"])
    if attempt <= item.get("flaky", 0):
        raise FlakyError(f"{item['id']} attempt {attempt}")
    if item.get("permanent"):
        raise PermanentError(f"{item['id']} cannot be done")
    done = attempt - item.get("flaky", 0) >= item.get("polls", 1)
    return {
        "runId": event["runId"],
        "item": item,
        "startedAt": event["startedAt"],
        "status": "done" if done else "again",
        "waitSeconds": 1,
        "attempt": attempt,
    }
