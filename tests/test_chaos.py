"""Combined faults while clients stream (issue 19), as ``benchmarks/chaos.py`` runs them,
against a real two-replica gateway on a real PostgreSQL store: the room's process
SIGKILLed, a gateway replica killed, the PostgreSQL server stopped for 10 s (with a
room SIGKILL while it is down) and started again. The writers are careful clients (one
frame in flight, resent after an ``error`` or a reconnect); the test checks what they
saw: nothing acknowledged lost, no direct message lost or applied twice (apart from the
documented replay to a socket whose replica died), every writer moving again within
2 s of each fault healing.

Each replica kill also makes Serve reload HAProxy; the sockets the other replica
carries stay on the reloaded-out HAProxy worker, which Serve's default cut two minutes
later (``ROOMS_GATEWAY_RELOAD_GRACE_S`` now keeps them): the test counts the reopens."""

from __future__ import annotations

import uuid

import pytest
import ray

from actors.config import RoomsConfig
from actors.directory import actor_name
from actors.gateway import GatewayLimits, deploy_gateway, shutdown_gateway
from actors.net import free_port
from benchmarks.chaos import run_cycle
from storage.pgserver import ThrowawayPostgres
from tests.gateways import kill_replica

pytestmark = pytest.mark.ray


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of this test's own (it is stopped and started)."""
    server = ThrowawayPostgres(database="rooms_chaos").start()
    yield server
    server.remove()


async def test_combined_faults_lose_nothing_and_stall_no_writer(ray_session, own_postgres):
    namespace = f"rooms-chaos-{uuid.uuid4().hex[:8]}"
    config = RoomsConfig(namespace=namespace,
                         store_url=own_postgres.create_database("chaos"))
    app = "rooms-chaos"
    url = deploy_gateway(config, port=free_port(), replicas=2, name=app, dev=True,
                         limits=GatewayLimits(rate_per_s=1000, burst=1000,
                                              http_rate_per_s=1000, http_burst=1000))

    def pid_of(room: str) -> int:
        return ray.get(ray.get_actor(actor_name(room), namespace=namespace).pid.remote(),
                       timeout=30)

    try:
        result = await run_cycle(url, pid_of, own_postgres, kill_replica, progress=print)
    finally:
        shutdown_gateway(app)
    print(result.summary())
    assert len(result.faults) == 4 and result.reconnects >= 1, result.summary()
    # one replica killed: its sockets reopen once; more is churn (a cut, a close loop)
    assert result.reconnects <= 4, result.close_codes
    assert result.stalls_over(2.0) == 0, result.stall_s
    assert not result.dms_lost, result.dms_lost
    assert not result.dms_twice, result.dms_twice
    assert not result.lost_updates, result.lost_updates
    assert result.dms_sent > 20, result.summary()
