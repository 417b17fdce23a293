"""The gateway over real Ray Serve on loopback, with real WebSocket clients.

One gateway (two replicas) is deployed for the module; a second, single-replica app with
tight limits (`/small`) tests the room-full and rate-limit closes. Every test uses its
own room ids in an isolated namespace with a SQLite store in a temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.wsclient import open_client

from actors.auth import AuthError, AuthSettings, authenticate, issue_token, verify_token
from actors.config import RoomsConfig
from actors.net import free_port
from actors.gateway import (CLOSE_POLICY, CLOSE_TRY_AGAIN, Gateway, GatewayLimits,
                            TokenBucket, deploy_gateway, shutdown_gateway)

pytestmark = pytest.mark.ray

SECRET = "test-secret-" + "k" * 64
JS_DIR = Path(__file__).parent / "js"
APP = "rooms-gateway-test"
SMALL_APP = "rooms-gateway-test-small"


@pytest.fixture(scope="module")
def gateway(ray_session, tmp_path_factory):
    """Deploy the gateway (2 replicas) and a small one (1 replica, tight limits) once;
    yield ``{"url", "ws", "small_ws", "config"}``."""
    from ray import serve

    store = tmp_path_factory.mktemp("gateway") / "rooms.sqlite3"
    config = RoomsConfig(namespace=f"rooms-gw-{uuid.uuid4().hex[:8]}",
                         store_url=f"sqlite:///{store}", max_message_bytes=4096,
                         idle_timeout=0, poll_timeout=5.0)
    auth = AuthSettings(token_secret=SECRET)
    port = free_port()
    url = deploy_gateway(config, port=port, replicas=2, name=APP, auth=auth,
                         limits=GatewayLimits(rate_per_s=50, burst=100))
    small = GatewayLimits(rate_per_s=5, burst=5, abuse_strikes=3, max_connections_per_room=2)
    serve.run(Gateway.options(num_replicas=1, ray_actor_options={"num_cpus": 0})
              .bind(config, auth, small), name=SMALL_APP, route_prefix="/small",
              blocking=False)
    ws = url.replace("http://", "ws://")
    yield {"url": url, "ws": ws, "small_ws": ws + "/small", "config": config,
           "host": url.removeprefix("http://")}
    shutdown_gateway(SMALL_APP)
    shutdown_gateway(APP)


def token(name: str = "alice", operator: bool = False) -> str:
    return issue_token(name, SECRET, ttl_s=600, operator=operator)


def room_id() -> str:
    return f"gw-{uuid.uuid4().hex[:12]}"


def ws_url(base: str, room: str, conn: str, name: str | None = "alice", **query) -> str:
    params = {"_pk": conn, **query}
    if name is not None:
        params["token"] = token(name)
    return f"{base}/parties/rooms/{room}?" + "&".join(f"{k}={v}" for k, v in params.items())


def _user(state: dict, conn: str) -> dict | None:
    return next((u for u in state["users"] if u["id"] == conn), None)


# ---- auth (plain functions: microseconds) ------------------------------------------------


def test_tokens_round_trip_and_refusals():
    good = issue_token("alice", SECRET, ttl_s=60)
    assert verify_token(good, SECRET) == "alice"
    with pytest.raises(AuthError, match="signature"):
        verify_token(good, "another-secret-" + "x" * 32)
    with pytest.raises(AuthError, match="expired"):
        verify_token(jwt.encode({"sub": "bob", "exp": int(time.time()) - 60}, SECRET,
                                algorithm="HS256"), SECRET)
    with pytest.raises(AuthError, match="lacks the 'exp'"):
        verify_token(jwt.encode({"sub": "bob"}, SECRET, algorithm="HS256"), SECRET)
    with pytest.raises(AuthError, match="HS256"):
        verify_token(jwt.encode({"sub": "bob", "exp": int(time.time()) + 60}, SECRET,
                                algorithm="HS512"), SECRET)
    with pytest.raises(AuthError, match="malformed"):
        verify_token("not.a.jwt", SECRET)
    with pytest.raises(ValueError, match="32 bytes"):
        issue_token("alice", "short")
    # the secret never shows up in settings' repr
    assert SECRET not in repr(AuthSettings(token_secret=SECRET))


def test_authenticate_takes_query_token_bearer_header_or_dev_username():
    strict = AuthSettings(token_secret=SECRET)
    dev = AuthSettings(token_secret=SECRET, dev_auth=True)
    assert authenticate({"token": token("ann")}, {}, strict) == "ann"
    assert authenticate({}, {"authorization": f"Bearer {token('bo')}"}, strict) == "bo"
    with pytest.raises(AuthError, match="no credential"):
        authenticate({"username": "eve"}, {}, strict)
    with pytest.raises(AuthError, match="Bearer"):
        authenticate({}, {"authorization": "Basic abc"}, strict)
    assert authenticate({"username": "eve"}, {}, dev) == "eve"
    with pytest.raises(AuthError, match="signature"):  # dev mode still checks tokens
        authenticate({"token": issue_token("x", "z" * 40), "username": "eve"}, {}, dev)
    with pytest.raises(AuthError, match="control"):
        authenticate({"username": "a\nb"}, {}, dev)


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert bucket.take() and not bucket.take()


# ---- HTTP ----------------------------------------------------------------------------------


async def test_http_routes_need_a_token_and_work_with_one(gateway):
    url, room = gateway["url"], room_id()
    bearer = {"Authorization": f"Bearer {token('carol')}"}
    async with httpx.AsyncClient(timeout=20) as http:
        assert (await http.get(f"{url}/healthz")).json()["ok"] is True
        for request in (http.get(f"{url}/rooms/{room}"), http.get(f"{url}/rooms"),
                        http.post(f"{url}/rooms/{room}/messages", content=b"{}")):
            response = await request
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"] == "Bearer"
        bad = {"Authorization": "Bearer " + issue_token("x", "other-secret-" + "y" * 32)}
        assert (await http.get(f"{url}/rooms/{room}", headers=bad)).status_code == 401

        sent = await http.post(f"{url}/rooms/{room}/messages", headers=bearer,
                               json={"type": "heartbeat"})
        assert sent.status_code == 200 and isinstance(sent.json()["seq"], int)
        operator = {"Authorization": f"Bearer {token('op', operator=True)}"}
        state = (await http.get(f"{url}/rooms/{room}", headers=operator)).json()
        assert set(state) >= {"users", "ai"}
        # the AI transcript: the room's members (carol sent as http:carol) and operators
        mine = await http.get(f"{url}/rooms/{room}/transcript", headers=bearer)
        assert mine.status_code == 200, mine.text
        assert mine.json() == {"room": room, "meetingId": None, "lines": []}
        mallory = {"Authorization": f"Bearer {token('mallory')}"}
        refused = await http.get(f"{url}/rooms/{room}/transcript", headers=mallory)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "only the room's members may read its transcript"
        assert (await http.get(f"{url}/rooms/{room}/transcript", headers=operator)
                ).status_code == 200
        too_big = await http.post(f"{url}/rooms/{room}/messages", headers=bearer,
                                  content=b"x" * 5000)
        assert too_big.status_code == 413
        rooms = (await http.get(f"{url}/rooms", params={"token": token(operator=True)})
                 ).json()["rooms"]
        assert any(r["room"] == room and r["state"] == "ALIVE" for r in rooms)
        assert (await http.get(f"{url}/rooms/bad%20id", headers=operator)).status_code == 400


# ---- WebSocket -----------------------------------------------------------------------------


async def test_websocket_without_a_valid_token_is_refused_with_401(gateway):
    room = room_id()
    for url in (ws_url(gateway["ws"], room, "c1", name=None),
                ws_url(gateway["ws"], room, "c1", name=None, token="garbage"),
                ws_url(gateway["ws"], room, "c1", name=None, username="mallory")):
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, open_timeout=20)
        assert refused.value.response.status_code == 401


async def test_a_room_scoped_token_admits_only_its_rooms(gateway):
    """``rooms token NAME --room R``: the ``rooms`` claim admits R (socket and HTTP) and
    refuses any other room with 403, as LiveKit's room grants; an operator token is
    not scoped."""
    mine, other = room_id(), room_id()
    scoped = issue_token("erin", SECRET, ttl_s=600, rooms=[mine])
    client = await open_client(f"{gateway['ws']}/parties/rooms/{mine}?_pk=e1&token={scoped}")
    try:
        await client.wait_for(lambda m: m["type"] == "roomState", "roomState in her room")
    finally:
        await client.ws.close()
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{gateway['ws']}/parties/rooms/{other}?_pk=e1&token={scoped}",
                      open_timeout=20)
    assert refused.value.response.status_code == 403
    async with httpx.AsyncClient(timeout=20) as http:
        bearer = {"Authorization": f"Bearer {scoped}"}
        sent = await http.post(f"{gateway['url']}/rooms/{other}/messages", headers=bearer,
                               json={"type": "heartbeat"})
        assert sent.status_code == 403 and sent.json()["error"], sent.text
        ok = await http.post(f"{gateway['url']}/rooms/{mine}/messages", headers=bearer,
                             json={"type": "heartbeat"})
        assert ok.status_code == 200, ok.text


async def test_valid_token_connects_and_an_oversized_frame_is_refused_by_the_websocket_layer(
        gateway):
    room = room_id()
    client = await open_client(ws_url(gateway["ws"], room, "c1", name="dave"))
    try:
        first = await client.wait_for(lambda m: m["type"] == "roomState", "roomState")
        assert _user(first["state"], "c1")["name"] == "dave"
        await client.ws.send("x" * 5000)  # over max_message_bytes=4096
        # uvicorn's frame limit is the message limit: it closes 1009 (message too big)
        # before buffering the frame, and nothing of it reaches the room
        await asyncio.wait_for(client.closed.wait(), 20)
        assert client.ws.close_code == 1009
        assert not [m for m in client.messages if m["type"] == "error"]
        # the client offered permessage-deflate (websockets does by default, as browsers
        # do), and the replica took it (ROOMS_GATEWAY_WS_COMPRESSION, on by default)
        assert "permessage-deflate" in client.ws.request.headers.get(
            "Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in client.ws.response.headers.get(
            "Sec-WebSocket-Extensions", "")
    finally:
        await client.ws.close()
    again = await open_client(ws_url(gateway["ws"], room, "c1", name="dave"))
    try:
        again.send({"type": "partyserver-ping"})
        await again.wait_for(lambda m: m["type"] == "partyserver-pong", "pong")
    finally:
        await again.ws.close()


async def test_closing_a_socket_tells_the_room(gateway):
    import ray

    from actors.directory import get_room

    room, config = room_id(), gateway["config"]
    a = await open_client(ws_url(gateway["ws"], room, "a", name="ann"))
    b = await open_client(ws_url(gateway["ws"], room, "b", name="ben"))
    await a.wait_for(lambda m: m["type"] == "roomState" and len(m["state"]["users"]) == 2,
                     "both users")
    handle = get_room(room, config)
    assert (await handle.info.remote()).connections == 2
    await b.ws.close(1000, "bye")
    deadline = time.monotonic() + 15
    while (await handle.info.remote()).connections != 1:
        assert time.monotonic() < deadline, "the room never heard of the close"
        await asyncio.sleep(0.05)
    # and a direct message to the gone connection is refused by the room
    a.send({"type": "directMessage", "to": "b", "message": "hi"})
    await a.wait_for(lambda m: m["type"] == "error" and "'b'" in m["error"], "error")
    await a.ws.close()
    assert ray.is_initialized()


async def test_a_clean_close_reaches_the_room_and_the_metrics_with_its_own_code(gateway):
    """Serve's direct ingress cancels the handler as soon as it reads the client's close
    frame; the handler still reports the code the client sent, not 1006 (every clean
    close was counted, and told to the room, as "abnormal closure"). Checked through
    the metrics sink; the room's ``close`` call carries the same code."""
    from actors.metrics_sink import ensure_sink

    sink = ensure_sink()
    key = "rooms_gateway_closes{1001}"  # "going away": what a browser sends on leaving
    before = (await sink.totals.remote()).get(key, 0)
    room = room_id()
    clients = [await open_client(ws_url(gateway["ws"], room, f"c{n}", name=f"u{n}"))
               for n in range(3)]
    await clients[0].wait_for(lambda m: m["type"] == "roomState"
                              and len(m["state"]["users"]) == 3, "three users")
    for client in clients:
        await client.ws.close(1001, "leaving")
    deadline = time.monotonic() + 30  # replicas report every ROOMS_METRICS_FLUSH_S (5 s)
    while (await sink.totals.remote()).get(key, 0) - before < 3:
        assert time.monotonic() < deadline, (
            f"clean closes counted as {await sink.totals.remote()}")
        await asyncio.sleep(0.5)


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


async def test_replicas_and_the_rooms_they_create_run_with_two_malloc_arenas(gateway):
    """``ROOMS_GATEWAY_MALLOC_ARENA_MAX`` (default 2) reaches the replicas' process
    environment, where glibc reads it, and the rooms a replica creates inherit it."""
    import ray

    from actors.directory import actor_name

    room = room_id()
    client = await open_client(ws_url(gateway["ws"], room, "a", name="ann"))
    await client.wait_for(lambda m: m["type"] == "roomState", "roomState")
    title = f"ServeReplica:{APP}:Gateway".encode()  # the replicas' process title
    replicas = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and title in (entry / "cmdline").read_bytes():
                replicas.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    assert len(replicas) == 2, replicas
    for pid in replicas:
        assert _environ(pid).get("MALLOC_ARENA_MAX") == "2", pid
    room_pid = await ray.get_actor(actor_name(room),
                                   namespace=gateway["config"].namespace).pid.remote()
    assert _environ(room_pid).get("MALLOC_ARENA_MAX") == "2"
    await client.ws.close()


def test_haproxy_keeps_a_reloaded_workers_sockets_for_the_reload_grace(gateway):
    """Serve reloads HAProxy whenever a replica comes or goes; the reloaded-out worker
    keeps carrying the WebSockets opened before, until ``hard-stop-after``. Serve's
    120 s cut every such socket two minutes after any reload: the HAProxy serving this
    gateway must run with ``ROOMS_GATEWAY_RELOAD_GRACE_S`` (default 3600 s)."""
    from actors.gateway import GatewayIngress

    port = gateway["url"].rsplit(":", 1)[1].split("/")[0]
    configs = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit():
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if not argv[0].endswith(b"haproxy") or b"-f" not in argv:
                continue
            text = Path(argv[argv.index(b"-f") + 1].decode()).read_text()
        except (OSError, IndexError):  # gone meanwhile
            continue
        if f":{port}\n" in text:
            configs.append(text)
    assert configs, f"no HAProxy serves port {port}"
    want = f"hard-stop-after {GatewayIngress().reload_grace_s}s"
    for text in configs:
        assert want in text, [line for line in text.splitlines() if "hard-stop" in line]


async def test_hibernated_room_is_reactivated_by_the_next_frame(gateway):
    from ray.exceptions import RayActorError

    from actors.directory import get_room

    room, config = room_id(), gateway["config"]
    client = await open_client(ws_url(gateway["ws"], room, "h1", name="hana"))
    await client.wait_for(lambda m: m["type"] == "roomState", "roomState")
    handle = get_room(room, config)
    before = await handle.info.remote()
    try:
        await handle.hibernate.remote()
    except RayActorError:
        pass  # the actor exits while answering
    await asyncio.sleep(0.5)
    client.send({"type": "partyserver-ping"})
    await client.wait_for(lambda m: m["type"] == "partyserver-pong", "pong after wake-up")
    client.send({"type": "directMessage", "to": "h1", "message": "still here"})
    await client.wait_for(lambda m: m["type"] == "directMessage", "direct message")
    after = await get_room(room, config).info.remote()
    assert after.epoch > before.epoch  # a new activation, from the snapshot
    assert after.seq > before.seq  # the outbox sequence went on
    await client.ws.close()


async def test_fifty_sockets_two_replicas_every_broadcast_once_in_order(gateway):
    room, n, updates = room_id(), 50, 20
    clients = await asyncio.gather(*[
        open_client(ws_url(gateway["ws"], room, f"s{i:02d}", name=f"user{i}"))
        for i in range(n)])
    try:
        replicas = {c.ws.response.headers["x-rooms-replica"] for c in clients}
        assert len(replicas) == 2, f"sockets landed on {replicas}"
        for c in clients:
            await c.wait_for(lambda m: m["type"] == "roomState" and len(m["state"]["users"]) == n,
                             "all users", timeout=60)
        sender = clients[0]
        for k in range(updates):
            await sender.ws.send(json.dumps({"type": "userUpdate", "user": {
                "id": "s00", "name": "x", "tracks": {"audio": f"sess/{k}"}}}))

        def audio(m: dict) -> str | None:
            if m["type"] != "roomState":
                return None
            user = _user(m["state"], "s00")
            return user["tracks"].get("audio") if user else None

        last = f"sess/{updates - 1}"
        await asyncio.gather(*[c.wait_for(lambda m: audio(m) == last, "the last update",
                                          timeout=60) for c in clients])
        sequences = []
        for c in clients:
            states = [m for m in c.messages if m["type"] == "roomState"]
            start = next(i for i, m in enumerate(states) if audio(m) == "sess/0")
            sequences.append([json.dumps(m, sort_keys=True) for m in states[start:]])
            seen = [audio(m) for m in states[start:]]
            # every update once, in order (an alarm may repeat a state: not here, < 15 s)
            assert seen == [f"sess/{k}" for k in range(updates)], seen
        assert all(s == sequences[0] for s in sequences)
    finally:
        await asyncio.gather(*[c.ws.close() for c in clients], return_exceptions=True)


async def test_room_full_closes_1013_and_rate_abuse_closes_1008(gateway):
    room = room_id()
    base = gateway["small_ws"]
    first = await open_client(ws_url(base, room, "f1"))
    second = await open_client(ws_url(base, room, "f2"))
    third = await open_client(ws_url(base, room, "f3"))
    await asyncio.wait_for(third.closed.wait(), 15)
    assert third.ws.close_code == CLOSE_TRY_AGAIN and third.ws.close_reason == "room full"
    await second.ws.close()
    await first.wait_for(lambda m: m["type"] == "roomState", "roomState")
    for _ in range(30):  # burst 5, 5/s, 3 strikes
        first.send({"type": "heartbeat"})
    await asyncio.wait_for(first.closed.wait(), 15)
    assert any(m["type"] == "error" and m["error"].startswith("rate limit exceeded")
               for m in first.messages)
    assert first.ws.close_code == CLOSE_POLICY


async def test_partysocket_client_speaks_orange_through_the_gateway(gateway):
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm are not installed: the partysocket client cannot run")
    if not (JS_DIR / "node_modules" / "partysocket").exists():
        installed = await asyncio.to_thread(
            subprocess.run, ["npm", "install", "--no-audit", "--no-fund"], cwd=JS_DIR,
            capture_output=True, text=True, timeout=180)
        assert installed.returncode == 0, installed.stderr[-2000:]
    room, conn = room_id(), f"js-{uuid.uuid4().hex[:6]}"
    process = await asyncio.create_subprocess_exec(
        "node", "client.mjs", gateway["host"], room, conn, token("erin"), cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["ok"], (result, err.decode()[-2000:])
    steps = result["steps"]
    assert f"/parties/rooms/{room}?" in steps["connected"]["url"]
    assert f"_pk={conn}" in steps["connected"]["url"]
    assert steps["connected"] == {**steps["connected"], "id": conn, "name": "erin"}
    assert steps["userUpdate"] == {"name": "erin", "audio": "session-1/mic"}
    assert steps["directMessage"] == {"from": "erin", "message": "hello, me"}
    assert steps["ping"] is True and steps["error"]
