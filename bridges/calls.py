"""The Cloudflare Calls client: sessions and tracks of the SFU over HTTP.

Implements :class:`rooms.ports.MediaBridge` against the contract
``bridges/contracts/calls.yaml`` (from Cloudflare's published ``realtime-api-2024-05-21.yaml``; base URL
``https://rtc.live.cloudflare.com/v1`` or a local emulator's), authenticating with the
app secret as a bearer token (the spec's ``secret`` security scheme).

Usage::

    async with CallsClient(app_id, app_secret) as calls:
        session_id, _ = await calls.new_session(thirdparty=True, correlation_id=meeting_id)
        result = await calls.new_tracks(session_id, [TrackObject(
            location="local", trackName="ai-generated-voice",
            bidirectionalMediaStream=True, kind="audio")])
        ...  # answer result.sessionDescription (an offer), then
        await calls.renegotiate(session_id, answer)

Failures raise :mod:`bridges.errors` exceptions (all :class:`rooms.ports.BridgeError`);
retryable ones (408/429/5xx, timeouts, connection errors, retryable Calls codes) are
repeated with exponential backoff first.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

import httpx

from rooms.ports import (
    CloseTracksResult,
    InvalidAnswer,
    SessionDescription,
    SessionState,
    TrackObject,
    TracksResult,
)

from .http import HttpBridge
from .errors import (
    CALLS_RETRYABLE_CODES,
    CallsError,
    TrackError,
    is_retryable_status,
    parse_retry_after,
    retrying,
    scrub,
    transport_error,
)
from .endpoints import CALLS_BASE_URL
from .sdp import validate_sdp

__all__ = ["CALLS_BASE_URL", "CallsClient"]
SERVICE = "calls"
#: The per-track code that ``tracks/close`` reports for a track that is absent or
#: already closed: closing it again is not a failure.
CLOSE_TRACK_ERROR = "close_track_error"

log = logging.getLogger("ray_rooms.bridges.calls")


class CallsClient(HttpBridge):
    """A Cloudflare Calls (Realtime SFU) client for one app: a :class:`MediaBridge`.

    Args:
        app_id: the Calls app id (the ``{appId}`` of every path).
        app_secret: the app's secret, sent as ``Authorization: Bearer``; never shown in
            a repr, log line or error.
        base_url: the API root, e.g. ``https://rtc.live.cloudflare.com/v1`` or an
            emulator's ``http://127.0.0.1:<port>/v1``.
        timeout: seconds allowed for each HTTP attempt (connect, write, read).
        retries: how many times a retryable failure is repeated (``0``: never), so at
            most ``retries + 1`` attempts per operation.
        backoff: the first wait between attempts in seconds; each further wait doubles.
        max_backoff: the longest wait between attempts in seconds.
        client: an ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`); by
            default the bridge makes and owns one.
    """

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        *,
        base_url: str = CALLS_BASE_URL,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not app_id:
            raise ValueError("app_id is empty")
        self.app_id = app_id
        self._secret = app_secret
        super().__init__(base_url=base_url, timeout=timeout, retries=retries,
                         backoff=backoff, max_backoff=max_backoff, client=client)

    def __repr__(self) -> str:
        return f"CallsClient(app_id={self.app_id!r}, base_url={self.base_url!r})"

    # -- operations (the spec's paths under /apps/{appId}/sessions) -------------------

    async def new_session(
        self, *, thirdparty: bool = False, correlation_id: str | None = None,
        offer: SessionDescription | None = None,
    ) -> tuple[str, SessionDescription | None]:
        """Create a session: ``POST /apps/{appId}/sessions/new`` (201 expected).

        Args:
            thirdparty: send ``thirdparty=true``: the session will connect to an ICE-lite
                peer such as a server (the AI's peer), not a browser.
            correlation_id: a diagnostic label (``correlationId``), e.g. the meeting id.
            offer: an SDP offer to negotiate at once (optional).

        Returns:
            ``(sessionId, answer)``; ``answer`` is the SFU's SDP answer when an offer was
            sent, else ``None``.

        Raises:
            CallsError: an error status or a request-level ``errorCode``.
            InvalidAnswer: no ``sessionId``, or an answer that is not SDP.
            BridgeTimeout, BridgeConnectionError: no answer (after the retries).
        """
        params: dict[str, str] = {}
        if thirdparty:
            params["thirdparty"] = "true"
        if correlation_id:
            params["correlationId"] = correlation_id
        body = {"sessionDescription": _sd(offer)} if offer is not None else None
        data = await self._request("POST", "sessions/new", "sessions/new",
                                   params=params, json=body, creates=True)
        session_id = data.get("sessionId")
        if not isinstance(session_id, str) or not session_id:
            raise InvalidAnswer("the answer has no sessionId", service=SERVICE,
                                operation="sessions/new")
        answer = None
        if offer is not None:
            answer = _session_description(data, "answer", "sessions/new", required=True)
        return session_id, answer

    async def new_tracks(
        self, session_id: str, tracks: list[TrackObject], *,
        offer: SessionDescription | None = None,
    ) -> TracksResult:
        """Add tracks: ``POST /apps/{appId}/sessions/{sessionId}/tracks/new``.

        The three shapes the AI flow uses (``tracks`` items):

        * publish with an offer: ``{location: "local", mid, trackName}`` and ``offer``;
        * publish without an offer (the SFU offers): ``{location: "local", trackName,
          bidirectionalMediaStream: true, kind: "audio"}``;
        * pull: ``{location: "remote", sessionId, trackName}``, optionally ``mid`` (e.g.
          ``"#ai-generated-voice"`` to reuse the transceiver of that track name).

        Args:
            session_id: the session to add the tracks to.
            tracks: one :class:`TrackObject` per track (``None`` fields are not sent).
            offer: this endpoint's SDP offer, if it has one.

        Returns:
            the tracks with their ``mid``; ``sessionDescription`` is the SFU's answer (an
            offer was sent) or offer (none was sent), normalised to CRLF.

        Raises:
            TrackError: a track failed inside the 200 (the first failure; the message
                counts the others).
            CallsError, InvalidAnswer, BridgeTimeout, BridgeConnectionError: as
                :meth:`new_session`.
        """
        body: dict[str, Any] = {"tracks": [t.wire() for t in tracks]}
        if offer is not None:
            body["sessionDescription"] = _sd(offer)
        data = await self._request("POST", f"sessions/{_seg(session_id)}/tracks/new",
                                   "tracks/new", json=body, creates=True)
        _raise_track_errors(data, "tracks/new")
        return TracksResult(
            tracks=_tracks(data, "tracks/new"),
            sessionDescription=_session_description(
                data, "answer" if offer is not None else "offer", "tracks/new"),
            requiresImmediateRenegotiation=bool(data.get("requiresImmediateRenegotiation")),
        )

    async def renegotiate(self, session_id: str, answer: SessionDescription) -> None:
        """Answer the SFU's offer: ``PUT /apps/{appId}/sessions/{sessionId}/renegotiate``.

        Args:
            session_id: the session whose offer is answered.
            answer: this endpoint's SDP answer (``type="answer"``).

        Raises:
            CallsError, BridgeTimeout, BridgeConnectionError: as :meth:`new_session`.
        """
        await self._request("PUT", f"sessions/{_seg(session_id)}/renegotiate",
                            "renegotiate", json={"sessionDescription": _sd(answer)})

    async def close_tracks(
        self, session_id: str, mids: list[str], *, force: bool = True,
        offer: SessionDescription | None = None,
    ) -> CloseTracksResult:
        """Close tracks: ``PUT /apps/{appId}/sessions/{sessionId}/tracks/close``.

        Sends ``{tracks: [{mid}], force, sessionDescription?}``. A track reported with
        ``close_track_error`` (absent or already closed) counts as closed: it stays in
        the result, nothing is raised. With no ``mids`` nothing is sent and an empty
        result is returned (the spec requires at least one track).

        Args:
            session_id: the session that holds the tracks.
            mids: the tracks' transceiver mids on this session.
            force: ``True``: stop the tracks without an SDP exchange; ``False``: send
                ``offer`` (this endpoint's offer) and apply the returned answer.
            offer: required when ``force`` is ``False``.

        Returns:
            the per-track results and, for a negotiated close, the SFU's answer.

        Raises:
            TrackError: a track failed with another code than ``close_track_error``.
            CallsError, InvalidAnswer, BridgeTimeout, BridgeConnectionError: as
                :meth:`new_session`.
            ValueError: ``force=False`` without an ``offer``.
        """
        if not force and offer is None:
            raise ValueError("a negotiated close (force=False) needs this endpoint's offer")
        if not mids:
            return CloseTracksResult()
        body: dict[str, Any] = {"tracks": [{"mid": mid} for mid in mids], "force": force}
        if offer is not None:
            body["sessionDescription"] = _sd(offer)
        data = await self._request("PUT", f"sessions/{_seg(session_id)}/tracks/close",
                                   "tracks/close", json=body)
        _raise_track_errors(data, "tracks/close", tolerate=CLOSE_TRACK_ERROR)
        return CloseTracksResult(
            tracks=_tracks(data, "tracks/close"),
            sessionDescription=_session_description(data, "answer", "tracks/close"),
            requiresImmediateRenegotiation=bool(data.get("requiresImmediateRenegotiation")),
        )

    async def update_tracks(self, session_id: str, tracks: list[TrackObject]) -> TracksResult:
        """Reuse transceivers for other tracks: ``PUT .../sessions/{sessionId}/tracks/update``.

        Args:
            session_id: the session that holds the transceivers.
            tracks: ``{location: "remote", sessionId, trackName, mid}`` items.

        Returns:
            the updated tracks (``sessionDescription`` is ``None``: this operation
            exchanges no SDP).

        Raises:
            TrackError, CallsError, BridgeTimeout, BridgeConnectionError: as
                :meth:`new_tracks`.
        """
        data = await self._request("PUT", f"sessions/{_seg(session_id)}/tracks/update",
                                   "tracks/update", json={"tracks": [t.wire() for t in tracks]})
        _raise_track_errors(data, "tracks/update")
        return TracksResult(
            tracks=_tracks(data, "tracks/update"),
            requiresImmediateRenegotiation=bool(data.get("requiresImmediateRenegotiation")),
        )

    async def get_session(self, session_id: str) -> SessionState:
        """Read a session's tracks and data channels: ``GET /apps/{appId}/sessions/{sessionId}``.

        Returns:
            the tracks (with ``status``: active, inactive, initializing) and data
            channels; closed tracks may be listed as inactive.

        Raises:
            CallsError, InvalidAnswer, BridgeTimeout, BridgeConnectionError: as
                :meth:`new_session`.
        """
        data = await self._request("GET", f"sessions/{_seg(session_id)}", "sessions/get")
        channels = data.get("dataChannels") or []
        if not isinstance(channels, list):
            raise InvalidAnswer("dataChannels is not a list", service=SERVICE,
                                operation="sessions/get")
        return SessionState(tracks=_tracks(data, "sessions/get"), dataChannels=channels)

    # -- HTTP --------------------------------------------------------------------------

    async def _request(self, method: str, path: str, operation: str, *,
                       params: dict[str, str] | None = None,
                       json: dict[str, Any] | None = None,
                       creates: bool = False) -> dict[str, Any]:
        """Send one operation with retries (for one that ``creates`` something, only the
        safe ones: :func:`bridges.errors.safe_to_repeat`); return the 2xx JSON object
        without errors."""
        url = f"{self.base_url}/apps/{_seg(self.app_id)}/{path}"
        data: dict[str, Any] = {}
        async for attempt in retrying(self.retries, self.backoff, self.max_backoff,
                                      creates=creates):
            with attempt:
                data = await self._attempt(method, url, operation, params, json)
        return data

    async def _attempt(self, method: str, url: str, operation: str,
                       params: dict[str, str] | None,
                       json: dict[str, Any] | None) -> dict[str, Any]:
        started = time.monotonic()
        failure = None
        try:
            response = await self._client.request(
                method, url, params=params, json=json, timeout=self.timeout,
                headers={"Authorization": f"Bearer {self._secret}",
                         "Accept": "application/json"},
            )
        except httpx.TransportError as exc:
            failure = transport_error(exc, service=SERVICE, operation=operation,
                                      timeout=self.timeout, secrets=[self._secret])
        if failure is not None:  # raised outside the except: no httpx context kept
            log.info("calls %s: %s", operation, failure)
            raise failure
        log.debug("calls %s: HTTP %s in %.3f s", operation, response.status_code,
                  time.monotonic() - started)
        return self._decode(response, operation)

    def _decode(self, response: httpx.Response, operation: str) -> dict[str, Any]:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if not 200 <= status < 300:
            code = desc = None
            if isinstance(body, dict) and body.get("errorCode"):
                code = str(body["errorCode"])
                desc = str(body.get("errorDescription") or code)
            else:
                desc = response.text or response.reason_phrase or "no description"
            raise CallsError(
                scrub(desc, [self._secret]), service=SERVICE, operation=operation,
                status=status, code=code,
                retryable=is_retryable_status(status) or code in CALLS_RETRYABLE_CODES,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if body is None and not response.content.strip():
            body = {}  # an empty 2xx answer: nothing to report (e.g. renegotiate)
        if not isinstance(body, dict):
            raise InvalidAnswer(
                f"HTTP {status} without a JSON object: "
                f"{scrub(response.text, [self._secret]) or 'empty body'}",
                service=SERVICE, operation=operation, status=status,
            )
        if body.get("errorCode"):
            code = str(body["errorCode"])
            raise CallsError(
                scrub(str(body.get("errorDescription") or code), [self._secret]),
                service=SERVICE, operation=operation, status=status, code=code,
                retryable=code in CALLS_RETRYABLE_CODES,
            )
        return body


def _seg(value: str) -> str:
    """Quote one path segment (ids are opaque strings)."""
    return quote(value, safe="")


def _sd(description: SessionDescription) -> dict[str, str]:
    return {"sdp": description.sdp, "type": description.type}


def _tracks(data: dict[str, Any], operation: str) -> list[TrackObject]:
    items = data.get("tracks") or []
    if not isinstance(items, list) or not all(isinstance(t, dict) for t in items):
        raise InvalidAnswer("tracks is not a list of objects", service=SERVICE,
                            operation=operation)
    return [TrackObject.model_validate(t) for t in items]


def _session_description(data: dict[str, Any], expected_type: str, operation: str, *,
                         required: bool = False) -> SessionDescription | None:
    """Return the answer's validated ``sessionDescription`` (or ``None`` if absent)."""
    raw = data.get("sessionDescription")
    if raw is None:
        if required:
            raise InvalidAnswer(f"the answer has no SDP {expected_type}", service=SERVICE,
                                operation=operation)
        return None
    if not isinstance(raw, dict) or raw.get("type") not in ("offer", "answer"):
        raise InvalidAnswer("sessionDescription is not {sdp, type: offer|answer}",
                            service=SERVICE, operation=operation)
    if raw["type"] != expected_type:
        raise InvalidAnswer(f"expected an SDP {expected_type}, got an {raw['type']}",
                            service=SERVICE, operation=operation)
    sdp = validate_sdp(raw.get("sdp"), expected_type=expected_type, service=SERVICE,
                       operation=operation)
    return SessionDescription(sdp=sdp, type=raw["type"])


def _raise_track_errors(data: dict[str, Any], operation: str, *,
                        tolerate: str | None = None) -> None:
    """Raise :class:`TrackError` for the first per-track ``errorCode`` not tolerated."""
    items = data.get("tracks") or []
    failed = [t for t in items if isinstance(t, dict) and t.get("errorCode")
              and t.get("errorCode") != tolerate]
    if not failed:
        return
    first = failed[0]
    code = str(first["errorCode"])
    name = first.get("trackName")
    mid = first.get("mid")
    which = ", ".join(p for p in (f"mid {mid}" if mid else "",
                                  f"trackName {name}" if name else "") if p) or "a track"
    desc = f"{which}: {first.get('errorDescription') or code}"
    if len(failed) > 1:
        desc += f" (and {len(failed) - 1} more failed track(s))"
    raise TrackError(
        scrub(desc), service=SERVICE, operation=operation, status=200, code=code,
        retryable=code in CALLS_RETRYABLE_CODES,
        mid=str(mid) if mid is not None else None,
        track_name=str(name) if name is not None else None,
    )
