"""EchoFunction: returns what it saw, so tests can check the event, the environment and the context."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any


class EchoRefusedError(Exception):
    pass


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("refuse"):
        raise EchoRefusedError("asked to refuse")
    if event.get("unserialisable"):
        return {"value": object()}
    return {
        "event": event,
        "greeting": os.environ["GREETING"],
        "stage_label": os.environ["STAGE_LABEL"],
        "echo_only": os.environ["ECHO_ONLY"],
        "second_zone": os.environ["SECOND_ZONE"],
        "token": os.environ.get("GATEWAY_TOKEN"),
        "function_name": context.function_name,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "aws_request_id": context.aws_request_id,
        "price": Decimal("1.5"),
    }
