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

Both tables are bounded (the oldest entries are forgotten first) and a socket's entry
is forgotten when the socket closes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AppliedFrames"]


class AppliedFrames:
    """The newest frame number applied per socket, and the newest idempotency keys.

    Args:
        record: a :meth:`record` from a snapshot, or ``None`` for an empty table.
        max_sockets: sockets remembered (the least recently used are forgotten first).
        max_keys: HTTP idempotency keys remembered (the oldest first).
    """

    def __init__(self, record: dict[str, Any] | None = None, *, max_sockets: int = 4096,
                 max_keys: int = 1024) -> None:
        record = record or {}
        self._frames: dict[str, int] = dict(record.get("frames", {}))
        self._keys: dict[str, None] = dict.fromkeys(record.get("keys", []))
        self.max_sockets = max_sockets
        self.max_keys = max_keys

    def apply_frame(self, socket: str, number: int) -> bool:
        """Record that frame ``number`` of ``socket`` is being applied; return ``False``
        (and record nothing) if it, or a later frame of the socket, was applied before."""
        last = self._frames.pop(socket, 0)
        self._frames[socket] = max(last, number)  # most recently used goes last
        if number <= last:
            return False
        while len(self._frames) > self.max_sockets:
            self._frames.pop(next(iter(self._frames)))
        return True

    def apply_key(self, key: str) -> bool:
        """Record idempotency key ``key``; return ``False`` if it was recorded before."""
        if key in self._keys:
            return False
        self._keys[key] = None
        while len(self._keys) > self.max_keys:
            self._keys.pop(next(iter(self._keys)))
        return True

    def forget(self, socket: str) -> None:
        """Forget ``socket`` (it closed: the gateway sends none of its frames again)."""
        self._frames.pop(socket, None)

    def record(self) -> dict[str, Any]:
        """A copy of both tables for a snapshot (msgpack-friendly)."""
        return {"frames": dict(self._frames), "keys": list(self._keys)}
