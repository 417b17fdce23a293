"""Room activation: a new room's first message beside a bare Ray actor's creation, a
surge of new rooms beside a surge of bare actors, and memory per live room.

Run: ``python -m benchmarks.activation [--start 5] [--cold 15] [--surge 200]
[--batch 50]``. It starts its own local Ray the way ``rooms serve`` does (this node's
``room_slot`` resources, a warm pool of ``ROOMS_WARM_WORKERS`` per node) with a
throwaway SQLite store.

0. **What a process costs to start** (``--start`` of each, one at a time, before the
   warm pools exist, so every actor starts a process of its own): the CPU its whole
   process used (``/proc/<pid>/stat``) up to its first reply, for a bare actor; a bare
   actor with a runtime environment of one variable (Ray starts such a worker through
   its ``setup_worker.py``, which imports Ray and then ``exec``\ s the worker, which
   imports Ray again); a bare actor with the rooms' runtime environment (that, plus
   the setup hook importing the room runtime); and a room (that, plus its
   ``__init__``, activation and first message). When a surge keeps the cores busy,
   their ratio bounds the surge's.
1. **Cold activation**: ``get_room`` of a room id never used + ``connect`` + a
   ``heartbeat`` message, until the reply; beside a bare actor's creation + one call,
   and beside a bare actor in the rooms' runtime environment, which takes a warm
   worker as a room does (Ray's own floor for an actor on a ready process).
   Interleaved, one at a time, ``--gap`` seconds apart (2.5: the pool replaces a taken
   worker one second after, and that process start should not land on a measurement).
   Target: p50 ratio to the bare actor <= 0.3.
2. **Surge**: ``--surge`` new rooms, ``--batch`` at a time (connect + heartbeat each),
   rooms/s per batch; the rooms are then removed and as many bare actors are created
   the same way, actors/s. Both with the warm pool as it is (it cannot hold a whole
   batch: most of a surge starts processes). Target (issue 23): rooms/s >= x0.9 of
   bare actors/s. Beside it, the CPU each surge used per new actor, by group of
   processes (:class:`~benchmarks.common.CpuMeter`): when both keep the cores busy,
   their ratio is what bounds the rate ratio.
3. **Memory**: mean PSS (``/proc/<pid>/smaps_rollup``) of 20 of the surge's room actors
   beside 20 of the bare actors. Target: ratio <= 1.1. And what a 24 GiB node holds with the default
   bound (``actors.slots.default_max_live_rooms``).

Absolute times drift on shared machines; the ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from typing import Any

import ray

from benchmarks.common import (Bare, CpuMeter, as_installed, cpu_seconds, pct, progress, smaps,
                               verdict)

TARGET_COLD_RATIO = 0.3
TARGET_MEMORY_RATIO = 1.1
TARGET_SURGE_RATIO = 0.9
"""Issue 23: a surge of new rooms at >= x0.9 the rate of a surge of bare actors."""
HEARTBEAT = json.dumps({"type": "heartbeat"})


async def _activate(room_id: str, config: Any) -> Any:
    from actors.directory import get_room

    handle = await asyncio.to_thread(get_room, room_id, config)
    await handle.connect.remote("c-0", "c0")
    await handle.message.remote("c-0", HEARTBEAT)
    return handle


async def _bare(**options: Any) -> Any:
    actor = Bare.options(**options).remote() if options else Bare.remote()
    await actor.call.remote("c", HEARTBEAT)
    return actor


async def cold(config: Any, count: int,
               gap_s: float = 2.5) -> tuple[list[float], list[float], list[float]]:
    """Section 1 (seconds): new rooms, bare actors, and bare actors in the rooms'
    runtime environment, which take a warm worker too (Ray's own floor)."""
    from ray.runtime_env import RuntimeEnv

    from actors.warmpool import POOL_NAMESPACE, POOL_PREFIX, room_runtime_env

    runtime_env = room_runtime_env(config.store_url)
    env = RuntimeEnv(**runtime_env).serialize()
    pool = ray.get_actor(POOL_PREFIX + ray.get_runtime_context().get_node_id(),
                         namespace=POOL_NAMESPACE)
    rooms: list[float] = []
    bares: list[float] = []
    floors: list[float] = []
    for k in range(count):
        await asyncio.sleep(gap_s)
        started = time.perf_counter()
        handle = await _activate(f"cold-{uuid.uuid4().hex[:10]}", config)
        rooms.append(time.perf_counter() - started)
        await asyncio.sleep(gap_s)
        started = time.perf_counter()
        actor = await _bare()
        bares.append(time.perf_counter() - started)
        ray.kill(actor)
        await asyncio.sleep(gap_s)
        started = time.perf_counter()
        floor = await _bare(runtime_env=runtime_env)
        floors.append(time.perf_counter() - started)
        ray.kill(floor)
        # it took a warm worker as a room does: have the pool replace it, as a room would
        pool.room_started.remote(ray.get_runtime_context().get_job_id(), env)
        ray.kill(handle)
        progress(f"   {k + 1}/{count}: room {rooms[-1] * 1000:.0f} ms, "
                 f"bare {bares[-1] * 1000:.0f} ms, bare on a warm worker "
                 f"{floors[-1] * 1000:.0f} ms")
    return rooms, bares, floors


START_KINDS = ("bare actor", "bare actor, a one-variable runtime env",
               "bare actor, the rooms' runtime env", "room")
"""Section 0's kinds of process, in the order each adds a cost to the one before."""


async def start_cpu(config: Any, count: int) -> dict[str, list[float]]:
    """Section 0 (seconds of CPU): ``count`` processes of each of :data:`START_KINDS`,
    interleaved, one at a time; each process's CPU up to its first reply."""
    from actors.warmpool import room_runtime_env

    rooms_env = room_runtime_env(config.store_url)
    made: dict[str, Any] = {
        START_KINDS[0]: lambda: _bare(),
        START_KINDS[1]: lambda: _bare(runtime_env={"env_vars": {"ROOMS_BENCH": "1"}}),
        START_KINDS[2]: lambda: _bare(runtime_env=rooms_env),
        START_KINDS[3]: lambda: _activate(f"start-{uuid.uuid4().hex[:10]}", config),
    }
    cpu: dict[str, list[float]] = {kind: [] for kind in START_KINDS}
    for k in range(count):
        for kind in START_KINDS:
            actor = await made[kind]()
            cpu[kind].append(cpu_seconds(await actor.pid.remote()))
            ray.kill(actor)
        progress(f"   {k + 1}/{count}: " + ", ".join(
            f"{kind} {cpu[kind][-1] * 1000:.0f} ms" for kind in START_KINDS))
    return cpu


async def surge(make, total: int, batch: int) -> tuple[list[float], list[Any]]:
    """Section 2: ``make()`` ``total`` times, ``batch`` at a time; per-batch rates."""
    rates, made = [], []
    for start in range(0, total, batch):
        n = min(batch, total - start)
        began = time.perf_counter()
        made += await asyncio.gather(*(make() for _ in range(n)))
        rates.append(n / (time.perf_counter() - began))
        progress(f"   {start + n}/{total}: {rates[-1]:.1f}/s")
    return rates, made


async def _mean_pss(actors: list[Any], sample: int = 20) -> float:
    """Section 3: mean PSS (MiB) of up to ``sample`` of ``actors``' workers."""
    await asyncio.sleep(2.0)
    pids = await asyncio.gather(*(a.pid.remote() for a in actors[:sample]))
    return statistics.mean(smaps(p)["Pss"] for p in pids) / 1024


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run sections 0-3 (see the module docstring) on a local Ray this starts, with
    ``args`` from :func:`main`'s parser. Returns the measurements (times in seconds,
    memory in MiB, CPU in seconds) by name for :func:`main` to print."""
    from actors.config import RoomsConfig
    from actors.slots import ROOM_COST_BYTES, default_max_live_rooms, slot_resources
    from actors.warmpool import POOL_NAMESPACE, POOL_PREFIX, ensure_warm_pools

    as_installed()
    tmp = tempfile.mkdtemp(prefix="rooms-activation-")
    config = RoomsConfig(namespace=f"bench-act-{uuid.uuid4().hex[:6]}",
                         store_url=f"sqlite:///{tmp}/rooms.sqlite3", idle_timeout=0)
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False,
             log_to_driver=False, namespace=config.namespace,
             resources=slot_resources(config))
    await _bare()  # export Bare once
    progress(f"0. CPU a process costs to start, {args.start} of each (no warm pool yet)")
    started = await start_cpu(config, args.start)
    pools = ensure_warm_pools(config.warm_workers, config.store_url)
    progress(f"warm pools: {pools} ({config.warm_workers} workers each)")
    await asyncio.sleep(3.0)

    progress(f"1. cold activation, {args.cold} of each")
    cold_rooms, cold_bares, cold_floors = await cold(config, args.cold, args.gap)

    progress(f"2. surge: {args.surge} new rooms, {args.batch} at a time")
    with CpuMeter() as room_cpu:
        room_rates, handles = await surge(
            lambda: _activate(f"surge-{uuid.uuid4().hex[:10]}", config), args.surge,
            args.batch)
    room_pss = await _mean_pss(handles)
    pool = ray.get_actor(POOL_PREFIX + ray.get_runtime_context().get_node_id(),
                         namespace=POOL_NAMESPACE)
    pool_stats = await pool.stats.remote()
    for h in handles:
        ray.kill(h)
    await asyncio.sleep(5.0)  # the bare surge starts from the same number of processes
    progress(f"   then {args.surge} bare actors, {args.batch} at a time")
    with CpuMeter() as bare_cpu:
        bare_rates, actors = await surge(_bare, args.surge, args.batch)
    bare_pss = await _mean_pss(actors)
    for a in actors:
        ray.kill(a)
    node_bytes = 24 * 2**30
    return {
        "start_cpu": started,
        "cold_rooms": cold_rooms, "cold_bares": cold_bares, "cold_floors": cold_floors,
        "room_rates": room_rates, "bare_rates": bare_rates,
        "room_pss": room_pss, "bare_pss": bare_pss, "pool": pool_stats,
        "room_cpu": room_cpu, "bare_cpu": bare_cpu, "surge": args.surge,
        "bound_24g": default_max_live_rooms(node_bytes),
        "bound_24g_measured": int(node_bytes * 0.75 // (room_pss * 2**20)),
        "cost_mib": ROOM_COST_BYTES / 2**20,
    }


def main() -> None:
    """Run the four sections and print the results, ratios and targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=5)
    parser.add_argument("--cold", type=int, default=15)
    parser.add_argument("--surge", type=int, default=200)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--gap", type=float, default=2.5,
                        help="seconds between cold measurements (a pool replaces a taken "
                             "worker 1 s after; measure on a quiet machine)")
    args = parser.parse_args()
    r = asyncio.run(run(args))
    cold_ratio = statistics.median(r["cold_rooms"]) / statistics.median(r["cold_bares"])
    mem_ratio = r["room_pss"] / r["bare_pss"]
    print()
    start = {kind: statistics.median(v) for kind, v in r["start_cpu"].items()}
    print("CPU a process costs up to its first reply, median ms (x a bare actor's; "
          "+ over the line before):")
    before = None
    for kind in START_KINDS:
        added = "" if before is None else f"   +{(start[kind] - before) * 1000:.0f}"
        print(f"  {kind:42} {start[kind] * 1000:7.0f}   x{start[kind] / start[START_KINDS[0]]:.2f}"
              f"{added}")
        before = start[kind]
    print(f"  (when a surge keeps the cores busy, rooms/s can be at most "
          f"~x{start[START_KINDS[0]] / start['room']:.2f} of bare actors/s from this alone)")
    print()
    print(f"{'':34} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'cold: new room + first message':34} {pct(r['cold_rooms'], .5):8.1f} "
          f"{pct(r['cold_rooms'], .99):8.1f}")
    print(f"{'cold: bare actor create + call':34} {pct(r['cold_bares'], .5):8.1f} "
          f"{pct(r['cold_bares'], .99):8.1f}")
    print(f"{'cold: bare actor on a warm worker':34} {pct(r['cold_floors'], .5):8.1f} "
          f"{pct(r['cold_floors'], .99):8.1f}")
    print(f"surge, rooms/s per batch:  {' '.join(f'{x:.1f}' for x in r['room_rates'])}")
    print(f"surge, bare actors/s:      {' '.join(f'{x:.1f}' for x in r['bare_rates'])}")
    print(f"memory per live room: {r['room_pss']:.1f} MiB PSS; bare actor "
          f"{r['bare_pss']:.1f} MiB")
    print(f"warm pool: {r['pool']}")
    print()
    print(f"  cold activation / bare actor creation, p50: x{cold_ratio:.2f}   "
          f"target <= x{TARGET_COLD_RATIO}: {verdict(cold_ratio <= TARGET_COLD_RATIO)}")
    print(f"  (Ray's floor, a bare actor on a warm worker / bare actor creation, p50: "
          f"x{statistics.median(r['cold_floors']) / statistics.median(r['cold_bares']):.2f})")
    surge_ratio = statistics.mean(r["room_rates"]) / statistics.mean(r["bare_rates"])
    print(f"  surge rooms/s / bare actors/s: x{surge_ratio:.2f}   target >= "
          f"x{TARGET_SURGE_RATIO}: {verdict(surge_ratio >= TARGET_SURGE_RATIO)}")
    room_cpu, bare_cpu = r["room_cpu"].per(r["surge"]), r["bare_cpu"].per(r["surge"])
    print(f"    CPU per new actor in the surges, ms (cores busy: rooms "
          f"{r['room_cpu'].busy():.2f}, bare {r['bare_cpu'].busy():.2f}):")
    for group in room_cpu:
        if room_cpu[group] == bare_cpu[group] == 0:  # e.g. idle actors: none told apart
            continue
        print(f"      {group:54} room {room_cpu[group] / 1e3:7.1f}   bare "
              f"{bare_cpu[group] / 1e3:7.1f}")
    total_room, total_bare = sum(room_cpu.values()), sum(bare_cpu.values())
    print(f"      {'total':54} room {total_room / 1e3:7.1f}   bare {total_bare / 1e3:7.1f}"
          f"   (x{total_bare / total_room:.2f}: the rate ratio CPU alone allows when "
          f"both surges keep the cores busy)")
    print(f"  room PSS / bare actor PSS: x{mem_ratio:.2f}   "
          f"target <= x{TARGET_MEMORY_RATIO}: {verdict(mem_ratio <= TARGET_MEMORY_RATIO)}")
    print(f"  a 24 GiB node, default bound: {r['bound_24g']} live rooms "
          f"({r['cost_mib']:.0f} MiB each assumed; {r['bound_24g_measured']} at the "
          f"{r['room_pss']:.1f} MiB measured now)")
    ray.shutdown()


if __name__ == "__main__":
    main()
