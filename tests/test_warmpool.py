"""Warm workers (actors/warmpool.py), on the session's real Ray: a room's worker has
imported the room runtime before the room is created, and with a warm pool on the node
new rooms take workers started before they were asked for, which the pool replaces.

These fail if a Ray upgrade stops running the setup hook named in an actor's runtime
environment, or stops handing prestarted workers to actors.
"""

from __future__ import annotations

import time
import uuid

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
