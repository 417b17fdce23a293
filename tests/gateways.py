"""Helpers for tests that run a real gateway: deploy a development-mode one, kill one
of its replicas, and reconnect until Serve's new replica takes the socket."""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import ray

from actors.config import RoomsConfig
from actors.gateway import GatewayLimits, deploy_gateway, shutdown_gateway
from actors.net import free_port

T = TypeVar("T")


@contextmanager
def dev_gateway(app: str, tmp_dir: Path, replicas: int = 1) -> Iterator[dict[str, Any]]:
    """Deploy gateway application ``app`` (development-mode identities, generous rate
    limits, its own namespace and SQLite store in ``tmp_dir``); yield ``{"url", "ws",
    "config"}``; delete it afterwards."""
    config = RoomsConfig(namespace=f"rooms-{app}-{uuid.uuid4().hex[:8]}",
                         store_url=f"sqlite:///{tmp_dir / 'rooms.sqlite3'}", idle_timeout=0,
                         poll_timeout=5.0)
    url = deploy_gateway(config, port=free_port(), replicas=replicas, name=app, dev=True,
                         limits=GatewayLimits(rate_per_s=1000, burst=1000,
                                              http_rate_per_s=1000, http_burst=1000,
                                              rooms_per_minute=10_000))
    try:
        yield {"url": url, "ws": url.replace("http://", "ws://"), "config": config}
    finally:
        shutdown_gateway(app)


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


def read_until_serving(proc, timeout: float = 120.0) -> list[str]:
    """The output lines of a ``rooms serve`` subprocess (text stdout) up to and
    including its ``identity:`` line, which it prints once it serves and its SIGTERM
    handler is in place; fewer if it exits or ``timeout`` seconds pass first."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("identity:"):
            break
    return lines
