"""A memory watch for a gateway replica, for operators chasing growth: with
``ROOMS_GATEWAY_MEMWATCH_S`` set to a period in seconds, the replica traces Python
allocations (:mod:`tracemalloc`, 10 frames) and every period logs its resident set size,
the 15 call sites whose allocations grew most since the first snapshot, the 10 types
whose live objects (:func:`gc.get_objects`) grew most in number, and what holds a live
object of the fastest-growing of those types defined by ray-rooms, Starlette or uvicorn
(the types of its referrers, two levels). Off by
default (tracing costs CPU); the lines go to the replica's own log only."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import tracemalloc
from collections import Counter

__all__ = ["MEMWATCH_ENV", "start_memory_watch"]

MEMWATCH_ENV = "ROOMS_GATEWAY_MEMWATCH_S"
"""The environment variable that turns the watch on: its period in seconds."""

log = logging.getLogger("ray_rooms.gateway")


def _rss_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def start_memory_watch(period_s: float | None = None) -> bool:
    """Start the watch when ``period_s`` (default: ``$ROOMS_GATEWAY_MEMWATCH_S``) is a
    positive number of seconds; return whether it started. Raises nothing."""
    if period_s is None:
        try:
            period_s = float(os.environ.get(MEMWATCH_ENV, "0") or 0)
        except ValueError:
            return False
    if period_s <= 0:
        return False
    tracemalloc.start(10)

    def watch() -> None:
        first = tracemalloc.take_snapshot()
        first_census = _census()
        while True:
            time.sleep(period_s)
            now = tracemalloc.take_snapshot()
            traced, _ = tracemalloc.get_traced_memory()
            log.warning("memwatch: rss %d kB, traced %d kB", _rss_kb(), traced // 1024)
            for stat in now.compare_to(first, "traceback")[:15]:
                frames = " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}"
                                     for f in stat.traceback[:6])
                log.warning("memwatch: %+d kB in %+d blocks: %s", stat.size_diff // 1024,
                            stat.count_diff, frames)
            _log_census(first_census)

    threading.Thread(target=watch, name="rooms-memwatch", daemon=True).start()
    return True


def _type_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _census() -> Counter:
    """Live objects the garbage collector tracks, counted by type name."""
    return Counter(_type_name(obj) for obj in gc.get_objects())


_OURS = ("actors.", "starlette.", "uvicorn.")


def _log_census(first: Counter) -> None:
    """Log the types whose live objects grew most since ``first`` (a :func:`_census`),
    and the referrers of a live object of the fastest-growing one of ours (see the
    module). Walks every tracked object twice: for the watch's thread only."""
    grown = (_census() - first).most_common(10)
    for name, count in grown:
        log.warning("memwatch: %+d live %s", count, name)
    suspect = next((name for name, _ in grown if name.startswith(_OURS)), None)
    if suspect is None:
        return
    obj = next((o for o in gc.get_objects() if _type_name(o) == suspect), None)
    if obj is None:
        return
    for ref in gc.get_referrers(obj)[:8]:
        holders = sorted({_type_name(r) for r in gc.get_referrers(ref)})[:8]
        log.warning("memwatch: a live %s is held by a %s (held by %s)", suspect,
                    _type_name(ref), ", ".join(holders))
