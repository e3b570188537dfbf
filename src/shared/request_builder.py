"""Turns items (uploads, attachments, local files) and a prompt into a validated multimodal ChatRequest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.errors import InvalidRequestError, MediaTooLargeError
from shared.media import HEAD_BYTES, DetectedMedia, detect, sanitize_document_name
from shared.models import (
    MAX_MEDIA_BYTES,
    ChatRequest,
    ContentBlock,
    DocumentBlock,
    DocumentData,
    ImageBlock,
    ImageData,
    MediaSource,
    Message,
    TextBlock,
    VideoBlock,
    VideoData,
    invalid_request_from,
)
from shared.sources import ItemSource

# Text files are inlined into the prompt; past this they would not fit a model's context anyway.
MAX_TEXT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class PreparedItem:
    source: ItemSource
    detected: DetectedMedia
    label: str | None = None


def prepare(source: ItemSource, label: str | None = None) -> PreparedItem:
    """Checks the size before any byte is read, then detects the type from the first bytes."""
    size = source.size
    if size > MAX_MEDIA_BYTES:
        raise MediaTooLargeError(source.name, size, MAX_MEDIA_BYTES)
    detected = detect(source.head(HEAD_BYTES), name=source.name, content_type=source.content_type, size=size)
    if detected.kind == "text" and size > MAX_TEXT_BYTES:
        raise MediaTooLargeError(f"text file {source.name}", size, MAX_TEXT_BYTES)
    return PreparedItem(source, detected, label)


def content_blocks(items: Sequence[PreparedItem]) -> list[ContentBlock]:
    """Media in order, each labelled ("Image 1:", "Document 2:") when there are several or a label was given."""
    blocks: list[ContentBlock] = []
    for number, item in enumerate(items, 1):
        if len(items) > 1 or item.label:
            title = f"{item.detected.label} {number}" + (f" ({item.label})" if item.label else "")
            blocks.append(TextBlock(text=f"{title}:"))
        blocks.append(_block_for(item))
    return blocks


def _block_for(item: PreparedItem) -> ContentBlock:
    kind, fmt = item.detected.kind, item.detected.format
    if kind == "text":
        with item.source.open() as stream:
            text = stream.read().decode("utf-8-sig", errors="replace")
        return TextBlock(text=f"File {item.source.name} ({fmt}):\n{text}")
    source = MediaSource(bytes=item.source)  # an ItemSource streams as it is (size and open)
    if kind == "image":
        return ImageBlock(image=ImageData(format=fmt, source=source))
    if kind == "video":
        return VideoBlock(video=VideoData(format=fmt, source=source))
    return DocumentBlock(
        document=DocumentData(format=fmt, name=sanitize_document_name(item.source.name), source=source)
    )


def validated_request(fields: dict[str, Any]) -> ChatRequest:
    try:
        return ChatRequest.model_validate(fields)
    except ValidationError as error:
        raise invalid_request_from(error) from None


def build_chat_request(
    items: Sequence[PreparedItem], prompt: str, *, model_id: str, **options: Any
) -> ChatRequest:
    """One user message: the items first (the gateway's advice), then the prompt. `options` are ChatRequest
    fields by their Python names (system_prompt, temperature, max_tokens, response_format, tool_config...)."""
    if not prompt.strip():
        raise InvalidRequestError("prompt", "must not be empty")
    content = [*content_blocks(items), TextBlock(text=prompt)]
    fields = {"messages": [Message(role="user", content=content)], "model_id": model_id}
    fields.update({name: value for name, value in options.items() if value is not None})
    return validated_request(fields)


def with_attachments(request: ChatRequest, items: Sequence[PreparedItem]) -> ChatRequest:
    """Puts the items before the text of the last user message."""
    if not items:
        return request
    messages = list(request.messages)
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None:
        raise InvalidRequestError("request.messages", "attachments need a user message to go with")
    original = messages[last_user]
    messages[last_user] = Message(role="user", content=[*content_blocks(items), *original.blocks()])
    fields = dict(request)
    fields["messages"] = messages
    return validated_request(fields)
