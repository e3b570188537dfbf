"""Contract models and the request builder: every rule names its field; media go before the prompt."""

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shared.body import encode_json_body
from shared.errors import (
    ContractBreachError,
    InvalidRequestError,
    RequestTooLargeError,
    UnsupportedMediaError,
)
from shared.gateway import GatewayClient, read_response
from shared.messages import RequestMessage
from shared.models import DEFAULT_MAX_REQUEST_BYTES, ChatRequest, ChatResponse, ToolExecution, parse, to_wire
from shared.request_builder import build_chat_request, prepare, with_attachments
from shared.routing import parse_rules
from shared.sources import BytesSource, FileSource
from tests.sample_files import SAMPLE_KINDS, SAMPLES

NOVA = "amazon.nova-lite-v1:0"

EXPECTED = SAMPLE_KINDS


def wire(request) -> dict:
    return json.loads(b"".join(encode_json_body(to_wire(request))))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_sample_becomes_the_right_block(name):
    path = SAMPLES / name
    item = prepare(FileSource(path))
    assert (item.detected.kind, item.detected.format) == EXPECTED[name]
    content = wire(build_chat_request([item], "What is this?", model_id=NOVA))["messages"][0]["content"]
    assert content[-1] == {"text": "What is this?"}
    block = content[0]
    kind = item.detected.kind
    if kind == "text":
        assert path.read_text() in block["text"]
    else:
        assert base64.b64decode(block[kind]["source"]["bytes"]) == path.read_bytes()
        assert block[kind]["format"] == EXPECTED[name][1]
    if kind == "document":
        assert block["document"]["name"] == path.stem


def test_several_media_are_labelled_in_order():
    items = [prepare(FileSource(SAMPLES / n)) for n in ("photo.jpg", "report.pdf", "diagram.png")]
    content = wire(build_chat_request(items, "Compare them", model_id=NOVA))["messages"][0]["content"]
    labels = [b["text"] for b in content if "text" in b]
    assert labels == ["Image 1:", "Document 2:", "Image 3:", "Compare them"]
    assert [next(iter(b)) for b in content] == ["text", "image", "text", "document", "text", "image", "text"]


def test_attachments_go_before_the_text_of_the_last_user_message():
    base = build_chat_request([], "first", model_id=NOVA)
    request = base.model_copy(
        update={"messages": [*base.messages, *build_chat_request([], "second", model_id=NOVA).messages]}
    )
    item = prepare(FileSource(SAMPLES / "diagram.png"), label="the diagram")
    messages = wire(with_attachments(request, [item]))["messages"]
    assert messages[0]["content"] == [{"text": "first"}]
    assert [next(iter(b)) for b in messages[1]["content"]] == ["text", "image", "text"]
    assert messages[1]["content"][0] == {"text": "Image 1 (the diagram):"}


def test_claude_gets_text_only():
    item = prepare(FileSource(SAMPLES / "photo.jpg"))
    with pytest.raises(InvalidRequestError, match="text only"):
        build_chat_request([item], "hi", model_id="anthropic.claude-3-5-sonnet-20241022-v2:0")
    text = prepare(FileSource(SAMPLES / "notes.txt"))
    assert build_chat_request([text], "hi", model_id="anthropic.claude-3-haiku-20240307-v1:0")


@pytest.mark.parametrize(
    ("fields", "field", "rule"),
    [
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stopSequences", "at most 4 items"),
        ({"temperature": 2.5}, "temperature", "less than or equal to 2"),
        ({"max_tokens": 0}, "maxTokens", "greater than or equal to 1"),
        ({"max_tokens": 9000}, "maxTokens", "less than or equal to 8192"),
        ({"top_p": 1.5}, "topP", "less than or equal to 1"),
        ({"tool_config": {"tools": [], "autoExecute": True}}, "toolConfig", "allowedTools is required"),
        (
            {"response_format": {"type": "xml", "jsonSchema": {}}},
            "responseFormat.type",
            "Invalid enum value 'xml'; expected one of 'json'",
        ),
    ],
)
def test_each_rule_is_named(fields, field, rule):
    with pytest.raises(InvalidRequestError) as caught:
        build_chat_request([], "hi", model_id=NOVA, **fields)
    assert caught.value.field == field
    assert rule in caught.value.rule


def test_client_validates_a_raw_request_before_sending():
    client = GatewayClient("http://127.0.0.1:9", "org", lambda: "t")
    bad = {"messages": [{"role": "robot", "content": "hi"}], "modelId": NOVA}
    with pytest.raises(InvalidRequestError) as caught:
        client.chat(bad)
    assert caught.value.field == "messages.0.role"
    with pytest.raises(InvalidRequestError, match="messages"):
        client.chat({"messages": [], "modelId": NOVA})


def test_bad_items_are_rejected_with_what_they_are(tmp_path):
    with pytest.raises(UnsupportedMediaError, match="empty"):
        prepare(BytesSource(b"", name="empty.png"))
    truncated = (SAMPLES / "diagram.png").read_bytes()[:20]
    with pytest.raises(UnsupportedMediaError, match="truncated png"):
        prepare(BytesSource(truncated, name="cut.png"))
    with pytest.raises(UnsupportedMediaError, match="unknown binary"):
        prepare(BytesSource(bytes([0x00, 0x9F, 0x13, 0x37]) * 64, name="blob.bin"))


def test_oversize_is_refused_before_reading():
    class Huge(BytesSource):
        @property
        def size(self):
            return DEFAULT_MAX_REQUEST_BYTES * 3 // 4 + 3  # its base64 alone is over the limit

        def head(self, count):
            raise AssertionError("no byte may be read of an oversize item")

    with pytest.raises(RequestTooLargeError, match=str(DEFAULT_MAX_REQUEST_BYTES)):
        prepare(Huge(b"x", name="big.pdf"))


def test_response_patterns_are_recognised():
    base = {"model": NOVA, "requestId": "r", "usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}}
    tool = {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}
    cases = {
        "text": {"role": "assistant", "content": "hello"},
        "tool_use": {"role": "assistant", "content": "", "toolUse": tool},
        "tool_uses": {"role": "assistant", "content": "", "toolUse": [tool, {**tool, "toolUseId": "t2"}]},
        "auto_executed": {"role": "assistant", "content": "18C", "toolUse": {**tool, "result": {"temp": 18}}},
        "async_execution": {
            "role": "assistant",
            "content": "",
            "toolUse": {**tool, "name": "generate_image", "executionId": "exec_1", "status": "pending"},
        },
    }
    for pattern, message in cases.items():
        response = parse(ChatResponse, {**base, "response": message, "finishReason": "stop"})
        assert response.pattern == pattern
    assert response.pending_executions[0].execution_id == "exec_1"
    assert response.usage.total_tokens == 3


def test_execution_status_model():
    status = parse(
        ToolExecution,
        {
            "executionId": "exec_1",
            "toolName": "generate_image",
            "status": "complete",
            "createdAt": 1,
            "result": {},
        },
    )
    assert status.status == "complete" and status.created_at == 1


FIRST_PARSE_IN_THREADS = """
import threading
from shared.messages import RequestMessage
from shared.models import ChatResponse, parse

def parse_both():
    parse(RequestMessage, {"prompt": "hi", "requestId": "r-1"})
    parse(ChatResponse, {"response": {"role": "assistant", "content": "hello"}})

threads = [threading.Thread(target=parse_both) for _ in range(10)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print("parsed")
"""


@pytest.mark.parametrize("run", range(3))
def test_a_fresh_process_parses_in_parallel_threads_at_once(run):
    # A batch's first messages are parsed in parallel in a fresh Lambda process. msgspec (the models' library
    # before pydantic) crashed the process when two threads built its validators at once; kept as a guard.
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", FIRST_PARSE_IN_THREADS],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "parsed"), done.stderr[-2000:]


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"prompt": "x", "requestId": "r-1\n"}, "requestId"),
        ({"prompt": "x", "attachments": [{"uri": "s3://bucket/key\n"}]}, "attachments.0.uri"),
        (
            {
                "prompt": "x",
                "toolConfig": {"tools": [{"toolSpec": {"name": "t\n", "inputSchema": {"json": {}}}}]},
            },
            "toolConfig.tools.0.toolSpec.name",
        ),
    ],
)
def test_a_pattern_covers_the_whole_value_even_a_final_newline(message, field):
    with pytest.raises(InvalidRequestError) as caught:
        parse(RequestMessage, message)
    assert caught.value.field == field


def test_a_bad_media_format_is_told_the_formats_there_are():
    image = {"image": {"format": "bmp", "source": {"bytes": "AAAA"}}}
    with pytest.raises(InvalidRequestError) as caught:
        parse(ChatRequest, {"messages": [{"role": "user", "content": [image]}], "modelId": NOVA})
    assert caught.value.field == "messages.0.content.0.image.format"
    assert caught.value.rule == "Invalid enum value 'bmp'; expected one of 'gif', 'jpeg', 'png', 'webp'"


def test_a_bad_key_in_a_rule_file_is_named_with_the_keys_there_are():
    with pytest.raises(InvalidRequestError) as caught:
        parse_rules("default:\n  prompts:\n    audio: Transcribe it\n", "rules.yaml")
    assert caught.value.field == "rules.yaml"
    assert (
        "default.prompts: Invalid enum value 'audio' (as a key); expected one of 'document'"
        in caught.value.rule
    )


def test_an_answer_is_read_by_what_its_values_say():
    # Billed work: a whole-number float for a token count, or a number as text, does not fail the request.
    answer = {
        "response": {"content": "hi"},
        "usage": {"inputTokens": 3.0, "outputTokens": "4", "totalTokens": 7},
    }
    response = read_response("POST", "/chat", httpx.Response(200, json=answer), ChatResponse)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (3, 4)
    answer["usage"]["inputTokens"] = 3.5
    with pytest.raises(ContractBreachError, match=r"usage\.inputTokens: .*fractional part"):
        read_response("POST", "/chat", httpx.Response(200, json=answer), ChatResponse)


def test_the_wire_form_leaves_out_unset_fields_but_keeps_nulls_inside_free_json():
    tool = {"toolSpec": {"name": "lookup", "inputSchema": {"json": {"default": None}}}}
    request = parse(
        ChatRequest,
        {"messages": [{"role": "user", "content": "hi"}], "modelId": NOVA, "toolConfig": {"tools": [tool]}},
    )
    assert to_wire(request) == {
        "messages": [{"role": "user", "content": "hi"}],
        "modelId": NOVA,
        "toolConfig": {"tools": [tool]},
    }
    usage = parse(ChatResponse, {"response": {"content": "x"}, "usage": {"inputTokens": 2}}).usage
    assert to_wire(usage) == {"inputTokens": 2, "outputTokens": 0, "totalTokens": 0}


@pytest.mark.parametrize("execution_id", ["../../tools", "exec_1/result", "exec 1", "exec_1?a=b", ""])
def test_an_execution_id_that_could_escape_a_url_or_key_breaks_the_contract(execution_id):
    answer = {
        "response": {
            "content": "",
            "toolUse": {"name": "generate_image", "executionId": execution_id, "status": "pending"},
        }
    }
    with pytest.raises(ContractBreachError, match=r"response\.toolUse\.executionId") as caught:
        read_response("POST", "/chat", httpx.Response(200, json=answer), ChatResponse)
    assert caught.value.raw == answer


def test_media_stay_streamed_through_a_rebuild():
    item = prepare(FileSource(SAMPLES / "photo.jpg"))
    request = with_attachments(build_chat_request([], "first", model_id=NOVA), [item])
    again = with_attachments(request, [item])
    sources = [m.source.bytes for m in again.media()]
    assert all(not isinstance(source, str) for source in sources)
    assert (
        wire(again)["messages"][0]["content"][1]["image"]["source"]["bytes"]
        == base64.b64encode((SAMPLES / "photo.jpg").read_bytes()).decode()
    )
