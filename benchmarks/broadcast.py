"""Benchmark: a broadcast to many sockets with permessage-deflate on and off, alternating
in one run, each beside Serve's floor for a broadcast (issue 23: what bounds the
50-socket broadcast).

    python -m benchmarks.broadcast [--sockets 50] [--rounds 30] [--pairs 2]

Starts a local Ray (a SQLite store, the warm pool), then ``--pairs`` times: deploys
the gateway with ``ROOMS_GATEWAY_WS_COMPRESSION`` on (``GatewayLimits.ws_compression``),
runs section 2 of ``python -m benchmarks.gateway`` (:func:`benchmarks.gateway.broadcast`:
``--sockets`` sockets in a new room, one ``userUpdate`` per round, timed until every
socket has the ``roomState`` carrying it), deletes the gateway, and does the same with
compression off. The client (the ``websockets`` library) offers permessage-deflate as
browsers do, so the setting decides. Prints each run's p50/p99 and, per pair, the ratio
off/on: how much of a broadcast is compressing every frame once per socket in the
replica and inflating it in the client.

Beside each run, with the same compression and through the same HAProxy, the floor
(``benchmarks/floor.py``, ``/floor/broadcast``): a Serve replica that calls a bare actor
once per frame and then writes the frame (a ``roomState`` of as many users, the same
size) to every socket, and clients that read and parse it the same way. What a
broadcast costs over that floor is the room's (its turn, save and outbox, the
``deliver`` call's larger arguments and result, the gateway's per-socket writers);
the floor itself is what any gateway on Serve pays. Absolute times drift on shared
machines; compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

import ray

from benchmarks.common import Bare, local_rooms, pct, progress
from benchmarks.floor import delete_floor, deploy_floor, floor_broadcast
from benchmarks.gateway import broadcast


def main() -> None:
    """Run the alternating pairs and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()

    from actors.gateway import GatewayLimits, deploy_gateway, shutdown_gateway
    from actors.net import free_port

    progress("starting a local Ray...")
    config = local_rooms("rooms-broadcast")
    runs: list[tuple[int, bool, list[float], list[float]]] = []
    bare = Bare.remote()
    try:
        for pair in range(args.pairs):
            for compression in (True, False):
                limits = GatewayLimits(rate_per_s=1e6, burst=10**6, abuse_strikes=10**6,
                                       ws_compression=compression)
                url = deploy_gateway(config, port=free_port(), dev=True,
                                     name="rooms-broadcast", limits=limits)
                base = url.replace("http://", "ws://")
                # the floor first: deploy_floor returns once HAProxy, reloaded for it,
                # sends its requests to the replicas' own servers; before that, new
                # sockets may go through Serve's proxy actor, the gateway's too
                deploy_floor(bare, compression)
                progress(f"pair {pair + 1}: compression {'on' if compression else 'off'}, "
                         f"{args.sockets} sockets, {args.rounds} rounds")
                times, _ = asyncio.run(broadcast(base, args.sockets, args.rounds))
                progress("  the floor, the same way")
                floor = asyncio.run(floor_broadcast(base, args.sockets, args.rounds))
                delete_floor()
                runs.append((pair, compression, times, floor))
                shutdown_gateway("rooms-broadcast")
    finally:
        ray.shutdown()

    print(f"\nbroadcast of one userUpdate to {args.sockets} sockets, until the last has "
          f"read it; the floor: one bare actor call, then the same-size frame written to "
          f"every socket by a Serve replica:")
    print(f"{'pair':>4} {'permessage-deflate':>19} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'floor p50':>10} {'floor p99':>10} {'x floor':>8}")
    for pair, compression, times, floor in runs:
        print(f"{pair + 1:4d} {'on' if compression else 'off':>19} "
              f"{pct(times, 0.5):8.2f} {pct(times, 0.99):8.2f} {pct(floor, 0.5):10.2f} "
              f"{pct(floor, 0.99):10.2f} {pct(times, 0.5) / pct(floor, 0.5):8.2f}")
    ratios = []
    for pair in range(args.pairs):
        on, off = (statistics.median(t) for p, c, t, _ in sorted(
            (r for r in runs if r[0] == pair), key=lambda r: not r[1]))
        ratios.append(off / on)
        print(f"pair {pair + 1}: p50 off / on = {off / on:.2f}")
    best = min(pct(t, 0.5) for _, _, t, _ in runs)
    floor_best = min(pct(f, 0.5) for *_, f in runs)
    print(f"compression is {1 - statistics.median(ratios):.0%} of a broadcast's p50 "
          f"(median over the pairs); the 5 ms target (issue 23) is "
          f"{'met' if best <= 5 else 'not met'} by any run (best p50 {best:.2f} ms); "
          f"Serve's floor for it is {floor_best:.2f} ms at best"
          f"{' (the target is below the floor)' if floor_best > 5 else ''}")


if __name__ == "__main__":
    main()
