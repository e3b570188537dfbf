"""Checks a POST /chat body the way the gateway does, independently of src/ so it can catch the project's
mistakes. The first problem wins; its message names the JSON field (`messages[0].content[1].image.format`).
"""

import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

ROLES = ("user", "assistant", "system")
BLOCK_KINDS = ("text", "image", "video", "document")
MEDIA_FORMATS = {
    "image": ("png", "jpeg", "gif", "webp"),
    "video": ("mp4", "mov", "mkv", "webm"),
    "document": ("pdf", "csv", "docx", "xlsx"),
}
MAX_STOP_SEQUENCES = 4
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # Bedrock's rule for tool names
DOCUMENT_NAME = re.compile(r"[A-Za-z0-9\s\-()\[\]]{1,200}")  # and for document names


class RequestRejected(Exception):
    """The gateway refuses the request with `status` (400 or 413) and `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class MediaItem:
    kind: str  # image, video or document
    format: str
    size: int  # decoded bytes
    sha256: str  # hex digest of the decoded bytes
    name: str | None  # documents only


@dataclass(frozen=True)
class ToolSpec:
    name: str
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class ChatRequest:
    model_id: str
    media: tuple[MediaItem, ...]
    text_chars: int  # every text block, string content and the system prompt
    last_user_text: str  # the text blocks of the last user message, joined by newlines
    max_tokens: int
    json_schema: dict[str, Any] | None  # set when responseFormat asks for JSON
    tools: tuple[ToolSpec, ...]
    auto_execute: bool
    allowed_tools: tuple[str, ...]
    wants_tools: bool  # toolConfig was sent


def takes_media(model_id: str) -> bool:
    # The reference: "Amazon Nova Lite, Micro, Pro (all support multimodal)", "Claude models (text only)".
    # "in" rather than startswith so cross-region ids such as us.anthropic.claude-... count too.
    return "claude" not in model_id.lower()


def _reject(field: str, problem: str, status: int = 400) -> RequestRejected:
    return RequestRejected(status, f"{field}: {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _not_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_chat_request(body: bytes) -> ChatRequest:
    """The body's size limit is the server's (read_body); everything else is checked here."""
    try:
        payload = json.loads(body, parse_constant=_not_json_constant)
    except ValueError as error:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8
        raise _reject("body", f"invalid JSON ({error})") from None
    if not isinstance(payload, dict):
        raise _reject("body", "must be a JSON object")

    model_id = payload.get("modelId")
    if not isinstance(model_id, str) or not model_id.strip():
        raise _reject("modelId", "required (a model id such as amazon.nova-lite-v1:0)")

    max_tokens = _check_parameters(payload)
    json_schema = _check_response_format(payload.get("responseFormat"))
    tools, auto_execute, allowed_tools = _check_tool_config(payload.get("toolConfig"))
    media, text_chars, last_user_text = _check_messages(payload.get("messages"), model_id)
    system_prompt = payload.get("systemPrompt") or ""

    return ChatRequest(
        model_id=model_id,
        media=tuple(media),
        text_chars=text_chars + len(system_prompt),
        last_user_text=last_user_text,
        max_tokens=max_tokens,
        json_schema=json_schema,
        tools=tuple(tools),
        auto_execute=auto_execute,
        allowed_tools=tuple(allowed_tools),
        wants_tools=payload.get("toolConfig") is not None,
    )


def _check_parameters(payload: dict[str, Any]) -> int:
    # A null field counts as absent: generated clients often send them.
    temperature = payload.get("temperature")
    if temperature is not None and not (_is_number(temperature) and 0 <= temperature <= 2):
        raise _reject("temperature", "must be a number from 0 to 2")
    top_p = payload.get("topP")
    if top_p is not None and not (_is_number(top_p) and 0 <= top_p <= 1):
        raise _reject("topP", "must be a number from 0 to 1")
    max_tokens = payload.get("maxTokens")
    if max_tokens is None:
        max_tokens = 1024
    elif not (isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and 1 <= max_tokens <= 8192):
        raise _reject("maxTokens", "must be an integer from 1 to 8192")
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _reject("stream", "must be a boolean")
    system_prompt = payload.get("systemPrompt")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise _reject("systemPrompt", "must be a string")
    stop_sequences = payload.get("stopSequences")
    if stop_sequences is not None:
        if not isinstance(stop_sequences, list):
            raise _reject("stopSequences", "must be an array of strings")
        if len(stop_sequences) > MAX_STOP_SEQUENCES:
            raise _reject("stopSequences", f"at most {MAX_STOP_SEQUENCES} allowed, got {len(stop_sequences)}")
        for index, sequence in enumerate(stop_sequences):
            if not isinstance(sequence, str) or not sequence:
                raise _reject(f"stopSequences[{index}]", "must be a non-empty string")
    return max_tokens


def _check_response_format(response_format: Any) -> dict[str, Any] | None:
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise _reject("responseFormat", 'must be {"type": "json", "jsonSchema": {...}}')
    if response_format.get("type") != "json":
        raise _reject("responseFormat.type", 'must be "json"')
    schema = response_format.get("jsonSchema")
    if not isinstance(schema, dict) or not schema:
        raise _reject("responseFormat.jsonSchema", "must be a non-empty JSON Schema object")
    return schema


def _check_tool_config(tool_config: Any) -> tuple[list[ToolSpec], bool, list[str]]:
    if tool_config is None:
        return [], False, []
    if not isinstance(tool_config, dict):
        raise _reject("toolConfig", "must be an object")
    auto_execute = tool_config.get("autoExecute")
    if auto_execute is None:
        auto_execute = False
    elif not isinstance(auto_execute, bool):
        raise _reject("toolConfig.autoExecute", "must be a boolean")

    raw_tools = tool_config.get("tools")
    if raw_tools is None:
        raw_tools = []
    elif not isinstance(raw_tools, list):
        raise _reject("toolConfig.tools", "must be an array")
    tools = [_check_tool(tool, f"toolConfig.tools[{index}]") for index, tool in enumerate(raw_tools)]
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        if tool.name in seen:
            raise _reject(f"toolConfig.tools[{index}].toolSpec.name", f"duplicate tool name {tool.name!r}")
        seen.add(tool.name)

    allowed = tool_config.get("allowedTools")
    if allowed is None:
        allowed = []
    elif not isinstance(allowed, list) or not all(isinstance(name, str) and name for name in allowed):
        raise _reject("toolConfig.allowedTools", "must be an array of tool names")

    if auto_execute and not allowed:
        raise _reject("toolConfig.allowedTools", "required when autoExecute is true")
    if not auto_execute and not tools:
        raise _reject("toolConfig.tools", "at least one tool is required when autoExecute is false")
    return tools, auto_execute, allowed


def _check_tool(tool: Any, where: str) -> ToolSpec:
    spec = tool.get("toolSpec") if isinstance(tool, dict) else None
    if not isinstance(spec, dict):
        raise _reject(f"{where}.toolSpec", "required (an object with name, description and inputSchema)")
    name = spec.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise _reject(f"{where}.toolSpec.name", "must be 1 to 64 letters, digits, '_' or '-'")
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise _reject(f"{where}.toolSpec.description", "must be a string")
    input_schema = spec.get("inputSchema")
    schema = input_schema.get("json") if isinstance(input_schema, dict) else None
    if not isinstance(schema, dict):
        raise _reject(f"{where}.toolSpec.inputSchema.json", "must be a JSON Schema object")
    return ToolSpec(name=name, input_schema=schema)


def _check_messages(messages: Any, model_id: str) -> tuple[list[MediaItem], int, str]:
    if not isinstance(messages, list) or not messages:
        raise _reject("messages", "must be a non-empty array")
    media: list[MediaItem] = []
    text_chars = 0
    last_user_text = ""
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _reject(where, "must be an object with role and content")
        if message.get("role") not in ROLES:
            raise _reject(f"{where}.role", f"must be one of {', '.join(ROLES)}")
        texts = _check_content(message.get("content"), f"{where}.content", model_id, media)
        text_chars += sum(len(text) for text in texts)
        if message["role"] == "user":
            last_user_text = "\n".join(texts)
    return media, text_chars, last_user_text


def _check_content(content: Any, where: str, model_id: str, media: list[MediaItem]) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise _reject(where, "must be a string or an array of content blocks")
    if not content:
        raise _reject(where, "must not be an empty array")
    texts = []
    for index, block in enumerate(content):
        block_where = f"{where}[{index}]"
        if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in BLOCK_KINDS:
            raise _reject(block_where, f"must have exactly one of {', '.join(BLOCK_KINDS)}")
        kind, value = next(iter(block.items()))
        if kind == "text":
            if not isinstance(value, str):
                raise _reject(f"{block_where}.text", "must be a string")
            texts.append(value)
            continue
        if not takes_media(model_id):
            raise _reject(
                f"{block_where}.{kind}", f"model {model_id} takes text only; media needs a Nova model"
            )
        media.append(_check_media(kind, value, f"{block_where}.{kind}"))
    return texts


def _check_media(kind: str, value: Any, where: str) -> MediaItem:
    if not isinstance(value, dict):
        raise _reject(where, "must be an object with format and source")
    formats = MEDIA_FORMATS[kind]
    media_format = value.get("format")
    if media_format not in formats:
        raise _reject(f"{where}.format", f"must be one of {', '.join(formats)}")
    name = value.get("name")
    if kind == "document" and (not isinstance(name, str) or not name.strip()):
        raise _reject(f"{where}.name", "required for documents")
    if kind == "document" and not (DOCUMENT_NAME.fullmatch(name) and not re.search(r"\s\s", name)):
        raise _reject(
            f"{where}.name",
            "may hold only letters, digits, single spaces, hyphens, parentheses and square brackets",
        )
    source = value.get("source")
    encoded = source.get("bytes") if isinstance(source, dict) else None
    bytes_where = f"{where}.source.bytes"
    if not isinstance(encoded, str) or not encoded:
        raise _reject(bytes_where, "required (the file as base64 text)")

    if len(encoded) % 4:
        raise _reject(bytes_where, "invalid base64")
    try:
        # Strict mode refuses characters outside the alphabet and misplaced padding, like validate=True in
        # base64.b64decode, but is faster on 25 MB items.
        raw = binascii.a2b_base64(encoded, strict_mode=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise _reject(bytes_where, "invalid base64") from None
    return MediaItem(
        kind=kind,
        format=media_format,
        size=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        name=name if kind == "document" else None,
    )
