"""What one call costs the process that answers it (issue 23: what bounds the pipelined
rate): CPU of the callee per call, a room's ``deliver`` beside bare Ray actors, in one run.

    python -m benchmarks.callcost [--calls 2000]
    python -m benchmarks.callcost --code-only [--rounds 5]   # the room's code alone
    python -m benchmarks.callcost --paired 30                # deliver's and poll's two wires
    python -m benchmarks.callcost --paired 30 --lane         # a Ray call against the lane
    python -m benchmarks.callcost --spread 8 --pairs 5       # one room against 8 at once

Sequential calls from the driver, each waiting for its answer, and the CPU the
callee's process used over them (``/proc/<pid>/stat``, all its threads: Ray's core
worker, the task-execution thread, the event loop), per call and per frame:

* a bare **sync** actor whose method takes a room's ``deliver`` arguments as the
  gateway sends them (:func:`actors.wire.deliver_call`: one list of one
  ``userUpdate`` frame, a cursor, a poller id and a watermark) and returns a small
  list;
* a bare **async** actor with the same method, created with the rooms' options
  (``max_concurrency`` 10,000: a room is an async actor, so that long polls and
  turns interleave);
* the same async actor's **sync** method of the same shape: Ray runs every method of
  an async actor on its event loop, a sync one too, so this row shows whether a
  ``deliver`` written as a sync method would skip the hand-off to the loop (it does
  not: it costs what the async method does);
* a **room**'s ``deliver`` (SQLite store, a connected socket) with batches of 1, 4, 16
  and 64 ``userUpdate`` frames, called as the gateway calls it
  (:meth:`actors.room_client.RoomClient.deliver`: ``RoomActor.deliver_wire``) and its
  result rebuilt (:meth:`actors.wire.Delivery.from_wire`): each batch is a turn per
  frame, one snapshot save, and the released ``roomState`` entries in the result.

Then the same ``deliver`` batches run **in this process, with no Ray**: a
:class:`~actors.room_actor.RoomActor` object on this thread's event loop with its own
SQLite store (the room's own code alone: turns, snapshot, save, outbox), its CPU from
:func:`time.thread_time` (the SQLite statement runs on the loop's thread too), the
least of ``--rounds`` rounds. ``--code-only`` runs only these rows, with no Ray: run it
in an old and a new tree, alternating, to compare a change to the room's code (its
figures move less than a Ray call's on a busy machine).

``--paired N`` runs only a comparison of the two ways to call one room's ``deliver``
and ``poll``: the gateway's (``RoomActor.deliver_wire`` and ``RoomActor.poll_wire``: one
list argument, a result of lists) and the one before it (``RoomActor.deliver`` and
``RoomActor.poll`` with four arguments, a pickled :class:`~actors.wire.Delivery`), in
``N`` pairs of alternating rounds (the order turns each pair): ``deliver`` with 1 and
with 16 frames, and a ``poll`` that answers at once with the newest entry. It prints,
for the room's CPU, the caller's CPU (this process, :func:`time.process_time`) and the
wall time, the medians and the median of the paired differences and ratios: a shared
machine's drift falls on both halves of a pair alike. (The room's CPU comes from ``/proc``
in 10 ms ticks: keep rounds long enough, ``--calls``.) With ``--lane`` the pairs are the
gateway's Ray call (``before``) and the same call over the room's lane (``now``,
:mod:`actors.lane`: a Unix socket from this process, on the room's node).

``--spread N`` asks what a process per room costs when rooms outnumber cores: the same
16-frame ``deliver`` batches over the rooms' lanes, all into one room, or spread over
``N`` rooms (one caller each, all at once, as the pipelined gateway benchmark's room per
client), in ``--pairs`` pairs of alternating rounds. It prints the rooms' CPU per frame
(``/proc``, all their processes) and frames per second for each, and the ratio.

It prints the callee's CPU per call and per frame, and the room's per-call cost over
the bare async actor's (the part of a ``deliver`` that is ours); then the same CPU by
thread (``/proc/<pid>/task``): the event loop, where a room's own code runs; the
task-execution thread, which deserializes the arguments, hands the call to the loop
and serializes the result; Ray's core worker threads (gRPC, io); the rest. The pipelined
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
from actors.lane import LaneClient
from actors.room_client import RoomClient
from actors.wire import Delivery, Frame, deliver_call, frames_wire, poll_call
from benchmarks.common import (TASK_THREAD, cpu_seconds, progress, python_thread_names,
                               thread_cpu_seconds)
from benchmarks.gateway import HEARTBEAT, HEARTBEAT_EVERY_S, update

BATCHES = (1, 4, 16, 64)


@ray.remote
class SyncCallee:
    """A bare sync actor with a ``deliver``-shaped method."""

    def deliver(self, call: list) -> list:
        """Take :func:`~actors.wire.deliver_call`'s list; return ``[cursor, frames'
        count]``."""
        return [call[1], len(call[0])]

    def pid(self) -> int:
        """The worker's process id."""
        return os.getpid()


@ray.remote
class AsyncCallee:
    """A bare async actor with a ``deliver``-shaped method."""

    async def deliver(self, call: list) -> list:
        """Take :func:`~actors.wire.deliver_call`'s list; return ``[cursor, frames'
        count]``."""
        return [call[1], len(call[0])]

    def deliver_sync(self, call: list) -> list:
        """:meth:`deliver` as a sync method (Ray runs it on the event loop too)."""
        return [call[1], len(call[0])]

    async def pid(self) -> int:
        """The worker's process id."""
        return os.getpid()


# the threads of a Ray actor's process, by the role they play in a call
THREAD_ROLES = ("event loop", "task execution", "Ray's core worker threads", "other")


def thread_role(name: str) -> str:
    """The role (one of :data:`THREAD_ROLES`) of a thread of a Ray actor's process,
    from its name (see :func:`benchmarks.common.thread_cpu_seconds` and
    :func:`~benchmarks.common.python_thread_names`): the async actor's event loop, where
    a room's own code runs; the thread that runs the tasks, which deserializes the
    arguments, hands an async actor's call to its event loop and serializes the result;
    the core worker's gRPC and io threads; the rest (the main thread of an async actor,
    the rooms' metrics thread)."""
    if name.startswith("AsyncIO Thread"):
        return "event loop"
    if name == TASK_THREAD:
        return "task execution"
    if name in ("MainThread", "rooms-metrics") or name.startswith(("Thread-", "ray::")):
        return "other"
    return "Ray's core worker threads"


async def measure(call: Any, pid: int, calls: int, warmup: int,
                  names: dict[int, str] | None = None) -> tuple[float, float, dict[str, float]]:
    """Run ``await call(k)`` ``warmup`` then ``calls`` times; return (callee CPU per
    call, wall time per call, the callee's CPU per call by :func:`thread_role`) in
    microseconds, over the measured calls. ``names``: the callee's Python threads
    (:func:`benchmarks.common.python_thread_names`)."""
    for k in range(warmup):
        await call(k)
    threads0 = thread_cpu_seconds(pid, names)
    cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
    for k in range(calls):
        await call(warmup + k)
    cpu1, wall1 = cpu_seconds(pid), time.perf_counter()
    threads1 = thread_cpu_seconds(pid, names)
    roles = dict.fromkeys(THREAD_ROLES, 0.0)
    for name, seconds in threads1.items():
        roles[thread_role(name)] += 1e6 * (seconds - threads0.get(name, 0.0)) / calls
    return 1e6 * (cpu1 - cpu0) / calls, 1e6 * (wall1 - wall0) / calls, roles


class Beats:
    """Whether the caller's user is due a ``heartbeat``: a room sweeps a user silent for
    15 s (``userUpdate`` frames do not count), and on a slow machine the rows of one
    room outlast that. :meth:`due` is true every ``HEARTBEAT_EVERY_S`` seconds; the
    caller then sends one (a call every 5 s, ~0.1 % of the calls measured)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def due(self) -> bool:
        """True (and restart the period) when a heartbeat is due."""
        if time.monotonic() - self.last < HEARTBEAT_EVERY_S:
            return False
        self.last = time.monotonic()
        return True


Result = tuple[float, float, int, dict[str, float]]
"""(CPU us per call, wall us per call, frames per call, CPU us per call by thread role)"""


async def connected_room() -> tuple[Any, RoomClient, int, int]:
    """A new room on the running Ray (a throwaway SQLite store) with connection ``c``
    seated on socket ``socket-1``: ``(handle, RoomClient, its process id, its outbox
    sequence number)``."""
    store = tempfile.mkdtemp(prefix="rooms-callcost-")
    config = RoomsConfig(namespace=f"rooms-callcost-{uuid.uuid4().hex[:6]}",
                         store_url=f"sqlite:///{store}/rooms.sqlite3", idle_timeout=0)
    room = get_room(f"callcost-{uuid.uuid4().hex[:6]}", config)
    await room.connect.remote("c", "caller", "P", "socket-1")
    pid = await room.__ray_call__.remote(lambda self: os.getpid())
    return room, RoomClient(room), pid, (await room.info.remote()).seq


async def run(calls: int, warmup: int) -> dict[str, Result]:
    """Measure every callee (see the module docstring). Returns ``{name: Result}``."""
    call = deliver_call([Frame("c", update("c", 0))], 0, "P", None)
    results: dict[str, Result] = {}
    rooms_options = {"max_concurrency": 10_000}
    for name, cls, options, method in (
            ("sync actor", SyncCallee, {}, "deliver"),
            ("async actor", AsyncCallee, rooms_options, "deliver"),
            ("async actor, sync method", AsyncCallee, rooms_options, "deliver_sync")):
        actor = cls.options(**options).remote()
        pid = await actor.pid.remote()
        bound = getattr(actor, method)
        cpu, wall, roles = await measure(lambda k: bound.remote(call),
                                         pid, calls, warmup, python_thread_names(actor))
        results[name] = (cpu, wall, 1, roles)
        progress(f"  {name}: {cpu:.0f} us of CPU a call")
        ray.kill(actor)

    room, client, pid, cursor = await connected_room()
    names = python_thread_names(room)
    beats = Beats()
    for batch in BATCHES:
        async def deliver(k: int, batch: int = batch) -> None:
            nonlocal cursor
            if beats.due():
                await room.message.remote("c", HEARTBEAT)
            frames = [Frame("c", update("c", k * batch + i)) for i in range(batch)]
            result = Delivery.from_wire(await client.deliver(frames, cursor, "P"))
            cursor = result.cursor
            if any(e.data and '"type":"error"' in e.data for e in result.entries):
                raise RuntimeError(f"the room refused a frame: {result.entries[-1].data}")

        n = max(50, calls // batch)
        cpu, wall, roles = await measure(deliver, pid, n, max(10, warmup // batch), names)
        results[f"room deliver x{batch}"] = (cpu, wall, batch, roles)
        progress(f"  room deliver, {batch} frames: {cpu:.0f} us of CPU a call")
    ray.kill(room)
    return results


async def paired(pairs: int, calls: int, lane: bool = False) -> None:
    """Print the ``--paired`` comparison (see the module docstring): ``pairs`` pairs of
    rounds of ``calls // batch`` calls (at least 20) each, for ``deliver`` batches of 1
    and 16 frames and for a long-poll that answers at once, in one room on a local Ray
    (needs ``ray.init``). ``lane``: the Ray call against the lane, not the two wires."""
    import statistics

    room, client, pid, cursor = await connected_room()
    lane_client = None
    if lane:
        address = await room.lane.remote(ray.get_runtime_context().get_node_id())
        lane_client = await LaneClient.connect(address)
    beats, k = Beats(), 0

    def frames_of(batch: int) -> list[Frame]:
        nonlocal k
        frames = []
        for _ in range(batch):
            k += 1
            frames.append(Frame("c", update("c", k), "socket-1", k))
        return frames

    async def four(batch: int) -> None:
        nonlocal cursor
        cursor = (await room.deliver.remote(frames_wire(frames_of(batch)), cursor, "P",
                                            None)).cursor

    async def wire(batch: int) -> None:
        nonlocal cursor
        cursor = Delivery.from_wire(await client.deliver(frames_of(batch), cursor,
                                                         "P")).cursor

    async def poll_four(batch: int) -> None:  # the newest entry, at once (poller Q)
        assert (await room.poll.remote(cursor - 1, 0.0, "Q", None)).entries

    async def poll_wire(batch: int) -> None:
        assert Delivery.from_wire(
            await client.poll_wire(cursor - 1, 0.0, "Q", None)).entries

    async def lane_deliver(batch: int) -> None:
        nonlocal cursor
        cursor = Delivery.from_wire(await lane_client.call(
            "deliver", deliver_call(frames_of(batch), cursor, "P", None))).cursor

    async def lane_poll(batch: int) -> None:
        assert Delivery.from_wire(await lane_client.call(
            "poll", poll_call(cursor - 1, 0.0, "Q", None))).entries

    async def rounds(how: Any, batch: int, n: int) -> tuple[float, float, float]:
        cpu0, own0, wall0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
        for _ in range(n):
            if beats.due():
                await room.message.remote("c", HEARTBEAT)
            await how(batch)
        return (1e6 * (cpu_seconds(pid) - cpu0) / n, 1e6 * (time.process_time() - own0) / n,
                1e6 * (time.perf_counter() - wall0) / n)

    cases = ((("deliver, 1 frame a call", 1, four, wire),
              ("deliver, 16 frames a call", 16, four, wire),
              ("poll, answered at once with one entry", 1, poll_four, poll_wire))
             if lane_client is None else
             (("deliver, 1 frame a call: Ray, lane", 1, wire, lane_deliver),
              ("deliver, 16 frames a call: Ray, lane", 16, wire, lane_deliver),
              ("poll, answered at once with one entry: Ray, lane", 1, poll_wire,
               lane_poll)))
    for title, batch, before, now in cases:
        ways = {"before": before, "now": now}
        n = max(20, calls // batch)
        for how in ways.values():
            await rounds(how, batch, max(10, n // 4))  # warm up both
        got: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ways}
        progress(f"  {title}: {pairs} pairs of rounds of {n} calls...")
        for i in range(pairs):
            order = list(ways) if i % 2 == 0 else list(reversed(ways))
            for name in order:
                got[name].append(await rounds(ways[name], batch, n))
        old, new = got["before"], got["now"]
        print(f"\n{title}, {pairs} pairs (us a call; medians):")
        print(f"  {'':14}{'before':>9}{'now':>9}{'paired diff':>13}{'ratio':>8}"
              f"{'now cheaper':>13}")
        for i, what in enumerate(("room CPU", "caller CPU", "wall")):
            diffs = [b[i] - a[i] for a, b in zip(old, new)]
            ratios = [b[i] / a[i] for a, b in zip(old, new) if a[i] > 0]
            print(f"  {what:14}{statistics.median(a[i] for a in old):9.0f}"
                  f"{statistics.median(b[i] for b in new):9.0f}"
                  f"{statistics.median(diffs):+13.0f}"
                  f"{statistics.median(ratios) if ratios else float('nan'):8.3f}"
                  f"{sum(d < 0 for d in diffs):>8}/{len(diffs)}")
    if lane_client is not None:
        lane_client.close()
    ray.kill(room)


async def spread(rooms: int, pairs: int, frames: int = 25600, batch: int = 16) -> None:
    """Print the ``--spread`` comparison (see the module docstring): ``pairs`` pairs of
    rounds of ``frames`` frames in ``batch``-frame ``deliver`` calls over the rooms'
    lanes, into one room and spread over ``rooms`` rooms at once (needs ``ray.init``;
    the rooms are on this node). Raises what the calls raise."""
    import statistics

    node = ray.get_runtime_context().get_node_id()
    made = [await connected_room() for _ in range(rooms)]
    lanes = [await LaneClient.connect(await room.lane.remote(node)) for room, *_ in made]
    cursors = [seq for *_, seq in made]
    pids = [pid for _, _, pid, _ in made]
    counts = [0] * rooms
    beats = Beats()

    async def caller(i: int, calls: int) -> None:
        for _ in range(calls):
            if beats.due():  # every room's user, so that none is swept
                await asyncio.gather(*[room.message.remote("c", HEARTBEAT)
                                       for room, *_ in made])
            call = []
            for _ in range(batch):
                counts[i] += 1
                call.append(Frame("c", update("c", counts[i]), "socket-1", counts[i]))
            reply = await lanes[i].call("deliver", deliver_call(call, cursors[i], "P", None))
            cursors[i] = Delivery.from_wire(reply).cursor

    async def round_of(n: int) -> tuple[float, float]:
        """Rooms' CPU us a frame and frames a second, ``frames`` over ``n`` rooms."""
        calls = frames // batch // n
        used = sum(cpu_seconds(pid) for pid in pids[:n])
        started = time.perf_counter()
        await asyncio.gather(*[caller(i, calls) for i in range(n)])
        wall = time.perf_counter() - started
        sent = calls * n * batch
        return (sum(cpu_seconds(pid) for pid in pids[:n]) - used) * 1e6 / sent, sent / wall

    await round_of(rooms)  # warm every room
    await round_of(1)
    one, many = [], []
    for p in range(pairs):
        order = [(1, one), (rooms, many)]
        for n, into in (order if p % 2 == 0 else order[::-1]):
            into.append(await round_of(n))
        progress(f"  pair {p + 1}: one room {one[-1][0]:.0f} us a frame "
                 f"({one[-1][1]:,.0f}/s); {rooms} rooms {many[-1][0]:.0f} us a frame "
                 f"({many[-1][1]:,.0f}/s)")
    for lane in lanes:
        lane.close()
    ratios = [m[0] / o[0] for o, m in zip(one, many)]
    print(f"\n{batch}-frame deliver calls over the lanes, {frames} frames a round, "
          f"{pairs} pairs (medians); the rooms' CPU from /proc:")
    print(f"{'':28} {'us of CPU a frame':>18} {'frames a second':>16}")
    for label, runs in (("into one room", one), (f"over {rooms} rooms at once", many)):
        print(f"{label:28} {statistics.median(r[0] for r in runs):18.0f} "
              f"{statistics.median(r[1] for r in runs):16,.0f}")
    print(f"{rooms} rooms cost x{statistics.median(ratios):.2f} the CPU a frame of one "
          f"(pairs: {', '.join(f'x{r:.2f}' for r in ratios)}) on {os.cpu_count()} cores")


async def in_process(calls: int, warmup: int, rounds: int = 1) -> dict[int, float]:
    """The room's own code alone: ``RoomActor.deliver`` of each of :data:`BATCHES`
    called on this thread's event loop (no Ray), ``calls`` frames' worth of calls per
    batch and round after ``warmup`` frames' worth. The frames carry a socket and a
    number, as the gateway's do (so each is recorded in the room's applied frames),
    where the calls in Ray above send bare ``(conn, data)`` frames: this row is a
    little dearer than the same frames there would be. Returns ``{batch: CPU us a
    call}`` of this thread (:func:`time.thread_time`), the least of ``rounds``."""
    from actors.room_actor import RoomActor
    from storage.factory import open_store

    url = f"sqlite:///{tempfile.mkdtemp(prefix='rooms-callcost-')}/rooms.sqlite3"
    room = RoomActor("callcost-local", RoomsConfig(store_url=url, idle_timeout=0),
                     store=open_store(url))
    await room.connect("c", "caller", "P", "socket-1")
    cursor = (await room.info()).seq
    k = 0
    results: dict[int, float] = {}
    beats = Beats()
    for batch in BATCHES:
        async def deliver(n: int, batch: int = batch) -> None:
            nonlocal cursor, k
            for _ in range(n):
                if beats.due():
                    await room.message("c", HEARTBEAT)
                frames = []
                for _ in range(batch):
                    k += 1
                    frames.append(("c", update("c", k), "socket-1", k))
                cursor = (await room.deliver(frames, cursor, "P")).cursor

        n = max(50, calls // batch)
        await deliver(max(10, warmup // batch))
        each = []
        for _ in range(max(1, rounds)):
            started = time.thread_time()
            await deliver(n)
            each.append((time.thread_time() - started) / n * 1e6)
        results[batch] = min(each)
        progress(f"  the room's code alone, {batch} frames: {results[batch]:.0f} us of CPU "
                 f"a call (rounds: {', '.join(f'{c:.0f}' for c in each)})")
    return results


def main() -> None:
    """Run the measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=None,
                        help="calls' worth of frames a row (default 2000; with --paired: "
                             "a round, default 200)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of the no-Ray rows; each prints the least")
    parser.add_argument("--code-only", action="store_true",
                        help="only the room's code alone, no Ray (--rounds 5 unless given)")
    parser.add_argument("--paired", type=int, default=0, metavar="N",
                        help="only deliver's and poll's two wires, in N pairs of rounds")
    parser.add_argument("--spread", type=int, default=0, metavar="N",
                        help="only one room against N rooms at once, over their lanes")
    parser.add_argument("--pairs", type=int, default=5,
                        help="with --spread: pairs of rounds")
    parser.add_argument("--lane", action="store_true",
                        help="with --paired: the Ray call against the room's lane")
    args = parser.parse_args()
    if args.spread:
        ray.init(include_dashboard=False, log_to_driver=False, namespace="rooms-callcost")
        try:
            asyncio.run(spread(args.spread, args.pairs))
        finally:
            ray.shutdown()
        return
    if args.paired:
        ray.init(include_dashboard=False, log_to_driver=False, namespace="rooms-callcost")
        try:
            asyncio.run(paired(args.paired, args.calls or 200, args.lane))
        finally:
            ray.shutdown()
        return
    if args.code_only:
        rounds = args.rounds if args.rounds > 1 else 5
        alone = asyncio.run(in_process(args.calls or 2000, args.warmup, rounds))
        print(f"\n{'the room code alone':22} {'frames':>6} {'CPU us/call':>12} "
              f"{'CPU us/frame':>13}   (least of {rounds} rounds, no Ray)")
        for batch, cpu in alone.items():
            print(f"{'':22} {batch:6d} {cpu:12.0f} {cpu / batch:13.1f}")
        return
    ray.init(include_dashboard=False, log_to_driver=False, namespace="rooms-callcost")
    try:
        results = asyncio.run(run(args.calls or 2000, args.warmup))
    finally:
        ray.shutdown()
    alone = asyncio.run(in_process(args.calls or 2000, args.warmup, args.rounds))
    bare = results["async actor"][0]
    print(f"\n{'callee':24} {'frames':>6} {'CPU us/call':>12} {'CPU us/frame':>13} "
          f"{'wall us/call':>13} {'x async actor':>14}")
    for name, (cpu, wall, frames, _) in results.items():
        print(f"{name:24} {frames:6d} {cpu:12.0f} {cpu / frames:13.0f} {wall:13.0f} "
              f"{cpu / bare:14.2f}")
    for batch, cpu in alone.items():
        print(f"{f'room code alone x{batch}':24} {batch:6d} {cpu:12.0f} {cpu / batch:13.0f} "
              f"{'(no Ray)':>13} {cpu / bare:14.2f}")
    print("\nThe callee's CPU per call by thread (us; /proc/<pid>/task):")
    print(f"{'callee':24} " + " ".join(f"{role:>26}" for role in THREAD_ROLES))
    for name, (_, _, _, roles) in results.items():
        print(f"{name:24} " + " ".join(f"{roles[role]:26.0f}" for role in THREAD_ROLES))
    room_roles, bare_roles = results["room deliver x1"][3], results["async actor"][3]
    print("A one-frame deliver over the bare async actor: " + ", ".join(
        f"{role} {room_roles[role] - bare_roles[role]:+.0f} us" for role in THREAD_ROLES)
        + " (the event loop runs the room's turn, group commit, outbox and save).")
    one = results["room deliver x1"][0]
    per_frame = ((results["room deliver x64"][0] - results["room deliver x16"][0])
                 / (64 - 16))
    print(f"\nA room's deliver costs its process {one:.0f} us of CPU a call with one frame; "
          f"the bare async actor {bare:.0f} us ({bare / one:.0%} of it: Ray's async-actor "
          f"call path), the sync actor {results['sync actor'][0]:.0f} us, the async actor's "
          f"sync method {results['async actor, sync method'][0]:.0f} us. Each further "
          f"frame adds ~{per_frame:.0f} us (the turn, its entry).")


if __name__ == "__main__":
    main()
