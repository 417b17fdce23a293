"""The metrics sink: the one process that records the system's metrics through Ray's
metrics API (see :mod:`actors.metrics` for why rooms and replicas do not).

A detached actor, ``rooms-metrics`` in the namespace ``ray-rooms``, started with
get-if-exists by the first process that reports (and by the application's side
actors), restarted by Ray if it dies (the counters it exported then start from zero:
Prometheus's ``rate`` and ``increase`` treat that as a counter reset). It reserves no
CPU.
"""

from __future__ import annotations

import time
from typing import Any

import ray

from .metrics_catalogue import CATALOGUE, MetricsSettings
from .wire import MetricKey, MetricsReport

__all__ = ["SINK_NAME", "SINK_NAMESPACE", "MetricsSink", "ensure_sink"]

SINK_NAME = "rooms-metrics"
SINK_NAMESPACE = "ray-rooms"


class MetricsSink:
    """Records :class:`~actors.wire.MetricsReport` values through ``ray.util.metrics``.

    Counters are incremented by each report's increments; each histogram bucket count
    is replayed as that many observations at the bucket's midpoint (its upper bound's
    half for the first bucket, the last bound for the overflow bucket); a gauge is the
    sum of the latest values of the processes heard from within ``expiry_s`` seconds.

    Args:
        expiry_s: seconds after which a silent process no longer counts toward a gauge
            (default three flush periods, ``ROOMS_METRICS_FLUSH_S``).
    """

    def __init__(self, expiry_s: float | None = None) -> None:
        self.expiry_s = expiry_s if expiry_s is not None else 3 * MetricsSettings().flush_s
        self._objects: dict[MetricKey, Any] = {}
        self._gauges: dict[str, tuple[float, dict[MetricKey, float]]] = {}
        self._totals: dict[MetricKey, float] = {}
        self.reports = 0

    def _metric(self, key: MetricKey) -> Any:
        metric = self._objects.get(key)
        if metric is None:
            from ray.util.metrics import Counter, Gauge, Histogram

            name, values = key
            spec = CATALOGUE[name]
            keys = tuple(k for k, _ in spec.tags)
            if spec.kind == "counter":
                metric = Counter(name, spec.help, tag_keys=keys)
            elif spec.kind == "gauge":
                metric = Gauge(name, spec.help, tag_keys=keys)
            else:
                metric = Histogram(name, spec.help, boundaries=list(spec.boundaries),
                                   tag_keys=keys)
            if keys:
                metric.set_default_tags(dict(zip(keys, values)))
            self._objects[key] = metric
        return metric

    def report(self, report: MetricsReport) -> None:
        """Record one process's report (unknown metric names are ignored)."""
        self.reports += 1
        for key, increment in report.counters.items():
            if key[0] in CATALOGUE and increment > 0:
                self._metric(key).inc(increment)
                self._totals[key] = self._totals.get(key, 0.0) + increment
        for key, counts in report.histograms.items():
            spec = CATALOGUE.get(key[0])
            if spec is None:
                continue
            metric = self._metric(key)
            bounds = spec.boundaries
            for i, count in enumerate(counts[:len(bounds) + 1]):
                if count <= 0:
                    continue
                low = bounds[i - 1] if 0 < i <= len(bounds) else 0.0
                value = bounds[-1] if i == len(bounds) else (low + bounds[i]) / 2
                for _ in range(count):
                    metric.observe(value)
                self._totals[key] = self._totals.get(key, 0.0) + count
        self._gauges[report.process] = (time.monotonic(), dict(report.gauges))
        self._export_gauges()

    def _export_gauges(self) -> None:
        now = time.monotonic()
        for process, (heard, _) in list(self._gauges.items()):
            if now - heard > self.expiry_s:
                del self._gauges[process]
        sums: dict[MetricKey, float] = {}
        for _, values in self._gauges.values():
            for key, value in values.items():
                if key[0] in CATALOGUE:
                    sums[key] = sums.get(key, 0.0) + value
        for key, value in sums.items():
            self._metric(key).set(value)
            self._totals[key] = value

    def totals(self) -> dict[str, float]:
        """What was recorded so far (tests): ``{"name{tag values}": total}``, counters'
        increments, histograms' observations, gauges' current values."""
        return {name + ("{" + ",".join(values) + "}" if values else ""): total
                for (name, values), total in self._totals.items()}


RemoteMetricsSink = ray.remote(MetricsSink)


def ensure_sink() -> "ray.actor.ActorHandle":
    """Get or create the sink (detached, get-if-exists, restarted for ever, no CPU).

    Raises:
        ray.exceptions.RaySystemError: Ray is not initialised / reachable.
    """
    return RemoteMetricsSink.options(
        name=SINK_NAME, namespace=SINK_NAMESPACE, get_if_exists=True, lifetime="detached",
        max_restarts=-1, max_task_retries=0, num_cpus=0).remote()
