"""The room's own defences, without Ray: bounds, rollback, idempotency keys per
identity, and a snapshot that cannot be saved. Each of these failed before the
hostile-input work (issue 18): see the note on each test."""

from __future__ import annotations

import json

import pytest

from actors.applied import AppliedFrames
from actors.config import RoomsConfig
from actors.errors import MessageRefused, QuotaExceeded, SnapshotRefused
from actors.room_actor import Lifecycle, RoomActor
from rooms import Room
from rooms.limits import RoomLimits
from rooms.messages import UserUpdate
from storage import MemoryStore

T0 = 1_700_000_000.0


def msg(**fields) -> str:
    return json.dumps(fields)


def errors(fx) -> list[dict]:
    return [m.message for m in fx.messages if m.message and m.message["type"] == "error"]


def update(conn: str, **user) -> str:
    return msg(type="userUpdate", user={"id": conn, "name": conn, **user})


def test_a_user_whose_sockets_closed_is_not_kept_alive_by_http_heartbeats():
    # Before: a heartbeat sent over HTTP with ?conn= kept a closed socket's user for ever.
    room = Room("r")
    room.on_connect("a", "alice", T0)
    room.on_connect("b", "bob", T0)
    room.on_close("a")
    room.on_message("a", msg(type="heartbeat"), T0 + 10)  # over HTTP, ?conn=a
    room.on_message("b", msg(type="heartbeat"), T0 + 10)
    fx = room.on_message("a", update("a", raisedHand=True), T0 + 11)
    assert "no open socket" in errors(fx)[0]["error"]
    assert not room.data.users["a"].raisedHand
    room.on_alarm(T0 + 16)
    assert "a" not in room.data.users and "b" in room.data.users


def test_an_http_sender_keeps_its_own_user_with_heartbeats():
    room = Room("r")
    room.claim("http:carol", "carol")
    fx = room.on_message("http:carol", update("x", raisedHand=True), T0)
    assert not errors(fx) and room.data.users["http:carol"].raisedHand
    room.on_message("http:carol", msg(type="heartbeat"), T0 + 10)
    room.on_connect("b", "bob", T0 + 10)
    room.on_alarm(T0 + 16)
    assert "http:carol" in room.data.users


def test_a_turn_past_the_state_cap_is_refused_and_rolled_back():
    # Before: no cap; one identity grew a room's RoomState to 1.2 MB.
    room = Room("r", limits=RoomLimits(max_state_bytes=2500, max_users_per_identity=99,
                                       max_seats_per_identity=99))
    big = {"transceiverSessionId": "s" * 256, "tracks": {"audio": "a" * 513}}
    for conn in ("a", "b"):
        room.on_connect(conn, conn, T0)
        assert not errors(room.on_message(conn, update(conn, **big), T0))
    room.on_connect("c", "c", T0)
    before = room.room_state()
    fx = room.on_message("c", update("c", **big), T0)
    assert "limit of 2500 bytes" in errors(fx)[0]["error"]
    assert [m.message["type"] for m in fx.messages] == ["error"]  # no roomState broadcast
    assert room.room_state() == before and room.state_bytes() <= 2500


def test_field_caps_refuse_a_60000_character_transceiver_session_id():
    # Before: a 60,000-character transceiverSessionId was stored.
    room = Room("r")
    room.on_connect("a", "alice", T0)
    fx = room.on_message("a", update("a", transceiverSessionId="s" * 60_000), T0)
    assert "transceiverSessionId" in errors(fx)[0]["error"]
    assert room.data.users["a"].transceiverSessionId is None


def test_an_identitys_seats_and_users_are_capped():
    # Before: one identity held 40 seats of a room.
    room = Room("r", limits=RoomLimits(max_users_per_identity=3, max_seats_per_identity=2))
    room.on_connect("m1", "mallory", T0)
    room.on_connect("m2", "mallory", T0)
    assert "connections of this room" in room.admit("m3", "mallory")
    assert room.admit("m1", "mallory") is None  # a reconnect takes no other seat
    assert room.admit("o1", "oscar") is None
    room.on_close("m2")
    room.on_connect("m3", "mallory", T0)  # three users, two seats
    room.on_close("m3")
    assert "users in this room" in room.admit("m4", "mallory")
    room.claim("http:mallory", "mallory")  # the http: user counts too
    fx = room.on_message("http:mallory", update("x"), T0)
    assert "users in this room" in errors(fx)[0]["error"]
    assert "http:mallory" not in room.data.users


def test_a_handler_that_raises_is_answered_rolled_back_and_logged(monkeypatch):
    room = Room("r", new_error_id=lambda: "e1")
    room.on_connect("a", "alice", T0)
    state = room.room_state()

    def broken(self, conn, message, now):
        self.data.users.pop(conn)
        self._broadcast_state()
        raise KeyError("a defect")

    monkeypatch.setitem(Room._handlers, UserUpdate, broken)
    fx = room.on_message("a", update("a"), T0)
    assert [m.message for m in fx.messages] == [
        {"type": "error", "error": "the room could not handle the message", "errorId": "e1"}]
    assert room.room_state() == state
    record = next(r for r in fx.log if r["eventName"] == "clientError")
    assert record["errorId"] == "e1" and "KeyError" in record["cause"]
    assert "Traceback" in record["traceback"]


def test_idempotency_keys_of_one_identity_cannot_push_out_anothers():
    # Before: one shared table of 1,024 keys: another identity's 1,100 keyed requests
    # evicted alice's key, and her retry was applied twice.
    applied = AppliedFrames()
    assert applied.apply_key("alice", "http:alice\nK")
    for i in range(1100):
        applied.apply_key("mallory", f"http:mallory\n{i}")
    assert not applied.apply_key("alice", "http:alice\nK")
    restored = AppliedFrames(applied.record())
    assert not restored.apply_key("alice", "http:alice\nK")


async def test_a_retried_keyed_message_is_applied_once_whatever_others_send():
    actor = RoomActor("r", RoomsConfig(idle_timeout=0), store=MemoryStore())
    await actor.connect("bob", "bob")
    dm = msg(type="directMessage", to="bob", message="once")
    await actor.message("http:alice", dm, "alice", "K")
    for i in range(1100):
        await actor.message("http:mallory", msg(type="heartbeat"), "mallory", str(i))
    await actor.message("http:alice", dm, "alice", "K")
    delivered = [e for e in actor.outbox.since(0).entries
                 if e.data and json.loads(e.data).get("message") == "once"]
    assert len(delivered) == 1


async def test_an_http_message_the_room_refuses_raises_with_the_rooms_error_id():
    actor = RoomActor("r", RoomsConfig(idle_timeout=0), store=MemoryStore())
    with pytest.raises(MessageRefused) as refused:
        await actor.message("http:alice", msg(type="muteUser", id="nobody"), "alice",
                            refusals=True)
    assert "no connection" in str(refused.value) and len(refused.value.error_id) == 12


async def test_connect_past_the_seat_cap_raises_quota_exceeded():
    actor = RoomActor("r", RoomsConfig(idle_timeout=0, max_seats_per_identity=1),
                      store=MemoryStore())
    await actor.connect("m1", "mallory")
    with pytest.raises(QuotaExceeded):
        await actor.connect("m2", "mallory")
    await actor.connect("o1", "oscar")


async def test_a_snapshot_that_cannot_be_saved_is_refused_and_the_room_goes_on():
    # Before: any failure to encode the snapshot made the room's process exit, and the
    # gateway's re-send of the same frame killed it again (a crash loop).
    store = MemoryStore()
    actor = RoomActor("r", RoomsConfig(idle_timeout=0, max_snapshot_bytes=4096,
                                       max_state_bytes=10**6), store=store)
    await actor.connect("a", "alice")
    before = await actor.state()
    with pytest.raises(SnapshotRefused) as refused:
        await actor.message("a", update("a", transceiverSessionId="s" * 256,
                                        tracks={"audio": "a" * 513, "video": "v" * 513,
                                                "screenshare": "x" * 513}))
    assert "error id" in str(refused.value)
    assert actor.lifecycle is Lifecycle.ACTIVE
    assert await actor.state() == before
    await actor.message("a", msg(type="heartbeat"))  # the room goes on
    assert (await actor.info()).lifecycle == "active"
