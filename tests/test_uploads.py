"""Uploads on the embedded AWS: a file lands in S3, the AI's answer lands in DynamoDB."""

import hashlib
import json
from pathlib import Path

import pytest

from tests.sample_files import DATA, MEDIA_SAMPLES, SAMPLES, TEXT_SAMPLES


def decoded_line(kind: str, fmt: str, data: bytes) -> str:
    return f"{kind} 1: {fmt}, {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}"


def test_every_sample_ends_completed_with_proof_the_gateway_decoded_it(pipeline):
    for name in [*MEDIA_SAMPLES, *TEXT_SAMPLES]:
        pipeline.upload(f"incoming/{name}", (SAMPLES / name).read_bytes())
    pipeline.drain()
    for name, (kind, fmt) in MEDIA_SAMPLES.items():
        record = pipeline.record_for_key(f"incoming/{name}")
        assert record["status"] == "COMPLETED", record
        assert decoded_line(kind, fmt, (SAMPLES / name).read_bytes()) in record["content"]
        assert record["usage"]["totalTokens"] > 0 and record["modelId"]
        assert (
            record["resultLocation"]
            == f"s3://{pipeline.bucket}/results/incoming/{name}/{record['requestId']}.json"
        )
        assert pipeline.result_json(record)["content"] == record["content"]
        assert record["attempts"] == 1 and record["source"]["bucket"] == pipeline.bucket
        assert record["expiresAt"] > 0 and record["createdAt"] <= record["updatedAt"]
    for name in TEXT_SAMPLES:
        record = pipeline.record_for_key(f"incoming/{name}")
        assert record["status"] == "COMPLETED", record
        first_line = (SAMPLES / name).read_text().splitlines()[0]
        assert first_line[:40] in record["content"]
    assert pipeline.queue_depth("UploadEventsQueue") == 0 and pipeline.queue_depth("UploadEventsDLQ") == 0


def failure(record):
    assert record["status"] == "FAILED", record
    return record["error"]


def test_bad_files_end_failed_with_their_reason_and_never_reach_the_gateway(pipeline):
    pipeline.upload("incoming/notes.txt.gz", (DATA / "notes.txt.gz").read_bytes())
    pipeline.upload("incoming/empty.png", b"")
    pipeline.upload("incoming/cut.png", (DATA / "truncated.png").read_bytes())
    pipeline.upload("incoming/program", (DATA / "program.elf").read_bytes())
    pipeline.drain()
    assert "gzip archive" in failure(pipeline.record_for_key("incoming/notes.txt.gz"))["message"]
    assert "empty file" in failure(pipeline.record_for_key("incoming/empty.png"))["message"]
    assert "truncated png" in failure(pipeline.record_for_key("incoming/cut.png"))["message"]
    error = failure(pipeline.record_for_key("incoming/program"))
    assert error["kind"] == "UnsupportedMediaError" and error["retryable"] is False
    assert not [c for c in pipeline.emulator.calls if c.kind == "chat"]
    assert pipeline.queue_depth("UploadEventsQueue") == 0 and pipeline.queue_depth("UploadEventsDLQ") == 0


def test_oversize_fails_with_size_and_limit_without_download(pipeline):
    size = 25 * 1024 * 1024 + 1
    pipeline.upload("incoming/huge.pdf", b"%PDF-1.4\n" + b"0" * (size - 9))
    pipeline.drain()
    error = failure(pipeline.record_for_key("incoming/huge.pdf"))
    assert error["kind"] == "RequestTooLargeError"
    assert str(size) in error["message"] and "over the limit of 25000000 bytes" in error["message"]
    gets = [i for i in pipeline.stack.invocations.for_function("S3UploadFunction")]
    assert gets and not [c for c in pipeline.emulator.calls if c.kind == "chat"]


def test_metadata_overrides_are_used_and_validated(pipeline):
    image = (SAMPLES / "diagram.png").read_bytes()
    pipeline.upload("incoming/a.png", image, prompt="Count the boxes", **{"model-id": "amazon.nova-pro-v1:0"})
    pipeline.upload("incoming/b.png", image, **{"model-id": "not a model id!"})
    pipeline.upload("incoming/c.png", image, **{"model-id": "anthropic.claude-3-haiku-20240307-v1:0"})
    pipeline.drain()
    good = pipeline.record_for_key("incoming/a.png")
    assert good["status"] == "COMPLETED" and good["modelId"] == "amazon.nova-pro-v1:0"
    assert "Echo: Count the boxes" in good["content"]
    assert "x-amz-meta-model-id" in failure(pipeline.record_for_key("incoming/b.png"))["message"]
    assert "text only" in failure(pipeline.record_for_key("incoming/c.png"))["message"]


def test_routing_rules_choose_the_request(pipeline):
    pipeline.upload("incoming/invoices/march.pdf", (SAMPLES / "report.pdf").read_bytes())
    pipeline.upload("incoming/budget.xlsx", (SAMPLES / "budget.xlsx").read_bytes())
    pipeline.drain()
    invoice = pipeline.record_for_key("incoming/invoices/march.pdf")
    assert invoice["status"] == "COMPLETED" and invoice["modelId"] == "amazon.nova-pro-v1:0"
    assert set(json.loads(invoice["content"])) == {"supplier", "invoiceNumber", "date", "currency", "total"}
    sheet = pipeline.record_for_key("incoming/budget.xlsx")
    assert "Summarise what this spreadsheet contains" in sheet["content"]


def test_gateway_4xx_is_permanent(pipeline):
    pipeline.emulator.fail_next("400")
    pipeline.upload("incoming/photo.jpg", (SAMPLES / "photo.jpg").read_bytes())
    pipeline.drain()
    error = failure(pipeline.record_for_key("incoming/photo.jpg"))
    assert error["kind"] == "PermanentGatewayError" and "400" in error["message"]
    assert len([c for c in pipeline.emulator.calls if c.kind == "chat"]) == 1


def test_transient_faults_are_retried_by_redelivery_and_complete(pipeline):
    # Two attempts per delivery (GatewayMaxAttempts=2): three 429s fail the first delivery only. (429s are
    # refused at the door, so they do not count towards the request's bound on billable calls.)
    pipeline.emulator.fail_next("429", count=3)
    pipeline.upload("incoming/photo.jpg", (SAMPLES / "photo.jpg").read_bytes())
    pipeline.drain()
    record = pipeline.record_for_key("incoming/photo.jpg")
    assert record["status"] == "COMPLETED" and record["attempts"] == 2
    assert record["lastError"]["retryable"] is True
    assert pipeline.queue_depth("UploadEventsDLQ") == 0


def test_a_lasting_outage_gives_up_after_every_attempt_and_lands_in_the_dlq(pipeline):
    pipeline.emulator.fail_next("429", count=1000)
    pipeline.upload("incoming/photo.jpg", (SAMPLES / "photo.jpg").read_bytes())
    pipeline.drain()
    error = failure(pipeline.record_for_key("incoming/photo.jpg"))
    assert error["message"].startswith("gave up after 3 attempts")
    assert error["retryable"] is True
    assert pipeline.queue_depth("UploadEventsDLQ") == 1


def test_a_redelivered_event_calls_the_gateway_once(pipeline):
    pipeline.upload("incoming/diagram.png", (SAMPLES / "diagram.png").read_bytes())
    pipeline.drain()
    record = pipeline.record_for_key("incoming/diagram.png")
    event = pipeline.stack.invocations.for_function("S3UploadFunction")[-1].event
    body = next(r["body"] for r in event["Records"] if "diagram.png" in r["body"])
    pipeline.send(body, queue="UploadEventsQueue")
    pipeline.send(body, queue="UploadEventsQueue")
    pipeline.drain()
    assert pipeline.emulator.successful_chats_by_correlation_id() == {record["requestId"]: 1}
    assert pipeline.record_for_key("incoming/diagram.png")["updatedAt"] == record["updatedAt"]


def test_keys_with_spaces_and_unicode(pipeline):
    key = "incoming/Q3 report – été+final.pdf"  # noqa: RUF001 (the en dash is the point)
    pipeline.upload(key, (SAMPLES / "report.pdf").read_bytes())
    pipeline.drain()
    record = pipeline.record_for_key(key)
    assert record["status"] == "COMPLETED"
    assert "name Q3 report ete-final" in record["content"]


def test_results_prefix_and_folder_markers_are_skipped(pipeline):
    s3_event = json.loads((Path(__file__).resolve().parents[1] / "events" / "s3_put.json").read_text())
    record = s3_event["Records"][0]
    record["s3"]["bucket"]["name"] = pipeline.bucket
    record["s3"]["object"]["key"] = "results/incoming/photo.jpg.json"
    marker = json.loads(json.dumps(record))
    marker["s3"]["object"].update(key="incoming/folder/", size=0)
    result = pipeline.stack.invoke("S3UploadFunction", {"Records": [record, marker]})
    assert result == {"outcomes": []}
    assert pipeline.records() == []


def test_aws_sample_event_shape_and_test_events(pipeline):
    pipeline.upload("incoming/photo.jpg", (SAMPLES / "photo.jpg").read_bytes())
    pipeline.drain()
    s3_event = json.loads((Path(__file__).resolve().parents[1] / "events" / "s3_put.json").read_text())
    s3_event["Records"][0]["s3"]["bucket"]["name"] = pipeline.bucket
    s3_event["Records"][0]["s3"]["object"]["eTag"] = "another-etag"
    result = pipeline.stack.invoke("S3UploadFunction", s3_event)
    assert result["outcomes"][0]["status"] == "COMPLETED"
    # The bucket's first notification is an s3:TestEvent: consumed without a record.
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": pipeline.bucket}
    pipeline.send(test_event, queue="UploadEventsQueue")
    pipeline.drain()
    assert len(pipeline.records()) == 2
    assert pipeline.queue_depth("UploadEventsQueue") == 0 and pipeline.queue_depth("UploadEventsDLQ") == 0


def test_a_message_that_is_not_an_s3_event_is_recorded_and_consumed(pipeline):
    message_id = pipeline.send("this is not json", queue="UploadEventsQueue")
    pipeline.drain()
    record = pipeline.record(f"upload-message-{message_id}")
    assert "not valid JSON" in failure(record)["message"] or "Expecting value" in failure(record)["message"]
    assert pipeline.queue_depth("UploadEventsDLQ") == 0


@pytest.mark.parametrize(
    "rules",
    ["rules: [}", "default: {}\nrules:\n  - name: bad\n    match: {prefix: x/}\n    temperature: 5\n"],
)
def test_invalid_routing_rules_fail_loudly_naming_the_problem(deploy_stack, emulator, rules):
    from tests.plugins.gateway import EMULATOR_TOKEN
    from tests.plugins.pipeline import Pipeline, pipeline_parameters

    stack = deploy_stack(
        parameters={
            **pipeline_parameters(emulator),
            "RoutingRulesParameterName": "/quant/rules",
            "MaxReceiveCount": "1",
        },
        extra_environment={"GATEWAY_TOKEN": EMULATOR_TOKEN},
        visibility_timeout_override=20,
    )
    stack.client("ssm").put_parameter(Name="/quant/rules", Value=rules, Type="String")
    run = Pipeline(stack, emulator)
    run.upload("incoming/photo.jpg", (SAMPLES / "photo.jpg").read_bytes())
    run.drain()
    error = failure(run.record_for_key("incoming/photo.jpg"))
    assert (
        error["kind"] in ("ConfigurationError", "TransientGatewayError")
        or "routing rules" in error["message"]
    )
    assert "invalid routing rules" in error["message"]
    if "temperature" in rules:
        assert "rule 'bad'" in error["message"] and "temperature" in error["message"]
    assert run.queue_depth("UploadEventsDLQ") == 1
