"""Starts the ToolExecutionPoller state machine for a request's async tool executions."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

# Step Functions execution names: 1 to 80 characters of these.
_NAME_UNSAFE = re.compile(r"[^0-9A-Za-z_-]")


def execution_name(request_id: str) -> str:
    """The requestId itself when it is a valid name, so a duplicate start is refused by Step Functions."""
    safe = _NAME_UNSAFE.sub("-", request_id)
    if safe == request_id and len(safe) <= 80:
        return safe
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:16]
    return f"{safe[:63]}-{digest}"


@dataclass
class PollerStarter:
    client: Any = field(repr=False)
    state_machine_arn: str

    def start(self, request_id: str, executions: list[dict[str, Any]]) -> bool:
        """True when this call started the poller, False when it was already started for this request."""
        payload = {
            "requestId": request_id,
            "executions": [
                {
                    "executionId": e["executionId"],
                    "toolName": e.get("toolName"),
                    "toolUseId": e.get("toolUseId"),
                }
                for e in executions
            ],
        }
        try:
            self.client.start_execution(
                stateMachineArn=self.state_machine_arn,
                name=execution_name(request_id),
                input=json.dumps(payload),
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ExecutionAlreadyExists":
                return False
            raise
        return True
