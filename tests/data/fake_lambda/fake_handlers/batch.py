"""BatchFunction: each SQS message's JSON body says what to do with it (`action`)."""

from __future__ import annotations

import json
import os
from typing import Any

import boto3


class BatchExplodedError(Exception):
    pass


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    for record in event["Records"]:
        body = json.loads(record["body"])
        action = body.get("action", "ok")
        first_delivery = record["attributes"]["ApproximateReceiveCount"] == "1"
        if action == "raise-once" and first_delivery:
            raise BatchExplodedError(f"message {body['id']} fails the whole batch")
        if action == "fail":
            failures.append({"itemIdentifier": record["messageId"]})
        if action == "retry-now" and first_delivery:
            # The handler shortens its own message's visibility, as a retry backoff does.
            boto3.client("sqs").change_message_visibility(
                QueueUrl=os.environ["WORK_QUEUE_URL"],
                ReceiptHandle=record["receiptHandle"],
                VisibilityTimeout=0,
            )
            failures.append({"itemIdentifier": record["messageId"]})
        if action == "bad-report":
            failures.append({"itemIdentifier": "not-a-message-of-this-batch"})
    return {"batchItemFailures": failures}
