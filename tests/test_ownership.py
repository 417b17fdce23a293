"""A connection belongs to the identity that opened it; operator routes need an operator.

Through a real gateway (Serve, two replicas, signed tokens; not development mode) on the
session's Ray: mallory cannot take alice's ``_pk`` over a socket, nor act as it over
HTTP, nor list rooms or read a room's state; alice's seat is untouched; ownership
survives a room restart and a hibernation; alice's reconnect after her replica died
works. The room's side is also tested without Ray.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid

import httpx
import pytest
from websockets.asyncio.client import connect

from actors.auth import AuthSettings, Identity, identify, issue_token
from actors.config import RoomsConfig
from actors.errors import NotOwner
from actors.net import free_port
from actors.room_actor import RoomActor
from storage import MemoryStore

from .gateways import kill_replica, until_reconnected
from .wsclient import Client

pytestmark = pytest.mark.ray

SECRET = "ownership-secret-" + "o" * 48
OPERATOR_SECRET = "operator-secret-" + "p" * 24
APP = "rooms-ownership-test"


def token(name: str, operator: bool = False) -> str:
    return issue_token(name, SECRET, ttl_s=600, operator=operator)


@pytest.fixture(scope="module")
def gateway(ray_session, tmp_path_factory):
    """A two-replica gateway with signed tokens and an operator secret."""
    from actors.gateway import deploy_gateway, shutdown_gateway
    from pydantic import SecretStr

    store = tmp_path_factory.mktemp("ownership") / "rooms.sqlite3"
    config = RoomsConfig(namespace=f"rooms-own-{uuid.uuid4().hex[:8]}",
                         store_url=f"sqlite:///{store}", idle_timeout=0, poll_timeout=5.0)
    auth = AuthSettings(token_secret=SecretStr(SECRET),
                        operator_secret=SecretStr(OPERATOR_SECRET))
    url = deploy_gateway(config, port=free_port(), replicas=2, name=APP, auth=auth)
    yield {"url": url, "ws": url.replace("http", "ws", 1), "config": config}
    shutdown_gateway(APP)


async def join(gateway, room: str, pk: str, name: str) -> Client:
    """Open a socket as ``name`` with connection id ``pk``."""
    ws = await connect(f"{gateway['ws']}/parties/rooms/{room}?_pk={pk}&token={token(name)}",
                       open_timeout=20)
    return Client(ws)


async def refused(gateway, room: str, pk: str, name: str) -> tuple[int | None, str]:
    """Open a socket as ``name`` with ``pk``; return how the gateway closed it."""
    client = await join(gateway, room, pk, name)
    await asyncio.wait_for(client.closed.wait(), 20)
    return client.ws.close_code, client.ws.close_reason


async def operator_state(gateway, room: str) -> dict:
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.get(f"{gateway['url']}/rooms/{room}",
                                  headers={"Authorization": f"Bearer {token('op', True)}"})
        assert response.status_code == 200, response.text
        return response.json()


def seat(state: dict, pk: str) -> dict | None:
    return next((u for u in state["users"] if u["id"] == pk), None)


def room_id() -> str:
    return f"own-{uuid.uuid4().hex[:10]}"


async def test_another_identity_cannot_take_a_connection_id(gateway):
    room = room_id()
    alice = await join(gateway, room, "alice-pk", "alice")
    try:
        await alice.wait_for(lambda m: m["type"] == "roomState" and seat(m["state"], "alice-pk"),
                             "alice's seat")
        code, reason = await refused(gateway, room, "alice-pk", "mallory")
        assert code == 1008 and "another user" in reason, (code, reason)
        state = await operator_state(gateway, room)
        assert seat(state, "alice-pk")["name"] == "alice"
        assert [u["id"] for u in state["users"]] == ["alice-pk"]
        # alice's socket is still hers and works
        alice.send({"type": "partyserver-ping"})
        await alice.wait_for(lambda m: m["type"] == "partyserver-pong", "alice's pong")
        assert not alice.closed.is_set()
    finally:
        await alice.ws.close()
    # the owner's own reconnect works as before
    again = await join(gateway, room, "alice-pk", "alice")
    try:
        state = await again.wait_for(lambda m: m["type"] == "roomState", "the reconnect")
        assert seat(state["state"], "alice-pk")["name"] == "alice"
    finally:
        await again.ws.close()


async def test_http_messages_act_as_their_sender(gateway):
    room = room_id()
    alice = await join(gateway, room, "alice-pk", "alice")
    try:
        await alice.wait_for(lambda m: m["type"] == "roomState", "alice's seat")
        url = f"{gateway['url']}/rooms/{room}/messages"
        mallory = {"Authorization": f"Bearer {token('mallory')}"}
        async with httpx.AsyncClient(timeout=20) as http:
            before = await operator_state(gateway, room)
            for conn, body in (("alice-pk", {"type": "muteUser", "id": "alice-pk"}),
                               ("alice-pk", {"type": "userLeft"}),
                               ("http:alice", {"type": "userLeft"}),
                               ("nobody-pk", {"type": "heartbeat"})):
                response = await http.post(url, params={"conn": conn}, headers=mallory,
                                           json=body)
                assert response.status_code == 403, (conn, response.text)
                assert "not yours" in response.json()["error"]
            assert await operator_state(gateway, room) == before  # reached no room
            assert not alice.closed.is_set()
            # mallory's own HTTP connection works
            own = await http.post(url, headers=mallory, json={"type": "heartbeat"})
            assert own.status_code == 200, own.text
            # alice may act as her own socket's connection over HTTP
            muted = await http.post(url, params={"conn": "alice-pk"},
                                    headers={"Authorization": f"Bearer {token('alice')}"},
                                    json={"type": "muteUser", "id": "alice-pk"})
            assert muted.status_code == 200, muted.text
            await alice.wait_for(lambda m: m["type"] == "muteMic", "her own muteMic")
            # http:mallory is mallory's now: alice cannot use it
            taken = await http.post(url, params={"conn": "http:mallory"},
                                    headers={"Authorization": f"Bearer {token('alice')}"},
                                    json={"type": "heartbeat"})
            assert taken.status_code == 403
    finally:
        await alice.ws.close()


async def test_operator_routes_need_an_operator(gateway):
    room = room_id()
    url = gateway["url"]
    async with httpx.AsyncClient(timeout=20) as http:
        user = {"Authorization": f"Bearer {token('mallory')}"}
        sent = await http.post(f"{url}/rooms/{room}/messages", headers=user,
                               json={"type": "heartbeat"})
        assert sent.status_code == 200
        for path in ("/rooms", f"/rooms/{room}"):
            response = await http.get(url + path, headers=user)
            assert response.status_code == 403, response.text
            assert "operator" in response.json()["error"]
            wrong = await http.get(url + path, headers={**user, "X-Rooms-Operator": "guess"})
            assert wrong.status_code == 403
            by_token = await http.get(url + path, params={"token": token("op", True)})
            assert by_token.status_code == 200, by_token.text
            by_secret = await http.get(url + path,
                                       headers={**user, "X-Rooms-Operator": OPERATOR_SECRET})
            assert by_secret.status_code == 200, by_secret.text
        listed = (await http.get(f"{url}/rooms", params={"token": token("op", True)})).json()
        assert any(r["room"] == room for r in listed["rooms"])
        # no identity at all is still 401, operator secret or not
        anonymous = await http.get(f"{url}/rooms", headers={"X-Rooms-Operator": OPERATOR_SECRET})
        assert anonymous.status_code == 401


def test_development_mode_makes_every_identity_an_operator():
    dev = AuthSettings(dev_auth=True)
    assert identify({"username": "anyone"}, {}, dev) == Identity("anyone", True)
    strict = AuthSettings(token_secret=SECRET)
    assert identify({"token": token("u")}, {}, strict) == Identity("u", False)
    assert identify({"token": token("o", True)}, {}, strict) == Identity("o", True)


async def test_ownership_survives_a_restart_and_a_hibernation(gateway, ray_session):
    from actors.directory import get_room

    room = room_id()
    alice = await join(gateway, room, "alice-pk", "alice")
    await alice.wait_for(lambda m: m["type"] == "roomState", "alice's seat")
    await alice.ws.close()
    handle = get_room(room, gateway["config"])
    # the room's process dies: Ray restarts it from its snapshot
    pid = await handle.pid.remote()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        try:
            if await handle.pid.remote() != pid:
                break
        except Exception:  # noqa: BLE001 - restarting
            pass
        assert time.monotonic() < deadline, "the room did not restart"
        await asyncio.sleep(0.2)
    code, reason = await refused(gateway, room, "alice-pk", "mallory")
    assert code == 1008 and "another user" in reason
    # the room hibernates (its actor exits); the next connect reactivates it
    try:
        await handle.hibernate.remote()
    except Exception:  # noqa: BLE001 - the actor exits during the call
        pass
    code, reason = await refused(gateway, room, "alice-pk", "mallory")
    assert code == 1008 and "another user" in reason
    assert seat(await operator_state(gateway, room), "alice-pk")["name"] == "alice"
    back = await join(gateway, room, "alice-pk", "alice")
    try:
        await back.wait_for(lambda m: m["type"] == "roomState", "alice back")
    finally:
        await back.ws.close()


async def test_the_owners_reconnect_after_a_replica_restart_works(gateway, ray_session):
    room = room_id()
    alice = await join(gateway, room, "alice-pk", "alice")
    await alice.wait_for(lambda m: m["type"] == "roomState", "alice's seat")
    kill_replica(alice.ws.response.headers["x-rooms-replica"])
    await asyncio.wait_for(alice.closed.wait(), 30)

    async def reconnect():
        client = await join(gateway, room, "alice-pk", "alice")
        return client, await client.wait_for(lambda m: m["type"] == "roomState", "reconnect", 10)

    again, state = await until_reconnected(reconnect)
    try:
        assert seat(state["state"], "alice-pk")["name"] == "alice"
        code, reason = await refused(gateway, room, "alice-pk", "mallory")
        assert code == 1008
    finally:
        await again.ws.close()


async def test_the_room_checks_owners_without_ray():
    actor = RoomActor(f"own-{uuid.uuid4().hex[:8]}", RoomsConfig(idle_timeout=0),
                      store=MemoryStore())
    try:
        await actor.connect("a", "alice")
        seq = (await actor.poll(None, 0)).cursor
        with pytest.raises(NotOwner):
            await actor.connect("a", "mallory")
        with pytest.raises(NotOwner):
            await actor.message("a", json.dumps({"type": "userLeft"}), "mallory")
        assert (await actor.poll(None, 0)).cursor == seq  # nothing happened
        await actor.message("http:mallory", json.dumps({"type": "heartbeat"}), "mallory")
        await actor.message("a", json.dumps({"type": "heartbeat"}), "alice")
        await actor.message("a", json.dumps({"type": "userLeft"}), "alice")
        await actor.connect("a", "mallory")  # alice left: the id is free again
    finally:
        actor._exit()
