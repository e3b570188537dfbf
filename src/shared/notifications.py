"""EventBridge notifications when a request reaches COMPLETED or FAILED, so others need not poll."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.errors import TransientStoreError
from shared.records import TERMINAL, in_attempt

if TYPE_CHECKING:
    from shared.records import RecordStore

logger = logging.getLogger(__name__)

EVENT_SOURCE = "quant.ai-pipeline"
DETAIL_TYPES = {"COMPLETED": "AI Request Completed", "FAILED": "AI Request Failed"}


@dataclass
class Notifier:
    client: Any = field(repr=False)
    bus_name: str

    def request_finished(self, record: dict[str, Any]) -> None:
        detail = {
            "requestId": record["requestId"],
            "status": record["status"],
            "source": record.get("source"),
            "resultLocation": record.get("resultLocation"),
            "error": record.get("error"),
        }
        self.put(DETAIL_TYPES[record["status"]], detail)

    def put(self, detail_type: str, detail: dict[str, Any]) -> None:
        """One event from the pipeline's source on the stack's bus."""
        response = self.client.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail, default=str),
                    "EventBusName": self.bus_name,
                    "Resources": [],
                }
            ]
        )
        if response.get("FailedEntryCount"):
            raise TransientStoreError(f"EventBridge refused the notification: {response['Entries']}")


def announce(record: dict[str, Any], notifier: Notifier, records: RecordStore) -> None:
    """Publishes a finished request's event, then marks the record notified: a crash in between means the
    next delivery (or retried step) announces it again, never that it is not announced."""
    if record.get("status") not in TERMINAL or record.get("notifiedAt"):
        return
    try:
        notifier.request_finished(record)
    except TransientStoreError:
        logger.warning("notification for %s failed; a redelivery will send it", record["requestId"])
        raise
    records.mark_notified(record["requestId"])


def announce_for_attempt(
    record: dict[str, Any], attempt: int | None, notifier: Notifier, records: RecordStore
) -> None:
    """announce(), unless a later attempt of the request has taken the record since (its event is that
    attempt's to send). `attempt` None: whichever attempt the record is in."""
    if in_attempt(record, attempt):
        announce(record, notifier, records)
