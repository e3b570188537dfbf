"""ReprocessFunction: the steps of the ReprocessObjects state machine (plan, queue one batch, finish)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import Logger

from handlers.event_shapes import reprocess_step
from shared import logs
from shared.models import parse
from shared.reprocess import BatchQueue, ReprocessPlan, Scope, finish_run, plan_run, queue_batch
from shared.runtime import Runtime, runtime

logger = Logger()
logs.use_service_logger(logger)


def scope_of(rt: Runtime) -> Scope:
    s = rt.settings
    return Scope(s.results_bucket, s.reprocess_prefixes, s.results_prefix)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    event = reprocess_step("ReprocessFunction", event)
    rt = runtime()
    step = event["step"]
    if step == "plan":
        plan = plan_run(event["input"], event["runId"], scope_of(rt), rt.settings.allowed_model_ids)
        return plan.model_dump()
    plan = parse(ReprocessPlan, event["plan"], root="plan")
    logs.bind(runId=plan.runId)
    if step == "queue":
        queue = BatchQueue(rt.sqs, rt.settings.upload_queue_url)
        return queue_batch(plan, event["items"], scope=scope_of(rt), table=rt.table, queue=queue)
    return finish_run(plan, event["batches"], rt.notifier)
