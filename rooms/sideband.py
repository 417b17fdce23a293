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
  hears nothing (Realtime: ``turn_detection: null`` and ``input_audio_buffer.clear``;
  Live: ``session.input_audio.mute``; the link decides). The wanted control is sent
  again after every attach, so a room restarted by Ray (which attaches anew) or a
  dropped link cannot leave the session as it was;
* turns final transcripts into :class:`~rooms.room.AiTranscript` events: a user's
  utterance is attributed to the connection that held control when the model began to
  hear it (:class:`~rooms.sideband_wire.SpeechBegan`), the model's own to ``ai``;
* turns tool calls into :class:`~rooms.room.AiToolCall` events and sends the outputs
  it is given (:meth:`Sideband.deliver`);
* reports a session that is gone (attach refused with 404, or any error that cannot be
  retried) once, as :class:`~rooms.room.AiCallEnded`, and stops.

It speaks only the backend-neutral terms of :mod:`rooms.sideband_wire`; each backend's
link turns them into its own events. Its lifecycle is one explicit
:class:`SidebandState`. It does no room logic itself: the
room actor owns it, feeds its events into the room as turns and tells it, after every
turn, what the session should be (:func:`session_control`).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from typing import Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_never,
    wait_exponential,
)

from .ports import AiSideband, BridgeError, SidebandLink
from .room import AiCallEnded, AiToolCall, AiTranscript
from .sideband_wire import (
    DEFAULT_SPEAKER_TEMPLATE,
    AiSaid,
    Refused,
    SessionControl,
    SpeechBegan,
    ToolCalled,
    UserSaid,
    session_control,
)

__all__ = [
    "DEFAULT_SPEAKER_TEMPLATE",
    "SessionControl",
    "Sideband",
    "SidebandState",
    "session_control",
]

log = logging.getLogger("ray_rooms.sideband")

_KEPT_ITEMS = 64
"""How many heard items' speakers are remembered until their transcript arrives."""


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
OnToolCall = Callable[[AiToolCall], Awaitable[None]]
OnDelivered = Callable[[str], Awaitable[None]]


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
        on_tool_call: awaited with each function call the model makes (a room turn that
            records it durably before the tool runs).
        on_delivered: awaited with a tool call id once its output (:meth:`deliver`) was
            sent to the model.
        backoff: the first wait between attaches, seconds; each further wait doubles.
        max_backoff: the longest wait between attaches, seconds.

    Call :meth:`start` in a running loop, :meth:`steer` after every turn, and
    :meth:`close` when the AI leaves.
    """

    def __init__(self, call_id: str, port: AiSideband, *, speaker: Speaker,
                 on_line: OnLine, on_ended: OnEnded, on_tool_call: OnToolCall | None = None,
                 on_delivered: OnDelivered | None = None, backoff: float = 0.25,
                 max_backoff: float = 5.0) -> None:
        self.call_id = call_id
        self.state = SidebandState.NEW
        self.attaches = 0
        """How many times a link was opened (1 + re-attaches)."""
        self._port = port
        self._speaker = speaker
        self._on_line = on_line
        self._on_ended = on_ended
        self._on_tool_call = on_tool_call
        self._on_delivered = on_delivered
        self._outputs: dict[str, str] = {}  # tool call id -> output, until delivered
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

    async def settled(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until the wanted control was sent on the
        open link. Returns ``True`` if it was; ``False`` after the timeout or when not
        attached (the control is sent first thing after the next attach)."""
        deadline = time.monotonic() + timeout
        while self._wanted is not None and self._wanted != self._sent:
            if self.state is not SidebandState.ATTACHED or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def deliver(self, tool_call_id: str, output: str) -> None:
        """Send tool call ``tool_call_id``'s ``output`` (JSON text) to the model
        (``conversation.item.create`` of a ``function_call_output``, then
        ``response.create``) as soon as attached; ``on_delivered`` follows. Asking again
        for an output not yet delivered changes nothing. Never blocks or raises."""
        if tool_call_id not in self._outputs:
            self._outputs[tool_call_id] = output
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
            try:
                if wanted is not None and wanted != self._sent:
                    await link.send_control(wanted, self._sent)
                    self._sent = wanted
                for tool_call_id, output in list(self._outputs.items()):
                    await link.send_tool_output(tool_call_id, output)
                    del self._outputs[tool_call_id]
                    if self._on_delivered is not None:
                        await self._report(self._on_delivered(tool_call_id), tool_call_id)
            except BridgeError as error:  # the read loop sees the link go
                log.info("sideband to call %s: send failed: %s", self.call_id, error)
                await link.close()
                return

    async def _read_loop(self, link: SidebandLink) -> None:
        """Read events until the link fails (raises its :class:`BridgeError`)."""
        while True:
            note = await link.receive()
            if isinstance(note, SpeechBegan):
                if note.item_id not in self._speakers:
                    self._speakers[note.item_id] = self._speaker()
                    while len(self._speakers) > _KEPT_ITEMS:
                        self._speakers.popitem(last=False)
            elif isinstance(note, UserSaid):
                speaker = self._speakers.pop(note.item_id, None) \
                    if note.item_id in self._speakers else self._speaker()
                await self._line(AiTranscript(self.call_id, note.item_id, "in", speaker,
                                              note.text))
            elif isinstance(note, AiSaid):
                await self._line(AiTranscript(self.call_id, note.item_id, "out", None,
                                              note.text))
            elif isinstance(note, ToolCalled):
                if self._on_tool_call is not None:
                    await self._report(self._on_tool_call(AiToolCall(
                        self.call_id, note.call_id, note.name, note.arguments)),
                        note.call_id)
            elif isinstance(note, Refused):
                log.warning("sideband to call %s: the session refused an event: %s",
                            self.call_id, note.message[:300])

    async def _report(self, turn: Awaitable[None], what: str) -> None:
        """Await a room turn the sideband caused; a failed one is logged (the room is
        restarting or its store is down)."""
        try:
            await turn
        except Exception as error:  # noqa: BLE001
            log.warning("sideband to call %s: the room did not take %s: %s", self.call_id,
                        what, error)

    async def _line(self, line: AiTranscript) -> None:
        try:
            await self._on_line(line)
        except Exception as error:  # noqa: BLE001 - a failed turn loses one caption
            log.warning("sideband to call %s: transcript line %s not kept: %s",
                        self.call_id, line.item_id, error)
