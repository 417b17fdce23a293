"""The metrics end to end (issue 22), for real: a Ray head started with ``ray start``
(its dashboard writes Prometheus's service-discovery file), the Serve application
deployed with ``serve deploy``, a real Prometheus (Debian's package) scraping the node
through that file, and a scripted meeting through the gateway that does what every
panel of ``deploy/grafana/ray-rooms.json`` charts: sockets, frames, refusals, closes,
the Calls proxy (its Calls API is a closed loopback port: every request fails), the AI
(failing the same way), hibernation, shedding at a 4-slot bound.

Then every PromQL query of every panel must return data, and the series of every
``ray_rooms_*`` metric are counted before and after 20 more rooms: no label may take
new values (``WorkerId``, ``NodeAddress``, anything but the catalogue's fixed tags).
Before the metrics went through the sink, each room process exported its own series
(``WorkerId``): this test fails on that.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from actors.metrics_catalogue import CATALOGUE
from actors.net import free_port
from tests.polling import until
from tests.rayhead import RayHead
from tests.test_metrics import dashboard_queries
from tests.test_serve_deploy import _config, _deploy, _healthy
from tests.wsclient import open_client
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.ray

FIXED_TAGS = {key for spec in CATALOGUE.values() for key, _ in spec.tags} | {"le"}
"""Labels whose values come from the catalogue's fixed sets (or bucket bounds)."""


def _unused_port(avoid: frozenset[int]) -> int:
    """A loopback port that nothing answers on and that is not in ``avoid``. (Once,
    Prometheus got the gateway's own port: the gateway's listener does not hold
    127.0.0.1 exclusively, and every request then met Prometheus's 404.)"""
    import socket

    for _ in range(50):
        port = free_port()
        if port in avoid:
            continue
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise AssertionError("no unused loopback port found")


class Prometheus:
    """``prometheus`` on a loopback port, scraping every second the targets of Ray's
    service-discovery file ``sd_file``, its data in ``tmp``."""

    def __init__(self, sd_file: Path, tmp: Path, avoid: frozenset[int] = frozenset()) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed (bash .ci/run installs it)"
        self.port = _unused_port(avoid)
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "ray", "file_sd_configs": [
                {"files": [str(sd_file)], "refresh_interval": "1s"}]}]}))
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("w"))
        self.url = f"http://127.0.0.1:{self.port}"

        def ready() -> bool:
            assert self.process.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        until("Prometheus to be ready", ready, 60, every=0.3)

    def query(self, expr: str) -> list[dict]:
        """The result vector of the instant query ``expr`` (now)."""
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = reply.json()
        assert body.get("status") == "success", (expr, body)
        return body["data"]["result"]

    def series(self) -> list[dict[str, str]]:
        """The label sets of every ``ray_rooms_*`` series Prometheus holds now."""
        reply = httpx.get(f"{self.url}/api/v1/series",
                          params={"match[]": '{__name__=~"ray_rooms_.+"}',
                                  "start": str(time.time() - 15)}, timeout=10)
        return reply.json()["data"]

    def stop(self) -> None:
        """Stop Prometheus."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _grafana(expr: str) -> str:
    """A panel's query with Grafana's variables as the test's Grafana would fill them."""
    return (expr.replace("$session", ".+").replace("$__rate_interval", "1m")
            .replace("$__range", "10m"))


async def _meeting(url: str, room: str) -> None:
    """Through the gateway: two users meet, send updates, a direct message, pings and
    heartbeats, enable the AI (which fails: Calls is unreachable), call the Calls
    proxy, hit the frame rate limit, get a handshake refused; then leave."""
    ws = url.replace("http://", "ws://")
    alice = await open_client(f"{ws}/parties/rooms/{room}?_pk=alice&username=alice")
    bob = await open_client(f"{ws}/parties/rooms/{room}?_pk=bob&username=bob")
    await bob.wait_for(lambda m: m["type"] == "roomState"
                       and len(m["state"]["users"]) == 2, "both users")
    for n, client in enumerate((alice, bob)):
        await client.send({"type": "userUpdate", "user": {
            "id": ("alice", "bob")[n], "name": ("alice", "bob")[n], "raisedHand": False,
            "speaking": False, "joined": True, "tracks": {"audioUnavailable": False}}})
    await alice.send({"type": "directMessage", "to": "bob", "message": "hi"})
    await bob.wait_for(lambda m: m["type"] == "directMessage", "the direct message")
    await alice.send({"type": "partyserver-ping"})
    await alice.send({"type": "heartbeat"})
    await alice.send({"type": "enableAi", "instructions": "be brief"})
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        reply = await http.post("/partytracks/sessions/new?username=alice", json={})
        assert reply.status_code == 502, reply.text  # Calls is a closed port
    with pytest.raises(InvalidStatus):  # "ai" is reserved: the handshake is refused
        await open_client(f"{ws}/parties/rooms/{room}?_pk=ai&username=mallory")
    for _ in range(30):  # past the test's 20 frames/s: some are refused
        await bob.send({"type": "heartbeat"})
    await bob.wait_for(lambda m: m["type"] == "error" and "rate" in m.get("error", ""),
                       "a rate-limit error")
    await asyncio.sleep(1.0)
    await alice.ws.close()
    await bob.ws.close()


async def _rooms(url: str, rooms: list[str], gap_s: float = 0.0) -> None:
    """One HTTP message to each of ``rooms`` (each a new room: at the 4-slot bound the
    idle ones are shed), one at a time, ``gap_s`` seconds apart."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for room in rooms:
            reply = await http.post(f"/rooms/{room}/messages?username=poster",
                                    content=b'{"type":"heartbeat"}')
            assert reply.status_code == 200, reply.text
            await asyncio.sleep(gap_s)


def _labels_beyond_tags(series: list[dict[str, str]]) -> dict[str, set[str]]:
    values: dict[str, set[str]] = {}
    for labels in series:
        for key, value in labels.items():
            if key not in FIXED_TAGS and key != "__name__":
                values.setdefault(key, set()).add(value)
    return values


def test_every_panel_has_data_and_no_label_grows_with_rooms(tmp_path):
    closed_port = free_port()  # nothing listens: Calls and OpenAI fail, as they can
    env = {"RAY_metrics_report_interval_ms": "1000", "ROOMS_METRICS_FLUSH_S": "1",
           "CALLS_APP_ID": "metrics-test", "CALLS_APP_SECRET": "not-a-secret",
           "CALLS_BASE_URL": f"http://127.0.0.1:{closed_port}/v1",
           "OPENAI_API_KEY": "not-a-key",
           "OPENAI_BASE_URL": f"http://127.0.0.1:{closed_port}/v1"}
    head = RayHead(tmp_path, resources={"room_slot": 4}, env=env).start()
    prometheus = None
    try:
        port = free_port()
        config = _config(port, f"prom-{uuid.uuid4().hex[:6]}",
                         f"sqlite:///{tmp_path}/rooms.sqlite3", rate=20)
        # rooms never hibernate for idleness here (idle_timeout 60 s): the bound must
        # shed them. With idle_timeout 3 s a room could hibernate by itself before the
        # fifth room came, depending on how fast rooms start, and one CI run saw no shed
        config["applications"][0]["args"]["rooms"].update(shed_idle_s=0.5, idle_timeout=60)
        _deploy(head, tmp_path, config)
        url = f"http://127.0.0.1:{port}"
        _healthy(url)
        prometheus = Prometheus(head.tmp / "session_latest" /
                                "prom_metrics_service_discovery.json", tmp_path,
                                avoid=frozenset({port}))
        _healthy(url)  # still the gateway that answers there

        asyncio.run(_meeting(url, f"meet-{uuid.uuid4().hex[:6]}"))
        # six more rooms at a 4-slot bound, 0.6 s apart (a room idle 0.5 s may be shed):
        # the fifth and the sixth each shed one
        asyncio.run(_rooms(url, [f"warm-{i}-{uuid.uuid4().hex[:4]}" for i in range(6)],
                           gap_s=0.6))
        time.sleep(2.0)  # the replica's and the rooms' tallies flush (every 1 s)

        queries = [_grafana(q) for q in dashboard_queries()]
        deadline = time.monotonic() + 120
        while True:
            empty = [q for q in queries if not prometheus.query(q)]
            if not empty:
                break
            assert time.monotonic() < deadline, f"panels with no data: {empty}"
            time.sleep(2.0)

        before = prometheus.series()
        activations = "sum(ray_rooms_activations_total)"
        seen = float(prometheus.query(activations)[0]["value"][1])
        asyncio.run(_rooms(url, [f"more-{i}-{uuid.uuid4().hex[:4]}" for i in range(20)]))
        deadline = time.monotonic() + 60
        while float(prometheus.query(activations)[0]["value"][1]) < seen + 20:
            assert time.monotonic() < deadline, (
                "the 20 rooms' activations never showed", seen,
                [(r["metric"].get("WorkerId", "")[:8], r["metric"].get("Component"),
                  r["value"][1]) for r in prometheus.query("ray_rooms_activations_total")])
            time.sleep(1.0)
        time.sleep(3.0)
        after = prometheus.series()

        grown = {key: sorted(values - _labels_beyond_tags(before).get(key, set()))
                 for key, values in _labels_beyond_tags(after).items()}
        assert not any(grown.values()), grown
        workers = _labels_beyond_tags(after).get("WorkerId", set())
        assert len(workers) == 1, workers  # the sink's, whatever process recorded
        names = {s["__name__"] for s in after}
        counted = len([s for s in after if s["__name__"] in names])
        assert counted <= len(before) + 10, (len(before), counted)  # new tag values only
        for labels in after:  # no room id anywhere in a label value
            assert not any(re.search(r"(more|warm|meet)-", v) for v in labels.values()), \
                labels
        print(json.dumps({"series_before": len(before), "series_after": counted,
                          "queries": len(queries)}))
    finally:
        if prometheus is not None:
            prometheus.stop()
        head.stop()
