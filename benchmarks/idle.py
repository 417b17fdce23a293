"""What a live room costs while nothing happens (issue 23: what bounds a surge, and
what one more live room costs a node): the CPU an idle room's process uses per second,
beside an idle bare actor's, by thread, with each thread's wake-ups.

    python -m benchmarks.idle [--actors 10] [--seconds 20]

It starts its own local Ray, then ``--actors`` of each kind, all idle:

* a bare **sync** actor (:class:`benchmarks.callcost.SyncCallee`);
* a bare **async** actor (:class:`benchmarks.common.Bare`, the other benchmarks'
  baseline);
* a **room** (SQLite store, ``idle_timeout`` an hour so that it stays live): activated
  by one connection, which then closes (a room with no user sets no alarm, so no turn
  runs while it is measured).

After a few seconds' settling it reads, for every thread of every such process, the CPU
it used (``/proc/<pid>/task/<tid>/stat``) and its context switches (``.../status``,
voluntary and not: each is a wake-up or a preemption) over ``--seconds``, and prints per
kind the mean CPU a process used per second (ms/s) and the same by thread: the main
thread (named ``ray::<Class>``, where Ray's core worker runs its task-execution loop),
the event loop of an async actor, Ray's core worker threads (gRPC pollers,
``worker.io``) and the rest (e.g. the room's metrics flusher).

What it shows on this machine: the main thread of every Ray worker wakes ~100 times a
second and most of an idle worker's CPU is there. Ray's core worker checks for signals
every 10 ms on that thread, taking the GIL each time (``CoreWorker::RunTaskExecutionLoop``
in ``src/ray/core_worker/core_worker.cc``: a periodic ``CoreWorker.CheckSignal`` every
10 ms, not configurable), whatever the actor is. So each live process costs its node
a floor of CPU that no room code can lower; ray-rooms' answer is to keep rooms few
per node while idle (hibernation, ``ROOMS_IDLE_TIMEOUT``; the ``room_slot`` bound).
Absolute figures drift on shared machines; compare the kinds within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

import ray

from actors.config import RoomsConfig
from actors.directory import get_room
from benchmarks.callcost import SyncCallee
from benchmarks.common import Bare, _stat_fields, _ticks, progress, python_thread_names

KINDS = ("sync actor", "async actor", "room")
ROLES = ("main thread (ray::<Class>)", "event loop", "Ray core worker threads", "other")


def _thread_role(comm: str, name: str | None) -> str:
    """The role of one thread, from its kernel name ``comm`` and its Python name."""
    if comm.startswith("ray::"):
        return ROLES[0]
    if name is not None and name.startswith("AsyncIO Thread"):
        return ROLES[1]
    if name is None and (comm.startswith(("client.poll", "server.poll", "worker.io"))
                         or comm in ("nexting_thread", "grpc_global_tim", "timer_manager",
                                     "default-executo", "resolver-execut")):
        return ROLES[2]
    return ROLES[3]


def _threads(pid: int) -> dict[int, tuple[str, int, int]]:
    """``{tid: (comm, CPU ticks, context switches)}`` of every thread of ``pid`` now."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            ticks = _ticks(_stat_fields(f"{base}/stat"))
            with open(f"{base}/comm") as f:
                comm = f.read().strip()
            with open(f"{base}/status") as f:
                switches = sum(int(line.split()[1]) for line in f
                               if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")))
        except OSError:  # the thread exited
            continue
        out[int(tid)] = (comm, ticks, switches)
    return out


async def _start(count: int, store_url: str) -> dict[str, list[Any]]:
    """``count`` idle actors of each of :data:`KINDS`, started and answering."""
    config = RoomsConfig(store_url=store_url, idle_timeout=3600)
    actors: dict[str, list[Any]] = {
        "sync actor": [SyncCallee.remote() for _ in range(count)],
        "async actor": [Bare.remote() for _ in range(count)],
        "room": [get_room(f"idle-{os.getpid()}-{i}", config) for i in range(count)],
    }
    await asyncio.gather(*[a.pid.remote() for kind in KINDS for a in actors[kind]])
    for i, room in enumerate(actors["room"]):  # activate, then leave it empty
        await room.connect.remote(f"c-{i}", f"u{i}")
        await room.close.remote(f"c-{i}")
    return actors


def measure(actors: dict[str, list[Any]], seconds: float) -> dict[str, dict[str, Any]]:
    """Read every thread of every actor's process twice, ``seconds`` apart. Returns per
    kind ``{"cpu": [ms/s per process], "roles": {role: ms/s a process},
    "wakeups": {role: switches/s a process}}``."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = {kind: [ray.get(a.pid.remote()) for a in actors[kind]] for kind in KINDS}
    names = {kind: [python_thread_names(a) for a in actors[kind]] for kind in KINDS}
    before = {pid: _threads(pid) for kind in KINDS for pid in pids[kind]}
    started = time.monotonic()
    time.sleep(seconds)
    after = {pid: _threads(pid) for kind in KINDS for pid in pids[kind]}
    span = time.monotonic() - started
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        cpu: list[float] = []
        roles = dict.fromkeys(ROLES, 0.0)
        wakeups = dict.fromkeys(ROLES, 0.0)
        for pid, named in zip(pids[kind], names[kind]):
            total = 0.0
            for tid, (comm, ticks, switches) in after[pid].items():
                if tid not in before[pid]:
                    continue
                role = _thread_role(comm, named.get(tid))
                used = (ticks - before[pid][tid][1]) / tick / span * 1000
                roles[role] += used / len(pids[kind])
                wakeups[role] += (switches - before[pid][tid][2]) / span / len(pids[kind])
                total += used
            cpu.append(total)
        out[kind] = {"cpu": cpu, "roles": roles, "wakeups": wakeups}
    return out


def main() -> None:
    """Run the measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=10, help="idle actors of each kind")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to measure")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds to wait after starting them")
    args = parser.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False, namespace="rooms-idle")
    try:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='rooms-idle-')}/rooms.sqlite3"
        progress(f"starting {args.actors} idle actors of each kind")
        actors = asyncio.run(_start(args.actors, url))
        time.sleep(args.settle)
        progress(f"measuring for {args.seconds:.0f} s")
        results = measure(actors, args.seconds)
    finally:
        ray.shutdown()
    bare = statistics.mean(results["async actor"]["cpu"])
    print(f"\n{'idle process':14} {'CPU ms/s':>9} {'x async actor':>14}   " +
          "   ".join(f"{role} ms/s (wake-ups/s)" for role in ROLES))
    for kind in KINDS:
        r = results[kind]
        mean = statistics.mean(r["cpu"])
        print(f"{kind:14} {mean:9.1f} {mean / bare:14.2f}   " + "   ".join(
            f"{r['roles'][role]:.1f} ({r['wakeups'][role]:.0f})" for role in ROLES))
    main_share = results["room"]["roles"][ROLES[0]] / max(1e-9, statistics.mean(
        results["room"]["cpu"]))
    print(f"\nAn idle room's process uses {statistics.mean(results['room']['cpu']):.1f} ms "
          f"of CPU a second ({main_share:.0%} of it on its main thread, which wakes "
          f"{results['room']['wakeups'][ROLES[0]]:.0f} times a second: Ray's 10 ms "
          f"signal check); an idle bare async actor {bare:.1f} ms. "
          f"{1000 / max(1e-9, statistics.mean(results['room']['cpu'])):.0f} idle rooms "
          f"keep one core busy.")


if __name__ == "__main__":
    main()
