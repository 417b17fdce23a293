"""The floor under a WebSocket round trip through Serve: what any gateway built the way
ray-rooms' is (a Serve replica behind Serve's HAProxy ingress, calling an actor per
frame) pays before it does any work of its own (issue 23, item 2: "show with figures
what bounds it").

:func:`deploy_floor` deploys a Serve application of one replica (route prefix
``/floor``, beside the gateway, through the same HAProxy) with two WebSocket routes:

* ``/floor/echo``: each text frame is sent back as it is (HAProxy + uvicorn + the
  replica's event loop, no Ray call);
* ``/floor/actor``: each text frame makes one call of a bare actor
  (:class:`benchmarks.common.Bare`) and is sent back once it returns (the floor of
  socket -> actor -> socket);
* ``/floor/broadcast``: each text frame makes one call of the bare actor and is then
  written to every socket connected to the route, one after another (the floor of
  socket -> actor -> every socket: a room's broadcast with no turn, no save, no outbox
  and no per-socket writer).
* ``/floor/batched?actor=<i>``: text frames go to bare actor ``i`` (one per socket, as
  each pipelining client of the gateway benchmark has its own room) in batches, the way
  the gateway sends a room's frames (:mod:`actors.gateway.batcher`): one call under way
  at a time, carrying every frame that arrived meanwhile (at most 256); once it returns,
  each frame of the batch is sent back (the floor of pipelined frames: one actor call per
  batch, with no turn, no save, no outbox and no per-socket writer).
* ``/floor/served`` (HTTP): the port of the server that read the request, so that
  :func:`deploy_floor` can wait until HAProxy sends the floor's connections to the
  replica itself and not through Serve's proxy actor.

``benchmarks/gateway.py`` measures the first two beside the bare actor call and the
gateway's ``userUpdate`` round trip, and the fourth beside its pipelined ``userUpdate`` s;
``benchmarks/broadcast.py`` measures the third beside the gateway's broadcast
(:func:`floor_broadcast`).
"""

# No ``from __future__ import annotations``: FastAPI reads the WebSocket parameter's
# annotation at import, and Serve pickles the app (a module-level one, by reference).
import asyncio
import json
import time
from typing import Any

import httpx
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from ray import serve

__all__ = ["FLOOR_APP", "FLOOR_BATCH", "FLOOR_PREFIX", "Floor", "delete_floor",
           "deploy_floor", "floor_broadcast", "room_state_frame"]

FLOOR_APP = "rooms-bench-floor"
"""The Serve application's name."""
FLOOR_PREFIX = "/floor"
"""Its route prefix."""
FLOOR_BATCH = 256
"""The most frames of one socket in one call of ``/floor/batched`` (the gateway's
``max_batch`` default)."""

app = FastAPI()


@serve.deployment(num_replicas=1, max_ongoing_requests=10_000)
@serve.ingress(app)
class Floor:
    """The floor's replica: its routes are in the module docstring.

    Args:
        actor: a :class:`benchmarks.common.Bare` handle, called once per frame of
            ``/actor`` and ``/broadcast``.
        compression: whether the replica negotiates permessage-deflate (set as the
            gateway sets it, :func:`actors.seam.configure_websockets`, before Serve
            starts the replica's server); ``None``: uvicorn's default (on).
        actors: :class:`benchmarks.common.Bare` handles for ``/batched`` (its
            ``actor`` query parameter picks one, modulo their number; none given:
            ``actor``).
    """

    def __init__(self, actor: Any, compression: bool | None = None,
                 actors: list[Any] | None = None) -> None:
        self.actor = actor
        self.actors = list(actors or [actor])
        self.sockets: list[WebSocket] = []
        if compression is not None:
            from actors.seam import configure_websockets

            configure_websockets(1 << 20, compression)

    @app.get("/served")
    async def served(self, request: Request) -> dict:
        """``{"port": p}``: the port of the server that read this request. Through
        HAProxy's direct ingress that is the replica's own port; through Serve's proxy
        actor (HAProxy's fallback while the replica is not yet among its servers) it
        is the public port (see :func:`deploy_floor`)."""
        server = request.scope.get("server")
        return {"port": server[1] if server else None}

    @app.websocket("/echo")
    async def echo(self, ws: WebSocket) -> None:
        """Send every text frame back as it is."""
        await ws.accept()
        try:
            while True:
                await ws.send_text(await ws.receive_text())
        except WebSocketDisconnect:
            pass

    @app.websocket("/actor")
    async def via_actor(self, ws: WebSocket) -> None:
        """Send every text frame back once one call of the bare actor returned."""
        await ws.accept()
        try:
            while True:
                text = await ws.receive_text()
                await self.actor.call.remote("floor", text)
                await ws.send_text(text)
        except WebSocketDisconnect:
            pass

    @app.websocket("/batched")
    async def batched(self, ws: WebSocket, actor: int = 0) -> None:
        """Send text frames to bare actor ``actor`` in batches, one call under way at a
        time, and send each frame back once its batch's call returned (see the module
        docstring)."""
        await ws.accept()
        target = self.actors[actor % len(self.actors)]
        queue: list[str] = []
        arrived = asyncio.Event()

        async def send() -> None:
            while True:
                await arrived.wait()
                arrived.clear()
                while queue:
                    batch = queue[:FLOOR_BATCH]
                    del queue[:FLOOR_BATCH]
                    await target.call.remote("floor", batch)
                    for text in batch:
                        await ws.send_text(text)

        sender = asyncio.ensure_future(send())
        try:
            while True:
                queue.append(await ws.receive_text())
                arrived.set()
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()

    @app.websocket("/broadcast")
    async def broadcast(self, ws: WebSocket) -> None:
        """Every text frame from any socket: one call of the bare actor, then the frame
        is written to every socket connected here, in the order they connected."""
        await ws.accept()
        self.sockets.append(ws)
        try:
            while True:
                text = await ws.receive_text()
                await self.actor.call.remote("floor", text)
                for peer in list(self.sockets):
                    await peer.send_text(text)
        except WebSocketDisconnect:
            pass
        finally:
            self.sockets.remove(ws)


def deploy_floor(bare: Any, compression: bool | None = None,
                 actors: list[Any] | None = None, direct: bool | None = None,
                 timeout_s: float = 60.0) -> None:
    """Deploy the floor application (see the module docstring) on the running Serve,
    calling ``bare`` (a :class:`benchmarks.common.Bare` handle) from ``/floor/actor``
    and ``/floor/broadcast``, and ``actors`` (handles, default ``[bare]``) from
    ``/floor/batched``; ``compression``: see :class:`Floor`.

    Returns once it is running and, with ``direct`` (default: Serve's ingress is
    HAProxy, ``ROOMS_GATEWAY_INGRESS``), once HAProxy sends its requests to the
    replica's own server. Until HAProxy lists a new replica it sends the route's
    requests to its fallback server, Serve's proxy actor: another hop, and that
    proxy's uvicorn, which negotiates permessage-deflate whatever ``compression``
    says. A floor measured then is not the floor.

    Raises:
        TimeoutError: ``direct`` and HAProxy still used its fallback after
            ``timeout_s`` seconds.
        What ``serve.run`` raises.
    """
    serve.run(Floor.bind(bare, compression, actors), name=FLOOR_APP,
              route_prefix=FLOOR_PREFIX)
    if direct is None:
        from actors.gateway.deploy import GatewayIngress

        direct = GatewayIngress().ingress == "haproxy"
    if direct:
        _wait_direct(timeout_s)


def _wait_direct(timeout_s: float, steady_s: float = 3.0) -> None:
    """Wait until every ``/floor/served`` request for ``steady_s`` seconds, each on a
    new connection every 0.1 s, is answered by the replica's own server (its port is
    not Serve's public one). One answer is not enough: for a while after a reload some
    new connections still go through the proxy actor (seen here: the first WebSockets
    after one direct answer negotiated the proxy's compression; probably the old
    HAProxy process still accepting with the old configuration). Raises
    ``TimeoutError`` past ``timeout_s`` seconds, or when Serve's address cannot be
    read."""
    from actors.seam import serve_http_address

    address = serve_http_address()
    if address is None:
        raise TimeoutError("Serve's HTTP address could not be read")
    public = address[1]
    deadline = time.monotonic() + timeout_s
    steady_since = None
    while True:
        try:
            reply = httpx.get(f"http://127.0.0.1:{public}{FLOOR_PREFIX}/served", timeout=5)
            direct = reply.status_code == 200 and reply.json().get("port") not in (None, public)
        except httpx.HTTPError:
            direct = False
        if not direct:
            steady_since = None
        elif steady_since is None:
            steady_since = time.monotonic()
        elif time.monotonic() - steady_since >= steady_s:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"HAProxy still sends the floor's requests through Serve's "
                               f"proxy actor after {timeout_s:g} s")
        time.sleep(0.1)


def room_state_frame(users: int, k: int) -> str:
    """A ``roomState`` frame of ``users`` users shaped as the gateway's (ids ``b-<i>``,
    names, an audio track, flags), carrying the round ``k`` as ``"round"``: the
    payload the broadcast floor writes (about the size of a 50-user meeting's)."""
    return json.dumps({"type": "roomState", "round": k, "state": {
        "users": [
            {"id": f"b-{i}", "name": f"b{i}", "raisedHand": False, "speaking": False,
             "joined": False, "tracks": {"audio": f"bench/{k}", "audioEnabled": True,
                                         "audioUnavailable": False}}
            for i in range(users)], "ai": {"enabled": False}, "meetingId": None}},
        separators=(",", ":"))


async def floor_broadcast(base: str, n: int, rounds: int) -> list[float]:
    """Per round, the time (seconds) from one :func:`room_state_frame` of ``n`` users
    sent on the first of ``n`` sockets of ``{base}/floor/broadcast`` until every socket
    has read (and parsed, as the gateway benchmark's clients do) that round's frame.
    ``base``: ``ws://host:port``. Raises ``TimeoutError`` if a round takes over 30 s."""
    from websockets.asyncio.client import connect

    sockets = [await connect(f"{base}{FLOOR_PREFIX}/broadcast", max_size=None)
               for _ in range(n)]
    marks: dict[int, asyncio.Event] = {}
    counts: dict[int, int] = {}

    async def read(ws: Any) -> None:
        async for frame in ws:
            k = json.loads(frame)["round"]
            counts[k] = counts.get(k, 0) + 1
            if counts[k] == n and k in marks:
                marks[k].set()

    readers = [asyncio.ensure_future(read(ws)) for ws in sockets]
    times = []
    try:
        for k in range(rounds + 3):  # 3 rounds of warm-up
            marks[k] = asyncio.Event()
            started = time.perf_counter()
            await sockets[0].send(room_state_frame(n, k))
            await asyncio.wait_for(marks[k].wait(), 30)
            if k >= 3:
                times.append(time.perf_counter() - started)
    finally:
        for task in readers:
            task.cancel()
        for ws in sockets:
            await ws.close()
    return times


def delete_floor() -> None:
    """Delete the floor application if it is deployed (nothing happens otherwise)."""
    try:
        serve.delete(FLOOR_APP)
    except Exception:  # noqa: BLE001 - never deployed, or Serve is gone
        pass
