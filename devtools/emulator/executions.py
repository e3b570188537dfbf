"""Async tool executions (response pattern 5) and the signed download URLs of their images.

An execution's status is a pure function of the clock: pending until pending_seconds after creation,
running until total_seconds, then complete or failed. The timings are copied from the config at creation,
so changing the config later does not move executions already in flight.
"""

import base64
import calendar
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from devtools.emulator.png import gradient_png

IMAGES_PER_EXECUTION = 1


@dataclass(frozen=True)
class Execution:
    execution_id: str
    organization: str
    tool_name: str
    prompt: str
    created_at: float
    pending_seconds: float
    total_seconds: float
    outcome: str  # "complete" or "failed"
    failure_reason: str

    @property
    def started_at(self) -> float:
        return self.created_at + min(self.pending_seconds, self.total_seconds)

    @property
    def completed_at(self) -> float:
        return self.created_at + self.total_seconds

    def status_at(self, now: float) -> str:
        if now >= self.completed_at:
            return self.outcome
        return "running" if now >= self.started_at else "pending"

    def image(self, index: int) -> bytes:
        return gradient_png(f"{self.execution_id}/{index}")


class UrlSigner:
    """Presigned-URL look-alike: an HMAC over path, issue time and lifetime, checked on download."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def _signature(self, path: str, issued: str, expires: str) -> str:
        return hmac.new(self._key, f"{path}\n{issued}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def query(self, path: str, issued_at: float, lifetime_seconds: int) -> str:
        issued = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(issued_at))
        signature = self._signature(path, issued, str(lifetime_seconds))
        return f"X-Amz-Date={issued}&X-Amz-Expires={lifetime_seconds}&X-Amz-Signature={signature}"

    def problem(self, path: str, params: dict[str, str], now: float) -> str | None:
        """Why the download must be refused (403), or None when the signature is valid and unexpired."""
        issued, expires, signature = (
            params.get(k) for k in ("X-Amz-Date", "X-Amz-Expires", "X-Amz-Signature")
        )
        if not (issued and expires and signature):
            return "missing signature parameters"
        if not hmac.compare_digest(signature, self._signature(path, issued, expires)):
            return "signature does not match"
        # The signature matched, so the date is one this signer wrote and parses.
        issued_at = calendar.timegm(time.strptime(issued, "%Y%m%dT%H%M%SZ"))
        if now > issued_at + int(expires):
            return "request has expired"
        return None


class ExecutionStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executions: dict[str, Execution] = {}

    def create(self, **fields: Any) -> Execution:
        execution = Execution(execution_id=f"exec_{secrets.token_hex(6)}", **fields)
        with self._lock:
            self._executions[execution.execution_id] = execution
        return execution

    def get(self, execution_id: str) -> Execution | None:
        with self._lock:
            return self._executions.get(execution_id)

    def remove(self, execution_id: str) -> bool:
        with self._lock:
            return self._executions.pop(execution_id, None) is not None

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._executions)

    def clear(self) -> None:
        with self._lock:
            self._executions.clear()


def file_path(execution_id: str, index: int) -> str:
    return f"/_files/{execution_id}/{index}.png"


def execution_view(
    execution: Execution, now: float, base_url: str, signer: UrlSigner, url_seconds: int
) -> dict:
    """The GET /tools/executions/{id} body; times are Unix seconds rounded to milliseconds."""
    status = execution.status_at(now)
    view: dict[str, Any] = {
        "executionId": execution.execution_id,
        "toolName": execution.tool_name,
        "status": status,
        "createdAt": round(execution.created_at, 3),
    }
    if status != "pending":
        view["startedAt"] = round(execution.started_at, 3)
    if status in ("complete", "failed"):
        view["completedAt"] = round(execution.completed_at, 3)
        view["duration"] = round(execution.completed_at - execution.started_at, 3)
    if status == "failed":
        view["error"] = f"image generation failed: {execution.failure_reason}"
    if status == "complete":
        images, urls = [], []
        for index in range(IMAGES_PER_EXECUTION):
            encoded = base64.b64encode(execution.image(index)).decode()
            images.append(f"data:image/png;base64,{encoded}")
            path = file_path(execution.execution_id, index)
            urls.append(f"{base_url}{path}?{signer.query(path, execution.completed_at, url_seconds)}")
        view["result"] = {"images": images, "s3Urls": urls}
    return view
