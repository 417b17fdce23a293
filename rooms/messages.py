"""The Orange Meets room protocol: every client and server message, as pydantic models.

JSON field names are exactly those Orange's clients send (``app/types/Messages.ts`` of
cloudflare/orange): camelCase, ``type`` as the discriminator. Client messages are parsed
through one discriminated union (:data:`ClientMessage`) by :func:`parse_client_message`,
which raises :class:`ProtocolError` with a short, safe explanation for anything that is
not a valid message (not JSON, not an object, unknown ``type``, wrong fields, too large).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import RoomsError

__all__ = [
    "AI_TRACK_NAME",
    "AI_USER_ID",
    "AiPublicState",
    "CallsApiHistoryEntry",
    "ClientMessage",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DirectMessage",
    "DisableAi",
    "E2eeMlsMessage",
    "EnableAi",
    "Heartbeat",
    "MuteUser",
    "PartyserverPing",
    "ProtocolError",
    "RelinquishAiControl",
    "RequestAiControl",
    "RoomState",
    "TrackRef",
    "User",
    "UserLeft",
    "UserTracks",
    "UserUpdate",
    "parse_client_message",
    "server_message",
]

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
"""Largest client message accepted, in bytes of UTF-8 (64 KiB)."""

AI_USER_ID = "ai"
"""The id of the virtual user that stands for the AI while it is enabled."""

AI_TRACK_NAME = "ai-generated-voice"
"""The Calls track name of the AI's voice (and of its bidirectional transceiver)."""


class ProtocolError(RoomsError, ValueError):
    """A client message is not a valid message of the room protocol.

    The message (``str(error)``) is short, names the problem, and is safe to send back
    to the client in an ``error`` message: it never echoes large input.
    """


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def wire(self) -> dict[str, Any]:
        """Return the JSON object of this model as sent on the wire (unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class UserTracks(_Model):
    """A user's published tracks: ``"<sessionId>/<trackName>"`` references and flags."""

    audio: str | None = None
    audioEnabled: bool | None = None
    audioUnavailable: bool = False
    video: str | None = None
    videoEnabled: bool | None = None
    screenshare: str | None = None
    screenShareEnabled: bool | None = None


class User(_Model):
    """A participant as Orange's clients describe it (``User`` in Messages.ts)."""

    id: str
    name: str
    transceiverSessionId: str | None = None
    raisedHand: bool = False
    speaking: bool = False
    joined: bool = False
    tracks: UserTracks = Field(default_factory=UserTracks)


class AiPublicState(_Model):
    """The AI part of ``RoomState`` as clients see it."""

    enabled: bool = False
    controllingUser: str | None = None
    error: str | None = None
    connectionPending: bool | None = None


class RoomState(_Model):
    """The state broadcast in ``roomState``: meeting id, users (with the AI), AI state."""

    meetingId: str | None = None
    users: list[User] = Field(default_factory=list)
    ai: AiPublicState = Field(default_factory=AiPublicState)


class TrackRef(_Model):
    """A Calls track a client publishes: its session id and track name (``TrackObject``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    sessionId: str = Field(min_length=1, max_length=256)
    trackName: str = Field(min_length=1, max_length=256)
    location: str | None = None
    mid: str | None = None


# ---- client to room ---------------------------------------------------------------


class UserUpdate(_Model):
    type: Literal["userUpdate"]
    user: User


class DirectMessage(_Model):
    type: Literal["directMessage"]
    to: str
    message: str


class MuteUser(_Model):
    type: Literal["muteUser"]
    id: str


class UserLeft(_Model):
    type: Literal["userLeft"]


class Heartbeat(_Model):
    type: Literal["heartbeat"]


class PartyserverPing(_Model):
    type: Literal["partyserver-ping"]


class EnableAi(_Model):
    type: Literal["enableAi"]
    instructions: str | None = Field(default=None, max_length=16_000)
    voice: str | None = Field(default=None, max_length=64)


class DisableAi(_Model):
    type: Literal["disableAi"]


class RequestAiControl(_Model):
    type: Literal["requestAiControl"]
    track: TrackRef


class RelinquishAiControl(_Model):
    """``relinquishAiControl``; Orange's historical spelling ``relenquishAiControl`` too."""

    type: Literal["relinquishAiControl", "relenquishAiControl"]


class CallsApiHistoryEntry(_Model):
    type: Literal["callsApiHistoryEntry"]
    entry: Any
    sessionId: str | None = None


class E2eeMlsMessage(_Model):
    type: Literal["e2eeMlsMessage"]
    payload: str


ClientMessage = Annotated[
    Union[
        UserUpdate,
        DirectMessage,
        MuteUser,
        UserLeft,
        Heartbeat,
        PartyserverPing,
        EnableAi,
        DisableAi,
        RequestAiControl,
        RelinquishAiControl,
        CallsApiHistoryEntry,
        E2eeMlsMessage,
    ],
    Field(discriminator="type"),
]
"""Every message a client may send, discriminated by ``type``."""

_CLIENT_ADAPTER: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
_KNOWN_TYPES = frozenset(
    t
    for model in (
        UserUpdate, DirectMessage, MuteUser, UserLeft, Heartbeat, PartyserverPing,
        EnableAi, DisableAi, RequestAiControl, RelinquishAiControl,
        CallsApiHistoryEntry, E2eeMlsMessage,
    )
    for t in model.model_fields["type"].annotation.__args__  # type: ignore[union-attr]
)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"][1:]) or "message"
        parts.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def parse_client_message(
    raw: str | bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ClientMessage:
    """Parse one WebSocket text frame into a client message.

    Args:
        raw: the frame, as text or UTF-8 bytes.
        max_bytes: the size limit in bytes (default 64 KiB).

    Returns:
        One of the models of :data:`ClientMessage`.

    Raises:
        ProtocolError: too large, not UTF-8, not JSON, not an object, no or unknown
            ``type``, or fields missing or of the wrong type.
    """
    size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise ProtocolError(f"message too large: {size} bytes (limit {max_bytes})")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("message must be a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("message has no string 'type'")
    if kind not in _KNOWN_TYPES:
        shown = kind if len(kind) <= 40 else kind[:40] + "…"
        raise ProtocolError(f"unknown message type {shown!r}")
    try:
        return _CLIENT_ADAPTER.validate_python(data, strict=True)
    except ValidationError as error:
        raise ProtocolError(f"invalid {kind}: {_describe(error)}") from None


# ---- room to client ---------------------------------------------------------------


def server_message(type_: str, **fields: Any) -> dict[str, Any]:
    """Build a server message ``{"type": type_, **fields}``, leaving out ``None`` fields.

    The server messages are ``roomState{state}``, ``error{error?}``,
    ``directMessage{from, message}``, ``muteMic{}``, ``partyserver-pong{}``,
    ``e2eeMlsMessage{payload}`` and ``userLeftNotification{id}`` (Messages.ts).
    """
    message: dict[str, Any] = {"type": type_}
    message.update((k, v) for k, v in fields.items() if v is not None)
    return message
