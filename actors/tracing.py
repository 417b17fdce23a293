"""Optional OpenTelemetry traces: one trace per client frame, across the gateway replica
and the room, exported over OTLP/HTTP.

Off unless ``ROOMS_OTEL_ENDPOINT`` names an OTLP/HTTP traces URL (e.g.
``http://collector:4318/v1/traces``) and the extra is installed
(``pip install 'ray-rooms[otel]'``: the OpenTelemetry SDK and its OTLP/HTTP exporter).
Each process that takes part (a gateway replica, a room actor) calls :func:`configure`
with the rooms' settings and gets a tracer of its own (service name
``ray-rooms-gateway`` or ``ray-rooms-room``; the global tracer provider is left alone,
so Ray's own tracing and the application's are not touched).

The spans of one frame (W3C trace context, ``traceparent``):

* ``rooms.frame`` (gateway): from the frame's arrival to the fan-out of the result that
  carries its turn; its context travels to the room in the frame itself
  (:class:`actors.wire.Frame` ``trace``) through the ``deliver`` call;
* ``rooms.turn`` (room): the frame's turn, a child of its ``rooms.frame``;
* ``rooms.save`` (room): the snapshot save that made the batch durable (one save for a
  batch: a child of the batch's first frame, with a link to every other frame);
* ``rooms.fanout`` (gateway): writing the ``deliver`` result to the sockets (a child of
  the batch's first frame).

Without the endpoint or the packages every function here is a cheap no-op.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

__all__ = ["configure", "enabled", "extract", "link_context", "span", "start",
           "traceparent"]

log = logging.getLogger("ray_rooms.tracing")

_tracer: Any = None
_configured: tuple[str, str] | None = None


def configure(endpoint: str, service: str) -> bool:
    """Start exporting this process's spans to ``endpoint`` as service ``service``
    (idempotent). Returns whether tracing is on.

    Args:
        endpoint: the OTLP/HTTP traces URL (``""``: off).
        service: ``gateway`` or ``room`` (the resource's ``service.name`` is
            ``ray-rooms-<service>``).

    Raises nothing: without the OpenTelemetry SDK or exporter it logs once and stays
    off.
    """
    global _tracer, _configured
    if not endpoint:
        return False
    if _configured == (endpoint, service):
        return _tracer is not None
    _configured = (endpoint, service)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("ROOMS_OTEL_ENDPOINT is set but the otel extra is not installed "
                    "(pip install 'ray-rooms[otel]'); no traces")
        return False
    provider = TracerProvider(resource=Resource.create(
        {"service.name": f"ray-rooms-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint),
                                                   schedule_delay_millis=500))
    _tracer = provider.get_tracer("ray_rooms")
    return True


def enabled() -> bool:
    """Whether this process exports spans."""
    return _tracer is not None


def start(name: str, parent: Any = None, links: Sequence[Any] = (),
          attributes: dict[str, Any] | None = None, start_time: int | None = None) -> Any:
    """Start span ``name`` (a child of ``parent``, an OpenTelemetry context, when
    given; at ``start_time``, ns since the epoch, default now); return it, or ``None``
    when tracing is off. The caller ends it."""
    if _tracer is None:
        return None
    from opentelemetry.trace import Link

    return _tracer.start_span(name, context=parent, attributes=attributes or {},
                              links=[Link(c) for c in links if c is not None],
                              start_time=start_time)


@contextmanager
def span(name: str, parent: Any = None, links: Sequence[Any] = (),
         attributes: dict[str, Any] | None = None) -> Iterator[Any]:
    """:func:`start` as a context manager (the span ends when the block does)."""
    current = start(name, parent, links, attributes)
    try:
        yield current
    finally:
        if current is not None:
            current.end()


def traceparent(current: Any) -> str | None:
    """The W3C ``traceparent`` of span ``current`` (``None``: no span)."""
    if current is None:
        return None
    ctx = current.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def extract(value: str | None) -> Any:
    """The OpenTelemetry context of a ``traceparent`` (``None`` when off, absent or
    malformed)."""
    if _tracer is None or not value:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": value}) or None


def link_context(value: str | None) -> Any:
    """The span context of a ``traceparent``, for a link (``None`` if unusable)."""
    if _tracer is None or not value:
        return None
    from opentelemetry import trace

    ctx = extract(value)
    return trace.get_current_span(ctx).get_span_context() if ctx is not None else None
