"""Media tooling of bridges.local.media: tones, FFT, recorder and TrackSwitch (real aiortc)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bridges.local.ice import loopback_peer_connection
from bridges.local.media import AudioRecorder, ToneTrack, TrackSwitch, dominant_frequency, frame_to_mono, rms


async def _samples(track, frames: int) -> np.ndarray:
    return np.concatenate([frame_to_mono(await track.recv()) for _ in range(frames)])


@pytest.mark.parametrize("freq", [440.0, 660.0])
async def test_tone_track_frames_and_fft(freq: float) -> None:
    tone = ToneTrack(freq)
    frame = await tone.recv()
    assert (frame.samples, frame.sample_rate, frame.format.name, frame.layout.name) == (960, 48000, "s16", "mono")
    samples = await _samples(tone, 10)
    found = dominant_frequency(samples, 48000)
    assert abs(found - freq) < 5, found
    other = 660.0 if freq == 440.0 else 440.0
    assert abs(found - other) > 100
    tone.stop()


async def test_tone_track_is_paced_in_real_time() -> None:
    tone = ToneTrack(440)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(11):  # first frame immediate, then 10 x 20 ms
        await tone.recv()
    assert 0.17 <= loop.time() - start <= 0.4
    tone.stop()


def test_fft_edge_cases() -> None:
    assert dominant_frequency(np.zeros(0), 48000) == 0.0
    assert dominant_frequency(np.zeros(4800), 48000) == 0.0
    assert rms(np.zeros(0)) == 0.0
    t = np.arange(4800) / 48000
    assert abs(dominant_frequency(1000 * np.sin(2 * np.pi * 1234 * t), 48000) - 1234) < 5


async def test_track_switch_changes_source_without_ending() -> None:
    a, b = ToneTrack(440), ToneTrack(660)
    switch = TrackSwitch("audio", a)
    assert abs(dominant_frequency(await _samples(switch, 10), 48000) - 440) < 5
    assert switch.set_source(b) is a
    assert abs(dominant_frequency(await _samples(switch, 10), 48000) - 660) < 5
    b.stop()  # a stopped source is dropped; the switch waits for the next one
    switch.set_source(a)
    assert abs(dominant_frequency(await _samples(switch, 10), 48000) - 440) < 5
    switch.stop()
    with pytest.raises(Exception):
        await switch.recv()
    a.stop()


async def test_recorder_hears_tone_over_real_webrtc() -> None:
    sender, receiver = loopback_peer_connection(), loopback_peer_connection()
    sender.addTrack(ToneTrack(660))
    await sender.setLocalDescription(await sender.createOffer())
    assert "127.0.0.1" in sender.localDescription.sdp
    await receiver.setRemoteDescription(sender.localDescription)
    await receiver.setLocalDescription(await receiver.createAnswer())
    await sender.setRemoteDescription(receiver.localDescription)
    recorder = AudioRecorder(receiver.getTransceivers()[0].receiver.track, seconds=1.0)
    recorder.start()
    try:
        for _ in range(50):
            await asyncio.sleep(0.1)
            samples = recorder.samples(0.4)
            if len(samples) >= 0.4 * 48000 and abs(dominant_frequency(samples, 48000) - 660) < 10:
                break
        samples = recorder.samples(0.4)
        assert abs(dominant_frequency(samples, 48000) - 660) < 10
        assert rms(samples) > 1000
        assert len(recorder.samples()) <= 1.0 * 48000 + 1920  # the ring is bounded
    finally:
        await recorder.stop()
        await sender.close()
        await receiver.close()
