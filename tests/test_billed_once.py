"""Billed once: the gateway's answer is stored before anything that can fail, and a later delivery finishes
from it instead of asking (and paying) again.

The pipeline's domain on moto in this process (DynamoDB, S3, EventBridge) and the gateway emulator, with a
record store that fails where a test says: a fault that cannot be provoked in moto on demand.
"""

from __future__ import annotations

import random

import boto3
import pytest

from shared.errors import RecordRefusedError, TransientStoreError
from shared.gateway import GatewayClient, RetryPolicy
from shared.notifications import Notifier
from shared.pipeline import Job, Pipeline
from shared.poller import PollerStarter
from shared.records import RecordStore
from shared.request_builder import build_chat_request
from shared.results import ResultStore
from shared.telemetry import Telemetry
from tests.plugins.gateway import EMULATOR_TOKEN

BUCKET = "results-bucket"


class FaultyRecords(RecordStore):
    """Fails `finish` with the given errors, one per call, then works."""

    def __init__(self, table, faults: list[Exception]):
        super().__init__(table, ttl_days=1)
        self.faults = faults

    def finish(self, *args, **kwargs):
        if self.faults:
            raise self.faults.pop(0)
        return super().finish(*args, **kwargs)


@pytest.fixture
def aws(records_table):
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    return records_table, s3


def pipeline_with(aws, emulator, faults: list[Exception]) -> Pipeline:
    table, s3 = aws
    client = GatewayClient(
        emulator.base_url,
        "acme",
        lambda: EMULATOR_TOKEN,
        retry=RetryPolicy(base_delay=0.01),
        rng=random.Random(1),
    )
    return Pipeline(
        gateway=client,
        records=FaultyRecords(table, faults),
        results=ResultStore(s3, BUCKET, "results/"),
        notifier=Notifier(boto3.client("events", region_name="us-east-1"), "default"),
        poller=PollerStarter(boto3.client("stepfunctions", region_name="us-east-1"), "arn:unused"),
        max_receive_count=5,
        telemetry=Telemetry(),
        max_gateway_calls=4,
    )


def job(request_id: str, delivery: int) -> Job:
    return Job(
        request_id=request_id,
        source={"type": "sqs", "messageId": "m-1"},
        build=lambda: build_chat_request(
            [], "What is a dead-letter queue?", model_id="amazon.nova-lite-v1:0"
        ),
        result_key=f"results/requests/{request_id}.json",
        receive_count=delivery,
        fingerprint="the-message",
    )


def test_a_later_delivery_finishes_from_the_stored_answer(aws, emulator):
    pipeline = pipeline_with(aws, emulator, [TransientStoreError("DynamoDB ThrottlingException")])
    with pytest.raises(TransientStoreError):
        pipeline.run(job("throttled-write", 1), budget_seconds=30)
    assert pipeline.records.get("throttled-write")["status"] == "PROCESSING"

    outcome = pipeline.run(job("throttled-write", 2), budget_seconds=30)
    assert outcome.status == "COMPLETED"
    record = pipeline.records.get("throttled-write")
    assert record["status"] == "COMPLETED" and "dead-letter queue" in record["content"]
    assert emulator.successful_chats_by_correlation_id() == {"throttled-write": 1}


def test_a_record_dynamodb_refuses_ends_failed_with_the_answer_kept(aws, emulator):
    refused = RecordRefusedError(
        "DynamoDB refused the record: Item size has exceeded the maximum allowed size"
    )
    pipeline = pipeline_with(aws, emulator, [refused])
    outcome = pipeline.run(job("too-big", 1), budget_seconds=30)
    assert outcome.status == "FAILED"
    record = pipeline.records.get("too-big")
    assert record["error"]["kind"] == "RecordRefusedError" and record["error"]["retryable"] is False
    stored = pipeline.results.get_json("results/requests/too-big.json")
    assert "dead-letter queue" in stored["answer"]["response"]["content"]
    assert record["resultLocation"] == f"s3://{BUCKET}/results/requests/too-big.json"


def test_an_item_counts_what_goes_around_the_result():
    from shared.records import MAX_INLINE_RESULT_BYTES, split_for_item

    result = {"content": "x" * (MAX_INLINE_RESULT_BYTES - 1000), "usage": {"inputTokens": 1}}
    assert split_for_item(result) == (result, False)
    fields, in_s3 = split_for_item(result, reserved={"metadata": {"blob": "m" * 8000}})
    assert in_s3 and "content" not in fields and fields["usage"] == {"inputTokens": 1}
