"""Async tool executions: how often to poll, one poll step, saving results, and finishing the record."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.errors import GatewayNotFoundError
from shared.images import ImageRejectedError, UrlAllowlist, decode_data_uri, download
from shared.models import ToolExecution, build_models
from shared.records import RecordStore, Status, in_attempt, of_attempt, truncated
from shared.results import ResultStore

if TYPE_CHECKING:
    import httpx

    from shared.gateway import GatewayClient

logger = logging.getLogger(__name__)

IMAGE_TOOL = "generate_image"
POLL_CALL_BUDGET_SECONDS = 20.0
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}
MAX_IMAGES = 10  # per execution: the gateway makes one to a few


def next_wait_seconds(tool_name: str | None, elapsed: float, polls: int, max_wait: int) -> int:
    """The gateway's guidance: image generation every 2 to 3 s (3 s while it is unlikely to be done, 2 s
    once it typically finishes, at 10 to 15 s); other tools back off from 1 s to 5 s."""
    if tool_name == IMAGE_TOOL:
        wait = 3 if elapsed < 9 else 2
    else:
        wait = min(5, 2 ** max(0, polls - 1))
    return max(1, min(wait, max_wait))


def seconds_since(iso_time: str, now: float) -> float:
    return now - datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp()


def poll_step(
    state: dict[str, Any],
    *,
    gateway: GatewayClient,
    results: ResultStore,
    now: float,
    allowlist: UrlAllowlist,
    http: httpx.Client | None = None,
) -> dict[str, Any]:
    """One poll of one execution. The returned state is the next step's input: small, never image bytes."""
    execution = state["execution"]
    request_id = state["requestId"]
    policy = state["policy"]
    polls = int(state.get("polls", 0)) + 1
    elapsed = seconds_since(state["startedAt"], now)
    base = {
        "requestId": request_id,
        "execution": execution,
        "startedAt": state["startedAt"],
        "policy": policy,
        "executionId": execution["executionId"],
        "toolName": execution.get("toolName"),
        "toolUseId": execution.get("toolUseId"),
        "polls": polls,
    }
    try:
        status = gateway.get_execution(
            execution["executionId"], budget_seconds=POLL_CALL_BUDGET_SECONDS, correlation_id=request_id
        )
    except GatewayNotFoundError:
        return {**base, "status": "failed", "error": "execution unknown or expired (404 from the gateway)"}
    if status.status == "complete":
        try:
            files = save_result(status, request_id, results, http, allowlist)
        except ImageRejectedError as rejected:
            return {**base, "status": "failed", "error": str(rejected), **timings(status, now)}
        return {**base, "status": "complete", "files": files, **timings(status, now)}
    if status.status == "failed":
        return {
            **base,
            "status": "failed",
            "error": str(status.error or "the tool execution failed")[:1000],
            **timings(status, now),
        }
    if elapsed >= float(policy["timeoutSeconds"]):
        return {
            **base,
            "status": "failed",
            "error": f"timed out after {round(elapsed)} s (still {status.status[:40]})",
        }
    wait = next_wait_seconds(execution.get("toolName"), elapsed, polls, int(policy["maxWaitSeconds"]))
    # Any status but complete and failed, one the project does not know included, means still running.
    return {**base, "status": status.status[:40], "nextWaitSeconds": wait}


def timings(status: ToolExecution, now: float) -> dict[str, Any]:
    found = {"createdAt": status.created_at, "completedAt": status.completed_at, "noticedAt": now}
    if status.completed_at:
        found["noticeDelaySeconds"] = round(now - status.completed_at, 3)
    return {k: v for k, v in found.items() if v is not None}


def save_result(
    status: ToolExecution,
    request_id: str,
    results: ResultStore,
    http: httpx.Client | None,
    allowlist: UrlAllowlist,
) -> list[str]:
    """Stores what the tool produced under results/<requestId>/<executionId>/ and returns the S3 URIs.
    Images come as data URIs and as signed URLs that expire within the hour; the data URI needs no fetch."""
    result = status.result if isinstance(status.result, dict) else {}
    data_uris = _strings(result.get("images"))
    if data_uris:
        images = [decode_data_uri(uri, index) for index, uri in enumerate(data_uris)]
    else:
        images = _downloaded(_strings(result.get("s3Urls")), http, allowlist)
    files = []
    for index, (content_type, data) in enumerate(images):
        key = results.key_for_tool_file(
            request_id, status.execution_id, f"{index}.{EXTENSIONS.get(content_type, 'bin')}"
        )
        files.append(results.put_bytes(key, data, content_type))
    if not files and status.result is not None:
        key = results.key_for_tool_file(request_id, status.execution_id, "result.json")
        files.append(results.put_json(key, {"result": status.result}))
    return files


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ImageRejectedError("the result's images are not a list of strings")
    if len(value) > MAX_IMAGES:
        raise ImageRejectedError(f"the result names {len(value)} images, more than {MAX_IMAGES}")
    return value


def _downloaded(
    urls: list[str], http: httpx.Client | None, allowlist: UrlAllowlist
) -> list[tuple[str, bytes]]:
    if not urls:
        return []
    import httpx  # only when a result carries no data URI

    client = http or httpx.Client()
    try:
        return [download(url, client, allowlist) for url in urls]
    finally:
        if http is None:
            client.close()


# An execution's error can be a whole Step Functions cause (up to 32 KB): each keeps its start, so that many
# executions' errors together stay far inside the item's 400 KB.
MAX_EXECUTION_ERROR_CHARS = 500


def summarise(executions: list[dict[str, Any]]) -> tuple[Status, dict[str, Any] | None]:
    failed = [e for e in executions if e.get("status") != "complete"]
    if not failed:
        return Status.COMPLETED, None
    reasons = "; ".join(f"{e.get('executionId')}: {e.get('error') or e.get('status')}" for e in failed)
    return Status.FAILED, {"kind": "ToolExecutionFailed", "message": truncated(reasons), "retryable": False}


RECORD_FIELDS = (
    "executionId",
    "toolName",
    "toolUseId",
    "status",
    "polls",
    "error",
    "files",
    "createdAt",
    "completedAt",
    "noticedAt",
    "noticeDelaySeconds",
)


def finish_request(
    request_id: str,
    executions: list[dict[str, Any]],
    *,
    attempt: int | None,
    records: RecordStore,
    results: ResultStore,
) -> dict[str, Any] | None:
    """Ends a WAITING_FOR_TOOLS record of this attempt; returns the record when this call ended it (None if it
    was done before, or a later attempt of the request has taken the record since)."""
    slim = [{k: e[k] for k in RECORD_FIELDS if e.get(k) is not None} for e in executions]
    for execution in slim:
        if isinstance(execution.get("error"), str):
            execution["error"] = truncated(execution["error"], MAX_EXECUTION_ERROR_CHARS)
    status, error = summarise(slim)
    record = records.get(request_id) or {}
    if record.get("status") != Status.WAITING_FOR_TOOLS or not in_attempt(record, attempt):
        logger.info("request %s is no longer waiting for this poller; left as it is", request_id)
        return None
    location = record.get("resultLocation")
    if location:
        key = location.split("/", 3)[3]
        document = results.get_json(key) or {}
        results.put_json(key, {**document, "status": status.value, "executions": slim, "error": error})
    fields: dict[str, Any] = {"executions": slim}
    if error:
        fields["error"] = error
    finished = records.finish(
        request_id,
        status,
        fields,
        allowed_from=(Status.WAITING_FOR_TOOLS,),
        expected=of_attempt(attempt),
    )
    if finished is None:
        logger.info("request %s was already finished", request_id)
    return finished


build_models(ToolExecution)
