"""What the benchmarks share: the project's bytecode as an install has it, the bare-actor
baseline, quantiles, progress lines, the MET / NOT MET verdict and a worker's memory from
``/proc``."""

from __future__ import annotations

import compileall
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import ray

from actors.warmpool import RUNTIME_PACKAGES

__all__ = ["as_installed", "Bare", "CpuMeter", "cpu_seconds", "cpu_ticks", "local_rooms",
           "pct", "processes", "progress", "python_thread_names", "replica_pids", "smaps",
           "TASK_THREAD", "thread_cpu_seconds", "verdict"]


PACKAGES = (*RUNTIME_PACKAGES, "benchmarks")
"""The project's packages (the room runtime's, and this one) whose bytecode
:func:`as_installed` writes."""
_NOT_PYTHON = re.compile(r"node_modules")
"""What :func:`as_installed` skips: npm's trees (the peer benchmark's)."""


def as_installed() -> None:
    """Write the bytecode (``__pycache__/*.pyc``) of :data:`PACKAGES`, as installing the
    wheel does (pip compiles what it installs), so that every worker process of a
    benchmark loads the room runtime as a user's install does, from bytecode.

    A source checkout run with ``PYTHONDONTWRITEBYTECODE`` set (this machine's
    environment sets it) never writes bytecode on import, so each new process compiled
    the room runtime from source: ~100 ms more CPU per room process here, and ~0.7 MiB
    more PSS per live room, counted against rooms beside bare actors
    (docs/performance.md, "Bytecode"). Python still reads bytecode that exists, whatever
    that variable says. Files already compiled are skipped; a file that cannot be
    compiled or written is reported by :mod:`compileall` and the progress line, and
    its importers compile it as before. Raises nothing of its own.
    """
    root = Path(__file__).resolve().parents[1]
    ok = all(compileall.compile_dir(root / name, quiet=1, rx=_NOT_PYTHON)
             for name in PACKAGES if (root / name).is_dir())
    progress(f"bytecode of {', '.join(PACKAGES)} written as an install has it"
             f"{'' if ok else ' (some files failed to compile: see above)'}"
             f"{' (PYTHONDONTWRITEBYTECODE is set)' if sys.flags.dont_write_bytecode else ''}")


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


CPU_GROUPS = ("client", "HAProxy", "Serve replica (gateway or floor)",
              "room actors (the floor's: bare actors)",
              "  idle actors (rooms, bare actors not in this run)",
              "Ray (raylet, GCS, Serve's controller, other workers)", "other")
"""The groups :class:`CpuMeter` counts by. The fifth holds the actors of the fourth's
kinds that a :class:`CpuMeter` given the run's actors (``active``) finds outside them:
idle, each still costs its node Ray's floor (``python -m benchmarks.idle``)."""


def _cpu_group(pid: int, title: str, client: int) -> str:
    """Which of :data:`CPU_GROUPS` process ``pid`` with command-line ``title`` is in."""
    if pid == client:
        return "client"
    if "haproxy" in title.split(" ")[0]:
        return "HAProxy"
    if title.startswith("ray::ServeReplica:"):
        return CPU_GROUPS[2]
    if title.startswith(("ray::RoomActor", "ray::Bare")):
        return CPU_GROUPS[3]
    if title.startswith("ray::") or "/ray/" in title or "ray/" in title.split(" ")[0]:
        return CPU_GROUPS[5]
    return "other"


def _stat_fields(path: str) -> list[str]:
    """The fields of a ``/proc/<pid>/stat`` or ``/proc/<pid>/task/<tid>/stat`` file
    after ``pid (comm)``: ``[11]``/``[12]`` are user/system time in clock ticks.

    Raises:
        OSError: the process or thread is gone.
    """
    with open(path) as f:
        stat = f.read()
    return stat[stat.rfind(")") + 2:].split()


def _ticks(fields: list[str]) -> int:
    """User + system time in clock ticks from :func:`_stat_fields`' fields."""
    return int(fields[11]) + int(fields[12])


def processes() -> Iterator[tuple[int, list[str], str]]:
    """Every process on this machine now: ``(pid, stat, title)``, ``stat`` the fields of
    ``/proc/<pid>/stat`` after ``pid (comm)`` (``stat[0]`` is the state, ``stat[1]`` the
    parent's pid, ``stat[11]``/``stat[12]`` user/system time in clock ticks), ``title``
    the first word of its command line (Ray names an actor's worker ``ray::<class>``).
    Linux only; a process that ends while it is read is skipped."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = _stat_fields(f"/proc/{name}/stat")
            with open(f"/proc/{name}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        yield int(name), fields, title


def replica_pids(app: str) -> list[int]:
    """The pids of Serve application ``app``'s replicas on this machine, found by their
    process titles (Ray titles an actor's worker ``ray::<class>``: a replica
    ``ray::ServeReplica:<app>:<deployment>``). Linux only."""
    return [pid for pid, _, title in processes()
            if title.startswith(f"ray::ServeReplica:{app}:")]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far, all its threads
    (``/proc/<pid>/stat``). Linux only.

    Raises:
        OSError: no such process.
    """
    return _ticks(_stat_fields(f"/proc/{pid}/stat")) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int, names: dict[int, str] | None = None) -> dict[str, float]:
    """User + system CPU seconds each thread of process ``pid`` has used so far, summed
    by thread name: ``names`` (native thread id -> name, e.g. from
    :func:`python_thread_names`) where it has one, else the kernel's name of the thread
    (``/proc/<pid>/task/<tid>/comm``; a Ray worker's task-execution thread is named
    after the actor, ``ray::<Class>``). Threads that exit meanwhile are left out. Linux
    only.

    Raises:
        OSError: no such process.
    """
    names = names or {}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            ticks = _ticks(_stat_fields(f"/proc/{pid}/task/{tid}/stat"))
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:  # the thread exited
            continue
        name = names.get(int(tid), comm)
        out[name] = out.get(name, 0.0) + ticks / tick
    return out


TASK_THREAD = "task execution"
"""The name :func:`python_thread_names` gives the thread that runs an actor's tasks."""


def python_thread_names(actor: Any) -> dict[int, str]:
    """The Python threads of ``actor``'s process: ``{native thread id: name}`` (the
    event loop of an async actor is ``AsyncIO Thread: default``); the thread that runs
    the actor's tasks (a sync actor's main thread, an async actor's task-execution
    thread, which hands each call to the event loop) is named :data:`TASK_THREAD`.
    Blocks on one call (``__ray_call__``) of the actor."""
    def names(_self: Any) -> dict[int, str]:
        import threading

        found = {t.native_id: t.name for t in threading.enumerate()
                 if t.native_id is not None}
        found[threading.get_native_id()] = TASK_THREAD
        return found

    return ray.get(actor.__ray_call__.remote(names), timeout=60)


def cpu_ticks(client: int | None = None) -> dict[int, tuple[str, int]]:
    """The CPU time every process on this machine has used so far: ``{pid: (group,
    ticks)}``, the group one of :data:`CPU_GROUPS` (``client``: this benchmark's own
    pid, default :func:`os.getpid`), the ticks user + system time (``/proc/<pid>/stat``
    fields 14 and 15; ``os.sysconf("SC_CLK_TCK")`` a second). Linux only."""
    client = os.getpid() if client is None else client
    return {pid: (_cpu_group(pid, title, client), _ticks(stat))
            for pid, stat, title in processes()}


class CpuMeter:
    """The CPU time each group of processes (:data:`CPU_GROUPS`) uses over a span of
    work, per unit of work: ``with CpuMeter() as cpu: ...`` then ``cpu.per(units)``
    gives ``{group: CPU microseconds per unit}`` and ``cpu.wall_s`` the span's wall
    time (s). With every core busy, ``cores * 1e6 / sum(cpu.per(units).values())`` is
    the most units a second this machine could do at that cost: what bounds a
    throughput. A process that starts during the span counts from its start; one that
    ends during it is not counted (Linux only).

    Args:
        active: the pids of the actors the work runs on; the other room and bare actors
            count as idle (:data:`CPU_GROUPS`' fifth group). ``None``: all count as
            the work's.
    """

    def __init__(self, active: Iterable[int] | None = None) -> None:
        self.active = None if active is None else set(active)

    def __enter__(self) -> "CpuMeter":
        self.before = cpu_ticks()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self.started
        self.after = cpu_ticks()
        self.used = dict.fromkeys(CPU_GROUPS, 0)
        for pid, (group, ticks) in self.after.items():
            if group == CPU_GROUPS[3] and self.active is not None and pid not in self.active:
                group = CPU_GROUPS[4]
            self.used[group] += ticks - self.before.get(pid, (group, 0))[1]

    def per(self, units: int) -> dict[str, float]:
        """``{group: CPU microseconds per unit}`` over the span, for ``units`` (> 0)
        units of work."""
        tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
        return {group: ticks * tick_us / units for group, ticks in self.used.items()}

    def busy(self) -> float:
        """How many cores the span kept busy on average (all CPU time / wall time)."""
        used_s = sum(self.used.values()) / os.sysconf("SC_CLK_TCK")
        return used_s / self.wall_s if self.wall_s > 0 else 0.0


def local_rooms(prefix: str) -> Any:
    """Start a fresh local Ray (no dashboard, in namespace ``<prefix>-<random>``), a
    SQLite store in a new temporary directory and this node's warm pool, as ``rooms
    serve`` would, the project's bytecode written first (:func:`as_installed`); return
    the rooms' :class:`~actors.config.RoomsConfig` (rooms never hibernate for idleness:
    ``idle_timeout=0``). Raises what ``ray.init`` raises."""
    import tempfile
    import uuid

    from actors.config import RoomsConfig
    from actors.warmpool import ensure_warm_pools

    as_installed()
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    ray.init(address="local", namespace=namespace, include_dashboard=False,
             configure_logging=False, log_to_driver=False)
    store = tempfile.mkdtemp(prefix=f"{prefix}-")
    config = RoomsConfig(namespace=namespace, store_url=f"sqlite:///{store}/rooms.sqlite3",
                         idle_timeout=0)
    ensure_warm_pools(config.warm_workers, config.store_url)
    return config
