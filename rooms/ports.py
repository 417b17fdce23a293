"""The ports through which a room reaches the outside world.

`rooms/` never imports httpx, aiortc or Ray: it declares here what it needs from the
two services that the AI agent drives, and `bridges/` implements these protocols
(over httpx against the real services or the local emulators).

* :class:`MediaBridge` is the SFU: Cloudflare Calls, as specified by
  the project's contract ``bridges/contracts/calls.yaml``.
* :class:`AiService` is the voice model: OpenAI Realtime over WebRTC, as specified by
  the project's contract ``bridges/contracts/openai_realtime.yaml``.

Every failure of a bridge is raised as a :class:`BridgeError` (or a subclass), which
carries enough to tell a user what failed and why without any secret in it.

Exception hierarchy::

    BridgeError                 a call to an outside service failed
    ├── (bridges.errors.*)      HTTP status, service error code, per-track errors, timeouts
    ├── InvalidAnswer           the service answered with something that is not what the
    │                           protocol promises (e.g. an SDP answer that is not SDP)
    └── CallEnded               the voice session a sideband attaches to no longer exists
                                (the service answered 404, or closed it for good)

A third port, :class:`AiSideband`, is the server-side control channel of a live voice
session (OpenAI's "sideband": ``wss://.../v1/realtime?call_id=<call id>``, or the Live
API's ``/v1/live/sessions/{id}/attach``); a link speaks the backend-neutral terms of
:mod:`rooms.sideband_wire` and turns them into its backend's events.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from .errors import RoomsError
from .sideband_wire import Note, SessionControl

__all__ = [
    "AiService",
    "AiSideband",
    "CallEnded",
    "SidebandLink",
    "BridgeError",
    "CloseTracksResult",
    "InvalidAnswer",
    "MediaBridge",
    "RealtimeCall",
    "SessionDescription",
    "SessionState",
    "TrackObject",
    "TracksResult",
]


class BridgeError(RoomsError):
    """A call to an outside service (Calls or OpenAI) failed.

    Attributes:
        service: ``"calls"`` or ``"openai"``.
        operation: the spec operation that failed, e.g. ``"tracks/new"``.
        status: the HTTP status, or ``None`` when no response arrived (timeout, refused).
        code: the service's own error code (Calls ``errorCode``, OpenAI ``error.code``
            or ``error.type``), or ``None``.
        description: a human-readable cause, never containing a secret.
        retryable: whether repeating the same request may succeed (429, 5xx, timeouts,
            Calls' retryable codes).
    """

    def __init__(
        self,
        description: str,
        *,
        service: str = "unknown",
        operation: str = "",
        status: int | None = None,
        code: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(description)
        self.service = service
        self.operation = operation
        self.status = status
        self.code = code
        self.description = description
        self.retryable = retryable

    def __str__(self) -> str:  # e.g. "calls tracks/new: HTTP 400 invalid_request: no such session"
        parts = [f"{self.service} {self.operation}".strip() + ":"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(f"{self.code}:")
        parts.append(self.description)
        return " ".join(parts)


class InvalidAnswer(BridgeError):
    """The service answered, but not with what the protocol promises (e.g. bad SDP)."""


class CallEnded(BridgeError):
    """The voice session a sideband attaches to is gone (hung up, expired, unknown):
    attaching again cannot succeed."""


class _Wire(BaseModel):
    """Base of the wire models: camelCase as the Calls API spells it, extra keys kept."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")


class SessionDescription(_Wire):
    """An SDP offer or answer (Calls ``SessionDescription`` schema).

    Attributes:
        sdp: the SDP text (RFC 8866), lines ending CRLF or LF.
        type: ``"offer"`` or ``"answer"``.
    """

    sdp: str
    type: Literal["offer", "answer"]


class TrackObject(_Wire):
    """A track in a Calls request or response (Calls ``TrackObject`` schema).

    ``location="local"`` publishes a track from this session; ``"remote"`` pulls the
    track ``trackName`` of session ``sessionId``. ``mid`` may be ``"#<trackName>"`` to
    address an existing (bidirectional) transceiver by its track name.
    Response items may also carry ``errorCode``/``errorDescription`` (per-track errors
    inside a 200) and, from GET session, ``status``.
    """

    location: Literal["local", "remote"] | None = None
    mid: str | None = None
    sessionId: str | None = None
    trackName: str | None = None
    bidirectionalMediaStream: bool | None = None
    kind: str | None = None
    errorCode: str | None = None
    errorDescription: str | None = None
    status: str | None = None

    def wire(self) -> dict:
        """Return the JSON object for the wire, without unset (``None``) fields."""
        return self.model_dump(exclude_none=True)


class TracksResult(_Wire):
    """The answer of ``POST .../tracks/new`` (Calls ``TracksResponse``), errors removed.

    Attributes:
        tracks: one item per requested track, with its assigned ``mid``.
        sessionDescription: the SFU's offer (no offer sent, or remote tracks pulled) or
            answer (an offer sent), if any.
        requiresImmediateRenegotiation: the caller must answer ``sessionDescription``
            with ``PUT .../renegotiate``.
    """

    tracks: list[TrackObject] = Field(default_factory=list)
    sessionDescription: SessionDescription | None = None
    requiresImmediateRenegotiation: bool = False


class CloseTracksResult(_Wire):
    """The answer of ``PUT .../tracks/close`` (Calls ``CloseTracksResponse``).

    Per-track ``close_track_error`` (already closed) is kept in ``tracks`` and is not
    raised; other per-track errors are raised by the bridge.
    """

    tracks: list[TrackObject] = Field(default_factory=list)
    sessionDescription: SessionDescription | None = None
    requiresImmediateRenegotiation: bool = False


class SessionState(_Wire):
    """The answer of ``GET .../sessions/{id}`` (Calls ``GetSessionStateResponse``)."""

    tracks: list[TrackObject] = Field(default_factory=list)
    dataChannels: list[dict] = Field(default_factory=list)


class RealtimeCall(BaseModel):
    """A call created with OpenAI ``POST /v1/realtime/calls`` (operation create-realtime-call).

    Attributes:
        call_id: the id from the ``Location`` header (``/v1/realtime/calls/<call_id>``).
        answer: the SDP answer from the 201 body.
    """

    call_id: str
    answer: SessionDescription


@runtime_checkable
class MediaBridge(Protocol):
    """The SFU: Cloudflare Calls' session and track operations (the Calls spec).

    Every method raises :class:`BridgeError` on failure, including per-track errors
    inside a 200, and :class:`InvalidAnswer` when the SFU's SDP is not SDP.
    """

    async def new_session(
        self, *, thirdparty: bool = False, correlation_id: str | None = None,
        offer: SessionDescription | None = None,
    ) -> tuple[str, SessionDescription | None]:
        """``POST /apps/{appId}/sessions/new``: return ``(sessionId, answer or None)``."""
        ...

    async def new_tracks(
        self, session_id: str, tracks: list[TrackObject], *,
        offer: SessionDescription | None = None,
    ) -> TracksResult:
        """``POST /apps/{appId}/sessions/{sessionId}/tracks/new``."""
        ...

    async def renegotiate(self, session_id: str, answer: SessionDescription) -> None:
        """``PUT /apps/{appId}/sessions/{sessionId}/renegotiate`` with the caller's answer."""
        ...

    async def close_tracks(
        self, session_id: str, mids: list[str], *, force: bool = True,
        offer: SessionDescription | None = None,
    ) -> CloseTracksResult:
        """``PUT /apps/{appId}/sessions/{sessionId}/tracks/close``."""
        ...

    async def update_tracks(self, session_id: str, tracks: list[TrackObject]) -> TracksResult:
        """``PUT /apps/{appId}/sessions/{sessionId}/tracks/update``."""
        ...

    async def get_session(self, session_id: str) -> SessionState:
        """``GET /apps/{appId}/sessions/{sessionId}``."""
        ...


@runtime_checkable
class AiService(Protocol):
    """The voice model: OpenAI Realtime calls over WebRTC (the OpenAI spec excerpt)."""

    async def create_call(
        self, offer: SessionDescription, *, model: str,
        instructions: str | None = None, voice: str | None = None,
    ) -> RealtimeCall:
        """``POST /v1/realtime/calls`` (create-realtime-call): multipart offer + session."""
        ...

    async def hangup(self, call_id: str) -> None:
        """``POST /v1/realtime/calls/{call_id}/hangup`` (hangup-realtime-call)."""
        ...


@runtime_checkable
class SidebandLink(Protocol):
    """One attached sideband: a WebSocket to a live voice session (OpenAI's server-side
    control channel; source: "Webhooks and server-side controls"), speaking the terms of
    :mod:`rooms.sideband_wire` and its backend's events on the wire."""

    async def send_control(self, control: SessionControl,
                           previous: SessionControl | None) -> None:
        """Make the session what ``control`` says (instructions naming the speaker, the
        model's input on or off, the tools), given what this link sent last
        (``previous``; ``None`` right after attaching).

        Raises:
            BridgeError: the link is closed or the send failed.
        """
        ...

    async def send_tool_output(self, call_id: str, output: str) -> None:
        """Answer tool call ``call_id`` with ``output`` (JSON text) and let the model go on.

        Raises:
            BridgeError: the link is closed or the send failed.
        """
        ...

    async def receive(self) -> Note | None:
        """Wait for the next thing the session reports.

        Returns:
            A :data:`~rooms.sideband_wire.Note`, or ``None`` for an event the room does
            not use.

        Raises:
            BridgeError: the link closed (normally or not); :class:`CallEnded` when the
                service closed it because the session ended.
        """
        ...

    async def close(self) -> None:
        """Close the link (idempotent; never raises)."""
        ...


@runtime_checkable
class AiSideband(Protocol):
    """Opens sidebands to live voice sessions."""

    async def attach(self, call_id: str) -> SidebandLink:
        """Attach to the live session of call ``call_id``.

        Raises:
            CallEnded: the service does not know the call (404): it ended.
            BridgeError: any other failure (retryable ones have ``retryable`` set).
        """
        ...

