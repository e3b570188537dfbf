"""Metrics in CloudWatch's embedded metric format (Powertools): requests, failures by kind, gateway
latency, tokens, and an estimated cost per model from the configured price table. Metrics that share
their dimensions go out as one log line (an answer's latency, tokens and cost: one line, not four)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

NAMESPACE_DEFAULT = "QuantAiPipeline"


class Telemetry:
    def __init__(
        self, price_table: Mapping[str, tuple[float, float]] | None = None, namespace: str | None = None
    ):
        self._prices = dict(price_table or {})
        self._namespace = namespace or NAMESPACE_DEFAULT
        self._lock = threading.Lock()  # batch items run in threads; EMF lines must not interleave

    def _emit(self, metrics: Mapping[str, tuple[MetricUnit, float]], dimensions: Mapping[str, str]) -> None:
        with self._lock:
            line = EphemeralMetrics(namespace=self._namespace)
            for key, dimension in dimensions.items():
                line.add_dimension(name=key, value=dimension)
            for name, (unit, value) in metrics.items():
                line.add_metric(name=name, unit=unit, value=value)
            line.flush_metrics()

    def request_received(self, entry_point: str) -> None:
        self._emit({"Requests": (MetricUnit.Count, 1)}, {"EntryPoint": entry_point})

    def gateway_token_refused(self) -> None:
        """The gateway refused the token even fetched anew: every request waits until it is fixed."""
        self._emit({"GatewayTokenRefused": (MetricUnit.Count, 1)}, {})

    def upload_refused(self) -> None:
        """An upload event named an object outside the input prefix of the stack's bucket."""
        self._emit({"UploadsRefused": (MetricUnit.Count, 1)}, {})

    def records_swept(self, by_status: Mapping[str, int]) -> None:
        """Records the sweeper ended: each is a request that nothing else finished (RecordsSweptAlarm)."""
        self._emit({"RecordsSwept": (MetricUnit.Count, sum(by_status.values()))}, {})

    def request_completed(self) -> None:
        self._emit({"RequestsCompleted": (MetricUnit.Count, 1)}, {})

    def request_failed(self, kind: str, *, caller_fault: bool = False) -> None:
        """By kind (for the dashboards) and by whose fault it is (for the alarms: a service fault alarms at
        once, the callers' mistakes only in numbers)."""
        self._emit({"RequestsFailed": (MetricUnit.Count, 1)}, {"FailureKind": kind})
        self._emit(
            {"RequestsFailed": (MetricUnit.Count, 1)}, {"Fault": "caller" if caller_fault else "service"}
        )

    def gateway_answered(self, model_id: str, latency_seconds: float, usage: Any) -> None:
        metrics = {"GatewayLatency": (MetricUnit.Milliseconds, latency_seconds * 1000)}
        if usage is not None:
            metrics["InputTokens"] = (MetricUnit.Count, usage.input_tokens)
            metrics["OutputTokens"] = (MetricUnit.Count, usage.output_tokens)
            if model_id in self._prices:
                input_price, output_price = self._prices[model_id]
                cost = (usage.input_tokens * input_price + usage.output_tokens * output_price) / 1000
                metrics["EstimatedCostUSD"] = (MetricUnit.NoUnit, cost)
        self._emit(metrics, {"ModelId": model_id})
