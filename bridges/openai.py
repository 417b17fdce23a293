"""The OpenAI Realtime client: create and hang up WebRTC calls with the voice model.

Implements :class:`rooms.ports.AiService` against the GA endpoints of the
contract ``bridges/contracts/openai_realtime.yaml`` (from OpenAI's published OpenAPI document):

* ``POST {base}/realtime/calls`` (create-realtime-call): ``multipart/form-data`` with a
  ``sdp`` part (``application/sdp``, the offer) and a ``session`` part
  (``application/json``, a ``RealtimeSessionCreateRequestGA``); answers 201 with the SDP
  answer as body and the call id in the ``Location`` header;
* ``POST {base}/realtime/calls/{call_id}/hangup`` (hangup-realtime-call): 200;
* the call's sideband, ``wss://.../realtime?call_id=<call id>``
  (:meth:`RealtimeClient.attach`, :mod:`bridges.openai_sideband`): an
  :class:`rooms.ports.AiSideband` too.

The retired beta endpoint ``POST /v1/realtime?model=...`` is not used.

Usage::

    async with RealtimeClient(api_key) as openai:
        call = await openai.create_call(offer, model="gpt-realtime", voice="marin")
        ...
        await openai.hangup(call.call_id)
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from rooms.ports import InvalidAnswer, RealtimeCall, SessionDescription

from .endpoints import OPENAI_BASE_URL
from .http import HttpBridge
from .openai_sideband import RealtimeSideband, SidebandConnection
from .errors import (
    OpenAIError,
    is_retryable_status,
    parse_retry_after,
    retrying,
    scrub,
    transport_error,
)
from .sdp import validate_sdp

__all__ = ["OPENAI_BASE_URL", "RealtimeClient", "call_id_from_location", "session_config"]
SERVICE = "openai"

_CALL_PATH = re.compile(r"/realtime/calls/([^/?#]+)/?$")

log = logging.getLogger("ray_rooms.bridges.openai")


def session_config(model: str, *, instructions: str | None = None,
                   voice: str | None = None) -> dict[str, Any]:
    """Return the ``session`` part of create-realtime-call (``RealtimeSessionCreateRequestGA``).

    Args:
        model: the Realtime model, e.g. ``"gpt-realtime"``.
        instructions: the system instructions, if any.
        voice: a built-in voice name (``alloy``, ``marin``, ...); it goes to
            ``audio.output.voice`` (the GA schema has no top-level ``voice``).

    Returns:
        ``{"type": "realtime", "model": ..., "instructions"?: ...,
        "audio"?: {"output": {"voice": ...}}}``.
    """
    session: dict[str, Any] = {"type": "realtime", "model": model}
    if instructions:
        session["instructions"] = instructions
    if voice:
        session["audio"] = {"output": {"voice": voice}}
    return session


def call_id_from_location(location: str | None) -> str:
    """Return the call id from a create-realtime-call ``Location`` header.

    Args:
        location: a relative (``/v1/realtime/calls/rtc_123``) or absolute URL.

    Returns:
        the last path segment after ``/realtime/calls/`` (``rtc_123``).

    Raises:
        InvalidAnswer: no header, or a URL that does not end in ``/realtime/calls/<id>``.
    """
    if not location:
        raise InvalidAnswer("the answer has no Location header (no call id)",
                            service=SERVICE, operation="realtime/calls")
    match = _CALL_PATH.search(urlsplit(location.strip()).path)
    if match is None:
        raise InvalidAnswer(
            f"the Location header {scrub(location)!r} does not end in /realtime/calls/<id>",
            service=SERVICE, operation="realtime/calls",
        )
    return match.group(1)


class RealtimeClient(HttpBridge):
    """An OpenAI Realtime API client for WebRTC calls: an :class:`AiService`.

    Args:
        api_key: the OpenAI API key, sent as ``Authorization: Bearer``; never shown in a
            repr, log line or error.
        base_url: the API root, ``https://api.openai.com/v1`` or an emulator's
            ``http://127.0.0.1:<port>/v1``.
        timeout: seconds allowed for each HTTP attempt.
        retries: how many times a retryable failure (408/429/5xx, timeouts, connection
            errors) is repeated, so at most ``retries + 1`` attempts.
        backoff: the first wait between attempts in seconds; each further wait doubles.
        max_backoff: the longest wait between attempts in seconds.
        client: an ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`); by
            default the bridge makes and owns one.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = OPENAI_BASE_URL,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._key = api_key
        super().__init__(base_url=base_url, timeout=timeout, retries=retries,
                         backoff=backoff, max_backoff=max_backoff, client=client)

    create_operation = "realtime/calls"
    """The name of the create operation in errors and the enable flow's steps."""

    def __repr__(self) -> str:
        return f"RealtimeClient(base_url={self.base_url!r})"

    async def create_call(
        self, offer: SessionDescription, *, model: str,
        instructions: str | None = None, voice: str | None = None,
    ) -> RealtimeCall:
        """Create a call: ``POST {base}/realtime/calls`` (create-realtime-call, 201).

        Args:
            offer: the SDP offer of the peer that will carry the AI's audio (here, the
                Calls session's offer for the ``ai-generated-voice`` track).
            model: the Realtime model, e.g. ``"gpt-realtime"``.
            instructions: system instructions for the session, if any.
            voice: the output voice, if any (sent as ``audio.output.voice``).

        Returns:
            the call id (from ``Location``) and the SDP answer (CRLF-normalised).

        Raises:
            OpenAIError: an error status (``code``/``description`` from OpenAI's error
                object; 401/403/4xx are not retried).
            InvalidAnswer: the body is not SDP, or ``Location`` is missing or malformed.
            BridgeTimeout, BridgeConnectionError: no answer (after the retries).
        """
        files = {
            "sdp": (None, offer.sdp, "application/sdp"),
            "session": (None, json.dumps(session_config(
                model, instructions=instructions, voice=voice)), "application/json"),
        }
        response = await self._request("POST", "realtime/calls", "realtime/calls",
                                       files=files, accept="application/sdp", creates=True)
        call_id = call_id_from_location(response.headers.get("location"))
        try:
            answer = validate_sdp(response.text, expected_type="answer", service=SERVICE,
                                  operation="realtime/calls")
        except InvalidAnswer:
            try:  # the call exists but is unusable, and the caller never learns its id
                await self.hangup(call_id)
            except Exception as error:  # noqa: BLE001 - best effort
                log.warning("openai hangup of an unusable call failed: %s", error)
            raise
        return RealtimeCall(call_id=call_id, answer=SessionDescription(sdp=answer,
                                                                        type="answer"))

    async def attach(self, call_id: str) -> "SidebandConnection":
        """Open the sideband of call ``call_id``: ``wss://.../realtime?call_id=``
        (:class:`bridges.openai_sideband.RealtimeSideband`, same key and base URL).

        Raises:
            CallEnded: the call is unknown or ended (404).
            BridgeError: any other failure (``retryable`` when trying again may help).
        """
        return await RealtimeSideband(self._key, base_url=self.base_url,
                                      timeout=self.timeout).attach(call_id)

    async def hangup(self, call_id: str) -> None:
        """End a call: ``POST {base}/realtime/calls/{call_id}/hangup`` (hangup-realtime-call).

        Args:
            call_id: the id returned by :meth:`create_call`.

        Raises:
            OpenAIError: an error status (e.g. 404 for an unknown or ended call).
            BridgeTimeout, BridgeConnectionError: no answer (after the retries).
        """
        if not call_id:
            raise ValueError("call_id is empty")
        await self._request("POST", f"realtime/calls/{quote(call_id, safe='')}/hangup",
                            "realtime/calls/hangup", accept="application/json")

    # -- HTTP --------------------------------------------------------------------------

    async def _request(self, method: str, path: str, operation: str, *,
                       accept: str, files: dict[str, Any] | None = None,
                       json_body: Any = None, creates: bool = False) -> httpx.Response:
        """Send one operation with retries (for one that ``creates`` something, only the
        safe ones: :func:`bridges.errors.safe_to_repeat`); return the 2xx response."""
        url = f"{self.base_url}/{path}"
        response: httpx.Response | None = None
        async for attempt in retrying(self.retries, self.backoff, self.max_backoff,
                                      creates=creates):
            with attempt:
                response = await self._attempt(method, url, operation, accept, files,
                                               json_body)
        assert response is not None
        return response

    async def _attempt(self, method: str, url: str, operation: str, accept: str,
                       files: dict[str, Any] | None, json_body: Any = None) -> httpx.Response:
        failure = None
        try:
            response = await self._client.request(
                method, url, files=files, json=json_body, timeout=self.timeout,
                headers={"Authorization": f"Bearer {self._key}", "Accept": accept},
            )
        except httpx.TransportError as exc:
            failure = transport_error(exc, service=SERVICE, operation=operation,
                                      timeout=self.timeout, secrets=[self._key])
        if failure is not None:  # raised outside the except: no httpx context kept
            log.info("openai %s: %s", operation, failure)
            raise failure
        if not 200 <= response.status_code < 300:
            raise self._error(response, operation)
        return response

    def _error(self, response: httpx.Response, operation: str) -> OpenAIError:
        status = response.status_code
        error: Any = None
        try:
            error = response.json().get("error")
        except (ValueError, AttributeError):
            pass
        code = error_type = param = None
        if isinstance(error, dict):
            error_type = _str_or_none(error.get("type"))
            code = _str_or_none(error.get("code")) or error_type
            param = _str_or_none(error.get("param"))
            desc = str(error.get("message") or code or "no description")
        else:
            desc = response.text or response.reason_phrase or "no description"
        return OpenAIError(
            scrub(desc, [self._key]), service=SERVICE, operation=operation, status=status,
            code=code, retryable=is_retryable_status(status),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            error_type=error_type, param=param,
        )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
