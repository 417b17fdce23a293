"""The embedded default snapshot store: one SQLite file, safe across processes.

Layout of the file (store schema, recorded in ``PRAGMA user_version``)::

    snapshots(room_id TEXT PRIMARY KEY, data BLOB NOT NULL, epoch INTEGER NOT NULL,
              alarm_at REAL NULL)            -- one record per room; alarm in UNIX s
    epochs(room_id TEXT PRIMARY KEY, epoch INTEGER NOT NULL)
                                             -- newest claimed epoch per room; survives
                                             -- delete() so fencing survives a reset
    snapshots_alarm_at ON snapshots(alarm_at) WHERE alarm_at IS NOT NULL

Concurrency. Several processes (Ray actors on one machine) may open the same file at
once; each :class:`SqliteStore` owns one connection. The file is in WAL journal mode, so
readers never block the (single) writer and vice versa. Every write takes SQLite's
write lock up front, either with an explicit ``BEGIN IMMEDIATE`` or as one autocommit
statement (which acquires the write lock before reading, like ``BEGIN IMMEDIATE``), so
a write never fails half-way with ``SQLITE_BUSY_SNAPSHOT``; a writer that finds the lock
held waits up to ``busy_timeout`` seconds (SQLite's busy handler) and only then fails
with :class:`~storage.base.StorageError`. Writers hold the lock for microseconds. WAL
needs shared memory, so the file must be on a local file system (not NFS/SMB).

Durability. The default ``synchronous="NORMAL"`` does not fsync on every commit: a
commit is durable against a crash of the *process* (the Ray actor) as soon as it
returns, but an OS crash or power loss may lose the last transactions since the most
recent WAL checkpoint (the database itself stays consistent). ``synchronous="FULL"``
fsyncs the WAL on every commit, making each save durable against power loss at the cost
of one fsync (typically 0.1 to 10 ms) per save.

The methods are coroutines (to fit :class:`~storage.base.SnapshotStore`) but do their
work inline, without threads: a save is a single prepared statement taking tens of
microseconds. The one exception is lock contention: the busy handler then sleeps on the
calling thread, i.e. blocks the event loop, for at most ``busy_timeout`` seconds.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
from pathlib import Path

from storage.base import StaleEpoch, StorageError

__all__ = ["SqliteStore"]

STORE_SCHEMA_VERSION = 1
"""Version of the table layout, kept in ``PRAGMA user_version``."""

_SYNCHRONOUS = {"NORMAL": 1, "FULL": 2}

_CREATE = (
    "CREATE TABLE IF NOT EXISTS snapshots("
    " room_id TEXT PRIMARY KEY NOT NULL,"
    " data BLOB NOT NULL,"
    " epoch INTEGER NOT NULL,"
    " alarm_at REAL)",
    "CREATE TABLE IF NOT EXISTS epochs("
    " room_id TEXT PRIMARY KEY NOT NULL,"
    " epoch INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS snapshots_alarm_at ON snapshots(alarm_at)"
    " WHERE alarm_at IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS transcripts("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " room_id TEXT NOT NULL,"
    " meeting_id TEXT NOT NULL,"
    " line_id TEXT NOT NULL,"
    " line TEXT NOT NULL,"
    " UNIQUE(room_id, meeting_id, line_id))",
)

# The statements below are module constants so that sqlite3's per-connection statement
# cache reuses one prepared statement for each.
_CLAIM = (
    "INSERT INTO epochs(room_id, epoch) VALUES (?1, 1)"
    " ON CONFLICT(room_id) DO UPDATE SET epoch = epoch + 1"
    " RETURNING epoch"
)
# Fenced save in one statement: the row is written only if no newer epoch is claimed.
_SAVE = (
    "INSERT OR REPLACE INTO snapshots(room_id, data, epoch, alarm_at)"
    " SELECT ?1, ?2, ?3, ?4"
    " WHERE coalesce((SELECT epoch FROM epochs WHERE room_id = ?1), 0) <= ?3"
)
_CURRENT = "SELECT epoch FROM epochs WHERE room_id = ?1"
_LOAD = "SELECT data FROM snapshots WHERE room_id = ?1"
_DELETE = "DELETE FROM snapshots WHERE room_id = ?1"
_LIST = "SELECT room_id FROM snapshots ORDER BY room_id"
_DUE = (
    "SELECT room_id, alarm_at FROM snapshots"
    " WHERE alarm_at IS NOT NULL AND alarm_at <= ?1 ORDER BY alarm_at, room_id"
)
_NEXT = "SELECT min(alarm_at) FROM snapshots WHERE alarm_at IS NOT NULL"
_APPEND = ("INSERT OR IGNORE INTO transcripts(room_id, meeting_id, line_id, line)"
           " VALUES (?1, ?2, ?3, ?4)")
_LAST_MEETING = "SELECT meeting_id FROM transcripts WHERE room_id = ?1 ORDER BY seq DESC LIMIT 1"
_READ = ("SELECT line FROM transcripts WHERE room_id = ?1 AND meeting_id = ?2"
         " ORDER BY seq LIMIT ?3")


class SqliteStore:
    """A :class:`~storage.base.SnapshotStore` in one SQLite file (see the module docstring).

    One object owns one connection; open one store per process (per actor). Calls
    from several threads are serialised by a lock. Every ``sqlite3.Error`` surfaces
    as :class:`~storage.base.StorageError` (chained), including use after
    :meth:`close` and a write lock not obtained within ``busy_timeout``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = 5.0,
    ) -> None:
        """Open (creating if missing, with its directory) the store file at ``path``.

        Args:
            path: the database file; ``~`` is expanded; parent directories are created.
            synchronous: ``"NORMAL"`` (default: durable against process crashes) or
                ``"FULL"`` (also against power loss; one fsync per save). See the
                module docstring.
            busy_timeout: seconds to wait for another connection's write lock before
                failing (SQLite ``busy_timeout``).

        Raises:
            ValueError: ``synchronous`` is not ``"NORMAL"``/``"FULL"`` or
                ``busy_timeout`` is negative.
            StorageError: the file cannot be created/opened, is not a database, or
                was made by an unknown store schema version.
        """
        level = str(synchronous).upper()
        if level not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        if not busy_timeout >= 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout!r}")
        self._path = Path(path).expanduser()
        self._lock = threading.Lock()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create directory for store {str(self._path)!r}: {exc}") from exc
        try:
            # isolation_level=None: autocommit; transactions are explicit (BEGIN IMMEDIATE).
            # timeout sets SQLite's busy_timeout. check_same_thread=False because a Ray
            # actor may construct the store on another thread than its event loop.
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self._path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=64,
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open store {str(self._path)!r}: {exc}") from exc
        try:
            self._setup(level)
        except sqlite3.Error as exc:
            self._conn.close()
            self._conn = None
            raise StorageError(f"cannot initialise store {str(self._path)!r}: {exc}") from exc
        except StorageError:
            self._conn.close()
            self._conn = None
            raise

    def _setup(self, level: str) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute(f"PRAGMA synchronous={level}")
        # journal_mode is persistent in the file; only the first opener switches it
        # (switching needs an exclusive lock; the busy handler covers racing openers).
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        if str(mode).lower() != "wal":
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if str(mode).lower() != "wal":
                raise StorageError(
                    f"store {str(self._path)!r}: cannot switch to WAL journal mode (got {mode!r})"
                )
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version not in (0, STORE_SCHEMA_VERSION):
                raise StorageError(
                    f"store {str(self._path)!r} has table layout version {version}; "
                    f"this code knows {STORE_SCHEMA_VERSION}"
                )
            for statement in _CREATE:
                conn.execute(statement)
            if version == 0:
                conn.execute(f"PRAGMA user_version={STORE_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"SqliteStore({str(self._path)!r}, {state})"

    @property
    def path(self) -> Path:
        """The database file (``pathlib.Path``)."""
        return self._path

    @property
    def synchronous(self) -> str:
        """The connection's effective ``PRAGMA synchronous``: ``"NORMAL"`` or ``"FULL"``.

        Raises:
            StorageError: the store is closed.
        """
        with self._lock:
            try:
                (value,) = self._live().execute("PRAGMA synchronous").fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"store {str(self._path)!r}: {exc}") from exc
        return {v: k for k, v in _SYNCHRONOUS.items()}.get(value, str(value))

    def _live(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StorageError(f"store {str(self._path)!r} is closed")
        return conn

    def _current(self, conn: sqlite3.Connection, room_id: str) -> int:
        row = conn.execute(_CURRENT, (room_id,)).fetchone()
        return 0 if row is None else row[0]

    async def claim_epoch(self, room_id: str) -> int:
        """Atomically claim and return a new epoch for ``room_id`` (previous + 1, from 1).

        One ``BEGIN IMMEDIATE`` transaction around an UPSERT ... RETURNING, so two
        processes claiming at once always get different epochs. Follows
        ``SnapshotStore.claim_epoch`` (storage/base.py).

        Raises:
            StorageError: the store is closed or the write lock was not obtained.
        """
        with self._lock:
            conn = self._live()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    (epoch,) = conn.execute(_CLAIM, (room_id,)).fetchone()
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StorageError(f"room {room_id!r}: cannot claim an epoch: {exc}") from exc
        return epoch

    async def load(self, room_id: str) -> bytes | None:
        """Return the stored snapshot bytes of ``room_id``, or ``None`` if it has none.

        Follows ``SnapshotStore.load`` (storage/base.py).

        Raises:
            StorageError: the store is closed or the read failed.
        """
        with self._lock:
            conn = self._live()
            try:
                row = conn.execute(_LOAD, (room_id,)).fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"room {room_id!r}: cannot load the snapshot: {exc}") from exc
        return None if row is None else bytes(row[0])

    async def save(
        self, room_id: str, data: bytes, *, epoch: int, alarm_at: float | None = None
    ) -> None:
        """Atomically replace the snapshot (and alarm) of ``room_id`` with ``data``.

        The hot path: one prepared autocommit statement that checks the fence
        (``epochs.epoch <= epoch``, an unclaimed room counting as 0) and writes the row
        under the write lock; only a refused save costs a second query (for the
        current epoch in the error). Follows ``SnapshotStore.save`` (storage/base.py).

        Args:
            room_id: the room.
            data: the encoded snapshot (bytes-like).
            epoch: the epoch of the writing activation.
            alarm_at: the room's alarm in UNIX seconds, or ``None``.

        Raises:
            StaleEpoch: a newer epoch has been claimed; the stored record is untouched.
            ValueError: ``alarm_at`` is not finite.
            TypeError: ``data`` is not bytes-like.
            StorageError: the store is closed or the write lock was not obtained.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"room {room_id!r}: snapshot data must be bytes-like, not {type(data).__name__}"
            )
        if alarm_at is not None:
            alarm_at = float(alarm_at)
            if not math.isfinite(alarm_at):
                raise ValueError(
                    f"room {room_id!r}: alarm_at must be a finite UNIX time, got {alarm_at}"
                )
        with self._lock:
            conn = self._live()
            try:
                written = conn.execute(_SAVE, (room_id, data, epoch, alarm_at)).rowcount
                if written == 1:
                    return
                current = self._current(conn, room_id)
            except sqlite3.Error as exc:
                raise StorageError(f"room {room_id!r}: cannot save the snapshot: {exc}") from exc
        raise StaleEpoch(room_id, epoch, current)

    async def delete(self, room_id: str, *, epoch: int) -> None:
        """Delete the snapshot and alarm of ``room_id``; keep its epoch counter.

        Fence check and delete in one ``BEGIN IMMEDIATE`` transaction. Deleting a room
        without a snapshot is a no-op. Follows ``SnapshotStore.delete``.

        Raises:
            StaleEpoch: a newer epoch has been claimed; nothing is deleted.
            StorageError: the store is closed or the write lock was not obtained.
        """
        with self._lock:
            conn = self._live()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    current = self._current(conn, room_id)
                    if epoch < current:
                        conn.execute("ROLLBACK")
                        raise StaleEpoch(room_id, epoch, current)
                    conn.execute(_DELETE, (room_id,))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StorageError(f"room {room_id!r}: cannot delete the snapshot: {exc}") from exc

    async def list_rooms(self) -> list[str]:
        """Return the ids of all rooms that have a snapshot, sorted (code point order).

        Raises:
            StorageError: the store is closed or the read failed.
        """
        with self._lock:
            conn = self._live()
            try:
                return [room_id for (room_id,) in conn.execute(_LIST)]
            except sqlite3.Error as exc:
                raise StorageError(f"store {str(self._path)!r}: cannot list rooms: {exc}") from exc

    async def due_alarms(self, now: float) -> list[tuple[str, float]]:
        """Return ``(room_id, alarm_at)`` for every alarm at or before ``now`` (UNIX s).

        Sorted by ``alarm_at``, then room id; uses the ``alarm_at`` index.

        Raises:
            StorageError: the store is closed or the read failed.
        """
        with self._lock:
            conn = self._live()
            try:
                return [(room_id, alarm) for room_id, alarm in conn.execute(_DUE, (now,))]
            except sqlite3.Error as exc:
                raise StorageError(f"store {str(self._path)!r}: cannot read alarms: {exc}") from exc

    async def next_alarm(self) -> float | None:
        """Return the earliest persisted alarm time (UNIX s), or ``None``.

        Raises:
            StorageError: the store is closed or the read failed.
        """
        with self._lock:
            conn = self._live()
            try:
                (alarm,) = conn.execute(_NEXT).fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"store {str(self._path)!r}: cannot read alarms: {exc}") from exc
        return alarm

    async def append_transcript(self, room_id: str, meeting_id: str,
                                lines: list[tuple[str, str]]) -> None:
        """Append transcript lines in one transaction, skipping line ids already stored
        for the meeting (``SnapshotStore.append_transcript``).

        Raises:
            StorageError: the store is closed or the write failed.
        """
        with self._lock:
            conn = self._live()
            try:
                with conn:
                    conn.executemany(_APPEND, [(room_id, meeting_id, i, t) for i, t in lines])
            except sqlite3.Error as exc:
                raise StorageError(f"room {room_id!r}: cannot append to the transcript: "
                                   f"{exc}") from exc

    async def read_transcript(self, room_id: str, meeting_id: str | None = None,
                              limit: int = 10_000) -> tuple[str | None, list[str]]:
        """One meeting's lines, oldest first (``SnapshotStore.read_transcript``).

        Raises:
            StorageError: the store is closed or the read failed.
        """
        with self._lock:
            conn = self._live()
            try:
                if meeting_id is None:
                    row = conn.execute(_LAST_MEETING, (room_id,)).fetchone()
                    if row is None:
                        return None, []
                    meeting_id = row[0]
                lines = [t for (t,) in conn.execute(_READ, (room_id, meeting_id, limit))]
            except sqlite3.Error as exc:
                raise StorageError(f"room {room_id!r}: cannot read the transcript: "
                                   f"{exc}") from exc
        return meeting_id, lines

    async def close(self) -> None:
        """Close the connection; later calls raise :class:`StorageError`. Idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
