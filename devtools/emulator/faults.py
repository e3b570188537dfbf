"""Which fault, if any, the next request gets: first any forced with fail_next, else a seeded random draw."""

import random
import threading
from collections import deque

from devtools.emulator.config import FAULT_KINDS, FAULT_PATHS, EmulatorConfig


class FaultPlan:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forced: dict[str, deque[str]] = {path: deque() for path in FAULT_PATHS}
        self._seed: int | None = None
        self._random = random.Random()

    def force(self, kind: str, count: int, path: str) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        if path not in FAULT_PATHS:
            raise ValueError(f"unknown fault path {path!r}; expected one of {', '.join(FAULT_PATHS)}")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        with self._lock:
            self._forced[path].extend([kind] * count)

    def next_fault(self, path: str, config: EmulatorConfig) -> str | None:
        with self._lock:
            if self._forced[path]:
                return self._forced[path].popleft()
            if path not in config.fault_paths:
                return None
            if self._seed != config.seed:  # a new seed restarts the sequence, so runs are reproducible
                self._seed = config.seed
                self._random.seed(config.seed)
            draw = self._random.random()  # one draw per eligible request, whatever the rates
        threshold = 0.0
        for kind, rate in (
            ("429", config.rate_429),
            ("500", config.rate_500),
            ("503", config.rate_503),
            ("timeout", config.rate_timeout),
            ("truncated", config.rate_truncated_json),
            ("slow", config.rate_slow),
        ):
            threshold += rate
            if draw < threshold:
                return kind
        return None

    def reset(self) -> None:
        with self._lock:
            for queue in self._forced.values():
                queue.clear()
            self._seed = None
