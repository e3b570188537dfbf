"""EventBridge notifications when a request reaches COMPLETED or FAILED, so others need not poll."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shared.errors import TransientStoreError

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
        response = self.client.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": DETAIL_TYPES[record["status"]],
                    "Detail": json.dumps(detail, default=str),
                    "EventBusName": self.bus_name,
                    "Resources": [],
                }
            ]
        )
        if response.get("FailedEntryCount"):
            raise TransientStoreError(f"EventBridge refused the notification: {response['Entries']}")
