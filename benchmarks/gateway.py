"""Benchmark: the gateway's cost over a bare driver-to-actor call.

Measures, on one local Ray with the gateway on loopback (dev auth, SQLite store in a
temporary directory):

1. round trip of ``partyserver-ping`` -> ``partyserver-pong``: a bare
   ``room.message.remote()`` from the driver (the turn and its durable save) versus a
   WebSocket through the gateway (frame -> room turn -> outbox -> long-poll -> socket);
   p50/p99 in milliseconds, and messages per second with ``--clients`` concurrent
   clients, each waiting for its pong before sending again;
2. broadcast: one ``userUpdate`` to a room of ``--sockets`` sockets; the time until
   every socket has the new ``roomState`` (p50/p99, ms).

Run: ``python -m benchmarks.gateway [--clients 8] [--sockets 50] [--seconds 5]``.
Prints one table and the ratios gateway / bare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import time
import uuid

PING = json.dumps({"type": "partyserver-ping"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _bare(handle, clients: int, seconds: float) -> tuple[list[float], float]:
    """Driver -> actor ``message`` calls: per-call latencies (s) and calls per second."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def one(i: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await handle.message.remote(f"bare-{i}", PING)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*[one(i) for i in range(clients)])
    return latencies, len(latencies) / (time.perf_counter() - started)


async def _websocket(base: str, room: str, clients: int,
                     seconds: float) -> tuple[list[float], float]:
    """Ping/pong round trips over WebSockets through the gateway."""
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    sockets = [await connect(f"{base}/parties/rooms/{room}?_pk=ws-{i}&username=u{i}")
               for i in range(clients)]
    for ws in sockets:  # drain the connect broadcasts
        await ws.recv()
    await asyncio.sleep(0.5)
    deadline = time.perf_counter() + seconds

    async def one(ws) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await ws.send(PING)
            while json.loads(await ws.recv())["type"] != "partyserver-pong":
                pass
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*[one(ws) for ws in sockets])
    rate = len(latencies) / (time.perf_counter() - started)
    for ws in sockets:
        await ws.close()
    return latencies, rate


async def _broadcast(base: str, room: str, n: int, rounds: int) -> list[float]:
    """Time from one ``userUpdate`` until all ``n`` sockets have its ``roomState``."""
    from websockets.asyncio.client import connect

    sockets = await asyncio.gather(*[
        connect(f"{base}/parties/rooms/{room}?_pk=b-{i}&username=b{i}", max_size=None)
        for i in range(n)])
    marks: dict[int, asyncio.Event] = {}
    counts: dict[int, int] = {}

    async def read(ws) -> None:
        async for frame in ws:
            message = json.loads(frame)
            if message["type"] != "roomState":
                continue
            for user in message["state"]["users"]:
                audio = user["tracks"].get("audio") or ""
                if user["id"] == "b-0" and audio.startswith("bench/"):
                    k = int(audio.split("/")[1])
                    counts[k] = counts.get(k, 0) + 1
                    if counts[k] == n:
                        marks[k].set()

    readers = [asyncio.ensure_future(read(ws)) for ws in sockets]
    await asyncio.sleep(2.0)
    times = []
    for k in range(rounds):
        marks[k] = asyncio.Event()
        started = time.perf_counter()
        await sockets[0].send(json.dumps({"type": "userUpdate", "user": {
            "id": "b-0", "name": "b0", "tracks": {"audio": f"bench/{k}"}}}))
        await asyncio.wait_for(marks[k].wait(), 30)
        times.append(time.perf_counter() - started)
    for task in readers:
        task.cancel()
    for ws in sockets:
        await ws.close()
    return times


async def main(clients: int, sockets: int, seconds: float, rounds: int) -> None:
    import ray

    from actors.config import RoomsConfig
    from actors.directory import get_room
    from actors.gateway import deploy_gateway, shutdown_gateway

    namespace = f"rooms-bench-{uuid.uuid4().hex[:6]}"
    ray.init(namespace=namespace, include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    store = tempfile.mkdtemp(prefix="rooms-bench-")
    config = RoomsConfig(namespace=namespace, store_url=f"sqlite:///{store}/rooms.sqlite3",
                         idle_timeout=0)
    url = deploy_gateway(config, port=_free_port(), dev=True, name="rooms-bench")
    base = url.replace("http://", "ws://")
    try:
        room = f"bench-{uuid.uuid4().hex[:8]}"
        handle = get_room(room, config)
        await handle.message.remote("warm", PING)
        bare, bare_rate = await _bare(handle, clients, seconds)
        ws, ws_rate = await _websocket(base, room, clients, seconds)
        fan = await _broadcast(base, f"bench-b-{uuid.uuid4().hex[:8]}", sockets, rounds)
    finally:
        shutdown_gateway("rooms-bench")
        ray.shutdown()
    rows = [
        ("bare actor call", _pct(bare, .5), _pct(bare, .99), bare_rate),
        ("websocket via gateway", _pct(ws, .5), _pct(ws, .99), ws_rate),
        (f"broadcast to {sockets} sockets", _pct(fan, .5), _pct(fan, .99), None),
    ]
    print(f"{'':32} {'p50 ms':>9} {'p99 ms':>9} {'msgs/s':>9}   ({clients} clients)")
    for name, p50, p99, rate in rows:
        print(f"{name:32} {p50:9.2f} {p99:9.2f} {'' if rate is None else f'{rate:9.0f}'}")
    print(f"ratio websocket/bare: p50 x{_pct(ws, .5) / _pct(bare, .5):.2f}, "
          f"throughput x{ws_rate / bare_rate:.2f}; broadcast p50 / bare p50 "
          f"x{statistics.median(fan) / statistics.median(bare):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--sockets", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.sockets, args.seconds, args.rounds))
