"""OpenTelemetry traces (issue 22, the ``otel`` extra): a real OTLP/HTTP collector on
loopback (it decodes the exporters' protobuf requests), a real gateway and room with
``ROOMS_OTEL_ENDPOINT`` pointing at it; one ``userUpdate`` over a WebSocket must give one
trace with the gateway's ``rooms.frame`` and ``rooms.fanout`` spans and the room's
``rooms.turn`` and ``rooms.save`` spans, the context carried through ``deliver``."""

from __future__ import annotations

import json
import uuid

from actors import tracing
from actors.config import RoomsConfig
from actors.gateway import deploy_gateway, shutdown_gateway
from actors.net import free_port
from benchmarks.otlp import Collector
from tests.polling import until
from tests.wsclient import open_client

APP = "rooms-tracing"


def test_tracing_is_a_no_op_when_off():
    assert tracing.configure("", "room") is False
    assert tracing.start("x") is None and tracing.traceparent(None) is None
    assert tracing.extract("00-" + "1" * 32 + "-" + "2" * 16 + "-01") is None
    with tracing.span("y") as current:
        assert current is None


async def test_one_frame_is_one_trace_across_gateway_and_room(ray_session, tmp_path):
    collector = Collector().start()
    namespace = f"rooms-tracing-{uuid.uuid4().hex[:8]}"
    config = RoomsConfig(namespace=namespace, store_url=f"sqlite:///{tmp_path}/r.sqlite3",
                         idle_timeout=0, otel_endpoint=collector.url)
    url = deploy_gateway(config, port=free_port(), name=APP, dev=True)
    room = f"traced-{uuid.uuid4().hex[:8]}"
    try:
        alice = await open_client(url.replace("http://", "ws://")
                                  + f"/parties/rooms/{room}?_pk=alice&username=alice")
        await alice.wait_for(lambda m: m["type"] == "roomState", "roomState")
        await alice.ws.send(json.dumps({"type": "userUpdate", "user": {
            "id": "alice", "name": "alice", "raisedHand": True, "speaking": False,
            "joined": True, "tracks": {}}}))
        await alice.wait_for(lambda m: m["type"] == "roomState" and any(
            u.get("raisedHand") for u in m["state"]["users"]), "the update")

        def one_trace():
            spans = list(collector.spans)
            for frame in (s for s in spans if s["name"] == "rooms.frame"):
                mine = [s for s in spans if s["trace"] == frame["trace"]]
                names = {s["name"] for s in mine}
                if {"rooms.turn", "rooms.save", "rooms.fanout"} <= names:
                    return frame, mine
            return None

        frame, mine = until("one trace with all four spans", one_trace, 30, every=0.3)
        by_name = {s["name"]: s for s in mine}
        assert frame["service"] == "ray-rooms-gateway" and frame["parent"] == ""
        assert by_name["rooms.turn"]["service"] == "ray-rooms-room"
        assert by_name["rooms.turn"]["parent"] == frame["span"]
        assert by_name["rooms.save"]["service"] == "ray-rooms-room"
        assert by_name["rooms.fanout"]["parent"] == frame["span"]
        await alice.ws.close()
    finally:
        shutdown_gateway(APP)
        collector.stop()
