"""Runs the ReprocessObjects state machine on a deployed stack and reads what it did: its outcome (the
execution's output, or its error) and the records of the run (through RunIndex, never a scan).

Shared by `make reprocess` (devtools.reprocess), bench/reprocess.py and the tests.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from devtools.embedded_aws import DeployedStack
from devtools.local_pipeline import plain

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shared import record_index


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str  # the execution's: SUCCEEDED, FAILED...
    output: dict[str, Any] | None  # the counts, when it SUCCEEDED
    error: str | None
    cause: str | None
    seconds: float


def start_run(stack: DeployedStack, run_input: Any, run_id: str | None = None) -> str:
    """Starts a run (the execution's name is the run id); returns its execution ARN."""
    stepfunctions = stack.client("stepfunctions")
    return stepfunctions.start_execution(
        stateMachineArn=stack.physical_id("ReprocessObjects"),
        name=run_id or f"run-{uuid.uuid4().hex[:12]}",
        input=run_input if isinstance(run_input, str) else json.dumps(run_input),
    )["executionArn"]


def wait_for_run(stack: DeployedStack, execution_arn: str, timeout: float = 120) -> RunOutcome:
    stepfunctions = stack.client("stepfunctions")
    started = time.monotonic()
    while True:
        described = stepfunctions.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            break
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"reprocess run {execution_arn} still running after {timeout} s")
        time.sleep(0.1)
    output = json.loads(described["output"]) if described.get("output") else None
    return RunOutcome(
        run_id=described["name"],
        status=described["status"],
        output=output,
        error=described.get("error"),
        cause=described.get("cause"),
        seconds=(described["stopDate"] - described["startDate"]).total_seconds(),
    )


def reprocess(
    stack: DeployedStack, run_input: Any, run_id: str | None = None, timeout: float = 120
) -> RunOutcome:
    return wait_for_run(stack, start_run(stack, run_input, run_id), timeout)


def run_records(stack: DeployedStack, run_id: str) -> list[dict[str, Any]]:
    """The run's records as RunIndex holds them (requestId, runId, status, updatedAt, source): the query the
    functions' own code makes, on the deployed table as the deployer."""
    assert stack.server.deployer is not None
    dynamodb = boto3.resource(
        "dynamodb",
        endpoint_url=stack.endpoint,
        region_name=stack.region,
        **stack.server.deployer.client_arguments(),
    )
    table = dynamodb.Table(stack.physical_id("ResultsTable"))
    return [plain(item) for item in record_index.run_records(table, run_id)]
