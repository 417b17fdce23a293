"""What the wire between a gateway replica and a room costs Ray to carry (issue 23: every
frame and every message crosses it once): serialization and deserialization of one
``deliver`` call's frames and of its result, through Ray's own serializer, beside an
integer (what the floor's bare actor returns) in the same run.

    python -m benchmarks.wirecost [--frames 16] [--calls 3000]

For each value it prints the microseconds of Ray's serializer on it
(:func:`actors.seam.ray_serializer`: what the sending process pays, msgpack for lists
of plain values, cloudpickle for anything else, a tuple included) and of rebuilding it
as the receiving process does (msgpack's unpack, or pickle's loads), for:

* the call's arguments as :func:`actors.wire.deliver_call` sends them (one list: what
  the gateway sends ``RoomActor.deliver_wire``); as four arguments, each serialized on
  its own as Ray does (the frames as :func:`actors.wire.frames_wire`'s lists, the
  cursor, the poller id, ``None``: how they went before); and the frames as
  :class:`~actors.wire.Frame` named tuples (how they went first);
* a :class:`~actors.wire.Delivery` of as many ``roomState`` entries as
  :meth:`~actors.wire.Delivery.wire`'s lists (what ``deliver_wire`` returns); as the
  dataclass, pickled through its ``__reduce__`` (entries as plain tuples: what
  ``poll`` returns, and ``deliver`` before); and the same values in a plain frozen
  slotted dataclass without it (how it went first).

A local Ray is started with one CPU and no dashboard; the figures are per call, on one
thread, each the fastest of 10 rounds. Absolute times drift on shared machines; compare
rows of one run.
"""

from __future__ import annotations

import argparse
import json
import pickle
import timeit
from dataclasses import dataclass, field
from typing import Any, Callable

import msgpack
import ray
from ray import cloudpickle

from actors.seam import ray_serializer
from actors.wire import Delivery, Frame, OutboxEntry, deliver_call, frames_wire
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


def rebuilder(value: Any) -> Callable[[], Any]:
    """What the receiving process runs to rebuild ``value`` from what Ray sent: msgpack's
    unpack when Ray packs it with msgpack (its rule, which ``msgpack.packb`` with
    ``strict_types`` follows: exact lists, strings, bytes, integers, ``None``), else
    pickle's loads of its cloudpickle (protocol 5)."""
    try:
        packed = msgpack.packb(value, use_bin_type=True, strict_types=True)
        return lambda: msgpack.unpackb(packed)
    except (TypeError, ValueError):
        pickled = cloudpickle.dumps(value, protocol=5)
        return lambda: pickle.loads(pickled)


def costs(values: list[Any], calls: int, rounds: int = 10) -> list[tuple[float, float]]:
    """For each of ``values``: (us of Ray's serializer on it, us to rebuild it as the
    receiving process does, :func:`rebuilder`), each the fastest mean over ``rounds``
    rounds of ``calls // rounds``. Every round measures every value in turn, so that a
    shared machine's drift falls on all of them alike. Needs ``ray.init``.

    Raises:
        AssertionError: a value does not come back whole through ``ray.put`` and
            ``ray.get``."""
    serialize = ray_serializer()
    n = max(1, calls // rounds)
    for value in values:
        if ray.get(ray.put(value)) != value:
            raise AssertionError(f"{type(value).__name__} did not cross whole")
    rebuilds = [rebuilder(value) for value in values]
    best = [(float("inf"), float("inf"))] * len(values)
    for _ in range(rounds):
        for i, (value, rebuild) in enumerate(zip(values, rebuilds)):
            sent = timeit.timeit(lambda: serialize(value), number=n) / n * 1e6
            got = timeit.timeit(rebuild, number=n) / n * 1e6
            best[i] = (min(best[i][0], sent), min(best[i][1], got))
    return best


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
    delivery = Delivery(100 + n, entries, epoch=3)
    rows = [
        ("an integer (the floor's reply)", 100),
        (f"{n} frames, deliver_call (one list)", deliver_call(frames, 100, "P", None)),
        (f"{n} frames, frames_wire (lists: msgpack)", frames_wire(frames)),
        ("  the cursor (an integer)", 100),
        ("  the poller id", "P"),
        ("  the watermark (None)", None),
        (f"{n} frames as Frame named tuples (first)", frames),
        (f"a Delivery of {n} entries, wire() lists", delivery.wire()),
        ("the same Delivery (__reduce__)", delivery),
        ("the same as a plain dataclass (first)", plain(100 + n, entries, epoch=3)),
    ]
    progress(f"  {len(rows)} values, {args.calls} calls each in 10 rounds...")
    results = dict(zip([name for name, _ in rows],
                       costs([value for _, value in rows], args.calls)))
    print(f"\nWhat the wire costs Ray, us a call ({n} frames):")
    print(f"  {'':46s}{'send':>8s}{'rebuild':>9s}{'both':>8s}")
    for name, _ in rows:
        sent, got = results[name]
        print(f"  {name:46s}{sent:8.1f}{got:9.1f}{sent + got:8.1f}")
    def both(*indices: int) -> float:
        return sum(sum(results[rows[i][0]]) for i in indices)

    now, before, first = both(1, 7), both(2, 3, 4, 5, 8), both(6, 3, 4, 5, 9)
    print(f"  a deliver call's arguments and result: {now:.0f} us now (one list; lists), "
          f"{before:.0f} us before (four arguments; a pickled Delivery), {first:.0f} us "
          f"first (named tuples; a plain dataclass)")
    print("  (Ray also handles each argument of a call on its own outside its "
          "serializer: the task spec, the rebuild's bookkeeping)")
    ray.shutdown()


if __name__ == "__main__":
    main()
