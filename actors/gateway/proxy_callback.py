"""The gateway's WebSocket limits in Serve's proxy actor, through Serve's HTTP proxy
callback.

Serve's proxy actor runs a uvicorn server of its own, in a process of its own: it is
the ingress of ``deploy_gateway(ingress="proxy")`` and of the Serve config
(``deploy/serve.yaml``, KubeRay), and HAProxy's fallback in ``ingress="haproxy"``
(HAProxy sends a route there while it lists none of the route's replicas up: after the
first deploy, after a reload, when the only replica died). The gateway's replicas set
their uvicorn's frame limit and compression themselves
(:func:`actors.seam.configure_websockets`, in :class:`actors.gateway.app.Gateway`), but
that proxy kept uvicorn's defaults: it buffered a client's frame up to 16 MiB and
relayed it to the room, which answered ``error`` (a 64 KiB limit became 16 MiB of
buffering per socket), and it negotiated permessage-deflate whatever
``ROOMS_GATEWAY_WS_COMPRESSION`` said.

Serve calls the function named by its environment variable
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` in each proxy process (and in each
direct-ingress replica) before it builds that process's uvicorn server, and adds the
Starlette middlewares it returns. :func:`proxy_callback` returns none: it configures
the process's uvicorn from the environment, as the replicas' own call does from the
gateway's settings. :func:`proxy_env` is the environment that names it.

Where the variables come from:

* :func:`actors.gateway.deploy_gateway` puts :func:`proxy_env` (of its ``config`` and
  ``limits``) in the Serve controller's runtime environment, which the proxy actors it
  starts inherit. It applies when that call starts Serve.
* The Serve config path (``serve deploy``, KubeRay) starts Serve without us: the node's
  environment carries the variable (``deploy/kubernetes/rayservice.yaml`` sets it in
  every container; for ``ray start``, export it first), and the limits are the
  environment's ``ROOMS_MAX_MESSAGE_BYTES`` and ``ROOMS_GATEWAY_WS_COMPRESSION``, the
  same variables the application's builder reads (``args.rooms`` and ``args.limits``
  in a Serve config reach the replicas only; the replicas' own setting wins there, and
  the builder warns when the two differ: :func:`proxy_mismatch`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..config import RoomsConfig
from ..seam import configure_websockets, websockets_configured
from .limits import GatewayLimits

__all__ = ["PROXY_CALLBACK", "PROXY_CALLBACK_ENV_VAR", "ProxyWebSockets", "proxy_callback",
           "proxy_env", "proxy_mismatch"]

log = logging.getLogger("ray_rooms.gateway")

PROXY_CALLBACK_ENV_VAR = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
"""Serve's environment variable naming a function its proxy calls at start (Serve reads
it once, when its modules are imported in the process)."""

PROXY_CALLBACK = f"{__name__}.proxy_callback"
"""The import path of :func:`proxy_callback`, the value of :data:`PROXY_CALLBACK_ENV_VAR`."""


class ProxyWebSockets(BaseSettings):
    """The two settings the proxy's uvicorn takes, read from the environment under the
    names :class:`actors.config.RoomsConfig` and
    :class:`actors.gateway.limits.GatewayLimits` give them.

    Attributes:
        max_message_bytes: ``ROOMS_MAX_MESSAGE_BYTES``, bytes: the largest WebSocket
            message; a larger one closes the socket with 1009 before it is buffered.
        ws_compression: ``ROOMS_GATEWAY_WS_COMPRESSION``: negotiate permessage-deflate
            (RFC 7692) with clients that offer it.
    """

    model_config = SettingsConfigDict(extra="ignore")

    max_message_bytes: int = Field(RoomsConfig.model_fields["max_message_bytes"].default,
                                   gt=0, validation_alias="ROOMS_MAX_MESSAGE_BYTES")
    ws_compression: bool = Field(GatewayLimits.model_fields["ws_compression"].default,
                                 validation_alias="ROOMS_GATEWAY_WS_COMPRESSION")


def proxy_env(max_message_bytes: int, ws_compression: bool) -> dict[str, str]:
    """The environment that makes Serve's proxy processes apply these limits.

    Args:
        max_message_bytes: the largest WebSocket message, bytes (the room's limit,
            ``RoomsConfig.max_message_bytes``).
        ws_compression: whether to negotiate permessage-deflate
            (``GatewayLimits.ws_compression``).

    Returns:
        ``{variable: value}`` for a runtime environment's ``env_vars``: Serve's proxy
        callback variable naming :func:`proxy_callback`, and the two settings.
    """
    return {PROXY_CALLBACK_ENV_VAR: PROXY_CALLBACK,
            "ROOMS_MAX_MESSAGE_BYTES": str(int(max_message_bytes)),
            "ROOMS_GATEWAY_WS_COMPRESSION": "true" if ws_compression else "false"}


def proxy_callback() -> list[Any]:
    """Serve's HTTP proxy callback: configure this process's uvicorn WebSocket frame
    limit and compression from the environment (:class:`ProxyWebSockets`), unless
    this process configured them already (a gateway replica, whose own settings win).

    Invalid variables are logged as an error and the defaults (64 KiB, compression on,
    as ``RoomsConfig`` and ``GatewayLimits``) apply: the ingress must start whatever
    the environment says; the gateway's replicas refuse to start with such values,
    with their own error.

    Returns:
        ``[]``: no Starlette middlewares for Serve to add.
    """
    if websockets_configured():
        return []
    try:
        settings = ProxyWebSockets()
    except ValidationError as error:
        log.error("Serve's proxy: invalid ROOMS_MAX_MESSAGE_BYTES or "
                  "ROOMS_GATEWAY_WS_COMPRESSION (%s); using the defaults",
                  "; ".join(e["msg"] for e in error.errors()))
        settings = ProxyWebSockets.model_construct()
    if configure_websockets(settings.max_message_bytes, settings.ws_compression):
        log.info("Serve's proxy: WebSocket messages up to %d bytes, compression %s",
                 settings.max_message_bytes, "on" if settings.ws_compression else "off")
    return []


def proxy_mismatch(max_message_bytes: int, ws_compression: bool) -> str | None:
    """What Serve's proxy, configured from this process's environment, would do
    differently from replicas with these settings (a Serve config whose ``args.rooms``
    or ``args.limits`` set them: the proxy reads the environment only).

    Args:
        max_message_bytes: the replicas' message limit, bytes.
        ws_compression: whether the replicas negotiate permessage-deflate.

    Returns:
        A sentence for a warning, or ``None`` when they agree, when the environment does
        not name :func:`proxy_callback`, or when its values are invalid (the callback
        logs those itself).
    """
    if os.environ.get(PROXY_CALLBACK_ENV_VAR) != PROXY_CALLBACK:
        return None
    try:
        proxy = ProxyWebSockets()
    except ValidationError:
        return None
    differences = []
    if proxy.max_message_bytes != max_message_bytes:
        differences.append(f"refuses messages over {proxy.max_message_bytes} bytes "
                           f"(the gateway's limit: {max_message_bytes})")
    if proxy.ws_compression != ws_compression:
        differences.append(f"negotiates compression {'on' if proxy.ws_compression else 'off'}"
                           f" (the gateway: {'on' if ws_compression else 'off'})")
    if not differences:
        return None
    return ("Serve's proxy " + " and ".join(differences) + ": it reads "
            "ROOMS_MAX_MESSAGE_BYTES and ROOMS_GATEWAY_WS_COMPRESSION from the node's "
            "environment only; set them there, not in args.rooms or args.limits")
