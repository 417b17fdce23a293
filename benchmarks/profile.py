"""Sample where the gateway replica's and the rooms' processes spend their CPU, with
py-spy, while a load runs (issue 23, item 1: "a profile of the hot path").

    python -m benchmarks.profile --seconds 8 [--match ServeReplica --match RoomActor]

Finds this machine's processes whose command line contains each ``--match`` (Ray titles
its workers ``ray::ServeReplica:<app>:<deployment>``, ``ray::RoomActor``...), samples
each with ``py-spy record --format raw`` (collapsed stacks, ``--rate`` per second, only
threads holding the GIL with ``--gil``, ``--nonblocking``: the process is not paused) for
``--seconds``, and prints per group of processes:

* the share of samples in which each function is on the stack (inclusive), limited to
  ``--top`` functions, with the project's own functions marked;
* the share by *stage*: the first frame of a stack that belongs to a known stage
  (:data:`STAGES`), so that "WebSocket receive", "the room call", "the turn", "the save",
  "fan-out" and "Ray's core worker" add up to 100 %.

Start the load first, for example the pipelined section of ``python -m
benchmarks.gateway``, or run ``python -m benchmarks.profile --with-gateway-load``, which
starts the gateway benchmark in a subprocess and samples during its pipelined run.
py-spy comes from PyPI (``pip install -e '.[bench]'``); sampling
another process needs ptrace rights (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

__all__ = ["STAGES", "find_processes", "sample", "summarize"]

STAGES: list[tuple[str, str]] = [
    # (label, a substring of "function (file)" in py-spy's frame text), first match wins,
    # checked from the innermost frame outwards
    ("json encode/decode", "json/"),
    ("pydantic validation", "pydantic"),
    ("snapshot save (store)", "storage/"),
    ("snapshot encode", "_snapshot"),
    ("the room's turn (rooms/)", "rooms/"),
    ("websocket send/receive", "websockets/"),
    ("uvicorn / starlette", "uvicorn/"),
    ("uvicorn / starlette", "starlette/"),
    ("gateway: fan-out", "fanout"),
    ("gateway: channel", "gateway/channel"),
    ("gateway: batcher", "gateway/batcher"),
    ("gateway: client socket", "gateway/client_socket"),
    ("gateway: other", "actors/gateway/"),
    ("room actor: other", "actors/room_actor"),
    ("room actor: outbox", "actors/outbox"),
    ("metrics tally", "actors/metrics"),
    ("the room's lane (calls over a Unix socket)", "actors/lane"),
    ("msgpack (the lane's frames)", "msgpack/"),
    ("Ray core worker (calls, serialization)", "ray/"),
    ("asyncio event loop", "asyncio/"),
]
"""How a stack is attributed to one stage: the innermost frame matching a pattern."""


def find_processes(patterns: list[str]) -> dict[str, list[int]]:
    """The pids of this machine's processes whose command line contains each pattern.

    Returns:
        ``{pattern: [pid, ...]}``; a pattern matching nothing maps to ``[]``.
    """
    found: dict[str, list[int]] = {p: [] for p in patterns}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for pattern in patterns:
            if pattern in cmdline and "benchmarks.profile" not in cmdline:
                found[pattern].append(int(name))
    return found


def sample(pids: list[int], seconds: float, rate: int, out_dir: str,
           gil: bool = True) -> list[str]:
    """Run ``py-spy record`` on every pid at once for ``seconds``.

    Returns:
        The raw (collapsed stack) files written, one per pid that could be sampled.

    Raises:
        FileNotFoundError: py-spy is not installed.
    """
    exe = shutil.which("py-spy")
    if exe is None:
        raise FileNotFoundError("py-spy is not installed: pip install py-spy")
    runs = []
    for pid in pids:
        path = os.path.join(out_dir, f"{pid}.txt")
        argv = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                "--rate", str(rate), "--format", "raw", "--nonblocking", "-o", path]
        if gil:
            argv.append("--gil")
        runs.append((path, subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)))
    written = []
    for path, proc in runs:
        proc.wait()
        if os.path.exists(path):
            written.append(path)
    return written


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip().rpartition(" ")
    return stack.split(";"), int(count)


def summarize(files: list[str], top: int = 25) -> str:
    """A report of the collapsed stacks in ``files`` (see the module docstring).

    Returns:
        The text; ``"(no samples)"`` when the files hold none.
    """
    inclusive: collections.Counter[str] = collections.Counter()
    stages: collections.Counter[str] = collections.Counter()
    total = 0
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                frames, count = _frames(line)
                total += count
                for frame in set(frames):
                    inclusive[frame] += count
                for frame in reversed(frames):
                    label = next((lab for lab, pat in STAGES if pat in frame), None)
                    if label is not None:
                        stages[label] += count
                        break
                else:
                    stages["other"] += count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples"]
    lines.append("by stage (innermost matching frame):")
    for label, count in stages.most_common():
        lines.append(f"  {100 * count / total:5.1f} %  {label}")
    lines.append(f"top {top} functions by inclusive share:")
    for frame, count in inclusive.most_common(top):
        own = "*" if any(p in frame for p in ("actors/", "rooms/", "storage/")) else " "
        lines.append(f"  {100 * count / total:5.1f} % {own} {frame[:110]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Sample the matching processes and print one report per ``--match``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--match", action="append",
                        help="a substring of the processes' command lines (repeatable); "
                             "default: ServeReplica and RoomActor")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--all-threads", action="store_true",
                        help="sample threads not holding the GIL too")
    parser.add_argument("--with-gateway-load", action="store_true",
                        help="start `python -m benchmarks.gateway` and sample during its "
                             "pipelined section")
    args = parser.parse_args(argv)
    patterns = args.match or ["ServeReplica", "RoomActor"]
    load = None
    if args.with_gateway_load:
        load = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.gateway", "--mix-rounds", "1",
             "--seconds", str(args.seconds + 3), "--rounds", "1", "--activations", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert load.stdout is not None
        for line in load.stdout:
            print(f"  [load] {line.rstrip()}", file=sys.stderr)
            if "ping:" in line:  # the pipelined run starts right after the ping run
                break
        time.sleep(1.0)
    try:
        found = find_processes(patterns)
        with tempfile.TemporaryDirectory(prefix="rooms-profile-") as out:
            every = [pid for pids in found.values() for pid in pids]
            print(f"sampling {len(every)} process(es) for {args.seconds:.0f} s at "
                  f"{args.rate}/s: {found}", file=sys.stderr)
            files = dict(zip(every, sample(every, args.seconds, args.rate, out,
                                           gil=not args.all_threads)))
            for pattern, pids in found.items():
                mine = [files[p] for p in pids if p in files]
                print(f"\n== {pattern} ({len(mine)} process(es))")
                print(summarize(mine, args.top))
    finally:
        if load is not None:
            load.terminate()
            load.wait(timeout=30)


if __name__ == "__main__":
    main()
