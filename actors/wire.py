"""The wire between gateway replicas and room actors, typed once for both sides.

A room releases its messages into a sequenced outbox (:mod:`actors.outbox`); a gateway
replica receives them as :class:`OutboxEntry` values, either in the result of the
``RoomActor.deliver`` call that carried its frames or through its long-poll
(``RoomActor.poll``). Both calls return a :class:`Delivery`; a snapshot stores entries
with :meth:`OutboxEntry.record`.

What crosses between processes is kept to what Ray serializes cheaply, since every
frame and every message crosses twice: a batch of :class:`Frame` goes as a list of lists
(:func:`frames_wire`: msgpack, which Ray packs without pickling), and a
:class:`Delivery` pickles its entries as plain tuples (:meth:`Delivery.__reduce__`).
Pickled as they are, a 16-frame batch and its result cost Ray 133-171 us to send and
rebuild, against 28-42 us so (~7 us a frame, both sides together; ``python -m
benchmarks.wirecost``). The gateway's hot call goes further
(``RoomActor.deliver_wire``): its four arguments cross as one list
(:func:`deliver_call`; Ray serializes and rebuilds every argument on its own, ~20 us
each on each side), and its result as lists (:meth:`Delivery.wire`, rebuilt with
:meth:`Delivery.from_wire`), so that neither side pickles anything. The long-poll does
the same (``RoomActor.poll_wire``, :func:`poll_call`).

The one rule of who receives an entry is :meth:`OutboxEntry.reaches`; the gateway (fan
out to its sockets), the room (what a reconnect is owed) and the CLI (which replies
``rooms send`` prints) all use it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal, Mapping, NamedTuple, Sequence, TypeVar

__all__ = ["Activity", "AiFacts", "Delivery", "Frame", "MetricsReport", "OutboxEntry",
           "Placement", "Recipients", "RoomInfo", "deliver_call", "frames_wire", "poll_call"]

T = TypeVar("T")

Recipients = Literal["one", "all", "except"]
"""Who an entry is for, with its ``conn``: that connection only, everyone, or everyone
but that connection."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One released message of a room, or a close of one connection.

    Attributes:
        seq: the room's outbox sequence number (consecutive, kept across activations).
        to: ``"one"``, ``"all"`` or ``"except"`` (see :data:`Recipients`).
        conn: the connection ``to`` refers to (``None`` with ``"all"``).
        data: the message as JSON text, or ``None`` for a close alone.
        close: ``(code, reason)`` to close ``conn``'s sockets with after ``data``, or
            ``None``.
    """

    seq: int
    to: Recipients
    conn: str | None = None
    data: str | None = None
    close: tuple[int, str] | None = None

    def reaches(self, conn: str) -> bool:
        """Whether connection ``conn`` receives this entry's ``data``."""
        if self.to == "all":
            return True
        if self.to == "one":
            return conn == self.conn
        return conn != self.conn

    def pick(self, by_conn: Mapping[str, Iterable[T]]) -> list[T]:
        """Return the items (sockets) of the connections this entry reaches, from a map
        of connection id to items (the rule of :meth:`reaches`, without a scan for
        ``"one"``)."""
        if self.to == "one":
            return list(by_conn.get(self.conn, ())) if self.conn is not None else []
        return [item for conn, items in by_conn.items() if self.reaches(conn)
                for item in items]

    def record(self) -> dict[str, Any]:
        """Return the entry as a msgpack/JSON-friendly dict (for snapshots)."""
        return {"seq": self.seq, "to": self.to, "conn": self.conn, "data": self.data,
                "close": list(self.close) if self.close else None}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "OutboxEntry":
        """Rebuild an entry from :meth:`record`'s dict.

        Raises:
            KeyError, TypeError, ValueError: the dict is not such a record.
        """
        close = record.get("close")
        return cls(seq=int(record["seq"]), to=record["to"], conn=record.get("conn"),
                   data=record.get("data"),
                   close=(int(close[0]), str(close[1])) if close else None)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What ``RoomActor.poll`` and ``RoomActor.deliver`` return to a gateway replica.

    Attributes:
        cursor: the sequence number the caller holds after taking ``entries`` (with no
            entries: the room's newest released sequence number, or the caller's own).
        entries: released entries after the caller's cursor, in sequence order.
        gap: entries after the caller's cursor are no longer in the outbox (or the
            cursor is ahead of the room's): the caller resends ``roomState``.
        hibernating: the room is going to sleep; stop polling until a frame
            reactivates it.
        epoch: the epoch of the activation that answered (each activation claims a
            higher one; 0: not known). A caller that sees it grow knows that the room
            restarted, and that a call it sent to the previous activation will not be
            answered (see :meth:`actors.gateway.room_ref.RoomRef.wait`).
    """

    cursor: int
    entries: tuple[OutboxEntry, ...] = field(default_factory=tuple)
    gap: bool = False
    hibernating: bool = False
    epoch: int = 0

    def __reduce__(self) -> tuple[Any, tuple]:
        """Pickle as :func:`_delivery` of plain values: the entries as tuples of their
        fields. A frozen slotted dataclass pickles through Python-level
        ``__getstate__``/``__setstate__`` per entry: ~5 us an entry to send and
        rebuild, against ~1.5-2 us so (``python -m benchmarks.wirecost``)."""
        return (_delivery, (self.cursor, tuple([(e.seq, e.to, e.conn, e.data, e.close)
                                                for e in self.entries]),
                            self.gap, self.hibernating, self.epoch))

    def wire(self) -> list[Any]:
        """This delivery as plain lists, which Ray packs with msgpack and rebuilds with
        no pickling: ``[cursor, entries, gap, hibernating, epoch]``, each entry
        ``[seq, to, conn, data, close]`` with ``close`` a ``[code, reason]`` list or
        ``None``. Rebuilt by :meth:`from_wire`."""
        return [self.cursor, [[e.seq, e.to, e.conn, e.data,
                               [e.close[0], e.close[1]] if e.close else None]
                              for e in self.entries],
                self.gap, self.hibernating, self.epoch]

    @classmethod
    def from_wire(cls, value: Sequence[Any]) -> "Delivery":
        """Rebuild a delivery from :meth:`wire`'s lists (or tuples).

        Raises:
            TypeError, ValueError: ``value`` is not such a list.
        """
        cursor, entries, gap, hibernating, epoch = value
        return cls(cursor, tuple([OutboxEntry(seq, to, conn, data,
                                              (close[0], close[1]) if close else None)
                                  for seq, to, conn, data, close in entries]),
                   gap, hibernating, epoch)


def _delivery(cursor: int, entries: tuple[tuple, ...], gap: bool, hibernating: bool,
              epoch: int) -> Delivery:
    """Rebuild a :class:`Delivery` from :meth:`Delivery.__reduce__`'s values."""
    return Delivery(cursor, tuple([OutboxEntry(*entry) for entry in entries]), gap,
                    hibernating, epoch)


class Frame(NamedTuple):
    """One client frame as a replica sends it to ``RoomActor.deliver``.

    Attributes:
        conn: the connection id the frame is from.
        data: the frame as the socket received it (JSON text, or bytes).
        socket: the id of the socket that received it (``None``: not deduplicated).
        number: the frame's number among ``socket``'s frames, from 1 (``None``: not
            deduplicated). A numbered frame is applied once (:mod:`actors.applied`).
        trace: the W3C ``traceparent`` of the frame's gateway span, when tracing is on
            (:mod:`actors.tracing`), else ``None``.
    """

    conn: str
    data: str | bytes
    socket: str | None = None
    number: int | None = None
    trace: str | None = None


def frames_wire(frames: Iterable[Frame]) -> list[list[Any]]:
    """``frames`` as ``RoomActor.deliver`` takes them across Ray: each a list of its
    fields in :class:`Frame`'s order. Ray packs lists of strings, bytes, integers and
    ``None`` with msgpack and pickles anything else (a tuple, a named tuple) through
    cloudpickle, ~3-5 us a frame dearer to send and rebuild (``python -m
    benchmarks.wirecost``); the room reads either form (``Frame(*fields)``). A text
    msgpack cannot encode (a lone surrogate) still crosses: Ray then pickles the whole
    value."""
    return [list(frame) for frame in frames]


def deliver_call(frames: Iterable[Frame], cursor: int | None, poller: str | None,
                 written: int | None) -> list[Any]:
    """The arguments of ``RoomActor.deliver`` as the one list ``RoomActor.deliver_wire``
    takes: ``[frames_wire(frames), cursor, poller, written]`` (see :func:`frames_wire`).
    Ray serializes and rebuilds each argument of a call on its own: one list of four
    costs both sides less than four arguments (``python -m benchmarks.wirecost``)."""
    return [frames_wire(frames), cursor, poller, written]


def poll_call(cursor: int | None, timeout: float | None, poller: str | None,
              written: int | None) -> list[Any]:
    """The arguments of ``RoomActor.poll`` as the one list ``RoomActor.poll_wire``
    takes: ``[cursor, timeout, poller, written]`` (one argument costs Ray less than
    four, as for :func:`deliver_call`)."""
    return [cursor, timeout, poller, written]


@dataclass(frozen=True, slots=True)
class AiFacts:
    """The room's AI agent as :class:`RoomInfo` reports it.

    Attributes:
        enabled: the AI is enabled.
        connectionPending: the job that brings it into the call is under way.
        controllingUser: the user id that controls it, or ``None``.
        error: the last AI error's public text, or ``None``.
        sideband: the state of the room's sideband to the AI's live session
            (:class:`rooms.sideband.SidebandState` value), or ``None`` without one.
        sideband_attaches: how many times this activation's sideband attached.
        transcript_lines: the transcript lines the room's state holds.
    """

    enabled: bool = False
    connectionPending: bool = False
    controllingUser: str | None = None
    error: str | None = None
    sideband: str | None = None
    sideband_attaches: int = 0
    transcript_lines: int = 0


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """Operator facts of one room's activation (``RoomActor.info``). No secrets.

    Attributes:
        room: the room id.
        lifecycle: the activation's lifecycle (``"active"``, ...).
        epoch: the epoch this activation claimed.
        seq: the newest outbox sequence number handed out.
        durable_version: the newest turn version whose snapshot is durable.
        connections: connections in the room state.
        users: users in the room state.
        meetingId: the meeting's id, or ``None`` when nobody is in it.
        peakUserCount: the most users at once in this meeting.
        alarmAt: the room's alarm (UNIX seconds), or ``None``.
        ai: the AI agent's facts.
        jobs: background (AI) jobs under way.
        pid: the worker process's id (operators only; never in a client response).
        recent_save_s: durations (seconds) of the newest snapshot saves (at most 1024).
        turns: turns this activation ran.
        saves: snapshots this activation saved.
        duplicate_frames: numbered frames skipped as already applied.
        activated_at: when the activation finished (UNIX seconds; 0: not yet).
        last_save_s: the newest save's duration (seconds), or ``None``.
        snapshot_bytes: the newest snapshot's size (bytes), or ``None``.
        lane_calls: ``deliver`` and ``poll`` calls this activation answered over its
            lane (:mod:`actors.lane`) rather than as Ray calls.
    """

    room: str
    lifecycle: str
    epoch: int
    seq: int
    durable_version: int
    connections: int
    users: int
    meetingId: str | None
    peakUserCount: int
    alarmAt: float | None
    ai: AiFacts
    jobs: int
    pid: int
    recent_save_s: tuple[float, ...] = ()
    turns: int = 0
    saves: int = 0
    duplicate_frames: int = 0
    activated_at: float = 0.0
    last_save_s: float | None = None
    snapshot_bytes: int | None = None
    lane_calls: int = 0

    def record(self) -> dict[str, Any]:
        """Return the facts as a JSON-friendly dict (what ``rooms show`` prints)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Transcript:
    """One meeting's AI transcript (``RoomActor.transcript``).

    Attributes:
        room: the room id.
        meetingId: the meeting the lines belong to (the current one, else the last one
            with a transcript), or ``None`` when there is none.
        lines: ``{id, speaker, name, text, at}`` objects, oldest first (``at`` in UNIX
            seconds).
    """

    room: str
    meetingId: str | None
    lines: tuple[dict[str, Any], ...]

    def record(self) -> dict[str, Any]:
        """The transcript as JSON-friendly dict (what the HTTP route and the CLI give)."""
        return {"room": self.room, "meetingId": self.meetingId, "lines": list(self.lines)}


@dataclass(frozen=True, slots=True)
class Activity:
    """How busy a room is (``RoomActor.activity``, for shedding at the slot bound).

    Attributes:
        room: the room id.
        idle_s: seconds since its last turn other than its own alarm.
        jobs: background (AI) jobs under way.
        lifecycle: the activation's lifecycle (``"active"``, ...).
        ai: the room's AI is enabled or being enabled (its live session would end with
            the room: never shed).
    """

    room: str
    idle_s: float
    jobs: int
    lifecycle: str
    ai: bool = False


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a room's actor runs (``RoomActor.where``).

    Attributes:
        node_id: the Ray node id (hex), or ``None`` outside Ray.
        pid: the worker process's id.
        lifecycle: the activation's lifecycle.
        preloaded_at: when its worker imported the room runtime (UNIX seconds; a warm
            worker: before the room was asked for), or ``None``.
    """

    node_id: str | None
    pid: int
    lifecycle: str
    preloaded_at: float | None = None


MetricKey = tuple[str, tuple[str, ...]]
"""A metric's name and its tag values, in the order of its catalogue entry's tags."""


@dataclass(frozen=True, slots=True)
class MetricsReport:
    """What one process recorded since its previous report (:mod:`actors.metrics`), as
    it sends it to the metrics sink (:mod:`actors.metrics_sink`).

    Attributes:
        process: an id of the reporting process (random, per process).
        counters: ``{(name, tags): increment}``.
        histograms: ``{(name, tags): [count per bucket]}``: one count per bucket of
            the metric's boundaries, then the overflow bucket.
        gauges: ``{(name, tags): this process's current value}``.
    """

    process: str
    counters: dict[MetricKey, float] = field(default_factory=dict)
    histograms: dict[MetricKey, list[int]] = field(default_factory=dict)
    gauges: dict[MetricKey, float] = field(default_factory=dict)
