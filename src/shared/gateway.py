"""The AI gateway client: validated requests, streamed bodies, typed errors, retries within a deadline."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import httpx

from shared.body import encode_json_body
from shared.deadline import DeadlineExceeded, within
from shared.errors import (
    ContractBreachError,
    GatewayAuthError,
    GatewayCallsExhaustedError,
    GatewayError,
    GatewayNotFoundError,
    InvalidRequestError,
    PayloadTooLargeError,
    PermanentGatewayError,
    RequestTooLargeError,
    TransientGatewayError,
)
from shared.models import (
    DEFAULT_MAX_REQUEST_BYTES,
    ChatRequest,
    ChatResponse,
    ModelT,
    ToolExecution,
    check_execution_id,
    finite_json,
    parse,
    to_wire,
)

if TYPE_CHECKING:
    from shared.config import TokenSource

logger = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# Answers given at the door, before any inference: the gateway did not bill these calls.
NOT_BILLED_STATUSES = frozenset({401, 403, 413, 429})


class CallMeter(Protocol):
    """Counts a request's chat calls that the gateway may bill, over all its deliveries."""

    def before_call(self) -> None:
        """Takes one call; raises GatewayCallsExhaustedError when none is left."""

    def not_billed(self) -> None:
        """Gives the call back: the gateway refused it at the door, or it never left this process."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 20.0
    connect_timeout: float = 5.0
    read_timeout: float = 90.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Capped exponential backoff with full jitter; `attempt` counts from 1."""
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


class GatewayClient:
    """One per process: it owns the connection pool. The token is asked of `token_provider` per request
    (so a rotated secret is picked up through its cache) and is never stored, logged or shown."""

    def __init__(
        self,
        base_url: str,
        organisation: str,
        token_provider: TokenSource | Callable[[], str],
        *,
        http: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ):
        self._api = f"{base_url.rstrip('/')}/api/v3/organizations/{quote(organisation, safe='')}/ai"
        self._max_request_bytes = max_request_bytes
        self._token_provider = token_provider
        self._retry = retry or RetryPolicy()
        self._http = http or httpx.Client(
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            follow_redirects=False,
        )
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return f"GatewayClient({self._api!r})"

    def close(self) -> None:
        self._http.close()

    def chat(
        self,
        request: ChatRequest | Mapping[str, Any],
        *,
        budget_seconds: float | None = None,
        correlation_id: str | None = None,
        meter: CallMeter | None = None,
    ) -> ChatResponse:
        """POST /chat. `budget_seconds` bounds every attempt and wait together (a Lambda passes its
        remaining time minus a margin); `meter` counts the attempts the gateway may bill. A body over the
        payload limit (its size is known from the sources' sizes, before a byte is read) is not sent."""
        if not isinstance(request, ChatRequest):
            request = parse(ChatRequest, request)
        body = encode_json_body(to_wire(request))
        if body.length > self._max_request_bytes:
            raise RequestTooLargeError(body.length, self._max_request_bytes)
        headers = {"Content-Type": "application/json", "Content-Length": str(body.length)}
        return self._send(
            "POST",
            "/chat",
            ChatResponse,
            budget_seconds,
            correlation_id,
            headers=headers,
            content=body,
            meter=meter,
        )

    def get_execution(
        self, execution_id: str, *, budget_seconds: float | None = None, correlation_id: str | None = None
    ) -> ToolExecution:
        """GET /tools/executions/{id}; 404 (unknown or expired) raises GatewayNotFoundError."""
        path = f"/tools/executions/{quote(check_execution_id(execution_id), safe='')}"
        return self._send("GET", path, ToolExecution, budget_seconds, correlation_id)

    def _send(
        self,
        method: str,
        path: str,
        model: type[ModelT],
        budget_seconds: float | None,
        correlation_id: str | None,
        *,
        headers: dict[str, str] | None = None,
        content: Any = None,
        meter: CallMeter | None = None,
    ) -> ModelT:
        deadline = None if budget_seconds is None else self._clock() + budget_seconds
        last_error: GatewayError | None = None
        token_refreshed = False
        for attempt in range(1, self._retry.max_attempts + 1):
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                break
            token = self._token_provider()  # first: a token that cannot be had costs no call
            if meter is not None:
                try:
                    meter.before_call()
                except GatewayCallsExhaustedError as exhausted:
                    raise GatewayCallsExhaustedError(exhausted.calls, last_error) from None
            try:
                return self._attempt(method, path, model, remaining, correlation_id, headers, content, token)
            except GatewayError as error:
                if meter is not None and (error.status in NOT_BILLED_STATUSES or error.not_sent):
                    meter.not_billed()
                if isinstance(error, GatewayAuthError) and not token_refreshed:
                    # The token may have been rotated since it was cached: fetch it anew, ask once more.
                    token_refreshed = self._refresh_token()
                    if token_refreshed:
                        last_error = error
                        continue
                if not isinstance(error, TransientGatewayError):
                    raise
                if isinstance(error, GatewayDeadlineError) and last_error is not None:
                    # The budget ran out inside a retry: what the gateway last said is the better reason.
                    last_error.attempts = attempt
                    break
                error.attempts = attempt
                last_error = error
                delay = max(error.retry_after or 0.0, self._retry.backoff(attempt, self._rng))
                if attempt == self._retry.max_attempts:
                    break
                if deadline is not None and self._clock() + delay >= deadline:
                    break
                logger.warning(
                    "gateway %s %s failed (%s), attempt %d, retrying in %.2fs",
                    method,
                    path,
                    error,
                    attempt,
                    delay,
                )
                self._sleep(delay)
            except Exception:
                # The request never went out whole (its body's source failed, say): nothing was billed.
                if meter is not None:
                    meter.not_billed()
                raise
        if last_error is None:
            last_error = TransientGatewayError(f"{method} {path}: no time left to call the gateway")
        raise last_error

    def _refresh_token(self) -> bool:
        refresh = getattr(self._token_provider, "refresh", None)
        if refresh is None:
            return False
        logger.warning("the gateway refused the token: fetching it anew and asking once more")
        refresh()
        return True

    def _attempt(
        self,
        method: str,
        path: str,
        model: type[ModelT],
        remaining: float | None,
        correlation_id: str | None,
        headers: dict[str, str] | None,
        content: Any,
        token: str,
    ) -> ModelT:
        read_timeout = (
            self._retry.read_timeout if remaining is None else min(self._retry.read_timeout, remaining)
        )
        timeout = httpx.Timeout(read_timeout, connect=min(self._retry.connect_timeout, read_timeout))
        all_headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if correlation_id:
            all_headers["X-Correlation-Id"] = correlation_id
        all_headers.update(headers or {})

        def exchange() -> httpx.Response:
            with self._http.stream(
                method, self._api + path, headers=all_headers, content=content, timeout=timeout
            ) as streamed:
                body = streamed.read()
                decoded = {
                    k: v
                    for k, v in streamed.headers.items()
                    if k.lower() not in ("content-encoding", "content-length")
                }
                return httpx.Response(streamed.status_code, headers=decoded, content=body)

        try:
            # httpx's timeouts are per read: a server sending its headers or body a byte at a time would never
            # trip them. The whole exchange is bounded by the call's own deadline.
            response = within(remaining, exchange, name="gateway")
        except DeadlineExceeded:
            raise GatewayDeadlineError(f"{method} {path}: no complete answer by the deadline") from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            # Nothing reached the gateway: no inference, nothing billed.
            unsent = TransientGatewayError(f"{method} {path}: {type(error).__name__}")
            unsent.not_sent = True
            raise unsent from None
        except httpx.TimeoutException as error:
            raise TransientGatewayError(f"{method} {path}: {type(error).__name__}") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as error:
            raise TransientGatewayError(f"{method} {path}: {type(error).__name__}: {error}") from None
        except httpx.DecodingError:  # an answer came, billed, in an encoding that cannot be undone
            raise ContractBreachError(
                f"{method} {path}: the answer's content encoding is broken", None
            ) from None
        return read_response(method, path, response, model, secret=token)


class GatewayDeadlineError(TransientGatewayError):
    """The call's budget ended before the gateway's answer was whole (however slowly it came)."""


def read_response(
    method: str, path: str, response: httpx.Response, model: type[ModelT], *, secret: str | None = None
) -> ModelT:
    """The answer as `model` for a 200, else the typed error that says whether a retry can help. `secret`
    (the token) is blanked out of any error text the gateway or a proxy echoes."""
    status = response.status_code
    if status == 200:
        try:
            data = finite_json(response.json())
        except json.JSONDecodeError:
            # A body cut short on the way: the same request may well succeed again.
            raise TransientGatewayError(
                f"{method} {path}: 200 with a body that is not complete JSON", status=status
            ) from None
        except (RecursionError, UnicodeDecodeError, ValueError) as error:
            # Billed, and unreadable however often it is asked: kept as it came.
            raise ContractBreachError(
                f"{method} {path}: 200 whose body is not JSON that can be read ({type(error).__name__})",
                response.text[:1_000_000],
                status=status,
            ) from None
        try:
            return parse(model, data, root="response", lenient=True)
        except InvalidRequestError as error:
            raise ContractBreachError(
                f"{method} {path}: response breaks the contract: {error}", data, status=status
            ) from None
    message = f"{method} {path}: {status} {_error_text(response, secret)}"
    if status in TRANSIENT_STATUSES:
        error = TransientGatewayError(message, status=status)
        error.retry_after = _retry_after_seconds(response)
        raise error
    error_type = {
        401: GatewayAuthError,
        403: GatewayAuthError,
        404: GatewayNotFoundError,
        413: PayloadTooLargeError,
    }
    raise error_type.get(status, PermanentGatewayError)(message, status=status)


_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")


def _error_text(response: httpx.Response, secret: str | None = None) -> str:
    """The gateway's own words, short, with no credential a proxy may have echoed from the request."""
    try:
        data = response.json()
    except (ValueError, RecursionError):
        text = response.text[:200]
    else:
        text = str(data.get("error") or data.get("message") or data) if isinstance(data, dict) else str(data)
        text = text[:500]
    if secret:
        text = text.replace(secret, "***")
    return _BEARER.sub(r"\1***", text)


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
