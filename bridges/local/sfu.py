"""A Cloudflare-Calls-compatible SFU emulator on aiortc (the contract
``bridges/contracts/calls.yaml``).

Every Calls session is a real ``RTCPeerConnection`` in the emulator; published tracks
are relayed (``aiortc.contrib.media.MediaRelay``) to the sessions that pull them, so
real RTP flows between the peers on loopback. Paths, under ``base_path`` (``/v1``):

* ``POST /apps/{appId}/sessions/new`` (``?thirdparty``, ``?correlationId``) -> 201
* ``POST /apps/{appId}/sessions/{sessionId}/tracks/new``
* ``PUT  /apps/{appId}/sessions/{sessionId}/renegotiate``
* ``PUT  /apps/{appId}/sessions/{sessionId}/tracks/close`` (``force`` true/false)
* ``PUT  /apps/{appId}/sessions/{sessionId}/tracks/update``
* ``GET  /apps/{appId}/sessions/{sessionId}``

plus the fault switches of :mod:`bridges.local.faults` at ``/__emulator/faults`` and
``GET /healthz``. Errors: 401 without ``Authorization: Bearer <app secret>`` or with
another app id; 410 for an unknown session; 400 for a malformed body or SDP; all as
``{"errorCode", "errorDescription"}``. Per-track failures are items with
``errorCode``/``errorDescription`` inside a 200: ``not_found_track_error`` (pulling a
track that is not published), ``invalid_track_error`` (a track object that cannot be
solved), ``close_track_error`` (closing a mid that is absent or already closed).

Track semantics (what the AI flow relies on):

* local tracks with the caller's offer: the answer maps each ``{mid, trackName}`` to the
  track received on that mid (``requiresImmediateRenegotiation`` false).
* local track without an offer (``kind`` required, ``bidirectionalMediaStream`` optional):
  the SFU adds a recvonly (sendrecv if bidirectional) transceiver and sends an offer
  (``requiresImmediateRenegotiation`` true); the track received there after the caller's
  ``renegotiate`` answer is published as ``trackName``.
* remote pull ``{location: remote, sessionId, trackName}``: a sendonly transceiver
  relaying the publisher's track, and an offer to answer via ``renegotiate``.
* remote pull with ``mid: "#<trackName>"``: the relayed track replaces what the session's
  bidirectional transceiver named ``trackName`` sends (no renegotiation); a later pull into
  the same ``#name`` replaces the previous source.
* ``tracks/close`` stops the tracks at those mids; a session left with no active track
  closes its peer connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .bundle import consistent_answer, stable_offer
from .faults import MALFORMED_SDP, Fault, Faults, fault_routes
from .ice import loopback_peer_connection
from .media import TrackSwitch

__all__ = ["CallsEmulator", "CallsHTTPError"]


class CallsHTTPError(Exception):
    """A request-level Calls error: HTTP ``status`` with ``{"errorCode", "errorDescription"}``."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.description = description

    def response(self) -> JSONResponse:
        """The error as a Starlette JSON response."""
        return JSONResponse(
            {"errorCode": self.code, "errorDescription": self.description},
            status_code=self.status,
        )


@dataclass(eq=False)
class _Track:
    """A track of a session: published (``local``) or pulled (``remote``)."""

    session: _Session
    location: str
    track_name: str
    kind: str
    transceiver: RTCRtpTransceiver
    mid: str | None = None
    remote_session_id: str | None = None
    bidirectional: bool = False
    active: bool = True
    source: MediaStreamTrack | None = None  # local: the track received from the caller
    switch: TrackSwitch | None = None  # what the SFU sends on this transceiver
    feed: MediaStreamTrack | None = None  # relay proxy currently inside ``switch``
    feed_from: _Track | None = None  # the published track ``feed`` relays
    subscribers: list[_Track] = field(default_factory=list)  # pulls of this track

    def wire(self) -> dict[str, Any]:
        """The Calls ``TrackObject`` of this track (plus ``status``-free)."""
        item: dict[str, Any] = {"location": self.location, "trackName": self.track_name}
        if self.mid is not None:
            item["mid"] = self.mid
        if self.remote_session_id is not None:
            item["sessionId"] = self.remote_session_id
        return item


@dataclass(eq=False)
class _Session:
    """A Calls session: one peer connection and its tracks."""

    id: str
    thirdparty: bool
    correlation_id: str | None
    pc: RTCPeerConnection | None = None
    tracks: list[_Track] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def has_open_pc(self) -> bool:
        """Whether the session has a peer connection that is not closed."""
        return self.pc is not None and self.pc.connectionState != "closed"

    def active(self) -> list[_Track]:
        """The session's tracks that are not closed, oldest first."""
        return [t for t in self.tracks if t.active]

    def by_mid(self, mid: str) -> _Track | None:
        """The newest of the session's tracks on transceiver ``mid``, or ``None``."""
        for track in reversed(self.tracks):
            if track.mid == mid:
                return track
        return None

    def published(self, track_name: str) -> _Track | None:
        """The newest active track the session publishes (``location: "local"``) as
        ``track_name``, or ``None``."""
        for track in reversed(self.tracks):
            if track.location == "local" and track.track_name == track_name and track.active:
                return track
        return None


class CallsEmulator:
    """State and ASGI app of the Calls-compatible SFU emulator.

    Args:
        app_id: the Calls app id accepted in paths.
        app_secret: the bearer token required on every Calls request (never logged).
        base_path: the path prefix of the API (``/v1``, as in
            ``https://rtc.live.cloudflare.com/v1``).
        unconnected_timeout_s: seconds after which a session's peer connection that
            never connected is closed with its tracks (the real service expires
            unconnected sessions, so tracks whose answer nobody received do not stay).

    Serve :attr:`app` with :class:`bridges.local.server.LocalService` (all peer
    connections then live in the service loop) and call :meth:`close` in that loop on
    shutdown. Introspection (:meth:`open_sessions`, :meth:`active_tracks`,
    :attr:`request_counts`) is safe to call from any thread.
    """

    def __init__(self, app_id: str = "local-app", app_secret: str = "local-secret",
                 base_path: str = "/v1", unconnected_timeout_s: float = 30.0) -> None:
        self.app_id = app_id
        self._secret = app_secret
        self.base_path = base_path.rstrip("/")
        self.unconnected_timeout_s = unconnected_timeout_s
        self.faults = Faults()
        self.request_counts: collections.Counter[str] = collections.Counter()
        self.sessions: dict[str, _Session] = {}
        self._relay: MediaRelay | None = None
        self._drains: dict[MediaStreamTrack, asyncio.Task] = {}
        self._app: Starlette | None = None

    def __repr__(self) -> str:
        return f"<CallsEmulator app_id={self.app_id!r} sessions={len(self.sessions)}>"

    # ----------------------------------------------------------------- introspection

    def open_sessions(self) -> list[str]:
        """Ids of sessions whose peer connection is open and that have an active track."""
        return [s.id for s in list(self.sessions.values()) if s.has_open_pc() and s.active()]

    def active_tracks(self) -> list[tuple[str, str | None, str, str]]:
        """``(sessionId, mid, trackName, location)`` of every active track."""
        return [
            (s.id, t.mid, t.track_name, t.location)
            for s in list(self.sessions.values())
            for t in list(s.tracks)
            if t.active
        ]

    def session_info(self, session_id: str) -> dict[str, Any]:
        """``{"thirdparty", "correlationId", "connectionState"}`` of a session.

        Raises: ``KeyError`` for an unknown session.
        """
        s = self.sessions[session_id]
        return {
            "thirdparty": s.thirdparty,
            "correlationId": s.correlation_id,
            "connectionState": s.pc.connectionState if s.pc is not None else None,
        }

    # ----------------------------------------------------------------- app

    @property
    def app(self) -> Starlette:
        """The ASGI app (built once)."""
        if self._app is None:
            p = self.base_path + "/apps/{appId}/sessions"
            routes = [
                Route(p + "/new", self._endpoint("sessions/new", self._sessions_new), methods=["POST"]),
                Route(p + "/{sessionId}/tracks/new", self._endpoint("tracks/new", self._tracks_new),
                      methods=["POST"]),
                Route(p + "/{sessionId}/renegotiate", self._endpoint("renegotiate", self._renegotiate),
                      methods=["PUT"]),
                Route(p + "/{sessionId}/tracks/close", self._endpoint("tracks/close", self._tracks_close),
                      methods=["PUT"]),
                Route(p + "/{sessionId}/tracks/update",
                      self._endpoint("tracks/update", self._tracks_update), methods=["PUT"]),
                Route(p + "/{sessionId}", self._endpoint("session", self._get_session), methods=["GET"]),
                Route("/healthz", self._healthz, methods=["GET"]),
                *fault_routes(self.faults),
            ]
            self._app = Starlette(routes=routes)
        return self._app

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "sessions": len(self.sessions)})

    def _endpoint(self, operation: str, handler):
        async def endpoint(request: Request) -> Response:
            self.request_counts[operation] += 1
            try:
                self._authorize(request)
                fault = await self.faults.before(operation, request)
                if fault is not None and fault.status is not None:
                    return self._fault_response(fault)
                status, body = await handler(request)
                if fault is not None and fault.malformed_answer and "sessionDescription" in body:
                    body["sessionDescription"] = {**body["sessionDescription"], "sdp": MALFORMED_SDP}
                return JSONResponse(body, status_code=status)
            except CallsHTTPError as exc:
                return exc.response()
            except ClientDisconnect:  # the caller gave up (e.g. timed out during a delay)
                return Response(status_code=499)

        return endpoint

    @staticmethod
    def _fault_response(fault: Fault) -> JSONResponse:
        code = fault.error_code or ("internal_error" if fault.status >= 500 else "fault_injected")
        headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
        return JSONResponse(
            {"errorCode": code, "errorDescription": fault.error_message or "fault injected by the emulator"},
            status_code=fault.status, headers=headers,
        )

    def _authorize(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if (scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), self._secret)
                or request.path_params.get("appId") != self.app_id):
            raise CallsHTTPError(401, "authentication_error", "invalid app id or app secret")

    def _session(self, request: Request) -> _Session:
        session = self.sessions.get(request.path_params["sessionId"])
        if session is None:
            raise CallsHTTPError(410, "session_error", "session not found or expired")
        return session

    @staticmethod
    async def _json(request: Request, required: bool = True) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            if required:
                raise CallsHTTPError(400, "invalid_request_error", "a JSON body is required")
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise CallsHTTPError(400, "invalid_request_error", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise CallsHTTPError(400, "invalid_request_error", "the body is not a JSON object")
        return body

    @staticmethod
    def _description(body: dict[str, Any], expected: str) -> RTCSessionDescription | None:
        desc = body.get("sessionDescription")
        if desc is None:
            return None
        if (not isinstance(desc, dict) or desc.get("type") != expected
                or not isinstance(desc.get("sdp"), str) or not desc["sdp"].startswith("v=")):
            raise CallsHTTPError(400, "invalid_request_error",
                                 f"sessionDescription must be an SDP {expected}")
        return RTCSessionDescription(sdp=desc["sdp"], type=expected)

    # ----------------------------------------------------------------- media plumbing

    @property
    def relay(self) -> MediaRelay:
        """The emulator's one aiortc ``MediaRelay``, made on first use: it fans one
        published track out to every session that pulls it."""
        if self._relay is None:
            self._relay = MediaRelay()
        return self._relay

    def _new_pc(self, session: _Session) -> RTCPeerConnection:
        pc = loopback_peer_connection()
        session.pc = pc
        asyncio.ensure_future(self._expire_unconnected(session, pc, self.unconnected_timeout_s))
        return pc

    async def _expire_unconnected(self, session: _Session, pc: RTCPeerConnection,
                                  after: float) -> None:
        await asyncio.sleep(after)
        if session.pc is pc and pc.connectionState not in ("connected", "closed"):
            for track in list(session.tracks):
                await self._stop_track(track)
            await pc.close()

    async def _ensure_pc(self, session: _Session) -> RTCPeerConnection:
        if session.pc is None or session.pc.connectionState == "closed":
            for track in session.tracks:  # a closed connection's tracks are gone
                await self._stop_track(track)
            return self._new_pc(session)
        return session.pc

    def _drain(self, source: MediaStreamTrack) -> None:
        """Keep reading a published source so unpulled frames never pile up."""
        proxy = self.relay.subscribe(source, buffered=False)

        async def run() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    await proxy.recv()

        self._drains[source] = asyncio.ensure_future(run())

    def _publish(self, track: _Track, source: MediaStreamTrack) -> None:
        if track.source is source:
            return
        track.source = source
        self._drain(source)
        for sub in track.subscribers:
            if sub.active and sub.feed_from is track:
                self._feed(sub, track)

    def _feed(self, puller: _Track, publisher: _Track | None) -> None:
        """Make ``puller``'s transceiver send a relay of ``publisher`` (or nothing)."""
        if puller.switch is None:
            puller.switch = TrackSwitch(puller.kind)
            puller.transceiver.sender.replaceTrack(puller.switch)
        old_from = puller.feed_from
        if old_from is not None and old_from is not publisher and puller in old_from.subscribers:
            old_from.subscribers.remove(puller)
        puller.feed_from = publisher
        if publisher is not None and puller not in publisher.subscribers:
            publisher.subscribers.append(puller)
        proxy = None
        if publisher is not None and publisher.source is not None:
            proxy = self.relay.subscribe(publisher.source, buffered=False)
        old_feed, puller.feed = puller.feed, proxy
        puller.switch.set_source(proxy)
        if old_feed is not None:
            old_feed.stop()

    async def _stop_track(self, track: _Track) -> None:
        if not track.active:
            return
        track.active = False
        for sub in list(track.subscribers):
            self._feed(sub, None)
        track.subscribers.clear()
        if track.feed_from is not None:
            self._feed(track, None)
        if track.switch is not None:
            track.switch.stop()
        if track.source is not None:
            drain = self._drains.pop(track.source, None)
            if drain is not None:
                drain.cancel()
        with contextlib.suppress(Exception):
            await track.transceiver.stop()

    async def _close_if_idle(self, session: _Session) -> None:
        if not session.active() and session.pc is not None:
            await session.pc.close()

    def _find_publisher(self, session_id: str | None, track_name: str | None) -> _Track | None:
        publisher_session = self.sessions.get(session_id or "")
        if publisher_session is None or not track_name:
            return None
        return publisher_session.published(track_name)

    @staticmethod
    def _sdp(pc: RTCPeerConnection,
             offer: RTCSessionDescription | None = None) -> dict[str, str]:
        """The local description as the wire's ``sessionDescription``; an answer to
        ``offer`` goes through :func:`consistent_answer` again, because aiortc gives
        every m-section its candidate's port when it serializes."""
        desc = pc.localDescription
        if offer is not None and desc.type == "answer":
            desc = consistent_answer(offer, desc)
        return {"sdp": desc.sdp, "type": desc.type}

    @staticmethod
    def _track_error(item: dict[str, Any], code: str, description: str) -> dict[str, Any]:
        out = {k: v for k, v in item.items() if k in ("location", "mid", "sessionId", "trackName")}
        out.update(errorCode=code, errorDescription=description)
        return out

    # ----------------------------------------------------------------- operations

    async def _sessions_new(self, request: Request) -> tuple[int, dict]:
        body = await self._json(request, required=False)
        offer = self._description(body, "offer")
        thirdparty = request.query_params.get("thirdparty", "false").lower() in ("true", "1")
        session = _Session(id=secrets.token_hex(16), thirdparty=thirdparty,
                           correlation_id=request.query_params.get("correlationId"))
        self.sessions[session.id] = session
        result: dict[str, Any] = {"sessionId": session.id}
        if offer is not None:
            async with session.lock:
                pc = self._new_pc(session)
                await self._apply_remote(pc, offer)
                await pc.setLocalDescription(consistent_answer(offer, await pc.createAnswer()))
                result["sessionDescription"] = self._sdp(pc, offer)
        return 201, result

    @staticmethod
    async def _apply_remote(pc: RTCPeerConnection, desc: RTCSessionDescription) -> None:
        try:
            await pc.setRemoteDescription(desc)
        except Exception as exc:  # noqa: BLE001 - aiortc raises various types for bad SDP
            raise CallsHTTPError(400, "invalid_sdp_error", f"cannot apply the SDP {desc.type}: {exc}") from None

    async def _tracks_new(self, request: Request) -> tuple[int, dict]:
        session = self._session(request)
        body = await self._json(request)
        offer = self._description(body, "offer")
        items = body.get("tracks") or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise CallsHTTPError(400, "invalid_request_error", "tracks must be a list of track objects")
        if not items and not body.get("autoDiscover"):
            raise CallsHTTPError(400, "invalid_request_error", "no tracks given")
        async with session.lock:
            pc = await self._ensure_pc(session)
            if offer is not None:
                return 200, await self._tracks_with_offer(session, pc, offer, items,
                                                          bool(body.get("autoDiscover")))
            return 200, await self._tracks_without_offer(session, pc, items)

    async def _tracks_with_offer(self, session: _Session, pc: RTCPeerConnection,
                                 offer: RTCSessionDescription, items: list[dict],
                                 auto_discover: bool) -> dict:
        known = {t.transceiver for t in session.tracks}
        await self._apply_remote(pc, offer)
        by_mid = {t.mid: t for t in pc.getTransceivers() if t.mid is not None}
        out: list[dict] = []
        claimed: set[str] = set()
        for item in items:
            mid, name = item.get("mid"), item.get("trackName")
            if item.get("location") != "local":
                out.append(self._track_error(item, "invalid_track_error",
                                             "with an offer, only local tracks can be solved"))
                continue
            transceiver = by_mid.get(str(mid)) if mid is not None else None
            if transceiver is None or not name or transceiver.receiver.track is None:
                out.append(self._track_error(item, "invalid_track_error",
                                             f"no receiving transceiver with mid {mid!r} in the offer"))
                continue
            track = _Track(session, "local", name, transceiver.kind, transceiver, mid=str(mid),
                           bidirectional=bool(item.get("bidirectionalMediaStream")))
            session.tracks.append(track)
            self._publish(track, transceiver.receiver.track)
            claimed.add(str(mid))
            out.append(track.wire())
        if auto_discover:
            for mid, transceiver in by_mid.items():
                if (mid not in claimed and transceiver not in known
                        and transceiver.receiver.track is not None):
                    track = _Track(session, "local", secrets.token_hex(8), transceiver.kind,
                                   transceiver, mid=mid)
                    session.tracks.append(track)
                    self._publish(track, transceiver.receiver.track)
                    out.append(track.wire())
        await pc.setLocalDescription(consistent_answer(offer, await pc.createAnswer()))
        return {"requiresImmediateRenegotiation": False, "tracks": out,
                "sessionDescription": self._sdp(pc, offer)}

    async def _tracks_without_offer(self, session: _Session, pc: RTCPeerConnection,
                                    items: list[dict]) -> dict:
        out: list[dict | _Track] = []
        added = False
        for item in items:
            location, name, mid = item.get("location"), item.get("trackName"), item.get("mid")
            if not name or location not in ("local", "remote"):
                out.append(self._track_error(item, "invalid_track_error",
                                             "a track needs a location and a trackName"))
                continue
            if location == "local":
                kind = item.get("kind")
                if kind not in ("audio", "video"):
                    out.append(self._track_error(item, "invalid_track_error",
                                                 "kind is required when the SFU generates the offer"))
                    continue
                bidirectional = bool(item.get("bidirectionalMediaStream"))
                switch = TrackSwitch(kind) if bidirectional else None
                transceiver = pc.addTransceiver(switch or kind,
                                                direction="sendrecv" if bidirectional else "recvonly")
                track = _Track(session, "local", name, kind, transceiver,
                               bidirectional=bidirectional, switch=switch)
                session.tracks.append(track)
                out.append(track)
                added = True
                continue
            publisher = self._find_publisher(item.get("sessionId"), name)
            if publisher is None:
                out.append(self._track_error(item, "not_found_track_error",
                                             f"track {name!r} is not published by that session"))
                continue
            if mid is not None:  # an existing transceiver: "#<trackName>" or a mid
                target = self._existing_transceiver(session, str(mid))
                if target is None:
                    out.append(self._track_error(item, "invalid_track_error",
                                                 f"no transceiver {mid!r} in this session"))
                    continue
                self._feed(target, publisher)
                out.append({"location": "remote", "sessionId": item["sessionId"],
                            "trackName": name, "mid": target.mid})
                continue
            switch = TrackSwitch(publisher.kind)
            transceiver = pc.addTransceiver(switch, direction="sendonly")
            track = _Track(session, "remote", name, publisher.kind, transceiver,
                           remote_session_id=item["sessionId"], switch=switch)
            session.tracks.append(track)
            self._feed(track, publisher)
            out.append(track)
            added = True
        result: dict[str, Any] = {"requiresImmediateRenegotiation": added}
        if added:
            await pc.setLocalDescription(stable_offer(pc, await pc.createOffer()))
            for track in out:
                if isinstance(track, _Track):
                    track.mid = track.transceiver.mid
            result["sessionDescription"] = self._sdp(pc)
        result["tracks"] = [t.wire() if isinstance(t, _Track) else t for t in out]
        return result

    @staticmethod
    def _existing_transceiver(session: _Session, mid: str) -> _Track | None:
        if mid.startswith("#"):
            name = mid[1:]
            for track in reversed(session.tracks):
                if track.active and track.track_name == name and (
                        track.bidirectional or track.location == "remote"):
                    return track
            return None
        track = session.by_mid(mid)
        if track is not None and track.active and (track.bidirectional or track.location == "remote"):
            return track
        return None

    async def _renegotiate(self, request: Request) -> tuple[int, dict]:
        session = self._session(request)
        body = await self._json(request)
        answer = self._description(body, "answer")
        if answer is None:
            raise CallsHTTPError(400, "invalid_request_error", "sessionDescription (answer) is required")
        async with session.lock:
            pc = session.pc
            if pc is None or pc.signalingState != "have-local-offer":
                raise CallsHTTPError(400, "invalid_request_error", "no SFU offer is waiting for an answer")
            await self._apply_remote(pc, answer)
            for track in session.tracks:
                if track.active and track.location == "local" and track.source is None:
                    if track.transceiver.receiver.track is not None:
                        self._publish(track, track.transceiver.receiver.track)
        return 200, {}

    async def _tracks_close(self, request: Request) -> tuple[int, dict]:
        session = self._session(request)
        body = await self._json(request)
        items = body.get("tracks")
        if (not isinstance(items, list) or not items or not isinstance(body.get("force"), bool)
                or not all(isinstance(i, dict) and i.get("mid") for i in items)):
            raise CallsHTTPError(400, "invalid_request_error", "tracks (with mids) and force are required")
        force = body["force"]
        offer = self._description(body, "offer")
        if not force and offer is None:
            raise CallsHTTPError(400, "invalid_request_error", "force=false needs the endpoint's offer")
        out: list[dict] = []
        result: dict[str, Any] = {"requiresImmediateRenegotiation": False}
        async with session.lock:
            for item in items:
                mid = str(item["mid"])
                track = session.by_mid(mid)
                if track is None or not track.active:
                    out.append({"mid": mid, "errorCode": "close_track_error",
                                "errorDescription": "Track doesn't exist or was already closed"})
                    continue
                await self._stop_track(track)
                out.append({"mid": mid})
            if not force and session.pc is not None and session.pc.connectionState != "closed":
                await self._apply_remote(session.pc, offer)
                await session.pc.setLocalDescription(
                    consistent_answer(offer, await session.pc.createAnswer()))
                result["sessionDescription"] = self._sdp(session.pc, offer)
            await self._close_if_idle(session)
        result["tracks"] = out
        return 200, result

    async def _tracks_update(self, request: Request) -> tuple[int, dict]:
        session = self._session(request)
        body = await self._json(request)
        items = body.get("tracks")
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            raise CallsHTTPError(400, "invalid_request_error", "tracks must be a non-empty list")
        out: list[dict] = []
        async with session.lock:
            for item in items:
                mid = item.get("mid")
                target = self._existing_transceiver(session, str(mid)) if mid else None
                if target is None:
                    out.append(self._track_error(item, "invalid_track_error",
                                                 f"no reusable transceiver {mid!r} in this session"))
                    continue
                publisher = self._find_publisher(item.get("sessionId"), item.get("trackName"))
                if publisher is None:
                    out.append(self._track_error(item, "not_found_track_error",
                                                 "that track is not published by that session"))
                    continue
                self._feed(target, publisher)
                if target.location == "remote":
                    target.track_name = publisher.track_name
                    target.remote_session_id = publisher.session.id
                out.append({"location": "remote", "mid": target.mid,
                            "sessionId": publisher.session.id, "trackName": publisher.track_name})
        return 200, {"requiresImmediateRenegotiation": False, "tracks": out}

    async def _get_session(self, request: Request) -> tuple[int, dict]:
        session = self._session(request)
        tracks = []
        for track in session.tracks:
            if track.mid is None:
                continue
            item = track.wire()
            item["status"] = "active" if track.active and session.has_open_pc() else "inactive"
            tracks.append(item)
        return 200, {"tracks": tracks, "dataChannels": []}

    # ----------------------------------------------------------------- shutdown

    async def close(self) -> None:
        """Stop every track and close every peer connection (run in the service loop)."""
        for session in list(self.sessions.values()):
            for track in list(session.tracks):
                await self._stop_track(track)
            if session.pc is not None:
                await session.pc.close()
        for task in list(self._drains.values()):
            task.cancel()
        self._drains.clear()
