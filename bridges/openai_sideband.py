"""The OpenAI Realtime sideband client: a server-side WebSocket to a live WebRTC call.

Implements :class:`rooms.ports.AiSideband` with the ``websockets`` library, as specified
by OpenAI's "Webhooks and server-side controls" guide and the contract
``bridges/contracts/openai_realtime.yaml`` (section ``sideband``):

* ``GET wss://api.openai.com/v1/realtime?call_id=<call id>`` with
  ``Authorization: Bearer <api key>`` (the base URL's ``http(s)`` becomes ``ws(s)``);
* an unknown or ended call is refused with HTTP 404
  (``{"error": {"code": "call_id_not_found"}}``): :class:`rooms.ports.CallEnded`;
* then JSON text frames both ways: the Realtime client and server events
  (:mod:`rooms.realtime_events`).

Usage::

    sideband = RealtimeSideband(api_key, base_url="https://api.openai.com/v1")
    link = await sideband.attach("rtc_123")
    await link.send(SessionUpdate(session={...}))
    event = await link.receive()
    await link.close()
"""

from __future__ import annotations

import json
import logging
from typing import Callable, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from rooms.ports import BridgeError, CallEnded
from rooms.realtime_events import (
    AudioCommitted,
    ConversationItemCreate,
    ErrorEvent,
    FunctionCallArgumentsDone,
    InputAudioBufferClear,
    InputTranscriptionCompleted,
    OutputTranscriptDone,
    ResponseCreate,
    SessionUpdate,
    SpeechStarted,
    input_config,
    parse_server_event,
)
from rooms.sideband_wire import (
    AiSaid,
    Note,
    Refused,
    SessionControl,
    SpeechBegan,
    ToolCalled,
    UserSaid,
)

from .errors import is_retryable_status, scrub
from .http import tls_context

__all__ = ["RealtimeSideband", "SidebandConnection", "WebSocketLink", "control_events",
           "open_link", "sideband_url", "ws_url"]

LinkT = TypeVar("LinkT")

SERVICE = "openai"
OPERATION = "realtime sideband"
MAX_EVENT_BYTES = 4 * 1024 * 1024
"""The largest server event accepted, bytes (a session object with tools fits easily)."""

log = logging.getLogger("ray_rooms.bridges.openai")


def ws_url(base_url: str, path: str, query: str = "") -> str:
    """The WebSocket URL of ``path`` under the API root ``base_url`` (``https`` ->
    ``wss``, ``http`` -> ``ws``), with ``query``.

    Raises:
        ValueError: ``base_url`` is not http(s) or ws(s).
    """
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"not an http(s) URL: {scrub(base_url)!r}")
    return urlunsplit((scheme, parts.netloc, f"{parts.path}/{path}", query, ""))


def sideband_url(base_url: str, call_id: str) -> str:
    """The sideband URL of call ``call_id`` under the API root ``base_url``.

    Args:
        base_url: ``https://api.openai.com/v1`` or an emulator's ``http://127.0.0.1:P/v1``.
        call_id: the call id (``rtc_...``), percent-encoded into the query.

    Returns:
        e.g. ``wss://api.openai.com/v1/realtime?call_id=rtc_123``.

    Raises:
        ValueError: ``base_url`` is not http(s) or ws(s), or ``call_id`` is empty.
    """
    if not call_id:
        raise ValueError("call_id is empty")
    return ws_url(base_url, "realtime", f"call_id={quote(call_id, safe='')}")


def control_events(control: SessionControl) -> list[SessionUpdate | InputAudioBufferClear]:
    """The Realtime client events that make the session what ``control`` says: a
    ``session.update`` (the full instructions, input transcription on,
    ``turn_detection`` ``server_vad`` or ``null``, the tools with ``tool_choice:
    auto``), then an ``input_audio_buffer.clear``. ``turn_detection: null`` is the
    Realtime equivalent of muting the session's input (nothing heard is committed); the
    clear drops what was heard and not committed, so audio from before a change of
    speaker is never attributed to the new one (nor, after a release, to anyone)."""
    session = {"type": "realtime", "instructions": control.full_instructions,
               "audio": {"input": input_config(listening=control.listening)}}
    if control.tools:
        session["tools"] = list(control.tools)
        session["tool_choice"] = "auto"
    update = SessionUpdate(session=session)
    return [update, InputAudioBufferClear()]


def _note(event) -> Note | None:
    """The room's note for a Realtime server event (``None``: not one the room uses)."""
    if isinstance(event, (SpeechStarted, AudioCommitted)):
        return SpeechBegan(event.item_id)
    if isinstance(event, InputTranscriptionCompleted):
        return UserSaid(event.item_id, event.transcript)
    if isinstance(event, OutputTranscriptDone):
        return AiSaid(event.item_id, event.transcript)
    if isinstance(event, FunctionCallArgumentsDone):
        return ToolCalled(event.call_id, event.name, event.arguments)
    if isinstance(event, ErrorEvent):
        return Refused(str(event.error.get("message") or event.error.get("code") or ""))
    return None


class WebSocketLink:
    """What the sideband links of both voice backends share: the open WebSocket, sending
    an event, the error of a closed connection, closing.

    Args:
        ws: the open WebSocket.
        call_id: the call (or Live session) id.
        secrets: texts never to show in an error (the API key).
    """

    operation = OPERATION

    def __init__(self, ws: ClientConnection, call_id: str, secrets: list[str]) -> None:
        self._ws = ws
        self.call_id = call_id
        self._secrets = secrets

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.call_id}>"

    def _closed(self, exc: ConnectionClosed) -> BridgeError:
        code = exc.rcvd.code if exc.rcvd is not None else None
        reason = scrub(exc.rcvd.reason if exc.rcvd is not None else "", self._secrets)
        return BridgeError(f"the sideband closed (code {code}{': ' + reason if reason else ''})",
                           service=SERVICE, operation=self.operation, retryable=True)

    async def _send(self, event) -> None:
        try:
            await self._ws.send(json.dumps(event.wire()))
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    async def close(self) -> None:
        """Close the WebSocket (code 1000); never raises."""
        try:
            await self._ws.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


async def open_link(url: str, api_key: str, timeout: float, operation: str,
                    make: Callable[[ClientConnection], LinkT]) -> LinkT:
    """Open the sideband WebSocket ``url`` with the bearer ``api_key`` and wrap it.

    Args:
        url: the ``wss://`` (or ``ws://``) sideband URL.
        api_key: the API key (never in an error).
        timeout: seconds allowed to open the WebSocket.
        operation: the operation's name in errors.
        make: builds the link from the open WebSocket.

    Raises:
        CallEnded: HTTP 404 (the call or session ended or never existed).
        BridgeError: another refusal (``retryable`` for 408/429/5xx), a timeout or a
            connection error (``retryable``).
    """
    failure: BridgeError | None = None
    try:
        tls = tls_context() if url.startswith("wss:") else None
        ws = await connect(url, additional_headers={"Authorization": f"Bearer {api_key}"},
                           open_timeout=timeout, max_size=MAX_EVENT_BYTES, compression=None,
                           ssl=tls)
        return make(ws)
    except InvalidStatus as exc:
        status = exc.response.status_code
        body = scrub(_error_message(exc.response.body), [api_key])
        cls = CallEnded if status == 404 else BridgeError
        failure = cls(body or f"the sideband was refused (HTTP {status})", service=SERVICE,
                      operation=operation, status=status, retryable=is_retryable_status(status))
    except (OSError, TimeoutError, WebSocketException) as exc:
        failure = BridgeError(scrub(f"{type(exc).__name__}: {exc}", [api_key]),
                              service=SERVICE, operation=operation, retryable=True)
    raise failure  # outside the except: no reference to the handshake kept


class SidebandConnection(WebSocketLink):
    """One open Realtime sideband: a :class:`rooms.ports.SidebandLink` over a WebSocket."""

    async def send_control(self, control: SessionControl,
                           previous: SessionControl | None) -> None:
        """Send :func:`control_events` of ``control`` (the whole session state each
        time: a ``session.update`` replaces what it names).

        Raises:
            BridgeError: the connection is closed (``retryable``).
        """
        for event in control_events(control):
            await self._send(event)

    async def send_tool_output(self, call_id: str, output: str) -> None:
        """``conversation.item.create`` of a ``function_call_output`` for ``call_id``,
        then ``response.create``.

        Raises:
            BridgeError: the connection is closed (``retryable``).
        """
        await self._send(ConversationItemCreate.tool_output(call_id, output))
        await self._send(ResponseCreate())

    async def receive(self) -> Note | None:
        """Wait for the next server event and return the room's note for it.

        Returns:
            A :data:`rooms.sideband_wire.Note`, or ``None`` for an event type the room
            does not use, a binary frame, or a frame that is not a well-formed event
            (logged).

        Raises:
            BridgeError: the connection closed (``retryable``: attaching again decides
                whether the call still exists).
        """
        try:
            frame = await self._ws.recv()
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        if not isinstance(frame, str):
            return None
        try:
            return _note(parse_server_event(json.loads(frame)))
        except ValueError as error:
            log.warning("sideband to call %s: %s", self.call_id, str(error)[:300])
            return None

class RealtimeSideband:
    """Opens sidebands to OpenAI Realtime calls: a :class:`rooms.ports.AiSideband`.

    Args:
        api_key: the OpenAI API key (the one that created the calls), sent as
            ``Authorization: Bearer``; never in a repr, log line or error.
        base_url: the API root (``https://api.openai.com/v1`` or an emulator's).
        timeout: seconds allowed to open the WebSocket.
    """

    def __init__(self, api_key: str, *, base_url: str, timeout: float = 10.0) -> None:
        self._key = api_key
        self.base_url = base_url
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RealtimeSideband(base_url={self.base_url!r})"

    async def attach(self, call_id: str) -> SidebandConnection:
        """Attach to call ``call_id``'s live session.

        Returns:
            the open connection.

        Raises:
            CallEnded: HTTP 404 (the call ended or never existed).
            BridgeError: another refusal (``retryable`` for 408/429/5xx), a timeout or a
                connection error (``retryable``).
        """
        return await open_link(
            sideband_url(self.base_url, call_id), self._key, self.timeout, OPERATION,
            lambda ws: SidebandConnection(ws, call_id, [self._key]))


def _error_message(body: bytes | None) -> str:
    """The ``error.message`` of an OpenAI error body, else its first 200 characters."""
    if not body:
        return ""
    try:
        error = json.loads(body).get("error") or {}
        return str(error.get("message") or error.get("code") or "")[:300]
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")

