"""The OpenAI Realtime events a room's AI sideband sends and reads, as typed models.

One wire, two sides: the room's sideband (:mod:`rooms.sideband`, over
:mod:`bridges.openai_sideband`) and the local emulator (:mod:`bridges.local.realtime`)
both build and parse these models, so they cannot drift apart.

Source: OpenAI's Realtime API event reference (GA names; developers.openai.com
"Realtime client events" / "Realtime server events", and "Webhooks and server-side
controls" for the sideband ``wss://api.openai.com/v1/realtime?call_id=<call id>``),
written down in the contract ``bridges/contracts/openai_realtime.yaml`` (section
``sideband``). Only the events and fields the room uses are modelled; every model keeps
the fields it does not name (``extra="allow"``), and :func:`parse_server_event` returns
``None`` for an event type the room does not use (the service sends many more).

Client events (room -> model)::

    session.update            {session: {type: "realtime", instructions?, tools?, tool_choice?,
                                 audio?: {input?: {transcription?: {model},
                                 turn_detection?: {...} | null}}}}
    input_audio_buffer.clear  {}
    conversation.item.create  {item: {type: "function_call_output", call_id, output}}
    response.create           {}

Server events (model -> room)::

    session.created / session.updated                         {session}
    input_audio_buffer.speech_started                         {item_id, audio_start_ms}
    input_audio_buffer.committed                              {item_id, previous_item_id}
    conversation.item.input_audio_transcription.completed    {item_id, content_index, transcript}
    response.output_audio_transcript.done                     {response_id, item_id, transcript}
    response.function_call_arguments.done                     {call_id, name, arguments, item_id}
    error                                                     {error: {type, code, message, param, event_id}}
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "ErrorEvent",
    "InputAudioBufferClear",
    "SERVER_EVENT_TYPES",
    "ServerEvent",
    "SessionUpdate",
    "SessionUpdated",
    "SpeechStarted",
    "AudioCommitted",
    "ConversationItemCreate",
    "FunctionCallArgumentsDone",
    "ResponseCreate",
    "InputTranscriptionCompleted",
    "OutputTranscriptDone",
    "TRANSCRIPTION_MODEL",
    "input_config",
    "parse_server_event",
]

TRANSCRIPTION_MODEL = "gpt-4o-transcribe"
"""The input transcription model the room asks for (``audio.input.transcription.model``)."""


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow")

    event_id: str | None = None

    def wire(self) -> dict[str, Any]:
        """The event as the JSON object sent on the wire (``None`` fields left out)."""
        return self.model_dump(exclude_none=True)


# ---- client events -------------------------------------------------------------------


def input_config(*, listening: bool) -> dict[str, Any]:
    """The ``audio.input`` part of a ``session.update`` that turns input transcription on
    and the model's hearing on (``turn_detection: server_vad``) or off
    (``turn_detection: null``: nothing heard is committed, so nothing is answered or
    transcribed; the room also clears the buffer).

    Returns:
        ``{"transcription": {"model": ...}, "turn_detection": {...} | None}``.
    """
    return {"transcription": {"model": TRANSCRIPTION_MODEL},
            "turn_detection": {"type": "server_vad"} if listening else None}


class SessionUpdate(_Event):
    """``session.update``: change the live session (instructions, input settings).

    Attributes:
        session: a ``RealtimeSessionCreateRequestGA``-shaped object; ``type`` is
            ``"realtime"``.
    """

    type: Literal["session.update"] = "session.update"
    session: dict[str, Any]

    def wire(self) -> dict[str, Any]:
        """The event as sent (the session object as given, its ``null``s kept)."""
        event = {"type": self.type, "session": self.session}
        if self.event_id:
            event["event_id"] = self.event_id
        return event


class InputAudioBufferClear(_Event):
    """``input_audio_buffer.clear``: drop the audio heard and not yet committed."""

    type: Literal["input_audio_buffer.clear"] = "input_audio_buffer.clear"


class ConversationItemCreate(_Event):
    """``conversation.item.create``: add an item; the room adds the output of a tool
    call: ``{type: "function_call_output", call_id, output}`` (``output`` a string)."""

    type: Literal["conversation.item.create"] = "conversation.item.create"
    item: dict[str, Any]

    @classmethod
    def tool_output(cls, call_id: str, output: str) -> "ConversationItemCreate":
        """The item that answers function call ``call_id`` with ``output`` (JSON text)."""
        return cls(item={"type": "function_call_output", "call_id": call_id,
                         "output": output})


class ResponseCreate(_Event):
    """``response.create``: ask the model to respond (after a tool's output)."""

    type: Literal["response.create"] = "response.create"


# ---- server events -------------------------------------------------------------------


class SessionUpdated(_Event):
    """``session.created`` or ``session.updated``: the session as it now is."""

    type: Literal["session.created", "session.updated"]
    session: dict[str, Any] = Field(default_factory=dict)


class SpeechStarted(_Event):
    """``input_audio_buffer.speech_started``: the model began to hear speech that will
    become item ``item_id``."""

    type: Literal["input_audio_buffer.speech_started"]
    item_id: str
    audio_start_ms: int | None = None


class AudioCommitted(_Event):
    """``input_audio_buffer.committed``: the heard audio became user item ``item_id``."""

    type: Literal["input_audio_buffer.committed"]
    item_id: str
    previous_item_id: str | None = None


class InputTranscriptionCompleted(_Event):
    """``conversation.item.input_audio_transcription.completed``: the transcript of
    user item ``item_id``."""

    type: Literal["conversation.item.input_audio_transcription.completed"]
    item_id: str
    content_index: int = 0
    transcript: str


class OutputTranscriptDone(_Event):
    """``response.output_audio_transcript.done``: the final transcript of what the model
    said in item ``item_id``."""

    type: Literal["response.output_audio_transcript.done"]
    item_id: str
    response_id: str | None = None
    transcript: str


class FunctionCallArgumentsDone(_Event):
    """``response.function_call_arguments.done``: the model calls tool ``name`` with
    ``arguments`` (JSON text); ``call_id`` identifies the call (its output answers it)."""

    type: Literal["response.function_call_arguments.done"]
    call_id: str
    name: str
    arguments: str = "{}"
    item_id: str | None = None
    response_id: str | None = None


class ErrorEvent(_Event):
    """``error``: the service refused a client event (``error.code``, ``error.message``)."""

    type: Literal["error"]
    error: dict[str, Any] = Field(default_factory=dict)


ServerEvent = Union[SessionUpdated, SpeechStarted, AudioCommitted,
                    InputTranscriptionCompleted, OutputTranscriptDone,
                    FunctionCallArgumentsDone, ErrorEvent]
"""The server events the room reads."""

_SERVER_ADAPTER: TypeAdapter = TypeAdapter(ServerEvent)

SERVER_EVENT_TYPES = frozenset({
    "session.created", "session.updated", "input_audio_buffer.speech_started",
    "input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed",
    "response.output_audio_transcript.done", "response.function_call_arguments.done",
    "error",
})
"""The ``type`` of every server event :func:`parse_server_event` models."""


def parse_server_event(data: Any) -> ServerEvent | None:
    """Parse one server event (a decoded JSON object).

    Args:
        data: the event as decoded from its JSON text frame.

    Returns:
        The typed event, or ``None`` for an event the room does not use (another
        ``type``, or no ``type``).

    Raises:
        ValueError: an event of a modelled type whose fields are not what the reference
            says (e.g. a transcript that is not a string).
    """
    if not isinstance(data, dict) or data.get("type") not in SERVER_EVENT_TYPES:
        return None
    try:
        return _SERVER_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise ValueError(f"malformed {data.get('type')} event: "
                         f"{error.errors()[0].get('msg', 'invalid')}") from None
