"""Every request ends, and is announced once it ends: poison, redrives and token rotations.

On the deployed template in the embedded AWS with the gateway emulator (GatewayMaxAttempts 2,
MaxReceiveCount 3 in the pipeline fixture).
"""

from __future__ import annotations

import json

from tests.plugins.pipeline import Pipeline


def events_queue(pipeline: Pipeline) -> tuple[object, str]:
    """An SQS queue that every event of the pipeline's bus reaches, to read what was announced."""
    events = pipeline.stack.client("events")
    sqs = pipeline.stack.client("sqs")
    url = sqs.create_queue(QueueName="announced")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="everything", EventPattern=json.dumps({"source": ["quant.ai-pipeline"]}))
    events.put_targets(Rule="everything", Targets=[{"Id": "q", "Arn": arn}])
    return sqs, url


def announced(sqs, url: str) -> list[tuple[str, str]]:
    found = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return found
        for message in messages:
            body = json.loads(message["Body"])
            found.append((body["detail"]["requestId"], body["detail-type"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_a_redriven_request_announces_its_new_final_status(pipeline: Pipeline):
    sqs, url = events_queue(pipeline)
    pipeline.emulator.fail_next("429", count=6)  # every attempt of every delivery
    message = {"requestId": "redriven", "prompt": "hello"}
    pipeline.send(message)
    pipeline.drain()
    assert pipeline.record("redriven")["status"] == "FAILED"
    assert announced(sqs, url) == [("redriven", "AI Request Failed")]

    pipeline.send(message)  # what a DLQ redrive delivers: the same message
    pipeline.drain()
    assert pipeline.record("redriven")["status"] == "COMPLETED"
    assert announced(sqs, url) == [("redriven", "AI Request Completed")]


def test_poison_never_skips_the_record(pipeline: Pipeline):
    not_records = pipeline.send({"Records": [1]}, queue="UploadEventsQueue")
    no_s3 = pipeline.send({"Records": [{"eventSource": "aws:s3", "s3": "nope"}]}, queue="UploadEventsQueue")
    # A number DynamoDB cannot hold (its range ends at 1E-130): the claim is refused.
    tiny = pipeline.send({"requestId": "tiny", "prompt": "x", "metadata": {"tiny": 1e-200}})
    pipeline.drain()

    for message_id in (not_records, no_s3):
        record = pipeline.record(f"upload-message-{message_id}")
        assert record["status"] == "FAILED" and record["error"]["message"].startswith("Records.0"), record
    record = pipeline.record(tiny)
    assert record["status"] == "FAILED" and "DynamoDB refused the record" in record["error"]["message"]
    assert pipeline.queue_depth("UploadEventsDLQ") == 0 and pipeline.queue_depth("RequestDLQ") == 0
    assert not [c for c in pipeline.emulator.calls if c.kind == "chat"]


def rotate(pipeline: Pipeline, token: str, *, in_secret: bool) -> None:
    pipeline.emulator.config.token = token
    if in_secret:
        secret = pipeline.stack.physical_id("GatewayTokenSecret")
        pipeline.stack.client("secretsmanager").put_secret_value(SecretId=secret, SecretString=token)


def test_a_rotated_token_is_picked_up_at_once(pipeline: Pipeline):
    pipeline.send({"requestId": "before-rotation", "prompt": "x"})
    pipeline.drain()  # the function's process now holds the token in its 5-minute cache
    rotate(pipeline, "rotated-token", in_secret=True)
    pipeline.send({"requestId": "after-rotation", "prompt": "x"})
    pipeline.drain()
    assert pipeline.record("after-rotation")["status"] == "COMPLETED"
    calls = [c.status for c in pipeline.emulator.calls if c.correlation_id == "after-rotation"]
    assert calls == [401, 200]


def test_a_refused_token_keeps_the_request_for_when_it_is_fixed(pipeline: Pipeline):
    rotate(pipeline, "a-token-the-stack-does-not-have", in_secret=False)
    message = {"requestId": "refused-token", "prompt": "x"}
    pipeline.send(message)
    pipeline.drain()
    record = pipeline.record("refused-token")
    assert record["status"] == "FAILED" and record["error"]["retryable"] is True, record
    assert record["error"]["kind"] == "GatewayAuthError"
    assert record["error"]["message"].startswith("gave up after 3 attempts")
    assert pipeline.queue_depth("RequestDLQ") == 1  # kept, to redrive once the token is fixed
    assert record.get("gatewayCalls", 0) == 0  # refused at the door: nothing billed

    rotate(pipeline, "a-token-the-stack-does-not-have", in_secret=True)
    pipeline.send(message)  # the redrive
    pipeline.drain()
    assert pipeline.record("refused-token")["status"] == "COMPLETED"
