"""A wall-clock deadline on one HTTP exchange, however the peer paces its bytes.

httpx's timeouts bound each operation (connect, each read, each write), not the exchange: a server that sends
its status line, headers or body a byte a second never trips them. The exchange runs on a thread of its own and
the caller waits for it until the deadline only; past it, the caller goes on (a transient failure) and the
abandoned exchange ends by itself at its next per-read timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The exchange was not done by its deadline."""


def within(seconds: float | None, work: Callable[[], T], *, name: str) -> T:
    """`work()`'s result, or its exception, if it ends within `seconds`; else DeadlineExceeded."""
    if seconds is None:
        return work()
    outcome: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as error:  # handed to the caller as it is
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=run, name=f"deadline-{name}", daemon=True).start()
    if not done.wait(max(0.0, seconds)):
        raise DeadlineExceeded(f"no complete answer within {seconds:.1f} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
