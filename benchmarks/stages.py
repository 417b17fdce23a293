"""Where one frame's time goes between the socket and the room and back (issue 23):
the OpenTelemetry spans of every frame (:mod:`actors.tracing`), joined with what the
client saw.

One client sends ``userUpdate``s one at a time through a one-replica gateway and waits
for the ``roomState`` carrying each; then one of ``--sockets`` sockets in one room sends
updates that are broadcast to all. Every frame is traced (``ROOMS_OTEL_ENDPOINT`` set
to a collector on loopback, :class:`benchmarks.otlp.Collector`), and each round trip is
cut at the spans' edges into:

========================  ============================================================
socket in                 the client's send -> the replica's ``rooms.frame`` starts
                          (client, HAProxy, uvicorn, Serve's direct ingress)
to the room               ``rooms.frame`` starts -> the room's ``rooms.turn`` starts
                          (the batcher, the ``deliver`` call's way to the room)
turn                      ``rooms.turn`` (the room's handler)
save                      ``rooms.turn`` ends -> ``rooms.save`` ends (group commit)
back to the replica       ``rooms.save`` ends -> ``rooms.fanout`` starts (the
                          ``deliver`` result's way back, the ordered merge)
fan-out                   ``rooms.fanout`` (queueing the entry for each socket)
socket out                ``rooms.fanout`` ends -> the client has read the frame (the
                          socket's writer, uvicorn, HAProxy, the client's parse)
========================  ============================================================

Span times are each process's wall clock (``time.time_ns``, one clock on one
machine). Tracing costs time of its own (a span is a few tens of microseconds), so read
the shares, not the absolute figures; ``python -m benchmarks.gateway`` gives those.
For comparison it also times, in the same run and with the same gap between calls: a
bare Ray actor call from the driver,
and the floor (:mod:`benchmarks.floor`) with one client: a Serve replica on the same
HAProxy that echoes each frame, and one that echoes it after a call of a bare actor.
The floor's difference is what one actor call costs from inside a replica.

Run: ``python -m benchmarks.stages`` (needs the ``otel`` extra: ``pip install -e
'.[otel]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import ray

from benchmarks.common import Bare, local_rooms, pct, progress
from benchmarks.floor import FLOOR_PREFIX, delete_floor, deploy_floor
from benchmarks.gateway import _marker, update
from benchmarks.otlp import Collector

__all__ = ["STAGES", "cut"]

STAGES = ("socket in", "to the room", "turn", "save", "back to the replica", "fan-out",
          "socket out")
"""The stages a round trip is cut into (see the module docstring)."""


def cut(sent_ns: int, read_ns: int, spans: dict[str, dict]) -> dict[str, float] | None:
    """Cut one round trip into :data:`STAGES`, in seconds.

    Args:
        sent_ns: when the client sent the frame (``time.time_ns``).
        read_ns: when the client had read the answer.
        spans: the frame's trace by span name (``rooms.frame``, ``rooms.turn``,
            ``rooms.save``, ``rooms.fanout``), as :class:`benchmarks.otlp.Collector`
            keeps them.

    Returns:
        ``{stage: seconds}``, or ``None`` when a span is missing.
    """
    try:
        frame, turn = spans["rooms.frame"], spans["rooms.turn"]
        save, fanout = spans["rooms.save"], spans["rooms.fanout"]
    except KeyError:
        return None
    edges = [sent_ns, frame["start_ns"], turn["start_ns"], turn["end_ns"], save["end_ns"],
             fanout["start_ns"], fanout["end_ns"], read_ns]
    return {stage: (edges[i + 1] - edges[i]) / 1e9 for i, stage in enumerate(STAGES)}


def _traces(collector: Collector) -> dict[str, dict[str, dict]]:
    """The collector's spans by trace id, then by name."""
    traces: dict[str, dict[str, dict]] = {}
    for span in list(collector.spans):
        traces.setdefault(span["trace"], {})[span["name"]] = span
    return traces


def _match(trips: list[tuple[int, int]], collector: Collector) -> list[dict[str, float]]:
    """Each round trip's stages: the trace whose ``rooms.frame`` started within it."""
    frames = sorted((t["rooms.frame"]["start_ns"], t) for t in _traces(collector).values()
                    if "rooms.frame" in t)
    out = []
    for sent, read in trips:
        for start, trace in frames:
            if sent <= start <= read:
                stages = cut(sent, read, trace)
                if stages is not None:
                    out.append(stages)
                break
    return out


async def _round_trips(base: str, count: int, gap_s: float) -> list[tuple[int, int]]:
    from websockets.asyncio.client import connect

    room = f"stages-{uuid.uuid4().hex[:6]}"
    trips = []
    async with connect(f"{base}/parties/rooms/{room}?_pk=w&username=w", max_size=None) as ws:
        while json.loads(await ws.recv())["type"] != "roomState":
            pass
        for k in range(count):
            sent = time.time_ns()
            await ws.send(update("w", k))
            while _marker(json.loads(await ws.recv()), "w") != k:
                pass
            trips.append((sent, time.time_ns()))
            await asyncio.sleep(gap_s)
    return trips


async def _broadcasts(base: str, sockets: int, count: int) -> list[tuple[int, int]]:
    """Each round: the send of one update, and the moment the last socket read it."""
    from websockets.asyncio.client import connect

    room = f"stages-b-{uuid.uuid4().hex[:6]}"
    socks = [await connect(f"{base}/parties/rooms/{room}?_pk=b{i}&username=b{i}",
                           max_size=None) for i in range(sockets)]
    for ws in socks:
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "roomState" and len(message["state"]["users"]) == sockets:
                break

    async def read(ws: Any, k: int) -> int:
        while _marker(json.loads(await ws.recv()), "b0") != k:
            pass
        return time.time_ns()

    trips = []
    for k in range(count):
        sent = time.time_ns()
        await socks[0].send(update("b0", k))
        trips.append((sent, max(await asyncio.gather(*[read(ws, k) for ws in socks]))))
        await asyncio.sleep(0.1)
    for ws in socks:
        await ws.close()
    return trips


async def _echoes(url: str, count: int, gap_s: float) -> list[float]:
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None) as ws:
        out = []
        for k in range(count + 30):
            started = time.perf_counter()
            await ws.send(json.dumps({"type": "partyserver-ping", "k": k}))
            await ws.recv()
            if k >= 30:
                out.append(time.perf_counter() - started)
            await asyncio.sleep(gap_s)
    return out


async def _bare(count: int, gap_s: float) -> list[float]:
    """A bare actor's calls from the driver, ``gap_s`` apart as the clients' frames are
    (a call after an idle gap costs more than one right after another: the processes
    on the way have to wake)."""
    bare = Bare.remote()
    await bare.call.remote("warm", "")
    out = []
    for _ in range(count):
        started = time.perf_counter()
        await bare.call.remote("c", "")
        out.append(time.perf_counter() - started)
        await asyncio.sleep(gap_s)
    ray.kill(bare)
    return out


def _table(title: str, rows: list[dict[str, float]]) -> None:
    total = [sum(r.values()) for r in rows]
    print(f"\n{title} ({len(rows)} frames): p50 {pct(total, .5):.2f} ms")
    print(f"  {'stage':22} {'p50 ms':>8} {'mean ms':>8} {'share':>6}")
    mean_total = statistics.mean(total)
    for stage in STAGES:
        values = [r[stage] for r in rows]
        print(f"  {stage:22} {pct(values, .5):8.3f} {statistics.mean(values) * 1e3:8.3f} "
              f"{statistics.mean(values) / mean_total:6.0%}")


def main() -> None:
    """Run both parts and print each stage's p50, mean and share of the round trip."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--gap-s", type=float, default=0.005,
                        help="seconds between one client's round trips")
    parser.add_argument("--sockets", type=int, default=50)
    parser.add_argument("--broadcasts", type=int, default=40)
    parser.add_argument("--ws-compression", choices=["on", "off"], default="on")
    args = parser.parse_args()

    from actors.gateway import GatewayLimits, deploy_gateway, shutdown_gateway
    from actors.net import free_port

    collector = Collector().start()
    progress("starting a local Ray and a traced gateway...")
    config = local_rooms("rooms-stages").model_copy(update={"otel_endpoint": collector.url})
    limits = GatewayLimits(rate_per_s=1e6, burst=10**6, abuse_strikes=10**6,
                           ws_compression=args.ws_compression == "on")
    try:
        url = deploy_gateway(config, port=free_port(), dev=True, name="rooms-stages",
                             limits=limits)
        base = url.replace("http://", "ws://")
        progress(f"1. {args.frames} round trips, one client")
        asyncio.run(_round_trips(base, 30, args.gap_s))  # warm-up
        trips = asyncio.run(_round_trips(base, args.frames, args.gap_s))
        progress(f"2. {args.broadcasts} broadcasts to {args.sockets} sockets")
        fans = asyncio.run(_broadcasts(base, args.sockets, args.broadcasts))
        bare = asyncio.run(_bare(args.frames, args.gap_s))
        progress("3. the floor: echo, and echo after a bare actor call")
        floor_actor = Bare.remote()
        deploy_floor(floor_actor)
        echo = asyncio.run(_echoes(f"{base}{FLOOR_PREFIX}/echo", args.frames, args.gap_s))
        floor = asyncio.run(_echoes(f"{base}{FLOOR_PREFIX}/actor", args.frames, args.gap_s))
        time.sleep(2.0)  # the exporters send every 0.5 s
    finally:
        delete_floor()
        shutdown_gateway("rooms-stages")
        ray.shutdown()
        collector.stop()
    _table("userUpdate round trip, one client", _match(trips, collector))
    _table(f"broadcast to {args.sockets} sockets (until the last has read it)",
           _match(fans, collector))
    print(f"\nbare Ray actor call from the driver, {args.gap_s:g} s apart: p50 "
          f"{pct(bare, .5):.2f} ms")
    print(f"the floor, one client: echo p50 {pct(echo, .5):.2f} ms, echo after a bare "
          f"actor call {pct(floor, .5):.2f} ms: the call from inside a replica "
          f"{pct(floor, .5) - pct(echo, .5):.2f} ms")


if __name__ == "__main__":
    main()
