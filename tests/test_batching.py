"""The gateway's batched path: ``RoomActor.deliver``, claims, and ``RoomChannel.accept``.

Three layers, fastest first:

1. a plain :class:`actors.room_actor.RoomActor` (no Ray) with a real store: one
   ``deliver`` call handles a batch of frames as separate turns, shares one save
   (group commit), returns the released entries, claims them for its poller (whose
   ``poll`` then does not wake for them), and refuses to run on a hibernating room;
2. :meth:`actors.gateway.RoomChannel.accept` fed poll and deliver results by hand, with
   recording sockets: every entry goes out once, in sequence order, and entries after a
   hole wait in ``held`` while a deliver is in flight (the one path that resends
   ``roomState`` runs against a real room actor on Ray);
3. the real gateway (one replica, Ray Serve on loopback) with real WebSocket clients:
   200 pipelined frames come back as 200 replies in order with fewer ``deliver`` calls
   than frames, and a socket's close reaches the room after its queued frames.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.gateways import dev_gateway, kill_replica
from tests.wsclient import Client
from tests.wsclient import open_client as open_ws

from actors.config import RoomsConfig
from actors.gateway import GatewayLimits, RoomChannel, RoomRef
from actors.room_actor import RoomActor, RoomHibernating
from actors.wire import Delivery, OutboxEntry
from storage import MemoryStore, decode_snapshot

APP = "rooms-batching-test"


# ---- helpers -----------------------------------------------------------------------------


def update(conn: str, k: int, *, enabled: bool = True) -> str:
    """A ``userUpdate`` frame of ``conn`` whose audio track ``batch/<k>`` marks it."""
    return json.dumps({"type": "userUpdate", "user": {
        "id": conn, "name": conn, "tracks": {"audio": f"batch/{k}", "audioEnabled": enabled}}})


def marker(message: dict[str, Any], conn: str) -> int | None:
    """``k`` of ``conn``'s ``batch/<k>`` audio track in a ``roomState`` message, else None."""
    if message.get("type") != "roomState":
        return None
    for user in message["state"]["users"]:
        if user["id"] == conn:
            audio = (user.get("tracks") or {}).get("audio") or ""
            if audio.startswith("batch/"):
                return int(audio.split("/", 1)[1])
    return None


def audio_enabled(message: dict[str, Any], conn: str) -> bool | None:
    """``conn``'s ``tracks.audioEnabled`` in a ``roomState`` message (None if absent)."""
    for user in message.get("state", {}).get("users", []):
        if user["id"] == conn:
            return (user.get("tracks") or {}).get("audioEnabled")
    return None


def stop_timers(actor: RoomActor) -> None:
    """Cancel a plain actor's alarm timer (the room arms one 15 s after a connect)."""
    if actor._alarm_task is not None:
        actor._alarm_task.cancel()


async def connected_actor(config: RoomsConfig, store=None,
                          conns: tuple[str, ...] = ("one", "two")) -> RoomActor:
    """A plain room actor with ``conns`` connected (each under its own name)."""
    actor = RoomActor(f"batch-{uuid.uuid4().hex[:8]}", config, store=store)
    for conn in conns:
        await actor.connect(conn, conn)
    return actor


# ---- 1. RoomActor.deliver, no Ray ------------------------------------------------------


async def test_deliver_handles_a_batch_in_order_with_one_group_commit(sqlite_url):
    """50 frames of 2 connections: 50 replies in one result, consecutive seqs, in frame
    order, and one or two snapshot saves instead of 50."""
    actor = await connected_actor(RoomsConfig(idle_timeout=0, store_url=sqlite_url))
    try:
        before = await actor.info()
        cursor = before.seq
        frames = [("one" if k % 2 == 0 else "two", update("one" if k % 2 == 0 else "two", k))
                  for k in range(50)]
        result = await actor.deliver(frames, cursor)
        after = await actor.info()

        assert result.gap is False and result.hibernating is False
        entries = result.entries
        assert [e.seq for e in entries] == list(range(cursor + 1, cursor + 51))
        assert result.cursor == cursor + 50 == after.seq
        messages = [json.loads(e.data) for e in entries]
        assert all(e.to == "all" for e in entries)
        # reply k carries frame k's marker for its sender
        assert [marker(m, frames[k][0]) for k, m in enumerate(messages)] == list(range(50))
        assert after.turns - before.turns == 50
        assert 1 <= after.saves - before.saves <= 2, (before.saves, after.saves)
        # the durable snapshot holds the last frame of each connection
        last = json.loads(entries[-1].data)["state"]
        assert {u["id"]: u["tracks"]["audio"] for u in last["users"]} == {
            "one": "batch/48", "two": "batch/49"}

        # cursor=None: handled, but nothing returned but the cursor
        quiet = await actor.deliver([("one", update("one", 50))], None)
        assert quiet == Delivery(cursor=cursor + 51, epoch=actor.epoch)
    finally:
        stop_timers(actor)


async def test_a_bad_frame_in_a_batch_gets_one_error_to_its_sender_and_the_rest_go_on():
    """A malformed frame mid-batch: exactly one ``error`` entry to its sender alone; the
    frames after it are still handled."""
    actor = await connected_actor(RoomsConfig(idle_timeout=0), MemoryStore())
    try:
        cursor = (await actor.info()).seq
        frames = [("one", update("one", 0)), ("two", update("two", 1)),
                  ("two", "{this is not json"), ("one", update("one", 3)),
                  ("two", update("two", 4))]
        result = await actor.deliver(frames, cursor, "P")
        entries = result.entries
        assert [e.seq for e in entries] == list(range(cursor + 1, cursor + 6))
        errors = [e for e in entries if json.loads(e.data)["type"] == "error"]
        assert len(errors) == 1
        [error] = errors
        assert error.to == "one" and error.conn == "two"
        assert entries.index(error) == 2  # in its frame's place
        states = [json.loads(e.data) for e in entries if e is not error]
        assert [m["type"] for m in states] == ["roomState"] * 4
        assert marker(states[-2], "one") == 3 and marker(states[-1], "two") == 4
        assert (await actor.state())["users"][1]["tracks"]["audio"] == "batch/4"
    finally:
        stop_timers(actor)


async def test_deliver_claims_its_entries_from_its_own_pollers_poll():
    """A poll of poller P does not wake for what P's deliver returns; Q's poll does and
    gets the same entries; a turn not from a deliver wakes P with only the new ones."""
    actor = await connected_actor(RoomsConfig(idle_timeout=0, poll_timeout=5), MemoryStore())
    try:
        cursor = (await actor.info()).seq
        p_poll = asyncio.ensure_future(actor.poll(cursor, 5.0, "P"))
        q_poll = asyncio.ensure_future(actor.poll(cursor, 5.0, "Q"))
        await asyncio.sleep(0.05)
        assert not p_poll.done() and not q_poll.done()

        frames = [("one", update("one", k)) for k in range(5)]
        delivered = await actor.deliver(frames, cursor, "P")
        assert [e.seq for e in delivered.entries] == list(range(cursor + 1, cursor + 6))
        q_result = await asyncio.wait_for(q_poll, 2.0)
        assert q_result.entries == delivered.entries
        assert q_result.cursor == delivered.cursor and not q_result.gap
        await asyncio.sleep(0.2)
        assert not p_poll.done(), "P's poll woke for entries its own deliver returned"

        await actor.connect("three", "three")  # a turn that is not a deliver
        p_result = await asyncio.wait_for(p_poll, 2.0)
        [entry] = p_result.entries
        assert entry.seq == delivered.cursor + 1 == p_result.cursor
        assert p_result.gap is False
        state = json.loads(entry.data)["state"]
        assert {u["id"] for u in state["users"]} == {"one", "two", "three"}
    finally:
        stop_timers(actor)


async def test_deliver_on_a_hibernating_room_raises_and_handles_no_frame():
    """A deliver that finds the room hibernating (before or inside the input gate)
    raises RoomHibernating and leaves state, outbox and snapshot untouched."""
    store = MemoryStore()
    actor = await connected_actor(RoomsConfig(idle_timeout=0), store)
    room_id = actor.room_id
    seq = (await actor.info()).seq
    turns = actor._stats.turns

    # hibernate() takes the gate while a deliver is waiting for it
    await actor._gate.acquire()
    hibernating = asyncio.ensure_future(actor.hibernate())
    await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(actor.deliver([("one", update("one", 1))], seq, "P"))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    actor._gate.release()
    with pytest.raises(RoomHibernating):
        await waiting
    assert await hibernating is True
    # and a deliver after the fact is refused before it reaches the gate
    with pytest.raises(RoomHibernating):
        await actor.deliver([("two", update("two", 2))], seq, "P")

    assert actor._stats.turns == turns
    assert actor._next_seq - 1 == seq and actor.outbox.released == seq
    saved = decode_snapshot(room_id, await store.load(room_id))
    assert saved.seq == seq
    assert all(u.get("tracks", {}).get("audio") is None
               for u in saved.state["room"]["users"].values())
    # the next activation sees the same room: no frame of either batch was handled
    again = RoomActor(room_id, RoomsConfig(idle_timeout=0), store=store)
    try:
        assert (await again.info()).seq == seq
        assert all(u["tracks"].get("audio") is None for u in (await again.state())["users"])
    finally:
        stop_timers(again)


async def test_the_batch_crosses_as_msgpack_and_its_result_pickles_whole():
    """What ``deliver`` takes and returns crosses Ray cheaply and unchanged: the frames
    and the whole call (``deliver_call``) in the form Ray packs with msgpack alone (its
    rule: exact types, no tuples, which it would pickle); a Delivery (entries with a
    close, gap, epoch) as ``wire()``'s lists through msgpack, and as itself through
    Ray's cloudpickle and plain pickle, to an equal value; a room reads the frames'
    form, and ``deliver_wire`` and ``poll_wire`` answer what ``deliver`` and ``poll`` do,
    as lists."""
    import pickle

    import msgpack
    from ray import cloudpickle

    from actors.wire import Frame, deliver_call, frames_wire, poll_call

    frames = [Frame("one", update("one", 1), "s-1", 1),
              Frame("one", b'{"type":"x"}', "s-1", 2, "00-ab-cd-01")]
    wire = frames_wire(frames)
    packed = msgpack.packb(wire, use_bin_type=True, strict_types=True)  # raises if not
    assert [Frame(*f) for f in msgpack.unpackb(packed)] == frames
    call = msgpack.packb(deliver_call(frames, 7, "P", None), use_bin_type=True,
                         strict_types=True)
    assert msgpack.unpackb(call) == [wire, 7, "P", None]

    result = Delivery(9, (OutboxEntry(8, "one", "one", '{"type":"x"}', (4000, "bye")),
                          OutboxEntry(9, "except", "two", None, None)),
                      gap=True, hibernating=True, epoch=3)
    for dumps in (cloudpickle.dumps, pickle.dumps):
        again = pickle.loads(dumps(result, protocol=5))
        assert again == result and type(again.entries[0]) is OutboxEntry
    lists = msgpack.packb(result.wire(), use_bin_type=True, strict_types=True)
    again = Delivery.from_wire(msgpack.unpackb(lists))
    assert again == result and type(again.entries[0]) is OutboxEntry

    store = MemoryStore()
    actor = await connected_actor(RoomsConfig(idle_timeout=0), store)
    try:
        seq = (await actor.info()).seq
        got = await actor.deliver(frames_wire([Frame("one", update("one", 7), "s-1", 1)]),
                                  seq, "P")
        assert [marker(json.loads(e.data), "one") for e in got.entries] == [7]
        lists = await actor.deliver_wire(deliver_call(
            [Frame("one", update("one", 8), "s-1", 2)], got.cursor, "P", None))
        again = Delivery.from_wire(lists)
        assert [marker(json.loads(e.data), "one") for e in again.entries] == [8]
        assert again.cursor == got.cursor + 1 and again.epoch == got.epoch
        # the long-poll's wire: one list in, lists out, the same Delivery as poll's
        call = poll_call(seq, 0.0, "Q", None)
        assert msgpack.unpackb(msgpack.packb(call, use_bin_type=True,
                                             strict_types=True)) == [seq, 0.0, "Q", None]
        polled = Delivery.from_wire(msgpack.unpackb(msgpack.packb(
            await actor.poll_wire(call), use_bin_type=True, strict_types=True)))
        assert polled == await actor.poll(seq, 0.0, "Q", None)
        assert [marker(json.loads(e.data), "one") for e in polled.entries] == [7, 8]
    finally:
        stop_timers(actor)


# ---- 2. RoomChannel.accept, no Ray --------------------------------------------------------


class RecordingSocket:
    """A stand-in for the gateway's ``ClientSocket``: records what the channel sends it."""

    def __init__(self, conn: str) -> None:
        self.conn = conn
        self.sent: list[str] = []
        self.seqs: list[int] = []
        self.closed: list[tuple[int, str]] = []

    def send(self, text: str, seq: int | None = None) -> None:
        """Record one text frame (``seq``: its outbox sequence number, if any)."""
        self.sent.append(text)
        if seq is not None:
            self.seqs.append(seq)

    def close(self, code: int, reason: str = "") -> None:
        """Record a close ``(code, reason)``."""
        self.closed.append((code, reason))


def entry(seq: int, to: str = "all", conn: str | None = None,
          close: tuple[int, str] | None = None) -> OutboxEntry:
    """An outbox entry as the room returns it; its data names its seq."""
    return OutboxEntry(seq=seq, to=to, conn=conn,
                       data=json.dumps({"type": "partyserver-pong", "n": seq}), close=close)


def result(entries: list[OutboxEntry], cursor: int | None = None,
           gap: bool = False) -> Delivery:
    """A poll/deliver result holding ``entries``."""
    if cursor is None:
        cursor = entries[-1].seq if entries else 0
    return Delivery(cursor=cursor, entries=tuple(entries), gap=gap)


def seqs(sock: RecordingSocket) -> list[int]:
    """The ``n`` of every entry frame ``sock`` received (roomState frames as 0)."""
    return [json.loads(t).get("n", 0) for t in sock.sent]


def make_channel(config: RoomsConfig | None = None, room_id: str = "unit",
                 cursor: int | None = 5) -> tuple[RoomChannel, dict[str, RecordingSocket]]:
    """A channel (no poll task started) with recording sockets ``a`` and ``b``."""
    limits = GatewayLimits()
    channel = RoomChannel(RoomRef(room_id, config or RoomsConfig(), limits), limits,
                          on_empty=lambda c: None, replica="t")
    socks = {c: RecordingSocket(c) for c in ("a", "b")}
    for conn, sock in socks.items():
        channel.sockets[conn] = {sock}
    channel.merge.cursor = cursor
    return channel, socks


async def test_accept_holds_entries_after_a_hole_until_the_deliver_fills_it():
    """Poll brings 7, 8 while a deliver is in flight (cursor 5): held; the deliver's
    6, 7, 8 then go out once each, in order; repeats deliver nothing."""
    channel, socks = make_channel()
    await channel.accept(result([entry(7), entry(8)]), delivering=True)
    assert socks["a"].sent == [] and socks["b"].sent == []
    assert sorted(channel.merge.held) == [7, 8] and channel.cursor == 5

    await channel.accept(result([entry(6), entry(7), entry(8)]), delivering=False)
    assert seqs(socks["a"]) == [6, 7, 8] and seqs(socks["b"]) == [6, 7, 8]
    assert channel.merge.held == {} and channel.cursor == 8

    # the same results again (a late poll, a repeated deliver): nothing twice
    await channel.accept(result([entry(6), entry(7), entry(8)]))
    await channel.accept(result([entry(7), entry(8)]))
    await channel.accept(result([], cursor=8))
    assert seqs(socks["a"]) == [6, 7, 8] and seqs(socks["b"]) == [6, 7, 8]
    assert channel.counters()["entries"] == 3 and channel.counters()["gaps"] == 0


async def test_a_gap_in_a_stale_deliver_result_sends_nothing_twice():
    """A deliver sent at cursor 5 comes back with a gap (its older entries left the
    outbox) after polls took the channel to 10: ``roomState`` is resent, and only 11
    and 12 go out, not 7 to 10 again. A gap with no entries behind the channel (the
    room's outbox was lost) makes the channel follow the room's end."""
    channel, socks = make_channel(cursor=10)
    resent: list[int] = []

    async def send_state() -> None:  # the room's state call needs Ray: count it here
        resent.append(channel.cursor)

    channel._send_state = send_state
    await channel.accept(result([entry(seq) for seq in range(7, 13)], gap=True))
    assert seqs(socks["a"]) == [11, 12] and channel.cursor == 12 and len(resent) == 1

    await channel.accept(result([], cursor=3, gap=True))
    assert channel.cursor == 3 and len(resent) == 2
    await channel.accept(result([entry(4)]))
    assert seqs(socks["a"]) == [11, 12, 4]


async def test_accept_merges_interleaved_results_and_addresses_each_entry():
    """Overlapping poll and deliver results, in any order, come out as one in-order
    stream; ``one``/``except`` entries and closes reach only their sockets."""
    channel, socks = make_channel(cursor=10)
    await channel.accept(result([entry(11), entry(12, "one", "a")]),  # no hole: at once
                         delivering=True)
    await channel.accept(result([entry(14, "except", "a"), entry(15)]),  # hole at 13: held
                         delivering=True)
    assert seqs(socks["a"]) == [11, 12] and seqs(socks["b"]) == [11]
    await channel.accept(result([entry(12, "one", "a"), entry(13, "one", "b", [1000, "bye"]),
                                 entry(14, "except", "a")]), delivering=True)
    await channel.accept(result([entry(15), entry(16)]), delivering=False)
    assert seqs(socks["a"]) == [11, 12, 15, 16]
    assert seqs(socks["b"]) == [11, 13, 14, 15, 16]
    assert socks["b"].closed == [(1000, "bye")] and socks["a"].closed == []
    assert channel.cursor == 16 and channel.merge.held == {}

    # an empty result moves the cursor on (the room's cursor is never behind ours)
    await channel.accept(result([], cursor=20))
    assert channel.cursor == 20
    # a channel without a cursor takes the first result's cursor and delivers nothing
    fresh, fresh_socks = make_channel(cursor=None)
    await fresh.accept(result([entry(3)], cursor=3))
    assert fresh.cursor == 3 and fresh_socks["a"].sent == []


# ---- the real gateway, on Ray -----------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(ray_session, tmp_path_factory):
    """One single-replica gateway (dev auth, generous rate limits) for the module;
    yields ``{"url", "ws", "config"}``."""
    with dev_gateway(APP, tmp_path_factory.mktemp("batching")) as gw:
        yield gw


async def open_client(base: str, room: str, conn: str) -> Client:
    """Connect ``conn`` (dev auth, user name = conn) to ``room`` through the gateway."""
    return await open_ws(f"{base}/parties/rooms/{room}?_pk={conn}&username={conn}")


@pytest.mark.ray
async def test_pipelined_frames_come_back_in_order_in_fewer_deliver_calls(gateway):
    """200 frames sent without waiting: 200 matching replies in send order, each once,
    and the replica made fewer ``deliver`` calls than it got frames."""
    room, n = f"batch-{uuid.uuid4().hex[:10]}", 200
    client = await open_client(gateway["ws"], room, "p")
    try:
        await client.wait_index(lambda m: m["type"] == "roomState", "the connect roomState")
        for k in range(n):
            await client.ws.send(update("p", k))
        await client.wait_index(lambda m: marker(m, "p") == n - 1, "the last reply", 30)
        await asyncio.sleep(0.2)  # anything duplicated would arrive now
        seen = [marker(m, "p") for m in client.messages if marker(m, "p") is not None]
        assert seen == list(range(n))
        assert not [m for m in client.messages if m["type"] == "error"]

        async with httpx.AsyncClient(timeout=10) as http:
            health = (await http.get(f"{gateway['url']}/healthz")).json()
        counters = health["channels"]
        assert counters["frames"] >= n, counters
        assert 1 <= counters["batches"] < counters["frames"], counters
    finally:
        await client.ws.close()


@pytest.mark.ray
async def test_a_close_reaches_the_room_after_the_sockets_queued_frames(gateway):
    """Socket ``a`` sends 20 updates and a self-mute, then closes at once: ``b`` sees
    every update, in order, and the mute (which the room only does while ``a`` is
    connected) before the room lets ``a`` go."""
    from actors.directory import get_room

    room = f"batch-{uuid.uuid4().hex[:10]}"
    a = await open_client(gateway["ws"], room, "a")
    b = await open_client(gateway["ws"], room, "b")
    try:
        await a.wait_index(lambda m: m["type"] == "roomState", "a's connect")
        await b.wait_index(lambda m: m["type"] == "roomState" and len(m["state"]["users"]) == 2,
                         "both users")
        for k in range(20):
            await a.ws.send(update("a", k))
        await a.ws.send(json.dumps({"type": "muteUser", "id": "a"}))
        await a.ws.close()

        muted = await b.wait_index(
            lambda m: marker(m, "a") == 19 and audio_enabled(m, "a") is False,
            "a's self-mute after its last update")
        states = [m for m in b.messages if marker(m, "a") is not None]
        assert [marker(m, "a") for m in states] == list(range(20)) + [19]
        assert [audio_enabled(m, "a") for m in states] == [True] * 20 + [False]

        handle = get_room(room, gateway["config"])
        deadline = time.monotonic() + 15
        while (await handle.info.remote()).connections != 1:
            assert time.monotonic() < deadline, "the room never heard of a's close"
            await asyncio.sleep(0.05)
        await b.ws.send(json.dumps({"type": "directMessage", "to": "a", "message": "hi"}))
        left = await b.wait_index(lambda m: m["type"] == "error" and "'a'" in m["error"],
                                "the room refusing a message to the gone socket")
        assert muted < left
    finally:
        await asyncio.gather(a.ws.close(), b.ws.close(), return_exceptions=True)


@pytest.mark.ray
async def test_a_hole_no_deliver_can_fill_resends_room_state(gateway):
    """With no deliver in flight, entries after a hole are a gap: the channel sends the
    room's real ``roomState`` (from the room actor), then the held entries, in order."""
    from actors.directory import get_room

    room = f"batch-{uuid.uuid4().hex[:10]}"
    config = gateway["config"]
    handle = get_room(room, config)
    await handle.connect.remote("x", "xena")
    channel, socks = make_channel(config, room, cursor=5)
    await channel.accept(result([entry(7), entry(8)]))
    for sock in socks.values():
        state, *rest = [json.loads(t) for t in sock.sent]
        assert state["type"] == "roomState"
        assert [u["id"] for u in state["state"]["users"]] == ["x"]
        assert [m["n"] for m in rest] == [7, 8]
    assert channel.cursor == 8 and channel.merge.held == {} and channel.counters()["gaps"] == 1


# ---- reconnects: replay of owed messages, stale closes ---------------------------------


def _data(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(e.data) for e in entries if e.data is not None]


async def test_a_reconnect_after_its_replica_died_gets_the_messages_it_was_owed():
    """``a``'s replica (poller P1) dies without a close; ``b`` sends ``a`` a direct
    message meanwhile. When ``a`` reconnects through another poller, the direct message
    is sent to it again, before the connect's ``roomState``; ``b`` gets no replay."""
    actor = RoomActor(f"batch-{uuid.uuid4().hex[:8]}", RoomsConfig(idle_timeout=0),
                      store=MemoryStore())
    try:
        await actor.connect("a", "a", "P1", "s-a1")
        await actor.connect("b", "b", "P2", "s-b1")
        cursor = (await actor.poll(None, 0, "P1")).cursor
        await actor.poll(cursor, 0, "P1")  # P1 has delivered up to here, then dies
        await actor.message("b", json.dumps({"type": "directMessage", "to": "a",
                                             "message": "while you were away"}))
        before = (await actor.poll(None, 0)).cursor
        await actor.connect("a", "a", "P3", "s-a2")
        after = _data((await actor.poll(before, 0)).entries)
        owed = [m for m in after if m["type"] == "directMessage"]
        assert owed == [{"type": "directMessage", "from": "b", "message": "while you were away"}]
        kinds = [m["type"] for m in after]
        assert kinds.index("directMessage") < kinds.index("roomState")
        entries = (await actor.poll(before, 0)).entries
        dm = next(e for e in entries if json.loads(e.data)["type"] == "directMessage")
        assert dm.to == "one" and dm.conn == "a"

        # a plain reconnect through the same poller replays nothing
        before = (await actor.poll(None, 0)).cursor
        await actor.connect("b", "b", "P2", "s-b2")
        assert "directMessage" not in [m["type"] for m in
                                       _data((await actor.poll(before, 0)).entries)]
    finally:
        stop_timers(actor)


async def test_a_message_queued_but_not_written_when_its_replica_died_is_owed():
    """Issue 19: P1 polled the direct message to ``a`` (its cursor is past it) but had
    only queued it to ``a``'s socket when it was SIGKILLed: its write watermark, sent
    with its next poll, is below the message. ``a``'s reconnect through P3 gets it.
    Before the watermark the room counted from P1's cursor and owed ``a`` nothing."""
    actor = RoomActor(f"batch-{uuid.uuid4().hex[:8]}", RoomsConfig(idle_timeout=0),
                      store=MemoryStore())
    try:
        await actor.connect("a", "a", "P1", "s-a1")
        await actor.connect("b", "b", "P2", "s-b1")
        written = (await actor.poll(None, 0, "P1")).cursor
        await actor.message("b", json.dumps({"type": "directMessage", "to": "a",
                                             "message": "queued, never written"}))
        polled = await actor.poll(written, 0, "P1", written)  # P1 fans it out...
        assert any(json.loads(e.data)["type"] == "directMessage" for e in polled.entries)
        # ...and queues it to a's socket; its next poll reports the cursor past it with
        # the watermark still before it; then P1 is killed
        await actor.poll(polled.cursor, 0, "P1", written)
        before = (await actor.poll(None, 0)).cursor
        await actor.connect("a", "a", "P3", "s-a2")
        owed = [m for m in _data((await actor.poll(before, 0)).entries)
                if m["type"] == "directMessage"]
        assert [m["message"] for m in owed] == ["queued, never written"]
    finally:
        stop_timers(actor)


class _SlowWebSocket:
    """A stand-in for an accepted WebSocket whose writes wait until released."""

    application_state = None

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.release = asyncio.Event()

    async def send_text(self, text: str) -> None:
        await self.release.wait()
        self.sent.append(text)


async def test_a_channel_reports_as_written_only_what_its_sockets_wrote():
    """``RoomChannel.written``: the cursor when every queue is empty, else one below the
    oldest entry still queued on an open socket (held while PENDING counts too)."""
    from actors.gateway.channel import RoomChannel
    from actors.gateway.client_socket import ClientSocket
    from actors.wire import OutboxEntry

    channel = RoomChannel.__new__(RoomChannel)  # only the fan-out and the watermark
    channel.sockets, channel.stats = {}, {"entries": 0}
    channel.merge = type("Merge", (), {"cursor": 4})()
    slow, fast = _SlowWebSocket(), _SlowWebSocket()
    fast.release.set()
    a, b = ClientSocket("a", slow, 16), ClientSocket("b", fast, 16)
    try:
        channel.sockets = {"a": {a}, "b": {b}}
        assert channel.written == 4
        a.admit(), b.admit()
        for seq in (5, 6):
            channel._fan_out(OutboxEntry(seq=seq, data=json.dumps({"n": seq}), to="all"))
        channel.merge.cursor = 6
        await asyncio.sleep(0.05)
        assert b.oldest_unwritten is None and a.oldest_unwritten == 5
        assert channel.written == 4  # a's socket has not written 5 and 6
        slow.release.set()
        await asyncio.sleep(0.05)
        assert slow.sent == ['{"n": 5}', '{"n": 6}'] and a.sent_seq == 6
        assert channel.written == 6
        pending = ClientSocket("c", _SlowWebSocket(), 16)  # not admitted yet: held
        channel.sockets["c"] = {pending}
        channel._fan_out(OutboxEntry(seq=7, data="{}", to="all"))
        channel.merge.cursor = 7
        await asyncio.sleep(0.05)
        assert a.sent_seq == b.sent_seq == 7
        assert channel.written == 6  # c holds 7, not written
        pending.close(1000)  # never admitted: it owes nothing
        assert channel.written == 7
    finally:
        for sock in (a, b):
            sock.stop()


async def test_a_close_reports_what_its_socket_had_and_a_stale_close_changes_nothing():
    """A close that names an older socket of ``a`` (its reconnect overtook it) leaves
    ``a`` connected; the close of the current socket removes it, and the next
    reconnect gets the non-``roomState`` messages after the close's ``delivered``."""
    actor = RoomActor(f"batch-{uuid.uuid4().hex[:8]}", RoomsConfig(idle_timeout=0),
                      store=MemoryStore())
    try:
        await actor.connect("a", "a", "P1", "s1")
        await actor.connect("b", "b", "P1", "s-b")
        await actor.connect("a", "a", "P1", "s2")  # the reconnect overtakes s1's close
        await actor.close("a", 1006, "", "s1", None)
        assert (await actor.info()).connections == 2  # s2 stays
        delivered = (await actor.poll(None, 0)).cursor
        # b's message to a, released before s2 closes, that s2 never got
        await actor.message("b", json.dumps({"type": "directMessage", "to": "a",
                                             "message": "late"}))
        await actor.close("a", 1001, "going away", "s2", delivered)
        assert (await actor.info()).connections == 1
        before = (await actor.poll(None, 0)).cursor
        await actor.connect("a", "a", "P1", "s3")
        replayed = [m for m in _data((await actor.poll(before, 0)).entries)
                    if m["type"] == "directMessage"]
        assert [m["message"] for m in replayed] == ["late"]
    finally:
        stop_timers(actor)


@pytest.mark.ray
async def test_a_replica_restart_loses_no_message_its_client_was_owed(gateway):
    """The replica serving ``a`` is killed (Serve starts another). While ``a`` is away,
    ``b`` sends it a direct message; ``a`` reconnects with the same ``_pk``
    and receives it, then the current ``roomState``."""
    room = f"batch-{uuid.uuid4().hex[:10]}"
    a = await open_client(gateway["ws"], room, "a")
    try:
        await a.wait_index(lambda m: m["type"] == "roomState", "a's connect")
        replica = a.ws.response.headers["x-rooms-replica"]
        kill_replica(replica)
        await asyncio.wait_for(a.task, 30)  # the socket dropped with its replica
        from actors.directory import get_room

        handle = get_room(room, gateway["config"])  # b talks to the room directly
        await handle.connect.remote("b", "b")
        await handle.message.remote("b", json.dumps(
            {"type": "directMessage", "to": "a", "message": "owed"}))
        deadline = time.monotonic() + 60
        while True:  # until Serve's new replica takes the reconnect
            try:
                again = await open_client(gateway["ws"], room, "a")
                break
            except (OSError, Exception) as error:  # noqa: BLE001 - refused or 502/503
                assert time.monotonic() < deadline, f"no replica took the reconnect: {error}"
                await asyncio.sleep(0.5)
        try:
            dm = await again.wait_index(
                lambda m: m["type"] == "directMessage" and m["message"] == "owed",
                "the owed direct message")
            state = await again.wait_index(lambda m: m["type"] == "roomState", "roomState")
            assert dm < state
            assert again.ws.response.headers["x-rooms-replica"] != replica
        finally:
            await again.ws.close()
    finally:
        await a.ws.close()


async def test_a_room_refuses_a_connection_past_its_limit_but_not_a_reconnect():
    """``max_connections=2``: a third connection id is refused with ``RoomFull`` and the
    room is unchanged; a reconnect of a connected id is still accepted."""
    from actors.room_actor import RoomFull

    actor = RoomActor(f"batch-{uuid.uuid4().hex[:8]}",
                      RoomsConfig(idle_timeout=0, max_connections=2), store=MemoryStore())
    try:
        await actor.connect("a", "a", "P", "s-a")
        await actor.connect("b", "b", "P", "s-b")
        seq = (await actor.poll(None, 0)).cursor
        with pytest.raises(RoomFull, match="full"):
            await actor.connect("c", "c", "P", "s-c")
        assert (await actor.info()).connections == 2
        assert (await actor.poll(None, 0)).cursor == seq  # nothing was sent
        await actor.connect("a", "a", "P", "s-a2")
        assert (await actor.info()).connections == 2
    finally:
        stop_timers(actor)


@pytest.mark.ray
async def test_the_room_limit_closes_the_next_socket_with_1013(gateway):
    """A room created with ``max_connections=2``: the third socket through the gateway
    is closed with 1013 ``room full``; the two others go on."""
    from actors.directory import get_room

    room = f"batch-{uuid.uuid4().hex[:10]}"
    small = gateway["config"].model_copy(update={"max_connections": 2})
    await get_room(room, small).state.remote()  # the room exists with the small limit
    a = await open_client(gateway["ws"], room, "a")
    b = await open_client(gateway["ws"], room, "b")
    try:
        await b.wait_index(lambda m: m["type"] == "roomState" and len(m["state"]["users"]) == 2,
                         "both users")
        c = await open_client(gateway["ws"], room, "c")
        await asyncio.wait_for(c.task, 20)
        assert c.ws.close_code == 1013 and c.ws.close_reason.startswith("room full (")
        assert not [m for m in c.messages if m["type"] == "roomState"]
        await a.ws.send(json.dumps({"type": "partyserver-ping"}))
        await a.wait_index(lambda m: m["type"] == "partyserver-pong", "the room going on")
    finally:
        await asyncio.gather(a.ws.close(), b.ws.close(), return_exceptions=True)
