"""Found by the chaos benchmark, and now what the README says (Deploy, Redrive): a queued request without a
`requestId` is recorded under its SQS message id, and a DLQ redrive gives every message a new id (AWS: "all
redriven messages are considered new messages and are assigned a new messageID"). So the redriven request is
a new request under its new message id, and its old record stays FAILED beside it, both announced."""

from __future__ import annotations

import json
import time

from tests.plugins.pipeline import Pipeline
from tests.test_resilience import announced, events_queue


def redrive_as_sqs_does(pipeline: Pipeline) -> int:
    """RequestDLQ's messages back to RequestQueue, each as a new message (new message id), as a message move
    task does (moto has none)."""
    sqs = pipeline.stack.client("sqs")
    dlq, queue = pipeline.stack.physical_id("RequestDLQ"), pipeline.stack.physical_id("RequestQueue")
    moved = 0
    while messages := sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            sqs.send_message(QueueUrl=queue, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    return moved


def wait_for_dlq(pipeline: Pipeline, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while pipeline.queue_depth("RequestDLQ") == 0:
        assert time.monotonic() < deadline, "the message never reached the DLQ"
        time.sleep(0.2)


def test_a_redriven_request_without_a_request_id_is_a_new_request_under_its_new_message_id(
    pipeline: Pipeline,
):
    sqs, url = events_queue(pipeline)
    body = json.dumps({"prompt": "no requestId here"})
    pipeline.emulator.fail_next("429", count=6)  # every attempt of every delivery (not billed)
    first_id = pipeline.send(body)
    wait_for_dlq(pipeline)
    pipeline.drain()
    gave_up = pipeline.record(first_id)
    assert gave_up["status"] == "FAILED" and gave_up["error"]["message"].startswith("gave up"), gave_up

    assert redrive_as_sqs_does(pipeline) == 1
    pipeline.drain()

    assert pipeline.record(first_id)["status"] == "FAILED"  # left as it was
    [redriven] = [
        r
        for r in pipeline.records()
        if r["requestId"] != first_id and r.get("source", {}).get("type") == "sqs"
    ]
    assert redriven["status"] == "COMPLETED" and redriven["requestId"] == redriven["source"]["messageId"]
    assert sorted(announced(sqs, url)) == sorted(
        [(first_id, "AI Request Failed"), (redriven["requestId"], "AI Request Completed")]
    )
