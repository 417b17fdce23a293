"""Benchmark: from ``enableAi`` to the first AI audio frame a user hears, beside one bare
aiortc offer/answer, in one run.

    python benchmarks/enable_ai.py [--runs 20] [--echo-delay 0.0] [--backend both]

Starts a local Ray and both local emulators (Calls SFU, OpenAI Realtime), then, per run,
on a *fresh* room actor (created and connected before the clock starts):

(a) **enable to first AI frame**. A participant ("alice", an aiortc peer) publishes a
    440 Hz tone to the SFU emulator and is connected to the room. The clock starts just
    before ``enableAi`` is sent to the room actor and stops when alice receives the first
    audio frame from the AI that carries her tone. In between, alice does what a client
    does: waits for the ``roomState`` broadcast with ``ai.enabled`` (a long-poll on the
    room's outbox, as a gateway does), pulls the AI's track (``<aiSession>/
    ai-generated-voice``: Calls ``tracks/new`` + ``renegotiate``), sends
    ``requestAiControl`` with her track and keeps listening. "First AI frame" is the first
    20 ms frame received on the pulled AI track whose RMS is >= 300 (int16 scale; before
    anyone controls the AI it sends digital silence); the run only counts if the 100 ms
    heard from that frame on is a 440 +/- 20 Hz tone. Frames are watched every 5 ms, so
    the stop time is late by at most ~5 ms. The OpenAI emulator's voice answers what it
    hears ``--echo-delay`` seconds later (default 0: the measured time is the system's
    own signalling and media path, not a model's thinking time).
    Reported: p50/p90 of the total and of its phases (enable = send to the ``roomState``
    showing the AI, pull, control = ``requestAiControl`` to ``roomState`` naming alice,
    audio = control to first frame), and **enableAi -> sideband attached** (until the
    OpenAI emulator has the room's sideband on the new call; watched every 2 ms). Runs
    for each voice backend (``--backend realtime``, ``live`` or ``both``): Realtime
    calls and the Live API, whose sidebands differ (the first AI frame needs the room to
    turn the model's input on over the sideband: a ``session.update`` or an unmute).

(b) **bare offer/answer**: two ``RTCPeerConnection`` s on loopback (loopback-only ICE, one
    audio transceiver): ``createOffer``, ``setLocalDescription``, ``setRemoteDescription``,
    ``createAnswer``, ``setLocalDescription``, ``setRemoteDescription``; p50 over the same
    number of runs, interleaved with (a).

(c) for context: the same bare pair from ``createOffer`` until the answerer receives its
    first audio frame (ICE + DTLS + first RTP), the least a fresh WebRTC leg costs; (a)
    sets up two such legs (SFU-AI during enable, then media through them).

(d) **the same chain without a room or Ray** (issue 23's baseline for ``enableAi``): the
    same participant and the same steps, but the flows are called directly in this process
    against the emulators: ``rooms.ai.run_enable`` (Calls sessions/new, tracks/new, the
    voice backend's create, renegotiate), the sideband attached and told that alice holds
    control, alice pulls the AI's track, ``rooms.ai.run_control`` feeds her track to the
    AI. Same phases as (a); what (a) adds over it is the room: its turns, snapshots, the
    outbox long-poll and Ray calls.

Prints both and the ratios (a) p50 / (b) p50, (a) / (c) and (a) / (d) (target <= x1.3).
Absolute times drift on shared machines; compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from typing import Any

import numpy as np
import ray

from actors.config import RoomsConfig, ServiceEndpoints
from actors.directory import get_room
from bridges.local import Emulators, start_emulators
from bridges.local.ice import loopback_peer_connection
from bridges.local.media import ToneTrack, dominant_frequency, rms
from bridges.local.participant import Participant

NAMESPACE = "rooms-bench-ai"
TONE_HZ = 440.0
LOUD_RMS = 300.0
APP_ID, APP_SECRET, API_KEY = "bench-app", "bench-secret", "sk-bench-key"


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, linear interpolation."""
    return float(np.percentile(values, q * 100))


async def wait_broadcast(room, cursor: int, predicate, timeout: float = 20.0
                         ) -> tuple[int, dict[str, Any]]:
    """Long-poll the room's outbox from ``cursor`` until a broadcast ``roomState``
    satisfies ``predicate(state)``.

    Returns:
        ``(cursor after that entry, state)``.

    Raises:
        TimeoutError: after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        polled = await room.poll.remote(cursor, 2.0)
        for entry in polled.entries:
            cursor = entry.seq
            if entry.to == "all" and entry.data:
                message = json.loads(entry.data)
                if message.get("type") == "roomState" and predicate(message["state"]):
                    return cursor, message["state"]
        cursor = max(cursor, polled.cursor)
    raise TimeoutError("no matching roomState broadcast")


async def first_loud_frame(recorder, timeout: float = 10.0) -> float:
    """Wait for the first received frame with RMS >= ``LOUD_RMS`` on ``recorder``.

    Returns:
        ``time.perf_counter()`` when it was seen (watched every 5 ms).

    Raises:
        TimeoutError: nothing loud within ``timeout`` seconds.
    """
    seen = recorder.frames_received
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        frames = recorder.frames_received
        if frames != seen:
            new = frames - seen
            seen = frames
            samples = recorder.samples()
            n = 960 * new  # 20 ms frames at 48 kHz
            if len(samples) and rms(samples[-n:]) >= LOUD_RMS:
                return time.perf_counter()
        await asyncio.sleep(0.005)
    raise TimeoutError("no AI audio heard")


async def attached(emu: Emulators, before: set[str], timeout: float = 20.0) -> float:
    """When (perf_counter) the first new call in the OpenAI emulator got a sideband."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        for call_id, call in list(emu.openai.calls.items()):
            if call_id not in before and call.attaches:
                return time.perf_counter()
        await asyncio.sleep(0.002)
    raise RuntimeError("the room's sideband never attached")


async def one_enable(emu: Emulators, config: RoomsConfig, run: int,
                     settle: float = 0.0) -> dict[str, float]:
    """One run of (a) on a fresh room, ``enableAi`` sent ``settle`` seconds after alice
    connected; returns its phase times in seconds."""
    room = get_room(f"bench-ai-{run}-{uuid.uuid4().hex[:6]}", config)
    before = set(emu.openai.calls)
    try:
        async with Participant(emu.calls_base_url, APP_ID, APP_SECRET,
                               freq_hz=TONE_HZ) as alice:
            a_sid, a_track = await alice.publish()
            await room.connect.remote("alice", "Alice")
            cursor = (await room.poll.remote(None, 0)).cursor
            await asyncio.sleep(settle)

            t0 = time.perf_counter()
            sideband = asyncio.ensure_future(attached(emu, before))
            await room.message.remote("alice", json.dumps(
                {"type": "enableAi", "instructions": "Repeat what you hear."}))
            cursor, state = await wait_broadcast(room, cursor, lambda s: s["ai"]["enabled"])
            t_enabled = time.perf_counter()
            ai = next(u for u in state["users"] if u["id"] == "ai")
            ai_sid, ai_track = ai["tracks"]["audio"].split("/")
            mid = await alice.pull(ai_sid, ai_track)
            recorder = alice.recorders[mid]
            t_pulled = time.perf_counter()
            heard = asyncio.ensure_future(first_loud_frame(recorder))
            await room.message.remote("alice", json.dumps({
                "type": "requestAiControl",
                "track": {"sessionId": a_sid, "trackName": a_track}}))
            await wait_broadcast(room, cursor, lambda s: s["ai"].get("controllingUser") == "alice")
            t_control = time.perf_counter()
            t_heard = await heard
            await asyncio.sleep(0.1)  # then check what was heard since that frame
            freq = dominant_frequency(recorder.samples(0.1), recorder.sample_rate)
            if abs(freq - TONE_HZ) > 20:
                raise RuntimeError(f"the AI's first audio is {freq:.0f} Hz, not {TONE_HZ:.0f}")
            t_attached = await sideband
            await room.message.remote("alice", json.dumps({"type": "disableAi"}))
        return {
            "attached": t_attached - t0,
            "total": t_heard - t0,
            "enable": t_enabled - t0,
            "pull": t_pulled - t_enabled,
            "control": t_control - t_pulled,
            "audio": t_heard - t_pulled,
        }
    finally:
        await asyncio.sleep(0.2)  # let the release job of disableAi leave
        ray.kill(room, no_restart=True)


async def one_direct(emu: Emulators, backend: str) -> dict[str, float]:
    """One run of (d): the enable chain driven directly, no room, no Ray."""
    from bridges.calls import CallsClient
    from bridges.config import OpenAISettings
    from pydantic import SecretStr
    from rooms.ai import run_control, run_enable
    from rooms.messages import AI_TRACK_NAME, TrackRef
    from rooms.sideband_wire import session_control
    from rooms.state import ControlJob, EnableJob

    settings = OpenAISettings(api_key=SecretStr(API_KEY), base_url=emu.openai_base_url,
                              voice_api=backend)
    calls = CallsClient(APP_ID, APP_SECRET, base_url=emu.calls_base_url, timeout=10.0)
    ai = settings.client(timeout=10.0)

    async def record(progress) -> None:
        return None

    link = None
    try:
        async with Participant(emu.calls_base_url, APP_ID, APP_SECRET,
                               freq_hz=TONE_HZ) as alice:
            a_sid, a_track = await alice.publish()
            t0 = time.perf_counter()
            result = await run_enable(EnableJob(1, "bench", "Repeat what you hear.", None),
                                      calls, ai, model=settings.model_or_default,
                                      record=record)
            if result.error:
                raise RuntimeError(result.error)
            t_enabled = time.perf_counter()
            link = await ai.attach(result.call_id)
            control = session_control("Repeat what you hear.", None)
            await link.send_control(control, None)
            t_attached = time.perf_counter()
            mid = await alice.pull(result.session_id, AI_TRACK_NAME)
            recorder = alice.recorders[mid]
            t_pulled = time.perf_counter()
            heard = asyncio.ensure_future(first_loud_frame(recorder))
            track = TrackRef(sessionId=a_sid, trackName=a_track)
            done = await run_control(ControlJob(2, "alice", result.session_id, AI_TRACK_NAME,
                                                track), calls)
            if done.error:
                raise RuntimeError(done.error)
            await link.send_control(session_control("Repeat what you hear.", "Alice"), control)
            t_control = time.perf_counter()
            t_heard = await heard
            await calls.close_tracks(result.session_id, [result.mid] if result.mid else [])
            await ai.hangup(result.call_id)
        return {"attached": t_attached - t0, "total": t_heard - t0,
                "enable": t_enabled - t0, "pull": t_pulled - t_attached,
                "control": t_control - t_pulled, "audio": t_heard - t_pulled}
    finally:
        if link is not None:
            await link.close()
        await calls.aclose()
        await ai.aclose()


async def one_offer_answer() -> float:
    """One run of (b): a bare offer/answer between two loopback peers; seconds."""
    a, b = loopback_peer_connection(), loopback_peer_connection()
    try:
        a.addTransceiver(ToneTrack(TONE_HZ), direction="sendonly")
        t0 = time.perf_counter()
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        return time.perf_counter() - t0
    finally:
        await a.close()
        await b.close()


async def one_connect_to_media() -> float:
    """One run of (c): offer/answer as in (b), then until the answerer receives its first
    audio frame (ICE + DTLS + first RTP); seconds."""
    a, b = loopback_peer_connection(), loopback_peer_connection()
    got = asyncio.get_running_loop().create_future()

    @b.on("track")
    def on_track(track) -> None:
        async def first() -> None:
            await track.recv()
            if not got.done():
                got.set_result(time.perf_counter())
        asyncio.ensure_future(first())

    try:
        a.addTransceiver(ToneTrack(TONE_HZ), direction="sendonly")
        t0 = time.perf_counter()
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        return await asyncio.wait_for(got, 10) - t0
    finally:
        await a.close()
        await b.close()


async def bench(runs: int, echo_delay: float, backends: list[str], settle: float = 0.0) -> None:
    """Run (a) for each backend and (b), (c) ``runs`` times each, interleaved, and print
    the results."""
    emu = start_emulators(app_id=APP_ID, app_secret=APP_SECRET, api_key=API_KEY,
                          echo_delay=echo_delay)
    tmp = tempfile.mkdtemp(prefix="rooms-bench-ai-")
    configs = {backend: RoomsConfig(
        namespace=NAMESPACE, store_url=f"sqlite:///{tmp}/bench.sqlite3", idle_timeout=0,
        services=ServiceEndpoints(
            calls_base_url=emu.calls_base_url, calls_app_id=APP_ID, calls_app_secret=APP_SECRET,
            openai_base_url=emu.openai_base_url, openai_api_key=API_KEY, timeout=10.0,
            openai_voice_api=backend),
    ) for backend in backends}
    enables: dict[str, list[dict[str, float]]] = {backend: [] for backend in backends}
    directs: dict[str, list[dict[str, float]]] = {backend: [] for backend in backends}
    offers: list[float] = []
    connects: list[float] = []
    try:
        await one_offer_answer()  # warm-up: imports, codecs
        for run in range(1, runs + 1):
            for backend in backends:
                enables[backend].append(await one_enable(emu, configs[backend], run, settle))
                directs[backend].append(await one_direct(emu, backend))
                d = directs[backend][-1]
                print(f"  run {run:2d}/{runs} {backend:8}: direct chain (no room) "
                      f"{d['total'] * 1e3:7.1f} ms", flush=True)
                e = enables[backend][-1]
                print(f"  run {run:2d}/{runs} {backend:8}: enable->first AI frame "
                      f"{e['total'] * 1e3:7.1f} ms (enable {e['enable'] * 1e3:6.1f}, "
                      f"sideband {e['attached'] * 1e3:6.1f}, pull {e['pull'] * 1e3:6.1f}, "
                      f"control {e['control'] * 1e3:6.1f}, audio {e['audio'] * 1e3:6.1f})",
                      flush=True)
            offers.append(await one_offer_answer())
            connects.append(await one_connect_to_media())
            print(f"  run {run:2d}/{runs} bare    : offer/answer {offers[-1] * 1e3:6.1f} ms; "
                  f"to first frame {connects[-1] * 1e3:6.1f} ms", flush=True)
    finally:
        emu.stop()

    print()
    print(f"runs: {runs}; emulator echo delay {echo_delay:g} s; enableAi {settle:g} s after connect")
    labels = {
        "enable": "enableAi -> roomState ai.enabled",
        "attached": "enableAi -> sideband attached",
        "pull": "pull AI track (tracks/new+reneg.)",
        "control": "requestAiControl -> roomState",
        "audio": "pulled -> first AI frame",
        "total": "TOTAL enableAi -> first AI frame",
    }
    bare = statistics.median(offers)
    connect = statistics.median(connects)
    for backend in backends:
        print(f"{'(a) ' + backend + ' phase':34} {'p50 ms':>8} {'p90 ms':>8} "
              f"{'(d) p50':>8} {'(a)/(d)':>8}")
        for key, label in labels.items():
            values = [e[key] for e in enables[backend]]
            direct = percentile([d[key] for d in directs[backend]], 0.5)
            print(f"{label:34} {percentile(values, 0.5) * 1e3:8.1f} "
                  f"{percentile(values, 0.9) * 1e3:8.1f} {direct * 1e3:8.1f} "
                  f"{percentile(values, 0.5) / direct if direct else 0:7.2f}x")
    print(f"{'(b) bare aiortc offer/answer':34} {bare * 1e3:8.1f} "
          f"{percentile(offers, 0.9) * 1e3:8.1f}")
    print(f"{'(c) bare pair: to first frame':34} {connect * 1e3:8.1f} "
          f"{percentile(connects, 0.9) * 1e3:8.1f}")
    print()
    for backend in backends:
        total = percentile([e["total"] for e in enables[backend]], 0.5)
        direct = percentile([d["total"] for d in directs[backend]], 0.5)
        met = "met" if total / direct <= 1.3 else "NOT met"
        print(f"{backend:8} ratio (a) p50 / (b) p50: {total / bare:.1f}x   "
              f"(a) p50 / (c) p50: {total / connect:.1f}x   "
              f"(a) p50 / (d) p50: {total / direct:.2f}x (target <= 1.3x: {met})")


def main() -> None:
    """Parse the command line, start Ray, run the benchmark, stop Ray."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each measurement")
    parser.add_argument("--echo-delay", type=float, default=0.0,
                        help="seconds the OpenAI emulator's voice lags what it hears")
    parser.add_argument("--backend", choices=["realtime", "live", "both"], default="both",
                        help="the voice backend(s) to measure")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds between alice's connect and enableAi (0: at once, "
                             "the worst case: the room prepares its AI clients meanwhile; "
                             "a user's click comes later)")
    args = parser.parse_args()
    backends = ["realtime", "live"] if args.backend == "both" else [args.backend]
    ray.init(namespace=NAMESPACE, include_dashboard=False, configure_logging=False,
             log_to_driver=False)
    try:
        print(f"measuring {args.runs} runs of (a) and (b), interleaved...", flush=True)
        asyncio.run(bench(args.runs, args.echo_delay, backends, args.settle))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
