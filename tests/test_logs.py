"""Structured logs (issue 22): with ``ROOMS_LOG_FORMAT=json`` every line of a room and
of a gateway replica is one JSON object with ``room``, ``conn``, ``error_id`` fields
where the line is about them, and the ``errorId`` a client is shown finds the line
that holds the detail, in the process's own log file (Ray keeps each worker's stderr as
``worker-*.err``)."""

from __future__ import annotations

import io
import json
import logging
import os
import time
import uuid

import httpx
import pytest
import ray

from actors import logs
from actors.config import RoomsConfig
from actors.directory import actor_name
from actors.gateway import deploy_gateway, shutdown_gateway
from actors.net import free_port
from tests.wsclient import open_client

APP = "rooms-logs"


def test_json_lines_carry_the_fields_and_text_lines_name_them():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    log = logging.getLogger("ray_rooms.test-json")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        log.info("turn %s", "\ud800 lone surrogate", extra={
            "room": "r1", "conn": "c1", "error_id": "abc123", "identity": None})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed", extra={"room": "r1"})
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["room"] == "r1" and first["conn"] == "c1" and first["error_id"] == "abc123"
    assert "identity" not in first and first["level"] == "INFO"
    assert first["logger"] == "ray_rooms.test-json" and first["ts"].endswith("Z")
    assert "ValueError: boom" in second["exc"]

    record = logging.makeLogRecord({"name": "ray_rooms.x", "levelname": "INFO",
                                    "msg": "hello", "room": "r9", "error_id": "e1"})
    assert logs.TextFormatter().format(record) == "INFO ray_rooms.x: hello [room=r9 error_id=e1]"
    with pytest.raises(ValueError):
        logs.configure("yaml")


def _stderr_of(handle) -> str:
    """The path of the actor's stderr (its worker-*.err log)."""
    return ray.get(handle.__ray_call__.remote(lambda self: os.readlink("/proc/self/fd/2")),
                   timeout=30)


def _json_line_with(path: str, error_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("{"):
                    entry = json.loads(line)  # every JSON-looking line parses
                    if entry.get("error_id") == error_id:
                        return entry
        assert time.monotonic() < deadline, f"no log line with error_id {error_id} in {path}"
        time.sleep(0.3)


async def test_an_error_a_client_sees_is_found_in_the_logs_by_its_id(ray_session, tmp_path):
    namespace = f"rooms-logs-{uuid.uuid4().hex[:8]}"
    config = RoomsConfig(namespace=namespace, store_url=f"sqlite:///{tmp_path}/r.sqlite3",
                         idle_timeout=0, log_format="json")
    url = deploy_gateway(config, port=free_port(), name=APP, dev=True)
    room = f"logs-{uuid.uuid4().hex[:8]}"
    try:
        alice = await open_client(url.replace("http://", "ws://")
                                  + f"/parties/rooms/{room}?_pk=alice-pk&username=alice")
        await alice.wait_for(lambda m: m["type"] == "roomState", "roomState")
        await alice.ws.send('{"type": "userUpdate", "user": 42}')  # invalid: the room says
        error = await alice.wait_for(lambda m: m["type"] == "error", "an error")
        entry = _json_line_with(_stderr_of(ray.get_actor(actor_name(room),
                                                         namespace=namespace)),
                                error["errorId"])
        assert entry["room"] == room and entry["conn"] == "alice-pk", entry
        assert entry["identity"] == "alice", entry
        assert entry["event"] == "clientError" and entry["logger"] == "ray_rooms.room"

        async with httpx.AsyncClient(base_url=url, timeout=20) as http:  # the gateway says
            reply = await http.post(f"/rooms/{room}/messages",
                                    params={"username": "mallory", "conn": "alice-pk"},
                                    content=b'{"type":"userLeft"}')
        assert reply.status_code == 403
        error_id = reply.json()["errorId"]
        replicas = [e["name"] for e in ray.util.list_named_actors(all_namespaces=True)
                    if e["namespace"] == "serve" and APP in e["name"]
                    and "REPLICA" in e["name"]]
        assert replicas
        paths = [_stderr_of(ray.get_actor(name, namespace="serve")) for name in replicas]
        deadline = time.monotonic() + 20
        found = None
        while found is None and time.monotonic() < deadline:
            for path in paths:
                try:
                    found = _json_line_with(path, error_id, timeout=0.1)
                    break
                except AssertionError:
                    continue
        assert found is not None, f"error id {error_id} in none of {paths}"
        assert found["logger"] == "ray_rooms.gateway" and "NotOwner" in found["message"]
        await alice.ws.close()
    finally:
        shutdown_gateway(APP)


def _serve_log_lines(replica, needle: str) -> int:
    """How many lines of Serve's own log file of ``replica`` (an actor handle; the file
    ``serve/replica_<app>_<deployment>_<id>.log`` beside the worker's logs) hold
    ``needle``."""
    err = _stderr_of(replica)
    logs_dir = os.path.dirname(err)
    serve_dir = os.path.join(logs_dir, "serve")
    replica_id = ray.get(replica.__ray_call__.remote(
        lambda self: ray.get_runtime_context().get_actor_name()), timeout=30).split("#")[-1]
    [path] = [os.path.join(serve_dir, name) for name in os.listdir(serve_dir)
              if name.startswith("replica_") and name.endswith(f"_{replica_id}.log")]
    with open(path, encoding="utf-8", errors="replace") as f:
        return sum(needle in line for line in f)


def test_serves_access_log_reaches_its_file_and_is_not_kept_in_memory(ray_session, tmp_path):
    """Serve buffers a replica's log records (1,000 of them when throughput-optimized)
    and writes them to the replica's log file. Building a ``uvicorn.Config`` in the
    replica (as the WebSocket limits once did to probe it) runs uvicorn's
    ``dictConfig``, which closes that buffer's file: from then on every request's
    access record was kept in the replica's memory for ever (~1.5 KB a request, the
    soak's growth) and the file stayed empty."""
    from actors.gateway import GatewayLimits

    app = "rooms-accesslog"
    config = RoomsConfig(namespace=f"rooms-al-{uuid.uuid4().hex[:8]}",
                         store_url=f"sqlite:///{tmp_path}/r.sqlite3", idle_timeout=0)
    url = deploy_gateway(config, port=free_port(), name=app, dev=True,
                         limits=GatewayLimits(http_rate_per_s=10_000, http_burst=10_000))
    try:
        with httpx.Client(base_url=url, timeout=20) as http:
            for _ in range(1_100):  # more than the buffer holds
                assert http.get("/healthz").status_code == 200
        [name] = [e["name"] for e in ray.util.list_named_actors(all_namespaces=True)
                  if e["namespace"] == "serve" and app in e["name"] and "REPLICA" in e["name"]]
        replica = ray.get_actor(name, namespace="serve")
        deadline = time.monotonic() + 20
        # the buffer is written out each time it holds 1,000 records (a few of them
        # the replica's start): ~995 of the requests, the rest stay buffered
        while (written := _serve_log_lines(replica, "/healthz")) < 900:
            assert time.monotonic() < deadline, (
                f"Serve's log file of the replica holds {written} of 1,100 requests")
            time.sleep(0.5)
    finally:
        shutdown_gateway(app)
