"""Warm workers: new rooms start in worker processes that already run and have already
imported the room runtime, so a room's first message waits for neither.

What Ray offers, and what this module uses (Ray 2.60):

* An actor always gets a worker process of its own, and Ray never hands an actor a
  worker that has run tasks; a new process costs ~0.5-0.7 s here (Python, Ray's core
  worker, then importing our modules when the actor class loads).
* The raylet keeps *prestarted* workers: idle processes started ahead of need, which an
  actor creation takes when its job and runtime environment match. Ray prestarts
  ``num_cpus`` of them when the first driver connects, and its ``PrestartWorkers`` RPC
  (``NodeManagerService``, the one Ray Data uses) starts more, for a given runtime
  environment, kept ``keep_alive_duration_secs`` past the idle-worker soft limit. There
  is no public Python API for it: :func:`prestart` calls the RPC through Ray's own gRPC
  helper (with Ray's token authentication); if it fails, rooms simply start cold.
* ``worker_process_setup_hook`` runs a function in a worker when it starts, but Ray
  honours it only in the *job's* runtime environment (``ray.init`` or a job
  submission, which turn it into the environment variable
  ``__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR`` that ``default_worker.py`` reads). In an
  actor's own runtime environment the field is kept for display and never run
  (checked: ``sys.modules`` of such a prestarted worker lacked the room runtime, and
  a room's creation and first call took ~150 ms instead of ~55 ms).
  :func:`room_runtime_env` therefore sets that variable itself, naming
  :func:`preload`, which imports the room runtime (and the store's driver); a room's
  worker, prestarted or not, has done that before the room's ``__init__``.
  ``tests/test_warmpool.py`` fails if a Ray upgrade changes this.

:class:`WarmPool` is one small detached actor per node (``warm-pool:<node id>``),
started on every node by :func:`ensure_warm_pools` and, on a node that joins later, by
its first room. Each room actor tells its node's pool when it started
(:func:`notify_started`, fire and forget, with the job id and runtime environment it
actually runs with); a second later
(not to compete with that room's activation for the CPU) the pool prestarts a worker
to replace the one taken, and every ``refill_s`` tops the node up to
``ROOMS_WARM_WORKERS`` for each environment it has seen. The raylet bounds the idle
workers itself (beyond its soft limit it ends those idle past their keep-alive).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from typing import Any

import ray

__all__ = ["POOL_PREFIX", "PRELOAD", "PRELOAD_ENV", "SETUP_HOOK_ENV", "WarmPool",
           "ensure_warm_pools", "notify_started", "preload", "preloaded_at", "prestart",
           "room_runtime_env"]

log = logging.getLogger("ray_rooms.warmpool")

POOL_PREFIX = "warm-pool:"
"""Actor name prefix of the per-node pools (``warm-pool:<node id hex>``)."""
try:
    from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR as SETUP_HOOK_ENV
except ImportError:  # pragma: no cover - the name Ray 2.x uses
    SETUP_HOOK_ENV = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"
"""The variable Ray's ``default_worker.py`` reads to run a setup hook (a
``module.function`` name) when a worker starts."""
PRELOAD_ENV = "RAY_ROOMS_PRELOAD"
"""The variable that tells :func:`preload` what to import (comma-separated modules)."""
PRELOAD = ("actors.room_actor",)
"""What :func:`preload` always imports: the room actor's class and what its activation
needs (the models, the SQLite and memory stores). The AI bridges (httpx, ~6 MiB per
process) are imported by a room when it first enables the AI, not by every room."""

_preloaded_at: float | None = None


def room_runtime_env(store_url: str) -> dict[str, Any]:
    """The runtime environment of room actors whose store is ``store_url`` (and of the
    workers prestarted for them): the setup hook :func:`preload`, told to import
    :data:`PRELOAD` and, for a PostgreSQL store, ``storage.postgres`` (asyncpg).
    Returns a ``runtime_env`` dict for ``.options()``; raises nothing."""
    from storage.factory import is_shared_store

    modules = [*PRELOAD, *(["storage.postgres"] if is_shared_store(store_url) else [])]
    return {"env_vars": {SETUP_HOOK_ENV: f"{__name__}.preload",
                         PRELOAD_ENV: ",".join(modules)}}


def preload() -> None:
    """The worker setup hook: import the modules :data:`PRELOAD_ENV` names (default
    :data:`PRELOAD`), so that creating a room imports nothing, and record when
    (:func:`preloaded_at`). Raises nothing (an import error shows up again, clearly,
    when the room starts)."""
    global _preloaded_at
    try:
        for name in filter(None, os.environ.get(PRELOAD_ENV, ",".join(PRELOAD)).split(",")):
            importlib.import_module(name.strip())
        _preloaded_at = time.time()
    except Exception:  # noqa: BLE001 - never fail a worker's start
        log.exception("preloading the room runtime failed")


def preloaded_at() -> float | None:
    """When (UNIX s) :func:`preload` finished in this process, or ``None`` if it did not
    run here (a worker started without the rooms' runtime environment)."""
    return _preloaded_at


def prestart(node: dict[str, Any], count: int, *, serialized_env: str, job_id: str,
             keep_alive_s: float) -> bool:
    """Ask the raylet of ``node`` to start ``count`` idle Python workers for
    ``job_id`` (hex) and the runtime environment ``serialized_env`` (Ray's JSON form).

    Args:
        node: an entry of ``ray.nodes()`` (``NodeManagerAddress``, ``NodeManagerPort``).
        count: workers to start (> 0).
        serialized_env: ``RuntimeEnv.serialize()`` of the rooms' environment.
        job_id: the job the rooms run under (hex).
        keep_alive_s: seconds the raylet keeps them even past its idle soft limit.

    Returns:
        Whether the raylet accepted the request (``False`` if Ray's internal RPC is not
        there or failed: rooms then start cold). Raises nothing.
    """
    try:
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc
        from ray.core.generated import runtime_environment_pb2

        channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
        try:
            stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
            stub.PrestartWorkers(node_manager_pb2.PrestartWorkersRequest(
                language=common_pb2.PYTHON, job_id=bytes.fromhex(job_id),
                runtime_env_info=runtime_environment_pb2.RuntimeEnvInfo(
                    serialized_runtime_env=serialized_env),
                num_workers=int(count), keep_alive_duration_secs=int(keep_alive_s)),
                timeout=10)
        finally:
            channel.close()
        return True
    except Exception as error:  # noqa: BLE001 - an optimisation only
        log.warning("prestarting workers failed (%s: %s); new rooms start cold",
                    type(error).__name__, error)
        return False


class WarmPool:
    """Keeps ``size`` idle workers ready on its node for each (job, runtime
    environment) that rooms started with recently.

    Args:
        node_id: the node (hex) whose raylet it asks.
        size: idle workers to keep per environment.
        refill_s: seconds between top-ups.
        initial: ``(job id hex, serialized runtime env)`` to warm right away (the
            rooms' environment as the deploying driver sees it), or ``None``.
        replace_after_s: seconds a replacement waits after a room took a worker, so
            that starting it (a process start costs most of a core for ~0.5 s) does not
            compete with that room's activation; replacements due together start
            together.
    """

    def __init__(self, node_id: str, size: int, refill_s: float = 30.0,
                 initial: tuple[str, str] | None = None,
                 replace_after_s: float = 1.0) -> None:
        self.node_id = node_id
        self.size = size
        self.refill_s = refill_s
        self.replace_after_s = replace_after_s
        self.envs: dict[tuple[str, str], float] = {}  # (job, env) -> last room start
        self.owed: dict[tuple[str, str], int] = {}  # replacements not yet asked for
        self.started = 0
        self.prestarted = 0
        self.failed = 0
        loop = asyncio.get_event_loop()
        self._task = loop.create_task(self._refill())
        self._replacing: asyncio.Task | None = None
        if initial is not None:
            self.envs[initial] = time.monotonic()
            loop.create_task(self._prestart(initial, size))

    def _node(self) -> dict[str, Any] | None:
        return next((n for n in ray.nodes() if n["NodeID"] == self.node_id and n["Alive"]),
                    None)

    async def _prestart(self, key: tuple[str, str], count: int) -> None:
        node = self._node()
        if node is None or count <= 0:
            return
        ok = await asyncio.to_thread(prestart, node, count, job_id=key[0],
                                     serialized_env=key[1], keep_alive_s=self.refill_s * 2)
        if ok:
            self.prestarted += count
        else:
            self.failed += 1

    async def room_started(self, job_id: str, serialized_env: str) -> None:
        """A room took a worker on this node: start one to replace it, shortly (and,
        the first time this environment is seen, the whole pool)."""
        self.started += 1
        key = (job_id, serialized_env)
        new = key not in self.envs
        self.envs[key] = time.monotonic()
        self.owed[key] = self.owed.get(key, 0) + (self.size if new else 1)
        if self._replacing is None or self._replacing.done():
            self._replacing = asyncio.get_event_loop().create_task(self._replace())

    async def _replace(self) -> None:
        await asyncio.sleep(self.replace_after_s)
        owed, self.owed = self.owed, {}
        for key, count in owed.items():
            await self._prestart(key, min(count, self.size * 4))

    async def _refill(self) -> None:
        while True:
            await asyncio.sleep(self.refill_s)
            horizon = time.monotonic() - 3600.0  # forget environments unused for an hour
            for key, seen in list(self.envs.items()):
                if seen < horizon:
                    del self.envs[key]
                else:
                    await self._prestart(key, self.size)

    def stats(self) -> dict[str, Any]:
        """``{"node_id", "size", "environments", "rooms_started", "prestarted",
        "failed"}``."""
        return {"node_id": self.node_id, "size": self.size, "environments": len(self.envs),
                "rooms_started": self.started, "prestarted": self.prestarted,
                "failed": self.failed}


RemoteWarmPool = ray.remote(WarmPool)


def _start_pool(namespace: str, node_id: str, size: int,
                initial: tuple[str, str] | None) -> "ray.actor.ActorHandle":
    """Get, or create pinned to ``node_id``, the detached pool of that node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return RemoteWarmPool.options(
        name=POOL_PREFIX + node_id, namespace=namespace, get_if_exists=True,
        lifetime="detached", num_cpus=0, max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(node_id, size, initial=initial)


def ensure_warm_pools(namespace: str, size: int, store_url: str) -> list[str]:
    """Start (once) a :class:`WarmPool` on every alive node; return their names.

    Args:
        namespace: the rooms' Ray namespace (the pools live there).
        size: idle workers per node (``ROOMS_WARM_WORKERS``); 0 starts none.
        store_url: the rooms' store, which decides their runtime environment
            (:func:`room_runtime_env`).

    Each pool warms right away for this job and that environment; rooms created
    elsewhere (e.g. by gateway replicas of another job) teach their pool theirs when
    they start, and a node that joins later gets its pool from its first room
    (:func:`notify_started`). Raises nothing for a node it cannot reach (that node's
    rooms start cold).
    """
    from ray.runtime_env import RuntimeEnv

    names: list[str] = []
    if size <= 0:
        return names
    initial = (ray.get_runtime_context().get_job_id(),
               RuntimeEnv(**room_runtime_env(store_url)).serialize())
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        try:
            _start_pool(namespace, node["NodeID"], size, initial)
            names.append(POOL_PREFIX + node["NodeID"])
        except Exception as error:  # noqa: BLE001
            log.warning("no warm pool on node %s (%s)", node["NodeID"][:8], error)
    return names


def notify_started(namespace: str, size: int) -> None:
    """Called in a room actor when it starts: tell this node's pool which job and
    runtime environment it took a worker for, starting the pool (of ``size`` workers)
    if the node has none yet (a node that joined after :func:`ensure_warm_pools`).
    ``size`` 0 starts no pool. Fire and forget; raises nothing."""
    try:
        context = ray.get_runtime_context()
        node_id = context.get_node_id()
        try:
            pool = ray.get_actor(POOL_PREFIX + node_id, namespace=namespace)
        except ValueError:  # no pool on this node yet
            if size <= 0:
                return
            pool = _start_pool(namespace, node_id, size, None)
        pool.room_started.remote(context.get_job_id(), context.runtime_env.serialize())
    except Exception:  # noqa: BLE001 - not in Ray, or the pool could not start
        log.debug("telling the warm pool failed", exc_info=True)
