"""The gateway's logic in one replica, as a plain class (:class:`GatewayServer`);
:mod:`actors.gateway.app` puts it behind Serve's FastAPI ingress."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, quote

from fastapi import Request, WebSocket
from fastapi.responses import JSONResponse, RedirectResponse, Response
import ray
from ray import serve
from ray.serve.exceptions import RayServeException

from rooms.errors import RoomsError

from ..auth import SESSION_COOKIE, AuthSettings, Identity, identify, session_cookie
from ..config import RoomsConfig
from ..directory import list_room_actors, validate_room_id
from ..errors import AuthError, OperatorRequired
from ..services import calls_settings
from .errors import answer_for
from .limits import MAX_CONN_ID_CHARS, GatewayLimits
from .pages import WebAssets, index_page, meeting_page, safe_return_path
from .partytracks import PartyTracksProxy, PartyTracksSettings
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
        config: the room runtime's settings (namespace, store, message size limit, the
            Calls endpoint of the ``/partytracks`` proxy).
        auth: the token secret and dev flag (default: from the replica's environment).
        limits: rate, size and timing limits (default: from the replica's environment).
        assets: the meeting page's built script (default: none; the page then answers
            503 saying how to build it).
        partytracks: the ``/partytracks`` proxy's limits (default:
            ``ROOMS_PARTYTRACKS_*`` from the replica's environment).
    """

    def __init__(self, config: RoomsConfig, auth: AuthSettings | None = None,
                 limits: GatewayLimits | None = None, assets: WebAssets | None = None,
                 partytracks: PartyTracksSettings | None = None) -> None:
        self.config = config
        self.auth = auth or AuthSettings()
        self.limits = limits or GatewayLimits()
        self.assets = assets or WebAssets()
        self._partytracks_settings = partytracks
        self._proxy: PartyTracksProxy | None = None
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

    def _identify(self, request: Request) -> Identity:
        """The caller's identity (:func:`actors.auth.identify`; raises its AuthError)."""
        return identify(request.query_params, request.headers, self.auth, request.cookies)

    def _name_or_none(self, request: Request) -> str | None:
        try:
            return self._identify(request).name
        except AuthError:
            return None

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
            identity = self._identify(request)
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

    # ---- browsers: pages, the session cookie, the Calls proxy --------------------------

    async def index(self, request: Request) -> Response:
        """The start page (:func:`actors.gateway.pages.index_page`); no identity needed."""
        return index_page(self.auth.dev_auth, self._name_or_none(request),
                          request.query_params.get("room"))

    async def set_username(self, request: Request) -> Response:
        """Development mode only (404 otherwise): take the form field ``username``, set
        the session cookie naming it, and answer 303 to ``/meet/<room>`` (form field
        ``room``) or to the ``return-url`` query parameter (a local path, default
        ``/``). 400 for an unusable name or room, 413 for a body over 4 KiB."""
        if not self.auth.cookies_accepted:
            return JSONResponse({"error": "not found"}, status_code=404)
        body = await request.body()
        if len(body) > 4096:
            return JSONResponse({"error": "the form is too large"}, status_code=413)
        form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
        name = (form.get("username") or [""])[0].strip()
        room = (form.get("room") or [""])[0].strip()
        try:
            value = session_cookie(name, self.auth)
            if room:
                validate_room_id(room)
        except AuthError as error:  # an unusable name is bad input here, not a 401
            return JSONResponse({"error": str(error)}, status_code=400)
        except RoomsError as error:
            return answer_for(error).response(error)
        target = (f"/meet/{quote(room, safe='')}" if room
                  else safe_return_path(request.query_params.get("return-url")))
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(SESSION_COOKIE, value, max_age=7 * 86400, path="/", httponly=True,
                            samesite="lax", secure=request.url.scheme == "https")
        return response

    async def meet_redirect(self, request: Request) -> Response:
        """``GET /meet?room=<r>``: 303 to ``/meet/<r>`` (to ``/`` without a room)."""
        room = request.query_params.get("room", "").strip()
        return RedirectResponse(f"/meet/{quote(room, safe='')}" if room else "/",
                                status_code=303)

    async def meeting(self, room: str, request: Request) -> Response:
        """The meeting page of ``room`` (:func:`actors.gateway.pages.meeting_page`).
        Without an identity: development mode redirects (303) to the start page with
        the room filled in; otherwise 401. 400 for a bad room id."""
        try:
            validate_room_id(room)
        except RoomsError as error:
            return answer_for(error).response(error)
        name = self._name_or_none(request)
        if name is None:
            if self.auth.dev_auth:
                return RedirectResponse(f"/?room={quote(room, safe='')}", status_code=303)
            error = AuthError("sign in first (no token, proxy header or session cookie)")
            return answer_for(error).response(error)
        return meeting_page(room, name, self.assets)

    async def web_asset(self, name: str) -> Response:
        """The meeting page's built script ``name`` (404 if there is none)."""
        return self.assets.response(name)

    def _partytracks(self) -> PartyTracksProxy | None:
        if self._proxy is None:
            calls = calls_settings(self.config.services)
            if not calls.configured:
                return None
            assert calls.app_id is not None and calls.app_secret is not None
            self._proxy = PartyTracksProxy(calls.base_url, calls.app_id, calls.app_secret,
                                           self._partytracks_settings)
        return self._proxy

    async def partytracks(self, path: str, request: Request) -> Response:
        """``/partytracks/<path>``: the Calls proxy of Cloudflare's partytracks library
        (:mod:`actors.gateway.partytracks`), for identified users only (401); 503 when
        no Calls app is configured."""
        async def work(name: str) -> Any:
            proxy = self._partytracks()
            if proxy is None:
                return JSONResponse({"errorCode": "calls_not_configured",
                                     "errorDescription": "no Cloudflare Calls app is configured"},
                                    status_code=503)
            return await proxy.handle(path, request, name)

        return await self._guard(request, None, work)

    # ---- WebSocket ---------------------------------------------------------------------

    async def websocket(self, ws: WebSocket, room: str) -> None:
        """A partysocket connection to ``room`` as connection ``?_pk=`` (see
        :mod:`actors.gateway.websocket`)."""
        await serve_websocket(ws, room, self.registry, self.auth, self.limits)
