"""A room's outbox: its released messages, in sequence, for the gateways that read them.

A room actor releases each message a turn produced (once the turn's snapshot is durable:
the output gate) into its :class:`Outbox` with :meth:`Outbox.publish`. Gateway replicas
read it in two ways, both answered with an :class:`~actors.wire.Delivery`:

* the result of their ``RoomActor.deliver`` call, which carried their frames: the
  entries after their cursor, at once (:meth:`Outbox.since`);
* their long-poll, ``RoomActor.poll``, which waits for entries after their cursor
  (:meth:`Outbox.wait`).

A replica has one *poller* id per room. While a ``deliver`` of that poller is under
way, the entries it will return are *claimed* for the poller (:meth:`Outbox.claiming`),
so that poller's long-poll does not wake for them: a message whose readers are all on
the sender's replica costs one Ray call. This is the same split Ray Serve makes between
its ``LongPollHost`` and the actors that embed it.

The outbox also keeps what a reconnect is owed: which socket each connection has now
(so a close that a reconnect overtook is recognised as stale), the last sequence
number each closed socket was sent, and each poller's newest cursor (for a replica that
died without closing its sockets). That *readers' table* is part of the room's snapshot
(:meth:`Outbox.readers`): a socket that stayed open across a restart of the room is
still owed what its replica did not send it when that replica dies later. It is
bounded: the connections the room has, the last 256 closes, the 64 pollers heard from
most recently.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import Counter, deque
from contextlib import contextmanager
from typing import Any, Callable, Collection, Iterator

from .wire import Delivery, OutboxEntry

__all__ = ["Outbox"]

log = logging.getLogger("ray_rooms.room")

_TABLE_SIZE = 4096
"""Connections (and pollers) remembered for reconnects; the oldest are forgotten."""


def _bounded(table: dict, size: int = _TABLE_SIZE) -> None:
    """Forget the oldest keys of ``table`` beyond ``size`` (insertion order)."""
    while len(table) > size:
        table.pop(next(iter(table)))


class Outbox:
    """The released entries of one room (the newest ``size``) and who has read what.

    Args:
        size: entries kept; a reader further behind gets ``gap`` (it resends state).
        released: the sequence number released last before this activation (entries
            up to it are gone with the previous process).
        readers: the readers' table a previous activation saved (:meth:`readers`), or
            ``None``.
    """

    _SAVED_CLOSES = 256
    _SAVED_POLLERS = 64

    def __init__(self, size: int, released: int = 0,
                 readers: dict[str, Any] | None = None) -> None:
        self._entries: deque[OutboxEntry] = deque(maxlen=size)
        self._seqs: deque[int] = deque(maxlen=size)
        self.released = released
        """The sequence number of the newest released entry."""
        self._wakeup = asyncio.Event()
        self._waiting: Counter[str | None] = Counter()  # pollers waiting in wait()
        self._claimed: dict[str, int] = {}  # poller -> newest seq its deliver returned
        self._claiming: Counter[str] = Counter()  # pollers with a deliver under way
        self._cursors: dict[str, int] = {}  # poller -> the newest cursor it sent
        self._cursor_at: dict[str, float] = {}  # poller -> when it sent it (monotonic s)
        self._conn_poller: dict[str, str] = {}  # conn -> poller of its last socket
        self._conn_socket: dict[str, str] = {}  # conn -> id of its current socket
        self._conn_delivered: dict[str, int] = {}  # conn -> last seq its closed socket had
        if readers:
            self._restore(readers)

    # ---- the readers' table in the snapshot -------------------------------------------

    def readers(self, connections: Collection[str]) -> dict[str, Any]:
        """The readers' table for the room's snapshot (msgpack-friendly).

        Args:
            connections: the connection ids the room has now (only theirs are kept).

        Returns:
            ``{"conns": {conn: [poller, socket]}, "delivered": {conn: seq},
            "cursors": {poller: seq}}``: which poller and socket serve each connection,
            the last sequence number sent to each of the last 256 closed sockets, and
            the newest cursor of the 64 pollers heard from most recently.
        """
        conns = {conn: [self._conn_poller.get(conn), self._conn_socket.get(conn)]
                 for conn in connections
                 if conn in self._conn_poller or conn in self._conn_socket}
        delivered = dict(list(self._conn_delivered.items())[-self._SAVED_CLOSES:])
        recent = list(self._cursor_at)[-self._SAVED_POLLERS:]
        cursors = {p: self._cursors[p] for p in recent if p in self._cursors}
        return {"conns": conns, "delivered": delivered, "cursors": cursors}

    def _restore(self, readers: dict[str, Any]) -> None:
        """Load a saved readers' table; its pollers count as heard from now."""
        for conn, (poller, socket) in dict(readers.get("conns") or {}).items():
            if poller is not None:
                self._conn_poller[str(conn)] = str(poller)
            if socket is not None:
                self._conn_socket[str(conn)] = str(socket)
        self._conn_delivered.update({str(c): int(s) for c, s in
                                     dict(readers.get("delivered") or {}).items()})
        now = time.monotonic()
        for poller, cursor in dict(readers.get("cursors") or {}).items():
            self._cursors[str(poller)] = int(cursor)
            self._cursor_at[str(poller)] = now

    # ---- writing -----------------------------------------------------------------------

    def publish(self, entry: OutboxEntry) -> None:
        """Release ``entry`` (the next sequence number) and wake the polls waiting for
        it, unless each of them has it claimed by a ``deliver``."""
        self._entries.append(entry)
        self._seqs.append(entry.seq)
        self.released = entry.seq
        if any(p is None or (p not in self._claiming and self._claimed.get(p, 0) < entry.seq)
               for p in self._waiting):
            self.wake()

    def wake(self) -> None:
        """Wake every waiting poll (to return what it finds, or that the room sleeps)."""
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()

    @contextmanager
    def claiming(self, poller: str | None) -> Iterator[None]:
        """While a ``deliver`` of ``poller`` runs (its turns, their save, and reading
        its result), entries released do not wake ``poller``'s poll: the call returns
        them. The call then records what it returned with :meth:`claim`. If it fails,
        nothing more is claimed and the waiting polls are woken to see what was
        released (a claim must never cover an entry the caller was not given: its poll
        would never wake for it)."""
        if poller is None:
            yield
            return
        self._claiming[poller] += 1
        try:
            yield
        except BaseException:
            self._release_claiming(poller)
            self.wake()
            raise
        else:
            self._release_claiming(poller)

    def _release_claiming(self, poller: str) -> None:
        self._claiming[poller] -= 1
        if self._claiming[poller] <= 0:
            del self._claiming[poller]

    def claim(self, poller: str | None, upto: int) -> None:
        """Record that ``poller``'s ``deliver`` returned every released entry up to
        ``upto``: its poll skips them."""
        if poller is not None:
            self._claimed[poller] = max(self._claimed.get(poller, 0), upto)
            _bounded(self._claimed, 256)  # pollers of replicas long gone

    # ---- reading -----------------------------------------------------------------------

    def note_cursor(self, poller: str | None, cursor: int | None,
                    written: int | None = None) -> None:
        """Record that ``poller`` holds everything up to ``cursor`` and has written to
        its sockets everything up to ``written`` (default: ``cursor``). What a reconnect
        is owed after that poller's replica died counts from ``written``, the lower of
        the two (at least once: a message the replica had just written may come
        twice), and the snapshot keeps the released entries after it."""
        if written is not None and cursor is not None:
            cursor = min(cursor, written)
        if poller is not None and cursor is not None:
            self._cursors[poller] = cursor
            self._cursor_at.pop(poller, None)
            self._cursor_at[poller] = time.monotonic()  # most recently heard goes last
            _bounded(self._cursors)
            _bounded(self._cursor_at)

    def since(self, cursor: int) -> Delivery:
        """The released entries after ``cursor``, at once."""
        last = self.released
        if cursor > last or (cursor < last and not self._seqs):
            return Delivery(cursor=last, gap=True)
        if not self._seqs or self._seqs[-1] <= cursor:
            return Delivery(cursor=cursor)
        start = bisect.bisect_right(self._seqs, cursor)
        entries = tuple(self._entries[i] for i in range(start, len(self._entries)))
        return Delivery(cursor=entries[-1].seq, entries=entries,
                        gap=entries[0].seq != cursor + 1)

    def unacknowledged(self, horizon_s: float) -> list[OutboxEntry]:
        """The released entries that a live reader may not have yet: those after the
        oldest cursor any poller sent within the last ``horizon_s`` seconds (pollers
        not heard from for longer belong to replicas that are gone). The room keeps
        them in its snapshot, so that a reader whose poll or ``deliver`` result died
        with the room's process gets them from the next activation instead of a gap.

        Args:
            horizon_s: seconds a poller counts as live after its last call.

        Returns:
            The entries, in sequence order (empty when no poller is live).
        """
        since = time.monotonic() - horizon_s
        live = [self._cursors[p] for p, at in self._cursor_at.items()
                if at >= since and p in self._cursors]
        if not live or not self._seqs:
            return []
        start = bisect.bisect_right(self._seqs, min(live))
        return [self._entries[i] for i in range(start, len(self._entries))]

    async def wait(self, cursor: int, timeout: float, poller: str | None,
                   hibernating: Callable[[], bool], written: int | None = None) -> Delivery:
        """Wait up to ``timeout`` seconds for entries after ``cursor`` that ``poller``
        has not claimed through a ``deliver``; return them (or nothing, at the
        deadline, or ``hibernating`` once ``hibernating()`` is true). ``written``: the
        poller's write watermark (:meth:`note_cursor`)."""
        self.note_cursor(poller, cursor, written)
        last = self.released
        if cursor > last or (cursor < last and not self._seqs):
            # ahead of the outbox, or behind an outbox this activation no longer holds
            return Delivery(cursor=last, gap=True)
        deadline = time.monotonic() + timeout
        while True:
            if hibernating():
                return Delivery(cursor=cursor, hibernating=True)
            claimed = self._claimed.get(poller, 0) if poller is not None else 0
            if self._seqs and self._seqs[-1] > max(cursor, claimed):
                result = self.since(cursor)
                if claimed > cursor:  # skip what the poller's deliver returns
                    result = Delivery(cursor=result.cursor, entries=tuple(
                        e for e in result.entries if e.seq > claimed))
                if result.entries or result.gap:
                    return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Delivery(cursor=cursor)
            self._waiting[poller] += 1
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiting[poller] -= 1
                if not self._waiting[poller]:
                    del self._waiting[poller]

    # ---- sockets and reconnects -----------------------------------------------------------

    def connected(self, conn: str, poller: str | None, socket: str | None) -> list[OutboxEntry]:
        """A socket of ``conn`` connected through ``poller``: record it, and return the
        entries with data addressed to ``conn`` that its previous socket did not get.

        What it did not get is known from the close of its last socket, or, when that
        socket's replica died without a close, from the last cursor that replica's
        poller sent (at least once: a message it had just fanned out may come twice).
        """
        owed = self._owed(conn, poller)
        if socket is not None:
            self._conn_socket[conn] = socket
            _bounded(self._conn_socket)
        if poller is not None:
            self._conn_poller[conn] = poller
            _bounded(self._conn_poller)
        return owed

    def closed(self, conn: str, socket: str | None, delivered: int | None) -> bool:
        """A socket of ``conn`` closed having been sent up to ``delivered``. Returns
        ``False`` when the close is stale (``conn`` connected since with another
        socket), which then changes nothing."""
        current = self._conn_socket.get(conn)
        if socket is not None and current is not None and current != socket:
            return False
        self._conn_socket.pop(conn, None)
        if delivered is not None:
            self._conn_delivered[conn] = delivered
            _bounded(self._conn_delivered)
        return True

    def _owed(self, conn: str, poller: str | None) -> list[OutboxEntry]:
        start = self._conn_delivered.pop(conn, None)
        if start is None:
            old = self._conn_poller.get(conn)
            if old is None or old == poller:
                return []
            start = self._cursors.get(old)
            if start is None:
                return []
        if self._seqs and self._seqs[0] > start + 1:
            log.warning("%s was owed messages no longer in the outbox", conn[:64])
        begin = bisect.bisect_right(self._seqs, start)
        return [e for e in (self._entries[i] for i in range(begin, len(self._entries)))
                if e.data is not None and e.reaches(conn)]
