"""The Serve deployment: Serve's FastAPI ingress in front of :class:`GatewayServer`.

Routes:

=====================================  =================================================
``WS  /parties/rooms/{room}``          a partysocket connection; connection id = ``_pk``
``POST /rooms/{room}/messages``        one protocol message (JSON body) -> ``{"seq": n}``
``GET  /rooms/{room}``                 the room's ``RoomState``
``GET  /rooms``                        the room actors Ray knows, with their actor state
``GET  /healthz``                      ``{"ok": true, "replica": id, ...}`` (no auth)
=====================================  =================================================
"""

# No ``from __future__ import annotations`` here: Serve's ingress rebuilds the route
# methods, and FastAPI must see real ``WebSocket``/``Request`` annotations.

from typing import Any, Optional

from fastapi import FastAPI, Request, WebSocket
from ray import serve

from ..auth import AuthSettings
from ..config import RoomsConfig
from .limits import GatewayLimits
from .server import GatewayServer

__all__ = ["Gateway", "app"]

app = FastAPI(title="ray-rooms gateway", description="WebSocket and HTTP access to rooms.")
"""The FastAPI application whose routes :class:`Gateway` serves."""


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=10_000)
@serve.ingress(app)
class Gateway:
    """The Serve deployment: routes of :data:`app`, each handled by a
    :class:`GatewayServer` (Serve copies this class by value into its replicas, so it
    stays thin and the logic lives in the importable :class:`GatewayServer`).

    Args:
        config, auth, limits: as :class:`GatewayServer`.
    """

    def __init__(self, config: RoomsConfig, auth: Optional[AuthSettings] = None,
                 limits: Optional[GatewayLimits] = None) -> None:
        self.server = GatewayServer(config, auth, limits)

    @app.get("/healthz")
    async def healthz(self) -> Any:
        """See :meth:`GatewayServer.healthz`."""
        return await self.server.healthz()

    @app.get("/rooms")
    async def rooms(self, request: Request) -> Any:
        """See :meth:`GatewayServer.rooms`."""
        return await self.server.rooms(request)

    @app.get("/rooms/{room}")
    async def room_state(self, room: str, request: Request) -> Any:
        """See :meth:`GatewayServer.room_state`."""
        return await self.server.room_state(room, request)

    @app.post("/rooms/{room}/messages")
    async def post_message(self, room: str, request: Request) -> Any:
        """See :meth:`GatewayServer.post_message`."""
        return await self.server.post_message(room, request)

    @app.websocket("/parties/rooms/{room}")
    async def websocket(self, ws: WebSocket, room: str) -> None:
        """See :meth:`GatewayServer.websocket`."""
        await self.server.websocket(ws, room)

    def __del__(self) -> None:
        self.server.close()

