"""Reprocess: the ReprocessObjects state machine (Distributed Map over an S3 listing) on the deployed template
in the embedded AWS, every queued object through the upload queue and the real pipeline, with the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.emulator import GatewayEmulator
from devtools.reprocess_run import reprocess, run_records
from tests.plugins.pipeline import Pipeline, emulator_gateway, pipeline_parameters
from tests.test_resilience import events_queue

TEXTS = ("notes.txt", "data.csv", "page.md")
LITE = "amazon.nova-lite-v1:0"
PRO = "amazon.nova-pro-v1:0"


@pytest.fixture
def pipeline_with_allowed_models(deploy_stack: Any, emulator: GatewayEmulator) -> Iterator[Pipeline]:
    """The pipeline fixture's stack, with AllowedModelIds set."""
    stack = deploy_stack(
        parameters={**pipeline_parameters(emulator), "AllowedModelIds": f"{LITE},{PRO}"},
        secret_values=emulator_gateway(emulator).secret_values(),
        visibility_timeout_override=20,
    )
    yield Pipeline(stack, emulator)


def upload_texts(pipeline: Pipeline, prefix: str = "incoming/") -> list[str]:
    keys = []
    for name in TEXTS:
        keys.append(f"{prefix}{name}")
        pipeline.upload(keys[-1], f"{name}: the quarterly figures are up".encode())
    pipeline.drain()
    return keys


def test_without_force_completed_objects_are_skipped_and_with_force_each_run_has_its_own(pipeline: Pipeline):
    keys = upload_texts(pipeline)
    first = {key: pipeline.record_for_key(key) for key in keys}
    assert {r["status"] for r in first.values()} == {"COMPLETED"}
    sqs, events_url = events_queue(pipeline)

    skipped = reprocess(pipeline.stack, {"prefix": "incoming/"}, "plain-run")
    assert skipped.status == "SUCCEEDED", skipped
    assert skipped.output == {
        "runId": "plain-run",
        "prefix": "incoming/",
        "force": False,
        "dryRun": False,
        "listed": 3,
        "queued": 0,
        "skipped": 3,
        "refused": 0,
    }

    forced = reprocess(pipeline.stack, {"prefix": "incoming/", "force": True}, "forced-run")
    assert forced.output["queued"] == 3 and forced.output["skipped"] == 0, forced
    pipeline.drain()
    listed = run_records(pipeline.stack, "forced-run")
    assert len(listed) == 3 and {r["status"] for r in listed} == {"COMPLETED"}
    for item in listed:
        assert item["requestId"].startswith("reprocess-forced-run-")
        assert item["source"]["reprocess"]["runId"] == "forced-run"
        record = pipeline.record(item["requestId"])
        assert record["runId"] == "forced-run" and record["source"]["key"] in keys
    # The earlier records are kept.
    for record in first.values():
        assert pipeline.record(record["requestId"])["status"] == "COMPLETED"
    # Each run is announced with its counts; each request of the forced run as any request is.
    events = announced_events(sqs, events_url)
    finished = [e["detail"] for e in events if e["detail-type"] == "AI Reprocess Finished"]
    assert finished == [skipped.output, forced.output]
    completed = {e["detail"]["requestId"] for e in events if e["detail-type"] == "AI Request Completed"}
    assert completed == {item["requestId"] for item in listed}

    # A run without force after the forced one: every object has a COMPLETED record, so nothing is queued.
    again = reprocess(pipeline.stack, {"prefix": "incoming/"})
    assert (again.output["queued"], again.output["skipped"]) == (0, 3)


def announced_events(sqs, url: str) -> list[dict]:
    found = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return found


def test_a_failed_object_is_queued_again_without_force_under_an_id_of_its_version(pipeline: Pipeline):
    pipeline.upload("incoming/program", b"\x7fELF" + bytes(64))  # unsupported: FAILED
    pipeline.drain()
    assert pipeline.record_for_key("incoming/program")["status"] == "FAILED"
    run = reprocess(pipeline.stack, {"prefix": "incoming/"}, "retry-failed")
    assert (run.output["queued"], run.output["skipped"]) == (1, 0), run
    pipeline.drain()
    [item] = run_records(pipeline.stack, "retry-failed")
    # Without force the request is named by the object version alone: a second run finds it done.
    assert item["requestId"].startswith("reprocess-") and "retry-failed" not in item["requestId"]
    assert pipeline.record(item["requestId"])["error"]["kind"] == "UnsupportedMediaError"


def forged(pipeline: Pipeline, **fields: Any) -> str:
    """A reprocess message put on the upload queue by hand, as the one role allowed to (untrusted all the same)."""
    message = {
        "runId": "forged",
        "bucket": pipeline.bucket,
        "key": "incoming/notes.txt",
        "eTag": "0123abcd",
        "size": 10,
        "force": True,
        "prompt": None,
        "modelId": None,
        **fields,
    }
    sqs = pipeline.stack.client("sqs", as_function="ReprocessFunction")
    return sqs.send_message(
        QueueUrl=pipeline.stack.physical_id("UploadEventsQueue"),
        MessageBody=json.dumps({"reprocess": message}),
    )["MessageId"]


def test_the_upload_function_holds_reprocess_messages_to_the_same_rules(pipeline_with_allowed_models):
    pipeline = pipeline_with_allowed_models
    admin = pipeline.stack.client("s3")
    for key in ("incoming/notes.txt", "other/secret.txt", "results/x/result.json"):
        admin.put_object(Bucket=pipeline.bucket, Key=key, Body=b"the figures")
    pipeline.drain()
    calls_before = len([c for c in pipeline.emulator.calls if c.kind == "chat"])
    forged(pipeline, key="other/secret.txt")
    forged(pipeline, key="results/x/result.json")
    forged(pipeline, bucket="someone-elses-bucket")
    unknown_field = forged(pipeline, extra="x")
    forged(pipeline, modelId="anthropic.claude-v2")
    pipeline.drain()
    keys = [(r.get("source") or {}).get("key") for r in pipeline.records()]
    assert "other/secret.txt" not in keys and "results/x/result.json" not in keys
    assert (
        pipeline.record(f"upload-message-{unknown_field}")["error"]["message"]
        == "reprocess.extra: unknown field"
    )
    refused_model = [r for r in pipeline.records() if (r.get("source") or {}).get("reprocess")]
    assert len(refused_model) == 1 and refused_model[0]["status"] == "FAILED", refused_model
    assert "reprocess.modelId" in refused_model[0]["error"]["message"]
    assert len([c for c in pipeline.emulator.calls if c.kind == "chat"]) == calls_before


def test_a_dry_run_only_counts_and_an_empty_prefix_with_all_refuses_what_is_outside(pipeline: Pipeline):
    upload_texts(pipeline)
    pipeline.upload("incoming/folder/", b"")  # a folder marker
    admin = pipeline.stack.client("s3")
    admin.put_object(Bucket=pipeline.bucket, Key="other/elsewhere.txt", Body=b"not ours to read")
    records_before = len(pipeline.records())

    dry = reprocess(pipeline.stack, {"prefix": "incoming/", "force": True, "dryRun": True})
    assert (dry.status, dry.output["listed"], dry.output["queued"], dry.output["dryRun"]) == (
        "SUCCEEDED",
        4,
        3,
        True,
    ), dry
    whole = reprocess(pipeline.stack, {"prefix": "", "all": True, "dryRun": True})
    # The results prefix (written by the uploads) and other/ are listed and refused, never queued.
    results = admin.list_objects_v2(Bucket=pipeline.bucket, Prefix="results/")["KeyCount"]
    assert whole.output["refused"] == results + 1 and whole.output["queued"] == 0, whole
    assert whole.output["skipped"] == 4  # three done, one folder marker
    pipeline.drain()
    assert len(pipeline.records()) == records_before
    assert pipeline.queue_depth("UploadEventsQueue") == 0


def test_prompt_and_model_override_the_rule_for_that_run(pipeline_with_allowed_models):
    pipeline = pipeline_with_allowed_models
    keys = upload_texts(pipeline)
    uploads = [pipeline.record_for_key(key)["requestId"] for key in keys]
    run = reprocess(
        pipeline.stack,
        {"prefix": "incoming/", "force": True, "prompt": "List the figures in French", "modelId": PRO},
        "override-run",
    )
    assert run.output["queued"] == 3, run
    pipeline.drain()
    for item in run_records(pipeline.stack, "override-run"):
        record = pipeline.record(item["requestId"])
        assert record["status"] == "COMPLETED" and record["modelId"] == PRO
        assert record["content"].endswith("List the figures in French")  # the emulator echoes the prompt
        assert record["source"]["reprocess"] == {
            "runId": "override-run",
            "force": True,
            "prompt": "List the figures in French",
            "modelId": PRO,
        }
    # The uploads' own records keep the rule's model.
    assert {pipeline.record(request_id)["modelId"] for request_id in uploads} == {LITE}


BAD_INPUTS = [
    ({"prefix": "results/"}, "input.prefix: 'results/' is under the results prefix"),
    ({"prefix": "other/"}, "input.prefix: 'other/' is outside what reprocess may read"),
    ({"prefix": "inc"}, "input.prefix: 'inc' is outside what reprocess may read"),
    ({"prefix": ""}, 'an empty prefix is the whole bucket; say so with "all": true'),
    ({"prefix": "incoming/", "forse": True}, "input.forse: unknown field"),
    ({"prefix": "incoming/", "force": "yes"}, "input.force"),
    ({"prefix": "incoming/", "modelId": "anthropic.claude-v2"}, "is not an allowed model"),
    ({"prefix": "incoming/", "prompt": "   "}, "input.prompt"),
    (["incoming/"], "the input must be a JSON object"),
]


def test_bad_input_fails_the_run_at_once_naming_the_problem_and_queues_nothing(pipeline_with_allowed_models):
    pipeline = pipeline_with_allowed_models
    upload_texts(pipeline)
    records_before = len(pipeline.records())
    for run_input, expected in BAD_INPUTS:
        run = reprocess(pipeline.stack, run_input)
        assert run.status == "FAILED" and run.error == "ReprocessInputError", (run_input, run)
        assert expected in json.loads(run.cause)["errorMessage"], (run_input, run.cause)
    bad_name = reprocess(pipeline.stack, {"prefix": "incoming/"}, "a+b")
    assert bad_name.error == "ReprocessInputError" and "execution name" in bad_name.cause
    pipeline.drain()
    assert len(pipeline.records()) == records_before


def test_the_operators_reprocess_prefix_is_read_too(deploy_stack: Any, emulator: GatewayEmulator):
    stack = deploy_stack(
        parameters={**pipeline_parameters(emulator), "ReprocessPrefix": "archive/"},
        secret_values=emulator_gateway(emulator).secret_values(),
        visibility_timeout_override=20,
    )
    pipeline = Pipeline(stack, emulator)
    pipeline.upload("archive/2023/notes.txt", b"last year's figures")  # no upload event: not the input prefix
    pipeline.drain()
    assert pipeline.records() == []
    run = reprocess(stack, {"prefix": "archive/"}, "archive-run")
    assert (run.output["listed"], run.output["queued"]) == (1, 1), run
    pipeline.drain()
    [item] = run_records(stack, "archive-run")
    # The upload function read it with its role (ReprocessPrefix grants s3:GetObject there).
    assert pipeline.record(item["requestId"])["status"] == "COMPLETED"
    assert reprocess(stack, {"prefix": "archived/"}).error == "ReprocessInputError"
