"""What both httpx bridges share: the HTTP client they own, timeouts, retry settings."""

from __future__ import annotations

import httpx

__all__ = ["HttpBridge"]


class HttpBridge:
    """Base of :class:`bridges.CallsClient` and :class:`bridges.RealtimeClient`.

    Args:
        base_url: the API root (trailing ``/`` removed).
        timeout: seconds allowed for each HTTP attempt (connect, write, read).
        retries: how many times a retryable failure is repeated (``0``: never), so at
            most ``retries + 1`` attempts per operation.
        backoff: the first wait between attempts in seconds; each further wait doubles.
        max_backoff: the longest wait between attempts in seconds.
        client: an ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`); by
            default the bridge makes and owns one.
    """

    def __init__(self, *, base_url: str, timeout: float, retries: int, backoff: float,
                 max_backoff: float, client: httpx.AsyncClient | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this bridge made it (an injected one stays open)."""
        if self._owns_client:
            await self._client.aclose()
