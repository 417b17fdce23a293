"""The metrics catalogue against what depends on it, without Ray: the table in
docs/operating.md, the shipped Grafana dashboard, the frame classifier under hostile
input, and the sink's aggregation. ``tests/test_prometheus.py`` checks the same metrics
end to end, through a real Prometheus."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from actors import metrics, metrics_catalogue
from actors.metrics_sink import MetricsSink
from actors.wire import MetricsReport

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "grafana_generate", ROOT / "deploy" / "grafana" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_queries() -> list[str]:
    """Every PromQL query of every panel of the shipped dashboard."""
    board = json.loads((ROOT / "deploy" / "grafana" / "ray-rooms.json").read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def test_the_docs_metric_table_is_the_catalogue():
    text = (ROOT / "docs" / "operating.md").read_text()
    assert metrics_catalogue.table() in text, "run python -m actors.metrics_catalogue and paste its table"


def test_the_shipped_dashboard_is_its_generators_output():
    board = json.loads((ROOT / "deploy" / "grafana" / "ray-rooms.json").read_text())
    assert board == _generator().dashboard(), "run python deploy/grafana/generate.py"


def test_every_dashboard_query_names_catalogue_metrics_and_every_metric_is_charted():
    names = set()
    for spec in metrics.CATALOGUE.values():
        names |= ({spec.prometheus + "_bucket"} if spec.kind == "histogram"
                  else {spec.prometheus})
    used = {name for expr in dashboard_queries()
            for name in re.findall(r"\bray_rooms_\w+", expr)}
    assert used <= names, used - names
    assert {n.removesuffix("_bucket") for n in names} == \
        {n.removesuffix("_bucket") for n in used}, "a metric with no panel"


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(),
    st.binary(max_size=64),
    st.builds(lambda t: json.dumps({"type": t}), st.text()),
    st.builds(lambda t, n: '{"a":' * n + json.dumps({"type": t}) + "}" * n,
              st.sampled_from(metrics.MESSAGE_TYPES), st.integers(0, 200)),
    st.builds(lambda t: '{"type": "' + t + '"', st.text(alphabet="\ud800\udfff\x00\x1f\"\\",
                                                       max_size=20)),
))
def test_a_frames_type_tag_is_always_from_the_fixed_set(frame):
    assert metrics.message_type(frame) in metrics.MESSAGE_TYPES


def test_the_type_tag_reads_the_messages_type():
    assert metrics.message_type('{"type":"userUpdate","user":{}}') == "userUpdate"
    assert metrics.message_type('{"user": {}, "type" : "heartbeat"}') == "heartbeat"
    assert metrics.message_type('{"type":"client-chosen-123"}') == "other"
    assert metrics.message_type("not json") == "invalid"
    assert metrics.message_type('{"type": "userUpdate", ' + "x" * 10**6) == "userUpdate"


def test_the_sink_sums_counters_replays_buckets_and_expires_silent_processes():
    sink = MetricsSink(expiry_s=0.3)
    bounds = metrics.CATALOGUE["rooms_turn_seconds"].boundaries
    counts = [0] * (len(bounds) + 1)
    counts[3], counts[-1] = 2, 1
    sink.report(MetricsReport("p1", counters={("rooms_messages", ("heartbeat",)): 3},
                              histograms={("rooms_turn_seconds", ()): counts},
                              gauges={("rooms_active", ()): 2.0}))
    sink.report(MetricsReport("p2", counters={("rooms_messages", ("heartbeat",)): 1,
                                              ("not_a_metric", ()): 5},
                              gauges={("rooms_active", ()): 1.0}))
    totals = sink.totals()
    assert totals["rooms_messages{heartbeat}"] == 4
    assert totals["rooms_turn_seconds"] == 3
    assert totals["rooms_active"] == 3
    assert not any(k.startswith("not_a_metric") for k in totals)
    time.sleep(0.4)
    sink.report(MetricsReport("p2", gauges={("rooms_active", ()): 1.0}))
    assert sink.totals()["rooms_active"] == 1  # p1 is silent: SIGKILLed, say


def test_the_partytracks_operation_tag():
    from actors.gateway.partytracks import _operation

    assert _operation("sessions/new") == "sessions/new"
    assert _operation("sessions/abc/tracks/new") == "tracks/new"
    assert _operation("sessions/abc/renegotiate") == "renegotiate"
    assert _operation("sessions/abc/tracks/close") == "tracks/close"
    assert _operation("sessions/abc") == "session"
    for path in ("sessions/new", "sessions/x/tracks/new", "sessions/x/renegotiate",
                 "sessions/x/tracks/close", "sessions/x"):
        assert _operation(path) in metrics.PARTYTRACKS_OPS
