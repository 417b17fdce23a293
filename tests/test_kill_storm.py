"""The black-box kill storm (issue 19), as ``benchmarks/killstorm.py`` runs it, against a
real gateway with the room settings ``rooms serve --dev`` uses (hibernation after 60 s,
the 25 s long-poll), on one replica and on two with the sockets spread over both: after
every SIGKILL of the room's process, every writer moves again within 2 s of the room
answering, and no direct message or acknowledged update is lost or doubled. The
per-connection rate limit is raised: the writers send about a hundred frames a second
each (see the benchmark's docstring)."""

from __future__ import annotations

import os
import uuid

import pytest
import ray

from actors.config import RoomsConfig
from actors.directory import actor_name
from actors.gateway import GatewayLimits, deploy_gateway, shutdown_gateway
from actors.net import free_port
from benchmarks.killstorm import kill_storm

pytestmark = pytest.mark.ray

KILLS = int(os.environ.get("ROOMS_TEST_KILLS", "12"))


def _pid_of(namespace: str):
    def pid_of(room: str) -> int:
        handle = ray.get_actor(actor_name(room), namespace=namespace)
        return ray.get(handle.pid.remote(), timeout=30)
    return pid_of


@pytest.mark.parametrize("replicas", [1, 2])
async def test_a_kill_storm_loses_nothing_and_stalls_no_writer(ray_session, tmp_path, replicas):
    config = RoomsConfig(namespace=f"rooms-storm-{uuid.uuid4().hex[:8]}",
                         store_url=f"sqlite:///{tmp_path / 'rooms.sqlite3'}")
    app = f"rooms-storm-{replicas}"
    url = deploy_gateway(config, port=free_port(), replicas=replicas, name=app, dev=True,
                         limits=GatewayLimits(rate_per_s=1000, burst=1000,
                                              http_rate_per_s=1000, http_burst=1000))
    try:
        result = await kill_storm(url, _pid_of(config.namespace), kills=KILLS,
                                  spread=replicas, progress=print)
    finally:
        shutdown_gateway(app)
    print(result.summary())
    assert result.kills == KILLS
    assert result.stalls_over(2.0) == 0, result.stall_s
    assert not result.dms_lost and not result.dms_twice, (result.dms_lost, result.dms_twice)
    assert not result.lost_updates and not result.dropped and not result.errors
    assert len(set(result.replicas.values())) == replicas, result.replicas

