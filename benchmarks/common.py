"""What the benchmarks share: the bare-actor baseline, quantiles, progress lines, the
MET / NOT MET verdict and a worker's memory from ``/proc``."""

from __future__ import annotations

import os
import time

from typing import Any

import ray

__all__ = ["Bare", "local_rooms", "pct", "progress", "smaps", "verdict"]


@ray.remote(num_cpus=0)
class Bare:
    """The baseline: an async actor with a trivial method, in its own worker."""

    def __init__(self) -> None:
        self.n = 0

    async def call(self, conn: str, text: str) -> int:
        """Count one call; ``conn``/``text`` are ignored (the arguments of a room's
        ``message``). Returns the number of calls so far."""
        self.n += 1
        return self.n

    def pid(self) -> int:
        """Return the worker's process id."""
        return os.getpid()


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` (seconds), in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def progress(text: str) -> None:
    """Print ``text`` with the wall-clock time, at once (long runs show they move)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def verdict(ok: bool) -> str:
    """``"MET"`` or ``"NOT MET"``."""
    return "MET" if ok else "NOT MET"


def smaps(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` fields in kB (``Pss``, ``Private_Dirty``, ...).

    Raises:
        OSError: no such process (or not Linux).
    """
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def local_rooms(prefix: str) -> Any:
    """Start a fresh local Ray (no dashboard, in namespace ``<prefix>-<random>``), a
    SQLite store in a new temporary directory and this node's warm pool, as ``rooms
    serve`` would; return the rooms' :class:`~actors.config.RoomsConfig` (rooms never
    hibernate for idleness: ``idle_timeout=0``). Raises what ``ray.init`` raises."""
    import tempfile
    import uuid

    from actors.config import RoomsConfig
    from actors.warmpool import ensure_warm_pools

    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    ray.init(address="local", namespace=namespace, include_dashboard=False,
             configure_logging=False, log_to_driver=False)
    store = tempfile.mkdtemp(prefix=f"{prefix}-")
    config = RoomsConfig(namespace=namespace, store_url=f"sqlite:///{store}/rooms.sqlite3",
                         idle_timeout=0)
    ensure_warm_pools(config.warm_workers, config.store_url)
    return config
