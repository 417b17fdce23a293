"""Lifecycle webhooks (issue 22): the events a turn produces, their signature, and the
sender's retries against a real receiver on loopback that is down for a while. The
whole path (a scripted meeting through the gateway, the room SIGKILLed while the
receiver is down) is ``test_a_meeting_reaches_the_receiver_at_least_once``."""

from __future__ import annotations

import asyncio
import json
import time

from actors.webhooks import (EVENT_TYPES, Facts, WebhookSender, WebhookSettings, derive,
                             new_event, sign, verify)
from tests.webhook_receiver import Receiver


def _facts(users=(), ai=False, controller=None, meeting=None, peak=0) -> Facts:
    return Facts(users=dict(users), ai_enabled=ai, ai_controller=controller,
                 meeting=meeting, peak=peak)


def test_a_turn_yields_its_lifecycle_events_in_order():
    empty = _facts()
    joined = _facts({"a": "alice"}, meeting="m1", peak=1)
    assert derive(empty, joined, [{"eventName": "startingMeeting"}], None, 10.0) == [
        ("meeting_started", {"meetingId": "m1"}),
        ("participant_joined", {"conn": "a", "name": "alice"})]
    with_ai = _facts({"a": "alice"}, ai=True, controller="a", meeting="m1", peak=1)
    assert derive(joined, with_ai, [], 5.0, 10.0) == [
        ("ai_enabled", {}), ("ai_control_changed", {"conn": "a"})]
    failed = derive(with_ai, joined, [{"eventName": "aiError", "error": "calls: 503"}],
                    5.0, 10.0)
    assert failed == [("ai_control_changed", {"conn": None}),
                      ("ai_error", {"error": "calls: 503"}), ("ai_disabled", {})]
    ended = derive(joined, _facts(meeting=None), [{"eventName": "endingMeeting"}], 4.0, 10.0)
    assert ended == [("participant_left", {"conn": "a", "name": "alice"}),
                     ("meeting_ended", {"meetingId": "m1", "peakUsers": 1, "durationS": 6.0})]
    assert {kind for kind, _ in ended + failed} <= set(EVENT_TYPES)


def test_the_signature_verifies_and_nothing_else_does():
    body = b'{"id":"x"}'
    header = sign("s3cret", body)
    assert verify("s3cret", body, header)
    assert not verify("other", body, header)
    assert not verify("s3cret", body + b" ", header)
    assert not verify("s3cret", body, sign("s3cret", body, int(time.time()) - 3600))
    assert not verify("s3cret", body, "garbage")


async def test_the_sender_retries_a_receiver_that_is_down_and_keeps_order():
    receiver = Receiver()  # down at first: connections are refused
    delivered = []
    sender = WebhookSender(WebhookSettings(urls=receiver.url, secret="k", retry_max_s=0.3),
                           on_delivered=lambda: delivered.append(1))
    events = [new_event("r1", n, "participant_joined", {"conn": f"c{n}"}, time.time())
              for n in range(1, 6)]
    sender.add(events[:3])
    await asyncio.sleep(1.0)
    assert receiver.events() == [] and sender.failures >= 2 and len(sender.pending) == 3
    receiver.start()
    try:
        sender.add(events[3:])
        deadline = time.monotonic() + 10
        # The receiver records an event before its answer reaches the sender, so the
        # sender's count of deliveries can trail the receiver's by one: wait for both.
        while len(receiver.events()) < 5 or len(delivered) < 5:
            assert time.monotonic() < deadline, (receiver.events(), len(delivered))
            await asyncio.sleep(0.05)
        assert [e["seq"] for e in receiver.events()] == [1, 2, 3, 4, 5]
        assert all(verify("k", r["body"], r["signature"]) for r in receiver.received)
        assert len(delivered) == 5 and sender.pending == []
        assert json.loads(receiver.received[0]["body"])["id"] == events[0]["id"]
    finally:
        receiver.stop()


# ---- the whole path: a real room actor, real media for the AI, a real receiver ----------

async def test_a_meeting_reaches_the_receiver_at_least_once(ray_session, sqlite_url,
                                                            unique_room):
    """A scripted meeting (two users, the AI enabled, control taken and released, the
    AI disabled, both leave, the meeting ends): the receiver gets every event once,
    signed, in order. Then a second meeting while the receiver is down for 10 s, with
    the room's process SIGKILLed between a join and the end: every event of it still
    arrives, at least once."""
    import os
    import signal

    from actors.config import RoomsConfig, ServiceEndpoints
    from actors.directory import get_room
    from actors.webhooks import WebhookSettings
    from bridges.local import start_emulators
    from bridges.local.participant import Participant

    app_id, app_secret, api_key = "hooks-app", "hooks-app-secret", "sk-hooks"
    emu = start_emulators(app_id=app_id, app_secret=app_secret, api_key=api_key)
    receiver = Receiver().start()
    config = RoomsConfig(
        namespace="rooms-test", store_url=sqlite_url, idle_timeout=0,
        services=ServiceEndpoints(calls_base_url=emu.calls_base_url, calls_app_id=app_id,
                                  calls_app_secret=app_secret,
                                  openai_base_url=emu.openai_base_url,
                                  openai_api_key=api_key),
        webhooks=WebhookSettings(urls=receiver.url, secret="hook-secret", retry_max_s=0.5))
    room = get_room(unique_room, config)

    async def send(conn: str, message: dict) -> None:
        await room.message.remote(conn, json.dumps(message))

    async def state() -> dict:
        return await room.state.remote()

    async def until(what: str, check, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            found = await check()
            if found:
                return found
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.1)

    def kinds(events: list[dict]) -> list[str]:
        return [e["type"] for e in events]

    try:
        async with Participant(emu.calls_base_url, app_id, app_secret, freq_hz=440) as alice:
            a_sid, a_track = await alice.publish()
            await room.connect.remote("alice", "Alice")
            await room.connect.remote("bob", "Bob")
            await send("alice", {"type": "enableAi", "instructions": "Listen."})
            await until("the AI in the call", lambda: _ai(state, lambda ai: ai.get("enabled")))
            await send("alice", {"type": "requestAiControl",
                                 "track": {"sessionId": a_sid, "trackName": a_track}})
            await until("alice in control", lambda: _ai(
                state, lambda ai: ai.get("controllingUser") == "alice"))
            await send("alice", {"type": "relinquishAiControl"})
            await send("alice", {"type": "disableAi"})
            await until("the AI gone", lambda: _ai(state, lambda ai: not ai.get("enabled")))
        await send("alice", {"type": "userLeft"})
        await send("bob", {"type": "userLeft"})
        await room.alarm.remote(force=True)  # the sweep ends the empty meeting

        first = ["meeting_started", "participant_joined", "participant_joined",
                 "ai_enabled", "ai_control_changed", "ai_control_changed", "ai_disabled",
                 "participant_left", "participant_left", "meeting_ended"]

        async def all_first():
            got = receiver.events()
            return got if kinds(got) == first else None

        got = await until(f"the first meeting's events; got {kinds(receiver.events())}",
                          all_first)
        assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
        assert len({e["id"] for e in got}) == len(got) and {e["room"] for e in got} == \
            {unique_room}
        assert all(verify("hook-secret", r["body"], r["signature"])
                   for r in receiver.received)
        assert got[4]["data"] == {"conn": "alice"} and got[5]["data"] == {"conn": None}
        assert got[-1]["data"]["peakUsers"] == 2 and got[-1]["data"]["durationS"] > 0

        # the receiver down for 10 s, the room SIGKILLed in the middle of a meeting
        receiver.stop()
        down_at = time.monotonic()
        await room.connect.remote("carol", "Carol")
        pid = await room.pid.remote()
        os.kill(pid, signal.SIGKILL)
        await until("the room again", lambda: _answers(room))
        await send("carol", {"type": "userLeft"})
        await room.alarm.remote(force=True)
        await asyncio.sleep(max(0.0, 10.0 - (time.monotonic() - down_at)))
        receiver.start()
        second = {"meeting_started", "participant_joined", "participant_left",
                  "meeting_ended"}

        async def all_second():
            later = receiver.events()[len(first):]
            return later if second <= set(kinds(later)) else None

        later = await until(f"the second meeting's events; got "
                            f"{kinds(receiver.events()[len(first):])}", all_second, 60)
        joined = [e for e in later if e["type"] == "participant_joined"]
        assert joined and all(e["data"]["conn"] == "carol" for e in joined)
        by_id: dict[str, dict] = {}
        for event in later:  # duplicates (sent again after the restart) are identical
            assert by_id.setdefault(event["id"], event) == event
        assert [e["seq"] for e in by_id.values()] == sorted(e["seq"] for e in by_id.values())
    finally:
        receiver.stop()
        ray_session.kill(room, no_restart=True)
        emu.stop()


async def _ai(state, check) -> bool:
    return bool(check((await state())["ai"]))


async def _answers(room) -> bool:
    try:
        await asyncio.wait_for(room.state.remote(), 2.0)
        return True
    except Exception:  # noqa: BLE001 - restarting
        return False
