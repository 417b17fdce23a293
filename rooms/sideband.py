"""The room's sideband to its AI's live voice session: watch it, steer it, keep it.

OpenAI's answer to "the application server must see and steer a WebRTC voice session"
is the *sideband*: a second, server-side WebSocket to the same live session
(``wss://api.openai.com/v1/realtime?call_id=<call id>``; source: OpenAI's "Webhooks and
server-side controls"), on which the server reads the session's events and sends
``session.update`` while the media stays on WebRTC (here: Calls' thirdparty session).

A :class:`Sideband` belongs to one room activation and one call. It

* attaches (through the :class:`~rooms.ports.AiSideband` port) and attaches again with
  exponential back-off when the link drops (tenacity);
* keeps the session where the room wants it (:class:`SessionControl`): the
  instructions name whoever holds control, and with nobody holding control the model
  hears nothing (``turn_detection: null`` and ``input_audio_buffer.clear``: the
  Realtime equivalent of muting the session's input). The wanted control is sent again
  after every attach, so a room restarted by Ray (which attaches anew) or a dropped link
  cannot leave the session as it was;
* turns final transcripts into :class:`~rooms.room.AiTranscript` events: a user's
  utterance is attributed to the connection that held control when the model began to
  hear it (``input_audio_buffer.speech_started``), the model's own to ``ai``;
* reports a session that is gone (attach refused with 404, or any error that cannot be
  retried) once, as :class:`~rooms.room.AiCallEnded`, and stops.

Its lifecycle is one explicit :class:`SidebandState`. It does no room logic itself: the
room actor owns it, feeds its events into the room as turns and tells it, after every
turn, what the session should be (:func:`session_control`).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_never,
    wait_exponential,
)

from .ports import AiSideband, BridgeError, ClientEvent, SidebandLink
from .realtime_events import (
    AudioCommitted,
    ErrorEvent,
    InputAudioBufferClear,
    InputTranscriptionCompleted,
    OutputTranscriptDone,
    SessionUpdate,
    SpeechStarted,
    input_config,
)
from .room import AiCallEnded, AiTranscript

__all__ = [
    "DEFAULT_IDLE_INSTRUCTIONS",
    "DEFAULT_SPEAKER_TEMPLATE",
    "SessionControl",
    "Sideband",
    "SidebandState",
    "session_control",
]

log = logging.getLogger("ray_rooms.sideband")

DEFAULT_SPEAKER_TEMPLATE = "You are in a meeting. The person speaking to you now is {name}."
"""What the room adds to the AI's instructions while a user holds control; ``{name}``
is replaced by that user's display name (``ROOMS_AI_SPEAKER_TEMPLATE``)."""

DEFAULT_IDLE_INSTRUCTIONS = "You are in a meeting. Nobody is speaking to you now."
"""What the room adds to the AI's instructions while nobody holds control."""

BASE_INSTRUCTIONS = "You are a helpful assistant in a video meeting."
"""The instructions used when ``enableAi`` gave none."""

_KEPT_ITEMS = 64
"""How many heard items' speakers are remembered until their transcript arrives."""


@dataclass(frozen=True, slots=True)
class SessionControl:
    """What the live session should be.

    Attributes:
        listening: the model hears the transceiver's input (someone holds control).
        instructions: the session's whole instructions.
    """

    listening: bool
    instructions: str

    def events(self) -> list[ClientEvent]:
        """The client events that make the session so: a ``session.update`` (input
        transcription on, ``turn_detection`` on or ``null``, the instructions), and when
        not listening an ``input_audio_buffer.clear`` after it."""
        update = SessionUpdate(session={
            "type": "realtime", "instructions": self.instructions,
            "audio": {"input": input_config(listening=self.listening)},
        })
        return [update] if self.listening else [update, InputAudioBufferClear()]


def session_control(instructions: str | None, speaker_name: str | None,
                    template: str = DEFAULT_SPEAKER_TEMPLATE) -> SessionControl:
    """The session a room wants for its AI.

    Args:
        instructions: the instructions ``enableAi`` gave (``None``: a default).
        speaker_name: the display name of the user holding control, or ``None``.
        template: the sentence naming the speaker; ``{name}`` is replaced by the name
            (plain replacement: braces in a name are kept as they are).

    Returns:
        listening iff someone holds control; the instructions with the template's
        sentence (or :data:`DEFAULT_IDLE_INSTRUCTIONS`) after a blank line.
    """
    base = instructions or BASE_INSTRUCTIONS
    if speaker_name is None:
        return SessionControl(False, f"{base}\n\n{DEFAULT_IDLE_INSTRUCTIONS}")
    return SessionControl(True, f"{base}\n\n{template.replace('{name}', speaker_name)}")


class SidebandState(enum.Enum):
    """Where a :class:`Sideband` is in its life."""

    NEW = "new"
    """Made, not started."""
    ATTACHING = "attaching"
    """Opening the link (the first try of an attach)."""
    WAITING = "waiting"
    """An attach failed with an error worth retrying; waiting to try again."""
    ATTACHED = "attached"
    """The link is open: events are read, the wanted control is sent."""
    CLOSED = "closed"
    """Closed by the room, or the session is gone; never attaches again."""


Speaker = Callable[[], "str | None"]
OnLine = Callable[[AiTranscript], Awaitable[None]]
OnEnded = Callable[[AiCallEnded], Awaitable[None]]


class Sideband:
    """The sideband of one room activation to the live session of call ``call_id``.

    Args:
        call_id: the voice session's call id (OpenAI create-realtime-call's
            ``Location``), as kept in the room's snapshot.
        port: opens links (:class:`~rooms.ports.AiSideband`).
        speaker: returns the connection id holding control now (``None``: nobody);
            asked when the model begins to hear an utterance.
        on_line: awaited with each final transcript line, in order (a room turn).
        on_ended: awaited once when the session is gone (then the sideband closes).
        backoff: the first wait between attaches, seconds; each further wait doubles.
        max_backoff: the longest wait between attaches, seconds.

    Call :meth:`start` in a running loop, :meth:`steer` after every turn, and
    :meth:`close` when the AI leaves.
    """

    def __init__(self, call_id: str, port: AiSideband, *, speaker: Speaker,
                 on_line: OnLine, on_ended: OnEnded, backoff: float = 0.25,
                 max_backoff: float = 5.0) -> None:
        self.call_id = call_id
        self.state = SidebandState.NEW
        self.attaches = 0
        """How many times a link was opened (1 + re-attaches)."""
        self._port = port
        self._speaker = speaker
        self._on_line = on_line
        self._on_ended = on_ended
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._wanted: SessionControl | None = None
        self._sent: SessionControl | None = None
        self._changed = asyncio.Event()
        self._speakers: collections.OrderedDict[str, str | None] = collections.OrderedDict()
        self._task: asyncio.Task | None = None
        self._link: SidebandLink | None = None

    def __repr__(self) -> str:
        return f"<Sideband {self.call_id} {self.state.value} attaches={self.attaches}>"

    def start(self) -> None:
        """Start attaching in the running loop (idempotent)."""
        if self._task is None and self.state is SidebandState.NEW:
            self._task = asyncio.ensure_future(self._run())

    def steer(self, control: SessionControl) -> None:
        """Make ``control`` the wanted session: sent now if attached and different from
        what was sent last, else right after the next attach. Never blocks or raises."""
        if control != self._wanted:
            self._wanted = control
            self._changed.set()

    async def close(self) -> None:
        """Close the link and stop for good (idempotent; never raises)."""
        self.state = SidebandState.CLOSED
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled, or already reported
                pass
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    # ---- the link ---------------------------------------------------------------------

    async def _run(self) -> None:
        quick_drops = 0
        while self.state is not SidebandState.CLOSED:
            try:
                link = await self._attach()
            except BridgeError as error:  # not worth retrying: the session is gone
                await self._ended(str(error))
                return
            self._link = link
            self.state = SidebandState.ATTACHED
            self.attaches += 1
            self._sent = None
            self._changed.set()
            opened = time.monotonic()
            log.info("sideband to call %s attached (%d)", self.call_id, self.attaches)
            sender = asyncio.ensure_future(self._send_loop(link))
            try:
                await self._read_loop(link)
            except BridgeError as error:
                if not error.retryable:
                    await self._ended(str(error))
                    return
                log.info("sideband to call %s dropped: %s", self.call_id, error)
            finally:
                sender.cancel()
                self._link = None
                await link.close()
            # a link that drops as soon as it opens must not make attaches spin
            quick_drops = quick_drops + 1 if time.monotonic() - opened < 1.0 else 0
            if quick_drops and self.state is not SidebandState.CLOSED:
                self.state = SidebandState.WAITING
                await asyncio.sleep(min(self._max_backoff, self._backoff * 2 ** quick_drops))

    async def _attach(self) -> SidebandLink:
        """Open a link, retrying errors marked retryable with back-off.

        Raises:
            BridgeError: one that is not retryable (e.g. :class:`~rooms.ports.CallEnded`).
        """
        def waiting(retry: RetryCallState) -> None:
            self.state = SidebandState.WAITING
            log.info("sideband to call %s: attach failed (%s); trying again",
                     self.call_id, retry.outcome.exception() if retry.outcome else "?")

        self.state = SidebandState.ATTACHING
        async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: not isinstance(e, BridgeError)
                                         or e.retryable),
                wait=wait_exponential(multiplier=self._backoff, max=self._max_backoff),
                stop=stop_never, before_sleep=waiting, reraise=True):
            with attempt:
                return await self._port.attach(self.call_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _ended(self, reason: str) -> None:
        log.warning("sideband to call %s: the session is gone (%s)", self.call_id, reason)
        self.state = SidebandState.CLOSED
        try:
            await self._on_ended(AiCallEnded(self.call_id, reason[:300]))
        except Exception:  # noqa: BLE001 - the room reports its own failures
            log.exception("sideband to call %s: reporting its end failed", self.call_id)

    async def _send_loop(self, link: SidebandLink) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            wanted = self._wanted
            if wanted is None or wanted == self._sent:
                continue
            try:
                for event in wanted.events():
                    await link.send(event)
            except BridgeError as error:  # the read loop sees the link go
                log.info("sideband to call %s: send failed: %s", self.call_id, error)
                await link.close()
                return
            self._sent = wanted

    async def _read_loop(self, link: SidebandLink) -> None:
        """Read events until the link fails (raises its :class:`BridgeError`)."""
        while True:
            event = await link.receive()
            if isinstance(event, (SpeechStarted, AudioCommitted)):
                if event.item_id not in self._speakers:
                    self._speakers[event.item_id] = self._speaker()
                    while len(self._speakers) > _KEPT_ITEMS:
                        self._speakers.popitem(last=False)
            elif isinstance(event, InputTranscriptionCompleted):
                speaker = self._speakers.pop(event.item_id, None) \
                    if event.item_id in self._speakers else self._speaker()
                await self._line(AiTranscript(self.call_id, event.item_id, "in", speaker,
                                              event.transcript))
            elif isinstance(event, OutputTranscriptDone):
                await self._line(AiTranscript(self.call_id, event.item_id, "out", None,
                                              event.transcript))
            elif isinstance(event, ErrorEvent):
                log.warning("sideband to call %s: the session refused an event: %s",
                            self.call_id, str(event.error.get("message", ""))[:300])

    async def _line(self, line: AiTranscript) -> None:
        try:
            await self._on_line(line)
        except Exception as error:  # noqa: BLE001 - a failed turn loses one caption
            log.warning("sideband to call %s: transcript line %s not kept: %s",
                        self.call_id, line.item_id, error)
