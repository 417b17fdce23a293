"""Real audio for the local emulators, their tests and the demo.

* :class:`ToneTrack`: an aiortc audio track that plays a sine at real-time pace.
* :class:`AudioRecorder`: consumes a received track into a ring of recent samples.
* :func:`dominant_frequency` / :func:`rms`: what a recorder heard (numpy FFT).
* :class:`TrackSwitch`: a sender-side track whose source can be swapped at any time
  without ever ending the sender (the SFU's relays and ``replaceTrack`` hand-offs).
* :class:`Participant` (in :mod:`bridges.local.participant`): a test peer that talks to
  a Calls-compatible SFU over HTTP.

Audio frames are PyAV ``AudioFrame`` objects, ``s16`` samples; sample rates in Hz,
durations in seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import time

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

__all__ = [
    "PacedAudioTrack",
    "AudioRecorder",
    "ToneTrack",
    "TrackSwitch",
    "dominant_frequency",
    "frame_to_mono",
    "rms",
]

FRAME_SECONDS = 0.020


class PacedAudioTrack(MediaStreamTrack):
    """Base of the emulators' audio sources: 20 ms ``s16`` mono frames at real-time pace.

    Subclasses implement ``recv()`` as ``await self._pace()`` then
    ``return self._frame(samples)`` with ``self._samples_per_frame`` int16 samples.

    Args:
        sample_rate: samples per second (Hz).
    """

    kind = "audio"

    def __init__(self, sample_rate: int = 48000) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self._samples_per_frame = int(round(self.sample_rate * FRAME_SECONDS))
        self._time_base = fractions.Fraction(1, self.sample_rate)
        self._start: float | None = None
        self._timestamp = 0  # samples produced so far

    async def _pace(self) -> int:
        """Sleep until the next frame is due; return its timestamp in samples.

        Raises: ``MediaStreamError`` when the track has been stopped.
        """
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._timestamp += self._samples_per_frame
            wait = self._start + self._timestamp / self.sample_rate - now
            if wait > 0:
                await asyncio.sleep(wait)
        return self._timestamp

    def _frame(self, samples: np.ndarray) -> AudioFrame:
        """Wrap int16 mono ``samples`` as the frame at the current timestamp."""
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._timestamp
        frame.time_base = self._time_base
        return frame


class ToneTrack(PacedAudioTrack):
    """An audio track producing a sine tone: 20 ms ``s16`` mono frames at real-time pace.

    Args:
        freq_hz: tone frequency in Hz; may be changed later through :attr:`freq_hz`.
        sample_rate: samples per second (Hz), 48000 by default (Opus' rate).
        amplitude: peak level as a fraction of full scale, 0..1.

    ``recv()`` raises ``aiortc.mediastreams.MediaStreamError`` once the track is stopped.
    """

    kind = "audio"

    def __init__(self, freq_hz: float, sample_rate: int = 48000, amplitude: float = 0.3) -> None:
        super().__init__(sample_rate)
        self.freq_hz = float(freq_hz)
        self.amplitude = float(amplitude)
        self._phase = 0.0  # radians, kept continuous across frequency changes

    async def recv(self) -> AudioFrame:
        """Return the next 20 ms frame, sleeping so frames leave at real-time pace.

        Returns: an ``AudioFrame`` (format ``s16``, layout ``mono``, ``pts`` in samples).
        Raises: ``MediaStreamError`` when the track has been stopped.
        """
        await self._pace()
        n = self._samples_per_frame
        step = 2.0 * np.pi * self.freq_hz / self.sample_rate
        phases = self._phase + step * np.arange(n)
        self._phase = float((self._phase + step * n) % (2.0 * np.pi))
        return self._frame((self.amplitude * 32767.0 * np.sin(phases)).astype(np.int16))


def frame_to_mono(frame: AudioFrame) -> np.ndarray:
    """Return a frame's samples as one float64 mono array (channels averaged), int16 scale.

    Works for packed (interleaved) and planar layouts, any channel count.
    """
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        mono = data.reshape(channels, -1).mean(axis=0)
    else:
        mono = data.reshape(-1, channels).mean(axis=1)
    return mono.astype(np.float64)


class AudioRecorder:
    """Consumes a received audio track into a ring of its most recent samples.

    Args:
        track: the track to consume (e.g. ``RTCRtpReceiver.track``).
        seconds: how much recent audio to keep, in seconds.

    Call :meth:`start` in the event loop that owns the track, :meth:`stop` when done.
    """

    def __init__(self, track: MediaStreamTrack, seconds: float = 2.0) -> None:
        self.track = track
        self.seconds = float(seconds)
        self.sample_rate: int = 48000
        self.frames_received = 0
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._held = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start consuming the track in the running event loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                return
            self.sample_rate = frame.sample_rate or self.sample_rate
            mono = frame_to_mono(frame)
            self._chunks.append(mono)
            self._held += len(mono)
            self.frames_received += 1
            limit = int(self.seconds * self.sample_rate)
            while self._held - len(self._chunks[0]) >= limit:
                self._held -= len(self._chunks.popleft())

    def clear(self) -> None:
        """Forget everything heard so far (the ring starts empty again)."""
        self._chunks.clear()
        self._held = 0

    def samples(self, seconds: float | None = None) -> np.ndarray:
        """Return the most recent samples (float64, int16 scale), at most ``seconds`` long.

        Returns an empty array when nothing was heard yet.
        """
        if not self._chunks:
            return np.zeros(0)
        data = np.concatenate(list(self._chunks))
        if seconds is not None:
            data = data[-int(seconds * self.sample_rate):]
        return data

    async def stop(self) -> None:
        """Stop consuming (the track itself is left alone)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def rms(samples: np.ndarray) -> float:
    """Root mean square of ``samples`` (same scale as the samples); 0.0 for no samples."""
    if len(samples) == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    """Return the strongest frequency in ``samples``, in Hz (numpy FFT, Hann window).

    The peak bin is refined by parabolic interpolation, so a pure tone is found to within
    a few Hz from 0.1 s of audio. Returns 0.0 for fewer than 2 samples or pure silence.
    """
    x = np.asarray(samples, dtype=np.float64)
    if len(x) < 2:
        return 0.0
    x = x - x.mean()
    if not np.any(x):
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    offset = 0.0
    if 0 < k < len(spectrum) - 1:
        a, b, c = np.log(spectrum[k - 1] + 1e-12), np.log(spectrum[k] + 1e-12), np.log(spectrum[k + 1] + 1e-12)
        denom = a - 2 * b + c
        if denom != 0:
            offset = 0.5 * (a - c) / denom
    return float((k + offset) * sample_rate / len(x))


class TrackSwitch(MediaStreamTrack):
    """A track that forwards frames from a source which can be replaced at any time.

    An aiortc ``RTCRtpSender`` stops for good when its track's ``recv()`` raises
    ``MediaStreamError``; giving the sender a ``TrackSwitch`` instead lets the SFU swap
    (``set_source``) or drop (``set_source(None)``) the relayed source without a
    renegotiation and without killing the sender. With no source, ``recv()`` waits
    (the sender sends nothing, as a Calls transceiver with nothing attached does).

    Args:
        kind: ``"audio"`` or ``"video"``.
        source: the initial source track or ``None``.
    """

    def __init__(self, kind: str = "audio", source: MediaStreamTrack | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._source = source
        self._changed = asyncio.Event()

    @property
    def source(self) -> MediaStreamTrack | None:
        """The current source track, or ``None``."""
        return self._source

    def set_source(self, source: MediaStreamTrack | None) -> MediaStreamTrack | None:
        """Forward from ``source`` from the next frame on; return the previous source.

        The previous source is not stopped: the caller owns it (stop it when done).
        """
        previous, self._source = self._source, source
        self._changed.set()
        return previous

    async def recv(self):
        """Return the next frame of the current source.

        Raises: ``MediaStreamError`` once this track is stopped.
        """
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self._source
            self._changed.clear()
            if source is None:
                await self._changed.wait()
                continue
            pending = asyncio.ensure_future(source.recv())
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({pending, changed}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:  # cancelled (e.g. the sender stops): leave no orphan
                pending.cancel()
                raise
            finally:
                changed.cancel()
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                    await pending
                continue
            try:
                return pending.result()
            except MediaStreamError:
                if self._source is source:
                    self._source = None

    def stop(self) -> None:
        """End this track (and wake a waiting ``recv``); the source is left alone."""
        super().stop()
        self._changed.set()
