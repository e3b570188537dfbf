"""What a handler needs from Lambda's context object."""

from __future__ import annotations

from typing import Any

# Time kept back from the gateway call to write the record and answer before Lambda's timeout.
SAFETY_MARGIN_SECONDS = 10.0
DEFAULT_BUDGET_SECONDS = 60.0


def time_budget(context: Any) -> float:
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    if remaining_ms is None:
        return DEFAULT_BUDGET_SECONDS
    return max(1.0, remaining_ms() / 1000 - SAFETY_MARGIN_SECONDS)
