"""Which client frames a room has applied, so that a frame re-sent after the room's
process died is applied once, not twice (the Kafka idempotent-producer idea, per socket).

Each gateway socket numbers the frames it hands to its room (1, 2, 3, ...). The room
records, per socket id, the newest number it applied, in the *same snapshot* as the turn
that applied it, so the record and the effect become durable together: a frame whose
turn is durable is known as applied after any restart, and a frame whose turn was lost
with the process is not. The gateway keeps a socket's frames until a ``deliver`` result
acknowledges them and re-sends the rest after the room reactivates; the room skips the
numbers it has applied. The HTTP message route does the same with an
``Idempotency-Key`` header.

A connection is owned by its newest socket: once a frame of a connection's new socket
has been applied, its earlier sockets are *retired* and frames of theirs that arrive
later are not applied. That is the case of a replica that died with frames of a socket
in flight: its ``deliver`` call may still run in the room after the client reconnected
through another replica and sent newer frames, and applying the old ones then would
take the state back (a ``userUpdate`` older than the last one the client saw
acknowledged). Frames of the old socket that reach the room before the new socket's
first frame are applied as usual.

The tables are bounded (the oldest entries are forgotten first) and a socket's entry
is forgotten when the socket closes. Idempotency keys are kept per identity (the
authenticated sender), each identity's own bounded table, so that no identity's keys can
push another's out.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AppliedFrames"]


class AppliedFrames:
    """The newest frame number applied per socket, and the newest idempotency keys.

    Args:
        record: a :meth:`record` from a snapshot, or ``None`` for an empty table.
        max_sockets: sockets remembered (the least recently used are forgotten first).
        max_keys: HTTP idempotency keys remembered per identity (its oldest first).
        max_identities: identities whose keys are remembered (the least recently used
            identity's keys are forgotten first).
    """

    def __init__(self, record: dict[str, Any] | None = None, *, max_sockets: int = 4096,
                 max_keys: int = 64, max_identities: int = 256) -> None:
        record = record or {}
        self._frames: dict[str, int] = dict(record.get("frames", {}))
        keys = record.get("keys", {})
        if not isinstance(keys, dict):  # a snapshot of the one shared table: not scoped
            keys = {}
        self._keys: dict[str, dict[str, None]] = {
            identity: dict.fromkeys(values) for identity, values in keys.items()}
        self._writer: dict[str, str] = dict(record.get("writers", {}))  # conn -> socket
        self._retired: dict[str, None] = dict.fromkeys(record.get("retired", []))
        self.max_sockets = max_sockets
        self.max_keys = max_keys
        self.max_identities = max_identities

    def apply_frame(self, socket: str, number: int, conn: str | None = None) -> bool:
        """Record that frame ``number`` of ``socket`` (a socket of connection ``conn``)
        is being applied; return ``False`` (and record nothing) if it, or a later frame
        of the socket, was applied before, or if the socket is retired (a newer socket
        of ``conn`` has had a frame applied; see the module docstring)."""
        if socket in self._retired:
            return False
        if conn is not None:
            previous = self._writer.pop(conn, None)
            self._writer[conn] = socket  # most recently used goes last
            if previous is not None and previous != socket:
                self._retired[previous] = None
                self._frames.pop(previous, None)
                _trim(self._retired, self.max_sockets)
            _trim(self._writer, self.max_sockets)
        last = self._frames.pop(socket, 0)
        self._frames[socket] = max(last, number)  # most recently used goes last
        if number <= last:
            return False
        while len(self._frames) > self.max_sockets:
            self._frames.pop(next(iter(self._frames)))
        return True

    def apply_key(self, identity: str, key: str) -> bool:
        """Record idempotency key ``key`` of ``identity``; return ``False`` if that
        identity recorded it before. Only ``identity``'s own oldest keys are forgotten
        past ``max_keys``."""
        keys = self._keys.pop(identity, None)
        if keys is None:
            keys = {}
        self._keys[identity] = keys  # most recently used identity goes last
        while len(self._keys) > self.max_identities:
            self._keys.pop(next(iter(self._keys)))
        if key in keys:
            return False
        keys[key] = None
        while len(keys) > self.max_keys:
            keys.pop(next(iter(keys)))
        return True

    def forget(self, socket: str) -> None:
        """Forget ``socket`` (it closed: the gateway sends none of its frames again)."""
        self._frames.pop(socket, None)

    def record(self) -> dict[str, Any]:
        """A copy of the tables for a snapshot (msgpack-friendly)."""
        return {"frames": dict(self._frames),
                "keys": {identity: list(keys) for identity, keys in self._keys.items()},
                "writers": dict(self._writer), "retired": list(self._retired)}


def _trim(table: dict, size: int) -> None:
    """Forget the oldest keys of ``table`` beyond ``size`` (insertion order)."""
    while len(table) > size:
        table.pop(next(iter(table)))
