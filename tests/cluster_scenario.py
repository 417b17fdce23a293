"""Rooms on a 3-node Ray cluster (``ray.cluster_utils.Cluster``) with the PostgreSQL store.

Run by tests/test_cluster.py in a process of its own (a Ray driver can join only one
cluster, and the test session already runs a local Ray)::

    python -m tests.cluster_scenario POSTGRES_URL RESULT.json

It measures and records facts (it asserts nothing itself; the test does):

1. placement: 12 new rooms, each with one acknowledged ``userUpdate``: on which nodes,
   and which nodes have a warm pool (the workers joined after the head's pool started);
2. the gateway: 3 replicas, one per node, behind Serve's proxy on the head node; sockets
   to rooms, each knowing its replica's node (``x-rooms-node``);
3. a hibernated room with a persisted alarm, and the alarm scheduler on worker 2;
4. removing worker 1 (the one with the most rooms): per room, the seconds until it
   answers again, its node and whether its state is the acknowledged one; whether the
   sockets on surviving replicas stayed open and got the room's messages again;
5. removing worker 2 (the scheduler's node): whether the alarm still fired;
6. ``rooms ls`` (while all nodes are up) and the listing after both losses: every
   stored room, with a node for each live one.

On a real cluster every node has its own address and runs its own Serve proxy (or
HAProxy); here all nodes share one IP, so the proxy runs on the head node only and the
replicas are reached through it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

import httpx
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from websockets.asyncio.client import connect

from actors.config import RoomsConfig
from actors.directory import get_room, list_room_actors
from actors.errors import StoreNotShared
from actors.gateway import deploy_gateway, shutdown_gateway
from actors.net import free_port
from actors.scheduler import RemoteAlarmScheduler, scheduler_actor_options
from actors.warmpool import POOL_NAMESPACE, POOL_PREFIX, ensure_warm_pools
from storage import decode_snapshot, encode_snapshot, open_store

FAST_FAILOVER = {
    # how fast the GCS declares a lost node dead (defaults: several seconds to a minute);
    # docs/operating.md gives the same figures for real clusters. A node is declared dead
    # after ~3 s without an answer: 300 ms and 2 failures (~0.6 s) once declared a worker
    # that had just joined dead while this loaded 2-core machine stalled.
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
}


def update(conn: str, n: int) -> str:
    return json.dumps({"type": "userUpdate", "user": {
        "id": conn, "name": conn, "raisedHand": False, "speaking": False, "joined": True,
        "tracks": {"audioUnavailable": False, "audio": f"{conn}/{n}"}}})


def node_of(handle) -> str:
    return ray.get(handle.where.remote(), timeout=60).node_id


async def age_alarm(url: str, room_id: str, at: float) -> None:
    """Move the hibernated room's alarm (and its users' heartbeats with it) so that the
    alarm falls due at ``at`` and every user is timed out then, as if time had passed
    (or, for an ``at`` far ahead, so that it stays not due until moved again)."""
    store = open_store(url)
    try:
        snap = decode_snapshot(room_id, await store.load(room_id))
        room = snap.state["room"]
        shift = room["alarmAt"] - at
        room["alarmAt"] = at
        for conn in room["heartbeats"]:
            room["heartbeats"][conn] -= shift + 30
        await store.save(room_id, encode_snapshot(snap), epoch=snap.epoch, alarm_at=at)
    finally:
        await store.close()


async def stored_users(url: str, room_id: str) -> int | None:
    store = open_store(url)
    try:
        raw = await store.load(room_id)
        return None if raw is None else len(decode_snapshot(room_id, raw).state["room"]["users"])
    finally:
        await store.close()


async def run(pg_url: str, held: dict[str, Any]) -> dict[str, Any]:
    """The scenario; ``held["cluster"]`` is the cluster, for ``main`` to shut down
    whatever happens (a leftover cluster would be joined by later ``ray.init()``s)."""
    facts: dict[str, Any] = {}
    namespace = f"rooms-cluster-{uuid.uuid4().hex[:6]}"
    os.environ["ROOMS_NAMESPACE"] = namespace
    os.environ["ROOMS_STORE_URL"] = pg_url
    # One proxy (on the head node) for all: let it route sockets to every node's replica
    # (a real cluster's per-node proxies prefer their local replica, as they should).
    os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = "0"
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "_system_config": FAST_FAILOVER})
    held["cluster"] = cluster
    ray.init(address=cluster.address, namespace=namespace, log_to_driver=False)
    # the head's warm pool only: the workers join after, and get theirs from it
    ensure_warm_pools(1, pg_url, refill_s=2.0)
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    head_id = ray.get_runtime_context().get_node_id()
    worker_ids = [w.node_id for w in workers]
    facts["nodes"] = {"head": head_id, "workers": worker_ids}
    config = RoomsConfig(namespace=namespace, store_url=pg_url, idle_timeout=0,
                         poll_timeout=5.0, warm_workers=1)

    # 1. placement
    rooms = [f"c{i}-{uuid.uuid4().hex[:4]}" for i in range(12)]
    handles = {r: get_room(r, config) for r in rooms}
    ray.get([h.connect.remote("u", "user") for h in handles.values()], timeout=120)
    ray.get([h.message.remote("u", update("u", 1)) for h in handles.values()], timeout=60)
    acked = {r: ray.get(h.state.remote(), timeout=30) for r, h in handles.items()}
    placed = {r: node_of(h) for r, h in handles.items()}
    facts["placement"] = placed
    deadline = time.monotonic() + 30  # the nodes that joined got a warm pool
    while True:
        pools = sorted(e["name"][len(POOL_PREFIX):] for e in ray.util.list_named_actors(True)
                       if e["namespace"] == POOL_NAMESPACE and e["name"].startswith(POOL_PREFIX))
        if len(pools) == 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    facts["warm_pool_nodes"] = pools

    # a single-machine store is refused on this cluster: by a room and by rooms serve
    sqlite = RoomsConfig(namespace=namespace, store_url="sqlite:///tmp/rooms-cluster.sqlite3",
                         idle_timeout=0)
    try:
        ray.get(get_room(f"sqlite-{uuid.uuid4().hex[:4]}", sqlite).state.remote(), timeout=60)
        facts["sqlite_room"] = {"refused": False, "error": ""}
    except Exception as error:  # noqa: BLE001 - recorded for the test
        facts["sqlite_room"] = {"refused": isinstance(error, StoreNotShared),
                                "error": str(error).strip().splitlines()[-1]}
    from typer.testing import CliRunner

    from actors.cli import app

    os.environ["ROOMS_STORE_URL"] = sqlite.store_url
    served = CliRunner().invoke(app, ["serve", "--address", cluster.address, "--port", "0"],
                                env={"ROOMS_TOKEN_SECRET": "t" * 40})
    os.environ["ROOMS_STORE_URL"] = pg_url
    facts["sqlite_serve"] = {"exit": served.exit_code, "output": served.output}

    # rooms ls while every node is up: each room with the node it runs on
    listing = await asyncio.to_thread(CliRunner().invoke, app, ["ls"])
    facts["ls_exit"] = listing.exit_code
    facts["ls"] = listing.output

    # 2. the gateway: a replica per node, the proxy on the head node
    port = free_port()
    url = deploy_gateway(config, port=port, replicas=3, dev=True, ingress="proxy",
                         proxy_location="HeadOnly", replicas_per_node=1,
                         name="rooms-cluster-gw", ready_timeout_s=120)
    victim = max(worker_ids, key=lambda n: sum(1 for v in placed.values() if v == n))
    other_worker = next(n for n in worker_ids if n != victim)
    watched = next(r for r in rooms if placed[r] == victim)
    quiet_room = next((r for r in rooms if placed[r] != victim), rooms[0])
    sockets = []
    for i in range(9):
        ws = await connect(f"{url.replace('http', 'ws', 1)}/parties/rooms/{watched}"
                           f"?_pk=s{i}&username=s{i}", open_timeout=30)
        sockets.append({"ws": ws, "node": ws.response.headers.get("x-rooms-node"),
                        "messages": []})
    facts["socket_nodes"] = [s["node"] for s in sockets]
    # an oversized frame through Serve's proxy: its uvicorn takes the gateway's frame
    # limit (actors.gateway.proxy_callback) and closes 1009 before buffering the frame;
    # with uvicorn's defaults it relayed the frame and the room answered ``error``
    # (a room of its own: the rooms above are compared with their acknowledged state)
    big = await connect(f"{url.replace('http', 'ws', 1)}/parties/rooms/"
                        f"big-{uuid.uuid4().hex[:4]}?_pk=big&username=big", open_timeout=30)
    await big.send("x" * (config.max_message_bytes + 1))
    seen = []
    try:
        async with asyncio.timeout(30):
            async for frame in big:
                seen.append(json.loads(frame)["type"])
    except Exception:  # noqa: BLE001 - closed (the expected end), or the timeout
        pass
    facts["oversized"] = {"close": big.close_code, "seen": seen}
    await big.close()

    async def reader(sock):
        try:
            async for frame in sock["ws"]:
                sock["messages"].append(json.loads(frame))
        except Exception:  # noqa: BLE001 - closed
            pass

    readers = [asyncio.ensure_future(reader(s)) for s in sockets]

    async def heartbeats() -> None:
        """Like Orange's clients: a heartbeat every few seconds, so the rooms' 15 s
        sweep keeps every user (the rooms of a lost node included, once back)."""
        beat = json.dumps({"type": "heartbeat"})
        while True:
            for sock in sockets:
                if sock["ws"].close_code is None:
                    try:
                        await sock["ws"].send(beat)
                    except Exception:  # noqa: BLE001 - closed meanwhile
                        pass
            for room_id in rooms:
                get_room(room_id, config).message.remote("u", beat)
            await asyncio.sleep(2.0)

    beating = asyncio.ensure_future(heartbeats())
    await asyncio.sleep(1.0)

    # 3. a hibernated room with a due alarm soon, and the scheduler on worker 2
    alarm_room = f"alarm-{uuid.uuid4().hex[:4]}"
    ah = get_room(alarm_room, config)
    ray.get(ah.connect.remote("sleeper", "sleeper"), timeout=60)
    try:
        ray.get(ah.hibernate.remote(), timeout=30)
    except ray.exceptions.RayActorError:
        pass  # the actor exits during the call
    # not due before step 5 however long step 4 takes (a loaded run once took longer than
    # the heartbeat timeout, and the alarm fired early)
    await age_alarm(pg_url, alarm_room, time.time() + 3600.0)
    attempts = 10
    for attempt in range(attempts):  # soft affinity: Ray may still place it elsewhere; again
        scheduler = RemoteAlarmScheduler.options(
            **scheduler_actor_options(config, f"alarm-scheduler-{attempt}"),
            scheduling_strategy=NodeAffinitySchedulingStrategy(other_worker, soft=True),
        ).remote(config, poll_interval=0.5, grace=0.5)
        ray.get(scheduler.stats.remote(), timeout=60)
        facts["scheduler_node"] = ray.get(scheduler.__ray_call__.remote(
            lambda self: ray.get_runtime_context().get_node_id()), timeout=30)
        if facts["scheduler_node"] == other_worker or attempt == attempts - 1:
            break  # (the last one stays wherever it is: the scenario needs a scheduler)
        ray.kill(scheduler, no_restart=True)
        await asyncio.sleep(1.0)

    # 4. lose worker 1
    victims = [r for r in rooms if placed[r] == victim]
    acked = {r: ray.get(h.state.remote(), timeout=30) for r, h in handles.items()}
    cluster.remove_node(next(w for w in workers if w.node_id == victim),
                        allow_graceful=False)
    lost_at = time.monotonic()
    recovered: dict[str, Any] = {}

    async def answer_again(room_id: str) -> None:
        deadline = lost_at + 60
        while time.monotonic() < deadline:
            try:
                handle = get_room(room_id, config)
                where = await asyncio.wait_for(handle.where.remote(), 2.0)
                if where.node_id == victim:  # the old worker has not exited yet
                    await asyncio.sleep(0.05)
                    continue
                state = await asyncio.wait_for(handle.state.remote(), 2.0)
                recovered[room_id] = {
                    "seconds": round(time.monotonic() - lost_at, 2),
                    "state_ok": state == acked[room_id], "node": where.node_id}
                return
            except Exception:  # noqa: BLE001 - restarting
                await asyncio.sleep(0.05)

    await asyncio.gather(*(answer_again(r) for r in victims))
    facts["recovered"] = recovered
    # the watched room's sockets: a message after the loss reaches them again
    async with httpx.AsyncClient(timeout=30) as http:
        marker = f"after-{uuid.uuid4().hex[:6]}"
        for _ in range(40):
            reply = await http.post(f"{url}/rooms/{watched}/messages?username=poster",
                                    content=update("http:poster", 2).replace(
                                        "http:poster/2", marker))
            if reply.status_code == 200:
                break
            await asyncio.sleep(0.5)
        facts["post_after_loss"] = reply.status_code
        await asyncio.sleep(3.0)
    facts["sockets_after_loss"] = [{
        "node": s["node"],
        "open": s["ws"].close_code is None,
        "got_marker": any(marker in json.dumps(m) for m in s["messages"])}
        for s in sockets]
    facts["quiet_room_ok"] = ray.get(get_room(quiet_room, config).state.remote(),
                                     timeout=30) == acked[quiet_room]

    # 5. lose the scheduler's node; the alarm must still fire
    await age_alarm(pg_url, alarm_room, time.time() + 3.0)
    cluster.remove_node(next(w for w in workers if w.node_id == other_worker),
                        allow_graceful=False)
    facts["alarm_users_before"] = await stored_users(pg_url, alarm_room)
    fired = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        users = await stored_users(pg_url, alarm_room)
        if users == 0:
            fired = round(time.monotonic() - (deadline - 60), 2)
            break
        await asyncio.sleep(0.5)
    facts["alarm_fired_after_s"] = fired
    stats = ray.get(scheduler.stats.remote(), timeout=60)
    facts["scheduler_after"] = {
        "running": stats["running"], "wakes": stats["wakes"],
        "node": ray.get(scheduler.__ray_call__.remote(
            lambda self: ray.get_runtime_context().get_node_id()), timeout=30)}

    # 6. after both losses, every room is still listed, now on the head node
    # (a room that was on the lost node may still be restarting: wait until Ray has
    # placed every room again, up to 60 s, and say how long that took)
    listed_at = time.monotonic()
    while True:
        rows = list_room_actors(namespace)
        alive = {r["room"] for r in rows if r["state"] == "ALIVE" and r["node"]}
        if set(facts["placement"]) <= alive or time.monotonic() - listed_at > 60:
            break
        await asyncio.sleep(0.5)
    facts["list_room_actors_after_s"] = round(time.monotonic() - listed_at, 2)
    facts["list_room_actors"] = [{"room": r["room"], "node": r["node"], "state": r["state"]}
                                 for r in rows]

    beating.cancel()
    for s in sockets:
        await s["ws"].close()
    for task in readers:
        task.cancel()
    shutdown_gateway(None)
    return facts


def main() -> None:
    pg_url, out = sys.argv[1], sys.argv[2]
    held: dict[str, Any] = {}
    try:
        facts = asyncio.run(run(pg_url, held))
    finally:
        ray.shutdown()
        if "cluster" in held:
            held["cluster"].shutdown()
    with open(out, "w", encoding="utf-8") as f:
        json.dump(facts, f, indent=2)


if __name__ == "__main__":
    main()
