"""A recording WebSocket client for the gateway tests (``websockets`` asyncio client)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


class Client:
    """A connected WebSocket that records every JSON message it receives, in order.

    Attributes:
        ws: the ``websockets`` connection (``close_code``/``close_reason`` after close).
        messages: the decoded messages so far.
        closed: set when the connection has closed.
        task: the reader task (done when the connection closed).
    """

    def __init__(self, ws) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.messages.append(json.loads(frame))
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()

    async def wait_index(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                         timeout: float = 20.0) -> int:
        """Wait for a message matching ``predicate``; return its index in ``messages``.

        Raises:
            AssertionError: none arrived within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, message in enumerate(self.messages):
                if predicate(message):
                    return i
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; got {self.messages[-5:]}")

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                       timeout: float = 20.0) -> dict[str, Any]:
        """As :meth:`wait_index`, but return the message itself."""
        return self.messages[await self.wait_index(predicate, what, timeout)]

    def send(self, message: dict[str, Any]) -> asyncio.Future:
        """Send ``message`` as JSON (a future of the send)."""
        return asyncio.ensure_future(self.ws.send(json.dumps(message)))


async def open_client(url: str, headers: dict[str, str] | None = None) -> Client:
    """Connect to ``url`` (20 s open timeout, no frame size limit), sending ``headers``
    (e.g. ``Cookie``) with the handshake."""
    return Client(await connect(url, open_timeout=20, max_size=None,
                                additional_headers=headers))
