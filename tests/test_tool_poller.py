"""The ToolExecutionPoller's real ASL on the embedded AWS, against the emulator's async executions."""

import contextlib
import json
import time

from shared.poller import execution_name
from tests.plugins.gateway import EMULATOR_TOKEN
from tests.plugins.pipeline import Pipeline, pipeline_parameters
from tests.sample_files import IMAGE_TOOL


def image_request(request_id: str) -> dict:
    return {
        "requestId": request_id,
        "prompt": "A lighthouse at dawn",
        "modelId": "amazon.nova-pro-v1:0",
        "toolConfig": {"tools": [IMAGE_TOOL], "autoExecute": True, "allowedTools": ["generate_image"]},
    }


def executions_of(pipeline: Pipeline, request_id: str) -> list[dict]:
    sfn = pipeline.stack.client("stepfunctions")
    arn = pipeline.stack.physical_id("ToolExecutionPoller")
    names = {execution_name(request_id, attempt) for attempt in range(1, 6)}
    return [e for e in sfn.list_executions(stateMachineArn=arn)["executions"] if e["name"] in names]


def test_several_executions_complete_with_every_image_stored(pipeline):
    pipeline.emulator.config.images_per_request = 3
    pipeline.send(image_request("three-images"))
    pipeline.drain(timeout=90)
    record = pipeline.record("three-images")
    assert record["status"] == "COMPLETED", record
    assert len(record["executions"]) == 3
    s3 = pipeline.stack.client("s3")
    for execution in record["executions"]:
        assert execution["status"] == "complete"
        [location] = execution["files"]
        assert location.startswith(f"s3://{pipeline.bucket}/results/three-images/{execution['executionId']}/")
        png = s3.get_object(Bucket=pipeline.bucket, Key=location.split("/", 3)[3])["Body"].read()
        assert png.startswith(b"\x89PNG")
    result = pipeline.result_json(record)
    assert result["status"] == "COMPLETED" and len(result["executions"]) == 3
    [run] = executions_of(pipeline, "three-images")
    assert run["status"] == "SUCCEEDED"


def test_a_failed_execution_fails_the_request_with_its_reason(pipeline):
    pipeline.emulator.config.execution_outcome = "failed"
    pipeline.send(image_request("failed-image"))
    pipeline.drain(timeout=90)
    record = pipeline.record("failed-image")
    assert record["status"] == "FAILED"
    assert record["error"]["kind"] == "ToolExecutionFailed"
    assert "the image model returned no image" in record["error"]["message"]
    assert record["executions"][0]["status"] == "failed"


def test_an_expired_execution_404_fails_the_request(pipeline):
    pipeline.emulator.config.execution_seconds = 30
    pipeline.send(image_request("expired-image"))
    # Expire the execution as soon as the gateway created it: the first poll gets a 404.
    deadline = time.monotonic() + 20
    while not pipeline.emulator.execution_ids() and time.monotonic() < deadline:
        time.sleep(0.05)
    [execution_id] = pipeline.emulator.execution_ids()
    pipeline.emulator.expire(execution_id)
    pipeline.drain(timeout=90)
    record = pipeline.record("expired-image")
    assert record["status"] == "FAILED"
    assert "unknown or expired (404" in record["error"]["message"]


def test_transient_poll_faults_are_retried_by_the_state_machine(pipeline):
    # Two attempts per poll inside the function (GatewayMaxAttempts=2): five 503s need the ASL's Retry.
    pipeline.emulator.fail_next("503", count=5, path="executions")
    pipeline.send(image_request("flaky-polls"))
    pipeline.drain(timeout=90)
    record = pipeline.record("flaky-polls")
    assert record["status"] == "COMPLETED", record
    faults = [c for c in pipeline.emulator.calls if c.kind == "executions" and c.fault]
    assert len(faults) == 5
    errors = [i for i in pipeline.stack.invocations.for_function("PollExecutionFunction") if i.error]
    assert errors and all(i.error.error_type == "TransientGatewayError" for i in errors)


def test_a_duplicate_start_is_harmless(pipeline):
    pipeline.emulator.config.execution_seconds = 3
    pipeline.send(image_request("dup-start"))
    # The same request arrives again while the first is waiting for its tools.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        records = [r for r in pipeline.records() if r["requestId"] == "dup-start"]
        if records and records[0].get("status") == "WAITING_FOR_TOOLS":  # moto may show an item mid-update
            break
        time.sleep(0.05)
    pipeline.send(image_request("dup-start"))
    pipeline.drain(timeout=90)
    assert pipeline.record("dup-start")["status"] == "COMPLETED"
    assert len(executions_of(pipeline, "dup-start")) == 1
    assert pipeline.emulator.successful_chats_by_correlation_id() == {"dup-start": 1}
    # Starting the poller by hand with the same name is refused by Step Functions, not run twice.
    sfn = pipeline.stack.client("stepfunctions")
    arn = pipeline.stack.physical_id("ToolExecutionPoller")
    with contextlib.suppress(sfn.exceptions.ExecutionAlreadyExists):
        sfn.start_execution(
            stateMachineArn=arn,
            name=execution_name("dup-start", 1),
            input=json.dumps({"requestId": "dup-start", "attempt": 1, "executions": []}),
        )
    assert len(executions_of(pipeline, "dup-start")) == 1


def test_an_execution_that_never_ends_times_out(deploy_stack, emulator):
    emulator.config.execution_seconds = 600
    stack = deploy_stack(
        # Long enough for two polls however slow the machine (the first comes at about 0.2 s, the next 1 s later).
        parameters={**pipeline_parameters(emulator), "PollTimeoutSeconds": "4"},
        extra_environment={"GATEWAY_TOKEN": EMULATOR_TOKEN},
        visibility_timeout_override=20,
    )
    run = Pipeline(stack, emulator)
    run.send(image_request("slow-image"))
    run.drain(timeout=60)
    record = run.record("slow-image")
    assert record["status"] == "FAILED"
    assert "timed out after" in record["error"]["message"]
    assert record["executions"][0]["polls"] >= 2
