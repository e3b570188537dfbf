"""Reprocessing: objects already in the bucket through the pipeline again, at any scale.

The ReprocessObjects state machine (statemachine/reprocess_objects.asl.json) runs three steps of
ReprocessFunction around a Distributed Map whose S3 ItemReader lists the prefix:

plan (check the input; fail the execution at once on bad input) -> for each batch of listed objects: queue
(refuse what the run may not read, skip what is done, put a request message for the rest on the upload
queue) -> finish (sum the batches' counts, announce `AI Reprocess Finished`).

Every queued object goes through UploadEventsQueue, so the same concurrency cap, retries, records and events
apply as for an upload. No step holds more than one batch of the listing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import InvalidRequestError, PipelineError, TransientStoreError
from shared.models import build_models, parse
from shared.notifications import Notifier
from shared.record_index import has_completed_record
from shared.records import object_version
from shared.reprocess_messages import RUN_ID, ModelId, Prompt, ReprocessMessage, RunId, parse_under
from shared.request_builder import check_model_allowed

logger = logging.getLogger(__name__)

FINISHED_DETAIL_TYPE = "AI Reprocess Finished"
SEND_BATCH = 10  # SQS SendMessageBatch takes at most ten messages
COUNTS = ("listed", "queued", "skipped", "refused")


class ReprocessInputError(PipelineError):
    """The run's input is not one the operator allowed: the execution fails at once and queues nothing."""


class ReprocessInput(BaseModel):
    """What an operator starts a run with (every field but `prefix` optional)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, hide_input_in_errors=True, defer_build=True
    )

    prefix: Annotated[str, Field(max_length=1024)]
    all: bool = False  # an empty prefix is the whole bucket: only when this says so
    force: bool = False
    prompt: Prompt | None = None
    modelId: ModelId | None = None
    dryRun: bool = False


class ReprocessPlan(BaseModel):
    """A checked input and where it runs: what the state machine carries from step to step."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)

    runId: RunId
    bucket: str
    prefix: str
    force: bool
    prompt: str | None
    modelId: str | None
    dryRun: bool


class ListedObject(BaseModel):
    """One object as the ItemReader lists it (Step Functions' names); other fields it gives are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, defer_build=True)

    Key: Annotated[str, Field(min_length=1, max_length=1024)]
    Etag: Annotated[str, Field(min_length=1, max_length=200)]
    Size: Annotated[int, Field(ge=0)]


class BatchCounts(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)

    listed: Annotated[int, Field(ge=0)]
    queued: Annotated[int, Field(ge=0)]
    skipped: Annotated[int, Field(ge=0)]
    refused: Annotated[int, Field(ge=0)]


@dataclass(frozen=True)
class Scope:
    """What a run may read in the stack's bucket: the input prefix and the operator's ReprocessPrefix, never
    the results prefix."""

    bucket: str
    allowed_prefixes: tuple[str, ...]
    results_prefix: str

    def refusal(self, key: str) -> str | None:
        if key.startswith(self.results_prefix):
            return f"under the results prefix ({self.results_prefix})"
        if not key.startswith(self.allowed_prefixes):
            return f"outside what reprocess may read ({', '.join(self.allowed_prefixes)})"
        return None


def plan_run(raw: Any, run_id: str, scope: Scope, allowed_model_ids: tuple[str, ...]) -> ReprocessPlan:
    """The run's plan, or ReprocessInputError naming what is wrong with its input."""
    if not isinstance(raw, dict):
        raise ReprocessInputError(f"the input must be a JSON object, not {type(raw).__name__}")
    try:
        given = parse_under(ReprocessInput, raw, "input")
        if given.modelId is not None:
            check_model_allowed(given.modelId, allowed_model_ids, "input.modelId")
    except InvalidRequestError as error:
        raise ReprocessInputError(str(error)) from None
    if given.prefix == "":
        if not given.all:
            raise ReprocessInputError(
                'input.prefix: an empty prefix is the whole bucket; say so with "all": true'
            )
    else:
        refused = scope.refusal(given.prefix)
        if refused:
            raise ReprocessInputError(f"input.prefix: {given.prefix!r} is {refused}")
    if not RUN_ID.fullmatch(run_id):
        # It goes into request ids and result keys.
        raise ReprocessInputError(
            f"execution name {run_id!r}: name a reprocess run with 1 to 80 letters, digits, '.', '_' or '-'"
        )
    return ReprocessPlan(
        runId=run_id,
        bucket=scope.bucket,
        prefix=given.prefix,
        force=given.force,
        prompt=given.prompt,
        modelId=given.modelId,
        dryRun=given.dryRun,
    )


@dataclass
class Counts:
    listed: int = 0
    queued: int = 0
    skipped: int = 0
    refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTS}


@dataclass
class BatchQueue:
    """Where one batch's messages go: SQS SendMessageBatch, ten at a time."""

    sqs: Any = field(repr=False)
    queue_url: str
    pending: list[ReprocessMessage] = field(default_factory=list)

    def put(self, message: ReprocessMessage) -> None:
        self.pending.append(message)
        if len(self.pending) == SEND_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        entries = [{"Id": str(index), "MessageBody": m.body()} for index, m in enumerate(self.pending)]
        response = self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        if response.get("Failed"):
            # The whole batch is retried by the state machine: a message sent twice names the same request,
            # which the pipeline runs once.
            reasons = "; ".join(f"{f.get('Code')}: {f.get('Message')}" for f in response["Failed"])
            raise TransientStoreError(f"SQS refused {len(response['Failed'])} reprocess messages: {reasons}")
        self.pending = []


def queue_batch(
    plan: ReprocessPlan, items: list[Any], *, scope: Scope, table: Any, queue: BatchQueue
) -> dict[str, int]:
    """One batch of the listing: each object refused (outside the scope), skipped (a folder marker, or done
    already and not forced) or queued (or, in a dry run, counted as it would be)."""
    counts = Counts()
    for index, raw in enumerate(items):
        listed = parse(ListedObject, raw, root=f"Items.{index}")
        counts.listed += 1
        if scope.refusal(listed.Key):
            counts.refused += 1
            continue
        if listed.Key.endswith("/") and listed.Size == 0:
            counts.skipped += 1  # a folder marker
            continue
        if not plan.force and has_completed_record(
            table, object_version(plan.bucket, listed.Key, listed.Etag)
        ):
            counts.skipped += 1
            continue
        counts.queued += 1
        if not plan.dryRun:
            queue.put(
                ReprocessMessage(
                    runId=plan.runId,
                    bucket=plan.bucket,
                    key=listed.Key,
                    eTag=listed.Etag.strip('"'),
                    size=listed.Size,
                    force=plan.force,
                    prompt=plan.prompt,
                    modelId=plan.modelId,
                )
            )
    queue.flush()
    return counts.as_dict()


def finish_run(plan: ReprocessPlan, batches: list[Any], notifier: Notifier) -> dict[str, Any]:
    """The run's outcome: the batches' counts summed, announced on EventBridge and returned."""
    total = Counts()
    for index, batch in enumerate(batches):
        counts = parse(BatchCounts, batch, root=f"batches.{index}")
        for name in COUNTS:
            setattr(total, name, getattr(total, name) + getattr(counts, name))
    outcome = {
        "runId": plan.runId,
        "prefix": plan.prefix,
        "force": plan.force,
        "dryRun": plan.dryRun,
        **total.as_dict(),
    }
    notifier.put(FINISHED_DETAIL_TYPE, outcome)
    logger.info("reprocess run %s: %s", plan.runId, json.dumps(outcome))
    return outcome


build_models(ReprocessInput, ReprocessPlan, ListedObject, BatchCounts)
