"""The room's lane (actors/lane.py): a gateway replica's ``deliver`` and ``poll`` to a
room on its own node over a Unix socket.

* The protocol, in process: results and a room's refusals come back as they left;
  replies match their requests in any order; other errors cross as an error id only;
  a wrong token, a broken or hostile stream closes that connection and nothing else;
  a closed lane fails the calls waiting on it with ``LaneClosed``.
* Through a real gateway on the session's Ray: a socket's frames reach the room over
  its lane (the room counts the calls it answered there); a room offers no lane to
  another node; after the room's process is SIGKILLed, the frames sent meanwhile are
  applied once and the next activation is reached over a new lane.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import struct
import time
import uuid

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.errors import QuotaExceeded, RoomHibernating
from actors.lane import LaneClient, LaneClosed, LaneFailed, LaneServer, VERSION
from tests.gateways import dev_gateway
from tests.wsclient import open_client


async def _server() -> tuple[LaneServer, list]:
    async def deliver(call):
        if call == "refuse":
            raise QuotaExceeded("at the bound", retry_after=2.5)
        if call == "hibernating":
            raise RoomHibernating("room 'x' is hibernating")
        if call == "bug":
            raise RuntimeError("failed at /srv/secret/path.py, pid 4242")
        if call == "unpacked":
            return {1, 2}  # a set: msgpack cannot carry it
        if call == "slow":
            await asyncio.sleep(0.3)
            return "slow"
        return ["deliver", call]

    async def poll(call):
        return ["poll", call]

    server = LaneServer({"deliver": deliver, "poll": poll})
    return server, await server.start()


async def test_results_and_refusals_cross_the_lane_as_they_left():
    server, address = await _server()
    lane = await LaneClient.connect(address)
    try:
        # strings with lone surrogates and bytes survive; ops go to their handler
        assert await lane.call("deliver", ["x\ud800", b"\x00\xff", 1, None]) == [
            "deliver", ["x\ud800", b"\x00\xff", 1, None]]
        assert await lane.call("poll", [3, 25.0, "P", 3]) == ["poll", [3, 25.0, "P", 3]]
        with pytest.raises(QuotaExceeded) as refused:
            await lane.call("deliver", "refuse")
        assert refused.value.retry_after == 2.5
        with pytest.raises(RoomHibernating):
            await lane.call("deliver", "hibernating")
        with pytest.raises(LaneFailed) as failed:
            await lane.call("deliver", "bug")
        text = str(failed.value)
        assert "error id" in text and "/srv" not in text and "4242" not in text
        with pytest.raises(LaneFailed):  # a result the wire cannot carry: no hang
            await asyncio.wait_for(lane.call("deliver", "unpacked"), 5)
        # a slow call does not hold up the one after it: replies come as they finish
        slow = asyncio.ensure_future(lane.call("deliver", "slow"))
        await asyncio.sleep(0.05)
        assert await lane.call("deliver", 7) == ["deliver", 7]
        assert not slow.done()
        assert await slow == "slow"
        assert server.calls == 8
    finally:
        lane.close()
        server.close()


async def test_a_closed_lane_fails_the_calls_waiting_on_it():
    server, address = await _server()
    lane = await LaneClient.connect(address)
    waiting = asyncio.ensure_future(lane.call("deliver", "slow"))
    await asyncio.sleep(0.05)
    server.close()  # the room's activation ended (or its process died)
    with pytest.raises(LaneClosed):
        await waiting
    assert lane.closed
    with pytest.raises(LaneClosed):
        await lane.call("deliver", 1)
    with pytest.raises(LaneClosed):  # and nobody listens any more
        await LaneClient.connect(address)


async def test_a_wrong_token_or_version_gets_no_answer():
    server, (path, token) = await _server()
    try:
        for hello in ([path, b"\0" * 32], [path, token[:-1] + b"x"]):
            lane = await LaneClient.connect(hello)
            with pytest.raises(LaneClosed):
                await lane.call("deliver", 1)
        reader, writer = await asyncio.open_unix_connection(path)
        body = msgpack.packb([VERSION + 1, token])
        writer.write(struct.pack(">I", len(body)) + body)
        assert await reader.read() == b""  # closed without a word
        writer.close()
        assert server.calls == 0
        lane = await LaneClient.connect([path, token])
        assert await lane.call("deliver", 1) == ["deliver", 1]
        lane.close()
    finally:
        server.close()


def _framed(value) -> bytes:
    packed = msgpack.packb(value)
    return struct.pack(">I", len(packed)) + packed


_junk = st.one_of(
    st.binary(max_size=64),
    # request-shaped, with an op that is no op (unhashable ones too)
    st.builds(lambda op: _framed([1, op, []]),
              st.one_of(st.text(max_size=8), st.lists(st.integers(0, 9), max_size=2),
                        st.binary(max_size=4), st.dictionaries(st.text(max_size=2),
                                                               st.none(), max_size=1))),
    st.builds(lambda n: struct.pack(">I", n), st.integers(0, 2**32 - 1)),
    st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=20)
                 | st.binary(max_size=20),
                 lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=12).map(_framed))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.lists(_junk, min_size=1, max_size=3))
def test_hostile_bytes_after_the_handshake_close_that_connection_only(junk, caplog):
    caplog.clear()

    async def run() -> None:
        server, (path, token) = await _server()
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            hello = msgpack.packb([VERSION, token])
            writer.write(struct.pack(">I", len(hello)) + hello + b"".join(junk))
            writer.write_eof()
            # whatever it sent, the server answers a well-formed request or closes
            await asyncio.wait_for(reader.read(), 5)
            writer.close()
            lane = await LaneClient.connect([path, token])
            assert await lane.call("deliver", "still") == ["deliver", "still"]
            lane.close()
        finally:
            server.close()

    asyncio.run(run())
    # refused with a warning, never an error escaping the server's handler
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# ---- through the real gateway ---------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(ray_session, tmp_path_factory):
    with dev_gateway("rooms-lane-test", tmp_path_factory.mktemp("lane")) as gw:
        yield gw


def _update(conn: str, n: int) -> str:
    return json.dumps({"type": "userUpdate", "user": {
        "id": conn, "name": conn, "raisedHand": False, "speaking": False, "joined": True,
        "tracks": {"audioUnavailable": False, "audio": f"{conn}/{n}"}}})


async def _applied(client, conn: str, n: int) -> None:
    await client.wait_for(lambda m: m["type"] == "roomState" and any(
        u["id"] == conn and u["tracks"].get("audio") == f"{conn}/{n}"
        for u in m["state"]["users"]), f"{conn}'s update {n}", 20)


@pytest.mark.ray
async def test_frames_reach_a_room_on_the_replicas_node_over_its_lane(gateway, ray_session):
    from actors.directory import get_room

    room = f"lane-{uuid.uuid4().hex[:10]}"
    client = await open_client(f"{gateway['ws']}/parties/rooms/{room}?_pk=a&username=a")
    try:
        await client.wait_for(lambda m: m["type"] == "roomState", "a's seat")
        for n in range(1, 21):
            await client.ws.send(_update("a", n))
            await _applied(client, "a", n)
        handle = get_room(room, gateway["config"])
        info = await handle.info.remote()
        # 20 frames, one at a time, each its own deliver over the lane (+ the poll)
        assert info.lane_calls >= 20, info.lane_calls
        assert await handle.lane.remote("f" * 56) is None  # another node: Ray calls

        # SIGKILL the room's process while frames are on their way: each is applied
        # once, and the next activation is reached over a lane of its own
        pid = await handle.pid.remote()
        for n in range(21, 26):
            await client.ws.send(_update("a", n))
        os.kill(pid, signal.SIGKILL)
        for n in range(26, 31):
            await client.ws.send(_update("a", n))
        await _applied(client, "a", 30)
        # the lane is asked for again in the background while the frames go through
        # Ray: within 10 s (a silent user is swept at 15), frames one at a time reach
        # the new activation over it
        n, deadline = 30, time.monotonic() + 10
        while True:
            n += 1
            await client.ws.send(_update("a", n))
            await _applied(client, "a", n)
            info = await handle.info.remote()
            if info.lane_calls >= 10 or time.monotonic() > deadline:
                break
        assert info.pid != pid
        assert info.lane_calls >= 10, (info.lane_calls, n)
        assert not client.closed.is_set()
    finally:
        await client.ws.close()
