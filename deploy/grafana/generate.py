"""Write ``deploy/grafana/ray-rooms.json``, the Grafana dashboard of ray-rooms' metrics
(:data:`actors.metrics.CATALOGUE`), from the panel list below.

Run ``python deploy/grafana/generate.py`` after changing a panel; ``tests/test_metrics.py``
checks that the committed file is this script's output and that every panel's queries
name catalogue metrics, and ``tests/test_prometheus.py`` runs every query against a
real Prometheus after a scripted meeting.

Every query filters on ``SessionName`` (the dashboard's ``session`` variable, as Ray's
own dashboards do) and aggregates over every other label but the catalogue's tags.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("ray-rooms.json")
S = '{SessionName=~"$session"}'
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _quantiles(metric: str, qs: tuple[float, ...] = (0.5, 0.99)) -> list[tuple[str, str]]:
    return [(f"histogram_quantile({x}, sum by (le) (rate({metric}_bucket{S}"
             f"[$__rate_interval])))", f"p{int(x * 100)}") for x in qs]


def _rate(metric: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{S}[$__rate_interval]))"


def _increase(metric: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (increase({metric}{S}[$__range]))"


PANELS: list[tuple[str, list[tuple[str, str]], str, str]] = [
    # (title, [(query, legend)], unit, description)
    ("Live rooms", [(f"sum(ray_rooms_active{S})", "rooms")], "short",
     "Rooms activated and not hibernated, cluster-wide."),
    ("Rooms with the AI enabled", [(f"sum(ray_rooms_ai_sessions_active{S})", "AI sessions")],
     "short", ""),
    ("Turns per second, by message type",
     [(_rate("ray_rooms_messages_total", "type"), "{{type}}")], "ops", ""),
    ("Turn latency (input gate to durable)", _quantiles("ray_rooms_turn_seconds"), "s", ""),
    ("Snapshot save latency", _quantiles("ray_rooms_snapshot_save_seconds"), "s", ""),
    ("Snapshot size", _quantiles("ray_rooms_snapshot_bytes"), "bytes", ""),
    ("Activations, hibernations and shed rooms",
     [(_increase("ray_rooms_activations_total"), "activations"),
      (_increase("ray_rooms_hibernations_total"), "hibernations"),
      (_increase("ray_rooms_shed_total"), "shed at the slot bound")], "short",
     "Counts over the dashboard's time range."),
    ("AI failures, by step", [(_increase("ray_rooms_ai_errors_total", "step"), "{{step}}")],
     "short", "Counts over the dashboard's time range."),
    ("Open WebSockets", [(f"sum(ray_rooms_gateway_sockets_open{S})", "sockets")], "short", ""),
    ("Frames in per second, by type",
     [(_rate("ray_rooms_gateway_frames_in_total", "type"), "{{type}}")], "ops", ""),
    ("Frames out per second, by type",
     [(_rate("ray_rooms_gateway_frames_out_total", "type"), "{{type}}")], "ops", ""),
    ("Refused frames and handshakes, by reason",
     [(_increase("ray_rooms_gateway_frames_refused_total", "reason"), "{{reason}}")],
     "short", "Counts over the dashboard's time range."),
    ("WebSocket closes, by code",
     [(_increase("ray_rooms_gateway_closes_total", "code"), "{{code}}")], "short",
     "Counts over the dashboard's time range."),
    ("deliver call latency", _quantiles("ray_rooms_gateway_deliver_seconds"), "s", ""),
    ("Frames per deliver call", _quantiles("ray_rooms_gateway_batch_frames"), "short", ""),
    ("Per-frame latency breakdown (p99)",
     [(f"histogram_quantile(0.99, sum by (le, stage) (rate("
       f"ray_rooms_gateway_stage_seconds_bucket{S}[$__rate_interval])))", "gateway {{stage}}"),
      (f"histogram_quantile(0.99, sum by (le) (rate(ray_rooms_turn_seconds_bucket{S}"
       f"[$__rate_interval])))", "room turn"),
      (f"histogram_quantile(0.99, sum by (le) (rate(ray_rooms_snapshot_save_seconds_bucket"
       f"{S}[$__rate_interval])))", "snapshot save")], "s",
     "queue: a frame's wait for its batch; deliver: the batch's Ray call (it holds the "
     "turn and the save); fanout: writing the result to the sockets."),
    ("/partytracks requests per second, by operation and status",
     [(_rate("ray_rooms_gateway_partytracks_requests_total", "operation, status"),
       "{{operation}} {{status}}")], "ops", ""),
    ("/partytracks latency, by operation (p99)",
     [(f"histogram_quantile(0.99, sum by (le, operation) (rate("
       f"ray_rooms_gateway_partytracks_seconds_bucket{S}[$__rate_interval])))",
       "{{operation}}")], "s", ""),
]


def dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (schema version 39)."""
    panels = []
    for i, (title, targets, unit, description) in enumerate(PANELS):
        panels.append({
            "id": i + 1, "title": title, "type": "timeseries", "description": description,
            "datasource": DATASOURCE,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "targets": [{"refId": chr(65 + j), "expr": expr, "legendFormat": legend,
                         "datasource": DATASOURCE}
                        for j, (expr, legend) in enumerate(targets)]})
    session_query = "label_values(ray_rooms_messages_total, SessionName)"
    return {
        "title": "ray-rooms", "uid": "ray-rooms", "editable": True, "schemaVersion": 39,
        "tags": ["ray", "ray-rooms"], "time": {"from": "now-30m", "to": "now"},
        "refresh": "10s",
        "description": "Rooms and gateway of ray-rooms, from the rooms-metrics sink "
                       "through Ray's metrics agent (docs/operating.md, Metrics).",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Data source"},
            {"name": "session", "type": "query", "label": "Ray session",
             "datasource": DATASOURCE, "definition": session_query,
             "query": {"query": session_query, "refId": "session"},
             "includeAll": True, "allValue": ".+", "multi": True, "refresh": 2,
             "current": {"text": "All", "value": "$__all"}}]},
        "panels": panels,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT}")
