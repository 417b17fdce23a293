"""The AI sideband without Ray: the OpenAI emulator's sideband and its hearing, the
sideband bridge (:mod:`bridges.openai_sideband`) and the room's :class:`rooms.sideband.Sideband`
runner, over real WebSockets on loopback with real aiortc media.

A call is made directly against the emulator (create-realtime-call with an aiortc offer
that sends a tone), then the sideband attaches to it as a room would.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time

import jsonschema
import pytest
import yaml
from aiortc import RTCSessionDescription

from bridges.contracts import LIVE_CONTRACT, SIDEBAND_CONTRACT
from bridges.local import Emulators, start_emulators
from bridges.local.ice import loopback_peer_connection
from bridges.local.media import ToneTrack
from bridges.openai import RealtimeClient
from rooms.ports import BridgeError, CallEnded, SessionDescription
from bridges.openai_sideband import control_events
from rooms.room import AiCallEnded, AiTranscript
from rooms.sideband import Sideband, SidebandState, session_control
from rooms.sideband_wire import AiSaid, ToolCalled, UserSaid

pytestmark = pytest.mark.media

API_KEY = "sk-sideband-test"


@pytest.fixture(scope="module")
def emu() -> Emulators:
    emulators = start_emulators(api_key=API_KEY)
    yield emulators
    emulators.stop()


@functools.cache
def contract(live: bool = False) -> dict:
    return yaml.safe_load((LIVE_CONTRACT if live else SIDEBAND_CONTRACT).read_text())


def check_event(event: dict, side: str, live: bool = False) -> None:
    """Validate ``event`` against the sideband contract's (or with ``live`` the Live
    contract's) ``side`` (``client_events`` or ``server_events``) schema of its type
    (AssertionError if it breaks it)."""
    declared = contract(live)[side].get(event["type"])
    assert declared is not None, f"{event['type']} is not in the contract's {side}"
    jsonschema.validate(event, declared["schema"])


def test_every_event_the_room_sends_or_reads_is_in_the_contract() -> None:
    from rooms.live_events import LIVE_SERVER_EVENT_TYPES
    from rooms.realtime_events import SERVER_EVENT_TYPES

    assert SERVER_EVENT_TYPES <= set(contract()["server_events"])
    assert LIVE_SERVER_EVENT_TYPES <= set(contract(True)["server_events"])
    from rooms.realtime_events import ConversationItemCreate, ResponseCreate
    from tests.ai_tools import TOOLS
    from rooms.tools import declarations

    tools = declarations({t.name: t for t in TOOLS})
    for speaker in ("Alice", None):
        for event in control_events(session_control("Be brief.", speaker, tools=tools)):
            check_event(event.wire(), "client_events")
    check_event(ConversationItemCreate.tool_output("call_1", '{"ok": true}').wire(),
                "client_events")
    check_event(ResponseCreate().wire(), "client_events")


class Caller:
    """An aiortc peer in a call with the emulated model, sending a tone (a Realtime
    call, or with ``live`` a Live API session)."""

    def __init__(self, emu: Emulators, freq_hz: float = 440.0, live: bool = False) -> None:
        from bridges.openai_live import LiveClient

        self.emu = emu
        self.tone = ToneTrack(freq_hz)
        self.pc = loopback_peer_connection()
        cls = LiveClient if live else RealtimeClient
        self.client = cls(API_KEY, base_url=emu.openai_base_url, timeout=5)
        self.call_id = ""

    async def __aenter__(self) -> "Caller":
        self.pc.addTransceiver(self.tone, direction="sendrecv")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        call = await self.client.create_call(
            SessionDescription(sdp=self.pc.localDescription.sdp, type="offer"),
            model="gpt-realtime", instructions="Say what you hear.")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=call.answer.sdp,
                                                                 type="answer"))
        self.call_id = call.call_id
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pc.close()
        await self.client.aclose()

    @property
    def call(self):
        return self.emu.openai.calls[self.call_id]


async def until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def next_of(link, kind, timeout: float = 8.0):
    """The next event of type ``kind`` on ``link``."""
    async def read():
        while True:
            event = await link.receive()
            if isinstance(event, kind):
                return event
    return await asyncio.wait_for(read(), timeout)


async def test_the_emulator_transcribes_what_it_hears_only_while_listening(emu) -> None:
    async with Caller(emu, 440) as caller:
        link = await caller.client.attach(caller.call_id)
        try:
            await link.send_control(session_control("Say what you hear.", "Alice"), None)
            heard = await next_of(link, UserSaid)
            assert heard.text == "tone 440 Hz"
            said = await next_of(link, AiSaid)
            assert said.text == "you said: tone 440 Hz"
            update = caller.call.session_updates[-1]
            assert "Alice" in update["instructions"]
            from rooms.realtime_events import SERVER_EVENT_TYPES
            sent = [e for e in caller.call.events_sent if e["type"] in SERVER_EVENT_TYPES]
            assert {e["type"] for e in sent} >= {
                "session.created", "session.updated", "input_audio_buffer.speech_started",
                "input_audio_buffer.committed", "response.output_audio_transcript.done",
                "conversation.item.input_audio_transcription.completed"}
            for event in sent:
                check_event(event, "server_events")
            assert update["audio"]["input"]["transcription"]["model"]
            # the tone changes: so does what it hears
            caller.tone.freq_hz = 660
            await until(lambda: "tone 660 Hz" in caller.call.hearing.transcripts, 8,
                        "a 660 Hz transcript")
            # nobody holds control: the session's input is off and it hears nothing
            await link.send_control(session_control("Say what you hear.", None), None)
            await until(lambda: not caller.call.listening and caller.call.clears == 2, 5,
                        "the input to go off and the buffer to be cleared")
            count = len(caller.call.hearing.transcripts)
            echoed = caller.call.echoes[0].frames_heard
            await asyncio.sleep(2.5)
            assert len(caller.call.hearing.transcripts) == count
            assert caller.call.echoes[0].frames_heard > echoed  # audio still arrives
        finally:
            await link.close()


async def test_a_sideband_to_an_unknown_or_ended_call_is_refused(emu) -> None:
    client = RealtimeClient(API_KEY, base_url=emu.openai_base_url, timeout=5)
    with pytest.raises(CallEnded) as refused:
        await client.attach("rtc_does_not_exist")
    assert refused.value.status == 404 and not refused.value.retryable
    wrong = RealtimeClient("sk-wrong", base_url=emu.openai_base_url, timeout=5)
    with pytest.raises(BridgeError) as denied:
        await wrong.attach("rtc_does_not_exist")
    assert denied.value.status == 401 and not denied.value.retryable
    assert "sk-wrong" not in str(denied.value)
    async with Caller(emu) as caller:
        link = await client.attach(caller.call_id)
        await client.hangup(caller.call_id)
        with pytest.raises(BridgeError):  # the service closes the sideband of an ended call
            async with asyncio.timeout(5):
                while True:
                    await link.receive()
        with pytest.raises(CallEnded):
            await client.attach(caller.call_id)
    await client.aclose()
    await wrong.aclose()


async def test_the_runner_attributes_lines_steers_and_attaches_again(emu) -> None:
    lines: list[AiTranscript] = []
    ended: list[AiCallEnded] = []
    holder = {"conn": "alice"}

    async def on_line(line: AiTranscript) -> None:
        lines.append(line)

    async def on_ended(event: AiCallEnded) -> None:
        ended.append(event)

    async with Caller(emu, 440) as caller:
        sideband = Sideband(caller.call_id, caller.client, speaker=lambda: holder["conn"],
                            on_line=on_line, on_ended=on_ended, backoff=0.05, max_backoff=0.5)
        sideband.steer(session_control(None, "Alice"))
        sideband.start()
        await until(lambda: any(l.direction == "in" for l in lines), 10, "a line")
        first = next(l for l in lines if l.direction == "in")
        assert (first.speaker, first.text) == ("alice", "tone 440 Hz")
        assert any(l.direction == "out" and l.text == "you said: tone 440 Hz" for l in lines)
        assert sideband.state is SidebandState.ATTACHED and sideband.attaches == 1

        # control passes to bob, who sends 660 Hz: an update names him, lines are his
        holder["conn"] = "bob"
        caller.tone.freq_hz = 660
        sideband.steer(session_control(None, "Bob"))
        await until(lambda: "Bob" in caller.call.session_updates[-1]["instructions"], 5,
                    "an update naming Bob")
        await until(lambda: any(l.speaker == "bob" and l.text == "tone 660 Hz" for l in lines),
                    10, "a line of bob's")

        # the link drops while the call goes on: it attaches again and re-sends the control
        updates = len(caller.call.session_updates)
        dropped = emu.openai_service.run_coroutine(emu.openai.drop_sidebands(caller.call_id))
        assert dropped == 1
        await until(lambda: sideband.attaches == 2 and sideband.state is SidebandState.ATTACHED,
                    10, "a second attach")
        await until(lambda: len(caller.call.session_updates) > updates, 5, "the control again")
        assert "Bob" in caller.call.session_updates[-1]["instructions"]

        # the call ends: the runner reports it once and stops
        await caller.client.hangup(caller.call_id)
        await until(lambda: ended, 10, "the end to be reported")
        assert len(ended) == 1 and ended[0].call_id == caller.call_id
        assert sideband.state is SidebandState.CLOSED
        await sideband.close()


async def test_the_emulator_calls_a_tool_when_told_and_takes_its_output(emu) -> None:
    from rooms.tools import declarations
    from tests.ai_tools import TOOLS

    tools = declarations({t.name: t for t in TOOLS})
    async with Caller(emu, 440) as caller:
        link = await caller.client.attach(caller.call_id)
        try:
            await link.send_control(session_control(None, "Alice", tools=tools), None)
            await until(lambda: caller.call.session.get("tools"), 5, "the tools declared")
            emu.openai.call_tool_on(440, "note", {"path": "/nowhere", "text": "hi"})
            called = await next_of(link, ToolCalled)
            assert called.name == "note" and json.loads(called.arguments)["text"] == "hi"
            check_event(caller.call.events_sent[-1], "server_events")
            await link.send_tool_output(called.call_id, '{"ok": 1}')
            said = await next_of(link, AiSaid)
            while "tool answered" not in said.text:
                said = await next_of(link, AiSaid)
            assert caller.call.tool_outputs == [(called.call_id, '{"ok": 1}')]
        finally:
            await link.close()



async def test_a_live_session_is_steered_by_instructions_appended_and_mute(emu) -> None:
    from bridges.openai_live import LiveClient

    async with Caller(emu, 440, live=True) as caller:
        assert caller.call_id.startswith("live_") and caller.call.kind == "live"
        link = await caller.client.attach(caller.call_id)
        try:
            alice = session_control("Say what you hear.", "Alice")
            await link.send_control(alice, None)
            heard = await next_of(link, UserSaid)
            assert heard.text == "tone 440 Hz" and heard.item_id.startswith("live-in-")
            said = await next_of(link, AiSaid)
            assert said.text == "you said: tone 440 Hz"
            assert caller.call.mutes == [False]
            assert "Alice" in caller.call.instructions_appended[-1]
            nobody = session_control("Say what you hear.", None)
            await link.send_control(nobody, alice)
            await until(lambda: caller.call.mutes == [False, True], 5, "the mute")
            assert "Nobody" in caller.call.instructions_appended[-1]
            count = len(caller.call.hearing.transcripts)
            await asyncio.sleep(2.5)
            assert len(caller.call.hearing.transcripts) == count
            await link.send_control(nobody, nobody)  # nothing changed: nothing sent
            await asyncio.sleep(0.3)
            assert caller.call.mutes == [False, True]
            # a client delegation: a tool call with no name, answered as commentary
            from rooms.sideband_wire import DELEGATION

            await link.send_control(alice, nobody)
            emu.openai.call_tool_on(440, "note", {})
            delegated = await next_of(link, ToolCalled)
            assert delegated.name == DELEGATION and delegated.call_id == caller.call.tool_calls[-1]
            await link.send_tool_output(delegated.call_id, '{"ok": 1}')
            await until(lambda: caller.call.tool_outputs == [(delegated.call_id, '{"ok": 1}')],
                        5, "the commentary")
            for event in caller.call.events_received:
                check_event(event, "client_events", live=True)
            for event in caller.call.events_sent:
                check_event(event, "server_events", live=True)
            await caller.client.hangup(caller.call_id)
            with pytest.raises(CallEnded):
                async with asyncio.timeout(5):
                    while True:
                        await link.receive()
        finally:
            await link.close()
        client = LiveClient(API_KEY, base_url=emu.openai_base_url, timeout=5)
        with pytest.raises(CallEnded):
            await client.attach(caller.call_id)
        with pytest.raises(CallEnded):
            await client.attach("live_unknown")
        await client.aclose()


async def test_a_room_with_its_ai_enabled_neither_hibernates_nor_is_shed(emu) -> None:
    """A room actor (in this process) with the AI enabled: its idle watch waits, a
    hibernate is refused and its activity says "AI" (so the slot bound never sheds it);
    once the AI is disabled it hibernates."""
    from actors.config import RoomsConfig
    from actors.room_actor import Lifecycle, RoomActor
    from bridges.calls import CallsClient
    from storage.memory import MemoryStore

    calls = CallsClient(emu.app_id, emu.app_secret, base_url=emu.calls_base_url, timeout=5)
    openai = RealtimeClient(API_KEY, base_url=emu.openai_base_url, timeout=5)
    actor = RoomActor("ai-stays", RoomsConfig(idle_timeout=0.3), store=MemoryStore(),
                      services=(calls, openai))
    await actor.connect("alice", "Alice")
    await actor.message("alice", '{"type": "enableAi"}')
    await until(lambda: actor.room.data.ai.enabled, 15, "the AI enabled")
    call = emu.openai.calls[actor.room.data.ai.callId]
    await until(lambda: call.attaches == 1, 10, "the sideband")
    await asyncio.sleep(1.0)  # three idle timeouts
    assert actor.lifecycle is Lifecycle.ACTIVE
    assert actor.activity().ai is True
    assert await actor.hibernate() is False
    await actor.message("alice", '{"type": "disableAi"}')
    await until(lambda: not call.sidebands and call.hung_up, 10, "the sideband closed, the call ended")
    assert actor.activity().ai is False
    await until(lambda: actor.lifecycle is not Lifecycle.ACTIVE, 10, "hibernation")
    await calls.aclose()
    await openai.aclose()
