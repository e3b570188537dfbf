"""The 200 body of POST /chat for a valid request: one of the contract's five response patterns.

Content always carries proof of what was received (see `proof_lines`), so tests can assert the exact file
reached the gateway. Usage is estimated from the request: inputTokens = ceil(text characters / 4) +
ceil(bytes / 750) per media item; outputTokens = ceil(len(content) / 4).
"""

import json
import math
import secrets
from collections.abc import Callable
from typing import Any

from devtools.emulator.validation import ChatRequest

ECHO_CHARS = 200
CHARS_PER_TOKEN = 4
MEDIA_BYTES_PER_TOKEN = 750
IMAGE_TOOL = "generate_image"

# Deterministic results for the built-in synchronous tools (pattern 4).
SYNC_TOOL_RESULTS: dict[str, dict[str, Any]] = {
    "calculate": {"result": 42},
    "get_weather": {"temperatureC": 21, "conditions": "partly cloudy"},
    "search_web": {"results": [{"title": "Emulated result", "url": "https://example.com/emulated"}]},
}
SYNC_TOOL_INPUT_KEYS = {"calculate": "expression", "get_weather": "location", "search_web": "query"}

# Called once per async image execution with the prompt; returns (executionId, status at creation).
StartExecution = Callable[[str, str], tuple[str, str]]


def proof_lines(request: ChatRequest) -> list[str]:
    """`<kind> <n>: <format>, <bytes> bytes, sha256 <12 hex>[, name <name>]` per media item (n counts per
    kind from 1, in request order), then `Echo: <first 200 characters of the last user text>`."""
    lines = []
    counts: dict[str, int] = {}
    for item in request.media:
        counts[item.kind] = counts.get(item.kind, 0) + 1
        line = f"{item.kind} {counts[item.kind]}: {item.format}, {item.size} bytes, sha256 {item.sha256[:12]}"
        lines.append(line + (f", name {item.name}" if item.name is not None else ""))
    # Newlines become spaces so the echo stays one line.
    echo = request.last_user_text[:ECHO_CHARS].replace("\r", " ").replace("\n", " ")
    lines.append(f"Echo: {echo}")
    return lines


def build_reply(
    request: ChatRequest, images_per_request: int, start_execution: StartExecution
) -> dict[str, Any]:
    proof = "\n".join(proof_lines(request))
    finish_reason = "stop"
    tool_use: dict[str, Any] | list[dict[str, Any]] | None = None
    if request.wants_tools:
        content, tool_use, finish_reason = _tool_reply(request, proof, images_per_request, start_execution)
    else:
        content = proof
        if request.json_schema is not None:
            content = json.dumps(example_for_schema(request.json_schema, proof, required_only=False))
        if math.ceil(len(content) / CHARS_PER_TOKEN) > request.max_tokens:
            content = content[: request.max_tokens * CHARS_PER_TOKEN]
            finish_reason = "length"

    response: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_use is not None:
        response["toolUse"] = tool_use
    input_tokens = math.ceil(request.text_chars / CHARS_PER_TOKEN) + sum(
        math.ceil(item.size / MEDIA_BYTES_PER_TOKEN) for item in request.media
    )
    output_tokens = math.ceil(len(content) / CHARS_PER_TOKEN)
    return {
        "response": response,
        "model": request.model_id,
        "requestId": f"req-{secrets.token_hex(8)}",
        "finishReason": finish_reason,
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        },
    }


def _tool_reply(
    request: ChatRequest, proof: str, images_per_request: int, start_execution: StartExecution
) -> tuple[str, Any, str]:
    prompt = request.last_user_text
    if request.auto_execute and IMAGE_TOOL in request.allowed_tools:  # pattern 5: async, to be polled
        uses = []
        for _ in range(images_per_request):
            execution_id, status = start_execution(IMAGE_TOOL, prompt)
            use = _tool_use(IMAGE_TOOL, {"prompt": prompt})
            uses.append(use | {"executionId": execution_id, "status": status})
        sentence = "Generating the image." if len(uses) == 1 else f"Generating {len(uses)} images."
        return f"{sentence}\n{proof}", uses[0] if len(uses) == 1 else uses, "tool_use"

    if request.auto_execute:  # pattern 4: the gateway ran a synchronous tool and wrote the final answer
        name = request.allowed_tools[0]
        result = SYNC_TOOL_RESULTS.get(name, {"output": f"emulated result of {name}"})
        use = _tool_use(name, _tool_input(request, name)) | {"status": "complete", "result": result}
        return f"The {name} tool returned {json.dumps(result)}.\n{proof}", use, "stop"

    # Patterns 2 and 3: the model asks the caller to run its tools.
    uses = [_tool_use(tool.name, _tool_input(request, tool.name)) for tool in request.tools]
    sentence = f"Calling {', '.join(use['name'] for use in uses)}."
    return f"{sentence}\n{proof}", uses[0] if len(uses) == 1 else uses, "tool_use"


def _tool_use(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {"toolUseId": f"tooluse_{secrets.token_hex(11)}", "name": name, "input": tool_input}


def _tool_input(request: ChatRequest, name: str) -> dict[str, Any]:
    text = request.last_user_text[:ECHO_CHARS]
    spec = next((tool for tool in request.tools if tool.name == name), None)
    if spec is not None:
        example = example_for_schema(spec.input_schema, text, required_only=True)
        if isinstance(example, dict):
            return example
    return {SYNC_TOOL_INPUT_KEYS.get(name, "input"): text}


def example_for_schema(schema: Any, text: str, *, required_only: bool, depth: int = 0) -> Any:
    """A value valid for simple JSON Schemas: every string is `text`, numbers their minimum or 0, arrays one
    item, enums their first value. Objects get all properties, or only required ones with required_only."""
    if not isinstance(schema, dict) or depth > 10:
        return text
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_for_schema(schema[key][0], text, required_only=required_only, depth=depth + 1)

    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((name for name in kind if name != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"

    match kind:
        case "object":
            properties = schema.get("properties")
            properties = properties if isinstance(properties, dict) else {}
            required = schema.get("required")
            required = (
                [name for name in required if isinstance(name, str)] if isinstance(required, list) else []
            )
            names = [name for name in properties if name in required or not required_only]
            names += [name for name in required if name not in properties]
            return {
                name: example_for_schema(
                    properties.get(name, {}), text, required_only=required_only, depth=depth + 1
                )
                for name in names
            }
        case "array":
            count = max(1, _number(schema, "minItems", 1))
            count = min(count, _number(schema, "maxItems", count))
            item = example_for_schema(
                schema.get("items", {}), text, required_only=required_only, depth=depth + 1
            )
            return [item] * int(count)
        case "integer" | "number":
            value = _number(schema, "minimum", 0)
            if "exclusiveMinimum" in schema:
                value = _number(schema, "exclusiveMinimum", 0) + 1
            return math.ceil(value) if kind == "integer" else float(value)
        case "boolean":
            return True
        case "null":
            return None
        case _:
            value = text.ljust(int(_number(schema, "minLength", 0)), "x")
            return value[: int(_number(schema, "maxLength", len(value)))]


def _number(schema: dict[str, Any], key: str, default: float) -> float:
    # Schemas come from the caller and may be sloppy; a keyword that is not a number is ignored.
    value = schema.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else default
