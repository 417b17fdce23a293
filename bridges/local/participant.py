"""A test/demo call participant: an aiortc peer that uses a Calls-compatible SFU over HTTP.

It publishes a :class:`~bridges.local.media.ToneTrack` (``sessions/new``, then
``tracks/new`` with its own offer), pulls remote tracks (``tracks/new`` remote, then
``renegotiate`` with its answer), and reports what it hears (dominant frequency, level).
It speaks the Calls API (contract ``bridges/contracts/calls.yaml``)
directly with httpx: it is test tooling, not the project's Calls bridge.

::

    async with Participant(emu.calls_base_url, emu.app_id, emu.app_secret, freq_hz=440) as a:
        session_id, track_name = await a.publish()
        await a.pull(other_session_id, "ai-generated-voice")
        freq = await a.wait_for_frequency(440)
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from aiortc import RTCSessionDescription

from .ice import loopback_peer_connection
from .media import AudioRecorder, ToneTrack, dominant_frequency, rms

__all__ = ["Participant", "ParticipantError"]


class ParticipantError(RuntimeError):
    """The SFU refused or failed an operation (message: operation, status, error code)."""


class Participant:
    """One peer connection = one Calls session, publishing a tone and pulling tracks.

    Args:
        calls_base_url: e.g. ``http://127.0.0.1:PORT/v1``.
        app_id / app_secret: Calls app credentials (the secret is never logged).
        freq_hz: tone to publish, in Hz (``None``: publish nothing).
        track_name: the published track's name.
        timeout: seconds per HTTP request.

    Must be used inside one running event loop (its peer connection lives there).
    """

    def __init__(self, calls_base_url: str, app_id: str, app_secret: str, *,
                 freq_hz: float | None = 440.0, track_name: str = "mic",
                 timeout: float = 10.0) -> None:
        self.base = f"{calls_base_url.rstrip('/')}/apps/{app_id}"
        self.freq_hz = freq_hz
        self.track_name = track_name
        self._http = httpx.AsyncClient(headers={"Authorization": f"Bearer {app_secret}"},
                                       timeout=timeout)
        self.pc = loopback_peer_connection()
        self.session_id: str | None = None
        self.tone: ToneTrack | None = None
        self.recorders: dict[str, AudioRecorder] = {}  # by mid

    def __repr__(self) -> str:
        return f"<Participant session={self.session_id} tone={self.freq_hz}>"

    async def _call(self, method: str, path: str, body: Any = None, expect: int = 200) -> dict:
        response = await self._http.request(method, self.base + path, json=body)
        if response.status_code != expect:
            raise ParticipantError(f"{method} {path}: HTTP {response.status_code} {response.text[:200]}")
        data = response.json() if response.content else {}
        for item in data.get("tracks") or []:
            if item.get("errorCode"):
                raise ParticipantError(f"{method} {path}: track error {item['errorCode']}: "
                                       f"{item.get('errorDescription')}")
        return data

    async def ensure_session(self) -> str:
        """Create this participant's Calls session if needed; return its id."""
        if self.session_id is None:
            data = await self._call("POST", "/sessions/new", expect=201)
            self.session_id = data["sessionId"]
        return self.session_id

    async def publish(self) -> tuple[str, str]:
        """Publish the tone track; return ``(sessionId, trackName)``.

        Raises: :class:`ParticipantError` on any HTTP or per-track error.
        """
        if self.freq_hz is None:
            raise ParticipantError("this participant has no tone to publish")
        await self.ensure_session()
        self.tone = ToneTrack(self.freq_hz)
        transceiver = self.pc.addTransceiver(self.tone, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        data = await self._call("POST", f"/sessions/{self.session_id}/tracks/new", {
            "sessionDescription": {"type": "offer", "sdp": self.pc.localDescription.sdp},
            "tracks": [{"location": "local", "mid": transceiver.mid, "trackName": self.track_name}],
        })
        answer = data["sessionDescription"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        return self.session_id, self.track_name

    async def pull(self, session_id: str, track_name: str) -> str:
        """Pull ``track_name`` of ``session_id`` and start recording it; return its mid.

        Raises: :class:`ParticipantError` on any HTTP or per-track error.
        """
        await self.ensure_session()
        data = await self._call("POST", f"/sessions/{self.session_id}/tracks/new", {
            "tracks": [{"location": "remote", "sessionId": session_id, "trackName": track_name}],
        })
        mid = data["tracks"][0]["mid"]
        if data.get("requiresImmediateRenegotiation"):
            offer = data["sessionDescription"]
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self._call("PUT", f"/sessions/{self.session_id}/renegotiate", {
                "sessionDescription": {"type": "answer", "sdp": self.pc.localDescription.sdp},
            })
        for transceiver in self.pc.getTransceivers():
            if transceiver.mid == mid and transceiver.receiver.track is not None:
                recorder = AudioRecorder(transceiver.receiver.track)
                recorder.start()
                self.recorders[mid] = recorder
                return mid
        raise ParticipantError(f"no receiving transceiver for mid {mid!r}")

    def _recorder(self, mid: str | None) -> AudioRecorder:
        if mid is None:
            if len(self.recorders) != 1:
                raise ParticipantError("say which pulled track (mid) to listen to")
            return next(iter(self.recorders.values()))
        return self.recorders[mid]

    def heard(self, seconds: float = 0.5, mid: str | None = None) -> tuple[float, float]:
        """``(dominant frequency in Hz, RMS level)`` of the last ``seconds`` heard on ``mid``."""
        recorder = self._recorder(mid)
        samples = recorder.samples(seconds)
        return dominant_frequency(samples, recorder.sample_rate), rms(samples)

    async def wait_for_frequency(self, freq_hz: float, *, tolerance: float = 15.0,
                                 min_rms: float = 300.0, timeout: float = 6.0,
                                 mid: str | None = None, window: float = 0.4) -> float:
        """Wait until the last ``window`` seconds heard are a tone of ``freq_hz`` (± tolerance).

        Returns: the measured frequency in Hz.
        Raises: ``TimeoutError`` after ``timeout`` seconds, saying what was heard instead.
        """
        recorder = self._recorder(mid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        freq = level = 0.0
        while loop.time() < deadline:
            await asyncio.sleep(0.1)
            if len(recorder.samples(window)) < window * recorder.sample_rate * 0.9:
                continue
            freq, level = self.heard(window, mid)
            if level >= min_rms and abs(freq - freq_hz) <= tolerance:
                return freq
        raise TimeoutError(f"wanted {freq_hz} Hz; heard {freq:.1f} Hz at RMS {level:.0f}")

    async def close(self) -> None:
        """Stop recorders, close the peer connection and the HTTP client (no Calls calls)."""
        for recorder in self.recorders.values():
            await recorder.stop()
        await self.pc.close()
        await self._http.aclose()

    async def __aenter__(self) -> Participant:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
