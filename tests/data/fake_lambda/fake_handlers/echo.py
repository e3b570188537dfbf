"""EchoFunction: returns what it saw, so tests can check the event, the environment and the context.

Asked to (`sleep`, `allocate_mb`, `exit`), it also runs long, takes memory or ends its process, for the tests
of timeouts, memory sizes and crashes.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal
from typing import Any

# Kept between invocations as a warm Lambda keeps module state; a new process starts again at 0.
_invocations = 0
_held: list[bytearray] = []


class EchoRefusedError(Exception):
    pass


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _invocations
    _invocations += 1
    if event.get("refuse"):
        raise EchoRefusedError("asked to refuse")
    if event.get("unserialisable"):
        return {"value": object()}
    if "exit" in event:
        os._exit(event["exit"])
    if "allocate_mb" in event:
        # Written to, so that the pages are really taken (resident), as a real workload's are.
        _held.append(bytearray(b"x" * (event["allocate_mb"] * 1024 * 1024)))
    time.sleep(event.get("sleep", 0))
    return {
        "event": event,
        "greeting": os.environ["GREETING"],
        "stage_label": os.environ["STAGE_LABEL"],
        "echo_only": os.environ.get("ECHO_ONLY"),
        "second_zone": os.environ.get("SECOND_ZONE"),
        "mode": os.environ.get("MODE"),
        "token": os.environ.get("GATEWAY_TOKEN"),
        "access_key": os.environ.get("AWS_ACCESS_KEY_ID"),
        "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "pid": os.getpid(),
        "invocations": _invocations,
        "function_name": context.function_name,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "aws_request_id": context.aws_request_id,
        "price": Decimal("1.5"),
    }
