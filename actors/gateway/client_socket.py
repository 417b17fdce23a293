"""One accepted client WebSocket in a replica: its lifecycle and its ordered send queue."""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import uuid

from fastapi import WebSocket
from starlette.websockets import WebSocketState

from .. import metrics
from .limits import CLOSE_TRY_AGAIN

__all__ = ["ClientSocket", "SocketState"]

log = logging.getLogger("ray_rooms.gateway")


class SocketState(enum.Enum):
    """Where a :class:`ClientSocket` is::

        PENDING --admit(): the room accepted it as its connection id's owner--> OPEN
        PENDING --close(): refused--> CLOSING (what was held for it is dropped unsent)
        OPEN --close()--> CLOSING --queued frames written, close sent--> CLOSED
        any --client gone, too slow, stop()--> CLOSED

    A PENDING socket is written nothing: what the room's fan-out sends it meanwhile is
    held, and written only once the room has accepted the socket (its ``connect``
    turn), so a socket that opens another user's connection id hears nothing of it.
    """

    PENDING = "pending"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class ClientSocket:
    """One accepted WebSocket and its ordered send queue (one writer task).

    ``id`` names this socket to the room (a reconnect of the same ``conn`` is another
    socket); ``sent_seq`` is the outbox sequence number of the last entry written to
    it, which its close reports so that a reconnect gets what came after.

    Args:
        conn: the connection id (partysocket's ``_pk``).
        ws: the accepted WebSocket.
        queue_size: frames queued before the client counts as too slow (closed with
            1013 ``client too slow``).
    """

    def __init__(self, conn: str, ws: WebSocket, queue_size: int) -> None:
        self.conn = conn
        self.ws = ws
        self.id = uuid.uuid4().hex
        self.state = SocketState.PENDING
        self._held: list[tuple[str, int | None]] = []
        self._queue_size = queue_size
        self._closer: asyncio.Task | None = None
        self.close_code: tuple[int, str] | None = None
        """The ``(code, reason)`` the gateway closed it with, once CLOSED that way."""
        self.sent_seq: int | None = None
        self._unwritten: collections.deque[int] = collections.deque()
        """Outbox sequence numbers held or queued for this socket and not yet written, in
        order (:attr:`oldest_unwritten`)."""
        self.queue: asyncio.Queue[tuple[str, int | None] | tuple[None, tuple[int, str]]] = \
            asyncio.Queue(queue_size)
        self.closed = asyncio.Event()
        """Set when the socket reaches CLOSED."""
        self.frames = 0
        """Frames of this socket handed to the room so far (each is numbered by it)."""
        self.pending = 0  # frames queued for or in a deliver call
        self.drained = asyncio.Event()
        self.drained.set()
        self.task = asyncio.ensure_future(self._writer())

    def send(self, text: str, seq: int | None = None) -> None:
        """Queue ``text`` (the outbox entry ``seq``, if any); held while PENDING,
        dropped once CLOSING or CLOSED."""
        if self.state is SocketState.PENDING:
            if len(self._held) >= self._queue_size:
                self._overflow()
                return
            self._held.append((text, seq))
            if seq is not None:
                self._unwritten.append(seq)
            return
        if self.state is not SocketState.OPEN:
            return
        if self._enqueue(text, seq) and seq is not None:
            self._unwritten.append(seq)

    def _enqueue(self, text: str, seq: int | None) -> bool:
        try:
            self.queue.put_nowait((text, seq))
            return True
        except asyncio.QueueFull:
            self._overflow()
            return False

    @property
    def oldest_unwritten(self) -> int | None:
        """The outbox sequence number of the oldest entry handed to this socket and not
        yet written to it (held while PENDING, or queued), or ``None`` when everything
        handed to it is written. A CLOSING or CLOSED socket owes nothing more here:
        its close reports :attr:`sent_seq`."""
        if self.state in (SocketState.CLOSING, SocketState.CLOSED):
            return None
        return self._unwritten[0] if self._unwritten else None

    def admit(self) -> None:
        """The room accepted this socket as its connection id's owner: write what was
        held for it, in order, and go OPEN."""
        if self.state is not SocketState.PENDING:
            return
        self.state = SocketState.OPEN
        held, self._held = self._held, []
        for text, seq in held:  # already in _unwritten since they were held
            if not self._enqueue(text, seq):
                return

    def close(self, code: int, reason: str = "") -> None:
        """Close with ``code`` and ``reason`` after the frames already queued (a
        PENDING socket's held frames are dropped: it was never accepted)."""
        if self.state is SocketState.PENDING:
            self._held.clear()
            self._unwritten.clear()
            self.state = SocketState.OPEN
        if self.state is not SocketState.OPEN:
            return
        try:
            self.queue.put_nowait((None, (code, reason)))
            self.state = SocketState.CLOSING
        except asyncio.QueueFull:
            self._overflow()

    def stop(self) -> None:
        """Stop the writer at once (the handler is done with the socket)."""
        self.state = SocketState.CLOSED
        if not self.task.done():
            self.task.cancel()
        self.closed.set()

    def _overflow(self) -> None:
        log.warning("socket %s reads too slowly; closing it", self.conn[:64])
        self.state = SocketState.CLOSING
        self._held.clear()
        self.task.cancel()
        self._closer = asyncio.ensure_future(self._close_now(CLOSE_TRY_AGAIN, "client too slow"))

    async def _close_now(self, code: int, reason: str) -> None:
        self.close_code = (code, reason)
        try:
            if self.ws.application_state == WebSocketState.CONNECTED:
                await self.ws.close(code, reason[:120])
        except Exception:  # noqa: BLE001 - the client is already gone
            pass
        finally:
            self.state = SocketState.CLOSED
            self.closed.set()

    async def _writer(self) -> None:
        try:
            while True:
                text, extra = await self.queue.get()
                if text is None:
                    await self._close_now(*extra)
                    return
                await self.ws.send_text(text)
                metrics.frame_out(text)
                if extra is not None:
                    self.sent_seq = extra
                    while self._unwritten and self._unwritten[0] <= extra:
                        self._unwritten.popleft()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the client went away
            self.state = SocketState.CLOSED
            self.closed.set()
