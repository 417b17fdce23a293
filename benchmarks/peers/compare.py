"""Benchmark: ray-rooms beside a Cloudflare Durable Object on workerd, in one run
(issue 23, item 3).

    python -m benchmarks.peers.compare [--seconds 4] [--sockets 50] [--rounds 20]

The peer is ``benchmarks/peers/do/room.js``: a minimal Orange-style room written for
this benchmark as a Durable Object (WebSocket Hibernation API, SQLite-backed storage; a
connect or ``userUpdate`` is stored and ``roomState`` is sent to all; ping; direct
messages), run locally on workerd through miniflare (``benchmarks/peers/serve.mjs``,
the room's storage persisted on disk as ray-rooms' SQLite store is). The first run
installs miniflare and workerd from npm into ``benchmarks/peers/node_modules`` (it says
so; Node.js and npm must be installed).

The same Python client (the ``websockets`` library, offering permessage-deflate as
browsers do; both servers accept it) measures, against each system in turn:

* **round trip**: a ``userUpdate`` until the ``roomState`` carrying it, one message at
  a time, with 1 client and with 8 clients (each client its own room), p50/p99;
* **a meeting**: 8 clients in one room, each waiting for the ``roomState`` carrying its
  own update (every update is broadcast to all 8);
* **broadcast**: one ``userUpdate`` in a room of ``--sockets`` sockets, until every
  socket has the ``roomState`` carrying it, p50/p99 over ``--rounds``;
* **pipelined throughput**: 8 clients (a room each), 32 ``userUpdate`` s in flight each;
* **first message to a new room**: opening a socket to a room never used until its
  first ``roomState`` (the room is created, activated and stores its first user);
* **memory per live room**: ``--live-rooms`` new rooms with one socket and one update
  each; for workerd the growth of its process's RSS divided by the rooms (all rooms of
  a workerd run in one process); for ray-rooms the mean PSS of the rooms' worker
  processes (each room is an actor in a process of its own).

ray-rooms runs in a fresh local Ray with a SQLite store, its warm pool, and the gateway
in dev mode behind Serve's HAProxy (per-connection rate limits raised: the path is
measured, not the policy), first with one gateway replica, then with two (what a
second core buys). Prints a table with the ratios ray-rooms / workerd. All clients run
in this process on the same 2-core machine as both servers: absolute times drift, the
ratios measured in one run are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

from benchmarks.common import local_rooms, pct, processes, progress, smaps
from benchmarks.gateway import _heartbeats, _loop, _marker, _pipelined, broadcast, update

__all__ = ["Workerd", "ensure_miniflare", "measure"]

PEERS = Path(__file__).resolve().parent
"""This folder: ``package.json``, ``serve.mjs``, ``do/room.js``."""


def ensure_miniflare() -> None:
    """Install miniflare (with workerd) from npm into ``benchmarks/peers/node_modules``
    unless it is there.

    Raises:
        SystemExit: Node.js or npm is missing, or ``npm install`` failed.
    """
    if (PEERS / "node_modules" / "miniflare").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise SystemExit("the peer benchmark needs Node.js and npm "
                         "(Debian: apt-get install nodejs npm)")
    progress("installing miniflare and workerd from npm into benchmarks/peers/node_modules "
             "(benchmarks/peers/package.json; once)...")
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=PEERS)
    if done.returncode != 0:
        raise SystemExit(f"npm install failed in {PEERS} (exit {done.returncode})")


class Workerd:
    """``node serve.mjs PORT DIR``: the Durable Object on workerd through miniflare.

    Use as a context manager; ``base`` is its ``ws://`` root once entered, ``pid`` the
    workerd process (for its memory).

    Raises (on enter):
        RuntimeError: it did not print ``ready`` within 60 s.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"ws://127.0.0.1:{port}"
        self.pid: int | None = None
        self._dir = tempfile.mkdtemp(prefix="rooms-peer-do-")
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "Workerd":
        self._proc = subprocess.Popen(
            ["node", str(PEERS / "serve.mjs"), str(self.port), self._dir],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        assert self._proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in self._proc.stdout:
            if line.startswith("ready"):
                break
            if time.monotonic() > deadline:
                break
        else:
            raise RuntimeError("miniflare exited before it was ready")
        self.pid = _workerd_pid(self._proc.pid)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self._proc.pid, signal.SIGKILL)
        shutil.rmtree(self._dir, ignore_errors=True)


def _workerd_pid(root: int) -> int | None:
    """The pid of the ``workerd`` process under ``root`` (miniflare's node)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for pid, stat, title in processes():
        names[pid] = title
        children.setdefault(int(stat[1]), []).append(pid)
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid != root and names.get(pid, "").endswith("workerd"):
            return pid
        todo.extend(children.get(pid, []))
    return None


def _wait_replicas(app: str, replicas: int, timeout: float = 120.0) -> None:
    """Wait until Serve runs ``replicas`` replicas of ``app``'s gateway and nothing else
    of it is starting or stopping, then 3 s for HAProxy to take the change."""
    from ray import serve

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app)
        states = {}
        if status is not None:
            for deployment in status.deployments.values():
                states = {str(k): v for k, v in deployment.replica_states.items()}
        if states and all(k.endswith("RUNNING") for k in states) \
                and sum(states.values()) == replicas:
            time.sleep(3.0)
            return
        time.sleep(0.5)
    raise TimeoutError(f"{app} did not reach {replicas} running replicas")


def _stop_rooms(namespace: str) -> None:
    """Kill every room actor of ``namespace`` (each a process of its own)."""
    import ray

    from actors.directory import ACTOR_PREFIX

    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == namespace and entry["name"].startswith(ACTOR_PREFIX):
            try:
                ray.kill(ray.get_actor(entry["name"], namespace=namespace))
            except ValueError:
                pass
    time.sleep(2.0)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _open(base: str, room: str, conn: str) -> Any:
    """A socket of ``conn`` in ``room``, after its first ``roomState``. Its frames are
    buffered without bound (``max_queue=None``): a socket idle while the others are
    measured is not read, and a bounded buffer would pause its reader, so that the
    server's keepalive pings went unanswered (1011 "heartbeat timeout")."""
    from websockets.asyncio.client import connect

    ws = await connect(f"{base}/parties/rooms/{room}?_pk={conn}&username={conn}",
                       max_size=None, max_queue=None)
    while json.loads(await ws.recv())["type"] != "roomState":
        pass
    return ws


async def measure(base: str, *, seconds: float, window: int, sockets: int, rounds: int,
                  new_rooms: int, new_room_gap: float, live_rooms: int,
                  room_memory: Callable[[list[str]], Awaitable[float]] | None
                  ) -> dict[str, Any]:
    """Every measurement of the module docstring against the server at ``base``.

    Args:
        base: the ``ws://`` root serving ``/parties/rooms/{room}``.
        seconds: length of each round-trip and throughput run, seconds.
        window: frames in flight per client in the pipelined run.
        sockets: sockets in the broadcast room.
        rounds: broadcasts measured.
        new_rooms: new rooms opened for "first message".
        new_room_gap: seconds between them (a new meeting on a system that is up;
            back to back, ray-rooms' warm workers run out and rooms start cold).
        live_rooms: rooms kept live for the memory figure (0: skip it).
        room_memory: ``await room_memory(rooms)`` gives MiB per room for the rooms
            named, with their sockets open (``None``: skip the memory figure).

    Returns:
        ``{name: (latencies s, rate per s)}`` for ``rtt1``, ``rtt8``, ``meeting8``,
        ``piped``, ``broadcast``, ``first``; ``memory_mib`` a float.
    """
    tag = uuid.uuid4().hex[:6]
    results: dict[str, Any] = {}
    opened: list[Any] = []  # heartbeats from the first socket on: opening 9 new rooms
    beats = asyncio.ensure_future(_heartbeats(opened))  # may take longer than 15 s
    own: list[Any] = []
    meeting: list[Any] = []
    for i in range(8):
        own.append(await _open(base, f"peer-w-{tag}-{i}", f"w-{i}"))
        opened.append(own[-1])
    for i in range(8):
        meeting.append(await _open(base, f"peer-m-{tag}", f"m-{i}"))
        opened.append(meeting[-1])

    def round_trip(group: list[Any], prefix: str):
        async def one(i: int, k: int) -> None:
            await group[i].send(update(f"{prefix}-{i}", k))
            while _marker(json.loads(await group[i].recv()), f"{prefix}-{i}") != k:
                pass
        return one

    await _loop(8, 0.5, round_trip(own, "w"))  # warm-up
    results["rtt1"] = await _loop(1, seconds, round_trip(own, "w"))
    results["rtt8"] = await _loop(8, seconds, round_trip(own, "w"))
    results["meeting8"] = await _loop(8, seconds, round_trip(meeting, "m"))
    results["piped"] = await _pipelined(own, window, seconds)
    beats.cancel()
    for ws in own + meeting:
        await ws.close()
    results["broadcast"] = await broadcast(base, sockets, rounds)

    first: list[float] = []
    for i in range(new_rooms):
        await asyncio.sleep(new_room_gap)
        started = time.perf_counter()
        ws = await _open(base, f"peer-new-{tag}-{i}", "n-0")
        first.append(time.perf_counter() - started)
        await ws.close()
    results["first"] = (first, None)

    if room_memory is not None and live_rooms:
        names = [f"peer-live-{tag}-{i}" for i in range(live_rooms)]
        live = []
        for i, room in enumerate(names):
            ws = await _open(base, room, "l-0")
            await ws.send(update("l-0", i))
            while _marker(json.loads(await ws.recv()), "l-0") != i:
                pass
            live.append(ws)
        results["memory_mib"] = await room_memory(names)
        for ws in live:
            await ws.close()
    return results


def _rows(results: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """``{row: (p50 ms, p99 ms or rate)}`` for the table."""
    def lat(key: str) -> tuple[float, float]:
        values = results[key][0]
        return pct(values, .5), pct(values, .99)
    rows = {
        "round trip, 1 client, p50 / p99 ms": lat("rtt1"),
        "round trip, 8 clients (a room each), p50 / p99 ms": lat("rtt8"),
        "a meeting: 8 clients in one room, p50 / p99 ms": lat("meeting8"),
        "broadcast to the room's sockets, p50 / p99 ms": lat("broadcast"),
        "first message to a new room, p50 / p99 ms": lat("first"),
        "pipelined userUpdates, messages/s": (results["piped"][1], None),
    }
    if "memory_mib" in results:
        rows["memory per live room, MiB"] = (results["memory_mib"], None)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run both systems (ray-rooms with 1, then 2 gateway replicas) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--sockets", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--new-rooms", type=int, default=10)
    parser.add_argument("--new-room-gap", type=float, default=2.5,
                        help="seconds between the new rooms (as benchmarks/gateway.py's "
                             "cold activations)")
    parser.add_argument("--live-rooms", type=int, default=20)
    args = parser.parse_args(argv)
    ensure_miniflare()

    import ray

    from actors.directory import actor_name
    from actors.gateway import GatewayLimits, deploy_gateway, shutdown_gateway
    from actors.net import free_port

    common = dict(seconds=args.seconds, window=args.window, sockets=args.sockets,
                  rounds=args.rounds, new_rooms=args.new_rooms,
                  new_room_gap=args.new_room_gap, live_rooms=args.live_rooms)
    begun = time.perf_counter()
    progress("1. the Durable Object on workerd (miniflare)...")
    with Workerd(free_port()) as peer:
        before = _rss_kib(peer.pid) if peer.pid else 0

        async def do_memory(names: list[str]) -> float:
            await asyncio.sleep(1.0)
            return (_rss_kib(peer.pid) - before) / 1024 / len(names) if peer.pid else float("nan")

        do = asyncio.run(measure(peer.base, room_memory=do_memory, **common))
    progress(f"   done: round trip p50 {pct(do['rtt1'][0], .5):.2f} ms, "
             f"{do['piped'][1]:.0f} msg/s pipelined")

    progress("2. ray-rooms: a local Ray and the gateway, one replica...")
    config = local_rooms("rooms-peers")  # Ray, a SQLite store, the warm pool
    namespace = config.namespace
    limits = GatewayLimits(rate_per_s=1e6, burst=10**6, abuse_strikes=10**6)

    async def rooms_memory(names: list[str]) -> float:
        pids = [await ray.get_actor(actor_name(n), namespace=namespace).pid.remote()
                for n in names]
        return statistics.mean(smaps(pid)["Pss"] for pid in pids) / 1024

    ours: dict[int, dict[str, Any]] = {}
    port = free_port()
    try:
        for replicas in (1, 2):
            url = deploy_gateway(config, port=port, dev=True, name="rooms-peers",
                                 limits=limits, replicas=replicas)
            base = url.replace("http://", "ws://")
            _wait_replicas("rooms-peers", replicas)
            progress(f"   ray-rooms with {replicas} gateway replica(s) at {url}")
            ours[replicas] = asyncio.run(measure(
                base, room_memory=rooms_memory if replicas == 1 else None, **common))
            progress(f"   done: round trip p50 {pct(ours[replicas]['rtt1'][0], .5):.2f} ms, "
                     f"{ours[replicas]['piped'][1]:.0f} msg/s pipelined")
            _stop_rooms(namespace)  # the next run starts from as few processes
    finally:
        shutdown_gateway("rooms-peers")
        ray.shutdown()

    peer_rows, one, two = _rows(do), _rows(ours[1]), _rows(ours[2])
    print()
    print(f"{'':52} {'workerd DO':>16} {'ray-rooms x1':>16} {'ratio':>7} "
          f"{'ray-rooms x2':>16} {'ratio':>7}")
    for name, (a, b) in peer_rows.items():
        def cell(values: tuple[float, float | None] | None) -> str:
            if values is None:
                return f"{'-':>16}"
            x, y = values
            return f"{x:8.2f} /{y:7.2f}" if y is not None else f"{x:16.1f}"

        def ratio(values: tuple[float, float | None] | None) -> str:
            return f"{'-':>7}" if values is None or not a else f"x{values[0] / a:6.2f}"

        print(f"{name:52} {cell((a, b))} {cell(one.get(name))} {ratio(one.get(name))} "
              f"{cell(two.get(name))} {ratio(two.get(name))}")
    print(f"({args.sockets} sockets in the broadcast room; memory: workerd's RSS growth per "
          f"room, ray-rooms' PSS per room process; ratios are ray-rooms / workerd; "
          f"total {time.perf_counter() - begun:.0f} s)")


if __name__ == "__main__":
    main()
