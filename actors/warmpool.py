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

:class:`WarmPool` is one small detached actor per node (``warm-pool:<node id>`` in
the namespace ``ray-rooms``), started on every node by :func:`ensure_warm_pools` and,
on a node that joins later, by the other pools. Each room actor tells its node's pool
when it started (:func:`notify_started`, fire and forget, with the job id and runtime
environment it actually runs with); a second later (not to compete with that room's
activation for the CPU) the pool tops that environment up to ``ROOMS_WARM_WORKERS``
idle workers, and every ``refill_s`` it replaces those the raylet may have ended (idle
past their keep-alive). It counts what it started, so an idle node starts nothing.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import ray

from .seam import prestart_workers, raylet_runtime_env, setup_hook_env_var

__all__ = ["AI_PRELOAD", "POOL_NAMESPACE", "POOL_PREFIX", "PRELOAD", "PRELOAD_ENV",
           "RUNTIME_PACKAGES", "SETUP_HOOK_ENV", "WarmPool", "ensure_warm_pools",
           "missing_bytecode", "notify_started", "preload",
           "preloaded_at", "preloads_ai", "prestart", "expect_rooms_from_here",
           "room_runtime_env", "rooms_created_here", "worker_env"]

log = logging.getLogger("ray_rooms.warmpool")

POOL_PREFIX = "warm-pool:"
"""Actor name prefix of the per-node pools (``warm-pool:<node id hex>``)."""
POOL_NAMESPACE = "ray-rooms"
"""The Ray namespace of the pools: one pool per node, whatever namespaces the rooms
use (a pool keys its workers by job and runtime environment)."""
SETUP_HOOK_ENV = setup_hook_env_var()
"""The variable Ray's ``default_worker.py`` reads to run a setup hook (a
``module.function`` name) when a worker starts (:func:`actors.seam.setup_hook_env_var`)."""
PRELOAD_ENV = "RAY_ROOMS_PRELOAD"
"""The variable that tells :func:`preload` what to import (comma-separated modules; a
``module:function`` entry also calls that function)."""
PRELOAD = ("actors.room_actor",)
"""What :func:`preload` always imports: the room actor's class and what its activation
needs (the models, the SQLite and memory stores). The HTTP client (httpx: ~50 ms of a
process's start, ~6 MiB) is imported by a room when it first enables the AI (the
bridges) or sends a webhook event, not by every room; unless every active room builds
the AI's clients anyway (:data:`AI_PRELOAD`)."""

AI_PRELOAD = ("bridges.calls", "bridges.openai", "bridges.openai_live", "httpcore",
              "anyio._backends._asyncio", "anyio.streams.tls", "bridges.http:tls_context")
"""What :func:`preload` adds where every active room builds the AI's clients
(:func:`preloads_ai`): the bridges' modules (httpx, websockets), what httpx imports only
when it builds a client (httpcore, ~70 ms) and sends its first request (anyio's asyncio
backend, ~25 ms), and the process's TLS context. A fresh room's process spent those
~0.3 s of CPU after its activation, and an ``enableAi`` sent right after the first join
waited for them (issue 23: ``python benchmarks/enable_ai.py --settle 0``); in a warm
worker they are spent before the room exists."""

RUNTIME_PACKAGES = ("actors", "bridges", "rooms", "storage")
"""The packages of the room runtime (the wheel's), whose bytecode every room's process
loads (:func:`missing_bytecode`)."""

_preloaded_at: float | None = None


def preloads_ai(config: Any) -> bool:
    """Whether the rooms of ``config`` (a :class:`~actors.config.RoomsConfig`) preload
    :data:`AI_PRELOAD`: each active room builds the AI's clients anyway
    (``ROOMS_AI_PREPARE`` on and Calls configured, explicitly or in this process's
    environment, as the rooms will read it). Every caller of :func:`room_runtime_env`
    for the same rooms must pass the same answer, or warm workers do not match. The
    environment is read once per process and set of explicit fields (reading it costs
    ~1 ms; ``get_room`` asks on every resolve). Raises nothing."""
    if not config.ai_prepare:
        return False
    services = config.services
    secret = services.calls_app_secret
    return _calls_configured(services.calls_app_id,
                             None if secret is None else bool(secret.get_secret_value()))


@functools.lru_cache(maxsize=16)
def _calls_configured(app_id: str | None, has_secret: bool | None) -> bool:
    """Calls configured with an explicit ``app_id`` (``None``: from the environment)
    and an explicit secret that is empty or not (``None``: from the environment). The
    cache keeps no secret."""
    from pydantic import SecretStr

    from .config import ServiceEndpoints
    from .services import calls_settings

    secret = None if has_secret is None else SecretStr("set" if has_secret else "")
    endpoints = ServiceEndpoints(calls_app_id=app_id, calls_app_secret=secret)
    return calls_settings(endpoints).configured


def room_runtime_env(store_url: str, ai: bool = False) -> dict[str, Any]:
    """The runtime environment of room actors whose store is ``store_url`` (and of the
    workers prestarted for them): the setup hook :func:`preload`, told to import
    :data:`PRELOAD`, for a PostgreSQL store ``storage.postgres`` (asyncpg), and with
    ``ai`` (:func:`preloads_ai`) :data:`AI_PRELOAD`.
    Returns a ``runtime_env`` dict for ``.options()``; raises nothing."""
    from storage.factory import is_shared_store

    modules = [*PRELOAD, *(["storage.postgres"] if is_shared_store(store_url) else []),
               *(AI_PRELOAD if ai else ())]
    return {"env_vars": {SETUP_HOOK_ENV: f"{__name__}.preload",
                         PRELOAD_ENV: ",".join(modules)}}


def preload() -> None:
    """The worker setup hook: import the modules :data:`PRELOAD_ENV` names (default
    :data:`PRELOAD`; a ``module:function`` entry also calls that function with no
    arguments), so that creating a room imports nothing, and record when
    (:func:`preloaded_at`; not when an entry failed). Raises nothing: an entry that
    fails is logged and the others still load (an import error shows up again,
    clearly, when the room or its AI starts)."""
    global _preloaded_at
    failed = False
    for entry in filter(None, os.environ.get(PRELOAD_ENV, ",".join(PRELOAD)).split(",")):
        try:
            name, _, function = entry.strip().partition(":")
            module = importlib.import_module(name)
            if function:
                getattr(module, function)()
        except Exception:  # noqa: BLE001 - never fail a worker's start; try the rest
            failed = True
            log.exception("preloading %s failed", entry.strip())
    if not failed:
        _preloaded_at = time.time()


def missing_bytecode() -> dict[str, list[str]]:
    """The room runtime's source files that every room's process will compile again.

    Python reads a module's bytecode from its ``__pycache__`` when it is there, and
    otherwise compiles the source and writes the bytecode, unless
    ``PYTHONDONTWRITEBYTECODE`` is set. A wheel install has the bytecode (pip compiles at
    install). A source checkout where that variable is set never gets it, so each room's
    process compiles the runtime when it starts: ~0.1 s of CPU here
    (docs/operating.md, "Bytecode").

    Returns:
        ``{package directory: [source files without bytecode, sorted]}`` for the
        packages of :data:`RUNTIME_PACKAGES` as this process finds them, listing only
        directories with such files, when this process was started with
        ``PYTHONDONTWRITEBYTECODE`` (which its workers inherit); ``{}`` otherwise, or
        when a package is not importable.
    """
    if not sys.flags.dont_write_bytecode:
        return {}
    missing: dict[str, list[str]] = {}
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        for root in (spec.submodule_search_locations or []) if spec else []:
            files = sorted(str(source) for source in Path(root).rglob("*.py")
                           if not os.path.exists(importlib.util.cache_from_source(str(source))))
            if files:
                missing[root] = files
    return missing


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
        return prestart_workers(node["NodeManagerAddress"], node["NodeManagerPort"], count,
                                serialized_env=serialized_env, job_id=job_id,
                                keep_alive_s=keep_alive_s)
    except Exception as error:  # noqa: BLE001 - an optimisation only (ImportError too)
        log.warning("prestarting workers failed (%s: %s); new rooms start cold",
                    type(error).__name__, error)
        return False


class WarmPool:
    """Keeps ``size`` idle workers ready on its node for each (job, runtime
    environment) that rooms started with recently.

    It replaces each worker a room takes ``replace_after_s`` later (at most ``4 *
    size`` at a time). It also counts the workers it prestarted and believes idle (each
    for ``keep_alive_s``, the time the raylet keeps it), takes one off when a room
    starts, and every ``refill_s`` tops each environment up to ``size``: so an idle node
    starts no processes.

    Args:
        node_id: the node (hex) whose raylet it asks.
        size: idle workers to keep per environment.
        refill_s: seconds between top-ups; each time it also starts a pool (with its
            own environments) on every alive node that has none (a node that joined).
        initial: ``[(job id hex, serialized runtime env)]`` to warm right away (the
            rooms' environment as the deploying driver sees it).
        replace_after_s: seconds a replacement waits after a room took a worker, so
            that starting it (a process start costs most of a core for ~0.5 s) does not
            compete with that room's activation; replacements due together start
            together.
        keep_alive_s: seconds the raylet keeps a prestarted idle worker (past that it
            may end it, and the pool no longer counts it).
    """

    def __init__(self, node_id: str, size: int, refill_s: float = 30.0,
                 initial: list[tuple[str, str]] | None = None,
                 replace_after_s: float = 1.0, keep_alive_s: float = 600.0) -> None:
        self.node_id = node_id
        self.size = size
        self.refill_s = refill_s
        self.replace_after_s = replace_after_s
        self.keep_alive_s = keep_alive_s
        self.envs: dict[tuple[str, str], float] = {}  # (job, env) -> last room start
        self.ready: dict[tuple[str, str], list[float]] = {}  # -> when each idle one started
        self.owed: dict[tuple[str, str], int] = {}  # replacements not yet asked for
        self.started = 0
        self.prestarted = 0
        self.failed = 0
        loop = asyncio.get_event_loop()
        self._task = loop.create_task(self._refill())
        self._replacing: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()  # kept: a task nobody holds can be collected
        for key in initial or []:
            self.envs[tuple(key)] = time.monotonic()
            task = loop.create_task(self._top_up(tuple(key)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _node(self) -> dict[str, Any] | None:
        return next((n for n in ray.nodes() if n["NodeID"] == self.node_id and n["Alive"]),
                    None)

    async def _prestart(self, key: tuple[str, str], count: int) -> None:
        """Ask the raylet for ``count`` more idle workers of ``key``; count them."""
        if count <= 0:
            return
        node = await asyncio.to_thread(self._node)  # ray.nodes() blocks: not on the loop
        if node is None:
            return
        ok = await asyncio.to_thread(prestart, node, count, job_id=key[0],
                                     serialized_env=key[1], keep_alive_s=self.keep_alive_s)
        if ok:
            self.prestarted += count
            self.ready.setdefault(key, []).extend([time.monotonic()] * count)
        else:
            self.failed += 1

    async def _top_up(self, key: tuple[str, str]) -> None:
        """Prestart what ``key`` lacks of ``size`` idle workers (forgetting those the
        raylet may have ended, idle past their keep-alive)."""
        horizon = time.monotonic() - self.keep_alive_s
        ready = self.ready[key] = [t for t in self.ready.get(key, []) if t > horizon]
        await self._prestart(key, self.size - len(ready))

    async def expect(self, job_id: str, serialized_env: str) -> None:
        """Rooms of ``job_id`` and ``serialized_env`` are coming (a gateway replica
        started): fill the pool for them now, unless it knows them already."""
        key = (job_id, serialized_env)
        if key not in self.envs:
            self.envs[key] = time.monotonic()
            await self._top_up(key)

    async def room_started(self, job_id: str, serialized_env: str) -> None:
        """A room took a worker on this node: replace it shortly (and, the first time
        this environment is seen, fill the pool)."""
        self.started += 1
        key = (job_id, serialized_env)
        new = key not in self.envs
        self.envs[key] = time.monotonic()
        ready = self.ready.setdefault(key, [])
        if ready:
            ready.pop(0)
        self.owed[key] = self.owed.get(key, 0) + (self.size if new else 1)
        if self._replacing is None or self._replacing.done():
            self._replacing = asyncio.get_event_loop().create_task(self._replace())

    async def _replace(self) -> None:
        while self.owed:  # rooms that start meanwhile are replaced after
            await asyncio.sleep(self.replace_after_s)
            owed, self.owed = self.owed, {}
            for key, count in owed.items():
                await self._prestart(key, min(count, self.size * 4))

    async def _refill(self) -> None:
        while True:
            await asyncio.sleep(self.refill_s)
            await asyncio.to_thread(self._spread)
            horizon = time.monotonic() - 3600.0  # forget environments unused for an hour
            for key, seen in list(self.envs.items()):
                if seen < horizon:
                    del self.envs[key]
                    self.ready.pop(key, None)
                else:
                    await self._top_up(key)

    def _spread(self) -> None:
        """Start a pool on every alive node that has none, with this pool's size, refill
        period and environments (pools are long-lived: no creation is cut short)."""
        try:
            have = {e["name"] for e in ray.util.list_named_actors(all_namespaces=True)
                    if e["namespace"] == POOL_NAMESPACE}
            for node in ray.nodes():
                if node["Alive"] and POOL_PREFIX + node["NodeID"] not in have:
                    _start_pool(node["NodeID"], self.size, list(self.envs), self.refill_s)
                    log.info("started the warm pool of node %s", node["NodeID"][:8])
        except Exception as error:  # noqa: BLE001 - next time
            log.warning("starting warm pools on new nodes failed (%s)", error)

    def stats(self) -> dict[str, Any]:
        """``{"node_id", "size", "environments", "ready" (idle workers it counts),
        "rooms_started", "prestarted", "failed"}``."""
        return {"node_id": self.node_id, "size": self.size, "environments": len(self.envs),
                "ready": sum(len(r) for r in self.ready.values()),
                "rooms_started": self.started, "prestarted": self.prestarted,
                "failed": self.failed}


RemoteWarmPool = ray.remote(WarmPool)


def _start_pool(node_id: str, size: int, initial: list[tuple[str, str]],
                refill_s: float) -> "ray.actor.ActorHandle":
    """Get, or create pinned to ``node_id``, the detached pool of that node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return RemoteWarmPool.options(
        name=POOL_PREFIX + node_id, namespace=POOL_NAMESPACE, get_if_exists=True,
        lifetime="detached", num_cpus=0, max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(node_id, size, refill_s=refill_s, initial=initial)


def ensure_warm_pools(size: int, store_url: str, refill_s: float = 30.0,
                      ai: bool = False) -> list[str]:
    """Start (once) a :class:`WarmPool` on every alive node (in
    :data:`POOL_NAMESPACE`); return their names.

    Args:
        size: idle workers per node (``ROOMS_WARM_WORKERS``); 0 starts none.
        store_url: the rooms' store, which decides their runtime environment
            (:func:`room_runtime_env`).
        refill_s: seconds between a pool's top-ups (and its look for new nodes).
        ai: whether the rooms preload the AI's clients (:func:`preloads_ai`).

    Each pool warms right away for this job and that environment; rooms created
    elsewhere (e.g. by gateway replicas of another job) teach their pool theirs when
    they start, and a node that joins later gets a pool from the others within
    ``refill_s``. Raises nothing for a node it cannot reach (that node's rooms start
    cold).
    """
    names: list[str] = []
    if size <= 0:
        return names
    initial = [rooms_created_here(store_url, ai)]
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        try:
            pool = _start_pool(node["NodeID"], size, initial, refill_s)
            pool.expect.remote(*initial[0])  # a pool that existed learns this process's
            names.append(POOL_PREFIX + node["NodeID"])
        except Exception as error:  # noqa: BLE001
            log.warning("no warm pool on node %s (%s)", node["NodeID"][:8], error)
    return names


def rooms_created_here(store_url: str, ai: bool = False) -> tuple[str, str]:
    """``(job id, serialized environment)`` of the workers the rooms this process
    creates will run in: :func:`room_runtime_env` (of ``store_url`` and ``ai``, see
    :func:`preloads_ai`) merged into this process's own
    runtime environment (a Serve replica's carries Serve's variables), as Ray merges
    them (:func:`worker_env`). Raises nothing beyond Ray's ``get_runtime_context``."""
    context = ray.get_runtime_context()
    own = dict(context.runtime_env or {})
    env = {**own, "env_vars": {**(own.get("env_vars") or {}),
                               **room_runtime_env(store_url, ai)["env_vars"]}}
    return context.get_job_id(), worker_env(env)


def expect_rooms_from_here(store_url: str, ai: bool = False) -> None:
    """Tell every node's pool that this process (a gateway replica) will create rooms,
    so that they prestart workers for the environment those rooms get
    (:func:`rooms_created_here` of ``store_url`` and ``ai``) before the first one.
    Fire and forget; raises
    nothing (without pools, rooms start cold)."""
    try:
        key = rooms_created_here(store_url, ai)
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if entry["namespace"] == POOL_NAMESPACE and entry["name"].startswith(POOL_PREFIX):
                ray.get_actor(entry["name"], namespace=POOL_NAMESPACE).expect.remote(*key)
    except Exception:  # noqa: BLE001 - an optimisation only
        log.debug("could not tell the warm pools about this replica's rooms", exc_info=True)


def notify_started() -> None:
    """Called in a room actor when it starts: tell this node's pool (if there is one)
    which job and runtime environment it took a worker for. Fire and forget; raises
    nothing. (A room never creates a pool: killed mid-creation, it would leave the
    pool's name taken by an actor that never runs.)"""
    try:
        context = ray.get_runtime_context()
        pool = ray.get_actor(POOL_PREFIX + context.get_node_id(), namespace=POOL_NAMESPACE)
        pool.room_started.remote(context.get_job_id(), worker_env(dict(context.runtime_env)))
    except Exception:  # noqa: BLE001 - no pool on this node (or not in Ray)
        pass


def worker_env(env: dict[str, Any]) -> str:
    """The serialized environment the raylet gave a room's worker, from the room's
    runtime environment ``env``: a room created where no runtime environment applies (a
    driver, a plain actor) has exactly :func:`room_runtime_env`'s variables; one created
    in a Serve replica (or any process with an environment of its own) has more, merged
    and serialized differently by Ray (:func:`actors.seam.raylet_runtime_env`). Raises
    nothing."""
    own = set(room_runtime_env("")["env_vars"])
    merged = set(env) != {"env_vars"} or set(env.get("env_vars") or {}) != own
    return raylet_runtime_env(env, merged)
