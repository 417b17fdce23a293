"""An OTLP/HTTP traces endpoint on loopback that keeps every span it receives (for the
tracing test and ``benchmarks/stages.py``).

It decodes the exporters' protobuf requests (``ExportTraceServiceRequest``, the OTLP
specification's ``POST /v1/traces``); it needs the ``otel`` extra.
"""

from __future__ import annotations

import threading
import time

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors.net import free_port

__all__ = ["Collector"]


class Collector:
    """An OTLP/HTTP traces endpoint on a free loopback port that keeps every span it
    receives in :attr:`spans`, each ``{"name", "service", "trace", "span", "parent",
    "links", "start_ns", "end_ns", "attributes"}`` (ids in hex; times in ns since the
    epoch, as the exporting process's clock gave them; string attributes only)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"
        """The URL to export to (``ROOMS_OTEL_ENDPOINT``)."""
        self.spans: list[dict] = []
        self._lock = threading.Lock()
        self.server: uvicorn.Server | None = None

    async def _traces(self, request: Request) -> Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.body())
        with self._lock:
            for resource in export.resource_spans:
                service = next((a.value.string_value for a in resource.resource.attributes
                                if a.key == "service.name"), "")
                for scope in resource.scope_spans:
                    for s in scope.spans:
                        self.spans.append({
                            "name": s.name, "service": service, "trace": s.trace_id.hex(),
                            "span": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                            "links": [link.span_id.hex() for link in s.links],
                            "start_ns": s.start_time_unix_nano,
                            "end_ns": s.end_time_unix_nano,
                            "attributes": {a.key: a.value.string_value
                                           for a in s.attributes}})
        return Response(b"", media_type="application/x-protobuf")

    def start(self, timeout_s: float = 20.0) -> "Collector":
        """Serve on :attr:`port` in a daemon thread; return once it listens.

        Raises:
            TimeoutError: it did not start within ``timeout_s`` seconds.
        """
        app = Starlette(routes=[Route("/v1/traces", self._traces, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        threading.Thread(target=self.server.run, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the OTLP collector did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self.server is not None:
            self.server.should_exit = True
