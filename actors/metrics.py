"""Room metrics, exported through Ray's metrics pipeline (``ray.util.metrics``).

Ray exports these from every worker process to the node's metrics agent; Prometheus
scrapes them (names get Ray's ``ray_`` prefix, counters a ``_total`` suffix, and every
series a ``WorkerId`` label, so sum a gauge over workers for the cluster's total):

=====================================  =========  ==========================================
metric                                 kind       meaning (tags)
=====================================  =========  ==========================================
``rooms_active``                       gauge      rooms live in this process
``rooms_messages``                     counter    turns handled, by ``type`` (a client
                                                  message type, ``connect``, ``close``,
                                                  ``alarm``, ``ai``, ``start``, ``invalid``
                                                  or ``other``)
``rooms_turn_seconds``                 histogram  a turn's latency (gate to durable), s
``rooms_snapshot_bytes``               histogram  size of a saved snapshot, bytes
``rooms_snapshot_save_seconds``        histogram  latency of one snapshot save, s
``rooms_hibernations``                 counter    rooms that hibernated
``rooms_shed``                         counter    rooms hibernated to free a slot at the
                                                  ``room_slot`` bound (in the creator)
``rooms_activations``                  counter    room activations (start, restart, wake)
``rooms_ai_sessions_active``           gauge      rooms in this process with the AI enabled
``rooms_ai_errors``                    counter    AI failures, by ``step`` (e.g.
                                                  ``calls sessions/new``, ``openai
                                                  realtime/calls``, ``configuration``)
=====================================  =========  ==========================================

The metric objects are created lazily, once per process, the first time a function here
is called inside a Ray worker or driver (``ray.is_initialized()``); outside Ray every
function is a no-op, so the plain :class:`actors.room_actor.RoomActor` works in unit
tests. Tag values come from fixed sets (unknown values count as ``other``), so a client
cannot grow the number of series, and each tagged series is its own metric object with
its tags set once, so the per-turn cost is two metric records and no allocation.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

__all__ = [
    "AI_STEPS",
    "MESSAGE_TYPES",
    "ai_error",
    "ai_session",
    "process_facts",
    "room_activated",
    "room_hibernated",
    "room_shed",
    "room_stopped",
    "snapshot_saved",
    "turn",
]

MESSAGE_TYPES: tuple[str, ...] = (
    # client messages (docs/protocol.md)
    "userUpdate", "directMessage", "muteUser", "userLeft", "heartbeat", "partyserver-ping",
    "enableAi", "disableAi", "requestAiControl", "relinquishAiControl",
    "relenquishAiControl", "callsApiHistoryEntry", "e2eeMlsMessage",
    # the actor's other turns
    "connect", "close", "alarm", "ai", "start",
    # a client frame that did not parse, and anything not listed
    "invalid", "other",
)
"""The values of the ``type`` tag of ``rooms_messages``."""

AI_STEPS: tuple[str, ...] = (
    "calls sessions/new", "calls tracks/new", "openai realtime/calls", "calls renegotiate",
    "calls tracks/close", "openai hangup", "configuration", "interrupted", "other",
)
"""The values of the ``step`` tag of ``rooms_ai_errors``."""

_LATENCY_BOUNDARIES = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                       0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
_SIZE_BOUNDARIES = [256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0,
                    4194304.0]


class _Metrics:
    """The process's metric objects (built once, inside Ray)."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        self.rooms_active = Gauge("rooms_active", "rooms live in this process")
        self.by_type = {
            t: Counter("rooms_messages", "turns handled by a room, by message type",
                       tag_keys=("type",)).set_default_tags({"type": t})
            for t in MESSAGE_TYPES
        }
        self.other_type = self.by_type["other"]
        self.turn_seconds = Histogram(
            "rooms_turn_seconds", "latency of one room turn until its snapshot is durable, "
            "seconds", boundaries=_LATENCY_BOUNDARIES)
        self.snapshot_bytes = Histogram(
            "rooms_snapshot_bytes", "size of a saved room snapshot, bytes",
            boundaries=_SIZE_BOUNDARIES)
        self.save_seconds = Histogram(
            "rooms_snapshot_save_seconds", "latency of one snapshot save, seconds",
            boundaries=_LATENCY_BOUNDARIES)
        self.hibernations = Counter("rooms_hibernations", "rooms that hibernated")
        self.shed = Counter("rooms_shed", "rooms hibernated to free a slot at the bound")
        self.activations = Counter("rooms_activations",
                                   "room activations (first start, restart, wake)")
        self.ai_active = Gauge("rooms_ai_sessions_active",
                               "rooms in this process with the AI enabled")
        self.ai_errors = {
            s: Counter("rooms_ai_errors", "AI failures by step",
                       tag_keys=("step",)).set_default_tags({"step": s})
            for s in AI_STEPS
        }
        self.other_step = self.ai_errors["other"]
        self.live: set[str] = set()
        self.ai_live: set[str] = set()


_metrics: _Metrics | None = None
_lock = threading.Lock()


def _get() -> _Metrics | None:
    """Return the process's metrics, building them on first use inside Ray; ``None``
    outside Ray."""
    global _metrics
    if _metrics is not None:
        return _metrics
    ray = sys.modules.get("ray")  # not imported: this process cannot be in Ray
    if ray is None or not ray.is_initialized():
        return None
    with _lock:
        if _metrics is None:
            _metrics = _Metrics()
    return _metrics


def turn(kind: str, seconds: float) -> None:
    """Count one turn of type ``kind`` and record its latency.

    Args:
        kind: a value of :data:`MESSAGE_TYPES` (anything else counts as ``other``).
        seconds: the turn's latency in seconds (from entering the input gate to its
            snapshot being durable).
    """
    m = _metrics or _get()
    if m is None:
        return
    (m.by_type.get(kind) or m.other_type).inc()
    m.turn_seconds.observe(seconds)


def snapshot_saved(size_bytes: int, seconds: float) -> None:
    """Record one snapshot save: its size in bytes and its latency in seconds."""
    m = _metrics or _get()
    if m is None:
        return
    m.snapshot_bytes.observe(size_bytes)
    m.save_seconds.observe(seconds)


def room_activated(room_id: str) -> None:
    """Count an activation of room ``room_id`` (first start, Ray restart or wake from
    hibernation) and count the room as live in this process."""
    m = _metrics or _get()
    if m is None:
        return
    m.activations.inc()
    m.live.add(room_id)
    m.rooms_active.set(len(m.live))


def room_hibernated(room_id: str) -> None:
    """Count a hibernation of room ``room_id`` and stop counting it as live."""
    m = _metrics or _get()
    if m is None:
        return
    m.hibernations.inc()
    room_stopped(room_id)


def room_shed(room_id: str) -> None:
    """Count a room hibernated to free a slot (counted where the shedding was decided)."""
    m = _metrics or _get()
    if m is not None:
        m.shed.inc()


def room_stopped(room_id: str) -> None:
    """Room ``room_id`` is no longer live in this process (hibernated, fenced, exiting);
    it no longer counts as active nor as having an AI session. Idempotent."""
    m = _metrics or _get()
    if m is None:
        return
    m.live.discard(room_id)
    m.rooms_active.set(len(m.live))
    if room_id in m.ai_live:
        m.ai_live.discard(room_id)
        m.ai_active.set(len(m.ai_live))


def ai_session(room_id: str, active: bool) -> None:
    """Record whether room ``room_id`` has an AI session (``ai.enabled``). Idempotent:
    call it after any turn that may have changed the AI state."""
    m = _metrics or _get()
    if m is None:
        return
    if active:
        if room_id not in m.ai_live:
            m.ai_live.add(room_id)
            m.ai_active.set(len(m.ai_live))
    elif room_id in m.ai_live:
        m.ai_live.discard(room_id)
        m.ai_active.set(len(m.ai_live))


def ai_error(step_or_error: str) -> None:
    """Count one AI failure.

    Args:
        step_or_error: the failed step (a value of :data:`AI_STEPS`) or an AI error
            string ``"<step>: <cause>"`` as :mod:`rooms.ai` writes it; the step is the
            part before the first ``": "``. Unknown steps count as ``other``.
    """
    m = _metrics or _get()
    if m is None:
        return
    step = step_or_error.partition(": ")[0]
    (m.ai_errors.get(step) or m.other_step).inc()


def process_facts() -> dict[str, Any]:
    """Return this process's live-room facts (for tests and ``info()``):
    ``{"enabled": bool, "rooms_active": int, "ai_sessions_active": int}``."""
    m = _metrics or _get()
    if m is None:
        return {"enabled": False, "rooms_active": 0, "ai_sessions_active": 0}
    return {"enabled": True, "rooms_active": len(m.live), "ai_sessions_active": len(m.ai_live)}
