"""What the room's sideband and a voice backend's link say to each other, backend-neutral.

The room speaks to two voice backends (OpenAI Realtime calls, OpenAI's Live API) whose
sideband events differ. The room's :class:`~rooms.sideband.Sideband` speaks only this
module's terms; each backend's link (:class:`~rooms.ports.SidebandLink`, in
``bridges/``) turns them into its own events and back:

* room -> session: :class:`SessionControl` (who is speaking, whether the model hears,
  which tools it has) and tool outputs;
* session -> room: the :data:`Note` types below (speech began, a user's final words,
  the AI's final words, a tool call, a refusal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = [
    "AiSaid",
    "DEFAULT_IDLE_SENTENCE",
    "DELEGATION",
    "DEFAULT_SPEAKER_TEMPLATE",
    "BASE_INSTRUCTIONS",
    "Note",
    "Refused",
    "SessionControl",
    "SpeechBegan",
    "ToolCalled",
    "UserSaid",
    "session_control",
]

DEFAULT_SPEAKER_TEMPLATE = "You are in a meeting. The person speaking to you now is {name}."
"""What the room tells the AI while a user holds control; ``{name}`` is replaced by that
user's display name (``ROOMS_AI_SPEAKER_TEMPLATE``)."""

DEFAULT_IDLE_SENTENCE = "You are in a meeting. Nobody is speaking to you now."
"""What the room tells the AI while nobody holds control."""

BASE_INSTRUCTIONS = "You are a helpful assistant in a video meeting."
"""The instructions used when ``enableAi`` gave none."""


@dataclass(frozen=True, slots=True)
class SessionControl:
    """What the live session should be.

    Attributes:
        listening: the model hears the transceiver's input (someone holds control).
        instructions: enableAi's instructions (or :data:`BASE_INSTRUCTIONS`).
        speaker_sentence: the sentence naming who is speaking now (or that nobody is).
        tools: the function tools declared to the session (``Tool.declaration()``).
    """

    listening: bool
    instructions: str
    speaker_sentence: str
    tools: tuple[dict, ...] = ()

    @property
    def full_instructions(self) -> str:
        """The instructions and the speaker sentence, a blank line apart."""
        return f"{self.instructions}\n\n{self.speaker_sentence}"


def session_control(instructions: str | None, speaker_name: str | None,
                    template: str = DEFAULT_SPEAKER_TEMPLATE,
                    tools: tuple[dict, ...] = ()) -> SessionControl:
    """The session a room wants for its AI.

    Args:
        instructions: the instructions ``enableAi`` gave (``None``: a default).
        speaker_name: the display name of the user holding control, or ``None``.
        template: the sentence naming the speaker; ``{name}`` is replaced by the name
            (plain replacement: braces in a name are kept as they are).
        tools: the function tools to declare (:func:`rooms.tools.declarations`).

    Returns:
        listening iff someone holds control, with the sentence that says who.
    """
    base = instructions or BASE_INSTRUCTIONS
    if speaker_name is None:
        return SessionControl(False, base, DEFAULT_IDLE_SENTENCE, tools)
    return SessionControl(True, base, template.replace("{name}", speaker_name), tools)


@dataclass(frozen=True, slots=True)
class SpeechBegan:
    """The model began to hear an utterance that will be ``item_id``."""

    item_id: str


@dataclass(frozen=True, slots=True)
class UserSaid:
    """The final transcript of what a user said (utterance ``item_id``)."""

    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class AiSaid:
    """The final transcript of what the AI said (``item_id``)."""

    item_id: str
    text: str


DELEGATION = "<delegation>"
"""The ``ToolCalled.name`` of a Live client delegation: the model hands work to the
application without naming a tool; the room runs its delegation tool
(``ROOMS_AI_LIVE_DELEGATE_TOOL``) with the recent transcript."""


@dataclass(frozen=True, slots=True)
class ToolCalled:
    """The model calls tool ``name`` with ``arguments`` (JSON text) as call ``call_id``
    (``name`` is :data:`DELEGATION` for a Live delegation)."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Refused:
    """The session refused something the room sent (``message``, for the log)."""

    message: str


Note = Union[SpeechBegan, UserSaid, AiSaid, ToolCalled, Refused]
"""What a link reports from the session."""
