"""`make invoke`: every event in events/ runs its function on the embedded AWS and returns something sensible."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from devtools import invoke
from devtools.invoke import environment_overrides, objects_named
from devtools.invoke import invoke as run_invoke

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
BUCKET = "quant-ai-local-uploads-123456789012-us-east-1"
FUNCTION_FOR_EVENT = {
    "s3_put.json": "S3UploadFunction",
    "s3_put_via_sqs.json": "S3UploadFunction",
    "sqs_full_request.json": "SqsRequestFunction",
    "sqs_short_form_attachment.json": "SqsRequestFunction",
    "sqs_malformed.json": "SqsRequestFunction",
    "poll_execution.json": "PollExecutionFunction",
    "finish_request.json": "FinishRequestFunction",
    "poller_ended.json": "FinishRequestFunction",
    "sweep_scheduled.json": "SweeperFunction",
}
ENV_FILES = {"env.json"}

pytestmark = pytest.mark.slow


def event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def seeded(report: invoke.InvokeReport, uri: str, source: str) -> bool:
    return any(n.startswith(f"seeded {uri} from ") and n.endswith(source) for n in report.notes)


def test_every_file_in_events_is_covered():
    assert {p.name for p in EVENTS.glob("*.json")} == set(FUNCTION_FOR_EVENT) | ENV_FILES


def test_s3_put_seeds_the_sample_and_completes():
    report = run_invoke("S3UploadFunction", event("s3_put.json"), environ={})
    assert report.error is None
    [outcome] = report.result["outcomes"]
    assert outcome["status"] == "COMPLETED"
    [record] = report.records
    assert record["requestId"] == outcome["request_id"] and record["status"] == "COMPLETED"
    assert record["content"].startswith("image 1: jpeg, 3747 bytes")  # samples/photo.jpg reached the gateway
    assert seeded(report, f"s3://{BUCKET}/incoming/photo.jpg", "samples/photo.jpg")
    assert report.gateway.startswith("gateway: local emulator at http://127.0.0.1:")


def test_s3_put_via_sqs_looks_inside_the_body():
    report = run_invoke("S3UploadFunction", event("s3_put_via_sqs.json"), environ={})
    assert report.result == {"batchItemFailures": []}
    [record] = report.records
    assert record["status"] == "COMPLETED" and record["source"]["key"] == "incoming/report.pdf"
    assert record["content"].startswith("document 1: pdf, 2312 bytes")


def test_sqs_full_request_completes_with_its_metadata():
    report = run_invoke("SqsRequestFunction", event("sqs_full_request.json"), environ={})
    assert report.result == {"batchItemFailures": []}
    [record] = report.records
    assert record["requestId"] == "example-full-request" and record["status"] == "COMPLETED"
    assert record["metadata"] == {"caller": "billing-system", "ticket": "T-1042"}
    assert "Echo: What is a serverless integration?" in record["content"]


def test_sqs_short_form_attachment_is_seeded_and_inlined():
    report = run_invoke("SqsRequestFunction", event("sqs_short_form_attachment.json"), environ={})
    assert report.result == {"batchItemFailures": []}
    [record] = report.records
    assert record["requestId"] == "example-short-form" and record["status"] == "COMPLETED"
    assert record["content"].startswith("image 1: png, 1918 bytes")
    assert seeded(report, f"s3://{BUCKET}/attachments/diagram.png", "samples/diagram.png")


def test_sqs_malformed_is_consumed_and_recorded_failed():
    report = run_invoke("SqsRequestFunction", event("sqs_malformed.json"), environ={})
    assert report.result == {"batchItemFailures": []}  # no retry of a message that can never succeed
    [record] = report.records
    assert record["status"] == "FAILED" and record["error"]["retryable"] is False
    assert "not valid JSON" in record["error"]["message"]


def test_poll_execution_polls_a_real_execution():
    report = run_invoke("PollExecutionFunction", event("poll_execution.json"), environ={})
    assert report.error is None
    assert report.result["executionId"] != "exec_0123456789ab"  # the one the preparation started
    assert report.result["executionId"] == report.event["execution"]["executionId"]
    assert report.result["status"] in ("pending", "running") and report.result["polls"] == 1
    assert report.result["nextWaitSeconds"] == 3  # image generation: every 3 s at first
    assert report.records == []
    assert any(note.startswith("prepared: POST /chat with generate_image") for note in report.notes)


def test_a_poller_that_ended_without_finishing_names_no_record_here_and_is_left_alone():
    report = run_invoke("FinishRequestFunction", event("poller_ended.json"), environ={})
    assert report.error is None and report.records == []
    assert report.result == {"requestId": "example-image-request", "finishedNow": False, "status": None}


def test_the_sweeper_runs_on_its_schedule_event():
    report = run_invoke("SweeperFunction", event("sweep_scheduled.json"), environ={})
    assert report.error is None
    assert report.result == {"swept": 0, "byStatus": {}, "announced": 0, "more": False}


def test_finish_request_finishes_a_waiting_record():
    report = run_invoke("FinishRequestFunction", event("finish_request.json"), environ={})
    assert report.result == {"requestId": "example-image-request", "finishedNow": True, "status": "COMPLETED"}
    [record] = report.records
    assert record["status"] == "COMPLETED" and record["pattern"] == "async_execution"
    [execution] = record["executions"]
    assert execution["status"] == "complete" and execution["executionId"] != "exec_0123456789ab"
    assert execution["files"][0].startswith(f"s3://{BUCKET}/results/example-image-request/")
    assert any("WAITING_FOR_TOOLS" in note for note in report.notes)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_env_json_overrides_like_sam_and_its_local_gateway_url_gets_the_emulator():
    env = event("env.json")
    port = free_port()
    env["Parameters"]["GATEWAY_BASE_URL"] = f"http://127.0.0.1:{port}"  # 8787 may be taken on this machine
    env["Parameters"]["NOT_IN_THE_TEMPLATE"] = "x"
    env["SqsRequestFunction"] = {"DEFAULT_MODEL_ID": "amazon.nova-micro-v1:0"}
    short = event("sqs_full_request.json")
    short["Records"][0]["body"] = json.dumps({"requestId": "env-1", "prompt": "hi"})
    report = run_invoke("SqsRequestFunction", short, env_file=env, environ={})
    assert report.gateway.startswith(f"gateway: local emulator at http://127.0.0.1:{port}")
    # The emulator insists on env.json's organisation and token, so COMPLETED proves the handler used them.
    [record] = report.records
    assert record["status"] == "COMPLETED" and record["modelId"] == "amazon.nova-micro-v1:0"
    assert any(note.startswith("ignored from ENV") and "NOT_IN_THE_TEMPLATE" in note for note in report.notes)
    assert "local-emulator-token" not in " ".join(report.notes)


def test_object_replaces_the_sample_and_other_buckets_are_created(tmp_path):
    text = tmp_path / "memo.txt"
    text.write_text("Quarterly memo: all good.\n")
    report = run_invoke("S3UploadFunction", event("s3_put.json"), object_path=text, environ={})
    [record] = report.records
    assert record["status"] == "COMPLETED" and "Quarterly memo: all good." in record["content"]

    s3_event = event("s3_put.json")
    s3_event["Records"][0]["s3"]["bucket"]["name"] = "someone-elses-bucket"
    report = run_invoke("S3UploadFunction", s3_event, object_path=text, environ={})
    assert "created bucket someone-elses-bucket" in report.notes
    # An event naming another bucket is refused before anything is read (and the function's role could
    # not read it anyway): skipped, no record.
    assert report.records == []


def test_a_handler_exception_is_reported_as_lambda_error_and_exits_1(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    assert invoke.main(["PollExecutionFunction", str(empty)]) == 1
    output = capsys.readouterr().out
    assert output.startswith("gateway: local emulator")
    assert '"errorType": "InvalidEventError"' in output and "not prepared" in output
    assert "PollExecutionFunction takes the poller's state" in output


def test_usage_errors_exit_2(tmp_path, capsys):
    assert invoke.main(["NoSuchFunction", str(EVENTS / "s3_put.json")]) == 2
    assert invoke.main(["S3UploadFunction", str(tmp_path / "missing.json")]) == 2
    assert "SqsRequestFunction" in capsys.readouterr().err  # the functions it could have been


def test_objects_named_by_each_event_shape():
    assert objects_named(event("s3_put.json")) == [(BUCKET, "incoming/photo.jpg")]
    assert objects_named(event("s3_put_via_sqs.json")) == [(BUCKET, "incoming/report.pdf")]
    assert objects_named(event("sqs_short_form_attachment.json")) == [(BUCKET, "attachments/diagram.png")]
    assert objects_named(event("sqs_malformed.json")) == []


def test_environment_overrides_take_declared_names_only():
    env = {
        "Parameters": {"POWERTOOLS_LOG_LEVEL": "DEBUG", "X": "1"},
        "FinishRequestFunction": {"RECORD_TTL_DAYS": 7},
    }
    assert environment_overrides("FinishRequestFunction", env) == (
        {"POWERTOOLS_LOG_LEVEL": "DEBUG", "RECORD_TTL_DAYS": "7"},
        ["X"],
    )
    # POLLER_STATE_MACHINE_ARN is declared for the SQS functions only.
    assert environment_overrides(
        "PollExecutionFunction", {"Parameters": {"POLLER_STATE_MACHINE_ARN": "a"}}
    ) == (
        {},
        ["POLLER_STATE_MACHINE_ARN"],
    )


S3_EVENT = event("s3_put.json")


@pytest.mark.parametrize(
    ("function", "given", "expected"),
    [
        ("SqsRequestFunction", S3_EVENT, "SqsRequestFunction takes an SQS event"),
        ("PollExecutionFunction", S3_EVENT, "PollExecutionFunction takes the poller's state"),
        ("PollExecutionFunction", {"execution": {}}, "PollExecutionFunction takes the poller's state"),
        (
            "FinishRequestFunction",
            {"requestId": "r", "executions": "all"},
            "FinishRequestFunction takes the poller's state {'requestId'",
        ),
        ("S3UploadFunction", [1, 2], "S3UploadFunction takes an SQS event {'Records'"),
    ],
    ids=["s3-to-queue", "s3-to-poll", "empty-execution-to-poll", "executions-not-a-list", "a-list"],
)
def test_an_event_a_function_does_not_take_fails_naming_what_it_expected(function, given, expected):
    report = run_invoke(function, given, environ={})
    assert report.error is not None, report.result
    assert report.error["errorType"] == "InvalidEventError"
    assert report.error["errorMessage"].startswith(expected), report.error["errorMessage"]
    assert report.records == []


def test_odd_events_still_run_the_handler_and_are_reported(tmp_path):
    """Whatever the event, make invoke runs the handler and shows what it did; it never crashes first."""
    odd_s3 = event("s3_put.json")
    odd_s3["Records"][0]["s3"]["object"]["key"] = "incoming/" + "k" * 1100  # over S3's key limit
    odd_s3["Records"].append({"s3": "not an object"})
    content = tmp_path / "content.txt"
    content.write_text("text")
    report = run_invoke("S3UploadFunction", odd_s3, object_path=content, environ={})
    assert any(note.startswith("not seeded:") and "KeyTooLongError" in note for note in report.notes)
    assert report.error is not None or report.result is not None

    for function, given in [
        ("FinishRequestFunction", {"requestId": ""}),
        ("PollExecutionFunction", "just a string"),
        ("SqsRequestFunction", {"Records": "none"}),
    ]:
        report = run_invoke(function, given, environ={})
        assert report.error is not None and report.error["errorType"] == "InvalidEventError", (
            function,
            report,
        )
