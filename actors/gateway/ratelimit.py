"""A token bucket: the per-connection rate limit of the gateway."""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate`` tokens per second.

    Args:
        rate: tokens per second (> 0).
        burst: the bucket's size; it starts full.
        clock: monotonic seconds (default :func:`time.monotonic`).
    """

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def take(self, n: float = 1.0) -> bool:
        """Take ``n`` tokens if there are that many; return whether they were taken."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False
