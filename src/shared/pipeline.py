"""One request from claim to record, the same for uploads and queued requests.

claim the record -> build the request -> call the gateway -> result JSON to S3 -> record COMPLETED (or
WAITING_FOR_TOOLS and start the poller) -> notify. Permanent failures end in FAILED at once; transient ones
give the claim back and are raised, so SQS delivers the message again, and on the last delivery the record
says FAILED "gave up after N attempts" before the message moves to the dead-letter queue.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared import logs
from shared.errors import (
    ContractBreachError,
    GatewayAuthError,
    InvalidRequestError,
    PipelineError,
    RecordRefusedError,
    ToolExecutionFailed,
)
from shared.models import ChatRequest, ChatResponse, build_models, parse, to_wire
from shared.notifications import announce
from shared.poller import execution_name
from shared.records import Status, split_for_item

if TYPE_CHECKING:
    from shared.gateway import GatewayClient
    from shared.notifications import Notifier
    from shared.poller import PollerStarter
    from shared.records import RecordStore
    from shared.results import ResultStore
    from shared.telemetry import Telemetry

logger = logging.getLogger(__name__)


class RequestBusyError(PipelineError):
    """Another delivery of the same request holds its lease: try again later."""

    retryable = True


@dataclass
class Job:
    request_id: str
    source: dict[str, Any]
    build: Callable[[], ChatRequest]
    result_key: str
    receive_count: int = 1
    metadata: dict[str, Any] | None = None
    # What the request is (a digest of its message, or the upload's identity): a record is taken over only
    # by the same request. And where a request that finds its requestId taken is recorded instead.
    fingerprint: str = ""  # empty: the requestId itself (an upload's names its content)
    conflict_id: str | None = None

    def __post_init__(self) -> None:
        self.fingerprint = self.fingerprint or self.request_id


@dataclass(frozen=True)
class Outcome:
    request_id: str
    status: str  # a record status, or "SKIPPED" when an earlier delivery already did the work
    error: str | None = None


@dataclass(frozen=True)
class RecordedCallMeter:
    """A request's billable chat calls, counted on its record so that the bound holds across deliveries."""

    records: RecordStore
    request_id: str
    limit: int

    def before_call(self) -> None:
        self.records.take_gateway_call(self.request_id, self.limit)

    def not_billed(self) -> None:
        self.records.return_gateway_call(self.request_id)


@dataclass
class Pipeline:
    gateway: GatewayClient
    records: RecordStore
    results: ResultStore
    notifier: Notifier
    poller: PollerStarter
    max_receive_count: int
    telemetry: Telemetry
    max_gateway_calls: int  # chat calls one request may make over all its deliveries (GatewayMaxAttempts)
    clock: Callable[[], float] = time.monotonic

    def run(self, job: Job, *, budget_seconds: float) -> Outcome:
        logs.bind(requestId=job.request_id)
        try:
            claim = self.records.claim(
                job.request_id,
                source=job.source,
                lease_seconds=budget_seconds + 30,
                metadata=job.metadata,
                fingerprint=job.fingerprint,
            )
        except RecordRefusedError as refused:  # recorded without what was refused
            return self.fail(job.conflict_id or job.request_id, refused, source=job.source, create_only=True)
        if claim.outcome == "conflict":
            taken = InvalidRequestError(
                "requestId", f"{job.request_id!r} belongs to another request; choose a requestId of its own"
            )
            return self.fail(
                job.conflict_id or f"{job.request_id}/conflict", taken, source=job.source, create_only=True
            )
        if claim.outcome == "busy":
            raise RequestBusyError(f"request {job.request_id} is being processed by another delivery")
        if claim.outcome == "done":
            self.resume(claim.record)
            return Outcome(job.request_id, "SKIPPED")
        try:
            # A later delivery (an earlier one crashed or failed to store after the gateway answered) finishes
            # from the answer already in S3 instead of asking, and paying, again.
            stored = self._stored_answer(job, claim.record) if claim.attempts > 1 else None
            if stored is not None:
                model_id, response, latency, in_s3 = stored
                return self._store(job, claim.attempts, model_id, response, latency, answer_stored=in_s3)
            request = job.build()
            started = self.clock()
            response = self.gateway.chat(
                request,
                budget_seconds=budget_seconds,
                correlation_id=job.request_id,
                meter=RecordedCallMeter(self.records, job.request_id, self.max_gateway_calls),
            )
            latency = self.clock() - started
            self.telemetry.gateway_answered(request.model_id, latency, response.usage)
            # Storing is inside the try too: if it fails, the lease is given back (or the request recorded
            # as given up) instead of being held until it expires.
            return self._store(job, claim.attempts, response.model or request.model_id, response, latency)
        except ContractBreachError as error:
            return self._keep_unreadable_answer(job, error)
        except PipelineError as error:
            if not error.retryable:
                return self.fail(job.request_id, error)
            if isinstance(error, GatewayAuthError):
                self.telemetry.gateway_token_refused()  # GatewayTokenRefusedAlarm
            self._give_back(job, error)
            raise
        except Exception as error:
            # Not a failure we know: keep the traceback and let SQS retry, but never lose the request.
            logger.exception("unexpected failure of request %s", job.request_id)
            self._give_back(job, error)
            raise

    def fail(
        self, request_id: str, error: PipelineError | Exception, message: str | None = None, **kw: Any
    ) -> Outcome:
        record = self.records.fail(request_id, error, message=message, **kw)
        if record is not None:  # counted once, by the call that ended it
            if isinstance(error, PipelineError):
                self.telemetry.request_failed(error.kind, caller_fault=error.caller_fault)
            else:
                self.telemetry.request_failed(type(error).__name__)
        else:
            # Ended before: by an earlier delivery of this message that may have died, or had its event refused,
            # before announcing it. announce() sends nothing for a record already announced.
            record = self.records.get(request_id)
        if record:
            self._notify(record)
        return Outcome(request_id, Status.FAILED.value, message or str(error))

    def resume(self, record: dict[str, Any]) -> None:
        """A redelivery found the work done: finish what the earlier delivery may not have."""
        if record.get("status") == Status.WAITING_FOR_TOOLS:
            self.poller.start(record["requestId"], record.get("executions") or [], int(record["attempts"]))
        else:
            self._notify(record)

    def _keep_unreadable_answer(self, job: Job, error: ContractBreachError) -> Outcome:
        """Billed work that we cannot read: the raw answer goes with the request's result, and the request
        ends FAILED (asking again would be billed again)."""
        document = {"requestId": job.request_id, "error": str(error), "rawResponse": error.raw}
        try:
            location = self.results.put_json(job.result_key, {**document, "source": job.source})
        except PipelineError as store_error:
            self._give_back(job, store_error)
            raise
        return self.fail(job.request_id, error, extra={"resultLocation": location})

    def _give_back(self, job: Job, error: Exception) -> None:
        if job.receive_count >= self.max_receive_count:
            self.fail(job.request_id, error, message=f"gave up after {job.receive_count} attempts: {error}")
        else:
            self.records.release(job.request_id, error)

    def _stored_answer(
        self, job: Job, record: dict[str, Any]
    ) -> tuple[str, ChatResponse, float, bool] | None:
        """The answer an earlier delivery was billed for: in S3 (True), or kept in the record when S3 refused
        it (False: still to be written to S3)."""
        document = self.results.get_json(job.result_key)
        in_s3 = bool(document and "answer" in document)
        if not in_s3 and isinstance(record.get("pendingAnswer"), str):
            document = json.loads(record["pendingAnswer"])
        if not document or "answer" not in document or document.get("fingerprint") != job.fingerprint:
            return None  # none, an unreadable answer's, or another request's that had the same requestId
        logger.info("request %s: the gateway's answer is already stored; finishing from it", job.request_id)
        response = parse(ChatResponse, document["answer"], root="response", lenient=True)
        return str(document.get("modelId")), response, float(document.get("latencyMs") or 0) / 1000, in_s3

    def _store(
        self,
        job: Job,
        attempt: int,
        model_id: str,
        response: ChatResponse,
        latency: float,
        *,
        answer_stored: bool = False,
    ) -> Outcome:
        """The answer to S3 first (it is billed work: nothing after may lose it), then the record."""
        executions = [
            {
                "executionId": t.execution_id,
                "toolName": t.name,
                "toolUseId": t.tool_use_id,
                "status": t.status,
            }
            for t in response.pending_executions
        ]
        result = {
            "requestId": job.request_id,
            "modelId": model_id,
            "pattern": response.pattern,
            "content": response.response.content,
            "toolUse": to_wire(response.tool_uses) or None,
            "finishReason": response.finish_reason,
            "usage": to_wire(response.usage),
            "gatewayRequestId": response.request_id,
            "latencyMs": round(latency * 1000),
        }
        around = {"source": job.source, "metadata": job.metadata, "executions": executions}
        if answer_stored:
            location = self.results.uri(job.result_key)
        else:
            # The whole answer too, fields the contract does not name included: it was billed. The
            # fingerprint says which request it answers, should a later one reuse the requestId.
            document = {**result, **around, "answer": to_wire(response), "fingerprint": job.fingerprint}
            try:
                location = self.results.put_json(job.result_key, document)
            except PipelineError:
                # S3 refused it past the SDK's retries: the billed answer waits in the record (when it fits),
                # for the next delivery to finish from.
                self.records.keep_answer(job.request_id, json.dumps(document, default=str))
                raise
        # The whole item counts toward DynamoDB's 400 KB: what goes around the result leaves it less room.
        fields, in_s3 = split_for_item(
            {k: v for k, v in result.items() if v is not None and k != "requestId"}, reserved=around
        )
        fields.update(resultLocation=location, resultInS3Only=in_s3)
        try:
            return self._finish(job, attempt, response, executions, fields)
        except RecordRefusedError as refused:  # the answer is in S3; the record says why it is not here
            return self.fail(job.request_id, refused, extra={"resultLocation": location})

    def _finish(
        self,
        job: Job,
        attempt: int,
        response: ChatResponse,
        executions: list[dict[str, Any]],
        fields: dict[str, Any],
    ) -> Outcome:
        failed_tools = response.failed_tools
        if failed_tools:
            reasons = "; ".join(f"{t.name or 'tool'}: {t.error or 'failed'}"[:500] for t in failed_tools)
            return self.fail(job.request_id, ToolExecutionFailed(reasons), extra=fields)
        if executions:
            fields["executions"] = executions
            fields["poller"] = execution_name(job.request_id, attempt)
            moved = self.records.finish(
                job.request_id, Status.WAITING_FOR_TOOLS, fields, allowed_from=(Status.PROCESSING,)
            )
            if moved:
                self.poller.start(job.request_id, executions, attempt)
            return Outcome(job.request_id, Status.WAITING_FOR_TOOLS.value)
        record = self.records.finish(
            job.request_id, Status.COMPLETED, fields, allowed_from=(Status.PROCESSING,)
        )
        if record:
            self.telemetry.request_completed()
            self._notify(record)
        else:
            logger.warning("request %s had already moved on; its record was left as it was", job.request_id)
        return Outcome(job.request_id, Status.COMPLETED.value)

    def _notify(self, record: dict[str, Any]) -> None:
        announce(record, self.notifier, self.records)


build_models(ChatRequest, ChatResponse)
