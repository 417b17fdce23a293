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

from rooms.messages import ProtocolError, check_conn_id, parse_client_message

from ..auth import (SESSION_COOKIE, AuthSettings, Identity, identify, origin_allowed,
                    session_cookie)
from ..config import RoomsConfig
from ..directory import list_room_actors, validate_room_id
from ..errors import AuthError, OperatorRequired, OriginRefused, RoomNotGranted
from ..services import calls_settings
from .bodies import read_body
from .errors import BodyTooLarge, public_error
from .limits import MAX_CONN_ID_CHARS, GatewayLimits
from .quotas import IdentityQuotas
from .memwatch import start_memory_watch
from .pages import WebAssets, base_path, index_page, meeting_page, safe_return_path
from .partytracks import PartyTracksProxy, PartyTracksSettings
from .registry import RoomRegistry
from .websocket import serve_websocket

__all__ = ["GatewayServer"]

log = logging.getLogger("ray_rooms.gateway")


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
        self.quotas = IdentityQuotas(self.limits)
        if self.auth.dev_auth:
            log.warning("development mode: ?username= is accepted without a token and "
                        "every identity is an operator")
        start_memory_watch()  # only with ROOMS_GATEWAY_MEMWATCH_S set

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
        """Identify the caller, validate ``room``, run ``work(name)``; answer any error
        it raises through the sanitizer (:func:`actors.gateway.errors.public_error`:
        the public text and an error id; the status from its table; never a
        traceback).

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
            if identity.source == "cookie" and not origin_allowed(request.headers, self.auth):
                raise OriginRefused("this page's origin may not use the session cookie")
            if room is not None:
                validate_room_id(room)
                if not identity.may_enter(room):
                    raise RoomNotGranted("this token does not admit this room")
            return await work(identity.name)
        except Exception as error:  # noqa: BLE001 - every error is answered, sanitized
            return public_error(error).response()

    # ---- HTTP --------------------------------------------------------------------------

    async def healthz(self) -> dict[str, Any]:
        """Liveness and load: ``{"ok": true, "replica": str, "node": str, "rooms": int,
        "sockets": int, "channels": {stat: int}}``; ``channels`` sums the live rooms'
        counters (``polls``, ``entries``, ``gaps``, ``hibernations``, ``batches``,
        ``frames``)."""
        totals: dict[str, int] = {}
        for channel in self.channels.values():
            for key, value in channel.counters().items():
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
            return await self.registry.ref(room).state()

        return await self._guard(request, room, work, operator=True)

    async def transcript(self, room: str, request: Request) -> Any:
        """The AI transcript of the room's meeting (the current one, else the last one):
        ``{"room", "meetingId", "lines": [{id, speaker, name, text, at}]}``, oldest
        first. For the room's members (an identity with a user or connection in it) and
        operators; 403 ``not a member of this room`` otherwise."""

        async def work(name: str) -> Any:
            operator = self._identify(request).operator
            found = await self.registry.ref(room).call(
                lambda client: client.transcript(name, operator))
            return found.record()

        return await self._guard(request, room, work)

    async def post_message(self, room: str, request: Request) -> Any:
        """Hand one protocol message (the JSON body) to the room as the caller's own
        connection: ``http:<name>`` by default, or a ``?conn=`` the caller's identity
        owns (403 otherwise, and the room is unchanged). Returns ``{"seq": n}``, the
        outbox sequence number after the turn (its replies go out through the
        sockets). With an ``Idempotency-Key`` header, a retried request (same key, same
        connection, same identity) is applied once.

        Refused, with ``{"error", "errorId"}``: 413 when ``Content-Length`` or the
        body read so far exceeds ``max_message_bytes`` (the body is never buffered
        past it); 400 when it is not a valid message (checked here, at the edge) or a
        parameter is bad; 422 when the room refused it (one of its bounds); 429 past
        the identity's ``http_rate_per_s`` or ``rooms_per_minute`` (``Retry-After``).
        """

        async def work(name: str) -> Any:
            self.quotas.message(name)
            limit = self.config.max_message_bytes
            body = await read_body(request, limit)
            if body is None:
                return public_error(BodyTooLarge(f"message too large (limit {limit} bytes)")
                                    ).response()
            conn = request.query_params.get("conn") or f"http:{name}"
            if len(conn) > MAX_CONN_ID_CHARS:
                raise ProtocolError("conn is too long")
            check_conn_id(conn)
            key = request.headers.get("idempotency-key")
            if key is not None and not (0 < len(key) <= MAX_CONN_ID_CHARS
                                        and key.isascii() and key.isprintable()):
                raise ProtocolError("Idempotency-Key must be 1-128 printable ASCII characters")
            parse_client_message(body, max_bytes=limit)  # 400 here, before the room
            await self.registry.check_start(room, name, self.quotas)
            seq = await self.registry.ref(room).message(conn, body, name, key)
            return {"seq": seq}

        return await self._guard(request, room, work)

    # ---- browsers: pages, the session cookie, the Calls proxy --------------------------

    async def index(self, request: Request) -> Response:
        """The start page (:func:`actors.gateway.pages.index_page`); no identity needed."""
        return index_page(self.auth.dev_auth, self._name_or_none(request),
                          request.query_params.get("room"), base=base_path(request))

    async def set_username(self, request: Request) -> Response:
        """Development mode only (404 otherwise): take the form field ``username``, set
        the session cookie naming it, and answer 303 to ``/meet/<room>`` (form field
        ``room``) or to the ``return-url`` query parameter (a local path, default
        ``/``). 400 for an unusable name or room, 413 for a body over 4 KiB."""
        if not self.auth.cookies_accepted:
            return JSONResponse({"error": "not found"}, status_code=404)
        if not origin_allowed(request.headers, self.auth):
            return public_error(OriginRefused("cross-site form posts are refused")).response()
        body = await read_body(request, 4096)
        if body is None:
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
            return public_error(error).response()
        base = base_path(request)
        target = (f"{base}/meet/{quote(room, safe='')}" if room
                  else safe_return_path(request.query_params.get("return-url"), base + "/"))
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(SESSION_COOKIE, value, max_age=7 * 86400, path=base + "/",
                            httponly=True, samesite="lax",
                            secure=request.url.scheme == "https")
        return response

    async def meet_redirect(self, request: Request) -> Response:
        """``GET /meet?room=<r>``: 303 to ``/meet/<r>`` (to ``/`` without a room)."""
        room = request.query_params.get("room", "").strip()
        base = base_path(request)
        return RedirectResponse(f"{base}/meet/{quote(room, safe='')}" if room else base + "/",
                                status_code=303)

    async def meeting(self, room: str, request: Request) -> Response:
        """The meeting page of ``room`` (:func:`actors.gateway.pages.meeting_page`).
        Without an identity: development mode redirects (303) to the start page with
        the room filled in; otherwise 401. 400 for a bad room id."""
        try:
            validate_room_id(room)
        except RoomsError as error:
            return public_error(error).response()
        name = self._name_or_none(request)
        if name is None:
            if self.auth.dev_auth:
                return RedirectResponse(f"{base_path(request)}/?room={quote(room, safe='')}",
                                        status_code=303)
            error = AuthError("sign in first (no token, proxy header or session cookie)")
            return public_error(error).response()
        return meeting_page(room, name, self.assets, base=base_path(request))

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
            if not str(request.scope.get("path", "")).endswith(f"/partytracks/{path}"):
                # the route's pattern ends in `$`, which matches before a final newline:
                # /partytracks/sessions/new%0A arrives as the path "sessions/new"
                return JSONResponse({"errorCode": "not_found",
                                     "errorDescription": "not a Calls session operation"},
                                    status_code=404)
            proxy = self._partytracks()
            if proxy is None:
                return JSONResponse({"errorCode": "calls_not_configured",
                                     "errorDescription": "no Cloudflare Calls app is configured"},
                                    status_code=503)
            return await proxy.handle(path, request, name, base=base_path(request))

        return await self._guard(request, None, work)

    # ---- WebSocket ---------------------------------------------------------------------

    async def websocket(self, ws: WebSocket, room: str) -> None:
        """A partysocket connection to ``room`` as connection ``?_pk=`` (see
        :mod:`actors.gateway.websocket`)."""
        await serve_websocket(ws, room, self.registry, self.auth, self.limits, self.quotas)

