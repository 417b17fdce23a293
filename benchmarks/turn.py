"""Benchmark: a persisted room turn on SQLite and on PostgreSQL beside a bare Ray actor
call, and the save throughput of 50 rooms writing at once, in one run.

    python -m benchmarks.turn [--calls 2000] [--warmup 200] [--rooms 50]
                              [--postgres-url postgresql://...]

With no ``--postgres-url`` it starts a throwaway PostgreSQL server itself (the machine's
PostgreSQL binaries; see storage/pgserver.py).

1. Round trips, sequential calls from the driver, in interleaved rounds:
   (a) a bare async Ray actor method call (returns an int);
   (b) a room turn that changes state and persists it before returning (``heartbeat``:
       the user's heartbeat time changes, the snapshot is saved, the output gate is
       passed), with the SQLite store;
   (c) the same with the PostgreSQL store.
   Prints p50/p99 (ms) and calls/s of each and the ratios to (a). Target: PostgreSQL
   turn p50 <= 2.0x the bare call.
2. Save throughput: ``--rooms`` rooms per store, each sent a burst of pipelined
   ``heartbeat`` turns at once (so each room group-commits), all rooms at the same time:
   snapshot saves per second and turns per second over the burst, and the p50/p99 of
   the save durations the rooms measured.

Absolute times drift on shared machines; compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid

import ray

from actors.config import RoomsConfig
from actors.directory import get_room
from benchmarks.common import Bare
from storage.pgserver import ThrowawayPostgres


def measure(fn, calls: int, warmup: int) -> dict:
    """Time ``calls`` sequential calls of ``fn`` after ``warmup`` ones."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    times.sort()
    return {"p50_ms": statistics.median(times) * 1e3,
            "p99_ms": times[int(len(times) * 0.99) - 1] * 1e3, "per_s": calls / total}


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (seconds), in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3 if ordered else 0.0


def save_throughput(config: RoomsConfig, rooms: int, burst: int) -> dict:
    """``rooms`` rooms, each sent ``burst`` pipelined turns, all at once."""
    beat = json.dumps({"type": "heartbeat"})
    handles = [get_room(f"burst-{uuid.uuid4().hex[:8]}", config) for _ in range(rooms)]
    ray.get([h.connect.remote("c1", "bench") for h in handles], timeout=600)
    before = {i: ray.get(h.info.remote()).saves for i, h in enumerate(handles)}
    start = time.perf_counter()
    ray.get([h.message.remote("c1", beat) for h in handles for _ in range(burst)],
            timeout=600)
    elapsed = time.perf_counter() - start
    infos = ray.get([h.info.remote() for h in handles])
    saves = sum(info.saves - before[i] for i, info in enumerate(infos))
    durations: list[float] = []
    for i, info in enumerate(infos):
        new = info.saves - before[i]
        durations += info.recent_save_s[-new:] if new else []
    for h in handles:
        ray.kill(h, no_restart=True)
    return {"saves_per_s": saves / elapsed, "turns_per_s": rooms * burst / elapsed,
            "turns_per_save": rooms * burst / max(1, saves),
            "save_p50_ms": pct(durations, 0.5), "save_p99_ms": pct(durations, 0.99)}


def main() -> None:
    """Parse the arguments, run the comparison and print it (see the module
    docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--burst", type=int, default=40)
    parser.add_argument("--postgres-url", default=None,
                        help="a PostgreSQL database to use (default: a throwaway server)")
    args = parser.parse_args()

    server = None
    pg_url = args.postgres_url
    if pg_url is None:
        print("starting a throwaway PostgreSQL server...", flush=True)
        server = ThrowawayPostgres(database="rooms_bench").start()
        pg_url = server.url
    ray.init(namespace="rooms-bench", include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    try:
        tmp = tempfile.mkdtemp(prefix="rooms-bench-")
        stores = {"SQLite": f"sqlite:///{tmp}/bench.sqlite3", "PostgreSQL": pg_url}
        configs = {name: RoomsConfig(namespace="rooms-bench", store_url=url, idle_timeout=0)
                   for name, url in stores.items()}
        bare = Bare.remote()
        rooms = {name: get_room(f"bench-turn-{name.lower()}", config)
                 for name, config in configs.items()}
        ray.get([room.connect.remote("c1", "bench") for room in rooms.values()])
        beat = json.dumps({"type": "heartbeat"})

        print(f"1. {args.calls} sequential calls each (after {args.warmup} warm-up), "
              "interleaved rounds...", flush=True)
        rounds = 4
        parts: dict[str, list[dict]] = {"bare actor call": []}
        parts.update({f"room turn ({name})": [] for name in rooms})
        for i in range(rounds):
            parts["bare actor call"].append(
                measure(lambda: ray.get(bare.call.remote("c1", beat)), args.calls // rounds,
                        args.warmup // rounds))
            for name, room in rooms.items():
                parts[f"room turn ({name})"].append(
                    measure(lambda room=room: ray.get(room.message.remote("c1", beat)),
                            args.calls // rounds, args.warmup // rounds))
            print(f"  round {i + 1}/{rounds} done", flush=True)
        results = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                   for name, rs in parts.items()}

        print(f"2. save throughput: {args.rooms} rooms per store, {args.burst} turns each "
              "at once...", flush=True)
        bursts = {name: save_throughput(config, args.rooms, args.burst)
                  for name, config in configs.items()}

        print()
        print(f"{'':24} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9}")
        for name, r in results.items():
            print(f"{name:24} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['per_s']:9.0f}")
        base = results["bare actor call"]
        print()
        for name in rooms:
            r = results[f"room turn ({name})"]
            target = "   target <= 2.0x: " + ("MET" if r["p50_ms"] / base["p50_ms"] <= 2.0
                                               else "NOT MET") if name == "PostgreSQL" else ""
            print(f"room turn ({name}) / bare call: p50 x{r['p50_ms'] / base['p50_ms']:.2f}, "
                  f"p99 x{r['p99_ms'] / base['p99_ms']:.2f}, "
                  f"throughput x{base['per_s'] / r['per_s']:.2f} slower{target}")
        print()
        print(f"{'':24} {'saves/s':>9} {'turns/s':>9} {'turns/save':>10} "
              f"{'save p50 ms':>11} {'save p99 ms':>11}")
        for name, b in bursts.items():
            print(f"{name + ' burst':24} {b['saves_per_s']:9.0f} {b['turns_per_s']:9.0f} "
                  f"{b['turns_per_save']:10.1f} {b['save_p50_ms']:11.2f} "
                  f"{b['save_p99_ms']:11.2f}")
    finally:
        ray.shutdown()
        if server is not None:
            server.remove()


if __name__ == "__main__":
    main()
