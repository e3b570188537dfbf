"""HTTP plumbing kept apart from the gateway logic: replies, routes, and reading request bodies."""

import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

DISCARD_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # send "Connection: close" and drop the connection after answering


def json_reply(
    status: int, payload: Any, headers: dict[str, str] | None = None, close: bool = False
) -> Reply:
    return Reply(status, json.dumps(payload).encode(), headers=headers or {}, close=close)


def html_reply(status: int, title: str) -> Reply:
    # Proxies in front of the gateway answer 502 and 504 with HTML, not JSON; clients must cope with both.
    page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return Reply(status, page.encode(), content_type="text/html")


def s3_error_reply(status: int, code: str, message: str) -> Reply:
    error = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    page = f"<?xml version='1.0' encoding='UTF-8'?>\n{error}"
    return Reply(status, page.encode(), content_type="application/xml")


def send(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
    handler.send_response(reply.status)
    handler.send_header("Content-Type", reply.content_type)
    handler.send_header("Content-Length", str(len(reply.body)))
    for name, value in reply.headers.items():
        handler.send_header(name, value)
    if reply.close:
        handler.send_header("Connection", "close")  # also makes the handler close after this reply
    handler.end_headers()
    handler.wfile.write(reply.body)


@dataclass(frozen=True)
class Route:
    kind: str  # "chat", "executions", "files" or "other"
    method: str | None = None  # the one method the route answers
    organization: str | None = None
    execution_id: str | None = None
    file_index: int | None = None


API_PATH = re.compile(r"/api/v3/organizations/(?P<organization>[^/]+)/ai(?P<rest>/.*)")
EXECUTION_PATH = re.compile(r"/tools/executions/(?P<execution_id>[^/]+)")
FILE_PATH = re.compile(r"/_files/(?P<execution_id>[^/]+)/(?P<index>\d+)\.png")


def match_route(path: str) -> Route:
    if match := FILE_PATH.fullmatch(path):
        return Route(
            "files", "GET", execution_id=unquote(match["execution_id"]), file_index=int(match["index"])
        )
    if match := API_PATH.fullmatch(path):
        organization = unquote(match["organization"])
        if match["rest"] == "/chat":
            return Route("chat", "POST", organization)
        if execution := EXECUTION_PATH.fullmatch(match["rest"]):
            return Route("executions", "GET", organization, execution_id=unquote(execution["execution_id"]))
    return Route("other")


class BodyRejected(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def read_body(handler: BaseHTTPRequestHandler, limit: int) -> bytes | None:
    """The request body, or None when the client went away before sending all of it.

    Raises BodyRejected (413) over `limit` bytes, and (400) for a Content-Length that is not a number.
    """
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        return _read_chunked(handler, limit)
    raw_length = handler.headers.get("Content-Length")
    if raw_length is None:
        return b""
    if not raw_length.strip().isdigit():
        raise BodyRejected(json_reply(400, {"error": "Content-Length: must be a number"}, close=True))
    length = int(raw_length)
    if length > limit:
        # Reading the body first lets the client see the 413 rather than a broken pipe mid-upload; beyond
        # twice the limit that costs too much, so the connection is just closed after the answer.
        if length <= 2 * limit:
            _discard(handler, length)
        raise BodyRejected(_too_large(length, limit))
    body = handler.rfile.read(length)
    return body if len(body) == length else None


def _too_large(length: int, limit: int) -> Reply:
    return json_reply(413, {"error": f"body: {length} bytes exceeds the {limit}-byte limit"}, close=True)


def _discard(handler: BaseHTTPRequestHandler, length: int) -> None:
    while length > 0:
        chunk = handler.rfile.read(min(length, DISCARD_CHUNK))
        if not chunk:
            return
        length -= len(chunk)


def _read_chunked(handler: BaseHTTPRequestHandler, limit: int) -> bytes | None:
    parts = []
    total = 0
    while True:
        size_line = handler.rfile.readline(1024)
        if not size_line:
            return None
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            raise BodyRejected(
                json_reply(400, {"error": "body: malformed chunked encoding"}, close=True)
            ) from None
        if size == 0:
            break
        total += size
        if total > limit:
            raise BodyRejected(_too_large(total, limit))
        part = handler.rfile.read(size)
        if len(part) != size:
            return None
        parts.append(part)
        handler.rfile.readline(1024)  # the CRLF after each chunk
    while handler.rfile.readline(1024) not in (b"\r\n", b"\n", b""):  # optional trailers
        pass
    return b"".join(parts)
