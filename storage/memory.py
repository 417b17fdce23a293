"""An in-process snapshot store, for tests and single-process experiments.

Everything lives in two dicts of one Python object, so nothing survives the process and
nothing is shared with other processes (use :class:`storage.sqlite.SqliteStore` for
that). The fencing rules are those of :mod:`storage.base`.
"""

from __future__ import annotations

import math

from storage.base import StaleEpoch

__all__ = ["MemoryStore"]


def _check_alarm(room_id: str, alarm_at: float | None) -> float | None:
    if alarm_at is None:
        return None
    alarm = float(alarm_at)
    if not math.isfinite(alarm):
        raise ValueError(f"room {room_id!r}: alarm_at must be a finite UNIX time, got {alarm}")
    return alarm


class MemoryStore:
    """A :class:`~storage.base.SnapshotStore` kept in process memory.

    The methods never await, so each one is atomic with respect to other coroutines
    of the same event loop. Saved data is copied into an immutable ``bytes`` object,
    so a caller mutating its ``bytearray`` afterwards does not change the record.
    ``close()`` releases nothing and does not clear the data (a named instance from
    ``open_store("memory://name")`` is shared by everyone in the process).
    """

    def __init__(self) -> None:
        """Create an empty store (no rooms, no epochs claimed)."""
        # room_id -> (data, epoch of the writer, alarm_at or None)
        self._snapshots: dict[str, tuple[bytes, int, float | None]] = {}
        self._epochs: dict[str, int] = {}
        # room -> [(meeting id, line id, JSON text)] in order of appending
        self._transcripts: dict[str, list[tuple[str, str, str]]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(rooms={len(self._snapshots)})"

    def _fence(self, room_id: str, epoch: int) -> None:
        current = self._epochs.get(room_id, 0)
        if epoch < current:
            raise StaleEpoch(room_id, epoch, current)

    async def claim_epoch(self, room_id: str) -> int:
        """Claim and return a new epoch for ``room_id``: previous + 1, starting at 1.

        Follows ``SnapshotStore.claim_epoch`` (storage/base.py).
        """
        epoch = self._epochs.get(room_id, 0) + 1
        self._epochs[room_id] = epoch
        return epoch

    async def load(self, room_id: str) -> bytes | None:
        """Return the stored snapshot bytes of ``room_id``, or ``None`` if it has none.

        Follows ``SnapshotStore.load`` (storage/base.py).
        """
        record = self._snapshots.get(room_id)
        return None if record is None else record[0]

    async def save(
        self, room_id: str, data: bytes, *, epoch: int, alarm_at: float | None = None
    ) -> None:
        """Replace the snapshot of ``room_id`` with a copy of ``data``.

        Args:
            room_id: the room.
            data: the encoded snapshot (bytes-like; copied).
            epoch: the epoch of the writing activation; refused if older than the
                newest claimed epoch (an epoch at or above it is accepted).
            alarm_at: the room's alarm in UNIX seconds, or ``None``.

        Raises:
            StaleEpoch: a newer epoch than ``epoch`` has been claimed; the stored
                record is left untouched.
            ValueError: ``alarm_at`` is not finite.
            TypeError: ``data`` is not bytes-like.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"room {room_id!r}: snapshot data must be bytes-like, not {type(data).__name__}"
            )
        alarm = _check_alarm(room_id, alarm_at)
        self._fence(room_id, epoch)
        self._snapshots[room_id] = (bytes(data), epoch, alarm)

    async def delete(self, room_id: str, *, epoch: int) -> None:
        """Delete the snapshot and alarm of ``room_id``, keeping its epoch counter.

        Deleting a room without a snapshot is a no-op (after the fencing check).

        Raises:
            StaleEpoch: a newer epoch than ``epoch`` has been claimed; nothing is
                deleted.
        """
        self._fence(room_id, epoch)
        self._snapshots.pop(room_id, None)

    async def list_rooms(self) -> list[str]:
        """Return the ids of all rooms that have a snapshot, sorted."""
        return sorted(self._snapshots)

    async def due_alarms(self, now: float) -> list[tuple[str, float]]:
        """Return ``(room_id, alarm_at)`` for every alarm at or before ``now`` (UNIX s).

        Sorted by ``alarm_at``, then room id. A linear scan: fine for tests.
        """
        due = [
            (room_id, alarm)
            for room_id, (_, _, alarm) in self._snapshots.items()
            if alarm is not None and alarm <= now
        ]
        due.sort(key=lambda item: (item[1], item[0]))
        return due

    async def next_alarm(self) -> float | None:
        """Return the earliest persisted alarm time (UNIX s), or ``None``."""
        alarms = [alarm for (_, _, alarm) in self._snapshots.values() if alarm is not None]
        return min(alarms) if alarms else None

    async def append_transcript(self, room_id: str, meeting_id: str,
                                lines: list[tuple[str, str]]) -> None:
        """Append transcript lines, skipping ids already kept for the meeting
        (``SnapshotStore.append_transcript``)."""
        kept = self._transcripts.setdefault(room_id, [])
        known = {(m, i) for m, i, _ in kept}
        for line_id, text in lines:
            if (meeting_id, line_id) not in known:
                kept.append((meeting_id, line_id, text))
                known.add((meeting_id, line_id))

    async def read_transcript(self, room_id: str, meeting_id: str | None = None,
                              limit: int = 10_000) -> tuple[str | None, list[str]]:
        """One meeting's lines, oldest first (``SnapshotStore.read_transcript``)."""
        kept = self._transcripts.get(room_id, [])
        if meeting_id is None:
            if not kept:
                return None, []
            meeting_id = kept[-1][0]
        return meeting_id, [t for m, _, t in kept if m == meeting_id][:limit]

    async def close(self) -> None:
        """Do nothing: the data stays (see the class docstring)."""
