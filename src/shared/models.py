"""The gateway's wire contract (../shared/gateway-contract.md) as pydantic v2 models, camelCase on the wire.

Two directions, two disciplines. What we send (WireModel) is held to the contract's types and rules: an
unknown field or a value of the wrong JSON type is an error, and every rule the gateway enforces is enforced
here first (the emulator, devtools/emulator/validation.py, checks the same rules independently). What the
gateway answers (ResponseModel) is read leniently and kept whole: fields it adds are kept, values that only
say the right thing (12.0 tokens) are taken, and an execution status we do not know means "still running".
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from shared.errors import InvalidRequestError

DEFAULT_MAX_REQUEST_BYTES = 25_000_000
"""The contract's "Maximum 25MB total payload size": the whole JSON body, base64 included."""

ImageFormat = Literal["png", "jpeg", "gif", "webp"]
VideoFormat = Literal["mp4", "mov", "mkv", "webm"]
DocumentFormat = Literal["pdf", "csv", "docx", "xlsx"]

# Bedrock (behind the gateway) accepts only these characters in a document name.
DOCUMENT_NAME_PATTERN = r"^[A-Za-z0-9\s\-()\[\]]{1,200}$"
DOCUMENT_NAME_MAX = 100
DOCUMENT_NAME_FALLBACK = "document"
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
# An execution id goes into a URL path and an S3 key: only what the gateway's ids are made of (exec_...).
EXECUTION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


@runtime_checkable
class StreamedMedia(Protocol):
    """Media bytes that are read from their source while the request body is sent, never held whole."""

    @property
    def size(self) -> int: ...

    def open(self) -> Any:
        """A fresh binary stream (something with `read(n)`) over the bytes; called once per attempt."""


class MediaHandle:
    """A StreamedMedia as model_dump leaves it: pydantic would turn a dataclass source into a dict, while a
    plain object passes through untouched, for the body encoder to stream."""

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


# ---- value rules ---------------------------------------------------------------------------------------


def finite_json(value: Any) -> Any:
    """Free JSON (schemas, tool input, metadata) must be JSON: NaN and Infinity are not, and json.dumps
    would write them anyway."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{item} is not a JSON number")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


def _media_bytes(value: Any) -> Any:
    if isinstance(value, StreamedMedia):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be base64 text, not {type(value).__name__}")
    if not value:
        raise ValueError("must not be empty (the file as base64 text)")
    if len(value) % 4 or not _BASE64.fullmatch(value):
        raise ValueError(
            "is not valid base64 (letters, digits, '+', '/', padded with '=' to a multiple of 4)"
        )
    return value


def _keep_streamed(value: Any) -> Any:
    return value if isinstance(value, str | MediaHandle) else MediaHandle(value)


def sanitize_document_name(name: str) -> str:
    """A name the gateway accepts (Bedrock Converse, under it, refuses any other): letters, digits, single
    spaces, hyphens, parentheses and square brackets. `report.pdf` becomes `report`, `Q3_report.v2`
    becomes `Q3-report`."""
    import unicodedata

    base = re.split(r"[/\\]", name)[-1]
    stem, dot, _extension = base.rpartition(".")
    if dot and stem:
        base = stem
    ascii_only = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^A-Za-z0-9\s\-()\[\]]", "-", ascii_only)
    cleaned = re.sub(r"\s+", " ", cleaned)
    cleaned = re.sub(r"-+", "-", cleaned)
    cleaned = cleaned.strip(" -")[:DOCUMENT_NAME_MAX].rstrip(" -")
    return cleaned or DOCUMENT_NAME_FALLBACK


def _cleaned_document_name(name: Any) -> Any:
    # A caller's name is cleaned as an upload's is, not refused; a non-string is left for the type check.
    return sanitize_document_name(name) if isinstance(name, str) else name


JsonObject = Annotated[dict[str, Any], AfterValidator(finite_json)]
NonEmptyJsonObject = Annotated[dict[str, Any], Field(min_length=1), AfterValidator(finite_json)]
NonEmpty = Annotated[str, Field(min_length=1)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


NotBlank = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]
Temperature = Annotated[float, Field(ge=0, le=2)]
MaxTokens = Annotated[int, Field(ge=1, le=8192)]
MediaBytes = Annotated[
    Any,
    AfterValidator(_media_bytes),
    PlainSerializer(_keep_streamed),
    WithJsonSchema(
        {"type": "string", "contentEncoding": "base64", "minLength": 4, "pattern": "^[A-Za-z0-9+/]*={0,2}$"}
    ),
]

_CAMEL = {"alias_generator": to_camel, "validate_by_name": True, "validate_by_alias": True}


class WireModel(BaseModel):
    """What we send or take from callers: JSON types held strictly, an unknown field is an error (most
    likely a typo), NaN and Infinity refused. (defer_build: see build_models.)"""

    model_config = ConfigDict(**_CAMEL, extra="forbid", strict=True, allow_inf_nan=False, defer_build=True)


class ResponseModel(BaseModel):
    """What the gateway answers (billed work): read leniently, and fields it adds are kept."""

    model_config = ConfigDict(**_CAMEL, extra="allow", defer_build=True)


ModelT = TypeVar("ModelT", bound=BaseModel)


def build_models(*models: type[BaseModel]) -> None:
    """Builds the validators of `models` (and the models inside them) now. Every model is declared with
    defer_build, so a function builds, at import, the ones it uses and no other: the poll step never pays
    for the request models. A module calls this for its models as its last statement; a model nobody built
    would be built on its first use."""
    for model in models:
        model.model_rebuild()


def parse(model: type[ModelT], data: Any, root: str = "request", *, lenient: bool = False) -> ModelT:
    """`data` (wire names, plain JSON values; media may be StreamedMedia) checked against `model`.
    `lenient` takes values that only say the right thing (12.0 or "12" for an integer): for the gateway's
    answers; requests are held to their types."""
    try:
        return model.model_validate(data, strict=False if lenient else None)
    except ValidationError as error:
        raise invalid_request_from(error, root) from None


def to_wire(value: Any) -> Any:
    """Plain JSON data by wire names, unset fields left out (nulls inside free JSON kept); StreamedMedia
    pass through for the body encoder to stream. Fields the gateway added to an answer are kept."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_none=True)
    if isinstance(value, list | tuple):
        return [to_wire(item) for item in value]
    return value


def wire_fields(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
    """`fields` by their Python names (model_id) as wire data (modelId), None left out."""
    names = model.model_fields
    return {names[name].alias or name: to_wire(value) for name, value in fields.items() if value is not None}


# ---- errors --------------------------------------------------------------------------------------------

# Where a value may take one of several forms, pydantic puts the form it tried into the error's location
# ("str", "list[ContentBlock]", "function-after[...]"). A wire name is camelCase and never looks like that.
_FORM = re.compile(r"^(?:str|int|float|bool|dict|list|none|[A-Z]\w*|.*[\[\-].*)$")

# pydantic lists a Literal's values as "'user', 'assistant' or 'system'".
_CHOICES = re.compile(r", | or ")

_JSON_TYPES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


_MESSAGES = {
    "extra_forbidden": lambda e: "unknown field",
    "string_pattern_mismatch": lambda e: f"{_json_type(e['input'])} does not match {e['ctx']['pattern']}",
    "model_type": lambda e: f"must be a JSON object, got {_json_type(e['input'])}",
    "model_attributes_type": lambda e: f"must be a JSON object, got {_json_type(e['input'])}",
    "dict_type": lambda e: f"must be a JSON object, got {_json_type(e['input'])}",
    "list_type": lambda e: f"must be an array, got {_json_type(e['input'])}",
    "string_type": lambda e: f"must be a string, got {_json_type(e['input'])}",
    "int_type": lambda e: f"must be an integer, got {_json_type(e['input'])}",
    "float_type": lambda e: f"must be a number, got {_json_type(e['input'])}",
    "bool_type": lambda e: f"must be a boolean, got {_json_type(e['input'])}",
    "missing": lambda e: "required field is missing",
    "literal_error": lambda e: (
        f"Invalid enum value {e['input']!r}; expected one of {', '.join(sorted(_CHOICES.split(e['ctx']['expected'])))}"
    ),
}


def error_location(error: ValidationError) -> tuple[list[str | int], str]:
    """(path parts by wire name, message) of the error the caller can act on: of a union's alternatives,
    the one that got furthest into the input (a bad image format, not "should be a valid string")."""

    def path(detail: Any) -> list[str | int]:
        return [p for p in detail["loc"] if not (isinstance(p, str) and _FORM.match(p))]

    details = error.errors(include_url=False)
    # Deepest first; at one depth, the alternative whose type matched (an empty array's "too short", not
    # the string alternative's "must be a string").
    deepest = max(details, key=lambda d: (len(path(d)), not d["type"].endswith("_type")))
    message = _MESSAGES.get(deepest["type"], lambda e: e["msg"].removeprefix("Value error, "))(deepest)
    parts = path(deepest)
    if deepest["loc"][-1:] == ("[key]",):  # a dict key that is not allowed: the dict is the place
        parts = parts[:-1]
        message = message.replace(";", " (as a key);", 1) if ";" in message else f"{message} (as a key)"
    return parts, message


def invalid_request_from(error: ValidationError, root: str = "request") -> InvalidRequestError:
    parts, message = error_location(error)
    return InvalidRequestError(".".join(str(p) for p in parts) or root, message)


# ---- request ---------------------------------------------------------------------------------------------


class MediaSource(WireModel):
    # base64 text when parsed from JSON; a StreamedMedia when built from a file, streamed by the body encoder.
    bytes: MediaBytes


class ImageData(WireModel):
    format: ImageFormat
    source: MediaSource


class VideoData(WireModel):
    format: VideoFormat
    source: MediaSource


DocumentName = Annotated[
    str,
    BeforeValidator(_cleaned_document_name),
    Field(pattern=DOCUMENT_NAME_PATTERN),
    # Any name is taken and cleaned (report.pdf -> report), so the schema asks only for a string.
    WithJsonSchema({"type": "string", "minLength": 1, "description": "cleaned to what the gateway accepts"}),
]


class DocumentData(WireModel):
    format: DocumentFormat
    name: DocumentName
    source: MediaSource


BLOCK_KINDS = ("text", "image", "video", "document")


class ContentBlock(WireModel):
    """On the wire a block is an object with exactly one of text, image, video, document."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    text: str | None = None
    image: ImageData | None = None
    video: VideoData | None = None
    document: DocumentData | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> ContentBlock:
        kinds = [kind for kind in BLOCK_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"a content block must have exactly one of {', '.join(BLOCK_KINDS)}; it has {', '.join(kinds) or 'none'}"
            )
        return self

    @property
    def media(self) -> ImageData | VideoData | DocumentData | None:
        return self.image or self.video or self.document


class Message(WireModel):
    role: Literal["user", "assistant", "system"]
    content: str | Annotated[list[ContentBlock], Field(min_length=1)]

    def blocks(self) -> list[ContentBlock]:
        return [ContentBlock(text=self.content)] if isinstance(self.content, str) else list(self.content)


class JsonResponseFormat(WireModel):
    type: Literal["json"]
    json_schema: NonEmptyJsonObject


class ToolInputSchema(WireModel):
    json_: JsonObject = Field(alias="json")


class ToolSpec(WireModel):
    name: Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]
    input_schema: ToolInputSchema
    description: str | None = None


class Tool(WireModel):
    tool_spec: ToolSpec


class ToolConfig(WireModel):
    tools: list[Tool] | None = None
    auto_execute: bool | None = None
    allowed_tools: list[NonEmpty] | None = None

    @model_validator(mode="after")
    def _tools_to_use(self) -> ToolConfig:
        if self.auto_execute and not self.allowed_tools:
            raise ValueError("allowedTools is required when autoExecute is true")
        if not self.auto_execute and not self.tools:
            raise ValueError("tools needs at least one tool when autoExecute is not true")
        names = [tool.tool_spec.name for tool in self.tools or ()]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate tool names: {', '.join(duplicates)}")
        return self


def accepts_media(model_id: str) -> bool:
    # The reference: "Amazon Nova Lite, Micro, Pro (all support multimodal)"; "Claude models (text only)".
    # Only what it calls text-only is refused; a model it does not mention is the gateway's to judge.
    return "claude" not in model_id.lower()


class ChatRequest(WireModel):
    messages: Annotated[list[Message], Field(min_length=1)]
    model_id: NotBlank
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stream: bool | None = None
    system_prompt: str | None = None
    stop_sequences: Annotated[list[NonEmpty], Field(max_length=4)] | None = None
    response_format: JsonResponseFormat | None = None
    tool_config: ToolConfig | None = None

    def media(self) -> list[ImageData | VideoData | DocumentData]:
        return [m for message in self.messages for block in message.blocks() if (m := block.media)]

    @model_validator(mode="after")
    def _media_for_the_model(self) -> ChatRequest:
        if not accepts_media(self.model_id) and self.media():
            raise ValueError(f"model {self.model_id} takes text only (Claude models); media needs Nova")
        return self


OPTION_FIELDS = ("system_prompt", "temperature", "max_tokens", "response_format", "tool_config")


class RequestOptions(WireModel):
    """Settings for a request built here (not given whole): a queued message's short form and a routing
    rule take the same ones."""

    model_id: NotBlank | None = None
    system_prompt: str | None = None
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    response_format: JsonResponseFormat | None = None
    tool_config: ToolConfig | None = None

    def options(self) -> dict[str, Any]:
        """The ChatRequest fields set here, by Python name; not the model, whose fallback is the caller's."""
        return {name: getattr(self, name) for name in OPTION_FIELDS if getattr(self, name) is not None}


# ---- response ---------------------------------------------------------------------------------------

EXECUTION_STATUSES = ("pending", "running", "complete", "failed")
FINISHED_STATUSES = ("complete", "failed")


ExecutionId = Annotated[str, Field(pattern=EXECUTION_ID_PATTERN)]


class ToolUse(ResponseModel):
    tool_use_id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    result: Any = None
    execution_id: ExecutionId | None = None
    # pending, running, complete or failed so far; a status the gateway adds later means "not finished".
    status: str | None = None
    error: Any = None

    @property
    def is_async(self) -> bool:
        return self.execution_id is not None and self.status not in FINISHED_STATUSES

    @property
    def failed(self) -> bool:
        return self.status == "failed"


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
    def failed_tools(self) -> list[ToolUse]:
        return [t for t in self.tool_uses if t.failed]

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
    execution_id: ExecutionId
    status: str  # as ToolUse.status: a status we do not know is still running
    tool_name: str | None = None
    result: Any = None
    error: Any = None
    created_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    duration: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


def check_execution_id(execution_id: Any, where: str = "executionId") -> str:
    """An execution id the gateway named, before it goes into a URL or an S3 key."""
    if not isinstance(execution_id, str) or not re.fullmatch(EXECUTION_ID_PATTERN, execution_id):
        shown = execution_id[:80] if isinstance(execution_id, str) else type(execution_id).__name__
        raise InvalidRequestError(where, f"{shown!r} is not an execution id (letters, digits, '_', '-')")
    return execution_id
