"""`deploy_stack`: template.yaml (or another template) deployed into the embedded AWS for one test."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from devtools.embedded_aws import DeployedStack, EmbeddedAws, Template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# Fast settings for tests, applied to the parameters the deployed template declares.
FAST_PARAMETERS = {"RetryBaseDelaySeconds": "0", "PollMaxWaitSeconds": "1", "MaxReceiveCount": "3"}
# Seconds; shortens every queue's VisibilityTimeout (750 in template.yaml) so failed messages come back quickly.
# Tests and local runs only: deployed stacks keep the template's values.
FAST_VISIBILITY_TIMEOUT = 2
# Seconds; replaces the SQS event sources' MaximumBatchingWindowInSeconds (1 in template.yaml), which a test's
# lone message would wait out on every delivery. Tests of batching itself pass None.
FAST_BATCHING_WINDOW = 0.0

DeployStack = Callable[..., DeployedStack]


@pytest.fixture
def deploy_stack() -> Iterator[DeployStack]:
    """`deploy_stack(parameters=..., extra_environment=...)` -> a DeployedStack, closed after the test.

    Keyword options: `template` (default template.yaml), `visibility_timeout_override` (default 2 s; None keeps
    the template's), `batching_window_override` (default 0 s; None keeps the template's), and anything else
    EmbeddedAws.deploy takes (stack_name, start_pollers).
    """
    stacks: list[DeployedStack] = []

    def deploy(
        parameters: Mapping[str, Any] | None = None,
        extra_environment: Mapping[str, str] | None = None,
        *,
        template: str | Path = TEMPLATE,
        visibility_timeout_override: int | None = FAST_VISIBILITY_TIMEOUT,
        batching_window_override: float | None = FAST_BATCHING_WINDOW,
        **options: Any,
    ) -> DeployedStack:
        declared = Template.load(template).parameters
        fast = {name: value for name, value in FAST_PARAMETERS.items() if name in declared}
        stack = EmbeddedAws.deploy(
            template,
            parameters={**fast, **(parameters or {})},
            extra_environment=extra_environment,
            visibility_timeout_override=visibility_timeout_override,
            batching_window_override=batching_window_override,
            **options,
        )
        stacks.append(stack)
        return stack

    yield deploy
    for stack in reversed(stacks):
        stack.close()


@pytest.fixture
def records_table() -> Iterator[Any]:
    """A table shaped as template.yaml's ResultsTable, on moto in this process (for the domain's own tests)."""
    import boto3
    from moto import mock_aws

    from devtools.embedded_aws.template import Template

    shape = Template.load(ROOT / "template.yaml").resource_properties("ResultsTable")
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        yield dynamodb.create_table(
            TableName="records",
            KeySchema=shape["KeySchema"],
            AttributeDefinitions=shape["AttributeDefinitions"],
            GlobalSecondaryIndexes=shape["GlobalSecondaryIndexes"],
            BillingMode="PAY_PER_REQUEST",
        )
