"""Benchmark: a persisted room turn beside a bare Ray actor call, in one run.

    python benchmarks/turn.py [--calls 2000] [--warmup 200]

(a) a bare async Ray actor method call (returns an int), called from the driver;
(b) a room turn that changes state and persists it to SQLite before returning (a
    ``heartbeat`` message: the user's heartbeat time changes, the snapshot is saved,
    the output gate is passed), called from the driver the same way.

Prints p50/p99 latency (ms) and throughput (calls/s) of both, sequential calls, and
the ratio (b)/(a). Target: ratio at p50 within 1.5x. Absolute times drift on shared
machines; the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import ray

from actors.config import RoomsConfig
from actors.directory import get_room


@ray.remote(num_cpus=0)
class Bare:
    """The baseline: an async actor with a trivial method."""

    def __init__(self) -> None:
        self.n = 0

    async def call(self, conn: str, text: str) -> int:
        self.n += 1
        return self.n


def measure(fn, calls: int, warmup: int) -> dict:
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
    return {
        "p50_ms": statistics.median(times) * 1e3,
        "p99_ms": times[int(len(times) * 0.99) - 1] * 1e3,
        "per_s": calls / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()

    ray.init(namespace="rooms-bench", include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    tmp = tempfile.mkdtemp(prefix="rooms-bench-")
    config = RoomsConfig(namespace="rooms-bench", store_url=f"sqlite:///{tmp}/bench.sqlite3",
                         idle_timeout=0)
    bare = Bare.remote()
    room = get_room("bench-turn", config)
    ray.get(room.connect.remote("c1", "bench"))
    beat = json.dumps({"type": "heartbeat"})

    print(f"measuring {args.calls} sequential calls each (after {args.warmup} warm-up)...",
          flush=True)
    results = {}
    # interleave rounds so drift affects both alike
    rounds = 4
    parts: dict[str, list[dict]] = {"bare actor call": [], "room turn (SQLite)": []}
    for i in range(rounds):
        parts["bare actor call"].append(
            measure(lambda: ray.get(bare.call.remote("c1", beat)), args.calls // rounds,
                    args.warmup // rounds))
        parts["room turn (SQLite)"].append(
            measure(lambda: ray.get(room.message.remote("c1", beat)), args.calls // rounds,
                    args.warmup // rounds))
        print(f"  round {i + 1}/{rounds} done", flush=True)
    for name, rs in parts.items():
        results[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
    info = ray.get(room.info.remote())
    print()
    print(f"{'':22} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9}")
    for name, r in results.items():
        print(f"{name:22} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['per_s']:9.0f}")
    a, b = results["bare actor call"], results["room turn (SQLite)"]
    print()
    print(f"ratio room/bare: p50 {b['p50_ms'] / a['p50_ms']:.2f}x, "
          f"p99 {b['p99_ms'] / a['p99_ms']:.2f}x, throughput {a['per_s'] / b['per_s']:.2f}x "
          f"(target p50 <= 1.5x)")
    print(f"snapshot: {info.get('snapshot_bytes')} bytes, saves: {info.get('saves')}, "
          f"last save {info.get('last_save_s', 0) * 1e6:.0f} us")
    ray.shutdown()


if __name__ == "__main__":
    main()
