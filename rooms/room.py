"""The room's turn logic: Orange's ``ChatRoom`` behaviour as plain Python.

A :class:`Room` holds one room's :class:`~rooms.state.RoomData` and handles one event at
a time through partyserver-like hooks: :meth:`Room.on_start`, :meth:`Room.on_connect`,
:meth:`Room.on_message`, :meth:`Room.on_close`, :meth:`Room.on_alarm`, plus
:meth:`Room.on_ai_event` for the results of AI jobs. Each hook returns the turn's
:class:`~rooms.state.Effects`; it never does I/O and never raises for bad input.

Client messages are dispatched from the discriminated union of :mod:`rooms.messages`
to one handler each (``_on_<type>``). Time is passed in (UNIX seconds) so the logic is
deterministic under test.
"""

from __future__ import annotations

import secrets
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from .limits import DEFAULT_LIMITS, RoomLimits
from .messages import (
    AI_TRACK_NAME,
    AI_USER_ID,
    HTTP_CONN_PREFIX,
    AiPublicState,
    CallsApiHistoryEntry,
    DirectMessage,
    DisableAi,
    E2eeMlsMessage,
    EnableAi,
    Heartbeat,
    MuteUser,
    PartyserverPing,
    ProtocolError,
    RelinquishAiControl,
    RequestAiControl,
    TrackRef,
    User,
    UserLeft,
    UserTracks,
    UserUpdate,
    parse_client_message,
    server_message,
)
from .state import (
    AiState,
    ControlJob,
    Effects,
    EnableJob,
    Outgoing,
    ReleaseJob,
    RoomData,
    ToolCallRecord,
    ToolJob,
    TranscriptLine,
)

__all__ = [
    "ALARM_INTERVAL",
    "AiCallEnded",
    "AiControlResult",
    "AiEnableResult",
    "AiProgress",
    "AiToolCall",
    "AiToolDelivered",
    "AiToolOutput",
    "AiTranscript",
    "HEARTBEAT_TIMEOUT",
    "MAX_IDLE_OWNERS",
    "Room",
]

ALARM_INTERVAL = 15.0
"""Seconds between alarms while anyone is connected (Orange's ``alarmInterval``)."""

HEARTBEAT_TIMEOUT = 15.0
"""A user whose last heartbeat is older than this many seconds is removed by the sweep."""

MAX_IDLE_OWNERS = 256
"""Owners kept for connection ids with no user and no connection (HTTP senders)."""

_IDLE_OWNER_BYTES = 160
"""What one idle owner entry adds to the encoded state, at most (an ``http:`` id of up
to 69 characters and a name of up to 64, with their framing), bytes."""

_USER_ENTRY_BYTES = 48
"""The framing of one user's entries in ``heartbeats``, ``connections`` and ``owners``
(a float and three map entries), bytes."""


class Refused(Exception):
    """A turn would pass one of the room's bounds (:class:`~rooms.limits.RoomLimits`);
    ``str(error)`` is the public text sent to the client. Raised and caught inside
    :class:`Room` only: the turn is rolled back and answered with an ``error``."""


@dataclass(slots=True)
class _Checkpoint:
    """What a turn can change, as it was before the turn (see :meth:`Room._checkpoint`):
    the containers are shallow copies and users and tracks are frozen, so restoring
    these references undoes the turn; the AI state, which a turn changes in place, is
    its object and a copy of its fields (``ai_fields``), put back into it on restore
    (the copy a pydantic ``model_copy`` makes, at a tenth of its cost: 0.14 against
    1.9 us a turn). Not frozen, though nothing changes it: a frozen dataclass's
    ``__init__`` sets each of its 14 fields through ``object.__setattr__`` (1.4 against
    0.3 us a turn)."""

    data: Any
    users: dict
    heartbeats: dict
    connections: dict
    owners: dict
    ai: Any
    ai_fields: dict
    meeting_id: str | None
    peak: int
    alarm_at: float | None
    sizes: dict
    messages: int
    jobs: int
    changed: bool


@dataclass(frozen=True, slots=True)
class AiProgress:
    """An enable job reached a step; ``fields`` are AI state fields to persist now
    (``sessionId``, ``mid``, ``callId``, ``step``) so a crash can be cleaned up after."""

    attempt: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AiEnableResult:
    """An enable job finished: ``error`` is ``None`` on success, else ``"<step>: <cause>"``."""

    attempt: int
    session_id: str | None = None
    track_name: str | None = None
    mid: str | None = None
    call_id: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AiControlResult:
    """A control job finished for connection ``conn``; ``error`` as in AiEnableResult.
    ``track`` is what now feeds the AI (``None`` on error); ``restore`` as in
    :class:`~rooms.state.ControlJob`."""

    attempt: int
    conn: str
    error: str | None = None
    track: TrackRef | None = None
    restore: bool = False


@dataclass(frozen=True, slots=True)
class AiTranscript:
    """A final transcript line from the AI's sideband (:mod:`rooms.sideband`).

    Attributes:
        call_id: the call whose sideband heard it (a line of another call is stale).
        item_id: the session's conversation item id.
        direction: ``"in"`` (a user spoke) or ``"out"`` (the AI spoke).
        speaker: for ``"in"``, the connection id that held control when the speech
            began (``None``: nobody did); ignored for ``"out"``.
        text: the transcript.
    """

    call_id: str
    item_id: str
    direction: str
    speaker: str | None
    text: str


@dataclass(frozen=True, slots=True)
class AiCallEnded:
    """The AI's live session ``call_id`` is gone (its sideband was refused with 404 or
    closed for good): the AI leaves the room with ``reason`` as its error."""

    call_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class AiToolCall:
    """The AI of call ``call_id`` calls tool ``name`` (function call ``tool_call_id``)
    with ``arguments`` (JSON text)."""

    call_id: str
    tool_call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class AiToolOutput:
    """Tool call ``tool_call_id`` finished with ``output`` (JSON text)."""

    tool_call_id: str
    output: str


@dataclass(frozen=True, slots=True)
class AiToolDelivered:
    """The output of tool call ``tool_call_id`` reached the model."""

    tool_call_id: str


AiEvent = (AiProgress | AiEnableResult | AiControlResult | AiTranscript | AiCallEnded
           | AiToolCall | AiToolOutput | AiToolDelivered)

MAX_TOOL_TEXT = 16 * 1024
"""The longest tool arguments or output a room keeps, characters (longer is cut)."""

MAX_TOOL_CALLS = 32
"""Tool calls a room keeps: every undelivered one, and delivered ones up to this many."""


class _WireCache:
    """The wire form of each user of a room, kept while the user is the same object,
    and of the AI's public state, kept while its fields are the same.

    A :class:`User` is frozen (a room replaces one, never changes it), so a user whose
    object is unchanged has an unchanged wire form: a ``roomState`` of N users encodes
    only the users that changed since the last one (the rest cost a dict copy instead
    of a pydantic dump, ~0.3 against ~2 us each). The user a turn puts in is dumped
    once, for its size and for the ``roomState`` that follows (:meth:`wire`)."""

    def __init__(self) -> None:
        self._wires: dict[str, tuple[User, dict[str, Any]]] = {}
        self._ai: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    def wire(self, conn: str, user: User) -> dict[str, Any]:
        """The wire form of ``user`` as ``conn``'s user (``User.wire()``, cached; the
        caller must not change it)."""
        cached = self._wires.get(conn)
        if cached is None or cached[0] is not user:
            cached = self._wires[conn] = (user, user.wire())
        return cached[1]

    def users(self, users: dict[str, User]) -> dict[str, dict[str, Any]]:
        """The wire forms of ``users`` (connection id -> user): connection id -> a fresh
        dict, in connection-id order (as Orange's storage listing returns them)."""
        wires = self._wires
        if len(wires) > len(users):
            for conn in [c for c in wires if c not in users]:
                del wires[conn]
        return {conn: dict(self.wire(conn, users[conn])) for conn in sorted(users)}

    def ai(self, ai: AiState) -> dict[str, Any]:
        """The wire form of ``ai`` as clients see it (:class:`AiPublicState`): a fresh
        dict, built again only when one of its four fields changed (a pydantic model
        and its dump cost ~3 us, a ``roomState`` of a userUpdate)."""
        key = (ai.enabled, ai.controllingUser, ai.error, ai.connectionPending)
        if self._ai is None or self._ai[0] != key:
            self._ai = (key, AiPublicState(
                enabled=ai.enabled,
                controllingUser=ai.controllingUser,
                error=ai.error,
                connectionPending=ai.connectionPending,
            ).wire())
        return dict(self._ai[1])


def _room_state_message(data: RoomData, cache: _WireCache | None = None) -> dict[str, Any]:
    ai = data.ai
    cache = cache or _WireCache()
    # sorted by connection id, as Orange's storage listing returns them
    users = list(cache.users(data.users).values())
    if ai.enabled:
        users.append(
            User(
                id=AI_USER_ID,
                name="AI",
                joined=True,
                transceiverSessionId=ai.sessionId,
                tracks=UserTracks(
                    audio=f"{ai.sessionId}/{ai.trackName}",
                    audioEnabled=True,
                    videoEnabled=False,
                    screenShareEnabled=False,
                ),
            ).wire()
        )
    state: dict[str, Any] = {"users": users, "ai": cache.ai(ai)}
    if data.meetingId is not None:
        state["meetingId"] = data.meetingId
    return {"type": "roomState", "state": state}


class Room:
    """One room's state and turn logic (no I/O).

    Args:
        room_id: the room's id (the ``{room}`` of ``/parties/rooms/{room}``).
        data: the state restored from a snapshot, or ``None`` for a new room.
        limits: the room's bounds (default :data:`~rooms.limits.DEFAULT_LIMITS`).
        max_message_bytes: overrides ``limits.max_message_bytes`` (bytes).
        new_id: makes meeting ids (default: random UUID4 strings).
        new_error_id: makes the ids of ``error`` messages (default: 12 random hex
            digits); each error's id is also in the turn's log record.
    """

    def __init__(
        self,
        room_id: str,
        data: RoomData | None = None,
        *,
        limits: RoomLimits | None = None,
        max_message_bytes: int | None = None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        new_error_id: Callable[[], str] = lambda: secrets.token_hex(6),
    ) -> None:
        self.room_id = room_id
        self.data = data if data is not None else RoomData()
        limits = limits or DEFAULT_LIMITS
        if max_message_bytes is not None:
            limits = RoomLimits(max_message_bytes, limits.max_state_bytes,
                                limits.max_users_per_identity,
                                limits.max_seats_per_identity)
        self.limits = limits
        self.max_message_bytes = limits.max_message_bytes
        self._new_id = new_id
        self._new_error_id = new_error_id
        self._fx = Effects()
        self._wires = _WireCache()
        self._sizes: dict[str, int] = {
            conn: self._user_bytes(conn, user) for conn, user in self.data.users.items()}
        self.last_message_type = "none"
        """The ``type`` of the last client message handled (``"invalid"`` if it did
        not parse); for metrics."""

    # ---- public views -------------------------------------------------------------

    def room_state(self) -> dict[str, Any]:
        """Return the ``RoomState`` JSON object (what ``roomState`` carries)."""
        return _room_state_message(self.data, self._wires)["state"]

    def record(self) -> dict[str, Any]:
        """Return the room's state as the JSON object a snapshot stores: equal to
        ``self.data.model_dump(mode="json", exclude_none=True)``, with the users whose
        object is unchanged since the last ``roomState`` or record taken from their
        cached wire form (the users' map in connection-id order)."""
        record = self.data.model_dump(mode="json", exclude_none=True, exclude={"users"})
        record["users"] = self._wires.users(self.data.users)
        return record

    @property
    def alarm_at(self) -> float | None:
        """The persisted alarm time (UNIX s), or ``None`` when no alarm is set."""
        return self.data.alarmAt

    def state_bytes(self) -> int:
        """The size of the room's encoded state as its clients can grow it, bytes: its
        users as UTF-8 JSON with their map entries, and the idle owners (an upper bound
        for those). Checked against ``limits.max_state_bytes`` after every turn of a
        client message that changed the state."""
        idle = max(0, len(self.data.owners) - len(self.data.users))
        return sum(self._sizes.values()) + idle * _IDLE_OWNER_BYTES

    def admit(self, conn: str, name: str) -> str | None:
        """Whether identity ``name`` may connect as ``conn`` now: ``None`` if so, else
        the public reason it may not (its seats or users in this room are at
        ``limits.max_seats_per_identity`` / ``max_users_per_identity``). A ``conn``
        already open or already a user does not take another seat or user."""
        data = self.data
        if conn not in data.connections:
            seats = sum(1 for owner in data.connections.values() if owner == name)
            if seats >= self.limits.max_seats_per_identity:
                return (f"you hold {seats} connections of this room "
                        f"(limit {self.limits.max_seats_per_identity})")
        if conn not in data.users and self._users_of(name) >= self.limits.max_users_per_identity:
            return (f"you have {self._users_of(name)} users in this room "
                    f"(limit {self.limits.max_users_per_identity})")
        return None

    # ---- lifecycle hooks ------------------------------------------------------------

    def on_start(self, now: float) -> Effects:
        """An activation began (first start, Ray restart, or wake from hibernation).

        After a restart (the last activation did not hibernate: it crashed, or its
        process was killed) every user's heartbeat counts from ``now``: the heartbeats
        they sent while no activation could store them (the process gone, or the store
        down) were refused, not missed, so their silence is not theirs; a user that is
        really gone is swept one timeout after the restart. A wake from hibernation
        keeps the heartbeats as saved: any frame would have woken the room, so the
        silence was the users'.

        An AI flow that was under way when the previous activation died cannot finish:
        its pending markers are cleared, the error says so, and what it created is
        released (so ``connectionPending`` never stays true for ever). A tool call that
        was running is asked of the tool runner again, under the same call id: the
        runner gives the same run's output (it does not run the tool again).
        """
        data = self.data
        if data.hibernatedAt is not None:  # a wake: saved with the next turn that saves
            data.hibernatedAt = None
        elif data.users:  # a restart
            for conn in data.users:
                data.heartbeats[conn] = max(data.heartbeats.get(conn, now), now)
            self._changed()
        ai = data.ai
        if ai.connectionPending:
            step = ai.step or "start"
            self._release_ai(reason="enable interrupted by a room restart")
            self.data.ai = AiState(
                attempt=ai.attempt + 1,
                error=f"enable interrupted at {step}: the room restarted; try again",
            )
            self._changed()
            self._broadcast_state()
        elif ai.controlPending is not None:
            ai.controlPending = None
            ai.attempt += 1
            self._changed()
            self._broadcast_state()
        for call in self.data.toolCalls:  # the tool runner still has (or finishes) these
            if call.status == "running" and ai.enabled and call.callId == ai.callId:
                self._fx.jobs.append(ToolJob(call.model_copy()))
        return self._take()

    def on_hibernate(self, now: float) -> Effects:
        """The activation is about to save and exit on purpose (hibernation): the
        saved state says so (``hibernatedAt``), for :meth:`on_start` of the next one."""
        self.data.hibernatedAt = now
        self._changed()
        return self._take()

    def on_connect(self, conn: str, name: str, now: float) -> Effects:
        """A client connected as connection ``conn`` with the authenticated ``name``.

        Restores or creates the connection's user, records its heartbeat, starts the
        meeting if there is none, keeps the peak user count, sweeps timed-out users,
        broadcasts ``roomState``, sends the newest AI transcript lines to ``conn``
        (``aiTranscript``) and makes sure the alarm is set.
        """
        data = self.data
        data.connections[conn] = name
        data.owners.setdefault(conn, name)
        if conn not in data.users:
            self._put_user(conn, User(
                id=conn,
                name=name,
                tracks=UserTracks(
                    audioEnabled=False, videoEnabled=False, screenShareEnabled=False
                ),
            ))
        data.heartbeats[conn] = now
        if data.meetingId is None:
            data.meetingId = self._new_id()
            self._log("startingMeeting", meetingId=data.meetingId)
        self._changed()
        self._sweep(now)
        data.peakUserCount = max(data.peakUserCount, len(data.users))
        if data.alarmAt is None:
            data.alarmAt = now + ALARM_INTERVAL
        self._broadcast_state()
        for line in data.transcript:  # a late joiner's captions start with the recent lines
            self._send(conn, line.wire())
        self._log("onConnect", connectionId=conn)
        return self._take()

    def owner(self, conn: str) -> str | None:
        """The identity that owns connection id ``conn`` (first used it), or ``None``."""
        return self.data.owners.get(conn)

    def claim(self, conn: str, name: str) -> None:
        """Record ``name`` as the owner of ``conn`` if nobody owns it (its effects join
        the next hook's). Owners of connection ids with neither a user nor a connection
        are forgotten, oldest first, past :data:`MAX_IDLE_OWNERS`."""
        data = self.data
        if conn in data.owners:
            return
        data.owners[conn] = name
        self._changed()
        idle = [c for c in data.owners if c not in data.users and c not in data.connections]
        for old in idle[:max(0, len(idle) - MAX_IDLE_OWNERS)]:
            del data.owners[old]

    def on_close(self, conn: str, code: int = 1000, reason: str = "") -> Effects:
        """The socket of connection ``conn`` closed (Orange's ``onClose``).

        The user stays until the heartbeat sweep removes it (so a client that
        reconnects keeps its user), but the connection no longer receives messages.
        """
        if self.data.connections.pop(conn, None) is not None:
            self._changed()
        self._log("onClose", connectionId=conn, code=code, reason=reason[:120])
        return self._take()

    def on_alarm(self, now: float) -> Effects:
        """The room's alarm fired: sweep timed-out users, end the meeting when nobody is
        left, otherwise broadcast ``roomState`` and set the alarm again."""
        self.data.alarmAt = None
        self._changed()
        remaining = self._sweep(now)
        if remaining:
            self._broadcast_state()
            self.data.alarmAt = now + ALARM_INTERVAL
        return self._take()

    def on_message(self, conn: str, raw: str | bytes, now: float) -> Effects:
        """Handle one client frame from connection ``conn``.

        A frame fails for its own content at any step here: bad input (see
        :func:`rooms.messages.parse_client_message`), a turn that would pass one of the
        room's bounds (:class:`~rooms.limits.RoomLimits`), or a handler that raises (a
        defect, logged with its traceback under the error's id). Each is answered with
        an ``error`` (public text and ``errorId``) to ``conn`` alone, and the turn is
        rolled back: the room's state, messages and jobs are as before the frame.
        Never raises.
        """
        self.last_message_type = "invalid"
        try:
            message = parse_client_message(raw, max_bytes=self.max_message_bytes)
        except ProtocolError as error:
            self._error(conn, str(error))
            return self._take()
        self.last_message_type = message.type
        handler = self._handlers[type(message)]
        saved = self._checkpoint()
        try:
            handler(self, conn, message, now)
            if self._fx.changed and self.state_bytes() > self.limits.max_state_bytes:
                raise Refused(f"the room's state would pass its limit of "
                              f"{self.limits.max_state_bytes} bytes")
        except Refused as refusal:
            self._restore(saved)
            self._error(conn, str(refusal))
        except Exception as error:  # noqa: BLE001 - a defect must not take the room down
            self._restore(saved)
            self._error(conn, "the room could not handle the message",
                        cause=f"{type(error).__name__}: {error}",
                        traceback=traceback.format_exc(limit=8))
        return self._take()

    def on_ai_event(self, event: AiEvent, now: float) -> Effects:
        """Apply the progress or result of an AI job (an internal turn)."""
        ai = self.data.ai
        if isinstance(event, AiProgress):
            if event.attempt == ai.attempt and ai.connectionPending:
                for key, value in event.fields.items():
                    setattr(ai, key, value)
                self._changed()
        elif isinstance(event, AiEnableResult):
            self._enable_finished(event)
        elif isinstance(event, AiControlResult):
            self._control_finished(event)
        elif isinstance(event, AiTranscript):
            self._transcribed(event, now)
        elif isinstance(event, AiCallEnded):
            self._call_ended(event)
        elif isinstance(event, AiToolCall):
            self._tool_called(event)
        elif isinstance(event, (AiToolOutput, AiToolDelivered)):
            self._tool_progressed(event)
        return self._take()

    # ---- message handlers -------------------------------------------------------------

    def _on_user_update(self, conn: str, msg: UserUpdate, now: float) -> None:
        # The id and name are the connection's own, never taken from the body.
        self._require_open(conn)
        name = self.data.connections.get(conn) or self._user_name(conn)
        if conn not in self.data.users:
            owner = self.data.owners.get(conn, name)
            if self._users_of(owner) >= self.limits.max_users_per_identity:
                raise Refused(f"you have {self._users_of(owner)} users in this room "
                              f"(limit {self.limits.max_users_per_identity})")
        self._put_user(conn, msg.user.model_copy(update={"id": conn, "name": name}))
        self._changed()
        self._broadcast_state()

    def _on_direct_message(self, conn: str, msg: DirectMessage, now: float) -> None:
        if msg.to not in self.data.connections:
            self._error(conn, f"no connection {msg.to[:64]!r} in this room")
            return
        self._send(msg.to, server_message(
            "directMessage", **{"from": self._user_name(conn), "message": msg.message}
        ))

    def _on_mute_user(self, conn: str, msg: MuteUser, now: float) -> None:
        if msg.id not in self.data.connections:
            self._error(conn, f"no connection {msg.id[:64]!r} in this room")
            return
        user = self.data.users.get(msg.id)
        if user is not None:
            tracks = user.tracks.model_copy(update={"audioEnabled": False})
            self._put_user(msg.id, user.model_copy(update={"tracks": tracks}))
            self._changed()
        self._send(msg.id, server_message("muteMic"))
        self._broadcast_state()

    def _on_user_left(self, conn: str, msg: UserLeft, now: float) -> None:
        self._remove_user(conn, close=(1000, "User left"))
        self._log("userLeft", connectionId=conn)
        self._broadcast_state()

    def _on_heartbeat(self, conn: str, msg: Heartbeat, now: float) -> None:
        # A socket's user lives while one of its sockets is open: a heartbeat sent for
        # it over HTTP after they closed does not keep it (the sweep removes it).
        if conn in self.data.users and self._is_open(conn):
            self.data.heartbeats[conn] = now
            self._changed()

    def _on_ping(self, conn: str, msg: PartyserverPing, now: float) -> None:
        self._send(conn, server_message("partyserver-pong"))

    def _on_e2ee(self, conn: str, msg: E2eeMlsMessage, now: float) -> None:
        self._fx.messages.append(Outgoing("except", conn, msg.wire()))

    def _on_history(self, conn: str, msg: CallsApiHistoryEntry, now: float) -> None:
        self._log("clientNegotiationRecord", connectionId=conn, sessionId=msg.sessionId,
                  entry=msg.entry)

    def _on_enable_ai(self, conn: str, msg: EnableAi, now: float) -> None:
        ai = self.data.ai
        if ai.connectionPending:
            self._error(conn, "the AI is already being enabled")
            return
        if ai.enabled:
            self._error(conn, "the AI is already enabled")
            return
        ai.attempt += 1
        ai.connectionPending = True
        ai.error = None
        ai.step = "start"
        ai.instructions = msg.instructions
        self._changed()
        self._broadcast_state()
        self._fx.jobs.append(EnableJob(
            attempt=ai.attempt, meeting_id=self.data.meetingId,
            instructions=msg.instructions, voice=msg.voice,
        ))

    def _on_disable_ai(self, conn: str, msg: DisableAi, now: float) -> None:
        ai = self.data.ai
        if not (ai.enabled or ai.connectionPending):
            self._error(conn, "the AI is not enabled")
            return
        # A pending enable's result will be stale (attempt moves on) and released then.
        self._release_ai(reason="disableAi")
        self.data.ai = AiState(attempt=ai.attempt + 1)
        self._changed()
        self._broadcast_state()

    def _on_request_ai_control(self, conn: str, msg: RequestAiControl, now: float) -> None:
        ai = self.data.ai
        if not ai.enabled or ai.sessionId is None:
            self._error(conn, "the AI is not enabled")
            return
        if ai.controlPending is not None:
            self._error(conn, "another control request is under way")
            return
        ai.attempt += 1
        ai.controlPending = conn
        self._changed()
        self._fx.jobs.append(ControlJob(
            attempt=ai.attempt, conn=conn, session_id=ai.sessionId,
            track_name=ai.trackName or AI_TRACK_NAME, track=msg.track,
        ))

    def _on_relinquish_ai_control(
        self, conn: str, msg: RelinquishAiControl, now: float
    ) -> None:
        ai = self.data.ai
        if ai.controllingUser == conn:
            ai.controllingUser = None
            ai.controlTrack = None
            self._changed()
            self._broadcast_state()
        elif ai.controlPending == conn:
            # A quick push-to-talk tap: released before Calls answered. The request's
            # result is stale from now on, so control never lands on this user.
            ai.controlPending = None
            ai.attempt += 1
            self._changed()
        # Anyone else: a quiet no-op. Orange's push-to-talk button sends this from every
        # participant when it appears and on every release; an error would be noise.

    _handlers: dict[type, Callable[..., None]] = {
        UserUpdate: _on_user_update,
        DirectMessage: _on_direct_message,
        MuteUser: _on_mute_user,
        UserLeft: _on_user_left,
        Heartbeat: _on_heartbeat,
        PartyserverPing: _on_ping,
        E2eeMlsMessage: _on_e2ee,
        CallsApiHistoryEntry: _on_history,
        EnableAi: _on_enable_ai,
        DisableAi: _on_disable_ai,
        RequestAiControl: _on_request_ai_control,
        RelinquishAiControl: _on_relinquish_ai_control,
    }

    # ---- AI results ---------------------------------------------------------------------

    def _enable_finished(self, result: AiEnableResult) -> None:
        ai = self.data.ai
        if result.attempt != ai.attempt or not ai.connectionPending:
            # Stale: the AI was disabled (or the room restarted) meanwhile.
            if result.error is None:
                self._fx.jobs.append(ReleaseJob(
                    result.session_id, tuple(m for m in [result.mid] if m),
                    result.call_id, reason="stale enable",
                ))
            return
        ai.connectionPending = False
        ai.step = None
        if result.error is None:
            ai.enabled = True
            ai.sessionId = result.session_id
            ai.trackName = result.track_name
            ai.mid = result.mid
            ai.callId = result.call_id
            ai.error = None
        else:
            # The job released what it created itself.
            self.data.ai = AiState(attempt=ai.attempt, error=f"enableAi failed at {result.error}")
            self._log("aiError", error=result.error)
        self._changed()
        self._broadcast_state()

    def _control_finished(self, result: AiControlResult) -> None:
        ai = self.data.ai
        if result.restore:
            return
        if result.attempt != ai.attempt or ai.controlPending != result.conn:
            # Stale: cancelled by a quick release (or superseded). If its pull landed,
            # the AI now hears a track nobody holds: feed the holder's track again.
            if (result.error is None and ai.enabled and ai.sessionId
                    and ai.controllingUser and ai.controlTrack is not None
                    and ai.controllingUser != result.conn):
                self._fx.jobs.append(ControlJob(
                    attempt=ai.attempt, conn=ai.controllingUser, session_id=ai.sessionId,
                    track_name=ai.trackName or AI_TRACK_NAME, track=ai.controlTrack,
                    restore=True,
                ))
            return
        ai.controlPending = None
        if result.error is None:
            if result.conn in self.data.connections:
                ai.controllingUser = result.conn
                ai.controlTrack = result.track
            ai.error = None
        else:
            ai.error = f"requestAiControl failed at {result.error}"
            self._log("aiError", error=result.error)
        self._changed()
        self._broadcast_state()

    def _transcribed(self, event: AiTranscript, now: float) -> None:
        ai, data = self.data.ai, self.data
        if not ai.enabled or ai.callId != event.call_id:
            return  # stale: the AI left, or this is another call's line
        line_id = f"{event.direction}:{event.item_id}"[:200]
        if any(line.id == line_id for line in data.transcript):
            return  # delivered again (a sideband that re-attached)
        if event.direction == "out":
            speaker, name = AI_USER_ID, "AI"
        else:
            speaker = event.speaker
            name = self._user_name(speaker) if speaker is not None else None
        line = TranscriptLine(id=line_id, speaker=speaker, name=name,
                              text=event.text[:self.limits.transcript_chars], at=now)
        data.transcript.append(line)
        del data.transcript[:max(0, len(data.transcript) - self.limits.transcript_lines)]
        self._fx.messages.append(Outgoing("all", None, line.wire()))
        self._changed()

    def _tool_called(self, event: AiToolCall) -> None:
        ai, calls = self.data.ai, self.data.toolCalls
        if not ai.enabled or ai.callId != event.call_id:
            return  # stale: another call's, or the AI left
        if any(call.id == event.tool_call_id for call in calls):
            return  # delivered again: recorded once, run once
        record = ToolCallRecord(id=event.tool_call_id[:200], callId=event.call_id,
                                name=event.name[:64], arguments=event.arguments[:MAX_TOOL_TEXT])
        calls.append(record)
        delivered = [c for c in calls if c.status == "delivered"]
        for old in delivered[:max(0, len(calls) - MAX_TOOL_CALLS)]:
            calls.remove(old)
        self._fx.jobs.append(ToolJob(record.model_copy()))
        self._log("aiToolCall", toolCallId=record.id, tool=record.name)
        self._changed()

    def _tool_progressed(self, event: AiToolOutput | AiToolDelivered) -> None:
        call = next((c for c in self.data.toolCalls if c.id == event.tool_call_id), None)
        if call is None:
            return
        if isinstance(event, AiToolOutput) and call.status == "running":
            call.status, call.output = "done", event.output[:MAX_TOOL_TEXT]
            self._changed()
        elif isinstance(event, AiToolDelivered) and call.status == "done":
            call.status = "delivered"
            self._changed()

    def _call_ended(self, event: AiCallEnded) -> None:
        ai = self.data.ai
        if ai.callId != event.call_id or not ai.enabled:
            return
        self._fx.jobs.append(ReleaseJob(
            ai.sessionId, tuple(m for m in [ai.mid] if m), None, reason="the AI call ended"))
        self.data.ai = AiState(attempt=ai.attempt + 1, error=f"the AI left: {event.reason}")
        self._log("aiError", error=event.reason)
        self._changed()
        self._broadcast_state()

    def _release_ai(self, reason: str) -> None:
        ai = self.data.ai
        if ai.sessionId or ai.callId:
            self._fx.jobs.append(ReleaseJob(
                ai.sessionId, tuple(m for m in [ai.mid] if m), ai.callId, reason=reason
            ))

    # ---- helpers ----------------------------------------------------------------------

    def _take(self) -> Effects:
        fx, self._fx = self._fx, Effects()
        return fx

    def _changed(self) -> None:
        self._fx.changed = True

    def _log(self, event: str, **fields: Any) -> None:
        self._fx.log.append({"eventName": event, "room": self.room_id,
                             "meetingId": self.data.meetingId, **fields})

    def _send(self, conn: str, message: dict[str, Any]) -> None:
        self._fx.messages.append(Outgoing("one", conn, message))

    def _error(self, conn: str, text: str, **detail: Any) -> str:
        """Answer ``conn`` with ``error{error: text, errorId}`` and log the same id
        with ``detail`` (which never reaches the client). Returns the error id."""
        error_id = self._new_error_id()
        self._send(conn, server_message("error", error=text, errorId=error_id))
        self._log("clientError", connectionId=conn, errorId=error_id, error=text, **detail)
        return error_id

    # ---- bounds and rollback ------------------------------------------------------

    def _is_open(self, conn: str) -> bool:
        """Whether ``conn`` may act for its user: it has an open socket, or it is an
        HTTP sender's own ``http:`` id (which has no socket)."""
        return conn in self.data.connections or conn.startswith(HTTP_CONN_PREFIX)

    def _require_open(self, conn: str) -> None:
        if not self._is_open(conn):
            raise Refused(f"connection {conn[:64]!r} has no open socket in this room")

    def _users_of(self, name: str) -> int:
        """How many users of the room identity ``name`` owns."""
        owners = self.data.owners
        return sum(1 for conn in self.data.users if owners.get(conn) == name)

    def _user_bytes(self, conn: str, user: User) -> int:
        """What ``user`` as ``conn``'s user adds to :meth:`state_bytes`: its wire form as
        UTF-8 JSON (dumped once for this and the next ``roomState``) and its entries."""
        try:
            size = len(orjson.dumps(self._wires.wire(conn, user)))
        except TypeError:  # a string orjson refuses (a lone surrogate): count it whole
            size = len(user.model_dump_json(exclude_none=True).encode("utf-8", "surrogatepass"))
        return size + 3 * len(conn) + 2 * len(user.name) + _USER_ENTRY_BYTES

    def _put_user(self, conn: str, user: User) -> None:
        """Store ``user`` as ``conn``'s user and account for its size."""
        self.data.users[conn] = user
        self._sizes[conn] = self._user_bytes(conn, user)

    def _checkpoint(self) -> _Checkpoint:
        """What the next turn may change, to undo it with :meth:`_restore`."""
        data, fx = self.data, self._fx
        return _Checkpoint(
            data, dict(data.users), dict(data.heartbeats), dict(data.connections),
            dict(data.owners), data.ai, dict(vars(data.ai)), data.meetingId,
            data.peakUserCount, data.alarmAt, dict(self._sizes), len(fx.messages),
            len(fx.jobs), fx.changed)

    def _restore(self, saved: _Checkpoint) -> None:
        """Undo everything since ``saved`` but the log records."""
        self.data = data = saved.data
        data.users, data.heartbeats = saved.users, saved.heartbeats
        data.connections, data.owners = saved.connections, saved.owners
        ai = saved.ai
        vars(ai).clear()
        vars(ai).update(saved.ai_fields)
        data.ai, data.meetingId = ai, saved.meeting_id
        data.peakUserCount, data.alarmAt = saved.peak, saved.alarm_at
        self._sizes = saved.sizes
        del self._fx.messages[saved.messages:]
        del self._fx.jobs[saved.jobs:]
        self._fx.changed = saved.changed

    def _broadcast_state(self) -> None:
        self._fx.messages.append(Outgoing("all", None,
                                          _room_state_message(self.data, self._wires)))

    def _user_name(self, conn: str) -> str:
        user = self.data.users.get(conn)
        if user is not None:
            return user.name
        return self.data.connections.get(conn) or self.data.owners.get(conn, conn)

    def _remove_user(self, conn: str, close: tuple[int, str] | None) -> None:
        data = self.data
        data.users.pop(conn, None)
        self._sizes.pop(conn, None)
        data.heartbeats.pop(conn, None)
        data.owners.pop(conn, None)
        self._fx.messages.append(
            Outgoing("all", None, server_message("userLeftNotification", id=conn))
        )
        if data.connections.pop(conn, None) is not None and close is not None:
            self._fx.messages.append(Outgoing("one", conn, None, close))
        if data.ai.controllingUser == conn:
            data.ai.controllingUser = None
            data.ai.controlTrack = None
        self._changed()

    def _sweep(self, now: float) -> int:
        """Remove users whose heartbeat is older than the timeout; end the meeting when
        none is left. Returns the number of users remaining."""
        data = self.data
        stale = [
            conn for conn in data.users
            if data.heartbeats.get(conn, float("-inf")) + HEARTBEAT_TIMEOUT < now
        ]
        for conn in stale:
            self._remove_user(conn, close=(1011, "heartbeat timeout"))
            self._log("userTimedOut", connectionId=conn)
        if not data.users and data.meetingId is not None:
            self._end_meeting()
            return 0
        if stale:
            self._broadcast_state()
        return len(data.users)

    def _end_meeting(self) -> None:
        self._log("endingMeeting", peakUserCount=self.data.peakUserCount)
        self._release_ai(reason="meeting ended")
        attempt = self.data.ai.attempt + 1
        connections = self.data.connections
        self.data = RoomData(connections=connections, owners={
            c: o for c, o in self.data.owners.items() if c in connections})
        self._sizes = {}
        self.data.ai.attempt = attempt
        self._changed()
