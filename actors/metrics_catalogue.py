"""The catalogue of the system's metrics: every metric's name, kind, help, tags (each
from a fixed set of values) and histogram buckets, and the reporting settings.

:mod:`actors.metrics` records them in every process; :mod:`actors.metrics_sink`
exports them through Ray's metrics API. ``python -m actors.metrics_catalogue`` prints
the Markdown table that docs/operating.md carries (``tests/test_metrics.py`` checks the
two are equal).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "AI_STEPS", "CATALOGUE", "CLOSE_CODES", "MESSAGE_TYPES", "PARTYTRACKS_OPS",
    "REFUSALS", "STAGES", "STATUS_CLASSES", "MetricDef", "MetricsSettings", "table",
]

MESSAGE_TYPES: tuple[str, ...] = (
    # client messages (docs/protocol.md)
    "userUpdate", "directMessage", "muteUser", "userLeft", "heartbeat", "partyserver-ping",
    "enableAi", "disableAi", "requestAiControl", "relinquishAiControl",
    "relenquishAiControl", "callsApiHistoryEntry", "e2eeMlsMessage",
    # what rooms send (besides replies of the types above)
    "roomState", "error", "partyserver-pong", "aiControl",
    # the actor's other turns
    "connect", "close", "alarm", "ai", "start",
    # a client frame that did not parse, and anything not listed
    "invalid", "other",
)
"""The values of the ``type`` tag."""

AI_STEPS: tuple[str, ...] = (
    "calls sessions/new", "calls tracks/new", "openai realtime/calls", "calls renegotiate",
    "calls tracks/close", "openai hangup", "configuration", "interrupted", "other",
)
"""The values of the ``step`` tag of ``rooms_ai_errors``."""

REFUSALS: tuple[str, ...] = (
    "rate", "size", "abuse", "invalid", "not_owner", "unauthorized", "room_full",
    "quota", "no_slot", "other",
)
"""The values of the ``reason`` tag of ``rooms_gateway_frames_refused``: the gateway's
own limits (``rate``, ``size``, ``abuse``: closed for hammering the limit), and the
handshakes and connects it refused (``invalid`` ids, ``not_owner``, ``unauthorized``,
``room_full``, ``quota``, ``no_slot``)."""

CLOSE_CODES: tuple[str, ...] = (
    "1000", "1001", "1005", "1006", "1008", "1009", "1011", "1012", "1013", "other",
)
"""The values of the ``code`` tag of ``rooms_gateway_closes``."""

STAGES: tuple[str, ...] = ("queue", "deliver", "fanout")
"""The values of the ``stage`` tag of ``rooms_gateway_stage_seconds``: a frame's wait
for its batch, the batch's ``deliver`` call, and the fan-out of its result. The room's
own stages are ``rooms_turn_seconds`` and ``rooms_snapshot_save_seconds``."""

PARTYTRACKS_OPS: tuple[str, ...] = (
    "sessions/new", "tracks/new", "renegotiate", "tracks/close", "session", "ice",
    "other",
)
"""The values of the ``operation`` tag of ``rooms_gateway_partytracks_*``."""

STATUS_CLASSES: tuple[str, ...] = ("2xx", "3xx", "4xx", "5xx", "error")
"""The values of the ``status`` tag (``error``: no HTTP answer)."""

_LATENCY = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0)
_BATCH = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


@dataclass(frozen=True)
class MetricDef:
    """One metric of the catalogue.

    Attributes:
        name: the metric's name as given to Ray (Prometheus adds ``ray_`` before it,
            and ``_total`` after a counter's).
        kind: ``"counter"``, ``"gauge"`` or ``"histogram"``.
        help: what it measures, with its unit.
        tags: ``{tag key: its allowed values}`` (empty: no tag).
        boundaries: a histogram's bucket upper bounds (in its unit).
    """

    name: str
    kind: str
    help: str
    tags: tuple[tuple[str, tuple[str, ...]], ...] = ()
    boundaries: tuple[float, ...] = ()

    @property
    def prometheus(self) -> str:
        """The name Prometheus shows (``ray_...``, counters ``..._total``)."""
        return "ray_" + self.name + ("_total" if self.kind == "counter" else "")


CATALOGUE: dict[str, MetricDef] = {m.name: m for m in (
    # the rooms
    MetricDef("rooms_active", "gauge", "rooms live (activated, not hibernated)"),
    MetricDef("rooms_messages", "counter", "turns handled by rooms, by message type",
              (("type", MESSAGE_TYPES),)),
    MetricDef("rooms_turn_seconds", "histogram",
              "a turn's latency from the input gate until its snapshot is durable, seconds",
              boundaries=_LATENCY),
    MetricDef("rooms_snapshot_bytes", "histogram", "size of a saved snapshot, bytes",
              boundaries=_SIZES),
    MetricDef("rooms_snapshot_save_seconds", "histogram",
              "latency of one snapshot save, seconds", boundaries=_LATENCY),
    MetricDef("rooms_hibernations", "counter", "rooms that hibernated"),
    MetricDef("rooms_shed", "counter", "rooms hibernated to free a slot at the bound"),
    MetricDef("rooms_activations", "counter",
              "room activations (first start, restart, wake)"),
    MetricDef("rooms_ai_sessions_active", "gauge", "rooms with the AI enabled"),
    MetricDef("rooms_ai_errors", "counter", "AI failures, by step",
              (("step", AI_STEPS),)),
    # the gateway
    MetricDef("rooms_gateway_sockets_open", "gauge", "client WebSockets open"),
    MetricDef("rooms_gateway_frames_in", "counter",
              "frames received from clients and handed to rooms, by message type",
              (("type", MESSAGE_TYPES),)),
    MetricDef("rooms_gateway_frames_out", "counter",
              "frames written to clients, by message type", (("type", MESSAGE_TYPES),)),
    MetricDef("rooms_gateway_frames_refused", "counter",
              "frames and handshakes refused, by reason", (("reason", REFUSALS),)),
    MetricDef("rooms_gateway_closes", "counter", "WebSockets closed, by close code",
              (("code", CLOSE_CODES),)),
    MetricDef("rooms_gateway_deliver_seconds", "histogram",
              "latency of one deliver call (a batch to its room and back), seconds",
              boundaries=_LATENCY),
    MetricDef("rooms_gateway_batch_frames", "histogram", "frames per deliver call",
              boundaries=_BATCH),
    MetricDef("rooms_gateway_stage_seconds", "histogram",
              "a frame's time in each gateway stage, seconds", (("stage", STAGES),),
              boundaries=_LATENCY),
    MetricDef("rooms_gateway_partytracks_requests", "counter",
              "/partytracks requests to the Calls API, by operation and status class",
              (("operation", PARTYTRACKS_OPS), ("status", STATUS_CLASSES))),
    MetricDef("rooms_gateway_partytracks_seconds", "histogram",
              "latency of a /partytracks request to the Calls API, seconds",
              (("operation", PARTYTRACKS_OPS),), boundaries=_LATENCY),
)}
"""Every metric the system exports, by name."""


class MetricsSettings(BaseSettings):
    """How processes report their metrics (environment ``ROOMS_METRICS_*``).

    Attributes:
        flush_s: seconds between two reports of a process to the sink.
    """

    model_config = SettingsConfigDict(env_prefix="ROOMS_METRICS_")
    flush_s: float = Field(5.0, gt=0)


def table() -> str:
    """The catalogue as a Markdown table (docs/operating.md carries it; a test checks
    the two are equal)."""
    lines = ["| metric (Prometheus) | kind | meaning | tags |", "|---|---|---|---|"]
    for m in CATALOGUE.values():
        tags = ", ".join(f"`{key}`" for key, _ in m.tags) or "-"
        lines.append(f"| `{m.prometheus}` | {m.kind} | {m.help} | {tags} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
