"""PollExecutionFunction: one poll of one async tool execution, a step of the ToolExecutionPoller."""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.logging import Logger

from handlers.event_shapes import poll_state
from shared import logs
from shared.runtime import runtime
from shared.tool_executions import poll_step

logger = Logger()
logs.use_service_logger(logger)


@logger.inject_lambda_context(correlation_id_path="requestId", clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    event = poll_state("PollExecutionFunction", event)
    rt = runtime()
    # A transient gateway fault raises TransientGatewayError: the state machine's Retry handles it.
    state = poll_step(
        event, gateway=rt.gateway, results=rt.results, now=time.time(), allowlist=rt.image_allowlist
    )
    logger.info("execution %s is %s after %d polls", state["executionId"], state["status"], state["polls"])
    return state
