"""Per-caller token buckets: ``rate`` requests per second on average, bursts up to ``burst``.

In memory, per API process (several processes multiply the allowance by their number). A
refused request learns when one token will be back: the answer is 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self, burst: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self._burst, self._clock, self._max_keys = burst, clock, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def take(self, key: str, rate: float) -> float:
        """Take one token for ``key``; 0.0 when allowed, else seconds until one is back."""
        now = self._clock()
        burst = max(self._burst, 1.0)
        with self._lock:
            tokens, last = self._buckets.get(key, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # bounded memory; worst case is a fresh burst for everyone
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate


def retry_after_header(wait_s: float) -> str:
    """Retry-After takes whole seconds: round up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
