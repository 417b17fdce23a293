"""A webhook receiver on loopback for the tests: a real HTTP server (uvicorn, in a
thread of its own) that records every POST with its signature header, and can be
stopped and started again on the same port (a receiver that is down)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors.net import free_port


class Receiver:
    """Records ``{"event": dict, "body": bytes, "signature": str}`` per request.

    Args:
        port: the port (default: a free one).
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.received.append({"event": json.loads(body), "body": body,
                                  "signature": request.headers.get("x-rooms-signature", "")})
        return Response(status_code=204)

    def start(self) -> "Receiver":
        """Serve (returns once the port accepts)."""
        app = Starlette(routes=[Route("/hooks", self._hook, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving (connections are refused until :meth:`start`)."""
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        """The events received so far, in arrival order."""
        with self._lock:
            return [r["event"] for r in self.received]
