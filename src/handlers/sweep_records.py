"""SweeperFunction: on a schedule, ends the records that nothing else will finish (see shared.stranded)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import Logger

from handlers.event_shapes import sweep_event
from shared import logs
from shared.runtime import runtime
from shared.stranded import sweep

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
logs.use_service_logger(logger)

# Records settled per run: each costs a few writes; the next run (minutes later) takes the rest.
MAX_PER_RUN = 500


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    sweep_event("SweeperFunction", event)
    rt = runtime()
    report = sweep(
        records=rt.records, notifier=rt.notifier, telemetry=rt.telemetry, now=time.time(), limit=MAX_PER_RUN
    )
    logger.info("swept %d record(s): %s", report["swept"], report["byStatus"])
    return report
