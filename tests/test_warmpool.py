"""Warm workers (actors/warmpool.py), on the session's real Ray: a room's worker has
imported the room runtime before the room is created, and with a warm pool on the node
new rooms take workers started before they were asked for, which the pool replaces.

These fail if a Ray upgrade stops running the setup hook named in an actor's runtime
environment, or stops handing prestarted workers to actors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from actors.config import RoomsConfig
from actors.warmpool import POOL_NAMESPACE, POOL_PREFIX, ensure_warm_pools

from .conftest import TEST_NAMESPACE
from .polling import until


@pytest.fixture
def config(sqlite_url) -> RoomsConfig:
    return RoomsConfig(namespace=TEST_NAMESPACE, store_url=sqlite_url, idle_timeout=0)


def _new_room(ray, config: RoomsConfig) -> tuple[float, dict, object]:
    """Create a new room; return (when get_room was called, its ``where()``, its
    handle)."""
    from actors.directory import get_room

    asked = time.time()
    handle = get_room(f"warm-{uuid.uuid4().hex[:10]}", config)
    where = ray.get(handle.where.remote(), timeout=60)
    return asked, where, handle


def test_a_rooms_worker_imports_the_room_runtime_before_the_room_starts(ray_session,
                                                                         config):
    ray = ray_session
    asked, where, handle = _new_room(ray, config)
    ray.kill(handle)
    # the setup hook ran in the room's worker (prestarted or not) before its __init__
    assert where.preloaded_at is not None


def test_new_rooms_take_prestarted_workers_and_the_pool_replaces_them(ray_session, config):
    ray = ray_session
    node = ray.get_runtime_context().get_node_id()
    names = ensure_warm_pools(2, config.store_url)
    assert names == [POOL_PREFIX + node]

    def lookup():
        try:
            return ray.get_actor(names[0], namespace=POOL_NAMESPACE)
        except ValueError:  # not registered yet
            return None

    pool = until("the warm pool", lookup)
    try:
        until("the pool's first workers",
              lambda: ray.get(pool.stats.remote())["prestarted"] >= 2)
        time.sleep(3.0)  # their processes start and preload
        for k in range(3):  # more rooms than the pool holds: it must replace workers
            asked, where, handle = _new_room(ray, config)
            assert where.preloaded_at is not None
            # the worker had started and imported the runtime before the room existed
            assert where.preloaded_at < asked, f"room {k} started in a new process"
            time.sleep(3.0)  # the pool replaces the worker 1 s later; it starts, preloads
            ray.kill(handle)  # (after the room has told its pool)
        stats = ray.get(pool.stats.remote())
        assert stats["rooms_started"] >= 3 and stats["failed"] == 0
        assert stats["prestarted"] >= 2 + 3, stats
    finally:
        ray.kill(pool)


def test_rooms_created_inside_a_runtime_environment_take_prestarted_workers(ray_session,
                                                                             config):
    """A Serve replica runs in a runtime environment of its own (Serve's variables), which
    Ray merges into the rooms it creates and serializes differently (actors.seam.
    raylet_runtime_env): the pool prestarted for the Python form, so every room a
    gateway created started in a new process (~1.3 s instead of ~0.1 s, issue 23).
    Here a plain actor with an environment variable of its own plays the replica: it
    tells the pools (as the gateway does when it starts), then creates rooms, each of
    which must run in a worker that existed before it was asked for."""
    ray = ray_session

    @ray.remote(num_cpus=0)
    class Creator:
        def __init__(self, config: RoomsConfig) -> None:
            from actors.warmpool import expect_rooms_from_here

            self.config = config
            expect_rooms_from_here(config.store_url)

        def room(self) -> tuple[float, float | None]:
            asked, where, handle = _new_room(ray, self.config)
            ray.kill(handle)
            return asked, where.preloaded_at

    names = ensure_warm_pools(2, config.store_url)
    pool = until("the warm pool",
                 lambda: _lookup(ray, names[0]))
    creator = Creator.options(runtime_env={"env_vars": {"ROOMS_TEST_REPLICA": "1"}}).remote(
        config)
    try:
        until("the pool's workers for the creator's rooms",
              lambda: ray.get(pool.stats.remote())["environments"] >= 2)
        time.sleep(4.0)  # their processes start and preload
        for k in range(2):
            asked, preloaded_at = ray.get(creator.room.remote(), timeout=120)
            assert preloaded_at is not None and preloaded_at < asked, \
                f"room {k} of the creator started in a new process"
            time.sleep(3.0)  # the pool replaces the worker
    finally:
        ray.kill(creator)
        ray.kill(pool)


def _lookup(ray, name: str):
    try:
        return ray.get_actor(name, namespace=POOL_NAMESPACE)
    except ValueError:  # not registered yet
        return None


def test_the_preload_leaves_out_what_only_some_rooms_need():
    """A room's worker imports what every room needs and nothing more: the HTTP client
    (httpx, ~50 ms of a new process's start and ~6 MiB) comes with the first webhook
    event or AI enable (or with the preload where every active room builds the AI's
    clients anyway, see the next tests), asyncpg with a PostgreSQL store. A surge of
    new rooms starts processes, so every module here is paid once per room."""
    from actors.warmpool import PRELOAD_ENV

    probe = ("import sys; from actors.warmpool import preload, preloaded_at; preload(); "
             "assert preloaded_at() is not None; "
             "print(','.join(m for m in ('httpx', 'asyncpg', 'aiortc', 'openai', "
             "'bridges.calls', 'opentelemetry.sdk') if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k != PRELOAD_ENV}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, env=env, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"preloaded for every room: {out.stdout.strip()}"


def _calls_configured(config: RoomsConfig, **changes) -> RoomsConfig:
    from pydantic import SecretStr

    from actors.config import ServiceEndpoints

    services = ServiceEndpoints(calls_base_url="http://127.0.0.1:9/v1", calls_app_id="app",
                                calls_app_secret=SecretStr("secret"))
    return config.model_copy(update={"services": services, **changes})


def test_rooms_that_prepare_the_ai_preload_its_clients_and_the_others_do_not(config,
                                                                            monkeypatch):
    """Where every active room builds the AI's clients (ROOMS_AI_PREPARE on and Calls
    configured), their imports and the TLS context are part of the preload; where not,
    the rooms' environment is what it was (and so the pools' workers match)."""
    from actors.warmpool import AI_PRELOAD, PRELOAD_ENV, preloads_ai, room_runtime_env

    from actors import warmpool

    for name in ("CALLS_APP_ID", "CALLS_APP_SECRET"):
        monkeypatch.delenv(name, raising=False)
    warmpool._calls_configured.cache_clear()  # the environment is read once per process
    assert not preloads_ai(config)
    assert preloads_ai(_calls_configured(config))
    assert not preloads_ai(_calls_configured(config, ai_prepare=False))
    plain = room_runtime_env(config.store_url)["env_vars"][PRELOAD_ENV].split(",")
    ai = room_runtime_env(config.store_url, ai=True)["env_vars"][PRELOAD_ENV].split(",")
    assert not set(AI_PRELOAD) & set(plain)
    assert ai == [*plain, *AI_PRELOAD]

    probe = ("import sys; from actors.warmpool import preload, preloaded_at; preload(); "
             "assert preloaded_at() is not None; from bridges.http import tls_context; "
             "print(tls_context.cache_info().currsize, "
             "all(m in sys.modules for m in ('httpx', 'httpcore', 'bridges.calls', "
             "'bridges.openai', 'bridges.openai_live', 'websockets', "
             "'anyio._backends._asyncio')))")
    env = {**os.environ, PRELOAD_ENV: ",".join(ai)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, env=env, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", "True"], out.stdout


def test_a_room_that_prepares_the_ai_finds_its_clients_imported_before_it_starts(
        ray_session, config, monkeypatch):
    """A fresh room whose AI clients are prepared: before it is even activated (so
    before its own preparation could run) its worker has imported the bridges and built
    the TLS context. Before, that ~0.19 s of CPU came after the room's activation, and
    an ``enableAi`` sent at once waited for it (issue 23)."""
    ray = ray_session
    for name in ("CALLS_APP_ID", "CALLS_APP_SECRET"):
        monkeypatch.delenv(name, raising=False)
    asked, where, handle = _new_room(ray, _calls_configured(config))
    try:
        assert where.lifecycle == "inactive"
        loaded = ray.get(handle.__ray_call__.remote(lambda self: (
            __import__("sys").modules.get("bridges.openai") is not None,
            __import__("bridges.http").http.tls_context.cache_info().currsize,
            self.lifecycle.value)), timeout=60)
        assert loaded == (True, 1, "inactive")
    finally:
        ray.kill(handle)
