"""Per-identity quotas of one gateway replica: HTTP messages per second and rooms
started per minute, each a token bucket per authenticated identity."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from ..errors import QuotaExceeded
from .limits import GatewayLimits
from .ratelimit import TokenBucket

__all__ = ["IdentityQuotas"]


class _Buckets:
    """One token bucket per identity, the least recently used forgotten past ``size``."""

    def __init__(self, rate: float, burst: float, size: int,
                 clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.size, self.clock = rate, burst, size, clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, identity: str) -> float | None:
        """Take a token of ``identity``'s bucket: ``None`` if taken, else the seconds
        until one is there."""
        bucket = self._buckets.pop(identity, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self.clock)
        self._buckets[identity] = bucket
        while len(self._buckets) > self.size:
            self._buckets.popitem(last=False)
        if bucket.take():
            return None
        return (1.0 - bucket.tokens) / self.rate


class IdentityQuotas:
    """The per-identity quotas of one replica (see :class:`GatewayLimits`:
    ``http_rate_per_s``/``http_burst`` and ``rooms_per_minute``).

    Args:
        limits: the replica's limits.
        clock: monotonic seconds (default :func:`time.monotonic`).
    """

    def __init__(self, limits: GatewayLimits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._messages = _Buckets(limits.http_rate_per_s, limits.http_burst,
                                  limits.max_identities, clock)
        self._rooms = _Buckets(limits.rooms_per_minute / 60.0, limits.rooms_per_minute,
                               limits.max_identities, clock)
        self.limits = limits

    def message(self, identity: str) -> None:
        """Count one HTTP message of ``identity``.

        Raises:
            QuotaExceeded: past ``http_rate_per_s``; ``retry_after`` in seconds.
        """
        wait = self._messages.take(identity)
        if wait is not None:
            raise QuotaExceeded(f"rate limit exceeded ({self.limits.http_rate_per_s:g} "
                                "messages/s)", retry_after=wait)

    def room_start(self, identity: str) -> None:
        """Count one room that ``identity`` starts.

        Raises:
            QuotaExceeded: past ``rooms_per_minute``; ``retry_after`` in seconds.
        """
        wait = self._rooms.take(identity)
        if wait is not None:
            raise QuotaExceeded(f"too many new rooms ({self.limits.rooms_per_minute:g} "
                                "per minute)", retry_after=wait)
