"""AWS answering with errors, on purpose: the embedded AWS's server refuses chosen operations at a rate.

The functions reach AWS over HTTP (AWS_ENDPOINT_URL), from processes of their own, so faults are injected
where their requests arrive: a WSGI layer in front of moto's server that answers an operation with the
error AWS would send (throttling, a 5xx, a PutEvents entry refused) instead of passing it on, or passes it
on late (a slow call). Rules are added and cleared while the server runs, from the process that owns it:

    faults = stack.server.faults
    faults.add("dynamodb:UpdateItem", "throttle", rate=0.05)
    faults.add("s3:PutObject", "5xx", rate=1.0, repeat=8, times=1, key_prefix="results/")  # one write, 8 times
    faults.clear()

`times` caps the fresh draws of a rule. `repeat` makes the same request (same caller, operation, target and body: what an SDK retry sends) fail that
many times in a row, so a fault can outlast the client's own retries and reach the code under test. The
deploying identity (the bench or test itself) is never faulted.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

# What each service answers for each kind: (HTTP status, error code). The codes are AWS's own, the ones
# SDKs and the pipeline's error handling know.
ERRORS: dict[str, dict[str, tuple[int, str]]] = {
    "dynamodb": {
        "throttle": (400, "ProvisionedThroughputExceededException"),
        "5xx": (500, "InternalServerError"),
    },
    "s3": {"throttle": (503, "SlowDown"), "5xx": (500, "InternalError")},
    "events": {"throttle": (400, "ThrottlingException"), "5xx": (500, "InternalException")},
    "states": {"throttle": (400, "ThrottlingException"), "5xx": (500, "ServiceUnavailable")},
}
# Kinds that do not answer with an error: "slow" passes the request on after `delay` seconds;
# "failed-entry" (PutEvents only) answers 200 with the entry refused, as EventBridge does for a partial
# failure, and delivers nothing.
KINDS = ("throttle", "5xx", "slow", "failed-entry")
# The operations faults can target, as service:Action.
OPERATIONS = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:TransactWriteItems",
    "dynamodb:BatchWriteItem",
    "s3:PutObject",
    "events:PutEvents",
    "states:StartExecution",
)
JSON_TARGET_PREFIXES = {"DynamoDB_20120810": "dynamodb", "AWSEvents": "events", "AWSStepFunctions": "states"}
CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/[^/]+/([^/]+)/")


@dataclass(frozen=True)
class AwsRequest:
    """What the fault layer knows of one request."""

    operation: str  # service:Action, e.g. dynamodb:UpdateItem ("" when not one it can name)
    caller: str  # the access key id that signed it
    target: str  # S3: bucket/key; JSON services: the table, bus or state machine named in the body
    body: bytes  # JSON services only (S3 bodies are not read)

    @property
    def fingerprint(self) -> str:
        """The same for an SDK's retries of one call."""
        digest = hashlib.sha256(self.body).hexdigest()[:16]
        return f"{self.caller} {self.operation} {self.target} {digest}"


@dataclass
class FaultRule:
    operation: str
    kind: str
    rate: float
    repeat: int = 1  # how many times in a row the same request fails once drawn
    delay: float = 0.0  # "slow": seconds before the request goes on
    key_prefix: str = ""  # S3: only keys starting with this (results/, say)
    callers: frozenset[str] | None = None  # access key ids; None: everyone but the deployer
    times: int | None = None  # at most this many fresh draws (repeats aside); None: no limit
    drawn: int = 0


@dataclass
class InjectedFault:
    at: float
    operation: str
    kind: str
    caller: str
    target: str


@dataclass
class AwsFaults:
    """The rules, the seeded draw, and what was injected; thread-safe (the server answers on many threads)."""

    seed: int = 0
    exempt: set[str] = field(default_factory=set)  # access key ids never faulted (the deployer's)
    _rules: list[FaultRule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _random: random.Random = field(default_factory=random.Random)
    _repeating: dict[str, tuple[FaultRule, int]] = field(default_factory=dict)
    _injected: list[InjectedFault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._random.seed(self.seed)

    def add(
        self,
        operation: str,
        kind: str,
        rate: float,
        *,
        repeat: int = 1,
        delay: float = 0.0,
        key_prefix: str = "",
        callers: Iterable[str] | None = None,
        times: int | None = None,
    ) -> FaultRule:
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; expected one of {', '.join(OPERATIONS)}")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
        if kind == "failed-entry" and operation != "events:PutEvents":
            raise ValueError("failed-entry is a PutEvents answer")
        if kind == "slow" and delay <= 0:
            raise ValueError("a slow fault needs a delay in seconds")
        if not 0.0 <= rate <= 1.0 or repeat < 1:
            raise ValueError(f"rate must be from 0 to 1 and repeat at least 1, got {rate} and {repeat}")
        rule = FaultRule(
            operation,
            kind,
            rate,
            repeat,
            delay,
            key_prefix,
            None if callers is None else frozenset(callers),
            times,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        """No more fresh draws of `rule`; requests it already failed keep failing their `repeat` times."""
        with self._lock:
            self._rules.remove(rule)

    def clear(self) -> None:
        """No more faults (those already drawn to repeat included)."""
        with self._lock:
            self._rules.clear()
            self._repeating.clear()

    @property
    def injected(self) -> list[InjectedFault]:
        with self._lock:
            return list(self._injected)

    def counts(self) -> dict[str, int]:
        """Injected faults by `operation kind`."""
        return dict(sorted(Counter(f"{f.operation} {f.kind}" for f in self.injected).items()))

    def draw(self, request: AwsRequest) -> FaultRule | None:
        """The rule this request falls under, if any (and notes it as injected)."""
        if request.caller in self.exempt:
            return None
        with self._lock:
            rule = self._draw_locked(request)
            if rule is not None:
                self._injected.append(
                    InjectedFault(time.time(), request.operation, rule.kind, request.caller, request.target)
                )
            return rule

    def _draw_locked(self, request: AwsRequest) -> FaultRule | None:
        fingerprint = request.fingerprint
        if fingerprint in self._repeating:
            rule, left = self._repeating.pop(fingerprint)
            if left > 1:
                self._repeating[fingerprint] = (rule, left - 1)
            return rule
        for rule in self._rules:
            if rule.operation != request.operation:
                continue
            if rule.key_prefix and not request.target.partition("/")[2].startswith(rule.key_prefix):
                continue  # an S3 target is bucket/key
            if rule.callers is not None and request.caller not in rule.callers:
                continue
            if rule.times is not None and rule.drawn >= rule.times:
                continue
            if self._random.random() < rule.rate:
                rule.drawn += 1
                if rule.repeat > 1:
                    self._repeating[fingerprint] = (rule, rule.repeat - 1)
                return rule
        return None

    # --- the WSGI layer -------------------------------------------------------------------------------------

    def middleware(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """`app` with faults in front of it."""

        def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            with self._lock:
                armed = bool(self._rules or self._repeating)
            if not armed:
                return app(environ, start_response)
            request = read_request(environ)
            rule = self.draw(request) if request.operation else None
            if rule is None:
                return app(environ, start_response)
            if rule.kind == "slow":
                time.sleep(rule.delay)
                return app(environ, start_response)
            status, headers, body = error_response(request.operation, rule.kind)
            start_response(status, headers)
            return [body]

        return serve


def read_request(environ: dict[str, Any]) -> AwsRequest:
    """Names the operation; a JSON body is read and put back for moto."""
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    match = CREDENTIAL.search(authorization)
    caller, service = (match.group(1), match.group(2)) if match else ("", "")
    target_header = environ.get("HTTP_X_AMZ_TARGET", "")
    if target_header:
        prefix, _, action = target_header.partition(".")
        service = JSON_TARGET_PREFIXES.get(prefix, "")
        operation = f"{service}:{action}" if service else ""
        if operation not in OPERATIONS:
            return AwsRequest("", caller, "", b"")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        return AwsRequest(operation, caller, json_target(body), body)
    if service == "s3" and environ.get("REQUEST_METHOD") == "PUT" and is_put_object(environ):
        path = unquote(environ.get("PATH_INFO", "")).lstrip("/")
        return AwsRequest("s3:PutObject", caller, path, b"")
    return AwsRequest("", caller, "", b"")


def is_put_object(environ: dict[str, Any]) -> bool:
    """A PUT of an object (not a bucket, not a part, tagging, ACL or copy)."""
    path = environ.get("PATH_INFO", "").lstrip("/")
    return "/" in path and not environ.get("QUERY_STRING") and "HTTP_X_AMZ_COPY_SOURCE" not in environ


def json_target(body: bytes) -> str:
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        return ""
    if not isinstance(document, dict):
        return ""
    for name in ("TableName", "stateMachineArn"):
        if isinstance(document.get(name), str):
            return document[name]
    entries = document.get("Entries")
    if isinstance(entries, list) and entries and isinstance(entries[0], dict):
        return str(entries[0].get("EventBusName", "default"))
    return ""


def error_response(operation: str, kind: str) -> tuple[str, list[tuple[str, str]], bytes]:
    service = operation.partition(":")[0]
    if kind == "failed-entry":
        body = {
            "FailedEntryCount": 1,
            "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "injected fault: entry refused"}],
        }
        return "200 OK", [("Content-Type", "application/x-amz-json-1.1")], json.dumps(body).encode()
    status, code = ERRORS[service][kind]
    reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}[status]
    message = f"injected fault: {code}"
    if service == "s3":
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>chaos</RequestId></Error>"
        )
        return f"{status} {reason}", [("Content-Type", "application/xml")], xml.encode()
    content_type = (
        "application/x-amz-json-1.0" if service in ("dynamodb", "states") else "application/x-amz-json-1.1"
    )
    body_json = {"__type": code, "message": message}
    return (
        f"{status} {reason}",
        [("Content-Type", content_type), ("x-amzn-ErrorType", code)],
        json.dumps(body_json).encode(),
    )
