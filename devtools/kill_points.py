"""Kill points inside a function's process: Lambda crashes at chosen moments, and a journal of what happened.

Installed by devtools.function_worker when the stack is deployed with `kill_points=` (the chaos benchmark).
At each point the process draws against the rate the control file gives for it, and on a hit ends itself
with SIGKILL, as a crashed or out-of-memory Lambda environment ends: no cleanup, no answer, the batch handed
back by the runtime. The points:

- `gateway-answered`: the gateway's answer to a chat call has arrived whole (GatewayClient.chat returned),
  before anything is stored;
- `dynamodb-write`, `s3-write`, `events-write`, `states-write`: a write to that service succeeded
  (PutItem/UpdateItem/..., PutObject, PutEvents, StartExecution), before the code sees its answer.

The control file is JSON, `{"rates": {"<point>": probability, ...}}` (with `"functions": [logical ids]` to
arm only those, and `"max_kills": n` to stop once the journal holds n kills), re-read whenever it changes,
so the benchmark switches kills on and off while the stack runs. The journal gets one JSON line per event, each
with the process id, the function and the time: `start` and `end` of an invocation, `answered` (requestId),
`write` (point, operation, requestId, key), and `killed` (point, operation, requestId) just before the kill.
An invocation with a `start` and no `end` did not finish: its process was killed or timed out. Lines are
written with one O_APPEND write each, so processes never interleave within a line.

Only the standard library and botocore's event system: nothing of moto or of the embedded AWS.
"""

from __future__ import annotations

import faulthandler
import functools
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

POINTS = ("gateway-answered", "dynamodb-write", "s3-write", "events-write", "states-write")
# The writes each point follows (botocore's service name and operation names).
WRITE_POINTS = {
    ("dynamodb", "PutItem"): "dynamodb-write",
    ("dynamodb", "UpdateItem"): "dynamodb-write",
    ("dynamodb", "DeleteItem"): "dynamodb-write",
    ("dynamodb", "TransactWriteItems"): "dynamodb-write",
    ("dynamodb", "BatchWriteItem"): "dynamodb-write",
    ("s3", "PutObject"): "s3-write",
    ("events", "PutEvents"): "events-write",
    ("stepfunctions", "StartExecution"): "states-write",
}


@dataclass
class KillPoints:
    control_path: str
    journal_path: str
    function: str  # the function's logical id
    _random: random.Random = field(default_factory=lambda: random.Random(os.urandom(8)))
    _rates: dict[str, float] = field(default_factory=dict)
    _max_kills: int | None = None
    _control_stamp: tuple[int, int] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what the process does at each point --------------------------------------------------------------

    def rate(self, point: str) -> float:
        try:
            status = os.stat(self.control_path)
        except FileNotFoundError:
            return 0.0
        stamp = (status.st_mtime_ns, status.st_size)
        with self._lock:
            if stamp != self._control_stamp:
                try:
                    with open(self.control_path, encoding="utf-8") as control:
                        document = json.load(control)
                except (OSError, ValueError):  # being replaced right now: keep the rates read before
                    return self._rates.get(point, 0.0)
                functions = document.get("functions")  # only these (logical ids); absent: every function
                rates = document.get("rates", {}) if functions is None or self.function in functions else {}
                self._rates = {name: float(value) for name, value in rates.items()}
                self._max_kills = document.get("max_kills")
                self._control_stamp = stamp
            return self._rates.get(point, 0.0)

    def journal(self, event: str, **fields: Any) -> None:
        line = json.dumps(
            {"event": event, "pid": os.getpid(), "function": self.function, "t": time.time(), **fields}
        )
        descriptor = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, (line + "\n").encode())
        finally:
            os.close(descriptor)

    def reached(self, point: str, **fields: Any) -> None:
        """At a kill point: maybe end the process here and now."""
        rate = self.rate(point)
        with self._lock:
            hit = rate > 0 and self._random.random() < rate
        if not hit or self._budget_spent():
            return
        self.journal("killed", point=point, **fields)
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # the signal is delivered before this returns; never reached

    def _budget_spent(self) -> bool:
        # Read at a hit only (a few dozen in a run). Two processes hitting at once may both pass: one over.
        if self._max_kills is None:
            return False
        try:
            with open(self.journal_path, encoding="utf-8") as journal:
                killed = sum('"event": "killed"' in line for line in journal)
        except FileNotFoundError:
            killed = 0
        return killed >= self._max_kills

    # --- wiring -------------------------------------------------------------------------------------------

    def install(self) -> None:
        """Hooks botocore's default session (every boto3 client the handler makes) and the gateway client."""
        import boto3

        boto3.setup_default_session()
        events = boto3.DEFAULT_SESSION.events
        events.register("provide-client-params", self._remember_params)
        events.register("after-call", self._after_call)
        self._wrap_gateway()

    def wrap_handler(self, handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        @functools.wraps(handler)
        def journaled(event: Any, context: Any) -> Any:
            invocation = getattr(context, "aws_request_id", "")
            self.journal("start", invocation=invocation)
            # Where every thread was just before a timeout ends the process: in the function's log.
            remaining = context.get_remaining_time_in_millis() / 1000
            faulthandler.dump_traceback_later(max(0.1, remaining - 0.3), exit=False)
            try:
                return handler(event, context)
            finally:
                faulthandler.cancel_dump_traceback_later()
                self.journal("end", invocation=invocation)

        return journaled

    def _wrap_gateway(self) -> None:
        try:
            from shared.gateway import GatewayClient
        except ImportError:  # not this project's code: no gateway point
            return
        chat = GatewayClient.chat
        if getattr(chat, "_kill_point", False):
            return
        points = self

        @functools.wraps(chat)
        def chat_with_kill_point(client: Any, *args: Any, **kwargs: Any) -> Any:
            response = chat(client, *args, **kwargs)
            request_id = kwargs.get("correlation_id")
            points.journal("answered", requestId=request_id)
            points.reached("gateway-answered", requestId=request_id)
            return response

        chat_with_kill_point._kill_point = True  # type: ignore[attr-defined]
        GatewayClient.chat = chat_with_kill_point  # type: ignore[method-assign]

    def _remember_params(self, params: dict[str, Any], context: dict[str, Any], model: Any, **_: Any) -> None:
        if (model.service_model.service_name, model.name) in WRITE_POINTS:
            context["kill_points"] = describe(model.service_model.service_name, model.name, params)

    def _after_call(self, http_response: Any, context: dict[str, Any], model: Any, **_: Any) -> None:
        point = WRITE_POINTS.get((model.service_model.service_name, model.name))
        if point is None or http_response is None or http_response.status_code >= 300:
            return
        fields = {"operation": model.name, **context.get("kill_points", {})}
        if model.name == "PutEvents" and parsed_failed(http_response):
            return  # refused entries: nothing was written
        self.journal("write", point=point, **fields)
        self.reached(point, **fields)


def parsed_failed(http_response: Any) -> bool:
    try:
        return bool(json.loads(http_response.content or b"{}").get("FailedEntryCount"))
    except ValueError:
        return False


def describe(service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """The requestId a write is about (and the S3 key), from its parameters."""
    if service == "dynamodb":
        key = params.get("Key") or (params.get("Item") if operation == "PutItem" else None) or {}
        value = key.get("requestId")
        if isinstance(value, dict):  # the client's typed form, {"S": ...}
            value = value.get("S")
        return {"requestId": value}
    if service == "s3":
        return {"key": params.get("Key")}
    if service == "events":
        entries = params.get("Entries") or [{}]
        try:
            detail = json.loads(entries[0].get("Detail") or "{}")
        except ValueError:
            detail = {}
        return {"requestId": detail.get("requestId"), "status": detail.get("status")}
    if service == "stepfunctions":
        try:
            document = json.loads(params.get("input") or "{}")
        except ValueError:
            document = {}
        return {"requestId": document.get("requestId")}
    return {}
