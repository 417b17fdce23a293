"""The ``/partytracks/*`` route: the Calls proxy that Cloudflare's ``partytracks`` browser
library talks to, so the Calls app secret stays on the server.

The protocol is partytracks' (``routePartyTracksRequest`` of the ``partytracks/server``
package, cloudflare/partykit), which Orange Meets mounts at ``/partytracks/*``:

* ``/partytracks/<path>?<query>`` is forwarded to ``<calls base>/apps/<app id>/<path>?<query>``
  with the same method and body and ``Authorization: Bearer <app secret>`` (the
  gateway's own identity parameters ``token`` and ``username`` are left out of the
  query, and no client header or cookie is forwarded); the answer
  (status, JSON body) goes back as it came. Only the Calls operations of the session
  API are forwarded (``sessions/new``; ``sessions/<id>`` GET; ``tracks/new``,
  ``renegotiate``, ``tracks/close``, ``tracks/update`` of a session); any other path is
  a 404 and reaches nobody.
* ``/partytracks/generate-ice-servers`` answers ``{"iceServers": [...]}``: Cloudflare's
  TURN credentials when a TURN key is configured, else the configured list (default
  Cloudflare's STUN server), and ``[]`` when the SFU is on loopback (the local Calls
  emulator, which needs none).
* **Session lock** (partytracks' ``lockSessionToInitiator``): a ``sessions/new`` answer
  sets an HttpOnly, ``SameSite=Strict`` cookie ``partytracks-session-<sessionId>`` (path
  ``/partytracks``; ``Secure`` over HTTPS) holding an HS256 token with the session id and
  the creator's name, signed with a key derived from the app secret. Every later request
  of that session needs that cookie, for that session, naming the same user: 401
  otherwise.

Only identified users get through (the gateway's identities, :mod:`actors.auth`: 401
otherwise); a request body is at most ``max_body_bytes`` (413) and each user may send
``rate_per_s`` requests per second, bursts of ``burst`` (429 with ``Retry-After``). A
Calls service that cannot be reached is a 502 ``{"errorCode": "calls_unreachable"}``.
The app secret is never in an answer, a log line or an error.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import time
from typing import Any, Mapping
from urllib.parse import urlsplit

import httpx
import jwt
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .. import metrics
from ..auth import ALGORITHM
from .bodies import read_body
from .ratelimit import TokenBucket

__all__ = ["CLOUDFLARE_STUN", "PREFIX", "PartyTracksProxy", "PartyTracksSettings",
           "SESSION_COOKIE_PREFIX"]

log = logging.getLogger("ray_rooms.gateway")

PREFIX = "/partytracks"
"""Where the proxy is mounted (partytracks' default ``prefix``)."""
SESSION_COOKIE_PREFIX = "partytracks-session-"
"""The session lock cookie's name is this plus the Calls session id."""
CLOUDFLARE_STUN = [{"urls": ["stun:stun.cloudflare.com:3478", "stun:stun.cloudflare.com:53"]}]
"""The ICE servers partytracks' server answers when no TURN key is configured."""

_SESSION_ID = r"(?!new(?:/|$))[A-Za-z0-9_-]{1,128}"  # "new" is sessions/new, not an id
_ROUTES: list[tuple[str, re.Pattern[str]]] = [
    ("POST", re.compile(r"sessions/new")),
    ("GET", re.compile(rf"sessions/(?P<session>{_SESSION_ID})")),
    ("POST", re.compile(rf"sessions/(?P<session>{_SESSION_ID})/tracks/new")),
    ("PUT", re.compile(rf"sessions/(?P<session>{_SESSION_ID})/renegotiate")),
    ("PUT", re.compile(rf"sessions/(?P<session>{_SESSION_ID})/tracks/close")),
    ("PUT", re.compile(rf"sessions/(?P<session>{_SESSION_ID})/tracks/update")),
]
_LOCK_CONTEXT = b"ray-rooms partytracks session lock"
_IDENTITY_PARAMS = frozenset({"token", "username"})  # ours, never forwarded to Calls
_MAX_BUCKETS = 10_000


class PartyTracksSettings(BaseSettings):
    """Limits and ICE servers of the ``/partytracks`` proxy (environment
    ``ROOMS_PARTYTRACKS_*``).

    Attributes:
        max_body_bytes: largest request body forwarded, bytes (an SDP offer with a
            few dozen transceivers is ~20 KiB).
        rate_per_s: requests per second one user may send, sustained.
        burst: requests one user may send at once.
        timeout_s: seconds one forwarded request may take.
        ice_servers: the ``iceServers`` answered by ``generate-ice-servers`` when no
            TURN key is set (JSON list of RTCIceServer objects; default Cloudflare's
            STUN). Ignored for a Calls service on loopback (answered ``[]``).
        turn_key_id, turn_key_api_token: a Cloudflare TURN key; with both set,
            ``generate-ice-servers`` asks Cloudflare for short-lived TURN credentials
            (``POST {calls base}/turn/keys/{id}/credentials/generate-ice-servers``).
        turn_ttl_s: seconds those credentials live.
    """

    model_config = SettingsConfigDict(env_prefix="ROOMS_PARTYTRACKS_", extra="ignore")

    max_body_bytes: int = Field(256 * 1024, gt=0)
    rate_per_s: float = Field(10.0, gt=0)
    burst: int = Field(40, ge=1)
    timeout_s: float = Field(15.0, gt=0)
    ice_servers: list[dict[str, Any]] = Field(default_factory=lambda: list(CLOUDFLARE_STUN))
    turn_key_id: str | None = None
    turn_key_api_token: SecretStr | None = None
    turn_ttl_s: int = Field(86400, gt=0)


def _on_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _problem(status: int, code: str, description: str,
             headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error in Calls' own shape, which partytracks reads (``errorCode``,
    ``errorDescription``)."""
    return JSONResponse({"errorCode": code, "errorDescription": description},
                        status_code=status, headers=dict(headers or {}))


class PartyTracksProxy:
    """The ``/partytracks/*`` proxy of one gateway replica (see the module docstring).

    Args:
        base_url: the Calls API root (``https://rtc.live.cloudflare.com/v1`` or the
            local emulator's ``http://127.0.0.1:<port>/v1``).
        app_id: the Calls app id.
        app_secret: the Calls app secret (sent upstream only; also keys the lock).
        settings: limits and ICE servers (default: ``ROOMS_PARTYTRACKS_*``).
        transport: an httpx transport for the upstream client (tests), or ``None``.
    """

    def __init__(self, base_url: str, app_id: str, app_secret: SecretStr,
                 settings: PartyTracksSettings | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings or PartyTracksSettings()
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id
        self._secret = app_secret
        self._lock_key = hmac.new(app_secret.get_secret_value().encode(), _LOCK_CONTEXT,
                                  hashlib.sha256).digest()
        self._client = httpx.AsyncClient(timeout=self.settings.timeout_s, transport=transport)
        self._buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"<PartyTracksProxy {self.base_url} app={self.app_id}>"

    async def aclose(self) -> None:
        """Close the upstream HTTP client."""
        await self._client.aclose()

    # ---- the route ---------------------------------------------------------------------

    async def handle(self, path: str, request: Request, user: str, *,
                     base: str = "") -> Response:
        """Answer one ``/partytracks/<path>`` request of identified ``user``.

        Args:
            path: the part after ``/partytracks/`` (no leading slash).
            request: the HTTP request (method, query, cookies, body).
            user: the caller's name (already identified by the gateway).
            base: the application's route prefix (the session lock cookie's path is
                ``base + "/partytracks"``).

        Returns:
            The forwarded Calls answer, the ICE servers, or an error response
            (404 unknown path, 405 wrong method, 401 session lock, 413 body too large,
            429 rate, 502 Calls unreachable), never raising for any of them.
        """
        if not self._take(user):
            wait = max(1, round(1 / self.settings.rate_per_s))
            return _problem(429, "rate_limited",
                            f"more than {self.settings.rate_per_s:g} requests/s",
                            {"Retry-After": str(wait)})
        if path == "generate-ice-servers":
            return await self._ice_servers()
        match = self._route(request.method, path)
        if isinstance(match, Response):
            return match
        session = match.groupdict().get("session")
        if session is not None and not self._unlocked(request.cookies, session, user):
            return _problem(401, "unauthorized",
                            "this Calls session was created by another browser or user")
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        upstream = await self._forward(request, path, body)
        if isinstance(upstream, Response):
            return upstream
        answer = Response(upstream.content, status_code=upstream.status_code,
                          media_type=upstream.headers.get("content-type", "application/json"))
        if session is None and upstream.status_code in (200, 201):
            created = self._session_id(upstream.content)
            if created is not None:
                answer.set_cookie(SESSION_COOKIE_PREFIX + created, self._lock(created, user),
                                  path=base + PREFIX, httponly=True, samesite="strict",
                                  secure=request.url.scheme == "https")
        return answer

    # ---- parts ---------------------------------------------------------------------------

    def _take(self, user: str) -> bool:
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = TokenBucket(self.settings.rate_per_s,
                                                       self.settings.burst)
            if len(self._buckets) > _MAX_BUCKETS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(user)
        return bucket.take()

    @staticmethod
    def _route(method: str, path: str) -> re.Match[str] | Response:
        allowed = False
        for verb, pattern in _ROUTES:
            found = pattern.fullmatch(path)
            if found is not None:
                if verb == method:
                    return found
                allowed = True
        if allowed:
            return _problem(405, "method_not_allowed", f"{method} is not allowed here")
        return _problem(404, "not_found", "not a Calls session operation")

    async def _body(self, request: Request) -> bytes | Response:
        limit = self.settings.max_body_bytes
        body = await read_body(request, limit)
        if body is None:
            return _problem(413, "too_large", f"the body is larger than {limit} bytes")
        return body

    async def _forward(self, request: Request, path: str,
                       body: bytes) -> httpx.Response | Response:
        url = f"{self.base_url}/apps/{self.app_id}/{path}"
        headers = {"Authorization": f"Bearer {self._secret.get_secret_value()}"}
        if body:
            headers["Content-Type"] = request.headers.get("content-type", "application/json")
        started = time.perf_counter()
        operation = _operation(path)
        try:
            params = [(k, v) for k, v in request.query_params.multi_items()
                      if k not in _IDENTITY_PARAMS]
            answer = await self._client.request(request.method, url, params=params,
                                                content=body or None, headers=headers)
            metrics.partytracks(operation, answer.status_code, time.perf_counter() - started)
            return answer
        except httpx.HTTPError as error:
            metrics.partytracks(operation, None, time.perf_counter() - started)
            log.warning("partytracks proxy: Calls %s %s failed (%s)", request.method,
                        path.split("/")[0], type(error).__name__)
            return _problem(502, "calls_unreachable",
                            f"the Calls service did not answer ({type(error).__name__})")

    async def _ice_servers(self) -> Response:
        s = self.settings
        if _on_loopback(self.base_url):
            return JSONResponse({"iceServers": []})
        if s.turn_key_id and s.turn_key_api_token is not None:
            url = f"{self.base_url}/turn/keys/{s.turn_key_id}/credentials/generate-ice-servers"
            started = time.perf_counter()
            try:
                upstream = await self._client.post(url, json={"ttl": s.turn_ttl_s}, headers={
                    "Authorization": f"Bearer {s.turn_key_api_token.get_secret_value()}"})
                metrics.partytracks("ice", upstream.status_code, time.perf_counter() - started)
            except httpx.HTTPError as error:
                metrics.partytracks("ice", None, time.perf_counter() - started)
                return _problem(502, "turn_unreachable",
                                f"the TURN service did not answer ({type(error).__name__})")
            return Response(upstream.content, status_code=upstream.status_code,
                            media_type="application/json")
        return JSONResponse({"iceServers": s.ice_servers})

    @staticmethod
    def _session_id(content: bytes) -> str | None:
        try:
            found = json.loads(content).get("sessionId")
        except (ValueError, AttributeError):
            return None
        return found if isinstance(found, str) and re.fullmatch(_SESSION_ID, found) else None

    def _lock(self, session: str, user: str) -> str:
        """The lock cookie's value: an HS256 token of ``{sessionId, sub}``."""
        return jwt.encode({"sessionId": session, "sub": user}, self._lock_key,
                          algorithm=ALGORITHM)

    def _unlocked(self, cookies: Mapping[str, str], session: str, user: str) -> bool:
        """Whether ``cookies`` hold this session's lock, for ``user``."""
        value = cookies.get(SESSION_COOKIE_PREFIX + session)
        if not value:
            return False
        try:
            claims = jwt.decode(value, self._lock_key, algorithms=[ALGORITHM])
        except jwt.InvalidTokenError:
            return False
        return claims.get("sessionId") == session and claims.get("sub") == user


def _operation(path: str) -> str:
    """The ``operation`` tag of a Calls API path (``sessions/new``, ``tracks/new``,
    ``renegotiate``, ``tracks/close``, ``session``; see
    :data:`actors.metrics.PARTYTRACKS_OPS`)."""
    if path == "sessions/new":
        return path
    parts = path.split("/")
    return "/".join(parts[2:]) if len(parts) > 2 else "session"
