"""Sleepy: on a message's first delivery it outlives any short timeout; later deliveries succeed."""

from __future__ import annotations

import time
from typing import Any


def lambda_handler(event: dict[str, Any], context: Any) -> None:
    for record in event["Records"]:
        if record["attributes"]["ApproximateReceiveCount"] == "1":
            time.sleep(60)
