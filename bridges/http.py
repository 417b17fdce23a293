"""What both httpx bridges share: the HTTP client they own, timeouts, retry settings,
and one TLS context per process."""

from __future__ import annotations

import functools
import ssl

import httpx

__all__ = ["HttpBridge", "tls_context"]


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one client TLS context: httpx's default (certifi's CA bundle, or
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set), built on first use and shared by every
    bridge's HTTP client and sideband WebSocket.

    Building a context loads the CA bundle (~20-30 ms here); httpx builds one per client
    unless given one, so a room enabling its AI (two clients, then a WebSocket) paid that
    cost three times on the clock (issue 23). Contexts are safe to share between
    clients and threads once configured. Raises nothing beyond what httpx raises for an
    unreadable CA bundle (``OSError``/``ssl.SSLError``)."""
    return httpx.create_ssl_context()


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
        self._client = client if client is not None else httpx.AsyncClient(verify=tls_context())

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this bridge made it (an injected one stays open)."""
        if self._owns_client:
            await self._client.aclose()
