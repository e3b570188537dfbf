"""The gateway emulator, exercised over real HTTP the way the project's client talks to the gateway."""

import base64
import hashlib
import http.client
import io
import json
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from devtools.emulator import EmulatorConfig, GatewayEmulator
from devtools.emulator.__main__ import parse_args
from tests.plugins.gateway import EMULATOR_TOKEN, FakeClock

MIB = 1024 * 1024
ORGANISATION = "test-org"
NOVA = "amazon.nova-lite-v1:0"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO_ROOT = Path(__file__).resolve().parents[1]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def short_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def api_url(emulator: GatewayEmulator, organisation: str = ORGANISATION) -> str:
    return f"{emulator.base_url}/api/v3/organizations/{organisation}/ai"


@pytest.fixture
def client(emulator: GatewayEmulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {EMULATOR_TOKEN}"}
    with httpx.Client(base_url=api_url(emulator), headers=headers, timeout=10, verify=False) as http:
        yield http


@pytest.fixture
def anonymous() -> Iterator[httpx.Client]:
    """A client with no Authorization header (verify=False: loading CA certificates costs 0.2 s a client)."""
    with httpx.Client(timeout=10, verify=False) as http:
        yield http


def chat_body(text: str = "Hello there", **fields: Any) -> dict[str, Any]:
    return {"modelId": NOVA, "messages": [{"role": "user", "content": text}], **fields}


def image_block(data: bytes, image_format: str = "png") -> dict[str, Any]:
    return {"image": {"format": image_format, "source": {"bytes": b64(data)}}}


def png_bytes(colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def tool(name: str, required: dict[str, str]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {key: {"type": kind} for key, kind in required.items()},
        "required": list(required),
    }
    return {"toolSpec": {"name": name, "description": f"{name} tool", "inputSchema": {"json": schema}}}


def start_image(client: httpx.Client) -> str:
    config = {"autoExecute": True, "allowedTools": ["generate_image"]}
    response = client.post("/chat", json=chat_body("a red bicycle", toolConfig=config))
    assert response.status_code == 200, response.text
    return response.json()["response"]["toolUse"]["executionId"]


# Response patterns


def test_text_only_reply_echoes_the_prompt_and_counts_tokens(client: httpx.Client) -> None:
    response = client.post("/chat", json=chat_body("Hello there", systemPrompt="Be brief."))

    assert response.status_code == 200
    body = response.json()
    assert body["response"] == {"role": "assistant", "content": "Echo: Hello there"}
    assert body["model"] == NOVA
    assert re.fullmatch(r"req-[0-9a-f]+", body["requestId"])
    assert body["finishReason"] == "stop"
    input_tokens = math.ceil(len("Hello there" + "Be brief.") / 4)
    output_tokens = math.ceil(len("Echo: Hello there") / 4)
    assert body["usage"] == {
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "totalTokens": input_tokens + output_tokens,
    }


def test_media_reply_proves_each_item_was_decoded(client: httpx.Client) -> None:
    picture, clip, report = png_bytes(), b"\x00\x00\x00\x18ftypmp42" * 100, b"%PDF-1.7 report" * 50
    prompt = "Image 1: the chart.\nDescribe everything. " + "x" * 300
    content = [
        image_block(picture),
        {"video": {"format": "mp4", "source": {"bytes": b64(clip)}}},
        {"document": {"format": "pdf", "name": "Q3 report", "source": {"bytes": b64(report)}}},
        {"text": prompt},
    ]
    response = client.post(
        "/chat", json={"modelId": NOVA, "messages": [{"role": "user", "content": content}]}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["response"]["content"].split("\n") == [
        f"image 1: png, {len(picture)} bytes, sha256 {short_sha(picture)}",
        f"video 1: mp4, {len(clip)} bytes, sha256 {short_sha(clip)}",
        f"document 1: pdf, {len(report)} bytes, sha256 {short_sha(report)}, name Q3 report",
        "Echo: " + prompt[:200].replace("\n", " "),
    ]
    media_tokens = sum(math.ceil(len(item) / 750) for item in (picture, clip, report))
    assert body["usage"]["inputTokens"] == math.ceil(len(prompt) / 4) + media_tokens


def test_media_items_are_numbered_per_kind(client: httpx.Client) -> None:
    first, second = png_bytes("red"), png_bytes("blue")
    content = [image_block(first), image_block(second, "png"), {"text": "Compare them"}]
    response = client.post(
        "/chat", json={"modelId": NOVA, "messages": [{"role": "user", "content": content}]}
    )

    lines = response.json()["response"]["content"].split("\n")
    assert lines[0].startswith(f"image 1: png, {len(first)} bytes, sha256 {short_sha(first)}")
    assert lines[1].startswith(f"image 2: png, {len(second)} bytes, sha256 {short_sha(second)}")


def test_json_response_format_gives_json_matching_a_simple_schema(client: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "altText": {"type": "string"},
            "colour": {"type": "string", "enum": ["red", "blue"]},
            "count": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["altText", "colour", "count"],
    }
    body = chat_body("Describe the picture", responseFormat={"type": "json", "jsonSchema": schema})
    response = client.post("/chat", json=body)

    assert response.status_code == 200
    answer = json.loads(response.json()["response"]["content"])
    assert answer == {
        "altText": "Echo: Describe the picture",
        "colour": "red",
        "count": 1,
        "tags": ["Echo: Describe the picture"],
    }


def test_tiny_max_tokens_cuts_the_content_with_finish_reason_length(client: httpx.Client) -> None:
    response = client.post("/chat", json=chat_body("A long question " * 10, maxTokens=2))

    body = response.json()
    assert body["finishReason"] == "length"
    assert body["response"]["content"] == "Echo: A "
    assert body["usage"]["outputTokens"] == 2


def test_one_requested_tool_is_an_object(client: httpx.Client) -> None:
    config = {"tools": [tool("lookup_stock", {"ticker": "string", "days": "integer"})]}
    response = client.post("/chat", json=chat_body("Price of ACME?", toolConfig=config))

    body = response.json()
    assert body["finishReason"] == "tool_use"
    use = body["response"]["toolUse"]
    assert set(use) == {"toolUseId", "name", "input"}
    assert re.fullmatch(r"tooluse_[0-9a-f]+", use["toolUseId"])
    assert use["name"] == "lookup_stock"
    assert use["input"] == {"ticker": "Price of ACME?", "days": 0}


def test_several_requested_tools_are_an_array(client: httpx.Client) -> None:
    config = {
        "tools": [tool("first", {"q": "string"}), tool("second", {"flag": "boolean"})],
        "autoExecute": False,
    }
    response = client.post("/chat", json=chat_body("Do both", toolConfig=config))

    body = response.json()
    assert body["finishReason"] == "tool_use"
    uses = body["response"]["toolUse"]
    assert [(use["name"], use["input"]) for use in uses] == [
        ("first", {"q": "Do both"}),
        ("second", {"flag": True}),
    ]
    assert len({use["toolUseId"] for use in uses}) == 2


def test_auto_executed_sync_tool_carries_its_result(client: httpx.Client) -> None:
    config = {"autoExecute": True, "allowedTools": ["calculate"]}
    response = client.post("/chat", json=chat_body("What is 6 times 7?", toolConfig=config))

    body = response.json()
    assert body["finishReason"] == "stop"
    use = body["response"]["toolUse"]
    assert use["name"] == "calculate"
    assert use["input"] == {"expression": "What is 6 times 7?"}
    assert use["result"] == {"result": 42}
    assert body["response"]["content"].startswith('The calculate tool returned {"result": 42}.')


def test_auto_executed_image_tool_returns_a_pending_execution(client: httpx.Client) -> None:
    config = {"autoExecute": True, "allowedTools": ["generate_image"]}
    response = client.post("/chat", json=chat_body("a red bicycle", toolConfig=config))

    body = response.json()
    assert body["finishReason"] == "tool_use"
    assert body["response"]["content"].startswith("Generating the image.")
    use = body["response"]["toolUse"]
    assert use["name"] == "generate_image"
    assert use["input"] == {"prompt": "a red bicycle"}
    assert use["status"] == "pending"
    assert re.fullmatch(r"exec_[0-9a-f]{12}", use["executionId"])


def test_several_images_per_request_give_an_array_of_executions(
    emulator: GatewayEmulator, client: httpx.Client
) -> None:
    emulator.config.images_per_request = 3
    config = {"autoExecute": True, "allowedTools": ["generate_image"]}
    uses = client.post("/chat", json=chat_body("three cats", toolConfig=config)).json()["response"]["toolUse"]

    assert isinstance(uses, list)
    assert len({use["executionId"] for use in uses}) == 3
    assert sorted(emulator.execution_ids()) == sorted(use["executionId"] for use in uses)


# Authentication and validation


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {EMULATOR_TOKEN}"}],
    ids=["missing", "wrong-token", "not-bearer"],
)
def test_requests_without_the_right_bearer_token_get_401(
    anonymous: httpx.Client, emulator: GatewayEmulator, headers: dict
) -> None:
    chat = anonymous.post(f"{api_url(emulator)}/chat", json=chat_body(), headers=headers)
    status = anonymous.get(f"{api_url(emulator)}/tools/executions/exec_000000000000", headers=headers)

    for response in (chat, status):
        assert response.status_code == 401
        assert "error" in response.json()


def test_no_configured_token_accepts_any_bearer(anonymous: httpx.Client, emulator: GatewayEmulator) -> None:
    emulator.config.token = None
    response = anonymous.post(
        f"{api_url(emulator)}/chat", json=chat_body(), headers={"Authorization": "Bearer x"}
    )

    assert response.status_code == 200


def test_a_configured_organisation_refuses_others_with_403(
    emulator: GatewayEmulator, client: httpx.Client
) -> None:
    emulator.config.organization = "someone-else"

    assert client.post("/chat", json=chat_body()).status_code == 403


def valid_media_message(block: dict[str, Any]) -> dict[str, Any]:
    return {"modelId": NOVA, "messages": [{"role": "user", "content": [{"text": "see"}, block]}]}


def without(field: str) -> dict[str, Any]:
    body = chat_body()
    del body[field]
    return body


PNG_B64 = b64(b"not really a png but fine")
VALIDATION_CASES = [
    ("missing-model", without("modelId"), "modelId: required"),
    ("missing-messages", without("messages"), "messages: must be a non-empty array"),
    ("empty-messages", chat_body(messages=[]), "messages: must be a non-empty array"),
    (
        "bad-role",
        chat_body(messages=[{"role": "robot", "content": "hi"}]),
        "messages[0].role: must be one of user, assistant, system",
    ),
    (
        "content-number",
        chat_body(messages=[{"role": "user", "content": 5}]),
        "messages[0].content: must be a string or an array of content blocks",
    ),
    (
        "two-kinds-in-a-block",
        chat_body(messages=[{"role": "user", "content": [{"text": "a", "image": {}}]}]),
        "messages[0].content[0]: must have exactly one of text, image, video, document",
    ),
    (
        "unknown-block",
        chat_body(messages=[{"role": "user", "content": [{"audio": {}}]}]),
        "messages[0].content[0]: must have exactly one of text, image, video, document",
    ),
    (
        "image-format",
        valid_media_message({"image": {"format": "bmp", "source": {"bytes": PNG_B64}}}),
        "messages[0].content[1].image.format: must be one of png, jpeg, gif, webp",
    ),
    (
        "video-format",
        valid_media_message({"video": {"format": "avi", "source": {"bytes": PNG_B64}}}),
        "messages[0].content[1].video.format: must be one of mp4, mov, mkv, webm",
    ),
    (
        "document-format",
        valid_media_message({"document": {"format": "txt", "name": "n", "source": {"bytes": PNG_B64}}}),
        "messages[0].content[1].document.format: must be one of pdf, csv, docx, xlsx",
    ),
    (
        "document-name",
        valid_media_message({"document": {"format": "pdf", "source": {"bytes": PNG_B64}}}),
        "messages[0].content[1].document.name: required",
    ),
    (
        "bad-base64",
        valid_media_message({"image": {"format": "png", "source": {"bytes": "abc$"}}}),
        "messages[0].content[1].image.source.bytes: invalid base64",
    ),
    (
        "base64-length",
        valid_media_message({"image": {"format": "png", "source": {"bytes": "abcde"}}}),
        "messages[0].content[1].image.source.bytes: invalid base64",
    ),
    ("temperature", chat_body(temperature=2.5), "temperature: must be a number from 0 to 2"),
    ("max-tokens-low", chat_body(maxTokens=0), "maxTokens: must be an integer from 1 to 8192"),
    ("max-tokens-high", chat_body(maxTokens=8193), "maxTokens: must be an integer from 1 to 8192"),
    ("top-p", chat_body(topP=1.5), "topP: must be a number from 0 to 1"),
    ("stop-sequences", chat_body(stopSequences=["a", "b", "c", "d", "e"]), "stopSequences: at most 4"),
    (
        "response-format-type",
        chat_body(responseFormat={"type": "text", "jsonSchema": {"type": "object"}}),
        'responseFormat.type: must be "json"',
    ),
    (
        "response-format-schema",
        chat_body(responseFormat={"type": "json"}),
        "responseFormat.jsonSchema: must be a non-empty JSON Schema object",
    ),
    (
        "auto-execute-without-allowed-tools",
        chat_body(toolConfig={"autoExecute": True, "tools": [tool("t", {"a": "string"})]}),
        "toolConfig.allowedTools: required when autoExecute is true",
    ),
    (
        "document-name-with-a-dot",
        valid_media_message(
            {"document": {"format": "pdf", "name": "report.pdf", "source": {"bytes": b64(b"%PDF-1.4")}}}
        ),
        "messages[0].content[1].document.name: may hold only letters, digits, single spaces",
    ),
    (
        "media-to-claude",
        valid_media_message(image_block(b"png")) | {"modelId": "anthropic.claude-3-5-sonnet-20241022-v2:0"},
        "messages[0].content[1].image: model anthropic.claude-3-5-sonnet-20241022-v2:0 takes text only",
    ),
    (
        "document-name-with-a-dot",
        valid_media_message(
            {"document": {"format": "pdf", "name": "report.pdf", "source": {"bytes": b64(b"%PDF-1.4")}}}
        ),
        "messages[0].content[1].document.name: may hold only letters, digits, single spaces",
    ),
    (
        "media-to-claude",
        valid_media_message(image_block(b"png")) | {"modelId": "anthropic.claude-3-haiku-20240307-v1:0"},
        "messages[0].content[1].image: model anthropic.claude-3-haiku-20240307-v1:0 takes text only",
    ),
]


@pytest.mark.parametrize(
    ("payload", "message"), [case[1:] for case in VALIDATION_CASES], ids=[c[0] for c in VALIDATION_CASES]
)
def test_invalid_requests_get_400_naming_the_field(client: httpx.Client, payload: dict, message: str) -> None:
    response = client.post("/chat", json=payload)

    assert response.status_code == 400
    assert response.json()["error"].startswith(message)


def test_invalid_json_gets_400(client: httpx.Client) -> None:
    response = client.post(
        "/chat", content=b'{"modelId": "x", ', headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"].startswith("body: invalid JSON")


def test_text_to_claude_is_accepted(client: httpx.Client) -> None:
    response = client.post("/chat", json=chat_body(modelId="anthropic.claude-3-haiku-20240307-v1:0"))

    assert response.status_code == 200


# Size limits: bodies are built as bytes directly, since json.dumps of 35 MB would double the work.


def raw_chat_body(*encoded_items: bytes) -> bytes:
    blocks = [b'{"image": {"format": "png", "source": {"bytes": "' + item + b'"}}}' for item in encoded_items]
    content = b"[" + b", ".join([*blocks, b'{"text": "describe"}']) + b"]"
    return (
        b'{"modelId": "' + NOVA.encode() + b'", "messages": [{"role": "user", "content": ' + content + b"}]}"
    )


def test_a_body_of_exactly_the_payload_limit_is_accepted(client: httpx.Client) -> None:
    # The limit is the whole JSON body, base64 included (25,000,000 bytes): media of about 18.7 MB fill it.
    overhead = len(raw_chat_body(b""))
    data = bytes((25_000_000 - overhead) // 4 * 3)
    body = raw_chat_body(base64.b64encode(data))
    assert len(body) <= 25_000_000

    response = client.post("/chat", content=body)
    assert response.status_code == 200, response.text[:200]
    assert response.json()["response"]["content"].startswith(
        f"image 1: png, {len(data)} bytes, sha256 {short_sha(data)}"
    )


def test_a_body_over_the_payload_limit_gets_413(client: httpx.Client) -> None:
    body = raw_chat_body(base64.b64encode(bytes(18_750_000)))  # 25,000,000 bytes of base64 alone
    response = client.post("/chat", content=body)

    assert response.status_code == 413
    assert response.json()["error"] == f"body: {len(body)} bytes exceeds the 25000000-byte limit"


def test_media_for_nova_micro_is_accepted(client: httpx.Client) -> None:
    # The reference: "Amazon Nova Lite, Micro, Pro (all support multimodal)".
    payload = valid_media_message(image_block(b"png")) | {"modelId": "amazon.nova-micro-v1:0"}
    assert client.post("/chat", json=payload).status_code == 200


def test_body_over_the_configured_maximum_gets_413(emulator: GatewayEmulator, client: httpx.Client) -> None:
    emulator.config.max_body_bytes = 1000
    response = client.post("/chat", json=chat_body("x" * 2000))

    assert response.status_code == 413
    assert "exceeds the 1000-byte limit" in response.json()["error"]
    assert client.post("/chat", json=chat_body("small")).status_code == 200  # the client recovers


def test_chunked_request_bodies_are_read(client: httpx.Client) -> None:
    encoded = json.dumps(chat_body("sent in chunks")).encode()
    pieces = iter([encoded[:10], encoded[10:]])
    response = client.post("/chat", content=pieces)  # an iterator makes httpx use chunked encoding

    assert response.json()["response"]["content"] == "Echo: sent in chunks"


# Async executions


def test_execution_moves_from_pending_to_running_to_complete(
    emulator: GatewayEmulator, client: httpx.Client
) -> None:
    clock = FakeClock()
    emulator.config.clock = clock
    emulator.config.execution_pending_seconds = 1.0
    emulator.config.execution_seconds = 12.0
    execution_id = start_image(client)
    created = clock.now

    def status() -> dict[str, Any]:
        response = client.get(f"/tools/executions/{execution_id}")
        assert response.status_code == 200
        return response.json()

    assert status() == {
        "executionId": execution_id,
        "toolName": "generate_image",
        "status": "pending",
        "createdAt": created,
    }
    clock.now = created + 1.0
    assert status() == {
        "executionId": execution_id,
        "toolName": "generate_image",
        "status": "running",
        "createdAt": created,
        "startedAt": created + 1.0,
    }
    clock.now = created + 11.9
    assert status()["status"] == "running"
    clock.now = created + 12.0
    done = status()
    assert (done["status"], done["completedAt"], done["duration"]) == ("complete", created + 12.0, 11.0)
    assert "error" not in done
    assert done["result"]["images"][0].startswith("data:image/png;base64,")
    assert re.fullmatch(
        rf"{re.escape(emulator.base_url)}/_files/{execution_id}/0\.png\?X-Amz-Date=\d{{8}}T\d{{6}}Z"
        r"&X-Amz-Expires=3600&X-Amz-Signature=[0-9a-f]{64}",
        done["result"]["s3Urls"][0],
    )


def test_execution_completes_in_real_time(emulator: GatewayEmulator, client: httpx.Client) -> None:
    # Windows wide enough that a slow machine still sees each state (the exact states: the FakeClock test).
    emulator.config.execution_pending_seconds = 0.5
    emulator.config.execution_seconds = 1.0
    execution_id = start_image(client)

    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not seen or seen[-1] != "complete"):
        seen.append(client.get(f"/tools/executions/{execution_id}").json()["status"])
        time.sleep(0.02)

    assert seen[0] == "pending"
    assert "running" in seen
    assert seen[-1] == "complete"


def test_failed_execution_carries_an_error_and_no_result(
    emulator: GatewayEmulator, client: httpx.Client
) -> None:
    emulator.config.execution_seconds = 0
    emulator.config.execution_outcome = "failed"
    emulator.config.execution_failure_reason = "content policy"
    execution_id = start_image(client)

    body = client.get(f"/tools/executions/{execution_id}").json()
    assert body["status"] == "failed"
    assert body["error"] == "image generation failed: content policy"
    assert "result" not in body


def test_unknown_expired_or_foreign_executions_get_404(
    anonymous: httpx.Client, emulator: GatewayEmulator, client: httpx.Client
) -> None:
    execution_id = start_image(client)
    foreign = anonymous.get(
        f"{api_url(emulator, 'other-org')}/tools/executions/{execution_id}", headers=client.headers
    )
    unknown = client.get("/tools/executions/exec_0123456789ab")
    assert emulator.expire(execution_id) is True
    expired = client.get(f"/tools/executions/{execution_id}")

    for response, wanted_id in (
        (foreign, execution_id),
        (unknown, "exec_0123456789ab"),
        (expired, execution_id),
    ):
        assert response.status_code == 404
        assert response.json() == {"error": "Execution not found or expired", "executionId": wanted_id}


def completed_result(emulator: GatewayEmulator, client: httpx.Client) -> dict[str, Any]:
    emulator.config.execution_seconds = 0
    execution_id = start_image(client)
    return client.get(f"/tools/executions/{execution_id}").json()["result"]


def test_signed_url_downloads_the_same_png_without_a_bearer_token(
    anonymous: httpx.Client, emulator: GatewayEmulator, client: httpx.Client
) -> None:
    result = completed_result(emulator, client)
    download = anonymous.get(result["s3Urls"][0])  # no Authorization header, as for a real presigned URL

    assert download.status_code == 200
    assert download.headers["Content-Type"] == "image/png"
    assert download.content.startswith(PNG_SIGNATURE)
    assert download.content == base64.b64decode(result["images"][0].removeprefix("data:image/png;base64,"))
    with Image.open(io.BytesIO(download.content)) as image:
        assert (image.format, image.size) == ("PNG", (64, 64))
    assert emulator.calls[-1].had_authorization is False


def test_signed_url_needs_a_valid_unexpired_signature(
    anonymous: httpx.Client, emulator: GatewayEmulator, client: httpx.Client
) -> None:
    clock = FakeClock()
    emulator.config.clock = clock
    url = completed_result(emulator, client)["s3Urls"][0]
    unsigned = url.split("?")[0]
    tampered = url[:-4] + ("0000" if not url.endswith("0000") else "1111")

    assert anonymous.get(unsigned).status_code == 403
    assert anonymous.get(tampered).status_code == 403
    clock.now += 3601
    expired = anonymous.get(url)
    assert expired.status_code == 403
    assert b"request has expired" in expired.content


def test_each_execution_gets_its_own_png(emulator: GatewayEmulator, client: httpx.Client) -> None:
    first = completed_result(emulator, client)["images"][0]
    second = completed_result(emulator, client)["images"][0]

    assert first != second


# Faults


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        ("429", 429, "application/json"),
        ("500", 500, "application/json"),
        ("502", 502, "text/html"),
        ("503", 503, "application/json"),
        ("504", 504, "text/html"),
        ("400", 400, "application/json"),
        ("403", 403, "application/json"),
    ],
)
def test_fail_next_answers_the_next_chat_with_that_status(
    emulator: GatewayEmulator, client: httpx.Client, kind: str, status: int, content_type: str
) -> None:
    emulator.fail_next(kind)
    faulty = client.post("/chat", json=chat_body())
    healthy = client.post("/chat", json=chat_body())

    assert faulty.status_code == status
    assert faulty.headers["Content-Type"] == content_type
    assert healthy.status_code == 200
    assert [(call.status, call.fault) for call in emulator.calls] == [(status, kind), (200, None)]


def test_429_and_503_carry_retry_after(emulator: GatewayEmulator, client: httpx.Client) -> None:
    emulator.config.retry_after_seconds = 7
    emulator.fail_next("429")
    emulator.fail_next("503")

    assert client.post("/chat", json=chat_body()).headers["Retry-After"] == "7"
    assert client.post("/chat", json=chat_body()).headers["Retry-After"] == "7"


def test_500_on_chat_uses_the_documented_message(emulator: GatewayEmulator, client: httpx.Client) -> None:
    emulator.fail_next("500")

    assert client.post("/chat", json=chat_body()).json() == {"error": "failed to perform chat inference"}


def test_truncated_reply_is_half_the_json_with_a_matching_length(
    emulator: GatewayEmulator, client: httpx.Client
) -> None:
    emulator.fail_next("truncated")
    response = client.post("/chat", json=chat_body())

    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    assert emulator.successful_chats_by_correlation_id() == {}


def test_timeout_fault_stays_silent_until_the_client_gives_up(
    emulator: GatewayEmulator, client: httpx.Client
) -> None:
    emulator.config.timeout_hold_seconds = 2
    emulator.fail_next("timeout")
    started = time.monotonic()

    with pytest.raises(httpx.ReadTimeout):
        client.post("/chat", json=chat_body(), timeout=0.3)

    assert time.monotonic() - started < 1.5
    assert (emulator.calls[0].status, emulator.calls[0].fault) == (None, "timeout")
    assert client.post("/chat", json=chat_body()).status_code == 200


def test_fail_next_counts_and_targets_a_path(emulator: GatewayEmulator, client: httpx.Client) -> None:
    execution_id = start_image(client)
    emulator.fail_next("503", count=2, path="executions")

    statuses = [client.get(f"/tools/executions/{execution_id}").status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert client.post("/chat", json=chat_body()).status_code == 200


def test_fail_next_rejects_unknown_kinds(emulator: GatewayEmulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        emulator.fail_next("418")


def fault_sequence(emulator: GatewayEmulator, client: httpx.Client, count: int = 30) -> list[int]:
    return [client.post("/chat", json=chat_body()).status_code for _ in range(count)]


def test_fault_rates_are_reproducible_with_a_seed(emulator: GatewayEmulator, client: httpx.Client) -> None:
    emulator.config.rate_429 = 0.3
    emulator.config.rate_500 = 0.2
    emulator.config.rate_truncated_json = 0.1
    emulator.config.seed = 7
    first = fault_sequence(emulator, client)
    faults = [call.fault for call in emulator.calls]
    emulator.reset()
    second = fault_sequence(emulator, client)
    emulator.config.seed = 8
    third = fault_sequence(emulator, client)

    assert first == second
    assert first != third
    assert {429, 500, 200} <= set(first)
    assert faults.count("429") == first.count(429)
    assert [call.fault for call in emulator.calls][:30] == faults


def test_fault_paths_limit_where_rates_apply(emulator: GatewayEmulator, client: httpx.Client) -> None:
    execution_id = start_image(client)
    emulator.config.rate_500 = 1.0
    emulator.config.fault_paths = ("executions",)

    assert client.post("/chat", json=chat_body()).status_code == 200
    assert client.get(f"/tools/executions/{execution_id}").status_code == 500


def test_latency_delays_chat_and_execution_answers(emulator: GatewayEmulator, client: httpx.Client) -> None:
    execution_id = start_image(client)
    emulator.config.latency_ms = 250

    for request in (
        lambda: client.post("/chat", json=chat_body()),
        lambda: client.get(f"/tools/executions/{execution_id}"),
    ):
        started = time.monotonic()
        assert request().status_code == 200
        assert time.monotonic() - started >= 0.24  # Event.wait may wake a hair early


# Call log, concurrency, connections


def test_successful_chats_are_counted_per_correlation_id(
    emulator: GatewayEmulator, client: httpx.Client
) -> None:
    emulator.fail_next("429")
    for correlation_id in ("job-1", "job-1", "job-2"):
        client.post("/chat", json=chat_body(), headers={"X-Correlation-Id": correlation_id})
    client.post("/chat", json=chat_body())  # no correlation id: not counted

    assert emulator.successful_chats_by_correlation_id() == {"job-1": 1, "job-2": 1}
    assert [call.correlation_id for call in emulator.calls] == ["job-1", "job-1", "job-2", None]


def test_requests_are_served_concurrently(anonymous: httpx.Client, emulator: GatewayEmulator) -> None:
    emulator.config.latency_ms = 300
    headers = {"Authorization": f"Bearer {EMULATOR_TOKEN}"}

    def one(index: int) -> int:
        return anonymous.post(
            f"{api_url(emulator)}/chat", json=chat_body(f"n{index}"), headers=headers
        ).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, range(8)))

    assert statuses == [200] * 8
    assert time.monotonic() - started < 1.5  # one after another would take 2.4 s


def test_keep_alive_serves_several_requests_on_one_connection(emulator: GatewayEmulator) -> None:
    host, port = emulator.base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    path = f"/api/v3/organizations/{ORGANISATION}/ai/chat"
    headers = {"Authorization": f"Bearer {EMULATOR_TOKEN}", "Content-Type": "application/json"}
    try:
        for text in ("one", "two", "three"):
            connection.request("POST", path, body=json.dumps(chat_body(text)), headers=headers)
            response = connection.getresponse()
            assert json.loads(response.read())["response"]["content"] == f"Echo: {text}"
            assert response.getheader("Connection") != "close"
    finally:
        connection.close()


def test_unknown_paths_and_methods(
    anonymous: httpx.Client, emulator: GatewayEmulator, client: httpx.Client
) -> None:
    assert client.get("/nothing-here").status_code == 404
    wrong_spelling = f"{emulator.base_url}/api/v3/organisations/{ORGANISATION}/ai/chat"
    assert anonymous.post(wrong_spelling, json=chat_body(), headers=client.headers).status_code == 404
    wrong_method = client.get("/chat")
    assert (wrong_method.status_code, wrong_method.headers["Allow"]) == (405, "POST")


def test_the_token_and_media_never_reach_the_log(
    emulator: GatewayEmulator, client: httpx.Client, capfd: pytest.CaptureFixture[str]
) -> None:
    emulator.config.quiet = False
    marker = b"MEDIA-MARKER-" * 10
    content = [image_block(marker), {"text": "look"}]
    client.post("/chat", json={"modelId": NOVA, "messages": [{"role": "user", "content": content}]})

    logged = capfd.readouterr().err
    assert "POST /api/v3/organizations/test-org/ai/chat" in logged
    assert EMULATOR_TOKEN not in logged
    assert b64(marker)[:20] not in logged
    assert EMULATOR_TOKEN not in repr(emulator.calls)


def test_stop_does_not_wait_for_held_connections(anonymous: httpx.Client) -> None:
    emulator = GatewayEmulator(EmulatorConfig(timeout_hold_seconds=30))
    emulator.start()
    emulator.fail_next("timeout")
    outcome: list[type[BaseException]] = []

    def held_request() -> None:
        with pytest.raises(httpx.TransportError) as raised:
            anonymous.post(
                f"{api_url(emulator)}/chat", json=chat_body(), headers={"Authorization": "Bearer x"}
            )
        outcome.append(raised.type)

    thread = threading.Thread(target=held_request)
    thread.start()
    try:
        while not emulator.calls:
            time.sleep(0.01)
        started = time.monotonic()
    finally:
        emulator.stop()
    thread.join(timeout=5)

    assert time.monotonic() - started < 1.0
    assert outcome == [httpx.RemoteProtocolError]  # closed without an answer


def test_reset_clears_calls_executions_and_forced_faults(
    emulator: GatewayEmulator, client: httpx.Client
) -> None:
    start_image(client)
    emulator.fail_next("500")
    emulator.reset()

    assert emulator.calls == []
    assert emulator.execution_ids() == []
    assert client.post("/chat", json=chat_body()).status_code == 200


# Command line


def test_cli_flags_map_to_config() -> None:
    flags = "--port 9000 --token T --latency-ms 5 --fault-rate-429 0.25 --fault-paths chat"
    config = parse_args([*flags.split(), "--execution-seconds", "3", "--images-per-request", "2"])

    assert (config.port, config.token, config.latency_ms, config.rate_429) == (9000, "T", 5.0, 0.25)
    assert (config.fault_paths, config.execution_seconds, config.images_per_request) == (("chat",), 3.0, 2)


def test_cli_prints_the_base_url_and_serves_until_terminated(anonymous: httpx.Client) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.emulator", "--port", "0", "--token", "T", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        base_url = process.stdout.readline().strip() if process.stdout else ""
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        response = anonymous.post(
            f"{base_url}/api/v3/organizations/o/ai/chat",
            json=chat_body("cli"),
            headers={"Authorization": "Bearer T"},
        )
        assert response.json()["response"]["content"] == "Echo: cli"
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
