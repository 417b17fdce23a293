"""Open a snapshot store from a URL.

Supported URLs:

``memory://``
    a fresh, private :class:`~storage.memory.MemoryStore`.
``memory://<name>``
    the process-wide :class:`~storage.memory.MemoryStore` called ``<name>``: every call
    with the same name in one process returns the same object (nothing is shared
    across processes).
``sqlite:///<absolute path>`` / ``sqlite://<relative path>``
    a :class:`~storage.sqlite.SqliteStore` on that file (relative to the current
    directory; ``~`` is expanded; the directory is created). Options may follow as a
    query string: ``?synchronous=FULL`` and ``?busy_timeout=<seconds>``. The path is
    used as written (no percent-decoding); it may not contain ``?``.
``postgresql://user[:password]@host:port/db`` (or ``postgres://``)
    a :class:`~storage.postgres.PostgresStore`: the store for a Ray cluster of more
    than one node (options in its module docstring).

SQLite and memory stores live on one machine (:func:`is_shared_store` is false for
them): a room that moves to another node would not find its snapshot there.

:data:`DEFAULT_STORE_URL` is the value of the environment variable ``ROOMS_STORE_URL``
when set and non-empty, else ``sqlite:///<home>/.local/share/ray-rooms/rooms.sqlite3``.
It is computed at import time; :func:`default_store_url` recomputes it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl

from storage.base import SnapshotStore
from storage.memory import MemoryStore
from storage.sqlite import SqliteStore
from storage.urls import redact_url

__all__ = ["DEFAULT_STORE_URL", "STORE_URL_ENV", "default_store_url", "is_shared_store",
           "open_store", "redact_url"]

STORE_URL_ENV = "ROOMS_STORE_URL"
"""The environment variable that overrides :data:`DEFAULT_STORE_URL`."""

_named_memory: dict[str, MemoryStore] = {}
_named_lock = threading.Lock()


def default_store_url(environ: Mapping[str, str] | None = None) -> str:
    """Return the store URL to use when none is given.

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        ``environ["ROOMS_STORE_URL"]`` if set and non-empty, else the SQLite URL of
        ``~/.local/share/ray-rooms/rooms.sqlite3`` (home directory expanded).
    """
    env = os.environ if environ is None else environ
    url = env.get(STORE_URL_ENV, "").strip()
    if url:
        return url
    path = Path("~/.local/share/ray-rooms/rooms.sqlite3").expanduser()
    return f"sqlite://{path.as_posix()}" if path.is_absolute() else f"sqlite:///{path.as_posix()}"


DEFAULT_STORE_URL: str = default_store_url()
"""The default store URL (see the module docstring)."""


def _sqlite_options(url: str, query: str) -> dict[str, object]:
    options: dict[str, object] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key == "synchronous":
            options["synchronous"] = value
        elif key == "busy_timeout":
            try:
                options["busy_timeout"] = float(value)
            except ValueError:
                raise ValueError(f"store URL {url!r}: busy_timeout must be seconds") from None
        else:
            raise ValueError(
                f"store URL {url!r}: unknown option {key!r} (known: synchronous, busy_timeout)"
            )
    return options


def open_store(url: str) -> SnapshotStore:
    """Open the snapshot store named by ``url`` (forms in the module docstring).

    Args:
        url: ``memory://``, ``memory://<name>``, ``postgresql://user@host:port/db``,
            ``sqlite:///abs/path.db`` or
            ``sqlite://relative/path.db`` (optionally ``?synchronous=FULL`` and/or
            ``?busy_timeout=<seconds>``).

    Returns:
        A :class:`~storage.base.SnapshotStore`; the caller closes it with ``close()``.

    Raises:
        ValueError: an unknown scheme, an empty SQLite path or an unknown option.
        StorageError: the SQLite file cannot be opened (see ``SqliteStore``).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        # Not echoed: without a scheme the URL cannot be parsed, so a password in it
        # could not be redacted.
        raise ValueError(
            "the store URL has no scheme; use memory://[name], sqlite:///path or "
            "postgresql://user@host:port/db"
        )
    scheme = scheme.lower()
    if scheme == "memory":
        if not rest:
            return MemoryStore()
        with _named_lock:
            store = _named_memory.get(rest)
            if store is None:
                store = _named_memory[rest] = MemoryStore()
        return store
    if scheme == "sqlite":
        path, _, query = rest.partition("?")
        if not path:
            raise ValueError(f"store URL {url!r} names no database file")
        return SqliteStore(path, **_sqlite_options(url, query))  # type: ignore[arg-type]
    if scheme in ("postgresql", "postgres"):
        from storage.postgres import PostgresStore  # asyncpg only where it is used

        return PostgresStore(url)
    raise ValueError(
        f"unknown store URL scheme {scheme!r}; supported: memory://[name], "
        "sqlite:///abs/path.db, sqlite://relative.db, postgresql://user@host:port/db"
    )


def is_shared_store(url: str) -> bool:
    """Whether the store ``url`` names is reachable from every node of a cluster
    (PostgreSQL), as opposed to one machine's file or one process's memory."""
    return url.partition("://")[0].lower() in ("postgresql", "postgres")

