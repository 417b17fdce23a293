"""The RayService path, for real (issue 20): a Ray head started with ``ray start`` (room
slots, a temporary directory), ``serve deploy`` of ``deploy/serve.yaml`` (with the test's
port, namespace and store; the REST API KubeRay uses), and then, through the gateway
only and with no ``rooms`` process: a meeting works; a room hibernates and its alarm
fires (the application started the alarm scheduler); a second ``serve deploy`` with a
changed setting rolls the gateway while the room's state survives and the clients
reconnect; deleting the application (deploying a config without it) leaves another
Serve application running.

The head runs beside the session's Ray, on ports of its own (``tests/rayhead.py``)."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from actors.net import free_port
from storage import decode_snapshot, open_store
from tests.gateways import read_until_serving
from tests.rayhead import RayHead
from tests.wsclient import open_client

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ray


def _config(port: int, namespace: str, store: str, *, rate: int = 100,
            other: bool = False, rooms: bool = True) -> dict:
    """``deploy/serve.yaml`` with the test's port, identities, namespace and store; with
    ``other``, a second application (the same builder under ``/other``)."""
    config = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    config["http_options"]["port"] = port
    config["http_options"]["host"] = "127.0.0.1"
    [app] = config["applications"]
    app["args"].update(dev=True, replicas=1)
    app["args"]["rooms"].update(namespace=namespace, store_url=store, idle_timeout=3)
    app["args"]["limits"] = {"rate_per_s": rate, "burst": rate}
    apps = [app] if rooms else []
    if other:
        second = copy.deepcopy(app)
        second.update(name="other", route_prefix="/other")
        second["args"].update(side_actors=False)
        second["args"]["rooms"]["namespace"] = namespace + "-other"
        apps.append(second)
    config["applications"] = apps
    return config


def _container_env() -> dict[str, str]:
    """The environment the RayService sets in its head container (``env``, not the
    Secret's), which a node of the Serve config path needs."""
    service = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "rayservice.yaml").read_text())
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]
    [container] = head["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container.get("env", [])}


def _deploy(head: RayHead, tmp: Path, config: dict) -> None:
    path = tmp / f"serve-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(config))
    done = head.serve("deploy", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def _healthy(url: str, timeout: float = 180.0, replica_not: str | None = None) -> str:
    """Wait for ``url``'s /healthz (from a replica other than ``replica_not``); return
    the answering replica's id."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = httpx.get(f"{url}/healthz", timeout=3)
            if reply.status_code == 200 and reply.json()["replica"] != replica_not:
                return reply.json()["replica"]
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        assert time.monotonic() < deadline, f"{url} never became healthy"
        time.sleep(0.5)


def _rooms_serve_then_stop(head: RayHead, port: int, store: str) -> None:
    """Run ``rooms serve --address <head>`` on Serve's port until it answers, then stop
    it with SIGTERM (as an operator's Ctrl-C)."""
    import os
    import signal
    import subprocess
    import sys

    env = {**head.env, "ROOMS_GATEWAY_APP_NAME": "cli-rooms", "ROOMS_STORE_URL": store,
           "ROOMS_NAMESPACE": f"rooms-cli-{uuid.uuid4().hex[:6]}"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "serve", "--dev",
                             "--no-emulators", "--address", f"127.0.0.1:{head.port}",
                             "--port", str(port), "--ingress", "proxy"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        lines = read_until_serving(proc, 180)
        assert lines and lines[-1].startswith("identity:"), "".join(lines)
        _healthy(f"http://127.0.0.1:{port}", 60.0)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _epoch(store: str, room: str) -> int | None:
    async def load():
        s = open_store(store)
        try:
            raw = await s.load(room)
        finally:
            await s.close()
        return None if raw is None else decode_snapshot(room, raw).epoch
    return asyncio.run(load())


def _update(conn: str, mark: str) -> str:
    return json.dumps({"type": "userUpdate", "user": {
        "id": conn, "name": conn, "raisedHand": False, "speaking": False, "joined": True,
        "tracks": {"audioUnavailable": False, "audio": mark}}})


def _shows(message: dict, conn: str, mark: str) -> bool:
    return message["type"] == "roomState" and any(
        u["id"] == conn and u["tracks"].get("audio") == mark
        for u in message["state"]["users"])


async def _until(predicate, what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while not (value := await predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
    return value


async def test_serve_deploy_runs_the_whole_system_without_a_driver(tmp_path):
    # the node's environment as the RayService's containers have it, and compression off
    head = RayHead(tmp_path / "ray", resources={"room_slot": 8},
                   env={**_container_env(), "ROOMS_GATEWAY_WS_COMPRESSION": "false"}).start()
    port = free_port()
    url, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    namespace = f"rooms-sd-{uuid.uuid4().hex[:6]}"
    store = f"sqlite:///{tmp_path / 'rooms.sqlite3'}"
    try:
        _deploy(head, tmp_path, _config(port, namespace, store))
        first = await asyncio.to_thread(_healthy, url)

        # a meeting: b sees a's update
        room = f"m-{uuid.uuid4().hex[:6]}"
        a = await open_client(f"{ws}/parties/rooms/{room}?_pk=a&username=alice")
        b = await open_client(f"{ws}/parties/rooms/{room}?_pk=b&username=bob")
        await b.wait_for(lambda m: m["type"] == "roomState" and len(m["state"]["users"]) == 2,
                         "both seated", 60)
        await a.ws.send(_update("a", "a/1"))
        await b.wait_for(lambda m: _shows(m, "a", "a/1"), "a's update at b", 30)

        # Serve's proxy, this config's ingress, took the gateway's WebSocket settings
        # from the node's environment (actors.gateway.proxy_callback): no deflate
        # although the client offered it, and a frame over the message limit (64 KiB)
        # closed 1009 before it was buffered; with uvicorn's defaults the proxy took
        # deflate and relayed the frame, and the room answered ``error``
        assert "permessage-deflate" in a.ws.request.headers["Sec-WebSocket-Extensions"]
        assert "permessage-deflate" not in a.ws.response.headers.get(
            "Sec-WebSocket-Extensions", "")
        big = await open_client(f"{ws}/parties/rooms/big-{uuid.uuid4().hex[:6]}"
                                f"?_pk=e&username=eve")
        await big.ws.send("x" * (64 * 1024 + 1))
        await asyncio.wait_for(big.closed.wait(), 30)
        assert big.ws.close_code == 1009
        assert not [m for m in big.messages if m["type"] == "error"], big.messages
        # the meeting's clients send heartbeats, as Orange's do (users without them for
        # 15 s are swept by the alarm); sent on whatever socket each has now
        live = {"a": a, "b": b}

        async def heartbeats():
            while True:
                await asyncio.sleep(3)
                for client in list(live.values()):
                    try:
                        await client.ws.send(json.dumps({"type": "heartbeat"}))
                    except Exception:  # noqa: BLE001 - closed by the roll: reopened below
                        pass

        beating = asyncio.ensure_future(heartbeats())

        # a quiet room hibernates (idle 3 s); nobody calls it; the scheduler the
        # application started wakes it at its alarm (15 s after the first connect)
        quiet = f"q-{uuid.uuid4().hex[:6]}"
        q = await open_client(f"{ws}/parties/rooms/{quiet}?_pk=q&username=quinn")
        await q.wait_for(lambda m: m["type"] == "roomState", "q seated", 60)

        async def hibernated():
            async with httpx.AsyncClient(timeout=10) as http:
                rows = (await http.get(f"{url}/rooms", params={"username": "op"})).json()
            return not any(r["room"] == quiet and r["state"] == "ALIVE"
                           for r in rows["rooms"])

        await _until(hibernated, "the quiet room to hibernate", 30)
        slept = await asyncio.to_thread(_epoch, store, quiet)
        assert slept is not None

        async def woken():
            epoch = await asyncio.to_thread(_epoch, store, quiet)
            return epoch is not None and epoch > slept

        await _until(woken, "the alarm to wake the hibernated room", 40)

        # a changed setting rolls the gateway; the room's state survives; a and b
        # reconnect with their _pk and see it
        _deploy(head, tmp_path, _config(port, namespace, store, rate=120))
        await asyncio.wait_for(a.closed.wait(), 120)
        second = await asyncio.to_thread(_healthy, url, 180.0, first)
        assert second != first
        a2 = await open_client(f"{ws}/parties/rooms/{room}?_pk=a&username=alice")
        b2 = await open_client(f"{ws}/parties/rooms/{room}?_pk=b&username=bob")
        live.update(a=a2, b=b2)
        await b2.wait_for(lambda m: _shows(m, "a", "a/1"), "the state after the roll", 60)
        beating.cancel()

        # another application, then a config without ours: the other one stays up
        _deploy(head, tmp_path, _config(port, namespace, store, rate=120, other=True))
        await asyncio.to_thread(lambda: _healthy(url + "/other"))
        _deploy(head, tmp_path, _config(port, namespace, store, rooms=False, other=True))
        async with httpx.AsyncClient(timeout=10) as http:
            async def ours_gone():
                try:
                    return (await http.get(f"{url}/healthz")).status_code == 404
                except httpx.HTTPError:
                    return False
            await _until(ours_gone, "the rooms application to be deleted", 120)
            assert (await http.get(f"{url}/other/healthz")).status_code == 200
        for client in (a, b, q, a2, b2):
            await client.ws.close()

        # `rooms serve` joining this cluster: its stop deletes its own application only
        await asyncio.to_thread(_rooms_serve_then_stop, head, port, store)
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{url}/other/healthz")).status_code == 200
    finally:
        await asyncio.to_thread(head.stop)


def test_the_rayservice_carries_serve_yaml_and_it_validates():
    """``deploy/kubernetes/rayservice.yaml``'s ``serveConfigV2`` is ``deploy/serve.yaml``,
    and both validate against Ray's own Serve config schema; the worker groups offer
    room slots; the secrets come from a Kubernetes Secret, not the file."""
    from ray.serve.schema import ServeDeploySchema

    serve_yaml = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    service = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "rayservice.yaml").read_text())
    assert service["kind"] == "RayService" and service["apiVersion"] == "ray.io/v1"
    inner = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert inner == serve_yaml
    [app] = ServeDeploySchema.model_validate(inner).applications
    assert app.import_path == "actors.gateway.application:build"
    cluster = service["spec"]["rayClusterConfig"]
    import ray

    assert cluster["rayVersion"] == ray.__version__
    assert cluster["gcsFaultToleranceOptions"]["redisAddress"]
    for group in cluster["workerGroupSpecs"]:
        slots = json.loads(json.loads(group["rayStartParams"]["resources"]))
        assert slots["room_slot"] > 0
        [container] = group["template"]["spec"]["containers"]
        assert container["envFrom"][0]["secretRef"]["name"] == "ray-rooms-secrets"
        # every node runs a Serve proxy: each carries the proxy callback's variable
        assert {e["name"]: e["value"] for e in container["env"]} == _container_env()
    from actors.gateway.proxy_callback import PROXY_CALLBACK, PROXY_CALLBACK_ENV_VAR

    assert _container_env()[PROXY_CALLBACK_ENV_VAR] == PROXY_CALLBACK
    text = (ROOT / "deploy" / "kubernetes" / "rayservice.yaml").read_text()
    assert "ROOMS_TOKEN_SECRET=" not in text.replace('ROOMS_TOKEN_SECRET="$(openssl', "")
    docker = (ROOT / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-" in docker
    assert f"ENV {PROXY_CALLBACK_ENV_VAR}={PROXY_CALLBACK}" in docker


def test_the_builder_refuses_bad_args_and_a_missing_secret(monkeypatch):
    from pydantic import ValidationError

    from actors.gateway.application import build

    monkeypatch.delenv("ROOMS_TOKEN_SECRET", raising=False)
    monkeypatch.delenv("ROOMS_DEV_AUTH", raising=False)
    with pytest.raises(ValueError, match="ROOMS_TOKEN_SECRET"):
        build({})
    with pytest.raises(ValidationError):
        build({"dev": True, "replica": 2})
    with pytest.raises(ValueError, match="idle_timout"):
        build({"dev": True, "rooms": {"idle_timout": 3}})
    monkeypatch.setenv("ROOMS_TOKEN_SECRET", "s" * 40)
    assert type(build({"replicas": 2})).__name__ == "Application"
