"""`pipeline`: template.yaml on the embedded AWS, wired to the gateway emulator, with helpers to feed it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devtools.embedded_aws import DeployedStack
from devtools.emulator import GatewayEmulator
from tests.plugins.gateway import EMULATOR_TOKEN

ORGANISATION = "acme"


@dataclass
class Pipeline:
    stack: DeployedStack
    emulator: GatewayEmulator

    @property
    def bucket(self) -> str:
        return self.stack.physical_id("UploadsBucket")

    @property
    def table(self) -> Any:
        return self.stack.client("dynamodb")

    def upload(self, key: str, data: bytes, **metadata: str) -> None:
        self.stack.client("s3").put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=metadata)

    def send(self, body: dict[str, Any] | str, queue: str = "RequestQueue") -> str:
        text = body if isinstance(body, str) else json.dumps(body)
        return self.stack.client("sqs").send_message(
            QueueUrl=self.stack.physical_id(queue), MessageBody=text
        )["MessageId"]

    def drain(self, timeout: float = 60) -> None:
        self.stack.drain(timeout=timeout)

    def records(self) -> list[dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        deserializer = TypeDeserializer()
        pages = self.table.get_paginator("scan").paginate(TableName=self.stack.physical_id("ResultsTable"))
        items = [item for page in pages for item in page["Items"]]
        return [_plain({k: deserializer.deserialize(v) for k, v in item.items()}) for item in items]

    def record(self, request_id: str) -> dict[str, Any]:
        found = [r for r in self.records() if r["requestId"] == request_id]
        assert found, f"no record {request_id}; records: {[r['requestId'] for r in self.records()]}"
        return found[0]

    def record_for_key(self, key: str) -> dict[str, Any]:
        found = [r for r in self.records() if (r.get("source") or {}).get("key") == key]
        assert len(found) == 1, f"{len(found)} records for {key}: {self.records()}"
        return found[0]

    def result_json(self, record: dict[str, Any]) -> dict[str, Any]:
        bucket, key = record["resultLocation"][5:].split("/", 1)
        return json.loads(self.stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())

    def queue_depth(self, queue: str) -> int:
        attributes = self.stack.client("sqs").get_queue_attributes(
            QueueUrl=self.stack.physical_id(queue),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )


def _plain(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def pipeline_parameters(emulator: GatewayEmulator) -> dict[str, str]:
    return {
        "GatewayOrganisation": ORGANISATION,
        "GatewayBaseUrl": emulator.base_url,
        "GatewayMaxAttempts": "2",
        "RetryBaseDelaySeconds": "1",
    }


@pytest.fixture
def pipeline(deploy_stack: Any, emulator: GatewayEmulator) -> Iterator[Pipeline]:
    # Quick async executions and retries, so the poller and redelivery tests take seconds.
    emulator.config.execution_pending_seconds = 0.2
    emulator.config.execution_seconds = 0.8
    emulator.config.retry_after_seconds = 0
    stack = deploy_stack(
        parameters=pipeline_parameters(emulator),
        extra_environment={"GATEWAY_TOKEN": EMULATOR_TOKEN},
        # Long enough that a message is never redelivered while its first run is still going.
        visibility_timeout_override=20,
    )
    yield Pipeline(stack, emulator)
