"""The gateway's logic in one replica, as a plain class (:class:`GatewayServer`);
:mod:`actors.gateway.app` puts it behind Serve's FastAPI ingress."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Awaitable, Callable

from fastapi import Request, WebSocket
from fastapi.responses import JSONResponse
import ray
from ray import serve
from ray.serve.exceptions import RayServeException

from rooms.errors import RoomsError

from ..auth import AuthSettings, identify
from ..config import RoomsConfig
from ..directory import list_room_actors, validate_room_id
from ..errors import OperatorRequired
from .errors import answer_for
from .limits import MAX_CONN_ID_CHARS, GatewayLimits
from .registry import RoomRegistry
from .websocket import serve_websocket

__all__ = ["GatewayServer"]

log = logging.getLogger("ray.serve.ray_rooms.gateway")


def _replica_id() -> str:
    """This replica's id from Serve, or a random one outside Serve (tests)."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except RayServeException:  # not in a Serve replica
        return uuid.uuid4().hex[:8]


class GatewayServer:
    """The gateway's logic in one replica (plain class; :class:`Gateway` wraps it).

    Args:
        config: the room runtime's settings (namespace, store, message size limit).
        auth: the token secret and dev flag (default: from the replica's environment).
        limits: rate, size and timing limits (default: from the replica's environment).
    """

    def __init__(self, config: RoomsConfig, auth: AuthSettings | None = None,
                 limits: GatewayLimits | None = None) -> None:
        self.config = config
        self.auth = auth or AuthSettings()
        self.limits = limits or GatewayLimits()
        self.replica = _replica_id()
        self.node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        self.registry = RoomRegistry(config, self.limits, self.replica, self.node)
        if self.auth.dev_auth:
            log.warning("development mode: ?username= is accepted without a token and "
                        "every identity is an operator")

    @property
    def channels(self) -> dict:
        """The room channels of this replica, by room id."""
        return self.registry.channels

    def close(self) -> None:
        """Stop every room's poll (the replica is shutting down)."""
        self.registry.close()

    async def _guard(self, request: Request, room: str | None,
                     work: Callable[[str], Awaitable[Any]], *, operator: bool = False) -> Any:
        """Identify the caller, validate ``room``, run ``work(name)``; answer a
        :class:`~rooms.errors.RoomsError` from the table of
        :mod:`actors.gateway.errors`.

        Args:
            request: the HTTP request.
            room: the room id of the path, or ``None``.
            work: the route's work, given the caller's name.
            operator: the route is an operator's (403 without an operator credential).
        """
        try:
            identity = identify(request.query_params, request.headers, self.auth)
            if operator and not identity.operator:
                raise OperatorRequired("this route needs an operator credential")
            if room is not None:
                validate_room_id(room)
            return await work(identity.name)
        except RoomsError as error:
            return answer_for(error).response(error)

    # ---- HTTP --------------------------------------------------------------------------

    async def healthz(self) -> dict[str, Any]:
        """Liveness and load: ``{"ok": true, "replica": str, "node": str, "rooms": int,
        "sockets": int, "channels": {stat: int}}``; ``channels`` sums the live rooms'
        counters (``polls``, ``entries``, ``gaps``, ``hibernations``, ``batches``,
        ``frames``)."""
        totals: dict[str, int] = {}
        for channel in self.channels.values():
            for key, value in channel.stats.items():
                totals[key] = totals.get(key, 0) + value
        return {"ok": True, "replica": self.replica, "node": self.node,
                "rooms": len(self.channels),
                "sockets": sum(c.count() for c in self.channels.values()),
                "channels": totals}

    async def rooms(self, request: Request) -> Any:
        """``{"rooms": [{"room", "name", "state", "pid", "node_id", "node"}]}``: every room
        actor in the namespace with its Ray actor state (ALIVE, RESTARTING, DEAD, ...).
        Operators only (403 otherwise)."""

        async def work(name: str) -> Any:
            return {"rooms": await asyncio.to_thread(list_room_actors, self.config.namespace)}

        return await self._guard(request, None, work, operator=True)

    async def room_state(self, room: str, request: Request) -> Any:
        """The room's ``RoomState`` JSON object (what ``roomState`` carries). Operators
        only (403 otherwise): participants get it over their socket."""

        async def work(name: str) -> Any:
            return await self.registry.ref(room).call("state")

        return await self._guard(request, room, work, operator=True)

    async def post_message(self, room: str, request: Request) -> Any:
        """Hand one protocol message (the JSON body) to the room as the caller's own
        connection: ``http:<name>`` by default, or a ``?conn=`` the caller's identity
        owns (403 otherwise, and the room is unchanged). Returns ``{"seq": n}``, the
        outbox sequence number after the turn (its replies go out through the
        sockets); 413 if the body exceeds ``max_message_bytes``, 400 if it is not
        UTF-8. With an ``Idempotency-Key`` header, a retried request (same key, same
        connection) is applied once."""

        async def work(name: str) -> Any:
            body = await request.body()
            limit = self.config.max_message_bytes
            if len(body) > limit:
                return JSONResponse(
                    {"error": f"message too large ({len(body)} > {limit} bytes)"},
                    status_code=413)
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                return JSONResponse({"error": "the body is not UTF-8"}, status_code=400)
            conn = request.query_params.get("conn") or f"http:{name}"
            if len(conn) > MAX_CONN_ID_CHARS:
                return JSONResponse({"error": "conn is too long"}, status_code=400)
            key = request.headers.get("idempotency-key")
            if key is not None and not 0 < len(key) <= MAX_CONN_ID_CHARS:
                return JSONResponse({"error": "Idempotency-Key must be 1-128 characters"},
                                    status_code=400)
            return {"seq": await self.registry.ref(room).call("message", conn, text, name,
                                                              key)}

        return await self._guard(request, room, work)

    # ---- WebSocket ---------------------------------------------------------------------

    async def websocket(self, ws: WebSocket, room: str) -> None:
        """A partysocket connection to ``room`` as connection ``?_pk=`` (see
        :mod:`actors.gateway.websocket`)."""
        await serve_websocket(ws, room, self.registry, self.auth, self.limits)
