"""The system's metrics, recorded in every process and exported from one.

Ray's metrics API (``ray.util.metrics``) exports a metric from the worker process that
records it, and every series it exports carries that process's ``WorkerId`` label. A
room is a worker process of its own, so a room metric recorded in the room would have
as many series as there have been room processes (they grow with rooms and churn with
hibernation and restarts). So nothing here records a Ray metric in a room or a gateway
replica: each process adds to a small in-process tally (a dictionary increment per
event, no Ray call), and a daemon thread sends the tally every ``ROOMS_METRICS_FLUSH_S``
seconds (default 5) as one :class:`~actors.wire.MetricsReport` to the cluster's
metrics sink (:mod:`actors.metrics_sink`), the one process that records them through
Ray's API. Every series then has the sink's labels, and the only other labels are the
catalogue's tags, each from a fixed set of values (unknown values count as
``other``): no label grows with rooms, connections or processes.

What that costs: the counts of the last ``ROOMS_METRICS_FLUSH_S`` seconds of a process
that is SIGKILLed are lost with it; a histogram's ``_sum`` counts each observation at
its bucket's midpoint (the buckets and so every quantile are exact); a gauge is the sum
of the latest value of every process heard from within three flush periods.

The metrics are :data:`~actors.metrics_catalogue.CATALOGUE` (``python -m
actors.metrics_catalogue`` prints them as a table); Prometheus names carry Ray's
``ray_`` prefix, and counters a ``_total`` suffix.

Outside Ray (no ``ray`` imported, or not initialised) every function here is a no-op.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from .metrics_catalogue import (AI_STEPS, CATALOGUE, CLOSE_CODES, MESSAGE_TYPES,
                                PARTYTRACKS_OPS, REFUSALS, STAGES, MetricDef,
                                MetricsSettings, table)

__all__ = [
    "AI_STEPS", "CATALOGUE", "CLOSE_CODES", "MESSAGE_TYPES", "PARTYTRACKS_OPS",
    "REFUSALS", "STAGES", "MetricDef", "MetricsSettings", "ai_error", "ai_session", "closed", "deliver",
    "flush", "flush_before_exit", "frame_in", "frame_out", "gauge", "message_type", "partytracks",
    "process_facts", "refused", "room_activated", "room_hibernated", "room_shed",
    "room_stopped", "snapshot_saved", "stage", "table", "turn",
]

log = logging.getLogger("ray_rooms.metrics")

# ---- the process's tally ---------------------------------------------------------------

def _bucket(boundaries: tuple[float, ...], value: float) -> int:
    for i, bound in enumerate(boundaries):
        if value <= bound:
            return i
    return len(boundaries)


def _value(allowed: tuple[str, ...], value: str) -> str:
    return value if value in allowed else "other"


class _Tally:
    """What this process has recorded since its last report (guarded by ``lock``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process = uuid.uuid4().hex[:12]
        self.counters: dict[tuple[str, tuple[str, ...]], float] = defaultdict(float)
        self.histograms: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        self.gauges: dict[tuple[str, tuple[str, ...]], float] = {}
        self.live: set[str] = set()
        self.ai_live: set[str] = set()
        self.flusher: threading.Thread | None = None
        self.sink: Any = None

    def count(self, name: str, tags: tuple[str, ...] = (), by: float = 1.0) -> None:
        """Add ``by`` to counter ``name`` with ``tags`` until the next flush."""
        with self.lock:
            self.counters[(name, tags)] += by

    def observe(self, name: str, value: float, tags: tuple[str, ...] = ()) -> None:
        """Count ``value`` in histogram ``name``'s bucket (its catalogue boundaries)
        with ``tags`` until the next flush; raises ``KeyError`` for a name not in
        :data:`CATALOGUE`."""
        bounds = CATALOGUE[name].boundaries
        with self.lock:
            counts = self.histograms.get((name, tags))
            if counts is None:
                counts = self.histograms[(name, tags)] = [0] * (len(bounds) + 1)
            counts[_bucket(bounds, value)] += 1

    def take(self) -> "Any":
        """The report of what was recorded since the last one (and reset)."""
        from .wire import MetricsReport

        with self.lock:
            gauges = dict(self.gauges)
            gauges[("rooms_active", ())] = float(len(self.live))
            gauges[("rooms_ai_sessions_active", ())] = float(len(self.ai_live))
            report = MetricsReport(process=self.process, counters=dict(self.counters),
                                   histograms=self.histograms, gauges=gauges)
            self.counters = defaultdict(float)
            self.histograms = {}
        return report


_tally: _Tally | None = None
_lock = threading.Lock()


def _get() -> _Tally | None:
    """The process's tally, started (with its flusher thread) on first use inside Ray;
    ``None`` outside Ray."""
    global _tally
    if _tally is not None:
        return _tally
    ray = sys.modules.get("ray")  # not imported: this process cannot be in Ray
    if ray is None or not ray.is_initialized():
        return None
    with _lock:
        if _tally is None:
            tally = _Tally()
            tally.flusher = threading.Thread(target=_flush_forever, args=(tally,),
                                             name="rooms-metrics", daemon=True)
            tally.flusher.start()
            atexit.register(_flush_quietly, tally)
            _tally = tally
    return _tally


def _send(tally: _Tally, wait_s: float | None) -> None:
    import ray

    from .metrics_sink import ensure_sink

    report = tally.take()
    if tally.sink is None:
        tally.sink = ensure_sink()
    ref = tally.sink.report.remote(report)
    if wait_s is not None:
        ray.wait([ref], timeout=wait_s)  # recorded (or failed: the next report retries)


def _flush_quietly(tally: _Tally, wait_s: float | None = None) -> None:
    try:
        _send(tally, wait_s)
    except Exception as error:  # noqa: BLE001 - the sink is restarting: next time
        tally.sink = None
        log.debug("metrics report failed (%s)", type(error).__name__)


def _flush_forever(tally: _Tally) -> None:
    period = MetricsSettings().flush_s
    while True:
        time.sleep(period)
        _flush_quietly(tally)


def flush(wait_s: float | None = 30.0) -> None:
    """Send this process's tally to the sink now (tests; a room about to leave its
    process, so that a short-lived room's counts are not lost). A no-op outside Ray.

    Args:
        wait_s: seconds to wait until the sink has recorded it (``None``: do not wait).

    Raises:
        ray.exceptions.RayError: the sink could not be reached or failed.
    """
    tally = _get()
    if tally is not None:
        _send(tally, wait_s)


def flush_before_exit() -> None:
    """:func:`flush`, waiting at most a second and raising nothing (the process is
    about to exit: a room hibernating, fenced or stopped)."""
    tally = _tally
    if tally is not None:
        _flush_quietly(tally, 1.0)


# ---- what rooms record ------------------------------------------------------------------

def turn(kind: str, seconds: float) -> None:
    """Count one turn of type ``kind`` and record its latency.

    Args:
        kind: a value of :data:`MESSAGE_TYPES` (anything else counts as ``other``).
        seconds: the turn's latency in seconds (from entering the input gate to its
            snapshot being durable).
    """
    t = _tally or _get()
    if t is not None:
        t.count("rooms_messages", (_value(MESSAGE_TYPES, kind),))
        t.observe("rooms_turn_seconds", seconds)


def snapshot_saved(size_bytes: int, seconds: float) -> None:
    """Record one snapshot save: its size in bytes and its latency in seconds."""
    t = _tally or _get()
    if t is not None:
        t.observe("rooms_snapshot_bytes", float(size_bytes))
        t.observe("rooms_snapshot_save_seconds", seconds)


def room_activated(room_id: str) -> None:
    """Count an activation of room ``room_id`` (first start, Ray restart or wake from
    hibernation) and count the room as live in this process."""
    t = _tally or _get()
    if t is not None:
        t.count("rooms_activations")
        with t.lock:
            t.live.add(room_id)


def room_hibernated(room_id: str) -> None:
    """Count a hibernation of room ``room_id`` and stop counting it as live."""
    t = _tally or _get()
    if t is not None:
        t.count("rooms_hibernations")
        room_stopped(room_id)


def room_shed(room_id: str) -> None:
    """Count a room hibernated to free a slot (counted where the shedding was decided)."""
    t = _tally or _get()
    if t is not None:
        t.count("rooms_shed")


def room_stopped(room_id: str) -> None:
    """Room ``room_id`` is no longer live in this process (hibernated, fenced, exiting);
    it no longer counts as active nor as having an AI session. Idempotent."""
    t = _tally or _get()
    if t is not None:
        with t.lock:
            t.live.discard(room_id)
            t.ai_live.discard(room_id)


def ai_session(room_id: str, active: bool) -> None:
    """Record whether room ``room_id`` has an AI session (``ai.enabled``). Idempotent:
    call it after any turn that may have changed the AI state."""
    t = _tally or _get()
    if t is not None:
        with t.lock:
            (t.ai_live.add if active else t.ai_live.discard)(room_id)


def ai_error(step_or_error: str) -> None:
    """Count one AI failure.

    Args:
        step_or_error: the failed step (a value of :data:`AI_STEPS`) or an AI error
            string ``"<step>: <cause>"`` as :mod:`rooms.ai` writes it; the step is the
            part before the first ``": "``. Unknown steps count as ``other``.
    """
    t = _tally or _get()
    if t is not None:
        t.count("rooms_ai_errors", (_value(AI_STEPS, step_or_error.partition(": ")[0]),))


def process_facts() -> dict[str, Any]:
    """Return this process's live-room facts (for tests and ``info()``):
    ``{"enabled": bool, "rooms_active": int, "ai_sessions_active": int}``."""
    t = _tally or _get()
    if t is None:
        return {"enabled": False, "rooms_active": 0, "ai_sessions_active": 0}
    with t.lock:
        return {"enabled": True, "rooms_active": len(t.live),
                "ai_sessions_active": len(t.ai_live)}


# ---- what gateway replicas record --------------------------------------------------------

def message_type(data: str | bytes) -> str:
    """The ``type`` tag of a frame: the value of its first ``"type":"..."`` within
    its first 200 characters when that is a known type, ``other`` for an unknown one,
    ``invalid`` when there is none (binary frames too). Does not parse the frame."""
    if not isinstance(data, str):
        return "invalid"
    head = data[:200]
    at = head.find('"type"')
    if at < 0:
        return "invalid"
    start = head.find('"', head.find(":", at + 6) + 1)
    end = head.find('"', start + 1)
    if start < 0 or end < 0:
        return "invalid"
    return _value(MESSAGE_TYPES, head[start + 1:end])


def frame_in(data: str | bytes) -> None:
    """Count one client frame handed to its room (by :func:`message_type`)."""
    t = _tally or _get()
    if t is not None:
        t.count("rooms_gateway_frames_in", (message_type(data),))


def frame_out(data: str) -> None:
    """Count one frame written to a client (by :func:`message_type`)."""
    t = _tally or _get()
    if t is not None:
        t.count("rooms_gateway_frames_out", (message_type(data),))


def refused(reason: str) -> None:
    """Count one refused frame or handshake; ``reason`` is a value of
    :data:`REFUSALS` (anything else counts as ``other``)."""
    t = _tally or _get()
    if t is not None:
        t.count("rooms_gateway_frames_refused", (_value(REFUSALS, reason),))


def closed(code: int) -> None:
    """Count one WebSocket closed with ``code`` (see :data:`CLOSE_CODES`)."""
    t = _tally or _get()
    if t is not None:
        t.count("rooms_gateway_closes", (_value(CLOSE_CODES, str(code)),))


def deliver(seconds: float, frames: int) -> None:
    """Record one ``deliver`` call: its latency in seconds and its batch size."""
    t = _tally or _get()
    if t is not None:
        t.observe("rooms_gateway_deliver_seconds", seconds)
        t.observe("rooms_gateway_batch_frames", float(frames))
        t.observe("rooms_gateway_stage_seconds", seconds, ("deliver",))


def stage(name: str, seconds: float) -> None:
    """Record ``seconds`` a frame spent in gateway stage ``name`` (:data:`STAGES`)."""
    t = _tally or _get()
    if t is not None:
        t.observe("rooms_gateway_stage_seconds", seconds, (_value(STAGES, name),))


def partytracks(operation: str, status: int | None, seconds: float) -> None:
    """Record one ``/partytracks`` request to the Calls API.

    Args:
        operation: a value of :data:`PARTYTRACKS_OPS` (else ``other``).
        status: the HTTP status the API answered, ``None`` when it did not answer.
        seconds: the request's latency.
    """
    t = _tally or _get()
    if t is not None:
        op = _value(PARTYTRACKS_OPS, operation)
        klass = "error" if status is None else f"{min(max(status // 100, 2), 5)}xx"
        t.count("rooms_gateway_partytracks_requests", (op, klass))
        t.observe("rooms_gateway_partytracks_seconds", seconds, (op,))


def gauge(name: str, value: float) -> None:
    """Set this process's contribution to gauge ``name`` (e.g. its open sockets)."""
    t = _tally or _get()
    if t is not None:
        with t.lock:
            t.gauges[(name, ())] = float(value)

