"""Soak: N rooms with M clients each, for a given time, with reconnects; the gateway
replica's and the rooms' memory over time and the round-trip p50/p99 per minute
(issue 19).

Each client is one WebSocket (development-mode identity) that, every ``interval_s``,
sends a ``partyserver-ping`` and waits for its ``partyserver-pong`` (the round trip
measured), and every tenth time a ``userUpdate`` (a turn with a snapshot save and a
``roomState`` broadcast); a heartbeat every 4 s; and every ``reconnect_s`` (jittered)
it closes its socket and opens a new one with the same ``_pk`` (the room owes it
nothing: a clean close). Every ``sample_s`` it records the resident set size (RSS,
``/proc/<pid>/status`` ``VmRSS``) of each gateway replica process and of every room's
worker process, and the round trips of that period.

The verdict (targets from issue 19): after the warm-up (the first ``warmup_s``), RSS
grows under 2 % (the last sample against the first after warm-up, replicas and rooms
each), and p99 stays flat (the last minute's p99 within x1.5 of the first minute's
after warm-up, or within 5 ms).

Run: ``python -m benchmarks.soak --minutes 30`` (starts a local Ray and a one-replica
gateway with a SQLite store in a temporary directory; ``--minutes 2`` for a quick look).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import ray

from benchmarks.common import pct, progress, replica_pids, verdict

__all__ = ["Sample", "soak"]

PING = json.dumps({"type": "partyserver-ping"})


def _update(conn: str, k: int) -> str:
    return json.dumps({"type": "userUpdate", "user": {
        "id": conn, "name": conn, "raisedHand": k % 2 == 1, "speaking": False,
        "joined": True, "tracks": {"audioUnavailable": False, "audio": f"{conn}/{k}"}}})


def rss_kb(pid: int) -> int:
    """The resident set size of process ``pid`` in kB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


@dataclass
class Sample:
    """One period of the soak.

    Attributes:
        at_s: seconds since the start.
        replica_kb: the gateway replicas' RSS, kB, summed.
        rooms_kb: the room workers' RSS, kB, summed.
        rooms: live room actors.
        round_trips: the period's round trips, seconds.
        reconnects: reconnects in the period.
        errors: round trips that failed (timeout, closed socket).
    """

    at_s: float
    replica_kb: int
    rooms_kb: int
    rooms: int
    round_trips: list[float] = field(default_factory=list)
    reconnects: int = 0
    errors: int = 0

    def line(self) -> str:
        """One row of the report."""
        rt = self.round_trips or [0.0]
        return (f"{self.at_s / 60:6.1f} min  replica {self.replica_kb / 1024:7.1f} MiB  "
                f"rooms {self.rooms_kb / 1024:7.1f} MiB ({self.rooms})  round trips "
                f"{len(self.round_trips):6d} p50 {pct(rt, 0.5):6.2f} ms p99 "
                f"{pct(rt, 0.99):6.2f} ms  reconnects {self.reconnects:4d}  errors "
                f"{self.errors}")


def _pids(namespace: str, app: str) -> tuple[list[int], list[int]]:
    """The pids of the gateway application's replicas and of the live room actors."""
    from actors.directory import ACTOR_PREFIX
    from actors.room_client import RoomClient

    replicas = replica_pids(app)
    rooms = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == namespace and entry["name"].startswith(ACTOR_PREFIX):
            try:
                handle = ray.get_actor(entry["name"], namespace=namespace)
                rooms.append(ray.get(RoomClient(handle).where(), timeout=10).pid)
            except Exception:  # noqa: BLE001 - exiting meanwhile
                continue
    return replicas, rooms


async def soak(ws_url: str, namespace: str, app: str, *, rooms: int, clients: int,
               seconds: float, sample_s: float = 60.0, interval_s: float = 0.1,
               reconnect_s: float = 30.0) -> list[Sample]:
    """Run the soak against the gateway at ``ws_url`` (``ws://host:port``) of Serve
    application ``app`` whose rooms live in ``namespace``; return one
    :class:`Sample` per ``sample_s`` seconds."""
    from websockets.asyncio.client import connect

    names = [f"soak-{uuid.uuid4().hex[:6]}-{r}" for r in range(rooms)]
    period: dict[str, list] = {"rt": [], "reconnects": [0], "errors": [0]}
    stop = asyncio.Event()

    async def client(room: str, c: int) -> None:
        conn = f"c{c}"
        url = f"{ws_url}/parties/rooms/{room}?_pk={conn}&username={conn}"
        k = 0
        while not stop.is_set():
            until = time.monotonic() + reconnect_s * random.uniform(0.5, 1.5)
            try:
                async with connect(url, open_timeout=30, max_size=None) as ws:
                    last_beat = time.monotonic()
                    while not stop.is_set() and time.monotonic() < until:
                        k += 1
                        if k % 10 == 0:
                            await ws.send(_update(conn, k))
                        if time.monotonic() - last_beat > 4:
                            await ws.send(json.dumps({"type": "heartbeat"}))
                            last_beat = time.monotonic()
                        sent = time.perf_counter()
                        await ws.send(PING)
                        while True:
                            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                            if message["type"] == "partyserver-pong":
                                break
                        period["rt"].append(time.perf_counter() - sent)
                        await asyncio.sleep(interval_s)
            except Exception:  # noqa: BLE001 - count it, reconnect
                period["errors"][0] += 1
                await asyncio.sleep(0.5)
            period["reconnects"][0] += 1

    tasks = [asyncio.ensure_future(client(room, c)) for room in names
             for c in range(clients)]
    samples: list[Sample] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            await asyncio.sleep(min(sample_s, seconds - (time.monotonic() - started)))
            replicas, room_pids = await asyncio.to_thread(_pids, namespace, app)
            sample = Sample(at_s=time.monotonic() - started,
                            replica_kb=sum(rss_kb(p) for p in replicas),
                            rooms_kb=sum(rss_kb(p) for p in room_pids), rooms=len(room_pids),
                            round_trips=period["rt"], reconnects=period["reconnects"][0],
                            errors=period["errors"][0])
            period.update(rt=[], reconnects=[0], errors=[0])
            samples.append(sample)
            progress(sample.line())
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return samples


def report(samples: list[Sample], warmup_s: float) -> bool:
    """Print the verdict lines; return whether both targets were met."""
    after = [s for s in samples if s.at_s > warmup_s] or samples[-1:]
    first, last = after[0], after[-1]

    def growth(a: int, b: int) -> float:
        return (b - a) / a * 100 if a else 0.0

    replica_growth = growth(first.replica_kb, last.replica_kb)
    rooms_growth = growth(first.rooms_kb, last.rooms_kb)
    p99s = [pct(s.round_trips, 0.99) for s in after if s.round_trips]
    p50s = [pct(s.round_trips, 0.5) for s in after if s.round_trips]
    flat = bool(p99s) and (p99s[-1] <= p99s[0] * 1.5 or p99s[-1] - p99s[0] <= 5.0)
    memory_ok = replica_growth < 2.0 and rooms_growth < 2.0
    print(f"after warm-up ({warmup_s / 60:.1f} min): replica RSS {first.replica_kb / 1024:.1f}"
          f" -> {last.replica_kb / 1024:.1f} MiB ({replica_growth:+.2f} %), rooms RSS "
          f"{first.rooms_kb / 1024:.1f} -> {last.rooms_kb / 1024:.1f} MiB "
          f"({rooms_growth:+.2f} %): growth < 2 %: {verdict(memory_ok)}")
    if p99s:
        print(f"p50 per minute {min(p50s):.2f}-{max(p50s):.2f} ms (median "
              f"{statistics.median(p50s):.2f}); p99 first {p99s[0]:.2f} ms, last "
              f"{p99s[-1]:.2f} ms, max {max(p99s):.2f} ms: flat: {verdict(flat)}")
    return memory_ok and flat


def main(argv: list[str] | None = None) -> None:
    """Start a local Ray and a one-replica gateway, run the soak, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--clients", type=int, default=4, help="clients per room")
    parser.add_argument("--sample-s", type=float, default=60.0)
    parser.add_argument("--warmup-minutes", type=float, default=5.0)
    parser.add_argument("--reconnect-s", type=float, default=30.0)
    args = parser.parse_args(argv)

    from actors.config import RoomsConfig
    from actors.gateway import GatewayLimits, deploy_gateway, shutdown_gateway
    from actors.net import free_port

    store = tempfile.mkdtemp(prefix="rooms-soak-")
    namespace, app = f"rooms-soak-{uuid.uuid4().hex[:6]}", "rooms-soak"
    ray.init(namespace=namespace, include_dashboard=False)
    config = RoomsConfig(namespace=namespace, store_url=f"sqlite:///{store}/soak.sqlite3")
    url = deploy_gateway(config, port=free_port(), replicas=1, name=app, dev=True,
                         limits=GatewayLimits(rate_per_s=1000, burst=1000,
                                              rooms_per_minute=10_000))
    progress(f"soak: {args.rooms} rooms x {args.clients} clients for {args.minutes} min, "
             f"sampling every {args.sample_s:.0f} s")
    try:
        samples = asyncio.run(soak(url.replace("http://", "ws://"), namespace, app,
                                   rooms=args.rooms, clients=args.clients,
                                   seconds=args.minutes * 60, sample_s=args.sample_s,
                                   reconnect_s=args.reconnect_s))
    finally:
        shutdown_gateway(app)
        ray.shutdown()
    ok = report(samples, args.warmup_minutes * 60)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
