"""What the wire between a gateway replica and a room costs Ray to carry (issue 23: every
frame and every message crosses it once): serialization and deserialization of one
``deliver`` call's frames and of its result, through Ray's own serializer, beside an
integer (what the floor's bare actor returns) in the same run.

    python -m benchmarks.wirecost [--frames 16] [--calls 3000]

For each value it prints the microseconds of Ray's ``serialize`` (what the sending
process pays: msgpack for lists of plain values, cloudpickle for anything else, a
tuple included) and of ``ray.get`` of a ``ray.put`` of it (what the receiving process
pays to rebuild it, plus a constant cost of the get itself, which the integer's row
shows), for:

* the frames as :func:`actors.wire.frames_wire` sends them (lists), and as
  :class:`~actors.wire.Frame` named tuples (how they went before);
* a :class:`~actors.wire.Delivery` of as many ``roomState`` entries (its
  ``__reduce__``: entries as plain tuples), and the same values in a plain frozen
  slotted dataclass without it (how it went before).

A local Ray is started with one CPU and no dashboard; the figures are per call, on one
thread. Absolute times drift on shared machines; compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import timeit
from dataclasses import dataclass, field
from typing import Any

import ray

from actors.wire import Delivery, Frame, OutboxEntry, frames_wire
from benchmarks.common import progress
from benchmarks.gateway import update

ROOM_STATE = json.dumps({"type": "roomState", "state": {"users": [{
    "id": "c", "name": "caller", "joined": True, "raisedHand": False, "speaking": False,
    "tracks": {"audio": "bench/123", "audioEnabled": True}}], "ai": {"enabled": False}}},
    separators=(",", ":"))
"""A one-user ``roomState`` message, as a ``userUpdate``'s entry carries it."""


@dataclass(frozen=True, slots=True)
class PlainDelivery:
    """:class:`~actors.wire.Delivery`'s fields in a dataclass without its
    ``__reduce__``: what Ray pickled before (entries of :class:`OutboxEntry`)."""

    cursor: int
    entries: tuple[OutboxEntry, ...] = field(default_factory=tuple)
    gap: bool = False
    hibernating: bool = False
    epoch: int = 0


def cost(value: Any, calls: int) -> tuple[float, float]:
    """(us of Ray's ``serialize`` of ``value``, us of ``ray.get`` of a ``ray.put`` of
    it), each the mean over ``calls``. Needs ``ray.init``."""
    from ray._private.worker import global_worker  # Ray's serializer, as a call uses it

    context = global_worker.get_serialization_context()
    sent = timeit.timeit(lambda: context.serialize(value), number=calls) / calls * 1e6
    ref = ray.put(value)
    got = timeit.timeit(lambda: ray.get(ref), number=calls) / calls * 1e6
    if ray.get(ref) != value:
        raise AssertionError(f"{type(value).__name__} did not cross whole")
    return sent, got


def main() -> None:
    """Run the comparison and print it (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16,
                        help="frames in a call (the pipelined benchmark sends ~16)")
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    # the class by its module's name, as Ray pickles an importable class (run as
    # __main__, this module's own classes would be pickled by value, whole)
    from benchmarks.wirecost import PlainDelivery as plain

    n = args.frames
    frames = [Frame("c", update("c", k), "socket-1", k) for k in range(n)]
    entries = tuple(OutboxEntry(k, "all", None, ROOM_STATE) for k in range(n))
    rows = [
        ("an integer (the floor's reply)", 100),
        (f"{n} frames, frames_wire (lists: msgpack)", frames_wire(frames)),
        (f"{n} frames as Frame named tuples (before)", frames),
        (f"a Delivery of {n} entries (__reduce__)", Delivery(100 + n, entries, epoch=3)),
        (f"the same as a plain dataclass (before)", plain(100 + n, entries, epoch=3)),
    ]
    results = {}
    for name, value in rows:
        results[name] = cost(value, args.calls)
        progress(f"  {name}: {results[name][0]:.1f} + {results[name][1]:.1f} us")
    _, base = results[rows[0][0]]
    print(f"\nRay's serializer, us a call ({n} frames; 'rebuild' is ray.get's time over "
          f"the integer's {base:.1f} us):")
    print(f"  {'':46s}{'serialize':>11s}{'rebuild':>9s}{'both':>8s}")
    for name, _ in rows:
        sent, got = results[name]
        print(f"  {name:46s}{sent:11.1f}{got - base:9.1f}{sent + got - base:8.1f}")
    now = sum(results[rows[i][0]][0] + results[rows[i][0]][1] - base for i in (1, 3))
    before = sum(results[rows[i][0]][0] + results[rows[i][0]][1] - base for i in (2, 4))
    print(f"  a deliver call's frames and result: {now:.0f} us now, {before:.0f} us as "
          f"before ({(before - now) / n:.1f} us a frame saved)")
    ray.shutdown()


if __name__ == "__main__":
    main()
