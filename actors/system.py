"""Start the whole system on this machine: Ray, the emulators if needed, the gateway.

Used by ``rooms serve`` (which then waits) and ``rooms demo`` (which then runs a meeting).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from .cluster import check_store_fits_cluster
from .config import RoomsConfig, ServiceEndpoints
from .gateway import deploy_gateway, shutdown_gateway
from .gateway.deploy import GatewayIngress
from .net import free_port
from .slots import slot_resources

log = logging.getLogger("ray_rooms.system")

__all__ = ["DASHBOARD_TOKEN_HINT", "LocalSystem", "dashboard_needs_token", "start_system"]

DASHBOARD_TOKEN_HINT = "it asks for a token: `ray get-auth-token` prints it"
"""What ``rooms serve`` says beside the Dashboard URL when Ray's token auth is on."""


def dashboard_needs_token() -> bool:
    """Whether the connected Ray protects its Dashboard with a token (Ray 2.60's
    default, ``RAY_AUTH_MODE=token``; ``RAY_AUTH_MODE=disabled`` turns it off)."""
    from .seam import token_auth_enabled

    return token_auth_enabled()


@dataclass
class LocalSystem:
    """A running system: the gateway URL, the config rooms get, the emulators if any.

    Attributes:
        gateway_url: ``http://host:port`` of the gateway.
        config: the :class:`RoomsConfig` rooms are created with.
        emulators: the running :class:`bridges.local.Emulators`, or ``None`` when real
            Cloudflare Calls and OpenAI credentials are configured.
        token_secret: the HMAC secret of identity tokens (never printed).
    """

    gateway_url: str
    config: RoomsConfig
    emulators: Any = None
    token_secret: SecretStr | None = None
    started_ray: bool = False
    urls: dict[str, str] = field(default_factory=dict)
    app_name: str = "rooms-gateway"
    stop_timeout_s: float = 60.0

    def stop(self) -> bool:
        """Delete this gateway application (Serve itself only when no application is
        left), stop the emulators, and shut down Ray if we started it, within
        ``stop_timeout_s`` seconds even when Ray no longer answers.

        Returns:
            ``True`` if every step finished in time; ``False`` if Ray did not answer
            (the steps are abandoned on a daemon thread). Raises nothing.
        """
        import threading

        import ray

        def steps() -> None:
            try:
                shutdown_gateway(self.app_name)
            except Exception as error:  # noqa: BLE001 - Ray may be gone already
                log.warning("deleting the gateway failed (%s)", type(error).__name__)
            finally:
                if self.started_ray:
                    ray.shutdown()

        worker = threading.Thread(target=steps, name="rooms-stop", daemon=True)
        worker.start()
        worker.join(self.stop_timeout_s)
        if self.emulators is not None:
            self.emulators.stop()
        if worker.is_alive():
            log.warning("Ray did not answer within %.0f s; stopped without it",
                        self.stop_timeout_s)
            return False
        return True


def start_system(
    *,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    replicas: int = 1,
    dev: bool = False,
    config: RoomsConfig | None = None,
    token_secret: SecretStr | None = None,
    ingress: str | None = None,
    emulators: bool | None = None,
) -> LocalSystem:
    """Start (or join, with ``address``) Ray, the local emulators when no credentials are
    configured, and the gateway.

    Args:
        address: a Ray cluster address, ``"local"`` to start a new local Ray, or
            ``None`` to join a local Ray or start one.
        host: the gateway's listen address.
        port: the gateway's port (default ``ROOMS_PORT`` or 8000; 0 picks a free one).
        replicas: gateway replicas.
        dev: accept ``?username=`` without a token.
        config: the room settings (default: from the environment).
        token_secret: the token HMAC secret (default ``ROOMS_TOKEN_SECRET``; outside
            ``dev`` one of the two is required).
        ingress: ``"haproxy"`` or ``"proxy"`` (see :func:`actors.gateway.deploy_gateway`;
            default ``ROOMS_GATEWAY_INGRESS`` or ``"haproxy"``).
        emulators: start the local Calls and OpenAI emulators (on loopback) for the
            AI agent; default: in ``dev`` when no credentials are set. Outside them,
            the AI agent uses ``CALLS_*`` and ``OPENAI_*`` (or is not available).

    Returns:
        The running :class:`LocalSystem`.

    Raises:
        ValueError: not ``dev`` and no token secret (the message names
            ``ROOMS_TOKEN_SECRET``); or half a set of AI credentials (the message names
            what is missing); or ``emulators`` with credentials set. Checked before
            Ray or the emulators start.
        StoreNotShared: the Ray cluster has more than one alive node and
            ``config.store_url`` is SQLite or memory.
        TimeoutError: the gateway did not become ready.
    """
    import secrets

    import ray

    from bridges.config import CallsSettings

    from .auth import AuthSettings
    from .gateway.application import resolve_auth

    config = (config or RoomsConfig()).model_copy(deep=True)
    auth = AuthSettings()
    if token_secret is not None:
        auth.token_secret = token_secret
    resolve_auth(auth, dev)  # refuse now, before anything starts
    use_emulators = _ai_services(dev, emulators)
    started_ray = False
    context = None
    if not ray.is_initialized():
        kwargs = {"namespace": config.namespace, "configure_logging": False,
                  "log_to_driver": False}
        # a Ray started here offers this node's room slots (ROOMS_MAX_LIVE_ROOMS)
        local = {**kwargs, "resources": slot_resources(config)}
        if address:
            context = ray.init(address=address, **(local if address == "local" else kwargs))
            started_ray = address == "local"
        else:
            try:
                context = ray.init(address="auto", **kwargs)
            except (ConnectionError, RuntimeError):
                context = ray.init(address="local", **local)
                started_ray = True
    check_store_fits_cluster(config.store_url)
    running = None  # the emulators, when started
    urls: dict[str, str] = {}
    if use_emulators:
        from bridges.local import start_emulators

        app_secret, api_key = secrets.token_urlsafe(16), "sk-local-" + secrets.token_urlsafe(8)
        running = start_emulators(host="127.0.0.1", app_id="local-app",
                                  app_secret=app_secret, api_key=api_key)
        config.services = ServiceEndpoints(
            calls_base_url=running.calls_base_url, calls_app_id="local-app",
            calls_app_secret=SecretStr(app_secret), openai_base_url=running.openai_base_url,
            openai_api_key=SecretStr(api_key), timeout=config.services.timeout,
            retries=config.services.retries,
        )
        urls["calls emulator"] = running.calls_base_url
        urls["openai emulator"] = running.openai_base_url
    elif not CallsSettings().configured:
        urls["AI agent"] = ("not available: set CALLS_APP_ID, CALLS_APP_SECRET and "
                            "OPENAI_API_KEY, or run with --emulators")
    if port is None:
        port = int(os.environ.get("ROOMS_PORT", "8000"))
    if port == 0:
        port = free_port(host)
    # the replicas start the alarm scheduler (wakes hibernating rooms at their alarm
    # time) and the warm pools (new rooms start warm), as under `serve deploy`
    settings = GatewayIngress()
    gateway_url = deploy_gateway(config, host=host, port=port, replicas=replicas, dev=dev,
                                 auth=auth, ingress=ingress, side_actors=True,
                                 name=settings.app_name, route_prefix=settings.route_prefix)
    try:
        dashboard = getattr(context, "dashboard_url", None)
        if dashboard:
            urls["dashboard"] = dashboard if dashboard.startswith("http") else f"http://{dashboard}"
            if dashboard_needs_token():
                urls["dashboard"] += f"  ({DASHBOARD_TOKEN_HINT})"
        node = next(n for n in ray.nodes() if n.get("Alive"))
        urls["metrics"] = (f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}"
                           "/metrics  (ray_rooms_*)")
    except Exception:  # noqa: BLE001 - informational only
        pass
    urls["gateway"] = gateway_url
    from .gateway.pages import load_web_assets

    urls["meeting page"] = gateway_url + "/" + (
        "" if load_web_assets().built else "  (not built: run `rooms web build`)")
    urls["websocket"] = gateway_url.replace("http", "ws", 1) + "/parties/rooms/{room}?_pk={id}"
    return LocalSystem(gateway_url=gateway_url, config=config, emulators=running,
                       token_secret=auth.token_secret, started_ray=started_ray, urls=urls,
                       app_name=settings.app_name, stop_timeout_s=settings.stop_timeout_s)


def _ai_services(dev: bool, emulators: bool | None) -> bool:
    """Whether to start the local emulators, from the flags and the credentials.

    Raises:
        ValueError: half a set of credentials (the message names the missing
            variables), or emulators asked for while credentials are set.
    """
    from bridges.config import CallsSettings, OpenAISettings

    calls, openai = CallsSettings(), OpenAISettings()
    missing = ([] if calls.app_id else ["CALLS_APP_ID"]) + (
        [] if calls.app_secret and calls.app_secret.get_secret_value()
        else ["CALLS_APP_SECRET"]) + ([] if openai.configured else ["OPENAI_API_KEY"])
    if missing and len(missing) < 3:
        raise ValueError("the AI agent's credentials are incomplete: " + ", ".join(missing)
                         + " not set (set all of CALLS_APP_ID, CALLS_APP_SECRET and "
                         "OPENAI_API_KEY, or none of them)")
    if not missing:
        if emulators:
            raise ValueError("--emulators with CALLS_* and OPENAI_API_KEY set: unset them "
                             "to use the local emulators")
        return False
    return dev if emulators is None else emulators
