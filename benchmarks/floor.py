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
  socket -> actor -> socket).

``benchmarks/gateway.py`` measures both beside the bare actor call and the gateway's
``userUpdate`` round trip.
"""

# No ``from __future__ import annotations``: FastAPI reads the WebSocket parameter's
# annotation at import, and Serve pickles the app (a module-level one, by reference).
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from ray import serve

__all__ = ["FLOOR_APP", "FLOOR_PREFIX", "Floor", "delete_floor", "deploy_floor"]

FLOOR_APP = "rooms-bench-floor"
"""The Serve application's name."""
FLOOR_PREFIX = "/floor"
"""Its route prefix."""

app = FastAPI()


@serve.deployment(num_replicas=1, max_ongoing_requests=10_000)
@serve.ingress(app)
class Floor:
    """The floor's replica: ``/echo`` and ``/actor`` (see the module docstring).

    Args:
        actor: a :class:`benchmarks.common.Bare` handle, called once per frame of
            ``/actor``.
    """

    def __init__(self, actor: Any) -> None:
        self.actor = actor

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


def deploy_floor(bare: Any) -> None:
    """Deploy the floor application (see the module docstring) on the running Serve,
    calling ``bare`` (a :class:`benchmarks.common.Bare` handle) from ``/floor/actor``.
    Returns once it is running; raises what ``serve.run`` raises."""
    serve.run(Floor.bind(bare), name=FLOOR_APP, route_prefix=FLOOR_PREFIX)


def delete_floor() -> None:
    """Delete the floor application if it is deployed (nothing happens otherwise)."""
    try:
        serve.delete(FLOOR_APP)
    except Exception:  # noqa: BLE001 - never deployed, or Serve is gone
        pass
