"""The cluster snapshot store: one PostgreSQL database that every node reaches.

Chosen by ``ROOMS_STORE_URL=postgresql://user[:password]@host:port/db``. The driver is
asyncpg (binary protocol, prepared statements, no threads).

Layout (schema version 1, recorded in ``rooms_schema_migrations``)::

    rooms_snapshots(room_id TEXT PRIMARY KEY,
                    claimed_epoch BIGINT NOT NULL,  -- newest claimed epoch; survives
                                                    -- delete() so fencing survives a reset
                    data BYTEA NULL,                -- the msgpack record; NULL: none
                    saved_epoch BIGINT NULL,        -- the epoch that wrote ``data``
                    alarm_at DOUBLE PRECISION NULL) -- the room's alarm, UNIX seconds
    rooms_snapshots_alarm_at ON rooms_snapshots(alarm_at) WHERE alarm_at IS NOT NULL
    rooms_schema_migrations(version INT PRIMARY KEY, description TEXT,
                            applied_at TIMESTAMPTZ)

The store creates its schema on first use, inside one transaction that holds an
advisory lock (so processes that start together migrate once), and records each
migration it applied. A database migrated by a newer version of this code is refused.
No migration ever drops data.

Fencing. One row per room carries both the claimed epoch and the snapshot, so a save is
one statement: an ``INSERT ... ON CONFLICT DO UPDATE ... WHERE claimed_epoch <= mine``.
PostgreSQL locks the room's row for the upsert and evaluates the ``WHERE`` on its newest
committed version, and ``claim_epoch`` updates the same row, so a claim and a save are
ordered: a zombie's save can never land after a newer activation's claim.

Connections. Every room actor is its own process, so a store holds at most one
connection, opened on first use and closed by :meth:`PostgresStore.close` (a room closes
its store when it hibernates). A connection error (server restarting, network blip)
closes the connection; the call is tried again on a new one with exponential back-off
(tenacity) for at most ``retry_s`` seconds, then fails with
:class:`~storage.base.StorageUnavailable`. Repeating a save is safe: it writes the same
record under the same fence (a save that did land and is then refused as stale means a
newer activation exists, which is the truth). Past the server's ``max_connections``
(live rooms x nodes), put PgBouncer in transaction mode in front and set
``statement_cache_size=0`` (see docs/operating.md).

URL options (query string, removed before the URL reaches asyncpg):

==========================  ====================================================  =======
``statement_cache_size``    asyncpg's prepared-statement cache; 0 behind PgBouncer  100
                            in transaction mode
``connect_timeout``         seconds to open a connection                          5
``command_timeout``         seconds one statement may take                        10
``retry_s``                 seconds to keep retrying a call across connection     5
                            errors before :class:`StorageUnavailable`
==========================  ====================================================  =======
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Awaitable, Callable, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from tenacity import (AsyncRetrying, retry_if_exception_type, stop_after_delay,
                      wait_exponential)

from storage.base import StaleEpoch, StorageError, StorageUnavailable
from storage.urls import redact_url

__all__ = ["APPLICATION_NAME", "PostgresStore", "STORE_SCHEMA_VERSION"]

APPLICATION_NAME = "ray-rooms"
"""The ``application_name`` of the store's connections (``pg_stat_activity`` shows it)."""

STORE_SCHEMA_VERSION = 2
"""The newest table layout this code knows (a row of ``rooms_schema_migrations``)."""

_MIGRATIONS: dict[int, tuple[str, tuple[str, ...]]] = {
    1: ("rooms_snapshots: one row per room (claimed epoch, snapshot, alarm)", (
        "CREATE TABLE IF NOT EXISTS rooms_snapshots("
        " room_id TEXT PRIMARY KEY,"
        " claimed_epoch BIGINT NOT NULL DEFAULT 0,"
        " data BYTEA,"
        " saved_epoch BIGINT,"
        " alarm_at DOUBLE PRECISION)",
        "CREATE INDEX IF NOT EXISTS rooms_snapshots_alarm_at ON rooms_snapshots(alarm_at)"
        " WHERE alarm_at IS NOT NULL",
    )),
    2: ("rooms_transcripts: every meeting's AI transcript lines, appended", (
        "CREATE TABLE IF NOT EXISTS rooms_transcripts("
        " seq BIGSERIAL PRIMARY KEY,"
        " room_id TEXT NOT NULL,"
        " meeting_id TEXT NOT NULL,"
        " line_id TEXT NOT NULL,"
        " line TEXT NOT NULL,"
        " UNIQUE (room_id, meeting_id, line_id))",
    )),
}
"""Schema migrations by version: (description, statements). Append only; never drop."""

_MIGRATION_LOCK = 7_265_846_307_411_923_011
"""The advisory lock key that serialises schema migrations (any fixed 64-bit number)."""

_CLAIM = (
    "INSERT INTO rooms_snapshots AS r (room_id, claimed_epoch) VALUES ($1, 1)"
    " ON CONFLICT (room_id) DO UPDATE SET claimed_epoch = r.claimed_epoch + 1"
    " RETURNING claimed_epoch"
)
_SAVE = (
    "INSERT INTO rooms_snapshots AS r (room_id, claimed_epoch, data, saved_epoch, alarm_at)"
    " VALUES ($1, 0, $2, $3, $4)"
    " ON CONFLICT (room_id) DO UPDATE"
    " SET data = EXCLUDED.data, saved_epoch = EXCLUDED.saved_epoch,"
    " alarm_at = EXCLUDED.alarm_at"
    " WHERE r.claimed_epoch <= EXCLUDED.saved_epoch"
    " RETURNING 1"
)
_DELETE = (
    "UPDATE rooms_snapshots SET data = NULL, saved_epoch = NULL, alarm_at = NULL"
    " WHERE room_id = $1 AND claimed_epoch <= $2 RETURNING 1"
)
_CURRENT = "SELECT claimed_epoch FROM rooms_snapshots WHERE room_id = $1"
_LOAD = "SELECT data FROM rooms_snapshots WHERE room_id = $1"
_LIST = ("SELECT room_id FROM rooms_snapshots WHERE data IS NOT NULL"
         " ORDER BY room_id COLLATE \"C\"")
_DUE = (
    "SELECT room_id, alarm_at FROM rooms_snapshots"
    " WHERE alarm_at IS NOT NULL AND alarm_at <= $1 AND data IS NOT NULL"
    " ORDER BY alarm_at, room_id COLLATE \"C\""
)
_NEXT = ("SELECT min(alarm_at) FROM rooms_snapshots"
         " WHERE alarm_at IS NOT NULL AND data IS NOT NULL")

_TRANSIENT = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
              asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError,
              asyncpg.CrashShutdownError, asyncpg.TooManyConnectionsError,
              asyncpg.InterfaceError, asyncpg.InternalClientError)
"""Errors after which a new connection may succeed (the server restarts, the network
blips, the connection was closed under us or left in a broken protocol state)."""

_OPTIONS = {"statement_cache_size": int, "connect_timeout": float,
            "command_timeout": float, "retry_s": float}

T = TypeVar("T")


def _split_options(url: str) -> tuple[str, dict[str, Any]]:
    """Remove this store's options from ``url``'s query; return (url, options)."""
    parts = urlsplit(url)
    options: dict[str, Any] = {}
    rest = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OPTIONS:
            try:
                options[key] = _OPTIONS[key](value)
            except ValueError:
                raise ValueError(f"store URL {redact_url(url)!r}: {key} must be a number") \
                    from None
            if options[key] < 0:
                raise ValueError(f"store URL {redact_url(url)!r}: {key} must be >= 0")
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), options


class PostgresStore:
    """A :class:`~storage.base.SnapshotStore` in one PostgreSQL database (see the module
    docstring).

    Args:
        url: ``postgresql://user[:password]@host:port/db`` (``postgres://`` too), with
            the options of the module docstring in its query string.
        statement_cache_size: asyncpg's prepared-statement cache (0 behind PgBouncer in
            transaction mode); overrides the URL's.
        connect_timeout: seconds to open a connection.
        command_timeout: seconds one statement may take.
        retry_s: seconds to keep retrying across connection errors.

    Raises:
        ValueError: the URL's scheme is not PostgreSQL or an option is not a number.
    """

    def __init__(self, url: str, *, statement_cache_size: int | None = None,
                 connect_timeout: float | None = None, command_timeout: float | None = None,
                 retry_s: float | None = None) -> None:
        scheme = url.partition("://")[0].lower()
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(f"not a PostgreSQL URL: {redact_url(url)!r}")
        self._dsn, options = _split_options(url)
        self._shown = redact_url(url)
        given = {"statement_cache_size": statement_cache_size,
                 "connect_timeout": connect_timeout, "command_timeout": command_timeout,
                 "retry_s": retry_s}
        options.update({k: v for k, v in given.items() if v is not None})
        self.statement_cache_size = int(options.get("statement_cache_size", 100))
        self.connect_timeout = float(options.get("connect_timeout", 5.0))
        self.command_timeout = float(options.get("command_timeout", 10.0))
        self.retry_s = float(options.get("retry_s", 5.0))
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._migrated = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("connected" if self._conn else "idle")
        return f"PostgresStore({self._shown!r}, {state})"

    @property
    def connected(self) -> bool:
        """Whether the store holds an open connection now."""
        return self._conn is not None and not self._conn.is_closed()

    # ---- connection ----------------------------------------------------------------------

    async def _connection(self) -> asyncpg.Connection:
        if self._closed:
            raise StorageError(f"store {self._shown!r} is closed")
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            conn = await asyncpg.connect(
                self._dsn, timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                statement_cache_size=self.statement_cache_size,
                server_settings={"application_name": APPLICATION_NAME})
            try:
                if not self._migrated:
                    await self._migrate(conn)
                    self._migrated = True
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        """Apply the missing migrations in one transaction under the advisory lock."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS rooms_schema_migrations("
                " version INT PRIMARY KEY, description TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            current = await conn.fetchval(
                "SELECT coalesce(max(version), 0) FROM rooms_schema_migrations")
            if current > STORE_SCHEMA_VERSION:
                raise StorageError(
                    f"store {self._shown!r} has schema version {current}; this code knows "
                    f"{STORE_SCHEMA_VERSION} (upgrade ray-rooms)")
            for version in range(current + 1, STORE_SCHEMA_VERSION + 1):
                description, statements = _MIGRATIONS[version]
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO rooms_schema_migrations(version, description)"
                    " VALUES ($1, $2)", version, description)

    async def _run(self, what: str, call: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``call`` on the connection, reconnecting and retrying across connection
        errors for at most ``retry_s`` seconds; one call at a time."""
        async with self._lock:
            try:
                async for attempt in AsyncRetrying(
                        retry=retry_if_exception_type(_TRANSIENT),
                        stop=stop_after_delay(self.retry_s),
                        wait=wait_exponential(multiplier=0.05, max=1.0),
                        reraise=True):
                    with attempt:
                        try:
                            return await call(await self._connection())
                        except _TRANSIENT:
                            await self._drop_connection()
                            raise
            except _TRANSIENT as exc:
                raise StorageUnavailable(
                    f"{what}: the store {self._shown!r} is unreachable "
                    f"({type(exc).__name__}: {str(exc)[:200]})") from None
            except asyncpg.PostgresError as exc:
                raise StorageError(f"{what}: {type(exc).__name__}: {str(exc)[:200]}") from None
        raise AssertionError("unreachable")  # pragma: no cover - AsyncRetrying reraises

    # ---- the SnapshotStore protocol ---------------------------------------------------------

    async def claim_epoch(self, room_id: str) -> int:
        """Atomically claim and return a new epoch for ``room_id`` (previous + 1, from 1):
        one upsert on the room's row. Follows ``SnapshotStore.claim_epoch``.

        Raises:
            StorageUnavailable: the server could not be reached within ``retry_s``.
            StorageError: the store is closed or the statement failed.
        """
        return await self._run(f"room {room_id!r}: claim an epoch",
                               lambda c: c.fetchval(_CLAIM, room_id))

    async def load(self, room_id: str) -> bytes | None:
        """Return the stored snapshot bytes of ``room_id``, or ``None`` if it has none.

        Raises:
            StorageUnavailable, StorageError: as :meth:`claim_epoch`.
        """
        data = await self._run(f"room {room_id!r}: load the snapshot",
                               lambda c: c.fetchval(_LOAD, room_id))
        return None if data is None else bytes(data)

    async def save(self, room_id: str, data: bytes, *, epoch: int,
                   alarm_at: float | None = None) -> None:
        """Atomically replace the snapshot (and alarm) of ``room_id``: one fenced
        statement, written only if no newer epoch is claimed (an unclaimed room counts
        as epoch 0). Only a refused save costs a second query (for the error).

        Args:
            room_id: the room.
            data: the encoded snapshot (bytes-like).
            epoch: the epoch of the writing activation.
            alarm_at: the room's alarm in UNIX seconds, or ``None``.

        Raises:
            StaleEpoch: a newer epoch has been claimed; the stored record is untouched.
            TypeError: ``data`` is not bytes-like.
            ValueError: ``alarm_at`` is not finite.
            StorageUnavailable, StorageError: as :meth:`claim_epoch`.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"room {room_id!r}: snapshot data must be bytes-like, not {type(data).__name__}")
        if alarm_at is not None:
            alarm_at = float(alarm_at)
            if not math.isfinite(alarm_at):
                raise ValueError(
                    f"room {room_id!r}: alarm_at must be a finite UNIX time, got {alarm_at}")
        payload = bytes(data)

        async def save(conn: asyncpg.Connection) -> int | None:
            if await conn.fetchval(_SAVE, room_id, payload, epoch, alarm_at):
                return None
            return await conn.fetchval(_CURRENT, room_id)

        current = await self._run(f"room {room_id!r}: save the snapshot", save)
        if current is not None:
            raise StaleEpoch(room_id, epoch, current)

    async def delete(self, room_id: str, *, epoch: int) -> None:
        """Delete the snapshot and alarm of ``room_id``; keep its epoch counter (one
        fenced statement). Deleting a room without a snapshot is a no-op.

        Raises:
            StaleEpoch: a newer epoch has been claimed; nothing is deleted.
            StorageUnavailable, StorageError: as :meth:`claim_epoch`.
        """
        async def delete(conn: asyncpg.Connection) -> int | None:
            if await conn.fetchval(_DELETE, room_id, epoch):
                return None
            return await conn.fetchval(_CURRENT, room_id)

        current = await self._run(f"room {room_id!r}: delete the snapshot", delete)
        if current is not None and current > epoch:
            raise StaleEpoch(room_id, epoch, current)

    async def append_transcript(self, room_id: str, meeting_id: str,
                                lines: list[tuple[str, str]]) -> None:
        """Append transcript lines in one transaction, skipping line ids already stored
        for the meeting (``SnapshotStore.append_transcript``).

        Raises:
            StorageUnavailable, StorageError: as :meth:`claim_epoch`.
        """
        async def append(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO rooms_transcripts(room_id, meeting_id, line_id, line)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    [(room_id, meeting_id, i, t) for i, t in lines])

        await self._run(f"room {room_id!r}: append to the transcript", append)

    async def read_transcript(self, room_id: str, meeting_id: str | None = None,
                              limit: int = 10_000) -> tuple[str | None, list[str]]:
        """One meeting's lines, oldest first (``SnapshotStore.read_transcript``).

        Raises:
            StorageUnavailable, StorageError: as :meth:`claim_epoch`.
        """
        async def read(conn: asyncpg.Connection) -> tuple[str | None, list[str]]:
            meeting = meeting_id
            if meeting is None:
                meeting = await conn.fetchval(
                    "SELECT meeting_id FROM rooms_transcripts WHERE room_id = $1"
                    " ORDER BY seq DESC LIMIT 1", room_id)
                if meeting is None:
                    return None, []
            rows = await conn.fetch(
                "SELECT line FROM rooms_transcripts WHERE room_id = $1 AND meeting_id = $2"
                " ORDER BY seq LIMIT $3", room_id, meeting, limit)
            return meeting, [row[0] for row in rows]

        return await self._run(f"room {room_id!r}: read the transcript", read)

    async def list_rooms(self) -> list[str]:
        """Return the ids of all rooms that have a snapshot, sorted (code point order).

        Raises:
            StorageUnavailable, StorageError: as :meth:`claim_epoch`.
        """
        rows = await self._run("list rooms", lambda c: c.fetch(_LIST))
        return [row[0] for row in rows]

    async def due_alarms(self, now: float) -> list[tuple[str, float]]:
        """Return ``(room_id, alarm_at)`` for every alarm at or before ``now`` (UNIX s).

        Raises:
            StorageUnavailable, StorageError: as :meth:`claim_epoch`.
        """
        rows = await self._run("find due alarms", lambda c: c.fetch(_DUE, float(now)))
        return [(row[0], row[1]) for row in rows]

    async def next_alarm(self) -> float | None:
        """Return the earliest persisted alarm time (UNIX s), or ``None``.

        Raises:
            StorageUnavailable, StorageError: as :meth:`claim_epoch`.
        """
        return await self._run("find the next alarm", lambda c: c.fetchval(_NEXT))

    async def close(self) -> None:
        """Close the connection; the store refuses further calls. Idempotent."""
        self._closed = True
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and not conn.is_closed():
                try:
                    await asyncio.wait_for(conn.close(), self.command_timeout)
                except (asyncio.TimeoutError, *_TRANSIENT):
                    conn.terminate()
