"""One rulebook: what the project sends is what the gateway takes, judged three ways.

Every request shape the project can build (an upload of each sample kind, each queued form, tools,
structured output) is accepted by
- the official client's model classes (quantcdn-client), built block by block as the contract page says
  works, and serialised back to the same JSON;
- the emulator's own checks (devtools.emulator.validation, written apart from src/);
- a JSON Schema written from the contract page's tables (tests/gateway-request.schema.json).
And each request the contract forbids is refused by both our models and the emulator, at the same field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from quantcdn.models.chat_inference_request import ChatInferenceRequest
from quantcdn.models.chat_inference_request_messages_inner import ChatInferenceRequestMessagesInner
from quantcdn.models.chat_inference_request_messages_inner_content import (
    ChatInferenceRequestMessagesInnerContent,
)
from quantcdn.models.chat_inference_request_messages_inner_content_one_of_inner import (
    ChatInferenceRequestMessagesInnerContentOneOfInner,
)
from quantcdn.models.chat_inference_request_messages_inner_content_one_of_inner_one_of import (
    ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf,
)
from quantcdn.models.chat_inference_request_messages_inner_content_one_of_inner_one_of1 import (
    ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf1,
)
from quantcdn.models.chat_inference_request_messages_inner_content_one_of_inner_one_of2 import (
    ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf2,
)
from quantcdn.models.chat_inference_request_messages_inner_content_one_of_inner_one_of3 import (
    ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf3,
)
from quantcdn.models.chat_inference_request_response_format import ChatInferenceRequestResponseFormat
from quantcdn.models.chat_inference_request_tool_config import ChatInferenceRequestToolConfig

from devtools.emulator.validation import RequestRejected, parse_chat_request
from shared.body import encode_json_body
from shared.errors import InvalidRequestError
from shared.messages import RequestMessage
from shared.models import ChatRequest, parse, to_wire
from shared.request_builder import build_chat_request, prepare, with_attachments
from shared.routing import load_rules
from shared.sources import FileSource
from tests.sample_files import IMAGE_TOOL, IMAGE_TOOL_CONFIG, SAMPLE_KINDS, SAMPLES

NOVA_LITE, NOVA_MICRO, NOVA_PRO = "amazon.nova-lite-v1:0", "amazon.nova-micro-v1:0", "amazon.nova-pro-v1:0"
CLAUDE = "anthropic.claude-3-5-sonnet-20241022-v2:0"
CONTRACT_SCHEMA = json.loads((Path(__file__).with_name("gateway-request.schema.json")).read_text())

BLOCK_CLASSES = {
    "text": ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf,
    "image": ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf1,
    "video": ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf2,
    "document": ChatInferenceRequestMessagesInnerContentOneOfInnerOneOf3,
}
# The official client always sends these two (the gateway's defaults, which we leave out).
OFFICIAL_DEFAULTS = {"temperature": 0.7, "maxTokens": 1024}


def body_of(request: ChatRequest) -> bytes:
    return b"".join(encode_json_body(to_wire(request)))


def official(payload: dict[str, Any]) -> ChatInferenceRequest:
    """The payload through the official client's model classes, block by block (their from_dict drops
    every block of a content array: a trap the contract page names)."""
    messages = []
    for message in payload["messages"]:
        content = message["content"]
        if isinstance(content, list):
            blocks = [
                ChatInferenceRequestMessagesInnerContentOneOfInner(
                    actual_instance=BLOCK_CLASSES[next(iter(block))].from_dict(block)
                )
                for block in content
            ]
            content = ChatInferenceRequestMessagesInnerContent(actual_instance=blocks)
        else:
            content = ChatInferenceRequestMessagesInnerContent(actual_instance=content)
        messages.append(ChatInferenceRequestMessagesInner(role=message["role"], content=content))
    others = {key: value for key, value in payload.items() if key != "messages"}
    if "responseFormat" in others:
        others["responseFormat"] = ChatInferenceRequestResponseFormat.from_dict(others["responseFormat"])
    if "toolConfig" in others:
        others["toolConfig"] = ChatInferenceRequestToolConfig.from_dict(others["toolConfig"])
    return ChatInferenceRequest(messages=messages, **others)


def official_json(request: ChatInferenceRequest) -> dict[str, Any]:
    data = request.to_dict()
    data["messages"] = [
        {
            "role": message.role,
            "content": message.content.actual_instance
            if isinstance(message.content.actual_instance, str)
            else [block.actual_instance.to_dict() for block in message.content.actual_instance],
        }
        for message in request.messages
    ]
    return data


def items(*names: str):
    return [prepare(FileSource(SAMPLES / name)) for name in names]


def queued(message: dict[str, Any]) -> ChatRequest:
    parsed = parse(RequestMessage, message, root="body")
    if parsed.request is not None:
        return parsed.request
    return build_chat_request(
        [], parsed.prompt or "", model_id=parsed.model_id or NOVA_LITE, **parsed.options()
    )


def upload(name: str, model_id: str = NOVA_LITE) -> ChatRequest:
    rules = load_rules()
    item = items(name)[0]
    _, settings = rules.choose(f"incoming/{name}", item.detected.kind)
    prompt = rules.prompt_for(settings, item.detected.kind)
    return build_chat_request([item], prompt, model_id=model_id, **settings.options())


STRUCTURED = {"type": "json", "jsonSchema": {"type": "object", "properties": {"title": {"type": "string"}}}}
WEATHER_TOOL = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Weather for a city",
        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
}

BUILDABLE = {
    **{f"upload {name}": (lambda name=name: upload(name)) for name in SAMPLE_KINDS},
    "upload photo.jpg on Nova Micro": lambda: upload("photo.jpg", NOVA_MICRO),
    "upload report.pdf on Nova Pro": lambda: upload("report.pdf", NOVA_PRO),
    "text upload on Claude": lambda: upload("notes.txt", CLAUDE),
    "several media labelled": lambda: build_chat_request(
        items("photo.jpg", "report.pdf", "clip.mp4"), "Compare them", model_id=NOVA_LITE
    ),
    "queued short form": lambda: queued({"prompt": "hello"}),
    "queued short form with options": lambda: queued(
        {"prompt": "hi", "modelId": NOVA_PRO, "systemPrompt": "Be brief", "temperature": 0, "maxTokens": 50}
    ),
    "queued full form": lambda: queued(
        {
            "request": {
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": [{"text": "and now?"}]},
                ],
                "modelId": NOVA_LITE,
                "topP": 0.9,
                "stopSequences": ["END"],
                "stream": False,
            }
        }
    ),
    "queued full form with a document named like a file": lambda: queued(
        {
            "request": {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "document": {
                                    "format": "pdf",
                                    "name": "Q3_report.v2.pdf",
                                    "source": {"bytes": "JVBERg=="},
                                }
                            },
                            {"text": "Summarise"},
                        ],
                    }
                ],
                "modelId": NOVA_LITE,
            }
        }
    ),
    "queued with an attachment": lambda: with_attachments(
        queued({"prompt": "What is this?"}), items("diagram.png")
    ),
    "tools": lambda: queued(
        {"prompt": "Weather in Paris?", "modelId": NOVA_PRO, "toolConfig": {"tools": [WEATHER_TOOL]}}
    ),
    "auto-executed image generation": lambda: queued(
        {"prompt": "Draw a cat", "modelId": NOVA_PRO, "toolConfig": IMAGE_TOOL_CONFIG}
    ),
    "built-in tool without specs": lambda: queued(
        {
            "prompt": "Draw",
            "modelId": NOVA_PRO,
            "toolConfig": {"autoExecute": True, "allowedTools": ["generate_image"]},
        }
    ),
    "structured output": lambda: queued(
        {"prompt": "Title?", "modelId": NOVA_PRO, "responseFormat": STRUCTURED}
    ),
}


@pytest.mark.parametrize("shape", sorted(BUILDABLE))
def test_every_buildable_request_is_accepted_three_ways(shape):
    body = body_of(BUILDABLE[shape]())
    payload = json.loads(body)

    parse_chat_request(body)  # the emulator: raises RequestRejected if it would refuse
    jsonschema.validate(payload, CONTRACT_SCHEMA)  # the contract page
    sent_by_official_client = official_json(official(payload))
    expected = {**OFFICIAL_DEFAULTS, **payload}
    if "toolConfig" in payload:
        expected["toolConfig"] = {"autoExecute": False, **payload["toolConfig"]}  # its default too
    assert sent_by_official_client == expected  # the same JSON, nothing dropped


def test_we_add_nothing_the_caller_did_not_give():
    payload = json.loads(body_of(queued({"prompt": "hi", "toolConfig": IMAGE_TOOL_CONFIG})))
    assert payload == {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "modelId": NOVA_LITE,
        "toolConfig": IMAGE_TOOL_CONFIG,
    }
    built_in = {"autoExecute": True, "allowedTools": ["generate_image"]}
    assert json.loads(body_of(queued({"prompt": "hi", "toolConfig": built_in})))["toolConfig"] == built_in


def test_a_document_name_the_gateway_would_refuse_is_cleaned_not_refused():
    request = BUILDABLE["queued full form with a document named like a file"]()
    assert request.messages[0].blocks()[0].document.name == "Q3-report-v2"
    named = parse(
        ChatRequest,
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"document": {"format": "pdf", "name": "report.pdf", "source": {"bytes": "JVBERg=="}}}
                    ],
                }
            ],
            "modelId": NOVA_LITE,
        },
    )
    assert named.messages[0].blocks()[0].document.name == "report"


def test_media_go_to_every_nova_model_and_are_refused_for_claude():
    for model in (NOVA_LITE, NOVA_MICRO, NOVA_PRO, "us.amazon.nova-micro-v1:0"):
        parse_chat_request(body_of(upload("photo.jpg", model)))
    with pytest.raises(InvalidRequestError, match="text only"):
        upload("photo.jpg", CLAUDE)


def media_request(**overrides: Any) -> dict[str, Any]:
    image = {"image": {"format": "png", "source": {"bytes": "iVBORw=="}}}
    return {
        "messages": [{"role": "user", "content": [image, {"text": "hi"}]}],
        "modelId": NOVA_LITE,
        **overrides,
    }


def text_request(**overrides: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], "modelId": NOVA_LITE, **overrides}


def with_image_bytes(encoded: str) -> dict[str, Any]:
    request = media_request()
    request["messages"][0]["content"][0]["image"]["source"]["bytes"] = encoded
    return request


# name -> (request, the field both must name: ours dotted, the emulator's with [i][, the emulator's when
# it names another place: NaN is refused when the body is read, media for Claude at the block])
FORBIDDEN = {
    "NaN temperature": (text_request(temperature=math.nan), "temperature", "body"),
    "Infinity topP": (text_request(topP=math.inf), "topP", "body"),
    "NaN inside a JSON schema": (
        text_request(responseFormat={"type": "json", "jsonSchema": {"maximum": math.nan}}),
        "responseFormat.jsonSchema",
        "body",
    ),
    "base64 with a bad character": (with_image_bytes("iVBO*w=="), "messages.0.content.0.image.source.bytes"),
    "base64 of a wrong length": (with_image_bytes("iVBOR"), "messages.0.content.0.image.source.bytes"),
    "empty base64": (with_image_bytes(""), "messages.0.content.0.image.source.bytes"),
    "an empty stop sequence": (text_request(stopSequences=["END", ""]), "stopSequences.1"),
    "five stop sequences": (text_request(stopSequences=list("abcde")), "stopSequences"),
    "an empty jsonSchema": (
        text_request(responseFormat={"type": "json", "jsonSchema": {}}),
        "responseFormat.jsonSchema",
    ),
    "an empty name in allowedTools": (
        text_request(toolConfig={"autoExecute": True, "allowedTools": [""]}),
        "toolConfig.allowedTools",
    ),
    "tools: [] without autoExecute": (text_request(toolConfig={"tools": []}), "toolConfig"),
    "autoExecute without allowedTools": (
        text_request(toolConfig={"tools": [IMAGE_TOOL], "autoExecute": True}),
        "toolConfig",
    ),
    "duplicate tool names": (text_request(toolConfig={"tools": [IMAGE_TOOL, IMAGE_TOOL]}), "toolConfig"),
    "a tool name with a space": (
        text_request(
            toolConfig={"tools": [{"toolSpec": {**WEATHER_TOOL["toolSpec"], "name": "get weather"}}]}
        ),
        "toolConfig.tools.0.toolSpec.name",
    ),
    "role robot": (
        {"messages": [{"role": "robot", "content": "hi"}], "modelId": NOVA_LITE},
        "messages.0.role",
    ),
    "a block of two kinds": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"text": "a", "image": media_request()["messages"][0]["content"][0]["image"]}
                    ],
                }
            ],
            "modelId": NOVA_LITE,
        },
        "messages.0.content.0",
    ),
    "an empty content array": (
        {"messages": [{"role": "user", "content": []}], "modelId": NOVA_LITE},
        "messages.0.content",
    ),
    "no messages": ({"messages": [], "modelId": NOVA_LITE}, "messages"),
    "a blank modelId": (text_request(modelId="  "), "modelId"),
    "maxTokens 0": (text_request(maxTokens=0), "maxTokens"),
    "maxTokens 8193": (text_request(maxTokens=8193), "maxTokens"),
    "temperature 2.5": (text_request(temperature=2.5), "temperature"),
    "topP as text": (text_request(topP="0.5"), "topP"),
    "stream as text": (text_request(stream="yes"), "stream"),
    "media for Claude": (media_request(modelId=CLAUDE), "request", "messages[0].content[0].image"),
    "a bmp image": (
        {
            "messages": [
                {"role": "user", "content": [{"image": {"format": "bmp", "source": {"bytes": "AAAA"}}}]}
            ],
            "modelId": NOVA_LITE,
        },
        "messages.0.content.0.image.format",
    ),
    "responseFormat xml": (
        text_request(responseFormat={"type": "xml", "jsonSchema": {"type": "object"}}),
        "responseFormat.type",
    ),
}


def emulator_field(field: str) -> str:
    """messages.0.content.1 -> messages[0].content[1], as the emulator names places."""
    out = ""
    for part in field.split("."):
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


@pytest.mark.parametrize("case", sorted(FORBIDDEN))
def test_what_the_contract_forbids_both_refuse_at_the_same_place(case):
    request, field, *elsewhere = FORBIDDEN[case]
    with pytest.raises(InvalidRequestError) as ours:
        parse(ChatRequest, request)
    assert ours.value.field.startswith(field), ours.value
    raw = json.dumps(request).encode()  # NaN and Infinity go out as Python writes them
    with pytest.raises(RequestRejected) as theirs:
        parse_chat_request(raw)
    assert theirs.value.status == 400
    their_field = elsewhere[0] if elsewhere else emulator_field(field)
    assert theirs.value.message.startswith(their_field), theirs.value.message
