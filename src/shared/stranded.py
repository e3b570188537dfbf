"""Records that nothing else will finish: a poller that failed (its Catch states, or its end as EventBridge
reports it) and records the sweeper finds past their time. Each ends FAILED, retryable (a redrive or a resend
of the same request takes it up again, finishing from the answer already stored), and is announced."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.errors import PipelineError, TransientStoreError
from shared.notifications import announce, announce_for_attempt
from shared.records import TERMINAL, Status, of_attempt

if TYPE_CHECKING:
    from shared.notifications import Notifier
    from shared.records import RecordStore
    from shared.telemetry import Telemetry

logger = logging.getLogger(__name__)


class PollerFailedError(PipelineError):
    """The poller of a request's tool executions failed or was stopped: ours to fix, so worth a rerun."""

    retryable = True


class StrandedError(PipelineError):
    """Nothing moved the record on in its time (a crash on its last delivery, a poller nobody saw end)."""

    retryable = True


@dataclass(frozen=True)
class Settled:
    request_id: str
    record: dict[str, Any] | None  # the FAILED record when this call ended it; None when it had moved on
    status: str | None  # the record's status now (None: there is no record)


def fail_poller(
    request_id: str,
    attempt: int | None,
    message: str,
    *,
    records: RecordStore,
    notifier: Notifier,
    telemetry: Telemetry,
) -> Settled:
    """Ends the request's WAITING_FOR_TOOLS record of this attempt FAILED and announces it. A record already
    ended (by the poller itself, a retry of this step, a later attempt) is only announced if it was not yet."""
    error = PollerFailedError(message)
    record = records.fail(
        request_id,
        error,
        allowed_from=(Status.WAITING_FOR_TOOLS,),
        expected=of_attempt(attempt),
        create=False,
    )
    if record is not None:
        telemetry.request_failed(error.kind)
    current = record or records.get(request_id)
    if current is not None:
        announce_for_attempt(current, attempt, notifier, records)
    return Settled(request_id, record, None if current is None else current.get("status"))


def sweep(
    *, records: RecordStore, notifier: Notifier, telemetry: Telemetry, now: float, limit: int
) -> dict[str, Any]:
    """Settles up to `limit` records past their sweep moment: one that has not ended, FAILED (retryable) and
    announced; one that ended unannounced, announced. Returns what it did: {"swept": n, "byStatus": {...},
    "announced": n, "more": bool}."""
    swept: dict[str, int] = {}
    announced = 0
    seen = 0
    more = False
    for candidate in records.overdue(now):
        if seen >= limit:
            more = True
            break
        seen += 1
        request_id = candidate["requestId"]
        current = records.get(request_id)
        if current is None:
            continue
        if current.get("status") in TERMINAL:
            # Ended, but no delivery managed to announce it: announce() skips it if one did meanwhile.
            if not current.get("notifiedAt"):
                logger.warning(
                    "request %s ended %s unannounced: announcing it", request_id, current["status"]
                )
                announced += _announced(current, notifier, records)
            continue
        status = str(current["status"])
        error = StrandedError(_stranded_message(status))
        record = records.fail(
            request_id,
            error,
            allowed_from=(Status(status),),
            expected={"sweepAt": candidate["sweepAt"]},  # not re-claimed or moved on since it was read
        )
        if record is None:
            continue
        logger.warning("request %s was %s past its time: recorded FAILED", request_id, status)
        swept[status] = swept.get(status, 0) + 1
        telemetry.request_failed(error.kind)
        _announced(record, notifier, records)
    if swept:
        telemetry.records_swept(swept)
    return {"swept": sum(swept.values()), "byStatus": swept, "announced": announced, "more": more}


def _announced(record: dict[str, Any], notifier: Notifier, records: RecordStore) -> int:
    """1 when announced; 0 when EventBridge refused it this time (the record stays in the index: next run)."""
    try:
        announce(record, notifier, records)
    except TransientStoreError:
        return 0
    return 1


def _stranded_message(status: str) -> str:
    if status == Status.PROCESSING:
        return (
            "no delivery finished the request after its lease ended (a function crashed or timed out on its"
            " last delivery); redrive its message from the dead-letter queue, or send it again, to retry"
        )
    return (
        "its tool executions were never finished (the poller ended without finishing the record); send the"
        " request again to poll them anew"
    )
