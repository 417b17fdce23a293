"""One hostile client against a real gateway cannot break a room or touch another user.

Black-box through a development-mode gateway (Serve, HAProxy, real sockets, a real room
actor with a SQLite store) on the session's Ray. Hypothesis draws hostile frames
(:mod:`tests.adversarial.hostile`: lone surrogates, control characters in ids, values
over their caps, deep nesting, wrong types, non-messages, for every message type's
fields); mallory sends them over her socket, interleaved with the victim's pings, and
the same bodies over HTTP. For every frame: mallory gets an ``error`` (over HTTP a 4xx,
never 500), every victim ping is answered, the room's actor is never restarted (its
epoch: each activation claims a new one), the victim's user is unchanged, and no error
a client sees holds ``ray::``, ``pid=``, a traceback, a path or an escape code.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import ray
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.wire import RoomInfo
from actors.directory import actor_name
from tests.gateways import dev_gateway
from tests.wsclient import Client, open_client

from .hostile import hostile_frames, leaks

pytestmark = pytest.mark.ray

ROOM = "hostile-room"


@pytest.fixture(scope="module")
def gateway(ray_session, tmp_path_factory):
    with dev_gateway("rooms-hostile", tmp_path_factory.mktemp("hostile")) as gw:
        yield gw


def _ws(gateway, conn: str, name: str) -> str:
    return f"{gateway['ws']}/parties/rooms/{ROOM}?_pk={conn}&username={name}"


def _room_facts(gateway) -> "RoomInfo":
    handle = ray.get_actor(actor_name(ROOM), namespace=gateway["config"].namespace)
    return ray.get(handle.info.remote(), timeout=30)


def _victim(state: dict) -> dict:
    return next(u for u in state["users"] if u["id"] == "victim")


async def _count(client: Client, kind: str) -> int:
    return sum(1 for m in client.messages if m["type"] == kind)


async def _wait_count(client: Client, kind: str, n: int, what: str, timeout=15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await _count(client, kind) < n:
        assert asyncio.get_running_loop().time() < deadline, \
            f"timed out waiting for {what}; last: {client.messages[-3:]}"
        await asyncio.sleep(0.01)


async def _attack(gateway, frames: list[tuple[str, bool]]) -> list[str]:
    """Send ``frames`` (text, as binary?) as mallory over her socket and HTTP, each
    followed by a victim ping; return every error text mallory saw."""
    victim = await open_client(_ws(gateway, "victim", "victim"))
    mallory = await open_client(_ws(gateway, "mallory", "mallory"))
    seen: list[str] = []
    try:
        await victim.wait_for(lambda m: m["type"] == "roomState", "victim's roomState")
        await mallory.wait_for(lambda m: m["type"] == "roomState", "mallory's roomState")
        async with httpx.AsyncClient(base_url=gateway["url"], timeout=30) as http:
            for text, binary in frames:
                errors = await _count(mallory, "error")
                pongs = await _count(victim, "partyserver-pong")
                await mallory.ws.send(text.encode("utf-8", "surrogatepass") if binary else text)
                victim.send({"type": "partyserver-ping"})
                await _wait_count(mallory, "error", errors + 1, f"an error for {text[:80]!r}")
                await _wait_count(victim, "partyserver-pong", pongs + 1, "the victim's pong")
                reply = await http.post(f"/rooms/{ROOM}/messages",
                                        params={"username": "mallory"},
                                        content=text.encode("utf-8", "surrogatepass"))
                assert reply.status_code in (400, 413, 422), (reply.status_code, reply.text,
                                                              text[:80])
                body = reply.json()
                assert body["errorId"] and body["error"]
                seen.append(reply.text)
        assert not mallory.closed.is_set(), (mallory.ws.close_code, mallory.ws.close_reason)
        seen += [json.dumps(m) for m in mallory.messages if m["type"] == "error"]
        assert all(m.get("errorId") for m in mallory.messages if m["type"] == "error")
        assert not [m for m in victim.messages if m["type"] == "error"]
    finally:
        await mallory.ws.close()
        await victim.ws.close()
    return seen


def test_hostile_frames_get_an_error_and_the_room_goes_on_for_everyone(gateway):
    async def setup() -> dict:
        victim = await open_client(_ws(gateway, "victim", "victim"))
        try:
            victim.send({"type": "userUpdate", "user": {
                "id": "victim", "name": "v", "raisedHand": True, "speaking": False,
                "joined": True, "tracks": {"audio": "sv/a", "audioEnabled": True,
                                           "audioUnavailable": False}}})
            state = await victim.wait_for(
                lambda m: m["type"] == "roomState"
                and any(u["id"] == "victim" and u["raisedHand"] for u in m["state"]["users"]),
                "the victim's update")
            return _victim(state["state"])
        finally:
            await victim.ws.close()

    before_user = asyncio.run(setup())
    before = _room_facts(gateway)
    leaked: list[str] = []

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(st.tuples(hostile_frames, st.booleans()), min_size=1, max_size=4))
    def attack(frames):
        for text in asyncio.run(_attack(gateway, frames)):
            leaked.extend(f"{marker} in {text[:200]}" for marker in leaks(text))

    attack()
    after = _room_facts(gateway)
    assert (after.epoch, after.pid) == (before.epoch, before.pid), \
        "the room's actor restarted"
    assert not leaked, leaked[:5]

    async def victim_now() -> dict:
        async with httpx.AsyncClient(base_url=gateway["url"], timeout=30) as http:
            reply = await http.get(f"/rooms/{ROOM}", params={"username": "operator"})
            assert reply.status_code == 200, reply.text
            return _victim(reply.json())

    assert asyncio.run(victim_now()) == before_user
