"""What the gateway answers is kept and read as it is meant, and a request's billable calls are bounded.

On the deployed template in the embedded AWS, with the emulator scripting answers the real gateway may give.
The pipeline fixture sets GatewayMaxAttempts to 2 and MaxReceiveCount to 3.
"""

from __future__ import annotations

from tests.plugins.pipeline import Pipeline, emulator_gateway, pipeline_parameters
from tests.sample_files import IMAGE_TOOL_CONFIG, SAMPLES

NOVA_PRO = "amazon.nova-pro-v1:0"


def chat_calls(pipeline: Pipeline, request_id: str) -> list:
    return [c for c in pipeline.emulator.calls if c.kind == "chat" and c.correlation_id == request_id]


def test_a_tool_that_already_failed_in_the_answer_fails_the_request(pipeline: Pipeline):
    answer = {
        "response": {
            "role": "assistant",
            "content": "I could not draw it.",
            "toolUse": {
                "toolUseId": "t1",
                "name": "generate_image",
                "input": {"prompt": "a cat"},
                "executionId": "exec_gone1",
                "status": "failed",
                "error": "content policy: the prompt was refused",
            },
        },
        "model": NOVA_PRO,
        "requestId": "req-1",
        "finishReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15},
    }
    pipeline.emulator.answer_next(answer)
    pipeline.send(
        {
            "requestId": "tool-failed",
            "prompt": "Draw a cat",
            "modelId": NOVA_PRO,
            "toolConfig": IMAGE_TOOL_CONFIG,
        }
    )
    pipeline.drain(timeout=30)

    record = pipeline.record("tool-failed")
    assert record["status"] == "FAILED", record
    assert record["error"]["kind"] == "ToolExecutionFailed"
    assert "content policy: the prompt was refused" in record["error"]["message"]
    assert record["usage"]["totalTokens"] == 15  # the billed answer is kept
    assert pipeline.result_json(record)["toolUse"][0]["error"] == "content policy: the prompt was refused"
    assert len(chat_calls(pipeline, "tool-failed")) == 1


def test_an_answer_that_breaks_the_contract_fails_with_the_raw_answer_stored(pipeline: Pipeline):
    broken = {
        "result": {"text": "an answer in a shape the contract does not have"},
        "usage": {"inputTokens": 9},
    }
    pipeline.emulator.answer_next(broken)
    pipeline.send({"requestId": "broken-answer", "prompt": "hello"})
    pipeline.drain(timeout=30)

    record = pipeline.record("broken-answer")
    assert record["status"] == "FAILED", record
    assert record["error"]["kind"] == "ContractBreachError"
    assert "response: required field is missing" in record["error"]["message"]
    assert record["error"]["retryable"] is False
    stored = pipeline.result_json(record)
    assert stored["rawResponse"] == broken
    assert len(chat_calls(pipeline, "broken-answer")) == 1  # not asked again: it would be billed again


def test_fields_the_gateway_adds_to_an_answer_are_kept(pipeline: Pipeline):
    answer = {
        "response": {"role": "assistant", "content": "hi", "citations": [{"url": "https://example.org"}]},
        "model": "amazon.nova-lite-v1:0",
        "finishReason": "stop",
        "usage": {"inputTokens": 3, "outputTokens": 1, "totalTokens": 4, "cacheReadTokens": 2},
        "latencyMs": 120,
    }
    pipeline.emulator.answer_next(answer)
    pipeline.send({"requestId": "extra-fields", "prompt": "hello"})
    pipeline.drain(timeout=30)
    record = pipeline.record("extra-fields")
    assert record["status"] == "COMPLETED", record
    assert record["usage"]["cacheReadTokens"] == 2


def test_an_execution_status_we_do_not_know_is_polled_until_it_ends(pipeline: Pipeline):
    # The first two polls answer "queued" (not in the contract's list); the request still completes.
    def queued(route):
        return {
            "executionId": route.execution_id,
            "toolName": "generate_image",
            "status": "queued",
            "createdAt": 1,
        }

    pipeline.emulator.answer_next(queued, count=2, path="executions")
    pipeline.send(
        {"requestId": "queued-status", "prompt": "Draw", "modelId": NOVA_PRO, "toolConfig": IMAGE_TOOL_CONFIG}
    )
    pipeline.drain(timeout=90)
    record = pipeline.record("queued-status")
    assert record["status"] == "COMPLETED", record
    polls = [c for c in pipeline.emulator.calls if c.kind == "executions"]
    assert len(polls) >= 3


def test_billable_calls_are_bounded_over_all_deliveries(pipeline: Pipeline):
    # 2 attempts a delivery x 3 deliveries would be 6 calls the gateway may bill; the bound is 2 in all.
    pipeline.emulator.fail_next("500", count=20)
    pipeline.send({"requestId": "always-500", "prompt": "hello"})
    pipeline.drain(timeout=60)

    record = pipeline.record("always-500")
    assert record["status"] == "FAILED", record
    assert record["error"]["message"].startswith("gave up after 2 gateway calls")
    assert record["gatewayCalls"] == 2
    assert len(chat_calls(pipeline, "always-500")) == 2


def test_calls_refused_at_the_door_are_not_counted(pipeline: Pipeline):
    # Three 429s (not billed) and then an answer: more calls than the bound, and the request completes.
    pipeline.emulator.fail_next("429", count=3)
    pipeline.send({"requestId": "rate-limited", "prompt": "hello"})
    pipeline.drain(timeout=60)

    record = pipeline.record("rate-limited")
    assert record["status"] == "COMPLETED", record
    assert len(chat_calls(pipeline, "rate-limited")) == 4
    assert record["gatewayCalls"] == 1


def test_a_request_over_the_payload_limit_is_failed_before_anything_is_sent(deploy_stack, emulator):
    stack = deploy_stack(
        parameters={**pipeline_parameters(emulator), "MaxRequestBytes": "4000"},
        extra_environment=emulator_gateway(emulator).environment(),
    )
    pipeline = Pipeline(stack, emulator)
    pipeline.send({"requestId": "too-big", "prompt": "x" * 5000})
    # 1,918 bytes, 2,560 as base64: with the prompt and the JSON around it, under the limit.
    pipeline.upload("incoming/diagram.png", (SAMPLES / "diagram.png").read_bytes())
    pipeline.drain(timeout=30)

    record = pipeline.record("too-big")
    assert record["status"] == "FAILED", record
    assert record["error"]["kind"] == "RequestTooLargeError"
    assert "over the limit of 4000 bytes" in record["error"]["message"]
    assert not chat_calls(pipeline, "too-big")
    upload = pipeline.record_for_key("incoming/diagram.png")
    assert upload["status"] == "COMPLETED", upload
