"""The gateway's wire contract (../shared/gateway-contract.md) as msgspec structs, camelCase on the wire.

msgspec rather than pydantic: the same checks (types, bounds, patterns, unknown fields) with a located
error, for about a twentieth of pydantic's import time, which a Lambda cold start pays (bench/cold_start.py).
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Literal, Protocol, TypeVar, runtime_checkable

import msgspec
from msgspec import Meta, Struct

from shared.errors import InvalidRequestError

MAX_MEDIA_BYTES = 25 * 1024 * 1024
"""Each media item, and all media of one request together, at most 25 MB (decoded)."""

ImageFormat = Literal["png", "jpeg", "gif", "webp"]
VideoFormat = Literal["mp4", "mov", "mkv", "webm"]
DocumentFormat = Literal["pdf", "csv", "docx", "xlsx"]


def whole(pattern: str) -> str:
    """`pattern` anchored to the whole string. msgspec checks patterns with Python's re.search, where `$`
    also matches before a final newline (so "r-1\\n" would pass); the lookahead refuses that, and reads the
    same in the JSON Schema."""
    return f"^(?:{pattern})$(?!\\n)"


# Bedrock (behind the gateway) accepts only these characters in a document name.
DOCUMENT_NAME_PATTERN = whole(r"[A-Za-z0-9\s\-()\[\]]{1,200}")
TOOL_NAME_PATTERN = whole(r"[a-zA-Z0-9_-]+")

NonEmpty = Annotated[str, Meta(min_length=1)]
Temperature = Annotated[float, Meta(ge=0, le=2)]
MaxTokens = Annotated[int, Meta(ge=1, le=8192)]


@runtime_checkable
class StreamedMedia(Protocol):
    """Media bytes that are read from their source while the request body is sent, never held whole."""

    @property
    def size(self) -> int: ...

    def open(self) -> Any:
        """A fresh binary stream (something with `read(n)`) over the bytes; called once per attempt."""


def base64_decoded_size(text: str) -> int:
    return len(text) * 3 // 4 - text[-2:].count("=") if text else 0


def media_size(data: str | StreamedMedia) -> int:
    return data.size if isinstance(data, StreamedMedia) else base64_decoded_size(data)


class WireModel(Struct, rename="camel", forbid_unknown_fields=True):
    """A request-side object: an unknown field is an error (most likely a typo)."""


class ResponseModel(Struct, rename="camel"):
    """A response-side object: the gateway may add fields; a response must not fail on them."""


ModelT = TypeVar("ModelT", bound=Struct)


def parse(model: type[ModelT], data: Any, root: str = "request", *, lenient: bool = False) -> ModelT:
    """`data` (wire names, plain JSON values; media may be StreamedMedia) checked against `model`.
    `lenient` takes values that only say the right thing (12.0 or "12" for an integer): for the gateway's
    answers, which are billed work; requests are held to their types."""
    try:
        return msgspec.convert(data, model, strict=not lenient)
    except msgspec.ValidationError as error:
        raise invalid_request_from(error, model, root) from None


def build_validators(*models: type[Struct]) -> None:
    """Builds msgspec's validator of each model (and the models inside it) now, at import.

    msgspec builds it on first use otherwise, and two threads doing that at once crash the process: with
    msgspec 0.22.0, the first messages of a batch parsed in parallel segfaulted nine runs in ten. Imports
    run one at a time (the import lock), so a module calls this for its models as its last statement.
    """
    for model in models:
        msgspec.json.Decoder(model)


def to_wire(value: Any) -> Any:
    """Plain JSON data by wire names, None fields left out; StreamedMedia pass through for the body
    encoder to stream (msgspec.to_builtins would refuse them)."""
    if isinstance(value, Struct):
        return {
            wire: to_wire(item)
            for name, wire in wire_names(type(value)).items()
            if (item := getattr(value, name)) is not None
        }
    if isinstance(value, list | tuple):
        return [to_wire(item) for item in value]
    if isinstance(value, dict):
        return {key: to_wire(item) for key, item in value.items()}
    return value


def wire_fields(model: type[Struct], **fields: Any) -> dict[str, Any]:
    """`fields` by their Python names (model_id) as wire data (modelId), None left out."""
    names = wire_names(model)
    return {names[name]: to_wire(value) for name, value in fields.items() if value is not None}


@functools.cache
def wire_names(model: type[Struct]) -> dict[str, str]:
    """Python name -> wire name of each field (model_id -> modelId)."""
    return {f.name: f.encode_name for f in msgspec.structs.fields(model)}


# "Expected `int` >= 1 - at `$.messages[0].maxTokens`": msgspec's one located message ("... - at `key`
# in `$.x`" for a dict key; `[...]` stands for any dict value). The path goes into the error's field, in
# the dotted form the records use (messages.0.maxTokens).
_LOCATED = re.compile(r"^(?P<message>.*) - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$", re.DOTALL)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[([^\]]*)\]")
ANY_KEY = "*"


def error_location(error: msgspec.ValidationError, model: type[Struct]) -> tuple[list[str | int], str]:
    """(path parts, message) of a validation error of `model`; an empty path is the top-level object.
    Where the value must be one of a fixed set, the message lists the set (msgspec names only the value)."""
    located = _LOCATED.match(str(error))
    if not located:
        return [], str(error)
    parts: list[str | int] = []
    for name, index in _PATH_PART.findall(located["path"]):
        parts.append(int(index) if index.isdigit() else name or ANY_KEY)
    message = located["message"] + (" (as a key)" if located["key"] else "")
    choices = _choices_at(model, parts, key=bool(located["key"]))
    if choices:
        message += f"; expected one of {', '.join(repr(c) for c in choices)}"
    return parts, message


def invalid_request_from(
    error: msgspec.ValidationError, model: type[Struct], root: str = "request"
) -> InvalidRequestError:
    parts, message = error_location(error, model)
    return InvalidRequestError(".".join(str(p) for p in parts) or root, message)


def _choices_at(model: type[Struct], parts: list[str | int], *, key: bool = False) -> tuple[Any, ...]:
    """The literal values allowed at `parts` in `model` (at the keys of the dict there when `key`), or ()
    when the place takes other values too."""
    from msgspec import inspect  # only when an error is reported

    def alternatives(node: Any) -> tuple[Any, ...]:
        while isinstance(node, inspect.Metadata):  # Annotated[T, Meta(...)]
            node = node.type
        if isinstance(node, inspect.UnionType):
            return tuple(option for union_member in node.types for option in alternatives(union_member))
        return (node,)

    def step(node: Any, part: str | int) -> Any:
        for option in alternatives(node):
            if isinstance(part, int) and isinstance(option, inspect.ListType):
                return option.item_type
            if isinstance(part, str) and isinstance(option, inspect.StructType):
                return next((f.type for f in option.fields if f.encode_name == part), None)
            if isinstance(part, str) and isinstance(option, inspect.DictType):
                return option.value_type
        return None

    node: Any = inspect.type_info(model)
    for part in parts:
        node = step(node, part)
        if node is None:
            return ()
    if key:
        dicts = [option for option in alternatives(node) if isinstance(option, inspect.DictType)]
        node = dicts[0].key_type if dicts else None
    options = alternatives(node)
    literals = [option for option in options if isinstance(option, inspect.LiteralType)]
    others = [o for o in options if not isinstance(o, inspect.LiteralType | inspect.NoneType)]
    return literals[0].values if len(literals) == 1 and not others else ()


# ---- request ----------------------------------------------------------------------------------------


class MediaSource(WireModel):
    # base64 text when parsed from JSON; a StreamedMedia when built from a file, streamed by the body
    # encoder. msgspec cannot type a union of str and an arbitrary class, so the check is ours.
    bytes: Annotated[Any, Meta(description="base64 text", extra_json_schema={"type": "string"})]

    def __post_init__(self) -> None:
        if not isinstance(self.bytes, str | StreamedMedia):
            raise ValueError(f"bytes must be base64 text, not {type(self.bytes).__name__}")


class ImageData(WireModel):
    format: ImageFormat
    source: MediaSource


class VideoData(WireModel):
    format: VideoFormat
    source: MediaSource


class DocumentData(WireModel):
    format: DocumentFormat
    name: Annotated[str, Meta(pattern=DOCUMENT_NAME_PATTERN)]
    source: MediaSource

    def __post_init__(self) -> None:
        if re.search(r"\s\s", self.name):
            raise ValueError("a document name may not have two whitespace characters in a row")


BLOCK_KINDS = ("text", "image", "video", "document")


class ContentBlock(WireModel):
    """On the wire a block is an object with exactly one of text, image, video, document."""

    text: str | None = None
    image: ImageData | None = None
    video: VideoData | None = None
    document: DocumentData | None = None

    def __post_init__(self) -> None:
        kinds = [kind for kind in BLOCK_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"a content block must have exactly one of {', '.join(BLOCK_KINDS)}; it has {', '.join(kinds) or 'none'}"
            )

    @property
    def media(self) -> ImageData | VideoData | DocumentData | None:
        return self.image or self.video or self.document


# JSON Schema readers see the exactly-one rule too (msgspec checks it in ContentBlock.__post_init__).
OneKindBlock = Annotated[ContentBlock, Meta(extra_json_schema={"minProperties": 1, "maxProperties": 1})]


class Message(WireModel):
    role: Literal["user", "assistant", "system"]
    content: str | Annotated[list[OneKindBlock], Meta(min_length=1)]

    def blocks(self) -> list[ContentBlock]:
        return [ContentBlock(text=self.content)] if isinstance(self.content, str) else list(self.content)


class JsonResponseFormat(WireModel):
    type: Literal["json"]
    json_schema: dict[str, Any]


class ToolInputSchema(WireModel):
    json_: dict[str, Any] = msgspec.field(name="json")


class ToolSpec(WireModel):
    name: Annotated[str, Meta(min_length=1, max_length=64, pattern=TOOL_NAME_PATTERN)]
    input_schema: ToolInputSchema
    description: str | None = None


class Tool(WireModel):
    tool_spec: ToolSpec


class ToolConfig(WireModel):
    tools: list[Tool] = msgspec.field(default_factory=list)
    auto_execute: bool = False
    allowed_tools: list[str] | None = None

    def __post_init__(self) -> None:
        if self.auto_execute and not self.allowed_tools:
            raise ValueError("allowedTools is required when autoExecute is true")


def accepts_media(model_id: str) -> bool:
    # Only Nova Lite and Pro take images, videos and documents; Nova Micro and Claude read text only.
    model = model_id.lower()
    return "nova" in model and "micro" not in model


class ChatRequest(WireModel, kw_only=True):
    messages: Annotated[list[Message], Meta(min_length=1)]
    model_id: NonEmpty
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    stream: bool | None = None
    system_prompt: str | None = None
    stop_sequences: Annotated[list[str], Meta(max_length=4)] | None = None
    response_format: JsonResponseFormat | None = None
    tool_config: ToolConfig | None = None

    def media(self) -> list[ImageData | VideoData | DocumentData]:
        return [m for message in self.messages for block in message.blocks() if (m := block.media)]

    def __post_init__(self) -> None:
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


OPTION_FIELDS = ("system_prompt", "temperature", "max_tokens", "response_format", "tool_config")


class RequestOptions(WireModel):
    """Settings for a request built here (not given whole): a queued message's short form and a routing
    rule take the same ones."""

    model_id: NonEmpty | None = None
    system_prompt: str | None = None
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    response_format: JsonResponseFormat | None = None
    tool_config: ToolConfig | None = None

    def options(self) -> dict[str, Any]:
        """The ChatRequest fields set here, by Python name; not the model, whose fallback is the caller's."""
        return {name: getattr(self, name) for name in OPTION_FIELDS if getattr(self, name) is not None}


# ---- response ---------------------------------------------------------------------------------------

ExecutionStatus = Literal["pending", "running", "complete", "failed"]


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
    finish_reason: str | None = None  # stop, length, content_filter or tool_use so far
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
    status: ExecutionStatus
    tool_name: str | None = None
    result: Any = None
    error: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    duration: float | None = None


build_validators(ChatRequest, ChatResponse, ToolExecution)
