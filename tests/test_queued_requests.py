"""Queued requests on the embedded AWS: each message shape ends in the right record."""

import json
from pathlib import Path

import pytest

from tests.sample_files import IMAGE_TOOL

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SCHEMA = Path(__file__).resolve().parents[1] / "schema" / "request-message.schema.json"
NOVA = "amazon.nova-lite-v1:0"


def failure(record):
    assert record["status"] == "FAILED", record
    return record["error"]


def test_full_and_short_forms_complete_with_metadata_echoed(pipeline):
    pipeline.send(
        {
            "requestId": "full-1",
            "request": {
                "modelId": NOVA,
                "messages": [
                    {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Hi, how can I help?"},
                    {"role": "user", "content": [{"text": "Tell me about SQS"}]},
                ],
                "maxTokens": 200,
            },
            "metadata": {"caller": "billing", "ticket": 42},
        }
    )
    message_id = pipeline.send({"prompt": "Short and sweet", "temperature": 0.1})
    pipeline.drain()
    full = pipeline.record("full-1")
    assert full["status"] == "COMPLETED" and "Echo: Tell me about SQS" in full["content"]
    assert full["metadata"] == {"caller": "billing", "ticket": 42}
    assert full["source"]["type"] == "sqs" and full["resultLocation"].endswith("results/requests/full-1.json")
    short = pipeline.record(message_id)  # no requestId: the message id is the key
    assert short["status"] == "COMPLETED" and short["modelId"] == NOVA


def test_attachments_are_inlined_before_the_last_user_text(pipeline):
    pipeline.upload("attachments/diagram.png", (SAMPLES / "diagram.png").read_bytes())
    pipeline.upload("attachments/report.pdf", (SAMPLES / "report.pdf").read_bytes())
    pipeline.send(
        {
            "requestId": "att-1",
            "prompt": "Compare the two",
            "attachments": [
                {"uri": f"s3://{pipeline.bucket}/attachments/diagram.png", "label": "diagram"},
                {"uri": f"s3://{pipeline.bucket}/attachments/report.pdf"},
            ],
        }
    )
    pipeline.drain()
    record = pipeline.record("att-1")
    assert record["status"] == "COMPLETED", record
    assert (
        "image 1: png, 1918 bytes" in record["content"] and "document 1: pdf, 2312 bytes" in record["content"]
    )
    assert "Echo: Image 1 (diagram):\nDocument 2:\nCompare the two"[:20] in record["content"]


@pytest.mark.parametrize(
    ("body", "request_id", "expected"),
    [
        ('{"requestId": "broken-1", "prompt": ', None, "not valid JSON"),
        ({"requestId": "schema-1"}, None, "either `request` or `prompt`"),
        ({"requestId": "schema-2", "prompt": "x", "temperature": 3}, None, "temperature"),
        (
            {"requestId": "schema-3", "prompt": "x", "request": {"modelId": NOVA, "messages": []}},
            None,  # unreadable: recorded under its message id, not the requestId it names
            "request",
        ),
        (
            {
                "requestId": "schema-4",
                "request": {"modelId": NOVA, "messages": [{"role": "robot", "content": "x"}]},
            },
            None,  # unreadable: recorded under its message id, not the requestId it names
            "request.messages.0.role",
        ),
        (
            {
                "requestId": "att-missing",
                "prompt": "x",
                "attachments": [{"uri": "s3://nope-bucket/none.png"}],
            },
            "att-missing",
            "s3://nope-bucket/none.png",
        ),
        ({"requestId": "bad id!", "prompt": "x"}, None, "requestId"),
    ],
)
def test_invalid_messages_are_recorded_and_consumed(pipeline, body, request_id, expected):
    message_id = pipeline.send(body)
    pipeline.drain()
    record = pipeline.record(request_id or message_id)
    assert expected in failure(record)["message"]
    assert failure(record)["retryable"] is False
    assert pipeline.queue_depth("RequestQueue") == 0 and pipeline.queue_depth("RequestDLQ") == 0
    assert not [c for c in pipeline.emulator.calls if c.kind == "chat"]


def test_a_bad_message_does_not_disturb_its_batch(pipeline):
    for index in range(4):
        pipeline.send({"requestId": f"ok-{index}", "prompt": f"question {index}"})
    pipeline.send("{not json")
    pipeline.drain()
    records = {r["requestId"]: r["status"] for r in pipeline.records()}
    assert [records[f"ok-{i}"] for i in range(4)] == ["COMPLETED"] * 4
    assert sorted(records.values()).count("FAILED") == 1


def test_redelivery_of_a_completed_request_does_not_call_the_gateway_again(pipeline):
    body = {"requestId": "once-1", "prompt": "only once"}
    pipeline.send(body)
    pipeline.drain()
    pipeline.send(body)
    pipeline.send(body)
    pipeline.drain()
    assert pipeline.emulator.successful_chats_by_correlation_id() == {"once-1": 1}
    assert pipeline.record("once-1")["attempts"] == 1


def test_gateway_4xx_is_permanent_and_transient_faults_retry(pipeline):
    pipeline.emulator.fail_next("400")
    pipeline.send({"requestId": "refused-1", "prompt": "x"})
    pipeline.drain()
    assert failure(pipeline.record("refused-1"))["kind"] == "PermanentGatewayError"
    assert len([c for c in pipeline.emulator.calls if c.correlation_id == "refused-1"]) == 1
    pipeline.emulator.fail_next("429", count=3)
    pipeline.send({"requestId": "throttled-1", "prompt": "y"})
    pipeline.drain()
    record = pipeline.record("throttled-1")
    assert record["status"] == "COMPLETED" and record["attempts"] == 2


def test_last_attempt_records_gave_up_and_the_message_is_in_the_dlq(pipeline):
    # Rate limited on every delivery: 429s are not billed, so the bound on billable calls does not end it
    # first (test_gateway_answers covers that bound).
    pipeline.emulator.fail_next("429", count=1000)
    pipeline.send({"requestId": "outage-1", "prompt": "z"})
    pipeline.drain()
    error = failure(pipeline.record("outage-1"))
    assert error["message"].startswith("gave up after 3 attempts") and error["retryable"]
    assert pipeline.queue_depth("RequestDLQ") == 1


def test_notifications_are_published_for_terminal_states(pipeline):
    events = pipeline.stack.client("events")
    sqs = pipeline.stack.client("sqs")
    queue_url = sqs.create_queue(QueueName="notifications")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="all", EventPattern=json.dumps({"source": ["quant.ai-pipeline"]}))
    events.put_targets(Rule="all", Targets=[{"Id": "q", "Arn": queue_arn}])
    pipeline.send({"requestId": "note-ok", "prompt": "x"})
    bad = pipeline.send({"requestId": "note-bad"})  # unreadable: recorded under its message id
    pipeline.drain()
    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    details = {json.loads(m["Body"])["detail"]["requestId"]: json.loads(m["Body"]) for m in received}
    assert details["note-ok"]["detail-type"] == "AI Request Completed"
    assert details["note-ok"]["detail"]["resultLocation"].endswith("note-ok.json")
    assert details[bad]["detail-type"] == "AI Request Failed"
    assert details[bad]["detail"]["error"]["kind"] == "InvalidRequestError"
    assert pipeline.record("note-ok")["notifiedAt"]


def test_async_image_generation_is_polled_to_the_end(pipeline):
    pipeline.send(
        {
            "requestId": "image-1",
            "prompt": "A lighthouse at dawn",
            "modelId": "amazon.nova-pro-v1:0",
            "toolConfig": {"tools": [IMAGE_TOOL], "autoExecute": True, "allowedTools": ["generate_image"]},
        }
    )
    pipeline.drain(timeout=90)
    record = pipeline.record("image-1")
    assert record["status"] == "COMPLETED", record
    [execution] = record["executions"]
    assert execution["status"] == "complete" and execution["polls"] >= 1
    [location] = execution["files"]
    assert location.startswith(f"s3://{pipeline.bucket}/results/image-1/{execution['executionId']}/")
    key = location.split("/", 3)[3]
    png = pipeline.stack.client("s3").get_object(Bucket=pipeline.bucket, Key=key)["Body"].read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_the_committed_json_schema_matches_the_model():
    from devtools.schema import render

    assert SCHEMA.read_text() == render(), "run `python -m devtools.schema` and commit the result"
