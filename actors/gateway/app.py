"""The Serve deployment: Serve's FastAPI ingress in front of :class:`GatewayServer`.

Routes:

=====================================  =================================================
``WS  /parties/rooms/{room}``          a partysocket connection; connection id = ``_pk``
``POST /rooms/{room}/messages``        one protocol message (JSON body) -> ``{"seq": n}``
``GET  /rooms/{room}``                 the room's ``RoomState``
``GET  /rooms``                        the room actors Ray knows, with their actor state
``GET  /healthz``                      ``{"ok": true, "replica": id, ...}`` (no auth)
``GET|POST|PUT /partytracks/{path}``   the Calls proxy of partytracks (``partytracks``)
``GET  /``, ``POST /set-username``,    the meeting page and its script (``pages``)
``GET  /meet/{room}``, ``GET /web/*``
=====================================  =================================================
"""

# No ``from __future__ import annotations`` here: Serve's ingress rebuilds the route
# methods, and FastAPI must see real ``WebSocket``/``Request`` annotations.

import threading
from typing import Any, Optional

from fastapi import FastAPI, Request, WebSocket
from ray import serve

from .. import logs, tracing
from ..auth import AuthSettings
from ..config import RoomsConfig
from ..seam import configure_websockets
from ..side_actors import start_side_actors
from ..warmpool import expect_rooms_from_here, preloads_ai
from .limits import GatewayLimits
from .pages import WebAssets
from .partytracks import PartyTracksSettings
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
        config, auth, limits, assets, partytracks: as :class:`GatewayServer`.
        side_actors: make sure the alarm scheduler and the warm pools run
            (:func:`actors.side_actors.start_side_actors`, in the background).
    """

    def __init__(self, config: RoomsConfig, auth: Optional[AuthSettings] = None,
                 limits: Optional[GatewayLimits] = None, assets: Optional[WebAssets] = None,
                 partytracks: Optional[PartyTracksSettings] = None,
                 side_actors: bool = False) -> None:
        # Before Serve starts this replica's uvicorn (see actors.seam): frames larger
        # than a message are refused by the WebSocket layer, before they are buffered,
        # and permessage-deflate is negotiated only if the limits ask for it.
        configure_websockets(config.max_message_bytes,
                             (limits or GatewayLimits()).ws_compression)
        logs.configure(config.log_format, config.log_level)
        tracing.configure(config.otel_endpoint, "gateway")
        self.server = GatewayServer(config, auth, limits, assets, partytracks)
        if side_actors:
            start_side_actors(config)
        # the rooms this replica creates run in its runtime environment merged with
        # theirs: warm the pools for that one now (in a thread: list_named_actors blocks)
        threading.Thread(target=expect_rooms_from_here,
                         args=(config.store_url, preloads_ai(config)),
                         name="warm-pool-expect", daemon=True).start()

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

    @app.get("/rooms/{room}/transcript")
    async def transcript(self, room: str, request: Request) -> Any:
        """See :meth:`GatewayServer.transcript`."""
        return await self.server.transcript(room, request)

    @app.post("/rooms/{room}/messages")
    async def post_message(self, room: str, request: Request) -> Any:
        """See :meth:`GatewayServer.post_message`."""
        return await self.server.post_message(room, request)

    @app.get("/")
    async def index(self, request: Request) -> Any:
        """See :meth:`GatewayServer.index`."""
        return await self.server.index(request)

    @app.post("/set-username")
    async def set_username(self, request: Request) -> Any:
        """See :meth:`GatewayServer.set_username`."""
        return await self.server.set_username(request)

    @app.get("/meet")
    async def meet_redirect(self, request: Request) -> Any:
        """See :meth:`GatewayServer.meet_redirect`."""
        return await self.server.meet_redirect(request)

    @app.get("/meet/{room}")
    async def meeting(self, room: str, request: Request) -> Any:
        """See :meth:`GatewayServer.meeting`."""
        return await self.server.meeting(room, request)

    @app.get("/web/{name}")
    async def web_asset(self, name: str) -> Any:
        """See :meth:`GatewayServer.web_asset`."""
        return await self.server.web_asset(name)

    @app.api_route("/partytracks/{path:path}", methods=["GET", "POST", "PUT"])
    async def partytracks(self, path: str, request: Request) -> Any:
        """See :meth:`GatewayServer.partytracks`."""
        return await self.server.partytracks(path, request)

    @app.websocket("/parties/rooms/{room}")
    async def websocket(self, ws: WebSocket, room: str) -> None:
        """See :meth:`GatewayServer.websocket`."""
        await self.server.websocket(ws, room)

    def __del__(self) -> None:
        self.server.close()

