"""The OpenAI Live API events a room's sideband sends and reads, as typed models.

One wire, two sides: the Live link (:mod:`bridges.openai_live`) and the local emulator
(:mod:`bridges.local.realtime`) both build and parse these models.

Source: OpenAI's Live API reference ("Sideband WebSocket",
``wss://api.openai.com/v1/live/sessions/{session_id}/attach``; client and server events
of ``live.sideband``) and its OpenAPI file (``POST /live/sessions``, create-live), written
down in the contract ``bridges/contracts/openai_live.yaml``. Only the events and fields
the room uses are modelled; every model keeps the fields it does not name.

Client events (room -> session)::

    session.input_audio.mute      {}                    the model hears silence
    session.input_audio.unmute    {}
    session.instructions.append   {content}             system-level instructions, added
    session.commentary.append     {content, delegation_id}

Server events (session -> room)::

    session.started / session.updated / session.input_audio.muted / .unmuted /
    session.instructions.appended / session.commentary.appended     acknowledgements
    session.input_transcript.delta    {delta, start_ms?, end_ms?}  what a user says
    session.output_transcript.delta   {delta, start_ms?, end_ms?}  what the model says
    session.delegation.created        {delegation: {id, target}, offset_ms}  work for the app
    session.closed                    {reason}                     the session ended
    error                             {error: {type, code, message}}
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "LIVE_SERVER_EVENT_TYPES",
    "CommentaryAppend",
    "DelegationCreated",
    "InputAudioMute",
    "InputAudioUnmute",
    "InstructionsAppend",
    "LiveAck",
    "LiveClosed",
    "LiveError",
    "LiveServerEvent",
    "TranscriptDelta",
    "parse_live_event",
]


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow")

    event_id: str | None = None

    def wire(self) -> dict[str, Any]:
        """The event as the JSON object sent on the wire (``None`` fields left out)."""
        return self.model_dump(exclude_none=True)


class InputAudioMute(_Event):
    """``session.input_audio.mute``: the model hears silence until unmuted."""

    type: Literal["session.input_audio.mute"] = "session.input_audio.mute"


class InputAudioUnmute(_Event):
    """``session.input_audio.unmute``: the model hears the input again."""

    type: Literal["session.input_audio.unmute"] = "session.input_audio.unmute"


class InstructionsAppend(_Event):
    """``session.instructions.append``: add system-level instructions (a Live session's
    startup instructions cannot be replaced)."""

    type: Literal["session.instructions.append"] = "session.instructions.append"
    content: str


class CommentaryAppend(_Event):
    """``session.commentary.append``: speakable context for the model, for delegation
    ``delegation_id`` (``None``: general context)."""

    type: Literal["session.commentary.append"] = "session.commentary.append"
    content: str
    delegation_id: str | None = None

    def wire(self) -> dict[str, Any]:
        """The event as sent (``delegation_id`` is required and nullable)."""
        return {**super().wire(), "delegation_id": self.delegation_id}


class LiveAck(_Event):
    """An acknowledgement or state event the room only logs."""

    type: Literal["session.started", "session.updated", "session.input_audio.muted",
                  "session.input_audio.unmuted", "session.instructions.appended",
                  "session.commentary.appended"]


class TranscriptDelta(_Event):
    """``session.input_transcript.delta`` (a user) or ``session.output_transcript.delta``
    (the model): the next piece of a transcript."""

    type: Literal["session.input_transcript.delta", "session.output_transcript.delta"]
    delta: str = ""
    start_ms: int | None = None
    end_ms: int | None = None


class DelegationCreated(_Event):
    """``session.delegation.created``: the model delegates work to the application
    (``delegation.id`` answers it: ``session.commentary.append`` with that
    ``delegation_id``). The delegation carries metadata only, not the task's text."""

    type: Literal["session.delegation.created"]
    delegation: dict[str, Any] = Field(default_factory=dict)
    offset_ms: int | None = None


class LiveClosed(_Event):
    """``session.closed``: the session ended (``reason``: close_requested, expired,
    remote_hangup, connection_lost, ...)."""

    type: Literal["session.closed"]
    reason: str | None = None


class LiveError(_Event):
    """``error``: the session refused a client event."""

    type: Literal["error"]
    error: dict[str, Any] = Field(default_factory=dict)


LiveServerEvent = Union[LiveAck, TranscriptDelta, DelegationCreated, LiveClosed, LiveError]
"""The Live server events the room reads."""

_ADAPTER: TypeAdapter = TypeAdapter(LiveServerEvent)

LIVE_SERVER_EVENT_TYPES = frozenset({
    "session.started", "session.updated", "session.input_audio.muted",
    "session.input_audio.unmuted", "session.instructions.appended",
    "session.commentary.appended", "session.input_transcript.delta",
    "session.output_transcript.delta", "session.delegation.created", "session.closed",
    "error",
})
"""The ``type`` of every server event :func:`parse_live_event` models."""


def parse_live_event(data: Any) -> LiveServerEvent | None:
    """Parse one Live server event (a decoded JSON object).

    Returns:
        The typed event, or ``None`` for a type the room does not use.

    Raises:
        ValueError: an event of a modelled type with fields not as the reference says.
    """
    if not isinstance(data, dict) or data.get("type") not in LIVE_SERVER_EVENT_TYPES:
        return None
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as error:
        raise ValueError(f"malformed {data.get('type')} event: "
                         f"{error.errors()[0].get('msg', 'invalid')}") from None
