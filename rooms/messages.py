"""The Orange Meets room protocol: every client and server message, as pydantic models.

JSON field names are exactly those Orange's clients send (``app/types/Messages.ts`` of
cloudflare/orange): camelCase, ``type`` as the discriminator. Client messages are parsed
through one discriminated union (:data:`ClientMessage`) by :func:`parse_client_message`,
which raises :class:`ProtocolError` with a short, safe explanation for anything that is
not a valid message (not JSON, not an object, unknown ``type``, wrong fields, too large).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .errors import RoomsError

__all__ = [
    "AI_TRACK_NAME",
    "AI_USER_ID",
    "AiPublicState",
    "CallsApiHistoryEntry",
    "ClientMessage",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_ID_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_TEXT_CHARS",
    "MAX_TRACK_ID_CHARS",
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
    "check_conn_id",
    "check_socket_conn_id",
    "encode_server_message",
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

HTTP_CONN_PREFIX = "http:"
"""The prefix of the connection id the HTTP route gives a sender (``http:<name>``);
reserved: no socket may claim it."""

MAX_ID_CHARS = 128
"""Longest connection id, user id or user name, in characters."""

MAX_TRACK_ID_CHARS = 256
"""Longest Calls session id or track name (and ``transceiverSessionId``), in characters;
a user's track reference ``"<sessionId>/<trackName>"`` is at most twice this plus one."""

MAX_TEXT_CHARS = 16_384
"""Longest free text of a message (``directMessage.message``), in characters."""

MAX_PAYLOAD_CHARS = 49_152
"""Longest ``e2eeMlsMessage.payload`` (base64 MLS), in characters."""

MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects in a client message."""

_SOCKET_CONN_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_HTTP_CONN_ID = re.compile(r"http:[^\x00-\x1f\x7f-\x9f\ud800-\udfff]{1,64}")
_NO_CONTROL = re.compile(r"[^\x00-\x1f\x7f-\x9f]*")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def check_socket_conn_id(conn: object) -> str:
    """Return ``conn`` if a socket may claim it as its connection id (partysocket's
    ``_pk``), else raise :class:`ProtocolError`.

    A socket's connection id is 1-128 characters of letters, digits and ``. _ ~ -``,
    matched in full, and not the AI's id (``ai``, in any case); the ``http:`` prefix of
    HTTP senders cannot match (``:`` is not allowed).
    """
    if not isinstance(conn, str) or not _SOCKET_CONN_ID.fullmatch(conn):
        raise ProtocolError(
            f"a connection id must be 1-{MAX_ID_CHARS} characters of letters, digits "
            "and . _ ~ -")
    if conn.lower() == AI_USER_ID:
        raise ProtocolError(f"the connection id {AI_USER_ID!r} is reserved")
    return conn


def check_conn_id(conn: object) -> str:
    """Return ``conn`` if it can name a connection (a socket's id, see
    :func:`check_socket_conn_id`, or an HTTP sender's ``http:<name>``), else raise
    :class:`ProtocolError`. Matched in full; no control characters."""
    if isinstance(conn, str) and _HTTP_CONN_ID.fullmatch(conn):
        return conn
    return check_socket_conn_id(conn)


def _conn_id(value: str) -> str:
    try:
        return check_conn_id(value)
    except ProtocolError as error:
        raise ValueError(str(error)) from None


def _no_control(value: str) -> str:
    if not _NO_CONTROL.fullmatch(value):
        raise ValueError("control characters are not allowed in an id")
    return value


ConnId = Annotated[str, AfterValidator(_conn_id)]
"""A connection id field (``to``, ``id``): see :func:`check_conn_id`."""

TrackId = Annotated[str, Field(min_length=1, max_length=MAX_TRACK_ID_CHARS),
                    AfterValidator(_no_control)]
"""A Calls session id or track name: 1-256 characters, no control characters."""

TrackPath = Annotated[str, Field(max_length=2 * MAX_TRACK_ID_CHARS + 1),
                      AfterValidator(_no_control)]
"""A user's track reference ``"<sessionId>/<trackName>"``: at most 513 characters."""

Name = Annotated[str, Field(max_length=MAX_ID_CHARS)]
"""A display name (replaced by the authenticated name in the room): at most 128."""


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

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    audio: TrackPath | None = None
    audioEnabled: bool | None = None
    audioUnavailable: bool = False
    video: TrackPath | None = None
    videoEnabled: bool | None = None
    screenshare: TrackPath | None = None
    screenShareEnabled: bool | None = None


class User(_Model):
    """A participant as Orange's clients describe it (``User`` in Messages.ts).

    Frozen: a room replaces a user (``model_copy(update=...)``), never changes one in
    place, so that a refused turn can be rolled back by restoring the old references.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    id: Name  # a client's own value is replaced by its connection id in the room
    name: Name
    transceiverSessionId: TrackId | None = None
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

    sessionId: TrackId
    trackName: TrackId
    location: str | None = Field(default=None, max_length=16)
    mid: str | None = Field(default=None, max_length=64)


# ---- client to room ---------------------------------------------------------------


class UserUpdate(_Model):
    """``userUpdate``: put the sender's user in the room, or replace it, and broadcast
    ``roomState``. The room sets ``user.id`` and ``user.name`` to the connection's own
    (a client's values are ignored); a new user counts toward its identity's cap.
    Orange's ``ClientMessage`` in ``app/types/Messages.ts``."""

    type: Literal["userUpdate"]
    user: User


class DirectMessage(_Model):
    """``directMessage``: send ``message`` (at most :data:`MAX_TEXT_CHARS` characters) to
    connection ``to`` alone, as a ``directMessage`` from the sender's name; an ``error``
    to the sender when ``to`` is not in the room."""

    type: Literal["directMessage"]
    to: ConnId
    message: str = Field(max_length=MAX_TEXT_CHARS)


class MuteUser(_Model):
    """``muteUser``: turn connection ``id``'s ``audioEnabled`` off, send it ``muteMic``
    and broadcast ``roomState``; an ``error`` to the sender when ``id`` is not in the
    room."""

    type: Literal["muteUser"]
    id: ConnId


class UserLeft(_Model):
    """``userLeft``: remove the sender's user and close its sockets (code 1000), then
    broadcast ``roomState``."""

    type: Literal["userLeft"]


class Heartbeat(_Model):
    """``heartbeat``: the sender's user is alive (the sweep removes a user whose last
    heartbeat is older than the room's heartbeat timeout). Counts only while one of the
    connection's sockets is open."""

    type: Literal["heartbeat"]


class PartyserverPing(_Model):
    """``partyserver-ping``: answered with ``partyserver-pong`` to the sender; nothing is
    stored."""

    type: Literal["partyserver-ping"]


class EnableAi(_Model):
    """``enableAi``: bring the AI voice into the call (the enable job: Calls session,
    OpenAI call, sideband; see :mod:`rooms.ai`). ``instructions`` (at most 16,000
    characters) and ``voice`` (at most 64) are passed to the voice model's session; an
    ``error`` to the sender when the AI is enabled or being enabled."""

    type: Literal["enableAi"]
    instructions: str | None = Field(default=None, max_length=16_000)
    voice: str | None = Field(default=None, max_length=64)


class DisableAi(_Model):
    """``disableAi``: take the AI out of the call and release its Calls and OpenAI
    resources; an ``error`` to the sender when it is not enabled."""

    type: Literal["disableAi"]


class RequestAiControl(_Model):
    """``requestAiControl``: make the sender the one user the AI hears, with ``track``
    (the sender's published audio track) routed to the AI's transceiver (the control
    job); an ``error`` to the sender when the AI is not enabled or another request is
    under way."""

    type: Literal["requestAiControl"]
    track: TrackRef


class RelinquishAiControl(_Model):
    """``relinquishAiControl``; Orange's historical spelling ``relenquishAiControl`` too."""

    type: Literal["relinquishAiControl", "relenquishAiControl"]


class CallsApiHistoryEntry(_Model):
    """``callsApiHistoryEntry``: a client's record of one Calls API exchange, kept in the
    room's log (``clientNegotiationRecord``) for debugging; nothing is broadcast."""

    type: Literal["callsApiHistoryEntry"]
    entry: Any
    sessionId: TrackId | None = None


class E2eeMlsMessage(_Model):
    """``e2eeMlsMessage``: an end-to-end encryption (MLS) payload, at most
    :data:`MAX_PAYLOAD_CHARS` characters, relayed as it is to every connection but the
    sender's; the room neither reads nor stores it."""

    type: Literal["e2eeMlsMessage"]
    payload: str = Field(max_length=MAX_PAYLOAD_CHARS)


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


def _depth(data: Any) -> int:
    """The nesting depth of parsed JSON ``data`` (a scalar is 0), iteratively."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return deepest


def _has_lone_surrogate(data: Any) -> bool:
    """Whether any string (key or value) in parsed JSON ``data`` is not valid Unicode
    text (a lone surrogate from a ``\\udXXX`` escape)."""
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def parse_client_message(
    raw: str | bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ClientMessage:
    """Parse one WebSocket text frame into a client message, checking everything a
    hostile client could send (docs/protocol.md, "Bad input").

    The checks, in order: size in UTF-8 bytes; valid Unicode text (a ``str`` with a lone
    surrogate is refused; so is one that a ``\\udXXX`` escape produces); JSON; nesting
    at most :data:`MAX_JSON_DEPTH`; an object with a known ``type``; each field's type,
    length cap and, for ids, one full match (:func:`check_conn_id`).

    Args:
        raw: the frame, as text or UTF-8 bytes.
        max_bytes: the size limit in bytes (default 64 KiB).

    Returns:
        One of the models of :data:`ClientMessage`.

    Raises:
        ProtocolError: too large, not valid UTF-8 text, not JSON, nested too deeply, not
            an object, no or unknown ``type``, or fields missing, of the wrong type, too
            long or not a valid id. Its text is short and never echoes large input.
    """
    if isinstance(raw, str):
        try:
            size = len(raw.encode("utf-8"))
        except UnicodeEncodeError:
            raise ProtocolError("message is not valid Unicode text") from None
    else:
        size = len(raw)
    if size > max_bytes:
        raise ProtocolError(f"message too large: {size} bytes (limit {max_bytes})")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ProtocolError(f"message is nested too deeply (limit {MAX_JSON_DEPTH})") from None
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("message must be a JSON object")
    if isinstance(raw, str):
        brackets = raw.count("[") + raw.count("{")
        escaped = _SURROGATE_ESCAPE.search(raw) is not None
    else:
        brackets = raw.count(b"[") + raw.count(b"{")
        escaped = _SURROGATE_ESCAPE_BYTES.search(raw) is not None
    if brackets > MAX_JSON_DEPTH and _depth(data) > MAX_JSON_DEPTH:
        raise ProtocolError(f"message is nested too deeply (limit {MAX_JSON_DEPTH})")
    if escaped and _has_lone_surrogate(data):
        raise ProtocolError("message is not valid Unicode text (a lone surrogate)")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("message has no string 'type'")
    if kind not in _KNOWN_TYPES:
        raise ProtocolError(f"unknown message type {_shown(kind)}")
    try:
        return _CLIENT_ADAPTER.validate_python(data, strict=True)
    except ValidationError as error:
        raise ProtocolError(f"invalid {kind}: {_describe(error)}") from None


def _shown(text: str) -> str:
    """``text`` for an error message: at most 40 characters, control characters and
    other non-printables escaped (``repr``-style, ASCII only)."""
    short = text if len(text) <= 40 else text[:40] + "…"
    return ascii(short)


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


def encode_server_message(message: dict[str, Any]) -> str:
    """The text of a server message as it goes on the wire: compact JSON (no spaces),
    non-ASCII characters as they are (UTF-8 on the socket), as Orange's server sends
    ``JSON.stringify(message)``.

    Encoded by orjson (a few times faster than :func:`json.dumps` for a ``roomState``,
    which a room encodes once per change); a value orjson refuses (a string with a lone
    surrogate, an integer past 64 bits, a key that is not a string) is encoded by
    :func:`json.dumps` instead, with non-ASCII characters escaped.

    Args:
        message: a JSON-able object (:func:`server_message`'s result).

    Returns:
        The JSON text.

    Raises:
        TypeError: ``message`` holds a value JSON has no form for.
        ValueError: ``message`` refers to itself.
    """
    try:
        return orjson.dumps(message).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(message, separators=(",", ":"))
