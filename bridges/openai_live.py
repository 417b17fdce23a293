"""The OpenAI Live API client: create and end WebRTC Live sessions, and their sideband.

Implements :class:`rooms.ports.AiService` and :class:`rooms.ports.AiSideband` against the
contract ``bridges/contracts/openai_live.yaml`` (from OpenAI's Live API OpenAPI file and
its sideband reference):

* ``POST {base}/live/sessions`` (create-live): JSON ``{session: {model, instructions?,
  audio?: {output: {voice}}}, transport: {type: "webrtc", sdp: <offer>}}``, answered 201
  with ``{session: {id}, transport: {type: "webrtc", sdp: <answer>}}``;
* ``POST {base}/live/sessions/{id}/hangup`` (hangup-live-session): 200;
* the sideband ``wss://.../live/sessions/{id}/attach`` (404 for an unknown or ended
  session: :class:`rooms.ports.CallEnded`), whose events are
  :mod:`rooms.live_events`.

How the room's terms (:mod:`rooms.sideband_wire`) map onto Live:

* a Live session's instructions cannot be replaced after it starts: the sentence
  naming the speaker is *appended* (``session.instructions.append``) on every change of
  speaker and after every attach;
* nobody holding control mutes the model's input (``session.input_audio.mute``; the
  model hears silence) and someone taking it unmutes it;
* Live sends transcripts as deltas with no item id: the link joins a direction's deltas
  into one line until the other direction speaks, the input is muted, or no delta came
  for ``line_gap_s`` seconds, and names the line ``live-in-<link>-<n>`` /
  ``live-out-<link>-<n>`` (``<link>`` random per attach, so ids never repeat);
* a client delegation (``session.delegation.created``) carries no tool name and no task
  text: it becomes a tool call named :data:`rooms.sideband_wire.DELEGATION`, which the
  room runs as its delegation tool (``ROOMS_AI_LIVE_DELEGATE_TOOL``) with the recent
  transcript; the output goes back as ``session.commentary.append`` for the delegation.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from secrets import token_hex
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from rooms.live_events import (
    CommentaryAppend,
    DelegationCreated,
    InputAudioMute,
    InputAudioUnmute,
    InstructionsAppend,
    LiveAck,
    LiveClosed,
    LiveError,
    TranscriptDelta,
    parse_live_event,
)
from rooms.ports import BridgeError, CallEnded, InvalidAnswer, RealtimeCall, SessionDescription
from rooms.sideband_wire import (
    DELEGATION,
    AiSaid,
    Note,
    Refused,
    SessionControl,
    SpeechBegan,
    ToolCalled,
    UserSaid,
)

from .openai import RealtimeClient
from .openai_sideband import WebSocketLink, open_link, ws_url
from .sdp import validate_sdp

__all__ = ["DEFAULT_LIVE_MODEL", "LiveClient", "LiveSidebandConnection", "live_attach_url"]

DEFAULT_LIVE_MODEL = "gpt-live-1"
"""The Live model used when none is configured."""

SERVICE = "openai"
OPERATION = "live sideband"

log = logging.getLogger("ray_rooms.bridges.openai")


def live_attach_url(base_url: str, session_id: str) -> str:
    """The sideband URL of Live session ``session_id`` under the API root ``base_url``
    (``https`` -> ``wss``), e.g. ``wss://api.openai.com/v1/live/sessions/live_1/attach``.

    Raises:
        ValueError: ``base_url`` is not http(s)/ws(s), or ``session_id`` is empty.
    """
    if not session_id:
        raise ValueError("session_id is empty")
    return ws_url(base_url, f"live/sessions/{quote(session_id, safe='')}/attach")


class LiveSidebandConnection(WebSocketLink):
    """One open Live sideband: a :class:`rooms.ports.SidebandLink` over a WebSocket.

    Args:
        ws: the open WebSocket.
        session_id: the Live session id.
        secrets: texts never to show in an error (the API key).
        line_gap_s: seconds without a delta after which a transcript line is final.
    """

    operation = OPERATION

    def __init__(self, ws: ClientConnection, session_id: str, secrets: list[str],
                 line_gap_s: float = 0.6) -> None:
        super().__init__(ws, session_id, secrets)
        self.line_gap_s = line_gap_s
        self._notes: collections.deque[Note] = collections.deque()
        self._open: dict[str, list[str]] = {}  # direction -> [line id, text]
        self._lines = 0
        self._link = token_hex(4)  # line ids stay unique across re-attaches
        self._failure: BridgeError | None = None

    async def send_control(self, control: SessionControl,
                           previous: SessionControl | None) -> None:
        """Append the speaker sentence when it changed (or right after attaching), and
        mute or unmute the input when that changed (or right after attaching).

        Raises:
            BridgeError: the connection is closed (``retryable``).
        """
        if previous is None or previous.speaker_sentence != control.speaker_sentence:
            await self._send(InstructionsAppend(content=control.speaker_sentence))
        if previous is None or previous.listening != control.listening:
            await self._send(InputAudioUnmute() if control.listening else InputAudioMute())

    async def send_tool_output(self, call_id: str, output: str) -> None:
        """``session.commentary.append`` of ``output`` for delegation ``call_id``.

        Raises:
            BridgeError: the connection is closed (``retryable``).
        """
        await self._send(CommentaryAppend(content=output, delegation_id=call_id))

    def _flush(self, direction: str) -> None:
        line = self._open.pop(direction, None)
        if line is not None and line[1].strip():
            cls = UserSaid if direction == "in" else AiSaid
            self._notes.append(cls(line[0], line[1].strip()))

    def _take(self, event) -> None:
        """Turn one Live server event into notes (queued)."""
        if isinstance(event, TranscriptDelta):
            direction = "in" if event.type == "session.input_transcript.delta" else "out"
            self._flush("out" if direction == "in" else "in")  # the other side's turn ended
            line = self._open.get(direction)
            if line is None:
                self._lines += 1
                line = self._open[direction] = [
                    f"live-{direction}-{self._link}-{self._lines}", ""]
                if direction == "in":
                    self._notes.append(SpeechBegan(line[0]))
            line[1] += event.delta
        elif isinstance(event, LiveAck) and event.type == "session.input_audio.muted":
            self._flush("in")
        elif isinstance(event, DelegationCreated):
            delegation_id = event.delegation.get("id")
            if isinstance(delegation_id, str) and delegation_id:
                self._flush("in")  # the words that led to it come first
                self._notes.append(ToolCalled(delegation_id, DELEGATION, json.dumps(
                    {"offset_ms": event.offset_ms})))
        elif isinstance(event, LiveClosed):
            self._flush("in")
            self._flush("out")
            self._failure = CallEnded(f"the Live session closed ({event.reason or 'no reason'})",
                                      service=SERVICE, operation=OPERATION)
        elif isinstance(event, LiveError):
            self._notes.append(Refused(str(event.error.get("message")
                                           or event.error.get("code") or "")))

    async def receive(self) -> Note | None:
        """Wait for the next note: transcript lines joined from deltas (a line is final
        when the other direction speaks, the input is muted, or after ``line_gap_s``
        seconds without a delta), speech beginning, refusals.

        Returns:
            A :data:`rooms.sideband_wire.Note`; ``None`` never (it waits).

        Raises:
            CallEnded: the session said ``session.closed`` (after the lines before it).
            BridgeError: the connection closed (``retryable``).
        """
        while not self._notes:
            if self._failure is not None:
                raise self._failure
            try:
                if self._open:
                    frame = await asyncio.wait_for(self._ws.recv(), self.line_gap_s)
                else:
                    frame = await self._ws.recv()
            except asyncio.TimeoutError:
                self._flush("in")
                self._flush("out")
                continue
            except ConnectionClosed as exc:
                self._flush("in")
                self._flush("out")
                self._failure = self._failure or self._closed(exc)
                continue
            if not isinstance(frame, str):
                continue
            try:
                event = parse_live_event(json.loads(frame))
            except ValueError as error:
                log.warning("live sideband %s: %s", self.call_id, str(error)[:300])
                continue
            if event is not None:
                self._take(event)
        return self._notes.popleft()


class LiveClient(RealtimeClient):
    """An OpenAI Live API client for WebRTC sessions: an :class:`AiService` and an
    :class:`AiSideband` (same arguments as :class:`bridges.openai.RealtimeClient`)."""

    create_operation = "live/sessions"
    """The name of the create operation in errors and the enable flow's steps."""

    def __repr__(self) -> str:
        return f"LiveClient(base_url={self.base_url!r})"

    async def create_call(
        self, offer: SessionDescription, *, model: str,
        instructions: str | None = None, voice: str | None = None,
    ) -> RealtimeCall:
        """Create a Live session: ``POST {base}/live/sessions`` (create-live, 201).

        Args:
            offer: the SDP offer of the peer that carries the AI's audio.
            model: the Live model, e.g. ``"gpt-live-1"``.
            instructions: startup instructions (they cannot be replaced later).
            voice: the output voice (``audio.output.voice``).

        Returns:
            the session id (as ``call_id``) and the SDP answer (CRLF-normalised).

        Raises:
            OpenAIError: an error status. InvalidAnswer: no session id, or no SDP answer.
            BridgeTimeout, BridgeConnectionError: no answer (after the retries).
        """
        session: dict[str, Any] = {"model": model}
        if instructions:
            session["instructions"] = instructions
        if voice:
            session["audio"] = {"output": {"voice": voice}}
        body = {"session": session, "transport": {"type": "webrtc", "sdp": offer.sdp}}
        response = await self._request("POST", "live/sessions", "live/sessions",
                                       json_body=body, accept="application/json",
                                       creates=True)
        try:
            data = response.json()
            session_id = str(data["session"]["id"])
            sdp = data["transport"]["sdp"]
        except (ValueError, KeyError, TypeError):
            raise InvalidAnswer("the answer has no session.id and transport.sdp",
                                service=SERVICE, operation="live/sessions") from None
        try:
            answer = validate_sdp(str(sdp), expected_type="answer", service=SERVICE,
                                  operation="live/sessions")
        except InvalidAnswer:
            try:
                await self.hangup(session_id)
            except Exception as error:  # noqa: BLE001 - best effort
                log.warning("live hangup of an unusable session failed: %s", error)
            raise
        return RealtimeCall(call_id=session_id,
                            answer=SessionDescription(sdp=answer, type="answer"))

    async def hangup(self, call_id: str) -> None:
        """End a session: ``POST {base}/live/sessions/{id}/hangup`` (hangup-live-session).

        Raises:
            OpenAIError: an error status (404 for an unknown or ended session).
            BridgeTimeout, BridgeConnectionError: no answer (after the retries).
        """
        if not call_id:
            raise ValueError("call_id is empty")
        await self._request("POST", f"live/sessions/{quote(call_id, safe='')}/hangup",
                            "live/sessions/hangup", accept="application/json")

    async def attach(self, call_id: str) -> LiveSidebandConnection:  # type: ignore[override]
        """Attach to Live session ``call_id``: ``wss://.../live/sessions/{id}/attach``.

        Raises:
            CallEnded: HTTP 404 (the session ended or never existed).
            BridgeError: another refusal (``retryable`` for 408/429/5xx), a timeout or a
                connection error (``retryable``).
        """
        return await open_link(
            live_attach_url(self.base_url, call_id), self._key, self.timeout, OPERATION,
            lambda ws: LiveSidebandConnection(ws, call_id, [self._key]))
