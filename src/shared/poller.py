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
_NAME_LIMIT = 80


def execution_name(request_id: str, attempt: int) -> str:
    """One name per request and attempt (the record's claim count): a duplicate start of the same attempt is
    refused by Step Functions, and a rerun of the request (a later attempt) starts an execution of its own.
    A digest of the requestId keeps two requests apart whatever their names look like once made safe."""
    suffix = f"-{hashlib.sha256(request_id.encode()).hexdigest()[:16]}-a{attempt}"
    readable = _NAME_UNSAFE.sub("-", request_id)[: _NAME_LIMIT - len(suffix)]
    return readable + suffix


@dataclass
class PollerStarter:
    client: Any = field(repr=False)
    state_machine_arn: str

    def start(self, request_id: str, executions: list[dict[str, Any]], attempt: int) -> bool:
        """True when this call started the poller, False when it was already started for this attempt."""
        payload = {
            "requestId": request_id,
            # The attempt this poller finishes: a failure it reports never touches a later attempt's record.
            "attempt": attempt,
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
                name=execution_name(request_id, attempt),
                input=json.dumps(payload),
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ExecutionAlreadyExists":
                return False
            raise
        return True
