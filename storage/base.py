"""The snapshot store protocol and its errors.

A room persists one atomic, versioned record (its snapshot) per room id. Each
activation of a room claims a new *epoch*; a save carries the epoch of the activation
that made it, and a save from an older epoch than the newest claimed one is refused
(fencing), so a zombie actor can never overwrite a newer state. A save/delete with an
epoch at or above the newest claimed one is accepted; a room that never claimed an
epoch counts as epoch 0.

Exception hierarchy (its root is :class:`rooms.errors.RoomsError`)::

    StorageError                 any failure of a snapshot store
    ├── StorageUnavailable       the store cannot be reached now (a networked store's
    │                            server is down or restarting); trying later may work
    ├── StaleEpoch               a save/delete from an epoch older than the newest claimed
    └── SnapshotError            a stored snapshot cannot be read
        ├── CorruptSnapshot      not a msgpack snapshot record
        └── UnknownSchemaVersion written by a newer (or unknown) schema version
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from rooms.errors import RoomsError

__all__ = [
    "CorruptSnapshot",
    "SnapshotError",
    "SnapshotStore",
    "StaleEpoch",
    "StorageError",
    "StorageUnavailable",
    "UnknownSchemaVersion",
]


class StorageError(RoomsError):
    """A snapshot store operation failed."""


class StorageUnavailable(StorageError):
    """The store cannot be reached now (its server is down, restarting or unreachable)
    even after the store's own retries; the operation did not happen, or its outcome is
    unknown. Trying later may succeed."""


class StaleEpoch(StorageError):
    """A write came from an activation whose epoch is older than the newest claimed.

    Attributes:
        room_id: the room written to.
        epoch: the epoch the write carried.
        current: the newest claimed epoch in the store.
    """

    def __init__(self, room_id: str, epoch: int, current: int) -> None:
        super().__init__(
            f"room {room_id!r}: write from stale epoch {epoch} refused "
            f"(epoch {current} has been claimed by a newer activation)"
        )
        self.room_id = room_id
        self.epoch = epoch
        self.current = current

    def __reduce__(self):  # picklable across Ray processes
        return (type(self), (self.room_id, self.epoch, self.current))


class SnapshotError(StorageError):
    """A stored snapshot of room ``room_id`` cannot be read; it is never silently replaced."""

    def __init__(self, room_id: str, message: str) -> None:
        super().__init__(f"room {room_id!r}: {message}")
        self.room_id = room_id
        self.message = message

    def __reduce__(self):  # picklable across Ray processes
        return (type(self), (self.room_id, self.message))


class CorruptSnapshot(SnapshotError):
    """The stored bytes are not a valid snapshot record."""


class UnknownSchemaVersion(SnapshotError):
    """The snapshot was written with a schema version this code does not know."""


@runtime_checkable
class SnapshotStore(Protocol):
    """Where rooms keep their snapshots: one record per room id, fenced by epochs.

    All methods are coroutines so that a networked store fits the same protocol; the
    embedded stores do their (microsecond) work inline.
    """

    async def claim_epoch(self, room_id: str) -> int:
        """Atomically claim and return a new epoch for ``room_id`` (previous + 1, from 1)."""
        ...

    async def load(self, room_id: str) -> bytes | None:
        """Return the stored snapshot bytes of ``room_id``, or ``None`` if it has none."""
        ...

    async def save(
        self, room_id: str, data: bytes, *, epoch: int, alarm_at: float | None = None
    ) -> None:
        """Atomically replace the snapshot of ``room_id`` with ``data``.

        Args:
            room_id: the room.
            data: the encoded snapshot (see :mod:`storage.codec`).
            epoch: the epoch of the writing activation.
            alarm_at: the room's persisted alarm, in seconds since the epoch (UNIX
                time), or ``None`` for no alarm; kept beside the record so that the
                alarm scheduler can find due alarms without decoding snapshots.

        Raises:
            StaleEpoch: a newer epoch than ``epoch`` has been claimed for this room.
        """
        ...

    async def delete(self, room_id: str, *, epoch: int) -> None:
        """Delete the snapshot (and alarm) of ``room_id``; keep its epoch counter.

        Raises:
            StaleEpoch: a newer epoch than ``epoch`` has been claimed for this room.
        """
        ...

    async def list_rooms(self) -> list[str]:
        """Return the ids of all rooms that have a snapshot, sorted."""
        ...

    async def due_alarms(self, now: float) -> list[tuple[str, float]]:
        """Return ``(room_id, alarm_at)`` for every alarm at or before ``now`` (UNIX s)."""
        ...

    async def next_alarm(self) -> float | None:
        """Return the earliest persisted alarm time (UNIX s), or ``None``."""
        ...

    async def append_transcript(self, room_id: str, meeting_id: str,
                                lines: list[tuple[str, str]]) -> None:
        """Append lines to the transcript of meeting ``meeting_id`` of ``room_id``.

        Args:
            lines: ``(line id, line as JSON text)`` in order; a line id already stored
                for this meeting is skipped (appending again is harmless).

        Raises:
            StorageError: the write failed (StorageUnavailable: the store is unreachable).
        """
        ...

    async def read_transcript(self, room_id: str, meeting_id: str | None = None,
                              limit: int = 10_000) -> tuple[str | None, list[str]]:
        """Return ``(meeting id, lines as JSON texts)`` of one meeting, oldest first:
        ``meeting_id``'s, or with ``None`` the meeting last appended to (``(None, [])``
        when the room has no transcript). At most ``limit`` lines (the first ones).

        Raises:
            StorageError: the read failed.
        """
        ...

    async def close(self) -> None:
        """Release the store's resources (files, connections)."""
        ...
