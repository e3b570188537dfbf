"""GatewayEmulator: a local HTTP server that behaves like Quant Cloud's AI gateway (see the contract in
/work/shared/gateway-contract.md), with switches for latency and faults. A development tool, not product code.
"""

import contextlib
import hmac
import socket
import socketserver
import sys
import threading
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

from devtools.emulator.config import FAULT_PATHS, EmulatorConfig
from devtools.emulator.executions import (
    IMAGES_PER_EXECUTION,
    ExecutionStore,
    UrlSigner,
    execution_view,
)
from devtools.emulator.faults import FaultPlan
from devtools.emulator.replies import build_reply
from devtools.emulator.validation import RequestRejected, parse_chat_request
from devtools.emulator.wire import (
    BodyRejected,
    Reply,
    Route,
    html_reply,
    json_reply,
    match_route,
    read_body,
    s3_error_reply,
    send,
)

LATENCY_ROUTES = ("chat", "executions")


@dataclass(frozen=True)
class CallRecord:
    kind: str  # "chat", "executions", "files" or "other"
    method: str
    path: str  # without the query string
    status: int | None  # None: closed without answering (a timeout fault, or the emulator stopping)
    fault: str | None  # the injected fault kind, if any
    correlation_id: str | None  # the X-Correlation-Id request header
    at: float  # config.clock() when the request arrived
    had_authorization: bool  # whether an Authorization header came (the token itself is never kept)


def fault_reply(kind: str | None, route: Route, config: EmulatorConfig) -> Reply | None:
    """The answer for a fault that replaces the real one; None for no fault, "timeout" and "truncated"."""
    retry_after = {"Retry-After": str(config.retry_after_seconds)}
    match kind:
        case "429":
            return json_reply(429, {"error": "Too many requests: rate limit exceeded"}, retry_after)
        case "500":
            what = "perform chat inference" if route.kind == "chat" else "get tool execution status"
            return json_reply(500, {"error": f"failed to {what}"})
        case "502":
            return html_reply(502, "502 Bad Gateway")
        case "503":
            return json_reply(503, {"error": "Service temporarily unavailable"}, retry_after)
        case "504":
            return html_reply(504, "504 Gateway Time-out")
        case "400":
            return json_reply(400, {"error": "Bad request"})
        case "403":
            return json_reply(403, {"error": "Forbidden"})
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would delay the second
    server: "_Server"

    def do_GET(self) -> None:
        self.server.emulator._serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: object) -> None:
        # The default line is the request line and status: no headers, so never the bearer token.
        if not self.server.emulator.config.quiet:
            super().log_message(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # bursts of concurrent clients in load tests

    def __init__(self, address: tuple[str, int], emulator: "GatewayEmulator") -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Ends idle keep-alive connections, so their handler threads return instead of waiting forever."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler or the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        error = sys.exc_info()[1]
        # Clients hang up mid-exchange (after their own read timeout, say), and stop() cuts connections.
        if isinstance(error, ConnectionError) or (isinstance(error, OSError) and self.emulator.stopping):
            return
        self.emulator._record_internal_error(traceback.format_exc())
        super().handle_error(request, client_address)


class GatewayEmulator:
    """`emu = GatewayEmulator(EmulatorConfig(token="t")); url = emu.start(); ...; emu.stop()`, or `with`."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self._lock = threading.Lock()
        self._calls: list[CallRecord] = []
        self._internal_errors: list[str] = []
        self._faults = FaultPlan()
        # Answers a test scripts in place of the emulator's own (shapes the real gateway may send).
        self._scripted: dict[str, deque[Callable[[Route], Any]]] = {path: deque() for path in FAULT_PATHS}
        self._executions = ExecutionStore()
        self._signer = UrlSigner()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    # Lifecycle

    def start(self) -> str:
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self.config.check()
        self._stopping.clear()
        self._server = _Server((self.config.host, self.config.port), self)
        host, port = self._server.server_address[:2]
        self._base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="gateway-emulator",
            daemon=True,
        )
        self._thread.start()
        return self._base_url

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()  # wakes handlers sleeping for latency or holding a timeout fault
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> "GatewayEmulator":
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the emulator has not been started")
        return self._base_url

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # What tests inspect and steer

    @property
    def calls(self) -> list[CallRecord]:
        with self._lock:
            return list(self._calls)

    @property
    def internal_errors(self) -> list[str]:
        """Tracebacks of emulator bugs; the test fixture fails a test that leaves any."""
        with self._lock:
            return list(self._internal_errors)

    def successful_chats_by_correlation_id(self) -> dict[str, int]:
        """How many chat requests got a real 200 (no fault injected), per X-Correlation-Id (requests without
        one are left out). A count above 1 means the gateway did the same work twice."""
        return dict(
            Counter(
                call.correlation_id
                for call in self.calls
                if call.kind == "chat" and call.status == 200 and call.fault is None and call.correlation_id
            )
        )

    def fail_next(self, kind: str, count: int = 1, path: str = "chat") -> None:
        """Force the next `count` requests on `path` ("chat", "executions" or "files") to get fault `kind`:
        "429", "500", "502", "503", "504", "timeout", "truncated", "400" or "403"."""
        self._faults.force(kind, count, path)

    def answer_next(self, answer: Any, count: int = 1, path: str = "chat") -> None:
        """The next `count` authorised requests on `path` get `answer` as a 200 JSON body, whatever they
        asked: a JSON value, or a function of the route (for an execution's id) that returns one. For the
        answers the gateway may give that the emulator would not make itself."""
        make = answer if callable(answer) else (lambda route: answer)
        with self._lock:
            self._scripted[path].extend([make] * count)

    def _scripted_reply(self, route: Route) -> Reply | None:
        with self._lock:
            scripted = self._scripted.get(route.kind)
            make = scripted.popleft() if scripted else None
        return None if make is None else json_reply(200, make(route))

    def expire(self, execution_id: str) -> bool:
        """Forget an execution, as the gateway does after 24 hours; False if it was not known."""
        return self._executions.remove(execution_id)

    def execution_ids(self) -> list[str]:
        return self._executions.ids()

    def reset(self) -> None:
        """Clear the call log, executions and forced faults, and restart the seeded fault sequence."""
        with self._lock:
            self._calls.clear()
        self._executions.clear()
        self._faults.reset()
        with self._lock:
            for scripted in self._scripted.values():
                scripted.clear()

    # Serving

    def _record(self, call: CallRecord) -> None:
        with self._lock:
            self._calls.append(call)

    def _record_internal_error(self, text: str) -> None:
        with self._lock:
            self._internal_errors.append(text)

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        config = self.config
        path, _, query = handler.path.partition("?")
        route = match_route(path)
        call = partial(
            CallRecord,
            kind=route.kind,
            method=handler.command,
            path=path,
            correlation_id=handler.headers.get("X-Correlation-Id"),
            at=config.clock(),
            had_authorization="Authorization" in handler.headers,
        )
        try:
            body = read_body(handler, config.max_body_bytes)
        except BodyRejected as rejected:
            self._record(call(status=rejected.reply.status, fault=None))
            send(handler, rejected.reply)
            return
        if body is None:  # the client went away mid-body
            self._record(call(status=None, fault=None))
            handler.close_connection = True
            return

        fault = self._faults.next_fault(route.kind, config) if route.kind in FAULT_PATHS else None
        interrupted = route.kind in LATENCY_ROUTES and self._stopping.wait(config.latency_ms / 1000)
        if fault == "timeout" or interrupted:
            # Recorded before holding, so a test sees the call while its client is still waiting.
            self._record(call(status=None, fault=fault))
            if not interrupted:
                self._stopping.wait(config.timeout_hold_seconds)
            handler.close_connection = True  # close without a byte of answer
            return

        if fault == "slow" and self._stopping.wait(config.slow_seconds):
            self._record(call(status=None, fault=fault))  # stopped while holding it
            handler.close_connection = True
            return
        reply = fault_reply(fault, route, config) or self._answer(route, handler, body, path, query)
        if fault == "truncated":
            reply = replace(reply, body=reply.body[: len(reply.body) // 2])
        # Recorded before sending, so the log is complete by the time the client has its answer.
        self._record(call(status=reply.status, fault=fault))
        send(handler, reply)

    def _answer(
        self, route: Route, handler: BaseHTTPRequestHandler, body: bytes, path: str, query: str
    ) -> Reply:
        if route.kind == "other":
            return json_reply(404, {"error": f"no such endpoint: {handler.command} {path}"})
        if handler.command != route.method:
            return json_reply(405, {"error": f"{handler.command} not allowed"}, {"Allow": route.method or ""})
        if route.kind == "files":
            return self._download(route, path, query)
        if not self._authorized(handler.headers.get("Authorization")):
            return json_reply(401, {"error": "Unauthorized: missing or invalid bearer token"})
        if self.config.organization is not None and route.organization != self.config.organization:
            return json_reply(403, {"error": f"Forbidden: no access to organization {route.organization}"})
        scripted = self._scripted_reply(route)
        if scripted is not None:
            return scripted
        if route.kind == "chat":
            return self._chat(route, body)
        return self._execution_status(route)

    def _authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        expected = self.config.token
        return expected is None or hmac.compare_digest(token.encode(), expected.encode())

    def _chat(self, route: Route, body: bytes) -> Reply:
        config = self.config
        try:
            request = parse_chat_request(body)
        except RequestRejected as rejected:
            return json_reply(rejected.status, {"error": rejected.message})
        start = partial(self._start_execution, route.organization)
        return json_reply(200, build_reply(request, config.images_per_request, start))

    def _start_execution(self, organization: str, tool_name: str, prompt: str) -> tuple[str, str]:
        config = self.config
        now = config.clock()
        execution = self._executions.create(
            organization=organization,
            tool_name=tool_name,
            prompt=prompt,
            created_at=now,
            pending_seconds=config.execution_pending_seconds,
            total_seconds=config.execution_seconds,
            outcome=config.execution_outcome,
            failure_reason=config.execution_failure_reason,
        )
        return execution.execution_id, execution.status_at(now)

    def _execution_status(self, route: Route) -> Reply:
        execution_id = route.execution_id or ""
        execution = self._executions.get(execution_id)
        if execution is None or execution.organization != route.organization:
            return json_reply(404, {"error": "Execution not found or expired", "executionId": execution_id})
        config = self.config
        view = execution_view(
            execution, config.clock(), self.base_url, self._signer, config.signed_url_seconds
        )
        return json_reply(200, view)

    def _download(self, route: Route, path: str, query: str) -> Reply:
        now = self.config.clock()
        problem = self._signer.problem(path, dict(parse_qsl(query)), now)
        if problem is not None:
            return s3_error_reply(403, "AccessDenied", problem)
        execution = self._executions.get(route.execution_id or "")
        index = route.file_index or 0
        if execution is None or execution.status_at(now) != "complete" or index >= IMAGES_PER_EXECUTION:
            return s3_error_reply(404, "NoSuchKey", "The specified key does not exist.")
        return Reply(200, execution.image(index), content_type="image/png")
