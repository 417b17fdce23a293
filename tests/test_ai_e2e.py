"""The room's AI agent end to end: a real room actor on Ray, the real httpx bridges, the
local Calls SFU and OpenAI Realtime emulators over loopback HTTP, and real aiortc media.

The emulators run in this test process (their own threads); the room actors run in Ray
worker processes and reach them over 127.0.0.1. Faults are armed from here on
``emu.calls.faults`` / ``emu.openai.faults``. What a room created in the emulators is
found by difference (:class:`Ledger`): sessions and calls that appeared during a test.

Follows docs/ai.md and the contracts in ``bridges/contracts/`` (Calls
``sessions/new``, ``tracks/new``, ``renegotiate``, ``tracks/close``; OpenAI
``realtime/calls``, ``hangup``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any, Callable

import pytest

from actors.config import RoomsConfig, ServiceEndpoints
from bridges.local import Emulators, start_emulators
from bridges.local.participant import Participant

from .conftest import TEST_NAMESPACE

pytestmark = [pytest.mark.ray, pytest.mark.media]

AI_TRACK = "ai-generated-voice"
APP_ID, APP_SECRET, API_KEY = "e2e-app", "e2e-app-secret", "sk-e2e-test-key"


@pytest.fixture(scope="module")
def emu() -> Emulators:
    """Both emulators, started once for this module in the test process."""
    emulators = start_emulators(app_id=APP_ID, app_secret=APP_SECRET, api_key=API_KEY)
    yield emulators
    emulators.stop()


@pytest.fixture
def make_room(ray_session, emu: Emulators, sqlite_url: str, unique_room: str):
    """``make_room(timeout=2.0, retries=1, api_key=API_KEY, **config) -> actor handle``.

    Creates this test's room actor (SQLite store in the test's tmp dir, no hibernation)
    wired to the emulators; at teardown clears the faults and kills the actor for good.
    """
    made = []

    def make(*, timeout: float = 2.0, retries: int = 1, api_key: str = API_KEY,
             backend: str | None = None, **extra):
        from actors.directory import get_room

        config = RoomsConfig(
            namespace=TEST_NAMESPACE, store_url=sqlite_url, idle_timeout=0, **extra,
            services=ServiceEndpoints(
                calls_base_url=emu.calls_base_url, calls_app_id=APP_ID,
                calls_app_secret=APP_SECRET, openai_base_url=emu.openai_base_url,
                openai_api_key=api_key, timeout=timeout, retries=retries,
                openai_voice_api=backend,
            ),
        )
        room = get_room(unique_room, config)
        made.append(room)
        return room

    yield make
    emu.calls.faults.clear()
    emu.openai.faults.clear()
    for room in made:
        ray_session.kill(room, no_restart=True)


# ---------------------------------------------------------------- helpers


class Ledger:
    """What the emulators held when it was made, to tell what a test's room created.

    Args:
        emu: the running emulators.
    """

    def __init__(self, emu: Emulators) -> None:
        self.emu = emu
        self.sessions = set(dict.copy(emu.calls.sessions))
        self.calls = set(dict.copy(emu.openai.calls))
        self.calls_counts = dict.copy(emu.calls.request_counts)
        self.openai_counts = dict.copy(emu.openai.request_counts)

    def new_sessions(self) -> set[str]:
        """Calls session ids created since the ledger was made."""
        return set(dict.copy(self.emu.calls.sessions)) - self.sessions

    def new_calls(self) -> set[str]:
        """OpenAI call ids created since the ledger was made."""
        return set(dict.copy(self.emu.openai.calls)) - self.calls

    def requests(self, operation: str, service: str = "calls") -> int:
        """How many ``operation`` requests the emulator received since the ledger was made."""
        counts = self.emu.calls.request_counts if service == "calls" else self.emu.openai.request_counts
        before = self.calls_counts if service == "calls" else self.openai_counts
        return counts.get(operation, 0) - before.get(operation, 0)

    async def wait_requests(self, operation: str, service: str = "calls",
                            at_least: int = 1, timeout: float = 10.0) -> int:
        """Wait (bounded) until ``requests(operation, service) >= at_least``; return the
        count. (A call's peer connection may close, when its Calls side goes, before the
        hangup request arrives.)"""
        deadline = time.monotonic() + timeout
        while self.requests(operation, service) < at_least and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)  # a second request would land now
        return self.requests(operation, service)

    def left_open(self, exclude: set[str] = frozenset()) -> dict[str, list]:
        """What the room created and did not release: open Calls sessions, active Calls
        tracks (``(sessionId, mid, trackName, location)``) and active OpenAI calls."""
        mine = self.new_sessions() - set(exclude)
        calls = self.new_calls()
        return {
            "sessions": sorted(s for s in self.emu.calls.open_sessions() if s in mine),
            "tracks": sorted((t for t in self.emu.calls.active_tracks() if t[0] in mine),
                             key=str),
            "calls": sorted(c for c in self.emu.openai.active_calls() if c in calls),
        }

    async def wait_released(self, exclude: set[str] = frozenset(),
                            timeout: float = 10.0) -> dict[str, list]:
        """Wait (bounded) until nothing the room created is open; return the leftovers."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.left_open(exclude)
            if not any(left.values()) or time.monotonic() > deadline:
                return left
            await asyncio.sleep(0.05)


async def wait_state(room, predicate: Callable[[dict[str, Any]], bool],
                     timeout: float = 15.0) -> dict[str, Any]:
    """Poll ``room.state`` until ``predicate(state)``; return it (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        state = await room.state.remote()
        if predicate(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"room state never matched; last: {state}")
        await asyncio.sleep(0.05)


def settled(state: dict[str, Any]) -> bool:
    """The AI is not being enabled and no control request is under way (public view)."""
    return not state["ai"].get("connectionPending")


async def send(room, conn: str, message: dict[str, Any]) -> list[dict[str, Any]]:
    """Send ``message`` as ``conn``; return the messages the turn addressed to ``conn`` alone."""
    cursor = (await room.poll.remote(None, 0)).cursor
    await room.message.remote(conn, json.dumps(message))
    polled = await room.poll.remote(cursor, 0)
    return [json.loads(e.data) for e in polled.entries
            if e.to == "one" and e.conn == conn and e.data]


def ai_user(state: dict[str, Any]) -> dict[str, Any] | None:
    """The virtual user ``ai`` of a RoomState, or ``None``."""
    return next((u for u in state["users"] if u["id"] == "ai"), None)


def assert_clean_failure(state: dict[str, Any], *fragments: str) -> str:
    """The AI ended disabled, not pending, with an error containing every fragment."""
    ai = state["ai"]
    assert ai["enabled"] is False and ai.get("connectionPending") is False, ai
    assert ai_user(state) is None, state["users"]
    error = ai.get("error") or ""
    for fragment in fragments:
        assert fragment in error, (fragment, error)
    assert API_KEY not in error and APP_SECRET not in error
    return error


ENABLE = {"type": "enableAi", "instructions": "Repeat what you hear.", "voice": "marin"}


# ---------------------------------------------------------------- 1. end to end, real media


async def test_ai_end_to_end_with_real_media(emu: Emulators, make_room) -> None:
    creds = (emu.calls_base_url, APP_ID, APP_SECRET)
    ledger = Ledger(emu)
    room = make_room()
    async with Participant(*creds, freq_hz=440) as alice, \
            Participant(*creds, freq_hz=660) as bob:
        a_sid, a_track = await alice.publish()
        await room.connect.remote("alice", "Alice")
        await room.connect.remote("bob", "Bob")

        assert await send(room, "alice", ENABLE) == []
        state = await wait_state(room, settled)
        assert state["ai"]["enabled"] is True and "error" not in state["ai"], state["ai"]
        ai = ai_user(state)
        assert ai is not None
        ai_sid, ai_track = ai["tracks"]["audio"].split("/")
        assert ai_track == AI_TRACK
        # the room's Calls session is thirdparty and correlated with the meeting
        info = emu.calls.session_info(ai_sid)
        assert info["thirdparty"] is True and info["correlationId"] == state["meetingId"]
        assert ai_sid in emu.calls.open_sessions()
        [call_id] = ledger.new_calls()
        session = emu.openai.calls[call_id].session
        # created with enableAi's instructions (the sideband then adds who is speaking)
        assert session["instructions"].startswith(ENABLE["instructions"])
        assert session["audio"]["output"]["voice"] == "marin"

        # alice takes control: her microphone feeds the AI; she hears its voice
        track = {"sessionId": a_sid, "trackName": a_track}
        assert await send(room, "alice", {"type": "requestAiControl", "track": track}) == []
        state = await wait_state(room, lambda s: s["ai"].get("controllingUser") == "alice")
        await alice.pull(ai_sid, ai_track)
        assert abs(await alice.wait_for_frequency(440, timeout=8) - 440) < 15

        # bob publishes; until he takes control, the AI still hears alice
        b_sid, b_track = await bob.publish()
        await asyncio.sleep(0.8)
        freq, level = alice.heard(0.4)
        assert level >= 300 and abs(freq - 440) < 15, (freq, level)

        track = {"sessionId": b_sid, "trackName": b_track}
        assert await send(room, "bob", {"type": "requestAiControl", "track": track}) == []
        await wait_state(room, lambda s: s["ai"].get("controllingUser") == "bob")
        assert abs(await alice.wait_for_frequency(660, timeout=8) - 660) < 15

        # a relinquish from someone who does not hold control is a quiet no-op
        assert await send(room, "alice", {"type": "relinquishAiControl"}) == []
        assert (await room.state.remote())["ai"]["controllingUser"] == "bob"
        assert await send(room, "bob", {"type": "relinquishAiControl"}) == []
        state = await room.state.remote()
        assert "controllingUser" not in state["ai"] and state["ai"]["enabled"] is True

        # disableAi releases the AI's Calls track and hangs up the OpenAI call
        assert await send(room, "alice", {"type": "disableAi"}) == []
        state = await room.state.remote()
        assert state["ai"]["enabled"] is False and ai_user(state) is None
        left = await ledger.wait_released(exclude={a_sid, b_sid})
        assert left == {"sessions": [], "tracks": [], "calls": []}
        assert ai_sid not in emu.calls.open_sessions()
        assert call_id not in emu.openai.active_calls()
        assert await ledger.wait_requests("hangup", "openai") == 1


# ---------------------------------------------------------------- 2. failure modes


async def test_calls_503_with_retry_after_is_retried(emu: Emulators, make_room) -> None:
    ledger = Ledger(emu)
    room = make_room(retries=1)
    await room.connect.remote("alice", "Alice")
    emu.calls.faults.set("sessions/new", status=503, retry_after=0, times=1)
    await send(room, "alice", ENABLE)
    state = await wait_state(room, settled)
    assert state["ai"]["enabled"] is True and "error" not in state["ai"], state["ai"]
    assert ledger.requests("sessions/new") == 2  # the 503 said "nothing done": again
    assert len(ledger.new_sessions()) == 1  # the 503 created nothing
    await send(room, "alice", {"type": "disableAi"})
    state = await room.state.remote()
    assert state["ai"] == {"enabled": False, "connectionPending": False}
    assert await ledger.wait_released() == {"sessions": [], "tracks": [], "calls": []}


@pytest.mark.parametrize("operation,service", [
    ("sessions/new", "calls"), ("tracks/new", "calls"), ("realtime/calls", "openai")])
async def test_a_creating_request_answered_too_late_leaves_nothing_open(
        emu: Emulators, make_room, operation: str, service: str) -> None:
    """The emulator creates the session, track or call, but answers after the client
    gave up: the flow fails at that step without sending it again (no second resource),
    and once it has ended nothing is left open: the AI session's tracks are found and
    closed (GET session), and a call nobody joins ends as the real service ends it."""
    ledger = Ledger(emu)
    room = make_room(timeout=0.5, retries=3)
    await room.connect.remote("alice", "Alice")
    emulator = emu.calls if service == "calls" else emu.openai
    emulator.faults.set(operation, delay=1.0, times=1)  # then handled: it is created
    expiry = emu.openai.unconnected_timeout_s, emu.calls.unconnected_timeout_s
    emu.openai.unconnected_timeout_s = emu.calls.unconnected_timeout_s = 3.0
    try:
        await send(room, "alice", ENABLE)
        state = await wait_state(room, settled)
        step = ("openai " if service == "openai" else "calls ") + operation
        assert_clean_failure(state, step, "no answer within 0.5 s")
        assert ledger.requests(operation, service) == 1  # not sent again
        await asyncio.sleep(1.0)  # the late request has been carried out by now
        created = ledger.new_calls() if service == "openai" else ledger.new_sessions()
        assert len(created) == 1
        assert await ledger.wait_released(timeout=15) == {
            "sessions": [], "tracks": [], "calls": []}
    finally:
        emu.openai.unconnected_timeout_s, emu.calls.unconnected_timeout_s = expiry


async def test_calls_4xx_on_tracks_new(emu: Emulators, make_room) -> None:
    ledger = Ledger(emu)
    room = make_room()
    await room.connect.remote("alice", "Alice")
    emu.calls.faults.set("tracks/new", status=400, times=1,
                         error_code="invalid_request_error", error_message="no good")
    await send(room, "alice", ENABLE)
    state = await wait_state(room, settled)
    assert_clean_failure(state, "calls tracks/new", "400", "no good")
    assert ledger.requests("tracks/new") == 1  # a 4xx is not retried
    assert ledger.requests("realtime/calls", "openai") == 0
    assert await ledger.wait_released() == {"sessions": [], "tracks": [], "calls": []}


async def test_openai_401_releases_calls_tracks(emu: Emulators, make_room) -> None:
    ledger = Ledger(emu)
    room = make_room(api_key="sk-wrong-key-for-this-test")
    await room.connect.remote("alice", "Alice")
    await send(room, "alice", ENABLE)
    state = await wait_state(room, settled)
    error = assert_clean_failure(state, "openai realtime/calls", "401")
    assert "sk-wrong-key-for-this-test" not in error
    assert ledger.requests("realtime/calls", "openai") == 1  # a 401 is not retried
    assert ledger.requests("tracks/new") == 1 and ledger.requests("tracks/close") == 1
    assert len(ledger.new_sessions()) == 1
    assert await ledger.wait_released() == {"sessions": [], "tracks": [], "calls": []}


async def test_openai_timeout(emu: Emulators, make_room) -> None:
    ledger = Ledger(emu)
    room = make_room(timeout=0.5, retries=1)
    await room.connect.remote("alice", "Alice")
    # The attempt stalls past the client's timeout (the emulator then fails it). A
    # timed-out create-realtime-call is not sent again: it may have created a call.
    emu.openai.faults.set("realtime/calls", delay=1.5, status=500, times=1)
    started = time.monotonic()
    await send(room, "alice", ENABLE)
    state = await wait_state(room, settled)
    assert time.monotonic() - started < 6
    assert_clean_failure(state, "openai realtime/calls", "no answer within 0.5 s")
    assert ledger.requests("realtime/calls", "openai") == 1
    assert ledger.requests("tracks/close") == 1
    assert await ledger.wait_released() == {"sessions": [], "tracks": [], "calls": []}


async def test_openai_malformed_answer_sdp(emu: Emulators, make_room) -> None:
    ledger = Ledger(emu)
    room = make_room()
    await room.connect.remote("alice", "Alice")
    emu.openai.faults.set("realtime/calls", malformed_answer=True, times=1)
    await send(room, "alice", ENABLE)
    state = await wait_state(room, settled)
    assert_clean_failure(state, "openai realtime/calls", "not SDP")
    assert ledger.requests("renegotiate") == 0 and ledger.requests("tracks/close") == 1
    # the flow released before it reported: a short bound suffices
    assert await ledger.wait_released(timeout=2) == {"sessions": [], "tracks": [], "calls": []}


@pytest.mark.parametrize("operation", ["realtime/calls", "renegotiate"],
                         ids=["openai-realtime-calls", "calls-renegotiate"])
async def test_room_killed_during_enable(ray_session, emu: Emulators, make_room,
                                         operation: str) -> None:
    ray = ray_session
    ledger = Ledger(emu)
    room = make_room(timeout=10.0)
    await room.connect.remote("alice", "Alice")
    if operation == "realtime/calls":
        # stall, then fail: the emulator creates no call for a caller that is gone
        emu.openai.faults.set(operation, delay=4.0, status=503, times=1)
    else:
        emu.calls.faults.set(operation, delay=4.0, times=1)
    emulator = emu.openai if operation == "realtime/calls" else emu.calls
    before = dict.copy(emulator.request_counts).get(operation, 0)
    await send(room, "alice", ENABLE)
    # wait until the enable job is stalled inside ``operation``
    deadline = time.monotonic() + 10
    while emulator.request_counts.get(operation, 0) == before:
        assert time.monotonic() < deadline, "the enable never reached " + operation
        await asyncio.sleep(0.02)
    info = await room.info.remote()
    assert info.ai.connectionPending is True and info.jobs >= 1
    old_pid = info.pid

    ray.kill(room, no_restart=False)
    await restarted(ray, room, old_pid)

    state = await room.state.remote()
    error = assert_clean_failure(state, "interrupted", f"enable interrupted at "
                                 f"{'openai realtime/calls' if operation != 'renegotiate' else 'calls renegotiate'}")
    assert "restart" in error
    assert len(ledger.new_sessions()) == 1
    assert await ledger.wait_released(timeout=10) == {"sessions": [], "tracks": [], "calls": []}
    if operation == "renegotiate":
        [call_id] = ledger.new_calls()
        # hung up once (counted per call: another test's late hangup may land meanwhile)
        await until(lambda: emu.openai.hangups[call_id], "the hangup")
        await asyncio.sleep(0.2)  # a second one would land now
        assert emu.openai.hangups[call_id] == 1
    # the room works again: a fresh enable succeeds
    await send(room, "alice", ENABLE)
    state = await wait_state(room, settled)
    assert state["ai"]["enabled"] is True and "error" not in state["ai"], state["ai"]
    await send(room, "alice", {"type": "disableAi"})
    assert await ledger.wait_released() == {"sessions": [], "tracks": [], "calls": []}


# ---------------------------------------------------------------- 3. guards on the actor


async def test_second_enable_while_pending_is_refused(emu: Emulators, make_room) -> None:
    ledger = Ledger(emu)
    room = make_room()
    await room.connect.remote("alice", "Alice")
    await room.connect.remote("bob", "Bob")
    emu.calls.faults.set("tracks/new", delay=1.0, times=1)  # keep the first enable pending
    assert await send(room, "alice", ENABLE) == []
    assert (await room.info.remote()).ai.connectionPending is True
    [reply] = await send(room, "bob", ENABLE)
    assert (reply["type"], reply["error"]) == ("error", "the AI is already being enabled")
    state = await wait_state(room, settled)
    assert state["ai"]["enabled"] is True, state["ai"]
    [reply] = await send(room, "bob", ENABLE)
    assert (reply["type"], reply["error"]) == ("error", "the AI is already enabled")
    assert ledger.requests("sessions/new") == 1 and len(ledger.new_sessions()) == 1
    assert ledger.requests("realtime/calls", "openai") == 1
    await send(room, "alice", {"type": "disableAi"})
    assert await ledger.wait_released() == {"sessions": [], "tracks": [], "calls": []}


async def test_disable_while_pending_releases_the_late_result(emu: Emulators,
                                                              make_room) -> None:
    ledger = Ledger(emu)
    room = make_room()
    await room.connect.remote("alice", "Alice")
    emu.calls.faults.set("renegotiate", delay=1.0, times=1)
    await send(room, "alice", ENABLE)
    deadline = time.monotonic() + 10
    while not ledger.new_calls():  # the OpenAI call exists; renegotiate is stalled
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert await send(room, "alice", {"type": "disableAi"}) == []
    state = await room.state.remote()
    assert state["ai"] == {"enabled": False, "connectionPending": False}
    # the enable job finishes late (its renegotiate fails or succeeds): its result is
    # stale, never shown, and what it created is released
    deadline = time.monotonic() + 10
    while (await room.info.remote()).jobs:
        assert time.monotonic() < deadline, "the stale enable job never finished"
        await asyncio.sleep(0.05)
    assert await ledger.wait_released(timeout=10) == {"sessions": [], "tracks": [], "calls": []}
    assert await ledger.wait_requests("hangup", "openai") >= 1
    state = await room.state.remote()
    assert state["ai"] == {"enabled": False, "connectionPending": False}


async def test_openai_model_comes_from_the_environment(emu: Emulators, monkeypatch) -> None:
    """``OPENAI_MODEL`` in the room's process names the model of the new call (the room
    used a literal before)."""
    from actors.room_actor import RoomActor
    from storage import MemoryStore

    monkeypatch.setenv("OPENAI_MODEL", "gpt-realtime-mini")
    ledger = Ledger(emu)
    config = RoomsConfig(
        namespace=TEST_NAMESPACE, store_url="memory://unused", idle_timeout=0,
        services=ServiceEndpoints(
            calls_base_url=emu.calls_base_url, calls_app_id=APP_ID,
            calls_app_secret=APP_SECRET, openai_base_url=emu.openai_base_url,
            openai_api_key=API_KEY))
    room = RoomActor("model-from-env", config, store=MemoryStore())
    await room.connect("alice", "Alice")
    await room.message("alice", json.dumps(ENABLE))
    deadline = time.monotonic() + 15
    while not settled(state := await room.state()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert state["ai"]["enabled"] is True, state["ai"]
    [call_id] = ledger.new_calls()
    assert emu.openai.calls[call_id].session["model"] == "gpt-realtime-mini"
    await room.message("alice", json.dumps({"type": "disableAi"}))
    await ledger.wait_released()


# ---------------------------------------------------------------- 4. the sideband


class Captions:
    """The ``aiTranscript`` broadcasts of a room, read from its outbox as a gateway would."""

    def __init__(self, room) -> None:
        self.room = room
        self.cursor: int | None = None
        self.lines: list[dict[str, Any]] = []

    async def start(self) -> None:
        """Start reading at the outbox's current end."""
        self.cursor = (await self.room.poll.remote(None, 0)).cursor

    async def read(self) -> None:
        """Take in what was released since the last read (waits up to 0.3 s)."""
        polled = await self.room.poll.remote(self.cursor, 0.3)
        if polled.gap:  # e.g. a restarted room: start again at its end
            await self.start()
            return
        self.cursor = polled.cursor
        for entry in polled.entries:
            message = json.loads(entry.data) if entry.data else {}
            if entry.to == "all" and message.get("type") == "aiTranscript":
                self.lines.append(message)

    async def wait(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                   timeout: float = 15.0, context: Callable[[], Any] = lambda: "") -> dict[str, Any]:
        """Wait for a line matching ``predicate`` read after this call began; on a
        timeout the error shows the newest lines and ``context()``."""
        seen = len(self.lines)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[seen:]:
                if predicate(line):
                    return line
            seen = len(self.lines)
            assert time.monotonic() < deadline, \
                f"no {what}; lines: {self.lines[-6:]}; {context()}"
            await self.read()


async def until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Wait (bounded) for ``predicate()`` to be true; return its value."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return value


def told(call) -> str:
    """What the room last told the emulated model about who is speaking: the
    instructions of its last ``session.update`` (Realtime) or its last
    ``session.instructions.append`` (Live)."""
    if call.kind == "live":
        return call.instructions_appended[-1] if call.instructions_appended else ""
    return call.session_updates[-1]["instructions"] if call.session_updates else ""


@pytest.mark.parametrize("backend", ["realtime", "live"])
async def test_the_sideband_hands_the_floor_transcribes_and_survives_a_sigkill(
        ray_session, emu: Emulators, make_room, backend: str, unique_room: str) -> None:
    ray = ray_session
    creds = (emu.calls_base_url, APP_ID, APP_SECRET)
    ledger = Ledger(emu)
    room = make_room(backend=backend)
    captions = Captions(room)
    state_of = lambda: (f"emulator: listening={call.listening} told={told(call)!r} "  # noqa: E731
                        f"heard={call.hearing.transcripts[-4:]} attaches={call.attaches}")
    async with Participant(*creds, freq_hz=440) as alice, \
            Participant(*creds, freq_hz=660) as bob:
        a_sid, a_track = await alice.publish()
        b_sid, b_track = await bob.publish()
        await room.connect.remote("alice", "Alice")
        await room.connect.remote("bob", "Bob")
        beating = [asyncio.ensure_future(heartbeats(room, conn, unique_room))
                   for conn in ("alice", "bob")]
        await captions.start()
        await send(room, "alice", ENABLE)
        state = await wait_state(room, settled)
        assert state["ai"]["enabled"] is True, state["ai"]
        [call_id] = ledger.new_calls()
        call = emu.openai.calls[call_id]

        assert call.kind == backend
        # attached; nobody holds control, so the model's input is off
        await until(lambda: call.attaches == 1 and told(call) and not call.listening,
                    "the sideband to attach and mute the input")
        assert call.clears >= 1 if backend == "realtime" else call.mutes == [True]

        # alice holds control: her tone reaches the model, her lines are hers
        await send(room, "alice", {"type": "requestAiControl",
                                   "track": {"sessionId": a_sid, "trackName": a_track}})
        line = await captions.wait(lambda l: l["speaker"] == "alice", "line of alice's")
        assert (line["name"], line["text"]) == ("Alice", "tone 440 Hz"), line
        assert "Alice" in told(call) and call.listening
        if backend == "realtime":
            assert ENABLE["instructions"] in told(call)
        else:  # a Live session keeps its startup instructions; the speaker is appended
            assert call.session["instructions"] == ENABLE["instructions"]
        await captions.wait(lambda l: l["speaker"] == "ai" and "440" in l["text"],
                            "the AI's answer")

        # control passes to bob: an update names him and the next lines are his
        await send(room, "bob", {"type": "requestAiControl",
                                 "track": {"sessionId": b_sid, "trackName": b_track}})
        await until(lambda: "Bob" in told(call), "an update naming Bob")
        line = await captions.wait(lambda l: l["speaker"] == "bob" and "660" in l["text"],
                                   "line of bob's")
        assert line["name"] == "Bob"

        # bob releases while he keeps sending 660 Hz: the model hears nothing
        await send(room, "bob", {"type": "relinquishAiControl"})
        await until(lambda: not call.listening, "the input to go off")
        heard = len(call.hearing.transcripts)
        await asyncio.sleep(3.0)
        await captions.read()
        assert len(call.hearing.transcripts) == heard, call.hearing.transcripts[heard:]
        assert bob.tone is not None and bob.tone.freq_hz == 660

        # alice again, then the room's process is SIGKILLed: it re-attaches to the same
        # call, and transcripts go on
        await send(room, "alice", {"type": "requestAiControl",
                                   "track": {"sessionId": a_sid, "trackName": a_track}})
        await captions.wait(lambda l: l["speaker"] == "alice", "line of alice's, again",
                            context=lambda: f"{state_of()} room: {ray.get(room.state.remote())['ai']}")
        old_pid = (await room.info.remote()).pid
        ray.kill(room, no_restart=False)
        await restarted(ray, room, old_pid)
        await until(lambda: call.attaches == 2, "the restarted room to attach again", 20)
        assert ledger.new_calls() == {call_id}  # the same call, not a new one
        await captions.start()
        line = await captions.wait(lambda l: l["speaker"] == "alice", "a line after the kill")
        assert line["text"] == "tone 440 Hz"
        info = await room.info.remote()
        assert info.ai.sideband == "attached" and info.ai.transcript_lines > 0

        # no line was ever attributed to someone whose microphone did not make it (the
        # model hears nobody while control changes hands)
        tones = {"alice": "tone 440 Hz", "bob": "tone 660 Hz"}
        wrong = [l for l in captions.lines if l["speaker"] in tones
                 and l["text"] != tones[l["speaker"]]]
        assert not wrong, wrong

        # the whole meeting's transcript is in the store, for members only
        found = await room.transcript.remote("Bob")
        assert found.meetingId == state["meetingId"]
        speakers = [(l["speaker"], l["text"]) for l in found.lines]
        assert ("alice", "tone 440 Hz") in speakers and ("bob", "tone 660 Hz") in speakers
        assert ("ai", "you said: tone 440 Hz") in speakers
        assert len({l["id"] for l in found.lines}) == len(found.lines)
        with pytest.raises(Exception, match="only the room's members"):
            await room.transcript.remote("Mallory")
        assert (await room.transcript.remote("Mallory", True)).lines == found.lines

        # disableAi closes the sideband and the emulator ends the session
        await send(room, "alice", {"type": "disableAi"})
        await until(lambda: not call.sidebands, "the sideband to close")
        left = await ledger.wait_released(exclude={a_sid, b_sid})
        assert left == {"sessions": [], "tracks": [], "calls": []}
        assert (await room.info.remote()).ai.sideband is None
        for task in beating:
            task.cancel()



async def heartbeats(room, conn: str, room_id: str, every: float = 1.0) -> None:
    """Send ``conn``'s heartbeat every ``every`` seconds, as a client does (the room
    removes a user silent for 15 s). A call that fails (the room restarting) is skipped,
    and the next ones go through a handle resolved again by name, as the gateway's
    ``RoomRef`` does. Seen here (Ray 2.60): after a SIGKILL of the room while its tool
    job re-ran, this loop's ``message`` calls kept failing with ``ActorUnavailableError``
    ("the actor is restarting") for ~27 s while ``pid``/``info`` calls of the same
    process reached the restarted room; so the test also reconnects after a restart, as
    a client's socket does."""
    import ray
    from actors.directory import ACTOR_PREFIX

    while True:
        try:
            await asyncio.wait_for(room.message.remote(conn, '{"type": "heartbeat"}'), 3)
        except Exception:  # noqa: BLE001 - the next one goes to the restarted room
            try:
                room = ray.get_actor(ACTOR_PREFIX + room_id, namespace=TEST_NAMESPACE)
            except Exception:  # noqa: BLE001 - not restarted yet: try again next time
                pass
        await asyncio.sleep(every)


async def restarted(ray, room, old_pid: int, timeout: float = 60.0) -> int:
    """Wait until ``room`` answers from a process other than ``old_pid``; its pid."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid = await asyncio.wait_for(room.pid.remote(), 10)
            if pid != old_pid:
                await asyncio.wait_for(room.info.remote(), 20)  # activated again
                return pid
        except (ray.exceptions.RayError, asyncio.TimeoutError):
            pass
        assert time.monotonic() < deadline, "the room actor did not restart"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("backend", ["realtime", "live"])
async def test_a_tool_call_runs_once_and_reaches_the_model_across_ten_sigkills(
        ray_session, emu: Emulators, make_room, tmp_path, unique_room: str,
        backend: str) -> None:
    """Realtime: a function call of ``note``. Live: a client delegation, which the room
    runs as its delegation tool (``note``, writing to ``notes_of(room)``)."""
    from tests.ai_tools import notes_of

    ray = ray_session
    creds = (emu.calls_base_url, APP_ID, APP_SECRET)
    room = make_room(ai_tools="tests.ai_tools:TOOLS", ai_live_delegate_tool="note",
                     backend=backend)
    notes = tmp_path / "notes" if backend == "realtime" else notes_of(unique_room)
    notes.unlink(missing_ok=True)
    async with Participant(*creds, freq_hz=440) as alice:
        a_sid, a_track = await alice.publish()
        await room.connect.remote("alice", "Alice")
        beating = asyncio.ensure_future(heartbeats(room, "alice", unique_room))
        ledger = Ledger(emu)
        await send(room, "alice", ENABLE)
        await wait_state(room, lambda s: s["ai"].get("enabled"))
        [call_id] = ledger.new_calls()
        call = emu.openai.calls[call_id]
        if backend == "realtime":
            await until(lambda: call.attaches and call.session.get("tools"),
                        "the tools declared")
            assert [t["name"] for t in call.session["tools"]] == ["note"]
        else:
            await until(lambda: call.attaches, "the sideband")
        await send(room, "alice", {"type": "requestAiControl",
                                   "track": {"sessionId": a_sid, "trackName": a_track}})
        await until(lambda: call.listening, "the input to go on")

        ran: list[str] = []
        restarts: list[float] = []
        for i in range(10):
            before = len(call.tool_calls)
            emu.openai.call_tool_on(440, "note", {"path": str(notes), "text": f"n{i}",
                                                  "seconds": 1.5})  # (Live: no arguments)
            await until(lambda: len(call.tool_calls) > before, f"tool call {i}", 15)
            tool_call_id = call.tool_calls[before]
            ran.append(tool_call_id)
            # recorded and running: SIGKILL the room's process while the tool runs
            await until(lambda: notes.exists() and f"start {tool_call_id}" in notes.read_text(),
                        f"tool call {i} to start", 15)
            pid = await room.pid.remote()
            os.kill(pid, signal.SIGKILL)
            began = time.monotonic()
            await restarted(ray, room, pid)
            restarts.append(round(time.monotonic() - began, 2))
            await room.connect.remote("alice", "Alice")  # the client's socket reconnects
            try:
                await until(lambda: any(c == tool_call_id for c, _ in call.tool_outputs),
                            f"the output of tool call {i} to reach the model", 30)
            except AssertionError as error:
                info = await room.info.remote()
                raise AssertionError(f"{error}; restarts (s): {restarts}; users {info.users}; "
                                     f"notes: {notes.read_text()!r}; attaches "
                                     f"{call.attaches}; sidebands {len(call.sidebands)}; "
                                     f"room ai {info.ai}, jobs {info.jobs}") from None

        lines = notes.read_text().splitlines()
        for i, tool_call_id in enumerate(ran):
            assert lines.count(f"start {tool_call_id}") == 1, (i, lines)
            assert lines.count(f"end {tool_call_id}") == 1, (i, lines)
            outputs = [o for c, o in call.tool_outputs if c == tool_call_id]
            assert len(outputs) == 1, (i, outputs)
            text = f"n{i}" if backend == "realtime" else ""
            assert json.loads(outputs[0]) == {"noted": text, "call": tool_call_id}
        assert call.attaches >= 11  # one attach per activation: the same call throughout
        assert ledger.new_calls() == {call_id}
        beating.cancel()
        await send(room, "alice", {"type": "disableAi"})
