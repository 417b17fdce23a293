"""Connection churn: how much a gateway replica's memory grows per WebSocket connection,
beside Serve's own floor in the same run (issue 19's soak: where the growth comes from).

Starts a local Ray, a one-replica gateway (development-mode identities, SQLite store)
and the floor application (``benchmarks/floor.py``) behind the same HAProxy. Then, for
``--minutes``, ``--clients`` clients open, use and close connections back to back to
each side at the same time:

* **gateway**: a socket to one of 8 rooms (its own ``_pk``), wait for the
  ``roomState``, three ``partyserver-ping`` round trips, close (1000);
* **floor**: a socket to ``/floor/echo`` (``--floor-route actor``: ``/floor/actor``, a
  bare actor call per frame), three echoed frames, close.

Every 30 s it prints each replica's resident set size (``/proc/<pid>/status``
``VmRSS``) and the connections so far; at the end the growth after ``--warmup-minutes``
in bytes per connection, for each. Run: ``python -m benchmarks.churn [--minutes 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from benchmarks.common import Bare, local_rooms, progress, replica_pids
from benchmarks.floor import FLOOR_APP, FLOOR_PREFIX, delete_floor, deploy_floor
from benchmarks.soak import rss_kb

PING = json.dumps({"type": "partyserver-ping"})
APP = "rooms-churn"


def _replica_pid(app: str) -> int:
    """The pid of Serve application ``app``'s (only) replica. Raises LookupError when
    there is none."""
    for pid in replica_pids(app):
        return pid
    raise LookupError(f"no replica of {app}")


async def churn(base: str, *, minutes: float, warmup_minutes: float, clients: int,
                floor_route: str) -> dict[str, tuple[int, float]]:
    """Churn both sides (see the module docstring) against the ingress at ``base``
    (``ws://host:port``). Returns ``{"gateway" | "floor": (connections after the
    warm-up, RSS growth in bytes per connection)}``."""
    from websockets.asyncio.client import connect

    pids = {"gateway": _replica_pid(APP), "floor": _replica_pid(FLOOR_APP)}
    counts = {"gateway": 0, "floor": 0}
    stop = time.monotonic() + minutes * 60

    async def gateway(i: int) -> None:
        while time.monotonic() < stop:
            async with connect(f"{base}/parties/rooms/churn-{i % 8}?_pk=c{i}"
                               f"&username=u{i}") as ws:
                while json.loads(await ws.recv())["type"] != "roomState":
                    pass
                for _ in range(3):
                    await ws.send(PING)
                    while json.loads(await ws.recv())["type"] != "partyserver-pong":
                        pass
            counts["gateway"] += 1

    async def floor(i: int) -> None:
        while time.monotonic() < stop:
            async with connect(f"{base}{FLOOR_PREFIX}/{floor_route}") as ws:
                for _ in range(3):
                    await ws.send(PING)
                    await ws.recv()
            counts["floor"] += 1

    tasks = [asyncio.ensure_future(gateway(i)) for i in range(clients)]
    tasks += [asyncio.ensure_future(floor(i)) for i in range(clients)]
    began = time.monotonic()
    marks = None
    while time.monotonic() < stop:
        await asyncio.sleep(min(30.0, max(0.0, stop - time.monotonic())))
        rss = {side: rss_kb(pid) for side, pid in pids.items()}
        elapsed = (time.monotonic() - began) / 60
        progress(f"{elapsed:5.1f} min  " + "  ".join(
            f"{side} {counts[side]:6d} connections, RSS {rss[side] / 1024:6.1f} MiB"
            for side in pids))
        if marks is None and elapsed >= warmup_minutes:
            marks = (dict(counts), rss)
    await asyncio.gather(*tasks, return_exceptions=True)
    rss = {side: rss_kb(pid) for side, pid in pids.items()}
    if marks is None:
        raise RuntimeError("the run ended before its warm-up did")
    return {side: (counts[side] - marks[0][side],
                   (rss[side] - marks[1][side]) * 1024 / max(1, counts[side] - marks[0][side]))
            for side in pids}


def main(argv: list[str] | None = None) -> None:
    """Run the churn and print the growth per connection of each side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=4, help="clients on each side")
    parser.add_argument("--floor-route", choices=["echo", "actor"], default="echo")
    args = parser.parse_args(argv)

    import ray

    from actors.gateway import GatewayLimits, deploy_gateway, shutdown_gateway
    from actors.net import free_port

    progress("starting a local Ray, the gateway and the floor...")
    config = local_rooms("rooms-churn")
    try:
        url = deploy_gateway(config, port=free_port(), dev=True, name=APP,
                             limits=GatewayLimits(rate_per_s=1e6, burst=10**6,
                                                  abuse_strikes=10**6,
                                                  rooms_per_minute=10**6))
        deploy_floor(Bare.remote())
        result = asyncio.run(churn(url.replace("http://", "ws://"), minutes=args.minutes,
                                   warmup_minutes=args.warmup_minutes,
                                   clients=args.clients, floor_route=args.floor_route))
    finally:
        delete_floor()
        shutdown_gateway(APP)
        ray.shutdown()
    print()
    for side, (connections, per) in result.items():
        print(f"{side:8} {connections:7d} connections after the warm-up: "
              f"{per:8.0f} bytes of RSS per connection")
    gateway, floor = result["gateway"][1], result["floor"][1]
    print(f"gateway - floor: {gateway - floor:.0f} bytes per connection are the gateway's "
          f"own (floor route: /floor/{args.floor_route})")


if __name__ == "__main__":
    main()
