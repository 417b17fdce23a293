"""The room's turn logic on the plain :class:`rooms.Room` (no Ray, no I/O)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rooms import ALARM_INTERVAL, HEARTBEAT_TIMEOUT, AiEnableResult, Room
from rooms.room import AiControlResult, AiProgress
from rooms.state import ControlJob, EnableJob, ReleaseJob

T0 = 1_700_000_000.0


def msg(**fields) -> str:
    return json.dumps(fields)


def sent(fx, kind=None):
    return [m.message for m in fx.messages if m.message and (kind is None or m.message["type"] == kind)]


@pytest.fixture
def room() -> Room:
    ids = iter(f"meeting-{i}" for i in range(100))
    r = Room("r1", new_id=lambda: next(ids))
    r.on_connect("a", "alice", T0)
    r.on_connect("b", "bob", T0)
    return r


def test_connect_creates_user_meeting_alarm_and_broadcasts():
    r = Room("r1", new_id=lambda: "m-1")
    fx = r.on_connect("a", "alice", T0)
    assert fx.changed
    [state] = sent(fx, "roomState")
    assert fx.messages[0].to == "all"
    assert state["state"]["meetingId"] == "m-1"
    assert [u["id"] for u in state["state"]["users"]] == ["a"]
    assert state["state"]["users"][0]["name"] == "alice"
    assert r.alarm_at == T0 + ALARM_INTERVAL
    assert r.data.peakUserCount == 1


def test_reconnect_restores_user_and_keeps_peak(room):
    room.on_message("a", msg(type="userUpdate", user={
        "id": "a", "name": "x", "raisedHand": True, "speaking": False, "joined": True,
        "tracks": {"audioUnavailable": False, "audio": "s/t"}}), T0)
    room.on_close("a")
    assert "a" not in room.data.connections and "a" in room.data.users
    room.on_connect("a", "alice", T0 + 1)
    assert room.data.users["a"].raisedHand is True
    assert room.data.peakUserCount == 2
    room.on_connect("c", "carol", T0 + 2)
    assert room.data.peakUserCount == 3
    assert room.data.meetingId == "meeting-0"


def test_user_update_takes_identity_from_connection(room):
    fx = room.on_message("a", msg(type="userUpdate", user={
        "id": "b", "name": "mallory", "raisedHand": True, "speaking": True, "joined": True,
        "tracks": {"audioUnavailable": False, "audio": "sess/mic", "audioEnabled": True}}), T0)
    user = room.data.users["a"]
    assert (user.id, user.name) == ("a", "alice")
    assert room.data.users["b"].name == "bob"
    [state] = sent(fx, "roomState")
    assert {u["id"]: u["tracks"].get("audio") for u in state["state"]["users"]}["a"] == "sess/mic"


def test_direct_message_and_unknown_target(room):
    fx = room.on_message("a", msg(type="directMessage", to="b", message="hi"), T0)
    assert [(m.to, m.conn, m.message) for m in fx.messages] == [
        ("one", "b", {"type": "directMessage", "from": "alice", "message": "hi"})]
    assert not fx.changed
    fx = room.on_message("a", msg(type="directMessage", to="zed", message="hi"), T0)
    assert fx.messages[0].conn == "a" and fx.messages[0].message["type"] == "error"


def test_mute_user(room):
    user = room.data.users["b"]
    room.data.users["b"] = user.model_copy(
        update={"tracks": user.tracks.model_copy(update={"audioEnabled": True})})
    fx = room.on_message("a", msg(type="muteUser", id="b"), T0)
    assert room.data.users["b"].tracks.audioEnabled is False
    assert ("one", "b", {"type": "muteMic"}) in [(m.to, m.conn, m.message) for m in fx.messages]
    assert sent(fx, "roomState")
    fx = room.on_message("a", msg(type="muteUser", id="nobody"), T0)
    assert sent(fx, "error") and not fx.changed


def test_user_left_removes_and_closes(room):
    fx = room.on_message("b", msg(type="userLeft"), T0)
    assert "b" not in room.data.users and "b" not in room.data.connections
    kinds = [(m.to, m.conn, m.message and m.message["type"], m.close) for m in fx.messages]
    assert ("all", None, "userLeftNotification", None) in kinds
    assert ("one", "b", None, (1000, "User left")) in kinds
    assert [u["id"] for u in sent(fx, "roomState")[0]["state"]["users"]] == ["a"]


def test_heartbeat_ping_e2ee_history(room):
    fx = room.on_message("a", msg(type="heartbeat"), T0 + 5)
    assert room.data.heartbeats["a"] == T0 + 5 and fx.changed and not fx.messages
    fx = room.on_message("a", msg(type="partyserver-ping"), T0)
    assert [(m.to, m.conn, m.message) for m in fx.messages] == [("one", "a", {"type": "partyserver-pong"})]
    fx = room.on_message("a", msg(type="e2eeMlsMessage", payload="abc"), T0)
    assert [(m.to, m.conn, m.message) for m in fx.messages] == [
        ("except", "a", {"type": "e2eeMlsMessage", "payload": "abc"})]
    fx = room.on_message("a", msg(type="callsApiHistoryEntry", entry={"x": 1}, sessionId="s"), T0)
    assert not fx.messages and not fx.changed
    assert fx.log[0]["eventName"] == "clientNegotiationRecord"


def test_sweep_removes_stale_users_then_meeting_ends(room):
    room.on_message("a", msg(type="heartbeat"), T0 + 10)
    fx = room.on_alarm(T0 + HEARTBEAT_TIMEOUT + 1)
    assert list(room.data.users) == ["a"]
    notes = sent(fx, "userLeftNotification")
    assert notes == [{"type": "userLeftNotification", "id": "b"}]
    assert any(m.close == (1011, "heartbeat timeout") and m.conn == "b" for m in fx.messages)
    assert sent(fx, "roomState")
    assert room.alarm_at == T0 + HEARTBEAT_TIMEOUT + 1 + ALARM_INTERVAL
    fx = room.on_alarm(T0 + 10 + HEARTBEAT_TIMEOUT + 1)
    assert room.data.users == {} and room.data.meetingId is None
    assert room.alarm_at is None
    assert sent(fx, "userLeftNotification") == [{"type": "userLeftNotification", "id": "a"}]
    # a new connection starts a new meeting
    room.on_connect("c", "carol", T0 + 100)
    assert room.data.meetingId == "meeting-1"
    assert room.data.peakUserCount == 1


def test_ai_enable_guards_and_success(room):
    fx = room.on_message("a", msg(type="enableAi", instructions="be nice", voice="alloy"), T0)
    assert fx.jobs == [EnableJob(1, "meeting-0", "be nice", "alloy")]
    assert sent(fx, "roomState")[0]["state"]["ai"]["connectionPending"] is True
    fx = room.on_message("b", msg(type="enableAi"), T0)
    assert sent(fx, "error") and not fx.jobs and not fx.changed
    fx = room.on_message("b", msg(type="requestAiControl", track={"sessionId": "s", "trackName": "t"}), T0)
    assert sent(fx, "error") and not fx.jobs
    room.on_ai_event(AiProgress(1, {"sessionId": "S", "step": "calls tracks/new"}), T0)
    assert room.data.ai.sessionId == "S"
    fx = room.on_ai_event(AiEnableResult(1, "S", "ai-generated-voice", "0", "call-1"), T0)
    state = sent(fx, "roomState")[0]["state"]
    assert state["ai"] == {"enabled": True, "connectionPending": False}
    ai_user = [u for u in state["users"] if u["id"] == "ai"][0]
    assert ai_user["tracks"]["audio"] == "S/ai-generated-voice"
    fx = room.on_message("b", msg(type="enableAi"), T0)
    assert sent(fx, "error")[0]["error"] == "the AI is already enabled"


def enabled_room(room) -> Room:
    room.on_message("a", msg(type="enableAi"), T0)
    room.on_ai_event(AiEnableResult(room.data.ai.attempt, "S", "ai-generated-voice", "0", "call-1"), T0)
    return room


def test_ai_control_one_at_a_time_and_relinquish_by_holder_only(room):
    enabled_room(room)
    fx = room.on_message("a", msg(type="requestAiControl", track={"sessionId": "sa", "trackName": "mic"}), T0)
    [job] = fx.jobs
    assert isinstance(job, ControlJob) and job.session_id == "S" and job.track.sessionId == "sa"
    fx = room.on_message("b", msg(type="requestAiControl", track={"sessionId": "sb", "trackName": "mic"}), T0)
    assert sent(fx, "error")[0]["error"] == "another control request is under way"
    fx = room.on_ai_event(AiControlResult(job.attempt, "a"), T0)
    assert sent(fx, "roomState")[0]["state"]["ai"]["controllingUser"] == "a"
    fx = room.on_message("b", msg(type="relinquishAiControl"), T0)
    assert fx.messages == [] and room.data.ai.controllingUser == "a"  # a quiet no-op
    fx = room.on_message("a", msg(type="relenquishAiControl"), T0)
    assert room.data.ai.controllingUser is None and sent(fx, "roomState")


def test_a_turn_that_fails_after_changing_the_ai_in_place_leaves_it_as_it_was(room, monkeypatch):
    """The checkpoint keeps the AI state's fields, not a copy of the model: a defect
    after ``relinquishAiControl`` cleared ``controllingUser`` in place must put it back
    and leave no roomState. (It fails if the restore keeps only the object.)"""
    enabled_room(room)
    [job] = room.on_message("a", msg(type="requestAiControl",
                                     track={"sessionId": "sa", "trackName": "mic"}), T0).jobs
    room.on_ai_event(AiControlResult(job.attempt, "a"), T0)
    before, state = room.record(), room.room_state()

    def broken(self):
        raise RuntimeError("a defect after the AI state changed")

    monkeypatch.setattr(Room, "_broadcast_state", broken)
    fx = room.on_message("a", msg(type="relinquishAiControl"), T0)
    monkeypatch.undo()
    assert [m.message["type"] for m in fx.messages] == ["error"]
    assert room.data.ai.controllingUser == "a"
    assert room.record() == before and room.room_state() == state
    fx = room.on_message("a", msg(type="relinquishAiControl"), T0)  # and the room goes on
    assert room.data.ai.controllingUser is None and sent(fx, "roomState")


def test_relinquish_while_the_request_is_pending_cancels_it(room):
    """A quick push-to-talk tap: the release comes before Calls answered; control never
    lands on the tapper, and the next request works."""
    enabled_room(room)
    [job] = room.on_message("a", msg(type="requestAiControl",
                                     track={"sessionId": "sa", "trackName": "mic"}), T0).jobs
    fx = room.on_message("a", msg(type="relinquishAiControl"), T0)
    assert sent(fx, "error") == [] and room.data.ai.controlPending is None
    fx = room.on_ai_event(AiControlResult(job.attempt, "a"), T0)  # Calls answers late
    assert room.data.ai.controllingUser is None and fx.messages == []
    [again] = room.on_message("b", msg(type="requestAiControl",
                                       track={"sessionId": "sb", "trackName": "mic"}), T0).jobs
    room.on_ai_event(AiControlResult(again.attempt, "b"), T0)
    assert room.data.ai.controllingUser == "b"


def test_a_cancelled_request_that_lands_late_gives_the_ai_back_to_its_holder(room):
    """B taps while A holds control: B's pull lands after B released, so the AI would
    hear B's track; the room feeds A's track again, and that restore changes nothing
    else (its own result is ignored)."""
    enabled_room(room)
    a_track = {"sessionId": "sa", "trackName": "ai-a"}
    [job] = room.on_message("a", msg(type="requestAiControl", track=a_track), T0).jobs
    room.on_ai_event(AiControlResult(job.attempt, "a", track=job.track), T0)
    assert room.data.ai.controllingUser == "a"
    assert room.data.ai.controlTrack.trackName == "ai-a"
    [tap] = room.on_message("b", msg(type="requestAiControl",
                                     track={"sessionId": "sb", "trackName": "ai-b"}), T0).jobs
    room.on_message("b", msg(type="relinquishAiControl"), T0)  # released before Calls answered
    fx = room.on_ai_event(AiControlResult(tap.attempt, "b", track=tap.track), T0)
    [restore] = fx.jobs
    assert isinstance(restore, ControlJob) and restore.restore
    assert (restore.conn, restore.session_id, restore.track.trackName) == ("a", "S", "ai-a")
    assert room.data.ai.controllingUser == "a" and fx.messages == []
    fx = room.on_ai_event(AiControlResult(restore.attempt, "a", track=restore.track,
                                          restore=True), T0)
    assert fx.jobs == [] and fx.messages == [] and room.data.ai.controllingUser == "a"
    # a late pull that failed replaced nothing: no restore
    [tap] = room.on_message("b", msg(type="requestAiControl",
                                     track={"sessionId": "sb", "trackName": "ai-b"}), T0).jobs
    room.on_message("b", msg(type="relinquishAiControl"), T0)
    fx = room.on_ai_event(AiControlResult(tap.attempt, "b", error="calls tracks/new: 500"), T0)
    assert fx.jobs == []
    # the holder's own relinquish forgets the track
    room.on_message("a", msg(type="relinquishAiControl"), T0)
    assert room.data.ai.controlTrack is None


def test_room_state_lists_users_by_connection_id(room):
    for conn in ("zed", "amy", "kim"):
        room.on_connect(conn, conn, T0)
    state = room.room_state()
    ids = [u["id"] for u in state["users"]]
    assert ids == sorted(ids) and {"zed", "amy", "kim"} <= set(ids)


def test_ai_failure_is_visible_and_disable_releases(room):
    room.on_message("a", msg(type="enableAi"), T0)
    fx = room.on_ai_event(AiEnableResult(1, error="openai realtime/calls: HTTP 401 bad key"), T0)
    ai = sent(fx, "roomState")[0]["state"]["ai"]
    assert ai["enabled"] is False and ai["connectionPending"] is False
    assert ai["error"] == "enableAi failed at openai realtime/calls: HTTP 401 bad key"
    enabled_room(room)
    fx = room.on_message("b", msg(type="disableAi"), T0)
    assert fx.jobs == [ReleaseJob("S", ("0",), "call-1", reason="disableAi")]
    state = sent(fx, "roomState")[0]["state"]
    assert state["ai"]["enabled"] is False and all(u["id"] != "ai" for u in state["users"])


def test_disable_during_enable_releases_the_late_result(room):
    room.on_message("a", msg(type="enableAi"), T0)
    attempt = room.data.ai.attempt
    room.on_message("a", msg(type="disableAi"), T0)
    fx = room.on_ai_event(AiEnableResult(attempt, "S2", "ai-generated-voice", "0", "call-2"), T0)
    assert fx.jobs == [ReleaseJob("S2", ("0",), "call-2", reason="stale enable")]
    assert room.data.ai.enabled is False


def test_a_restart_counts_heartbeats_from_itself_and_a_wake_from_hibernation_does_not(room):
    """Users silent only because no activation could store their heartbeats (the room's
    process was killed, the store down) keep their seat through the next alarm after a
    restart, and are swept one timeout after it if still silent; after a wake from
    hibernation the saved heartbeats stand (any frame would have woken the room)."""
    later = T0 + HEARTBEAT_TIMEOUT + 5  # both users' heartbeats (T0) are stale by now
    restarted = Room("r1", room.data.model_copy(deep=True))
    assert restarted.on_start(later).changed
    fx = restarted.on_alarm(later + 1)
    assert sorted(restarted.data.users) == ["a", "b"] and not sent(fx, "userLeftNotification")
    restarted.on_alarm(later + HEARTBEAT_TIMEOUT + 1)
    assert restarted.data.users == {}

    room.on_hibernate(T0 + 1)
    woken = Room("r1", room.data.model_copy(deep=True))
    woken.on_start(later)
    assert woken.data.hibernatedAt is None
    fx = woken.on_alarm(later + 1)
    assert woken.data.users == {} and len(sent(fx, "userLeftNotification")) == 2


def test_restart_during_enable_clears_pending_and_releases(room):
    room.on_message("a", msg(type="enableAi"), T0)
    room.on_ai_event(AiProgress(1, {"sessionId": "S", "mid": "0", "step": "openai realtime/calls"}), T0)
    restarted = Room("r1", room.data.model_copy(deep=True))
    fx = restarted.on_start(T0 + 1)
    assert restarted.data.ai.connectionPending is False
    assert "interrupted at openai realtime/calls" in restarted.data.ai.error
    assert fx.jobs == [ReleaseJob("S", ("0",), None, reason="enable interrupted by a room restart")]


# ---- malformed input: 200 cases, each an error to its sender and no change -----------

_valid_types = ["userUpdate", "directMessage", "muteUser", "enableAi", "requestAiControl",
                "e2eeMlsMessage", "callsApiHistoryEntry"]
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                          st.text(max_size=20))

malformed = st.one_of(
    st.text(max_size=50).filter(lambda s: not _is_json(s)),                       # not JSON
    st.lists(_json_scalars, max_size=4).map(json.dumps),                           # not an object
    _json_scalars.map(json.dumps),                                                 # scalar
    st.dictionaries(st.sampled_from(["to", "id", "message"]), _json_scalars, max_size=3).map(json.dumps),  # no type
    st.text(min_size=1, max_size=30).filter(lambda t: t not in _KNOWN).map(lambda t: json.dumps({"type": t})),
    st.builds(lambda t, v: json.dumps({"type": t, "to": v, "id": v, "message": v, "user": v,
                                        "track": v, "payload": v, "instructions": v}),
              st.sampled_from(_valid_types),
              st.one_of(st.integers(), st.lists(st.integers(), max_size=2), st.booleans())),   # wrong fields
    st.sampled_from([t for t in _valid_types if t != "enableAi"]).map(lambda t: json.dumps({"type": t})),  # missing fields
    st.integers(65 * 1024, 70 * 1024).map(lambda n: json.dumps({"type": "heartbeat", "pad": "x" * n})),  # too large
)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


_KNOWN = {"userUpdate", "directMessage", "muteUser", "userLeft", "heartbeat", "partyserver-ping",
          "enableAi", "disableAi", "requestAiControl", "relinquishAiControl",
          "relenquishAiControl", "callsApiHistoryEntry", "e2eeMlsMessage"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])
@given(raw=malformed)
def test_malformed_input_gets_error_and_changes_nothing(room, raw):
    before = room.data.model_dump()
    fx = room.on_message("a", raw, T0 + 3)
    assert [(m.to, m.conn, m.message["type"]) for m in fx.messages] == [("one", "a", "error")]
    assert isinstance(fx.messages[0].message["error"], str) and len(fx.messages[0].message["error"]) < 400
    assert not fx.changed and not fx.jobs
    assert room.data.model_dump() == before


def test_rooms_package_imports_no_ray_httpx_or_aiortc():
    import subprocess
    import sys

    code = ("import sys, rooms, rooms.ai, rooms.ports; "
            "print(sorted(m for m in ('ray', 'httpx', 'aiortc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- the AI's sideband: transcripts, tool calls, an ended call ------------------------


def _enabled_room() -> Room:
    from rooms.limits import RoomLimits

    r = Room("r1", new_id=lambda: "m-1", limits=RoomLimits(transcript_lines=3,
                                                            transcript_chars=20))
    r.on_connect("alice", "Alice", 1000.0)
    r.on_message("alice", json.dumps({"type": "enableAi"}), 1000.0)
    r.on_ai_event(AiEnableResult(r.data.ai.attempt, session_id="s1", track_name="t",
                                 mid="0", call_id="call-1"), 1001.0)
    assert r.data.ai.enabled
    return r


def test_transcript_lines_are_kept_once_bounded_and_broadcast() -> None:
    from rooms.room import AiTranscript

    r = _enabled_room()
    fx = r.on_ai_event(AiTranscript("call-1", "i1", "in", "alice", "hello"), 1002.0)
    assert fx.changed and [m.message for m in fx.messages] == [
        {"type": "aiTranscript", "id": "in:i1", "speaker": "alice", "name": "Alice",
         "text": "hello"}] and fx.messages[0].to == "all"
    again = r.on_ai_event(AiTranscript("call-1", "i1", "in", "alice", "hello"), 1003.0)
    assert not again.changed and not again.messages  # a line delivered twice is kept once
    stale = r.on_ai_event(AiTranscript("call-0", "i2", "in", "alice", "old"), 1003.0)
    assert not stale.messages  # another call's line
    r.on_ai_event(AiTranscript("call-1", "o1", "out", None, "x" * 50), 1004.0)
    assert r.data.transcript[-1].speaker == "ai" and len(r.data.transcript[-1].text) == 20
    for n in range(3):
        r.on_ai_event(AiTranscript("call-1", f"n{n}", "in", None, "?"), 1005.0)
    assert [line.id for line in r.data.transcript] == ["in:n0", "in:n1", "in:n2"]
    # a late joiner gets the newest lines after its roomState
    joined = r.on_connect("bob", "Bob", 1006.0)
    assert [m.message["id"] for m in joined.messages
            if m.to == "one" and m.message["type"] == "aiTranscript"] == \
        ["in:n0", "in:n1", "in:n2"]


def test_a_tool_call_is_recorded_before_its_job_and_run_again_after_a_restart() -> None:
    from rooms.room import AiToolCall, AiToolDelivered, AiToolOutput
    from rooms.state import ToolJob

    r = _enabled_room()
    fx = r.on_ai_event(AiToolCall("call-1", "fc1", "note", '{"a": 1}'), 1002.0)
    assert fx.changed and [type(j) for j in fx.jobs] == [ToolJob]
    assert r.data.toolCalls[0].status == "running"
    assert not r.on_ai_event(AiToolCall("call-1", "fc1", "note", "{}"), 1003.0).jobs
    restarted = Room("r1", r.data.model_copy(deep=True))
    jobs = restarted.on_start(1004.0).jobs
    assert [j.call.id for j in jobs if isinstance(j, ToolJob)] == ["fc1"]
    r.on_ai_event(AiToolOutput("fc1", '{"ok": true}'), 1005.0)
    assert (r.data.toolCalls[0].status, r.data.toolCalls[0].output) == ("done", '{"ok": true}')
    assert not [j for j in Room("r1", r.data.model_copy(deep=True)).on_start(1006.0).jobs
                if isinstance(j, ToolJob)]  # done: nothing to run again
    r.on_ai_event(AiToolDelivered("fc1"), 1007.0)
    assert r.data.toolCalls[0].status == "delivered"


def test_an_ended_call_takes_the_ai_out_and_releases_its_tracks() -> None:
    from rooms.room import AiCallEnded

    r = _enabled_room()
    assert not r.on_ai_event(AiCallEnded("call-0", "gone"), 1002.0).changed  # another call
    fx = r.on_ai_event(AiCallEnded("call-1", "404 call_id_not_found"), 1002.0)
    assert not r.data.ai.enabled and "the AI left" in r.data.ai.error
    [release] = fx.jobs
    assert isinstance(release, ReleaseJob) and release.session_id == "s1" and release.call_id is None
    assert any(m.message and m.message["type"] == "roomState" for m in fx.messages)


_OPS = st.lists(st.tuples(
    st.sampled_from(["connect", "update", "close", "left", "mute", "huge", "alarm"]),
    st.sampled_from(["a", "b", "c", "d"]), st.booleans()), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_the_cached_wire_forms_equal_a_fresh_encoding_after_any_turns(ops):
    """``roomState`` and the snapshot's record reuse each unchanged user's wire form
    (:class:`rooms.room._WireCache`); after any sequence of turns (updates, refused
    turns rolled back, users leaving, muted, swept by the alarm) both equal an encoding
    made from scratch."""
    from rooms.room import _room_state_message

    from rooms.limits import RoomLimits

    # a bound that four ordinary users stay under and one large user passes
    room = Room("r1", limits=RoomLimits(max_state_bytes=1500))
    now = T0
    for op, conn, flag in ops:
        now += 1.0
        if op == "connect":
            room.on_connect(conn, f"name-{conn}", now)
        elif op == "update":
            room.on_message(conn, msg(type="userUpdate", user={
                "id": conn, "name": "x", "raisedHand": flag, "speaking": not flag,
                "joined": True, "tracks": {"audio": f"s/{now:.0f}", "audioEnabled": flag}}),
                now)
        elif op == "close":
            room.on_close(conn)
        elif op == "left":
            room.on_message(conn, msg(type="userLeft"), now)
        elif op == "mute":
            room.on_message("a", msg(type="muteUser", id=conn), now)
        elif op == "huge":  # refused (past the state's bound) and rolled back
            room.on_message(conn, msg(type="userUpdate", user={
                "id": conn, "name": "x", "raisedHand": flag, "speaking": False,
                "joined": True, "transceiverSessionId": "s" * 256,
                "tracks": {"audio": "s" * 256 + "/" + "t" * 256,
                           "video": "s" * 256 + "/" + "v" * 256}}), now)
        else:
            now += HEARTBEAT_TIMEOUT + 1.0 if flag else 0.0
            room.on_alarm(now)
        fresh = _room_state_message(room.data)["state"]
        assert room.room_state() == fresh
        assert room.record() == room.data.model_dump(mode="json", exclude_none=True)


def test_a_server_message_is_compact_json_and_survives_what_orjson_refuses() -> None:
    """encode_server_message: compact JSON with non-ASCII text as it is; a value orjson
    refuses (a lone surrogate, an integer past 64 bits) still encodes, through the
    standard library, to JSON that decodes to the same message."""
    from rooms.messages import encode_server_message, server_message

    room = Room("r1")
    room.on_connect("c1", "Zoë 会议", T0)
    fx = room.on_message("c1", msg(type="userUpdate", user={"id": "c1", "name": "x"}), T0)
    state = sent(fx, "roomState")[-1]
    text = encode_server_message(state)
    assert json.loads(text) == state
    assert "Zoë 会议" in text and ", " not in text and '": ' not in text
    for odd in ("\ud800 alone", 2**70):
        message = server_message("directMessage", **{"from": "c1", "message": odd})
        assert json.loads(encode_server_message(message)) == message
