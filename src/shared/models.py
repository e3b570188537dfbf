"""The gateway's wire contract (../shared/gateway-contract.md) as pydantic models, camelCase on the wire."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema

from shared.errors import InvalidRequestError

MAX_MEDIA_BYTES = 25 * 1024 * 1024
"""Each media item, and all media of one request together, at most 25 MB (decoded)."""

IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
VIDEO_FORMATS = ("mp4", "mov", "mkv", "webm")
DOCUMENT_FORMATS = ("pdf", "csv", "docx", "xlsx")

# Bedrock (behind the gateway) accepts only these characters in a document name.
DOCUMENT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9\s\-()\[\]]{1,200}$")


@runtime_checkable
class StreamedMedia(Protocol):
    """Media bytes that are read from their source while the request body is sent, never held whole."""

    @property
    def size(self) -> int: ...

    def open(self) -> Any:
        """A fresh binary stream (something with `read(n)`) over the bytes; called once per attempt."""


class MediaHandle:
    """Wraps a StreamedMedia so that model_dump passes it through as it is."""

    __slots__ = ("media",)

    def __init__(self, media: StreamedMedia):
        self.media = media

    @property
    def size(self) -> int:
        return self.media.size

    def open(self) -> Any:
        return self.media.open()


def base64_decoded_size(text: str) -> int:
    return len(text) * 3 // 4 - text[-2:].count("=") if text else 0


def media_size(data: str | StreamedMedia) -> int:
    return data.size if isinstance(data, StreamedMedia) else base64_decoded_size(data)


# defer_build: a model's validator is built when first used, not at import (a cold start pays only for
# the models its function uses).
class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", defer_build=True
    )


class ResponseModel(WireModel):
    # The gateway may add fields; a response must not fail on them.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", defer_build=True
    )


# ---- request ----------------------------------------------------------------------------------------


class MediaSource(WireModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        arbitrary_types_allowed=True,
        defer_build=True,
    )
    bytes: str | SkipJsonSchema[StreamedMedia] = Field(description="base64 text on the wire")

    @field_serializer("bytes")
    def _keep_streamed_media(self, value: str | StreamedMedia) -> Any:
        # The body encoder streams media itself. Pydantic would turn a dataclass into a dict; a plain
        # object passes through model_dump untouched.
        return value if isinstance(value, str) else MediaHandle(value)


class ImageData(WireModel):
    format: Literal["png", "jpeg", "gif", "webp"]
    source: MediaSource


class VideoData(WireModel):
    format: Literal["mp4", "mov", "mkv", "webm"]
    source: MediaSource


class DocumentData(WireModel):
    format: Literal["pdf", "csv", "docx", "xlsx"]
    name: Annotated[str, Field(pattern=DOCUMENT_NAME_PATTERN.pattern)]
    source: MediaSource

    @field_validator("name")
    @classmethod
    def _no_whitespace_runs(cls, name: str) -> str:
        if re.search(r"\s\s", name):
            raise ValueError("a document name may not have two whitespace characters in a row")
        return name


class TextBlock(WireModel):
    text: str


class ImageBlock(WireModel):
    image: ImageData


class VideoBlock(WireModel):
    video: VideoData


class DocumentBlock(WireModel):
    document: DocumentData


ContentBlock = TextBlock | ImageBlock | VideoBlock | DocumentBlock
MediaBlock = ImageBlock | VideoBlock | DocumentBlock


def media_of(block: ContentBlock) -> ImageData | VideoData | DocumentData | None:
    if isinstance(block, ImageBlock):
        return block.image
    if isinstance(block, VideoBlock):
        return block.video
    if isinstance(block, DocumentBlock):
        return block.document
    return None


BLOCK_KINDS = ("text", "image", "video", "document")


class Message(WireModel):
    role: Literal["user", "assistant", "system"]
    content: str | Annotated[list[ContentBlock], Field(min_length=1)]

    @field_validator("content", mode="before")
    @classmethod
    def _one_kind_per_block(cls, content: Any) -> Any:
        # Said plainly here; the union's own errors would list every alternative it tried.
        for index, block in enumerate(content if isinstance(content, list) else []):
            kinds = [k for k in BLOCK_KINDS if isinstance(block, dict) and k in block]
            if isinstance(block, dict) and len(kinds) != 1:
                raise ValueError(
                    f"block {index} must have exactly one of {', '.join(BLOCK_KINDS)}; it has {kinds or list(block)}"
                )
        return content

    def blocks(self) -> list[ContentBlock]:
        return [TextBlock(text=self.content)] if isinstance(self.content, str) else list(self.content)


class JsonResponseFormat(WireModel):
    type: Literal["json"]
    json_schema: dict[str, Any]


class ToolInputSchema(WireModel):
    json_: dict[str, Any] = Field(alias="json")


class ToolSpec(WireModel):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: str | None = None
    input_schema: ToolInputSchema


class Tool(WireModel):
    tool_spec: ToolSpec


class ToolConfig(WireModel):
    tools: list[Tool] = Field(default_factory=list)
    auto_execute: bool = False
    allowed_tools: list[str] | None = None

    @model_validator(mode="after")
    def _allowed_tools_when_auto_executing(self) -> ToolConfig:
        if self.auto_execute and not self.allowed_tools:
            raise ValueError("allowedTools is required when autoExecute is true")
        return self


def accepts_media(model_id: str) -> bool:
    # Only Nova Lite and Pro take images, videos and documents; Nova Micro and Claude read text only.
    model = model_id.lower()
    return "nova" in model and "micro" not in model


class ChatRequest(WireModel):
    messages: Annotated[list[Message], Field(min_length=1)]
    model_id: Annotated[str, Field(min_length=1)]
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=8192)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stream: bool | None = None
    system_prompt: str | None = None
    stop_sequences: Annotated[list[str], Field(max_length=4)] | None = None
    response_format: JsonResponseFormat | None = None
    tool_config: ToolConfig | None = None

    def media(self) -> list[ImageData | VideoData | DocumentData]:
        return [m for message in self.messages for block in message.blocks() if (m := media_of(block))]

    @model_validator(mode="after")
    def _media_rules(self) -> ChatRequest:
        media = self.media()
        if media and not accepts_media(self.model_id):
            raise ValueError(f"model {self.model_id} takes text only; only Nova Lite and Pro accept media")
        total = 0
        for item in media:
            size = media_size(item.source.bytes)
            if size > MAX_MEDIA_BYTES:
                raise ValueError(f"a media item of {size} bytes is over the limit of {MAX_MEDIA_BYTES}")
            total += size
        if total > MAX_MEDIA_BYTES:
            raise ValueError(f"media total {total} bytes is over the limit of {MAX_MEDIA_BYTES}")
        return self


# ---- response ---------------------------------------------------------------------------------------

ExecutionStatus = Literal["pending", "running", "complete", "failed"]
FinishReason = Literal["stop", "length", "content_filter", "tool_use"]


class ToolUse(ResponseModel):
    tool_use_id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    result: Any = None
    execution_id: str | None = None
    status: ExecutionStatus | None = None

    @property
    def is_async(self) -> bool:
        return self.execution_id is not None and self.status in ("pending", "running")


class AssistantMessage(ResponseModel):
    role: str = "assistant"
    content: str | None = None
    tool_use: ToolUse | list[ToolUse] | None = None


class Usage(ResponseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


ResponsePattern = Literal["text", "tool_use", "tool_uses", "auto_executed", "async_execution"]


class ChatResponse(ResponseModel):
    response: AssistantMessage
    model: str | None = None
    request_id: str | None = None
    finish_reason: FinishReason | str | None = None
    usage: Usage | None = None

    @property
    def tool_uses(self) -> list[ToolUse]:
        tool_use = self.response.tool_use
        if tool_use is None:
            return []
        return tool_use if isinstance(tool_use, list) else [tool_use]

    @property
    def pending_executions(self) -> list[ToolUse]:
        return [t for t in self.tool_uses if t.is_async]

    @property
    def pattern(self) -> ResponsePattern:
        uses = self.tool_uses
        if not uses:
            return "text"
        if any(t.execution_id for t in uses):
            return "async_execution"
        if any(t.result is not None for t in uses):
            return "auto_executed"
        return "tool_uses" if isinstance(self.response.tool_use, list) else "tool_use"


class ToolExecution(ResponseModel):
    execution_id: str
    tool_name: str | None = None
    status: ExecutionStatus
    result: Any = None
    error: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    duration: float | None = None


class ExecutionNotFound(ResponseModel):
    error: str
    execution_id: str | None = None


def _is_union_tag(part: str | int) -> bool:
    # Pydantic puts the union member it tried into the location ("str", "list[...]", "ImageBlock").
    return isinstance(part, str) and (
        part in ("str", "int", "float", "bool") or "[" in part or part[:1].isupper()
    )


def invalid_request_from(error: ValidationError, root: str = "request") -> InvalidRequestError:
    """The error the caller can act on: of a union's alternatives, the one that got furthest into the
    input (a bad image format, not "should be a valid string"), named by wire names (camelCase)."""
    deepest = max(error.errors(), key=lambda e: len([p for p in e["loc"] if not _is_union_tag(p)]))
    parts = [to_camel(p) if isinstance(p, str) else str(p) for p in deepest["loc"] if not _is_union_tag(p)]
    return InvalidRequestError(".".join(parts) or root, deepest["msg"].removeprefix("Value error, "))
