"""An OpenAI-Realtime-compatible peer on aiortc (the contract
``bridges/contracts/openai_realtime.yaml``).

Paths, under ``base_path`` (``/v1``):

* ``POST /realtime/calls`` (create-realtime-call): ``multipart/form-data`` with parts
  ``sdp`` (the offer) and optional ``session`` (JSON, ``RealtimeSessionCreateRequestGA``),
  or ``application/sdp`` with the offer alone. 201 with the SDP answer
  (``Content-Type: application/sdp``) and ``Location: /v1/realtime/calls/<call_id>``.
* ``POST /realtime/calls/{call_id}/hangup`` (hangup-realtime-call): 200, the peer
  connection is closed; an unknown call -> 404.

* ``GET /realtime?call_id=<call_id>`` (WebSocket): the call's **sideband** (OpenAI's
  "Webhooks and server-side controls"): an unknown or ended call is refused with 404
  ``call_id_not_found``; an attached sideband gets ``session.created``, then every
  event of the session, and may send client events. Ending the call closes it.

plus ``/__emulator/faults`` (:mod:`bridges.local.faults`) and ``GET /healthz``. Every
call needs ``Authorization: Bearer <api key>`` (401 otherwise). Errors are OpenAI's
``{"error": {"message", "type", "code", "param"}}``.

The "model" (events typed by :mod:`rooms.realtime_events`, the wire the room reads):

* on an ``oai-events`` data channel (if the offer has one) and on every sideband it
  sends ``session.created``; it answers ``session.update`` with ``session.updated``
  (recording each update in ``_Call.session_updates``), ``input_audio_buffer.clear``
  with ``input_audio_buffer.cleared``, and any other event with an ``error`` event;
* it *hears*: while ``audio.input.turn_detection`` is not ``null``, each stretch of
  sound on its input (at most ``utterance_s`` long) becomes an utterance:
  ``input_audio_buffer.speech_started``, ``speech_stopped``, ``committed``, then, when
  input transcription is on, ``conversation.item.input_audio_transcription.completed``
  whose transcript is the dominant tone's frequency (``"tone 440 Hz"``, to 10 Hz), and
  the model's answer ``response.output_audio_transcript.done`` (``"you said: tone 440
  Hz"``). With ``turn_detection: null`` it hears nothing: no utterance, no echo;
* it calls tools when told to (:meth:`RealtimeEmulator.call_tool_on`): the next
  utterance of a given tone becomes ``response.function_call_arguments.done`` instead of
  an answer; a ``function_call_output`` item is recorded (``_Call.tool_outputs``) and
  the ``response.create`` after it answered with ``"the tool answered: <output>"``;
* its voice sends back what it hears on the audio track ``echo_delay`` seconds later
  (silence before anything is heard), so a 440 Hz tone in comes back as a 440 Hz tone out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.parser
import email.policy
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from rooms.live_events import LIVE_SERVER_EVENT_TYPES
from rooms.realtime_events import SERVER_EVENT_TYPES

from .faults import MALFORMED_SDP, Faults, fault_routes
from .ice import loopback_peer_connection
from .media import PacedAudioTrack, dominant_frequency, frame_to_mono, rms

__all__ = ["EchoTrack", "Hearing", "OpenAIHTTPError", "RealtimeEmulator"]

_OTHER_EVENTS = frozenset({"input_audio_buffer.speech_stopped", "input_audio_buffer.cleared"})
"""Server events the emulator sends that the room does not model (it ignores them)."""

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "alloy"
DEFAULT_INSTRUCTIONS = "You are a helpful assistant (local emulator: you echo what you hear)."


class OpenAIHTTPError(Exception):
    """An OpenAI API error: HTTP ``status`` with ``{"error": {message, type, code, param}}``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "code": code, "param": param}}
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        """The error as a Starlette JSON response (with ``Retry-After`` if set)."""
        headers = {} if self.retry_after is None else {"Retry-After": f"{self.retry_after:g}"}
        return JSONResponse(self.body, status_code=self.status, headers=headers)


class EchoTrack(PacedAudioTrack):
    """An audio track that plays back what ``source`` delivered ``delay`` seconds earlier.

    Produces 20 ms ``s16`` mono 48 kHz frames at real-time pace; silence when nothing is
    due. At most ``max_buffer`` seconds of audio are held (the oldest is dropped).
    With ``hears``, every frame heard goes to that :class:`Hearing` first, and a frame it
    refuses (the session's input is off) is not echoed.
    Call :meth:`start` to begin consuming ``source``; :meth:`stop` ends both.
    """

    kind = "audio"

    def __init__(self, source: MediaStreamTrack | None, delay: float = 0.2,
                 sample_rate: int = 48000, max_buffer: float = 2.0,
                 hears: "Hearing | None" = None) -> None:
        super().__init__(sample_rate)
        self.source = source
        self.hears = hears
        self.delay = float(delay)
        self.max_buffer = max_buffer
        self._n = self._samples_per_frame
        self._chunks: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._held = 0
        self._task: asyncio.Task | None = None
        self.frames_heard = 0

    def start(self) -> None:
        """Start consuming the source in the running loop (idempotent)."""
        if self._task is None and self.source is not None:
            self._task = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await self.source.recv()
                self.frames_heard += 1  # received, whether heard or not
                mono = frame_to_mono(frame)
                if frame.sample_rate and frame.sample_rate != self.sample_rate:
                    idx = np.linspace(0, len(mono) - 1, int(len(mono) * self.sample_rate / frame.sample_rate))
                    mono = np.interp(idx, np.arange(len(mono)), mono)
                if self.hears is not None and not self.hears.feed(mono, self.sample_rate):
                    continue  # the session's input is off: nothing heard, nothing echoed
                self._chunks.append((time.monotonic() + self.delay, mono))
                self._held += len(mono)
                while self._held > self.max_buffer * self.sample_rate:
                    self._held -= len(self._chunks.popleft()[1])

    async def recv(self) -> AudioFrame:
        """Return the next 20 ms frame of echo (or silence).

        Raises: ``MediaStreamError`` once stopped.
        """
        await self._pace()
        out = np.zeros(self._n)
        filled = 0
        now = time.monotonic()
        while filled < self._n and self._chunks and self._chunks[0][0] <= now:
            due, chunk = self._chunks[0]
            take = min(self._n - filled, len(chunk))
            out[filled:filled + take] = chunk[:take]
            filled += take
            if take == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = (due, chunk[take:])
            self._held -= take
        return self._frame(np.clip(out, -32768, 32767).astype(np.int16))

    def stop(self) -> None:
        """End the track and stop consuming the source."""
        super().stop()
        if self._task is not None:
            self._task.cancel()
            self._task = None


def _as_live(call: "_Call", event: dict[str, Any]) -> dict[str, Any] | None:
    """The Live API server event for a Realtime-style one the model made (``None``:
    Live has no such event)."""
    kind = event["type"]
    if kind == "conversation.item.input_audio_transcription.completed":
        return {"type": "session.input_transcript.delta", "delta": event["transcript"]}
    if kind == "response.output_audio_transcript.done":
        return {"type": "session.output_transcript.delta", "delta": event["transcript"]}
    if kind in ("session.created", "session.updated"):
        return {"type": "session.started", "session": {"id": call.id}}
    if kind == "response.function_call_arguments.done":  # a client delegation: no name
        return {"type": "session.delegation.created", "offset_ms": 0, "delegation": {
            "id": event["call_id"], "type": "delegation", "target": "client"}}
    if kind in LIVE_SERVER_EVENT_TYPES:
        return event
    return None


class Hearing:
    """The emulated model's ears: turns what it hears into utterances.

    Args:
        emit: sends one server event (a dict) to the session's listeners.
        listening: whether the session's input is on (``turn_detection`` not null).
        transcribing: whether input transcription is on.
        utterance_s: the longest utterance, seconds: a continuous tone is cut into
            utterances this long.
        threshold: the RMS level (of s16 samples) above which a frame is sound.
        silence_frames: this many quiet frames in a row end an utterance.
        tool_for: given an utterance's tone (Hz, to 10 Hz), returns ``(tool name,
            arguments)`` when the model is to call a tool instead of answering, or
            ``None``.
    """

    def __init__(self, emit, listening, transcribing, *, utterance_s: float = 1.0,
                 threshold: float = 300.0, silence_frames: int = 10,
                 tool_for=lambda tone: None) -> None:
        self._emit = emit
        self._tool_for = tool_for
        self._listening = listening
        self._transcribing = transcribing
        self.utterance_s = utterance_s
        self.threshold = threshold
        self.silence_frames = silence_frames
        self._item: str | None = None
        self._heard: list[np.ndarray] = []
        self._samples = 0
        self._quiet = 0
        self._started = time.monotonic()
        self.transcripts: list[str] = []
        """Every user transcript the model produced, in order."""

    def feed(self, mono: np.ndarray, rate: int) -> bool:
        """Hear one frame of mono samples at ``rate`` Hz.

        Returns:
            ``False`` when the session's input is off (the frame is not heard).
        """
        if not self._listening():
            self.clear()
            return False
        loud = rms(mono) >= self.threshold
        if self._item is None:
            if not loud:
                return True
            self._item = "item_" + secrets.token_hex(10)
            self._heard, self._samples, self._quiet = [], 0, 0
            self._emit({"type": "input_audio_buffer.speech_started", "item_id": self._item,
                        "audio_start_ms": int((time.monotonic() - self._started) * 1000)})
        if loud:
            self._heard.append(mono)
            self._samples += len(mono)
            self._quiet = 0
        else:
            self._quiet += 1
        if self._samples >= self.utterance_s * rate or self._quiet >= self.silence_frames:
            self._finish(rate)
        return True

    def clear(self) -> None:
        """Forget the utterance under way (``input_audio_buffer.clear``, input off)."""
        self._item = None
        self._heard, self._samples, self._quiet = [], 0, 0

    def _finish(self, rate: int) -> None:
        item, heard = self._item, self._heard
        self.clear()
        if not heard:
            return
        ms = int((time.monotonic() - self._started) * 1000)
        self._emit({"type": "input_audio_buffer.speech_stopped", "item_id": item,
                    "audio_end_ms": ms})
        self._emit({"type": "input_audio_buffer.committed", "item_id": item,
                    "previous_item_id": None})
        if not self._transcribing():
            return
        freq = dominant_frequency(np.concatenate(heard), rate)
        said = f"tone {int(round(freq / 10.0) * 10)} Hz"
        self.transcripts.append(said)
        self._emit({"type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item, "content_index": 0, "transcript": said})
        tool = self._tool_for(int(round(freq / 10.0) * 10))
        if tool is not None:
            name, arguments = tool
            self._emit({"type": "response.function_call_arguments.done",
                        "response_id": "resp_" + secrets.token_hex(10),
                        "item_id": "item_" + secrets.token_hex(10), "output_index": 0,
                        "call_id": "call_" + secrets.token_hex(12), "name": name,
                        "arguments": json.dumps(arguments)})
            return
        self._emit({"type": "response.output_audio_transcript.done",
                    "response_id": "resp_" + secrets.token_hex(10),
                    "item_id": "item_" + secrets.token_hex(10), "output_index": 0,
                    "content_index": 0, "transcript": f"you said: {said}"})


@dataclass(eq=False)
class _Sideband:
    """One attached sideband WebSocket and the events queued for it."""

    ws: WebSocket
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


@dataclass(eq=False)
class _Call:
    id: str
    pc: RTCPeerConnection
    session: dict[str, Any]
    echoes: list[EchoTrack] = field(default_factory=list)
    events_sent: list[dict] = field(default_factory=list)
    events_received: list[dict] = field(default_factory=list)
    hung_up: bool = False
    channel: RTCDataChannel | None = None
    sidebands: list[_Sideband] = field(default_factory=list)
    attaches: int = 0
    """How many sidebands attached to this call, ever."""
    session_updates: list[dict] = field(default_factory=list)
    """Every ``session`` object received in a ``session.update``, in order."""
    clears: int = 0
    """How many ``input_audio_buffer.clear`` events were received."""
    tool_outputs: list[tuple[str, str]] = field(default_factory=list)
    """Every ``function_call_output`` received: ``(call id, output)``, in order."""
    tool_calls: list[str] = field(default_factory=list)
    """The call ids of the function calls the model made, in order."""
    hearing: Hearing | None = None
    kind: str = "realtime"
    """``realtime`` (a Realtime call) or ``live`` (a Live API session)."""
    muted: bool = False
    """Live: the input is muted (``session.input_audio.mute``)."""
    mutes: list[bool] = field(default_factory=list)
    """Live: every mute (``True``) and unmute (``False``) received, in order."""
    instructions_appended: list[str] = field(default_factory=list)
    """Live: every ``session.instructions.append`` content received, in order."""

    @property
    def listening(self) -> bool:
        """Whether the model hears its input: Realtime, ``audio.input.turn_detection``
        is not null; Live, the input is not muted."""
        if self.kind == "live":
            return not self.muted
        audio_in = (self.session.get("audio") or {}).get("input") or {}
        return audio_in.get("turn_detection", {"type": "server_vad"}) is not None

    @property
    def transcribing(self) -> bool:
        """Whether input transcription is on (Realtime: ``audio.input.transcription``
        set; Live: always)."""
        if self.kind == "live":
            return True
        audio_in = (self.session.get("audio") or {}).get("input") or {}
        return bool(audio_in.get("transcription"))


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Merge a ``session.update``'s session into the session (objects merged key by key,
    anything else, ``null`` included, replaced)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class RealtimeEmulator:
    """State and ASGI app of the OpenAI-Realtime-compatible peer.

    Args:
        api_key: the bearer API key required on every request (never logged).
        base_path: the API path prefix (``/v1``, as in ``https://api.openai.com/v1``).
        echo_delay: seconds between hearing audio and saying it back.
        unconnected_timeout_s: seconds after which a call whose peer connection never
            connected is ended, as the real service ends a call nobody joins (so a
            call whose answer the caller never received does not stay open for ever).
        utterance_s: the longest utterance the model hears, seconds (see
            :class:`Hearing`).

    Serve :attr:`app` with :class:`bridges.local.server.LocalService`; call :meth:`close`
    in the service loop on shutdown. :meth:`active_calls` is safe from any thread.
    """

    def __init__(self, api_key: str = "sk-local", base_path: str = "/v1",
                 echo_delay: float = 0.2, unconnected_timeout_s: float = 30.0,
                 utterance_s: float = 1.0) -> None:
        self._api_key = api_key
        self.utterance_s = utterance_s
        self.base_path = base_path.rstrip("/")
        self.echo_delay = echo_delay
        self.unconnected_timeout_s = unconnected_timeout_s
        self.faults = Faults()
        self.request_counts: collections.Counter[str] = collections.Counter()
        self.hangups: collections.Counter[str] = collections.Counter()
        """Hangup requests by call (or Live session) id, answered or refused."""
        self.calls: dict[str, _Call] = {}
        self._triggers: list[tuple[int, str, dict[str, Any]]] = []
        self._app: Starlette | None = None

    def __repr__(self) -> str:
        return f"<RealtimeEmulator calls={len(self.calls)}>"

    def active_calls(self) -> list[str]:
        """Ids of calls not hung up whose peer connection is not closed."""
        return [c.id for c in list(self.calls.values())
                if not c.hung_up and c.pc.connectionState != "closed"]

    @property
    def app(self) -> Starlette:
        """The ASGI app (built once)."""
        if self._app is None:
            p = self.base_path + "/realtime/calls"
            self._app = Starlette(routes=[
                Route(p, self._endpoint("realtime/calls", self._create_call), methods=["POST"]),
                Route(p + "/{call_id}/hangup", self._endpoint("hangup", self._hangup), methods=["POST"]),
                WebSocketRoute(self.base_path + "/realtime", self._sideband),
                Route(self.base_path + "/live/sessions",
                      self._endpoint("live/sessions", self._create_live), methods=["POST"]),
                Route(self.base_path + "/live/sessions/{call_id}/hangup",
                      self._endpoint("live/hangup", self._hangup), methods=["POST"]),
                WebSocketRoute(self.base_path + "/live/sessions/{session_id}/attach",
                               self._live_sideband),
                Route("/healthz", self._healthz, methods=["GET"]),
                *fault_routes(self.faults),
            ])
        return self._app

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "calls": len(self.active_calls())})

    def _endpoint(self, operation: str, handler):
        async def endpoint(request: Request) -> Response:
            self.request_counts[operation] += 1
            try:
                self._authorize(request)
                fault = await self.faults.before(operation, request)
                malformed = False
                if fault is not None:
                    if fault.status is not None:
                        type_ = "server_error" if fault.status >= 500 else "invalid_request_error"
                        raise OpenAIHTTPError(fault.status, fault.error_message or "fault injected by the emulator",
                                              type_, fault.error_code,
                                              retry_after=fault.retry_after)
                    malformed = fault.malformed_answer
                return await handler(request, malformed)
            except OpenAIHTTPError as exc:
                return exc.response()
            except ClientDisconnect:  # the caller gave up (e.g. timed out during a delay)
                return Response(status_code=499)

        return endpoint

    def _authorize(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), self._api_key):
            raise OpenAIHTTPError(401, "Incorrect API key provided.", "invalid_request_error",
                                  "invalid_api_key")

    @staticmethod
    def _parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
        if not message.is_multipart():
            raise OpenAIHTTPError(400, "Malformed multipart body.")
        parts: dict[str, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                parts[str(name)] = part.get_payload(decode=True) or b""
        return parts

    async def _read_offer(self, request: Request) -> tuple[str, dict[str, Any]]:
        content_type = request.headers.get("content-type", "")
        body = await request.body()
        session: dict[str, Any] = {}
        if content_type.startswith("multipart/form-data"):
            parts = self._parse_multipart(content_type, body)
            if "sdp" not in parts:
                raise OpenAIHTTPError(400, "Missing required parameter: 'sdp'.", param="sdp")
            sdp = parts["sdp"].decode("utf-8", "replace")
            if "session" in parts:
                try:
                    session = json.loads(parts["session"])
                except ValueError:
                    raise OpenAIHTTPError(400, "Invalid JSON in 'session'.", param="session") from None
                if not isinstance(session, dict):
                    raise OpenAIHTTPError(400, "'session' must be an object.", param="session")
        elif content_type.startswith("application/sdp"):
            sdp = body.decode("utf-8", "replace")
        else:
            raise OpenAIHTTPError(400, "Unsupported content type; send multipart/form-data or application/sdp.")
        if not sdp.lstrip().startswith("v="):
            raise OpenAIHTTPError(400, "Invalid SDP offer.", param="sdp", code="invalid_offer")
        return sdp, session

    def _session_object(self, config: dict[str, Any]) -> dict[str, Any]:
        voice = ((config.get("audio") or {}).get("output") or {}).get("voice") or config.get("voice")
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": "sess_" + secrets.token_hex(12),
            "model": config.get("model") or DEFAULT_MODEL,
            "output_modalities": config.get("output_modalities") or ["audio"],
            "instructions": config.get("instructions") or DEFAULT_INSTRUCTIONS,
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "prompt": None,
            "expires_at": 0,
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}, "transcription": None,
                          "noise_reduction": None, "turn_detection": {"type": "server_vad"}},
                "output": {"format": {"type": "audio/pcm", "rate": 24000},
                           "voice": voice or DEFAULT_VOICE, "speed": 1.0},
            },
            "include": None,
        }

    def _emit(self, call: _Call, event: dict[str, Any]) -> None:
        """Send a server event to every listener of ``call``: its ``oai-events`` data
        channel (if open) and its sidebands (run in the service loop)."""
        if event["type"] == "response.function_call_arguments.done":
            call.tool_calls.append(event["call_id"])
        if call.kind == "live":
            event = _as_live(call, event)
            if event is None:
                return
        event = {"event_id": "event_" + secrets.token_hex(10), **event}
        assert event["type"] in SERVER_EVENT_TYPES or event["type"] in _OTHER_EVENTS \
            or event["type"] in LIVE_SERVER_EVENT_TYPES, event
        call.events_sent.append(event)
        text = json.dumps(event)
        if call.channel is not None and call.channel.readyState == "open":
            call.channel.send(text)
        for sideband in call.sidebands:
            sideband.queue.put_nowait(text)

    def _handle_event(self, call: _Call, message: str | bytes) -> None:
        """Apply one client event from the data channel or a sideband."""
        try:
            event = json.loads(message)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self._emit(call, {"type": "error", "error": {
                "type": "invalid_request_error", "code": "invalid_json",
                "message": "The event is not a JSON object.", "param": None, "event_id": None}})
            return
        call.events_received.append(event)
        kind = event.get("type")
        if call.kind == "live":
            self._handle_live_event(call, event)
        elif kind == "session.update" and isinstance(event.get("session"), dict):
            update = {k: v for k, v in event["session"].items() if k != "type"}
            call.session_updates.append(event["session"])
            _merge(call.session, update)
            self._emit(call, {"type": "session.updated", "session": call.session})
        elif kind == "conversation.item.create" and isinstance(event.get("item"), dict) \
                and event["item"].get("type") == "function_call_output":
            item = event["item"]
            call.tool_outputs.append((str(item.get("call_id")), str(item.get("output"))))
        elif kind == "response.create":
            answer = call.tool_outputs[-1][1] if call.tool_outputs else ""
            self._emit(call, {"type": "response.output_audio_transcript.done",
                              "response_id": "resp_" + secrets.token_hex(10),
                              "item_id": "item_" + secrets.token_hex(10), "output_index": 0,
                              "content_index": 0,
                              "transcript": f"the tool answered: {answer[:200]}"})
        elif kind == "input_audio_buffer.clear":
            call.clears += 1
            if call.hearing is not None:
                call.hearing.clear()
            self._emit(call, {"type": "input_audio_buffer.cleared"})
        else:
            self._emit(call, {"type": "error", "error": {
                "type": "invalid_request_error", "code": "unsupported_event",
                "message": f"The emulator does not handle {str(kind)[:60]!r}.",
                "param": None, "event_id": event.get("event_id")}})

    def _handle_live_event(self, call: _Call, event: dict[str, Any]) -> None:
        """Apply one Live client event (mute, unmute, instructions, commentary)."""
        kind, ack = event.get("type"), {"client_event_id": event.get("event_id")}
        if kind in ("session.input_audio.mute", "session.input_audio.unmute"):
            call.muted = kind.endswith(".mute")
            call.mutes.append(call.muted)
            if call.muted and call.hearing is not None:
                call.hearing.clear()
            self._emit(call, {"type": "session.input_audio.muted" if call.muted
                              else "session.input_audio.unmuted", **ack})
        elif kind == "session.instructions.append" and isinstance(event.get("content"), str):
            call.instructions_appended.append(event["content"])
            self._emit(call, {"type": "session.instructions.appended", **ack})
        elif kind == "session.commentary.append" and isinstance(event.get("content"), str):
            call.tool_outputs.append((str(event.get("delegation_id")), event["content"]))
            self._emit(call, {"type": "session.commentary.appended", **ack})
        else:
            self._emit(call, {"type": "error", "error": {
                "type": "invalid_request_error", "code": "unsupported_event",
                "message": f"The emulator does not handle {str(kind)[:60]!r} on Live.",
                "param": None, "event_id": event.get("event_id")}})

    def _attach_channel(self, call: _Call, channel: RTCDataChannel) -> None:
        if channel.label != "oai-events":
            return
        call.channel = channel

        def greet() -> None:
            self._emit(call, {"type": "session.created", "session": call.session})

        channel.on("message", lambda message: self._handle_event(call, message))
        if channel.readyState == "open":
            greet()
        else:
            channel.on("open", greet)

    async def _sideband(self, websocket: WebSocket) -> None:
        """``GET {base}/realtime?call_id=...`` upgraded to a WebSocket: the call's sideband."""
        self.request_counts["sideband"] += 1
        if await self._denied(websocket):
            return
        call = self.calls.get(websocket.query_params.get("call_id", ""))
        if call is not None and call.kind != "realtime":
            call = None
        await self._serve_sideband(websocket, call)

    async def _live_sideband(self, websocket: WebSocket) -> None:
        """``GET {base}/live/sessions/{id}/attach`` upgraded to a WebSocket: the Live
        session's sideband."""
        self.request_counts["live sideband"] += 1
        if await self._denied(websocket):
            return
        call = self.calls.get(websocket.path_params.get("session_id", ""))
        if call is not None and call.kind != "live":
            call = None
        await self._serve_sideband(websocket, call)

    async def _denied(self, websocket: WebSocket) -> bool:
        """Refuse a sideband handshake without the API key (401); ``True`` if refused."""
        scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(token.strip(), self._api_key):
            return False
        await websocket.send_denial_response(OpenAIHTTPError(
            401, "Incorrect API key provided.", "invalid_request_error",
            "invalid_api_key").response())
        return True

    async def _serve_sideband(self, websocket: WebSocket, call: _Call | None) -> None:
        if call is None or call.hung_up:
            await websocket.send_denial_response(OpenAIHTTPError(
                404, "No session found for the provided call_id", "invalid_request_error",
                "call_id_not_found", param="").response())
            return
        await websocket.accept()
        sideband = _Sideband(websocket)
        call.sidebands.append(sideband)
        call.attaches += 1

        async def write() -> None:
            while True:
                text = await sideband.queue.get()
                if text is None:
                    await websocket.close(1000, "call ended")
                    return
                await websocket.send_text(text)

        writer = asyncio.ensure_future(write())
        self._emit_to(call, sideband, {"type": "session.created", "session": call.session}
                      if call.kind == "realtime" else
                      {"type": "session.started", "session": {"id": call.id}})
        try:
            while not writer.done():
                receive = asyncio.ensure_future(websocket.receive_text())
                await asyncio.wait({receive, writer}, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    receive.cancel()
                    break
                self._handle_event(call, receive.result())
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            writer.cancel()
            if sideband in call.sidebands:
                call.sidebands.remove(sideband)

    def _emit_to(self, call: _Call, sideband: _Sideband, event: dict[str, Any]) -> None:
        """Send a server event of ``call`` to one of its sidebands only."""
        event = {"event_id": "event_" + secrets.token_hex(10), **event}
        call.events_sent.append(event)
        sideband.queue.put_nowait(json.dumps(event))

    async def _create_call(self, request: Request, malformed: bool) -> Response:
        sdp, config = await self._read_offer(request)
        call = await self._answer("rtc_" + secrets.token_hex(16), sdp,
                                  self._session_object(config), "realtime")
        answer = MALFORMED_SDP if malformed else call.pc.localDescription.sdp
        return Response(answer, status_code=201, media_type="application/sdp",
                        headers={"Location": f"{self.base_path}/realtime/calls/{call.id}"})

    async def _create_live(self, request: Request, malformed: bool) -> Response:
        """create-live: JSON ``{session: {model, ...}, transport: {type: "webrtc", sdp}}``
        -> 201 ``{session: {id}, transport: {type: "webrtc", sdp}}``."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise OpenAIHTTPError(400, "The body is not JSON.") from None
        session = body.get("session") if isinstance(body, dict) else None
        transport = body.get("transport") if isinstance(body, dict) else None
        if not isinstance(session, dict) or not session.get("model"):
            raise OpenAIHTTPError(400, "Missing required parameter: 'session.model'.",
                                  param="session.model")
        if not isinstance(transport, dict) or transport.get("type") != "webrtc" \
                or not str(transport.get("sdp", "")).lstrip().startswith("v="):
            raise OpenAIHTTPError(400, "transport must be {type: webrtc, sdp: <offer>}.",
                                  param="transport", code="invalid_offer")
        live = self._session_object(session)
        live["type"] = "live"
        call = await self._answer("live_" + secrets.token_hex(16), transport["sdp"], live,
                                  "live")
        answer = MALFORMED_SDP if malformed else call.pc.localDescription.sdp
        return JSONResponse({"session": {"id": call.id},
                             "transport": {"type": "webrtc", "sdp": answer}}, status_code=201)

    async def _answer(self, call_id: str, sdp: str, session: dict[str, Any],
                      kind: str) -> _Call:
        """Answer ``sdp`` with a peer that echoes and hears its audio: a new call."""
        pc = loopback_peer_connection()
        call = _Call(id=call_id, pc=pc, session=session, kind=kind)
        pc.on("datachannel", lambda channel: self._attach_channel(call, channel))
        call.hearing = Hearing(lambda event: self._emit(call, event),
                               lambda: call.listening, lambda: call.transcribing,
                               utterance_s=self.utterance_s,
                               tool_for=lambda tone: self._tool_for(call, tone))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "audio" and transceiver.receiver.track is not None:
                    echo = EchoTrack(transceiver.receiver.track, delay=self.echo_delay,
                                     hears=call.hearing if not call.echoes else None)
                    transceiver.sender.replaceTrack(echo)
                    transceiver.direction = "sendrecv"
                    echo.start()
                    call.echoes.append(echo)
            await pc.setLocalDescription(await pc.createAnswer())
        except OpenAIHTTPError:
            await pc.close()
            raise
        except Exception as exc:  # noqa: BLE001 - aiortc raises various types for bad SDP
            await pc.close()
            raise OpenAIHTTPError(400, f"Invalid SDP offer: {exc}", param="sdp", code="invalid_offer") from None
        self.calls[call.id] = call
        asyncio.ensure_future(self._expire_unconnected(call))
        return call

    async def _expire_unconnected(self, call: _Call) -> None:
        await asyncio.sleep(self.unconnected_timeout_s)
        if not call.hung_up and call.pc.connectionState != "connected":
            await self._end(call)

    async def _hangup(self, request: Request, malformed: bool) -> Response:
        self.hangups[request.path_params["call_id"]] += 1
        call = self.calls.get(request.path_params["call_id"])
        if call is None or call.hung_up:
            raise OpenAIHTTPError(404, "Call not found.", "invalid_request_error", "call_not_found")
        await self._end(call)
        return Response(status_code=200)

    async def _end(self, call: _Call) -> None:
        if call.kind == "live" and not call.hung_up:
            self._emit(call, {"type": "session.closed", "reason": "close_requested"})
        call.hung_up = True
        for echo in call.echoes:
            echo.stop()
        for sideband in call.sidebands:
            sideband.queue.put_nowait(None)  # closes it (1000) after what is queued
        await call.pc.close()

    def call_tool_on(self, tone_hz: int, name: str, arguments: dict[str, Any]) -> None:
        """Arm a one-shot trigger: the next utterance of ``tone_hz`` (to 10 Hz) heard by
        a call whose session declares tool ``name`` makes the model call it with
        ``arguments`` (``response.function_call_arguments.done``) instead of answering;
        heard by a Live session, it makes a client delegation
        (``session.delegation.created``, no name or arguments). Safe from any thread
        (tests)."""
        self._triggers.append((int(tone_hz), name, dict(arguments)))

    def _tool_for(self, call: _Call, tone: int) -> tuple[str, dict[str, Any]] | None:
        declared = {t.get("name") for t in call.session.get("tools") or []
                    if isinstance(t, dict)}
        for trigger in list(self._triggers):
            # a Live session declares no tools: any trigger becomes a client delegation
            if trigger[0] == tone and (trigger[1] in declared or call.kind == "live"):
                self._triggers.remove(trigger)
                return trigger[1], trigger[2]
        return None

    async def drop_sidebands(self, call_id: str, code: int = 1011) -> int:
        """Close every sideband of ``call_id`` with ``code`` while the call goes on, as
        a network failure or a service restart would (run in the service loop; tests).

        Returns:
            how many sidebands were closed.
        """
        call = self.calls.get(call_id)
        dropped = 0
        for sideband in list(call.sidebands if call is not None else []):
            with contextlib.suppress(Exception):
                await sideband.ws.close(code, "dropped by the emulator")
            dropped += 1
        return dropped

    async def close(self) -> None:
        """Hang up every call (run in the service loop)."""
        for call in list(self.calls.values()):
            if not call.hung_up:
                await self._end(call)
