"""Settings of the gateway emulator; tests change fields between requests, so nothing is copied at start."""

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

MIB = 1024 * 1024

# Kinds accepted by GatewayEmulator.fail_next; the rate_* fields draw from the same set.
# "slow": the real answer, sent only after slow_seconds (slower than the caller's deadline, say).
FAULT_KINDS = ("429", "500", "502", "503", "504", "timeout", "truncated", "400", "403", "slow")
# The paths faults can target: "files" (signed downloads) is opt-in, like an S3 outage would be.
FAULT_PATHS = ("chat", "executions", "files")
EXECUTION_OUTCOMES = ("complete", "failed")


@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0: the system picks a free port
    token: str | None = None  # None: any bearer token is accepted
    organization: str | None = (
        None  # None: any organisation in the path is accepted; otherwise others get 403
    )

    # Fault injection. Rates are probabilities per request drawn from random.Random(seed).
    latency_ms: float = 0.0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_timeout: float = 0.0
    rate_truncated_json: float = 0.0
    rate_slow: float = 0.0
    seed: int = 0
    retry_after_seconds: int = 1  # sent with 429 and 503
    timeout_hold_seconds: float = 30.0  # how long a "timeout" fault keeps the connection silent
    slow_seconds: float = 30.0  # how long a "slow" fault holds the answer before sending it
    fault_paths: Collection[str] = ("chat", "executions")

    # Async image generation (response pattern 5).
    images_per_request: int = 1
    execution_pending_seconds: float = 1.0
    execution_seconds: float = 12.0  # from creation to complete/failed
    execution_outcome: str = "complete"
    execution_failure_reason: str = "the image model returned no image"
    clock: Callable[[], float] = field(default=time.time)  # injectable so benchmarks can simulate time
    signed_url_seconds: int = 3600

    # The contract's "Maximum 25MB total payload size": the whole JSON body, base64 included (413 over it).
    max_body_bytes: int = 25_000_000

    quiet: bool = True  # False: one stderr line per request (method, path, status; never headers or bodies)

    def check(self) -> None:
        """Raise ValueError for settings the emulator cannot honour (called by GatewayEmulator.start)."""
        for name in ("rate_429", "rate_500", "rate_503", "rate_timeout", "rate_truncated_json", "rate_slow"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be from 0 to 1, got {getattr(self, name)}")
        unknown_paths = set(self.fault_paths) - set(FAULT_PATHS)
        if unknown_paths:
            raise ValueError(f"fault_paths: unknown {sorted(unknown_paths)}; expected some of {FAULT_PATHS}")
        if self.execution_outcome not in EXECUTION_OUTCOMES:
            raise ValueError(
                f"execution_outcome must be one of {EXECUTION_OUTCOMES}, got {self.execution_outcome!r}"
            )
        if self.images_per_request < 1:
            raise ValueError(f"images_per_request must be at least 1, got {self.images_per_request}")
