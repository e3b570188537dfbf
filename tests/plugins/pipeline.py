"""`pipeline`: template.yaml on the embedded AWS, wired to the gateway emulator, with helpers to feed it.

The wiring and the helpers are devtools.local_pipeline's, the same `make run` and `make invoke` use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devtools.emulator import GatewayEmulator
from devtools.local_pipeline import GatewayTarget, LocalPipeline
from tests.plugins.gateway import EMULATOR_TOKEN

__all__ = ["ORGANISATION", "Pipeline", "emulator_gateway", "pipeline", "pipeline_parameters"]

ORGANISATION = "acme"


@dataclass
class Pipeline(LocalPipeline):
    emulator: GatewayEmulator  # always the emulator in tests


def emulator_gateway(emulator: GatewayEmulator) -> GatewayTarget:
    return GatewayTarget("emulator", emulator.base_url, ORGANISATION, EMULATOR_TOKEN)


def pipeline_parameters(emulator: GatewayEmulator) -> dict[str, str]:
    return {
        **emulator_gateway(emulator).parameters(),
        "GatewayMaxAttempts": "2",
        "RetryBaseDelaySeconds": "1",
    }


@pytest.fixture
def pipeline(
    request: pytest.FixtureRequest, deploy_stack: Any, emulator: GatewayEmulator
) -> Iterator[Pipeline]:
    """template.yaml deployed for one test; `@pytest.mark.pipeline(...)` gives the deploy other options."""
    # Quick async executions and retries, so the poller and redelivery tests take seconds.
    emulator.config.execution_pending_seconds = 0.2
    emulator.config.execution_seconds = 0.8
    emulator.config.retry_after_seconds = 0
    marker = request.node.get_closest_marker("pipeline")
    stack = deploy_stack(
        **{
            "parameters": pipeline_parameters(emulator),
            # The token in the stack's secret: the functions read it through Secrets Manager and their roles.
            "secret_values": emulator_gateway(emulator).secret_values(),
            # Long enough that a message is never redelivered while its first run is still going.
            "visibility_timeout_override": 20,
            **(marker.kwargs if marker else {}),
        }
    )
    yield Pipeline(stack, emulator)
