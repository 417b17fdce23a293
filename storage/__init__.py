"""Snapshot stores for rooms: the protocol, the msgpack codec and the backends.

Use ``open_store(url)`` (``memory://``, ``memory://name``, ``sqlite:///path.db``,
``postgresql://user@host:port/db``) or
``open_store(DEFAULT_STORE_URL)``; encode room state with ``encode_snapshot`` and read
it back with ``decode_snapshot``. See :mod:`storage.base` for the fencing rules.
"""

from storage.base import (
    CorruptSnapshot,
    SnapshotError,
    SnapshotStore,
    StaleEpoch,
    StorageError,
    StorageUnavailable,
    UnknownSchemaVersion,
)
from storage.codec import SCHEMA_VERSION, Snapshot, decode_snapshot, encode_snapshot
from storage.factory import DEFAULT_STORE_URL, default_store_url, is_shared_store, open_store
from storage.memory import MemoryStore
from storage.sqlite import SqliteStore
from storage.urls import redact_url

__all__ = [
    "DEFAULT_STORE_URL",
    "SCHEMA_VERSION",
    "CorruptSnapshot",
    "MemoryStore",
    "PostgresStore",
    "Snapshot",
    "SnapshotError",
    "SnapshotStore",
    "SqliteStore",
    "StaleEpoch",
    "StorageError",
    "StorageUnavailable",
    "UnknownSchemaVersion",
    "decode_snapshot",
    "default_store_url",
    "encode_snapshot",
    "is_shared_store",
    "open_store",
    "redact_url",
]


def __getattr__(name: str):
    """``storage.PostgresStore`` without importing asyncpg into every process that
    only uses SQLite (a room process is about 2 MiB smaller)."""
    if name == "PostgresStore":
        from storage.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'storage' has no attribute {name!r}")
