"""Metrics in CloudWatch's embedded metric format (Powertools): requests, failures by kind, gateway
latency, tokens, and an estimated cost per model from the configured price table."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

NAMESPACE_DEFAULT = "QuantAiPipeline"


class Telemetry:
    def __init__(
        self, price_table: Mapping[str, tuple[float, float]] | None = None, namespace: str | None = None
    ):
        self._prices = dict(price_table or {})
        self._namespace = namespace or NAMESPACE_DEFAULT
        self._lock = threading.Lock()  # batch items run in threads; EMF lines must not interleave

    def _emit(
        self, name: str, unit: MetricUnit, value: float, dimensions: dict[str, str] | None = None
    ) -> None:
        with (
            self._lock,
            single_metric(name=name, unit=unit, value=value, namespace=self._namespace) as metric,
        ):
            for key, dimension in (dimensions or {}).items():
                metric.add_dimension(name=key, value=dimension)

    def request_received(self, entry_point: str) -> None:
        self._emit("Requests", MetricUnit.Count, 1, {"EntryPoint": entry_point})

    def request_completed(self) -> None:
        self._emit("RequestsCompleted", MetricUnit.Count, 1)

    def request_failed(self, kind: str) -> None:
        self._emit("RequestsFailed", MetricUnit.Count, 1, {"FailureKind": kind})

    def gateway_answered(self, model_id: str, latency_seconds: float, usage: Any) -> None:
        self._emit("GatewayLatency", MetricUnit.Milliseconds, latency_seconds * 1000, {"ModelId": model_id})
        if usage is None:
            return
        self._emit("InputTokens", MetricUnit.Count, usage.input_tokens, {"ModelId": model_id})
        self._emit("OutputTokens", MetricUnit.Count, usage.output_tokens, {"ModelId": model_id})
        if model_id in self._prices:
            input_price, output_price = self._prices[model_id]
            cost = (usage.input_tokens * input_price + usage.output_tokens * output_price) / 1000
            self._emit("EstimatedCostUSD", MetricUnit.NoUnit, cost, {"ModelId": model_id})
