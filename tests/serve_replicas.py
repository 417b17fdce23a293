"""Helpers for tests that kill a gateway replica: find its Serve actor, and reconnect
until Serve's new replica takes the socket."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, TypeVar

import ray

T = TypeVar("T")


def replica_actor(replica_id: str):
    """The Serve replica actor whose replica id (``x-rooms-replica``) is ``replica_id``.

    Raises:
        AssertionError: no such replica.
    """
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["name"].endswith(replica_id) and "SERVE_REPLICA" in entry["name"]:
            return ray.get_actor(entry["name"], namespace=entry["namespace"])
    raise AssertionError(f"no Serve replica actor {replica_id!r}")


def kill_replica(replica_id: str) -> None:
    """Kill that replica for good (Serve starts another)."""
    ray.kill(replica_actor(replica_id), no_restart=True)


async def until_reconnected(connect: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """Call ``connect`` until it succeeds (as partysocket retries), for ``timeout`` s.

    Raises:
        AssertionError: it never succeeded.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect()
        except Exception as error:  # noqa: BLE001 - refused or 502/503 while Serve replaces it
            assert time.monotonic() < deadline, f"no replica took the reconnect: {error}"
            await asyncio.sleep(0.5)
