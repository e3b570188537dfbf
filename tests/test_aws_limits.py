"""Limits the embedded AWS enforces as AWS does, where moto 5.2.5 did not (devtools/embedded_aws/moto_fixes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError

FAKE_TEMPLATE = Path(__file__).resolve().parent / "data" / "fake_template.yaml"
KB = 1024


def test_an_update_item_over_400_kb_is_refused_whole(deploy_stack):
    stack = deploy_stack(template=FAKE_TEMPLATE, start_pollers=False)
    dynamodb, table = stack.client("dynamodb"), stack.physical_id("RunsTable")
    dynamodb.put_item(TableName=table, Item={"runId": {"S": "r1"}, "status": {"S": "before"}})
    oversize = {
        "TableName": table,
        # The first actions fit; the last takes the item over 400 KB.
        "UpdateExpression": "SET #status = :after, a = :big, b = :big",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": {":after": {"S": "after"}, ":big": {"S": "x" * (300 * KB)}},
    }
    with pytest.raises(ClientError, match="Item size to update has exceeded the maximum allowed size"):
        dynamodb.update_item(Key={"runId": {"S": "r1"}}, **oversize)
    item = dynamodb.get_item(TableName=table, Key={"runId": {"S": "r1"}}, ConsistentRead=True)["Item"]
    assert item == {"runId": {"S": "r1"}, "status": {"S": "before"}}

    # An update that would create the item creates nothing.
    with pytest.raises(ClientError, match="maximum allowed size"):
        dynamodb.update_item(Key={"runId": {"S": "r2"}}, **oversize)
    assert "Item" not in dynamodb.get_item(TableName=table, Key={"runId": {"S": "r2"}}, ConsistentRead=True)
    # Under the limit, the same update applies.
    small = {**oversize, "ExpressionAttributeValues": {":after": {"S": "after"}, ":big": {"S": "x"}}}
    dynamodb.update_item(Key={"runId": {"S": "r1"}}, **small)
    item = dynamodb.get_item(TableName=table, Key={"runId": {"S": "r1"}}, ConsistentRead=True)["Item"]
    assert item["status"] == {"S": "after"}


def test_s3_keys_over_1024_bytes_are_refused(deploy_stack):
    stack = deploy_stack(template=FAKE_TEMPLATE, start_pollers=False)
    s3 = stack.client("s3")
    s3.create_bucket(Bucket="limits")
    longest = "k" * 1024
    s3.put_object(Bucket="limits", Key=longest, Body=b"fits")
    too_long = "é" * 513  # 1,026 bytes in UTF-8, though 513 characters
    for call in (
        lambda: s3.put_object(Bucket="limits", Key=too_long, Body=b"x"),
        lambda: s3.create_multipart_upload(Bucket="limits", Key=too_long),
        lambda: s3.copy_object(
            Bucket="limits", Key=too_long, CopySource={"Bucket": "limits", "Key": longest}
        ),
    ):
        with pytest.raises(ClientError) as raised:
            call()
        assert raised.value.response["Error"]["Code"] == "KeyTooLongError"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="limits")["Contents"]] == [longest]
