"""What one call costs the process that answers it (issue 23: what bounds the pipelined
rate): CPU of the callee per call, a room's ``deliver`` beside bare Ray actors, in one run.

    python -m benchmarks.callcost [--calls 2000]

Sequential calls from the driver, each waiting for its answer, and the CPU the
callee's process used over them (``/proc/<pid>/stat``, all its threads: Ray's core
worker, the task-execution thread, the event loop), per call and per frame:

* a bare **sync** actor whose method takes a room's ``deliver`` arguments (one
  ``userUpdate`` frame, a cursor, a poller id) and returns a small tuple;
* a bare **async** actor with the same method, created with the rooms' options
  (``max_concurrency`` 10,000: a room is an async actor, so that long polls and
  turns interleave);
* a **room**'s ``deliver`` (SQLite store, a connected socket) with batches of 1, 4, 16
  and 64 ``userUpdate`` frames: each batch is a turn per frame, one snapshot save, and
  the released ``roomState`` entries in the result.

It prints the callee's CPU per call and per frame, and the room's per-call cost over
the bare async actor's (the part of a ``deliver`` that is ours). The pipelined
gateway benchmark sends batches of ~16 frames (``python -m benchmarks.gateway``).
Absolute figures drift on shared machines; compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from typing import Any

import ray

from actors.config import RoomsConfig
from actors.directory import get_room
from benchmarks.common import cpu_seconds, progress
from benchmarks.gateway import update

BATCHES = (1, 4, 16, 64)


@ray.remote
class SyncCallee:
    """A bare sync actor with a ``deliver``-shaped method."""

    def deliver(self, frames: list, cursor: int, poller: str) -> tuple:
        """Return ``(cursor, frames' count)``."""
        return cursor, len(frames)

    def pid(self) -> int:
        """The worker's process id."""
        return os.getpid()


@ray.remote
class AsyncCallee:
    """A bare async actor with a ``deliver``-shaped method."""

    async def deliver(self, frames: list, cursor: int, poller: str) -> tuple:
        """Return ``(cursor, frames' count)``."""
        return cursor, len(frames)

    async def pid(self) -> int:
        """The worker's process id."""
        return os.getpid()


async def measure(call: Any, pid: int, calls: int, warmup: int) -> tuple[float, float]:
    """Run ``await call(k)`` ``warmup`` then ``calls`` times; return (callee CPU per
    call in microseconds, wall time per call in microseconds) over the measured ones."""
    for k in range(warmup):
        await call(k)
    cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
    for k in range(calls):
        await call(warmup + k)
    cpu1, wall1 = cpu_seconds(pid), time.perf_counter()
    return 1e6 * (cpu1 - cpu0) / calls, 1e6 * (wall1 - wall0) / calls


async def run(calls: int, warmup: int) -> dict[str, tuple[float, float, int]]:
    """Measure every callee (see the module docstring). Returns ``{name: (CPU us per
    call, wall us per call, frames per call)}``."""
    frame = [("c", update("c", 0))]
    results: dict[str, tuple[float, float, int]] = {}
    for name, cls, options in (("sync actor", SyncCallee, {}),
                               ("async actor", AsyncCallee, {"max_concurrency": 10_000})):
        actor = cls.options(**options).remote()
        pid = await actor.pid.remote()
        cpu, wall = await measure(lambda k: actor.deliver.remote(frame, k, "P"), pid,
                                  calls, warmup)
        results[name] = (cpu, wall, 1)
        progress(f"  {name}: {cpu:.0f} us of CPU a call")
        ray.kill(actor)

    store = tempfile.mkdtemp(prefix="rooms-callcost-")
    config = RoomsConfig(namespace=f"rooms-callcost-{uuid.uuid4().hex[:6]}",
                         store_url=f"sqlite:///{store}/rooms.sqlite3", idle_timeout=0)
    room = get_room(f"callcost-{uuid.uuid4().hex[:6]}", config)
    await room.connect.remote("c", "caller", "P", "socket-1")
    pid = await room.__ray_call__.remote(lambda self: os.getpid())
    cursor = (await room.info.remote()).seq
    for batch in BATCHES:
        async def deliver(k: int, batch: int = batch) -> None:
            nonlocal cursor
            frames = [("c", update("c", k * batch + i)) for i in range(batch)]
            result = await room.deliver.remote(frames, cursor, "P")
            cursor = result.cursor
            if any(e.data and '"type":"error"' in e.data for e in result.entries):
                raise RuntimeError(f"the room refused a frame: {result.entries[-1].data}")

        n = max(50, calls // batch)
        cpu, wall = await measure(deliver, pid, n, max(10, warmup // batch))
        results[f"room deliver x{batch}"] = (cpu, wall, batch)
        progress(f"  room deliver, {batch} frames: {cpu:.0f} us of CPU a call")
    ray.kill(room)
    return results


def main() -> None:
    """Run the measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False, namespace="rooms-callcost")
    try:
        results = asyncio.run(run(args.calls, args.warmup))
    finally:
        ray.shutdown()
    bare = results["async actor"][0]
    print(f"\n{'callee':22} {'frames':>6} {'CPU us/call':>12} {'CPU us/frame':>13} "
          f"{'wall us/call':>13} {'x async actor':>14}")
    for name, (cpu, wall, frames) in results.items():
        print(f"{name:22} {frames:6d} {cpu:12.0f} {cpu / frames:13.0f} {wall:13.0f} "
              f"{cpu / bare:14.2f}")
    one = results["room deliver x1"][0]
    per_frame = ((results["room deliver x64"][0] - results["room deliver x16"][0])
                 / (64 - 16))
    print(f"\nA room's deliver costs its process {one:.0f} us of CPU a call with one frame; "
          f"the bare async actor {bare:.0f} us ({bare / one:.0%} of it: Ray's async-actor "
          f"call path), the sync actor {results['sync actor'][0]:.0f} us. Each further "
          f"frame adds ~{per_frame:.0f} us (the turn, its entry).")


if __name__ == "__main__":
    main()
