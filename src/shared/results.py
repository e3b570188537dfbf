"""Result payloads in S3: the full result JSON of each request and the files its tools produced."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from shared.sources import raise_for_s3


@dataclass
class ResultStore:
    client: Any = field(repr=False)
    bucket: str
    prefix: str

    def key_for_upload(self, source_key: str, request_id: str) -> str:
        """One result per upload of a key: each version or overwrite is a request of its own."""
        return f"{self.prefix}{source_key}/{request_id}.json"

    def key_for_request(self, request_id: str) -> str:
        return f"{self.prefix}requests/{request_id}.json"

    def key_for_tool_file(self, request_id: str, execution_id: str, name: str) -> str:
        return f"{self.prefix}{request_id}/{execution_id}/{name}"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put_json(self, key: str, document: dict[str, Any]) -> str:
        body = json.dumps(document, indent=2, default=str).encode()
        return self.put_bytes(key, body, "application/json")

    def put_bytes(self, key: str, data: bytes, content_type: str) -> str:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except ClientError as error:
            raise_for_s3(error, f"PUT {self.uri(key)}")
            raise
        return self.uri(key)

    def get_json(self, key: str) -> dict[str, Any] | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as error:
            # No role may list the bucket (least privilege), and then S3 answers a missing key with 403.
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "AccessDenied", "403"):
                return None
            raise
        return json.loads(body)
