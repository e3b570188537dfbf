"""moto's Distributed Map as AWS runs it (devtools/embedded_aws/distributed_map.py): the S3 listObjectsV2
ItemReader lists every page in AWS's item shape, and ItemBatcher gives each child a batch with its BatchInput.
Without the fixes moto lists only the first 1,000 objects, fails on an empty prefix and refuses ItemBatcher."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from unittest import mock

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID

from devtools.embedded_aws.distributed_map import (
    ItemBatcher,
    UnsupportedItemBatcherError,
    distributed_map_fixes,
)

BUCKET = "listing-bucket"


def definition(batcher: dict | None, child: dict | None = None) -> dict:
    state = {
        "Type": "Map",
        "ItemReader": {
            "Resource": "arn:aws:states:::s3:listObjectsV2",
            "Parameters": {"Bucket.$": "$.bucket", "Prefix.$": "$.prefix"},
        },
        "MaxConcurrency": 4,
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": "Echo",
            "States": {"Echo": child or {"Type": "Pass", "End": True}},
        },
        "End": True,
    }
    if batcher is not None:
        state["ItemBatcher"] = batcher
    return {"StartAt": "List", "States": {"List": state}}


@pytest.fixture
def aws() -> Iterator[tuple]:
    patchers = distributed_map_fixes()
    for patcher in patchers:
        patcher.start()
    try:
        with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
            yield (
                boto3.client("s3", region_name="us-east-1"),
                boto3.client("stepfunctions", region_name="us-east-1"),
            )
    finally:
        for patcher in patchers:
            patcher.stop()


def run(stepfunctions, state_machine: dict, state_input: dict) -> dict:
    arn = stepfunctions.create_state_machine(
        name=f"m{time.monotonic_ns()}",
        definition=json.dumps(state_machine),
        roleArn=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/r",
    )["stateMachineArn"]
    execution = stepfunctions.start_execution(stateMachineArn=arn, input=json.dumps(state_input))[
        "executionArn"
    ]
    deadline = time.monotonic() + 120
    while (described := stepfunctions.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return described


def test_every_page_is_listed_in_batches_with_their_batch_input(aws):
    s3, stepfunctions = aws
    s3.create_bucket(Bucket=BUCKET)
    for index in range(1003):  # over one ListObjectsV2 page
        s3.put_object(Bucket=BUCKET, Key=f"in/{index:05}.txt", Body=b"x" * (index % 3))
    s3.put_object(Bucket=BUCKET, Key="elsewhere.txt", Body=b"x")
    batcher = {"MaxItemsPerBatch": 400, "BatchInput": {"run.$": "$.run", "fixed": 1}}
    described = run(stepfunctions, definition(batcher), {"bucket": BUCKET, "prefix": "in/", "run": "r1"})
    assert described["status"] == "SUCCEEDED", described
    batches = json.loads(described["output"])
    assert [len(b["Items"]) for b in batches] == [400, 400, 203]
    assert all(b["BatchInput"] == {"run": "r1", "fixed": 1} for b in batches)
    first = batches[0]["Items"][0]
    # Step Functions' names, not ListObjectsV2's: Etag, and LastModified in epoch seconds.
    assert set(first) == {"Etag", "Key", "LastModified", "Size", "StorageClass"}
    assert (
        first["Key"] == "in/00000.txt"
        and first["Etag"].startswith('"')
        and isinstance(first["LastModified"], int)
    )
    keys = [item["Key"] for b in batches for item in b["Items"]]
    assert len(set(keys)) == 1003 and "elsewhere.txt" not in keys


def test_an_empty_listing_gives_no_children_and_no_error(aws):
    s3, stepfunctions = aws
    s3.create_bucket(Bucket=BUCKET)
    described = run(
        stepfunctions, definition({"MaxItemsPerBatch": 10}), {"bucket": BUCKET, "prefix": "none/"}
    )
    assert (described["status"], json.loads(described["output"])) == ("SUCCEEDED", [])


def test_batches_are_cut_by_bytes_too_and_unknown_batcher_fields_are_refused_by_name():
    batcher = ItemBatcher.from_definition("List", {"MaxInputBytesPerBatch": 200})
    items = [{"Key": f"k{index:03}", "pad": "x" * 40} for index in range(10)]
    batches = batcher.batches(items, {})
    assert sum(len(b["Items"]) for b in batches) == 10 and len(batches) > 1
    assert all(len(json.dumps(b)) <= 200 for b in batches)
    with pytest.raises(UnsupportedItemBatcherError, match="MaxItemsPerBatchPath"):
        ItemBatcher.from_definition("List", {"MaxItemsPerBatchPath": "$.n"})


def test_a_failed_child_fails_the_map_run_as_no_failure_is_tolerated(aws):
    s3, stepfunctions = aws
    s3.create_bucket(Bucket=BUCKET)
    for index in range(5):
        s3.put_object(Bucket=BUCKET, Key=f"in/{index}.txt", Body=b"x")
    failing = {"Type": "Fail", "Error": "BatchBroke", "Cause": "on purpose"}
    described = run(
        stepfunctions, definition({"MaxItemsPerBatch": 2}, failing), {"bucket": BUCKET, "prefix": "in/"}
    )
    assert (described["status"], described.get("error")) == (
        "FAILED",
        "States.ExceedToleratedFailureThreshold",
    )


def test_queue_scans_read_the_clock_once_not_once_per_message():
    """moto's SendMessage scanned the queue reading the clock per message (quadratic sending: a reprocess run
    queueing thousands of objects took minutes); the fix reads it once per scan and counts the same."""
    from moto.sqs import models as sqs_models

    from devtools.embedded_aws.moto_fixes import moto_fixes

    patchers = [p for p in moto_fixes() if p.getter() is sqs_models.Queue]
    assert len(patchers) == 3
    for patcher in patchers:
        patcher.start()
    try:
        with mock_aws():
            sqs = boto3.client("sqs", region_name="us-east-1")
            url = sqs.create_queue(QueueName="counted")["QueueUrl"]
            for index in range(200):
                sqs.send_message(QueueUrl=url, MessageBody=str(index))
            sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
            sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60)
            clock = sqs_models.unix_time_millis
            with mock.patch.object(sqs_models, "unix_time_millis", wraps=clock) as reads:
                attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            assert reads.call_count < 20
            assert (
                attributes["ApproximateNumberOfMessages"],
                attributes["ApproximateNumberOfMessagesNotVisible"],
                attributes["ApproximateNumberOfMessagesDelayed"],
            ) == ("190", "10", "1")  # visible, in flight, delayed (each counted once, as SQS does)
    finally:
        for patcher in patchers:
            patcher.stop()
