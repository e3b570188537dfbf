"""StepFunction: one step of the Flow state machine; `item` says how it behaves."""

from __future__ import annotations

from typing import Any


class FlakyError(Exception):
    """Raised on purpose; the state machine retries on this error name."""


class PermanentError(Exception):
    """Raised on purpose; the state machine catches it."""


# Attempts per item id, kept between invocations as a warm Lambda keeps module state.
_attempts: dict[str, int] = {}


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    item = event["item"]
    attempt = _attempts[item["id"]] = _attempts.get(item["id"], 0) + 1
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
