"""The persisted state of a room and the effects a turn produces.

:class:`RoomData` is everything a room keeps in its snapshot (users, heartbeats, live
connection ids, meeting, alarm, AI state). Secrets never go in here: the AI state holds
only ids (Calls session id, OpenAI call id, mids), never credentials.

A turn of :class:`rooms.room.Room` returns :class:`Effects`: the messages to send
(released by the actor only after the turn's snapshot is durable: the output gate) and
the AI jobs to run outside the turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .messages import TrackRef, User

__all__ = [
    "AiState",
    "ControlJob",
    "Effects",
    "EnableJob",
    "Job",
    "Outgoing",
    "ReleaseJob",
    "RoomData",
    "ToolCallRecord",
    "ToolJob",
    "TranscriptLine",
]


class AiState(BaseModel):
    """The AI agent's persisted state.

    Attributes:
        enabled: the AI is in the call.
        connectionPending: an enable is under way.
        error: why the last AI operation failed (step and cause), shown to users.
        sessionId: the Calls session holding the AI's peer connection.
        trackName: the AI's published track (``ai-generated-voice``).
        mid: the mid of the AI session's bidirectional transceiver.
        callId: the OpenAI Realtime call id.
        controllingUser: the connection id whose microphone feeds the AI.
        controlTrack: the track that feeds the AI for ``controllingUser`` (to feed it
            again after a cancelled request's late pull replaced it).
        controlPending: the connection id whose control request is under way.
        attempt: increases with every enable, disable and control request; a job's
            result whose attempt is no longer current is stale and is released.
        step: the step an enable is at (for a clear error after a restart).
        instructions: the instructions the AI was enabled with (the sideband adds the
            name of whoever holds control to them on every change).
    """

    model_config = ConfigDict(extra="ignore")

    enabled: bool = False
    connectionPending: bool = False
    error: str | None = None
    sessionId: str | None = None
    trackName: str | None = None
    mid: str | None = None
    callId: str | None = None
    controllingUser: str | None = None
    controlTrack: TrackRef | None = None
    controlPending: str | None = None
    attempt: int = 0
    step: str | None = None
    instructions: str | None = None


class TranscriptLine(BaseModel):
    """One final line of the meeting's transcript (docs/ai.md, "Transcripts").

    Attributes:
        id: unique in the meeting: ``"<kind>:<item id>"`` (``in`` for what a user said,
            ``out`` for what the AI said), so a line delivered twice is kept once.
        speaker: the user id (connection id) who held control when it was spoken, or
            ``"ai"``; ``None`` when nobody held control.
        name: the speaker's display name at the time (``"AI"`` for the AI).
        text: what was said, at most ``RoomLimits.transcript_chars`` characters.
        at: when the line became final, UNIX seconds.
    """

    model_config = ConfigDict(extra="ignore")

    id: str
    speaker: str | None = None
    name: str | None = None
    text: str
    at: float = 0.0

    def wire(self) -> dict[str, Any]:
        """The ``aiTranscript`` message of this line: ``{type, id, speaker, name, text}``."""
        return {"type": "aiTranscript", "id": self.id, "speaker": self.speaker,
                "name": self.name, "text": self.text}


class ToolCallRecord(BaseModel):
    """One tool call of the AI, kept durably from its arrival to its delivery.

    Attributes:
        id: the model's function call id.
        callId: the AI call (session) that asked for it.
        name: the tool's name.
        arguments: the arguments, JSON text as the model sent them (at most 16 KiB).
        status: ``running`` (recorded; the tool runs), ``done`` (its output is here and
            goes to the model), ``delivered`` (the model has it).
        output: the tool's output, JSON text (at most 16 KiB), once ``done``.
    """

    model_config = ConfigDict(extra="ignore")

    id: str
    callId: str
    name: str
    arguments: str = "{}"
    status: Literal["running", "done", "delivered"] = "running"
    output: str | None = None


class RoomData(BaseModel):
    """Everything a room persists (its snapshot's ``state``).

    Times are UNIX seconds (floats).
    """

    model_config = ConfigDict(extra="ignore")

    users: dict[str, User] = Field(default_factory=dict)
    heartbeats: dict[str, float] = Field(default_factory=dict)
    connections: dict[str, str] = Field(default_factory=dict)
    owners: dict[str, str] = Field(default_factory=dict)
    """The identity that first used each connection id (a socket's ``_pk``, or an HTTP
    sender's ``http:<name>``); kept while its user or connection exists."""
    meetingId: str | None = None
    peakUserCount: int = 0
    alarmAt: float | None = None
    ai: AiState = Field(default_factory=AiState)
    transcript: list[TranscriptLine] = Field(default_factory=list)
    """The meeting's newest final transcript lines, oldest first (at most
    ``RoomLimits.transcript_lines``; the whole transcript is in the store)."""
    toolCalls: list[ToolCallRecord] = Field(default_factory=list)
    """The AI's newest tool calls, oldest first (every one not yet delivered, and the
    newest delivered ones up to 32 in all)."""
    hibernatedAt: float | None = None
    """When the room last hibernated (its activation saved and exited on purpose, idle);
    ``None`` while an activation is live, and after one that ended any other way (a
    crash, a SIGKILL, a lost node). The next activation reads it to tell a wake from a
    restart (:meth:`rooms.room.Room.on_start`)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message (or close) leaving the room.

    Attributes:
        to: ``"one"`` (connection ``conn``), ``"all"``, or ``"except"`` (all but ``conn``).
        conn: the connection id for ``"one"`` and ``"except"``.
        message: the server message (a JSON object), or ``None`` for a bare close.
        close: ``(code, reason)`` to close connection ``conn`` after the message.
    """

    to: Literal["one", "all", "except"]
    conn: str | None = None
    message: dict[str, Any] | None = None
    close: tuple[int, str] | None = None


@dataclass(frozen=True, slots=True)
class EnableJob:
    """Bring the AI into the call (docs/ai.md, ``enableAi`` steps 1-4)."""

    attempt: int
    meeting_id: str | None
    instructions: str | None
    voice: str | None


@dataclass(frozen=True, slots=True)
class ControlJob:
    """Feed connection ``conn``'s track into the AI session's transceiver ``#trackName``.

    ``restore``: this feeds the controlling user's track again after a cancelled
    request's late pull replaced it; its result changes nothing."""

    attempt: int
    conn: str
    session_id: str
    track_name: str
    track: TrackRef
    restore: bool = False


@dataclass(frozen=True, slots=True)
class ReleaseJob:
    """Release what an AI flow created: close Calls tracks, hang up the OpenAI call."""

    session_id: str | None
    mids: tuple[str, ...]
    call_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class ToolJob:
    """Run tool call ``call`` (status ``running``) once, through the tool runner."""

    call: ToolCallRecord


Job = EnableJob | ControlJob | ReleaseJob | ToolJob


@dataclass(slots=True)
class Effects:
    """What a turn produced.

    Attributes:
        messages: outgoing messages and closes, in order.
        jobs: AI jobs to run outside the input gate.
        changed: the room's persisted state changed (a snapshot must be saved before
            ``messages`` are released).
        log: structured log records (``dict``) for the actor to emit.
    """

    messages: list[Outgoing] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    changed: bool = False
    log: list[dict[str, Any]] = field(default_factory=list)
