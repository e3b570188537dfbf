"""Turns items (uploads, attachments, local files) and a prompt into a validated multimodal ChatRequest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.body import base64_length
from shared.errors import InvalidRequestError, MediaTooLargeError, RequestTooLargeError
from shared.media import HEAD_BYTES, DetectedMedia, detect
from shared.models import (
    DEFAULT_MAX_REQUEST_BYTES,
    ChatRequest,
    parse,
    sanitize_document_name,
    to_wire,
    wire_fields,
)
from shared.sources import ItemSource

# Text files are inlined into the prompt; past this they would not fit a model's context anyway.
DEFAULT_MAX_INLINE_TEXT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one request may hold (MaxRequestBytes, MaxInlineTextBytes)."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_inline_text_bytes: int = DEFAULT_MAX_INLINE_TEXT_BYTES


@dataclass(frozen=True)
class PreparedItem:
    source: ItemSource
    detected: DetectedMedia
    label: str | None = None


def prepare(source: ItemSource, label: str | None = None, *, limits: Limits = Limits()) -> PreparedItem:
    """Checks the size before any byte is read (an item whose base64 alone is over the request limit is
    refused here; the whole body is checked before it is sent), then detects the type from the first bytes."""
    size = source.size
    if base64_length(size) > limits.max_request_bytes:
        what = f"{source.name} ({size} bytes) as base64"
        raise RequestTooLargeError(base64_length(size), limits.max_request_bytes, what)
    detected = detect(source.head(HEAD_BYTES), name=source.name, content_type=source.content_type, size=size)
    if detected.kind == "text" and size > limits.max_inline_text_bytes:
        raise MediaTooLargeError(f"text file {source.name}", size, limits.max_inline_text_bytes)
    return PreparedItem(source, detected, label)


def check_inline_text(items: Sequence[PreparedItem], limits: Limits) -> None:
    """Text files are read whole into the request: all of them together within MaxInlineTextBytes."""
    total = sum(item.source.size for item in items if item.detected.kind == "text")
    if total > limits.max_inline_text_bytes:
        raise MediaTooLargeError("the text files together", total, limits.max_inline_text_bytes)


def check_model_allowed(model_id: str, allowed: Sequence[str], field: str) -> None:
    """A model a caller names (not the operator's own rules and default) must be one AllowedModelIds lists."""
    if allowed and model_id not in allowed:
        raise InvalidRequestError(
            field, f"{model_id!r} is not an allowed model (AllowedModelIds: {', '.join(allowed)})"
        )


# The builder writes wire data (plain dicts, media as their ItemSource) and checks the whole request once,
# so a built request meets exactly the rules a request from a queue does.


def content_blocks(items: Sequence[PreparedItem]) -> list[dict[str, Any]]:
    """Media in order, each labelled ("Image 1:", "Document 2:") when there are several or a label was given."""
    blocks: list[dict[str, Any]] = []
    for number, item in enumerate(items, 1):
        if len(items) > 1 or item.label:
            title = f"{item.detected.label} {number}" + (f" ({item.label})" if item.label else "")
            blocks.append({"text": f"{title}:"})
        blocks.append(_block_for(item))
    return blocks


def _block_for(item: PreparedItem) -> dict[str, Any]:
    kind, fmt = item.detected.kind, item.detected.format
    if kind == "text":
        with item.source.open() as stream:
            text = stream.read().decode("utf-8-sig", errors="replace")
        return {"text": f"File {item.source.name} ({fmt}):\n{text}"}
    media: dict[str, Any] = {"format": fmt, "source": {"bytes": item.source}}  # streamed as it is
    if kind == "document":
        media["name"] = sanitize_document_name(item.source.name)
    return {kind: media}


def build_chat_request(
    items: Sequence[PreparedItem], prompt: str, *, model_id: str, **options: Any
) -> ChatRequest:
    """One user message: the items first (the gateway's advice), then the prompt. `options` are ChatRequest
    fields by their Python names (system_prompt, temperature, max_tokens, response_format, tool_config...)."""
    if not prompt.strip():
        raise InvalidRequestError("prompt", "must not be empty")
    content = [*content_blocks(items), {"text": prompt}]
    messages = [{"role": "user", "content": content}]
    return parse(ChatRequest, wire_fields(ChatRequest, messages=messages, model_id=model_id, **options))


def with_attachments(request: ChatRequest, items: Sequence[PreparedItem]) -> ChatRequest:
    """Puts the items before the text of the last user message."""
    if not items:
        return request
    last_user = max((i for i, m in enumerate(request.messages) if m.role == "user"), default=None)
    if last_user is None:
        raise InvalidRequestError("request.messages", "attachments need a user message to go with")
    wire = to_wire(request)
    original = request.messages[last_user].blocks()
    wire["messages"][last_user]["content"] = [*content_blocks(items), *to_wire(original)]
    return parse(ChatRequest, wire)
