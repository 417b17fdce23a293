"""The Serve application builder: the whole system from Serve ``args``, with no
long-lived driver.

Ray users deploy Serve applications from a config file: ``serve deploy serve.yaml``, or
KubeRay's RayService, which hands its ``serveConfigV2`` to the same REST API. Such a
config names an *application builder* (``import_path: actors.gateway.application:build``)
and its ``args``; :func:`build` turns those into the gateway deployment, and each
gateway replica makes sure, idempotently and off its start path, that the system's side
actors run: the namespace's alarm scheduler (which wakes hibernated rooms whose alarm
is due) and a warm pool on every node. Both are detached named actors, started with
get-if-exists: a gateway redeploy or a replica's death does not touch them, and a
second replica finds them running. ``rooms serve`` deploys through the same builder
(:func:`actors.gateway.deploy.deploy_gateway`).

``args`` (every key optional; see :class:`GatewayArgs`)::

    dev: false              # development identities (?username=, the name cookie)
    replicas: 1             # gateway replicas (Serve's num_replicas)
    max_replicas_per_node: null
    side_actors: true       # start the alarm scheduler and the warm pools
    rooms: {}               # RoomsConfig fields (namespace, store_url, idle_timeout, ...)
    limits: {}              # GatewayLimits fields (rate_per_s, max_batch, ...)

Secrets never go in ``args`` (a Serve config is shown by the Dashboard): the token
secret, the store URL's password and the AI credentials come from the environment of
the application (``runtime_env.env_vars``, or a Kubernetes Secret mounted as
variables): ``ROOMS_TOKEN_SECRET``, ``ROOMS_STORE_URL``, ``CALLS_*``, ``OPENAI_*``. The
environment is read where the builder runs (Serve's build task, in the application's
runtime environment); ``rooms`` entries override it.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..auth import AuthSettings
from ..config import RoomsConfig
from .limits import GatewayLimits
from .proxy_callback import proxy_mismatch

__all__ = ["GatewayArgs", "application", "build", "replica_env", "resolve_auth"]

log = logging.getLogger("ray_rooms.gateway")


class GatewayArgs(BaseModel):
    """The Serve ``args`` of the application (see the module docstring).

    Attributes:
        dev: development mode: ``?username=`` and the meeting page's name cookie admit
            anyone, and every identity is an operator. Never in production.
        replicas: gateway replicas (>= 1).
        max_replicas_per_node: at most this many replicas on one node (``1``: one per
            node); ``None``: no cap.
        side_actors: start the alarm scheduler and the warm pools (default on; off
            only for tests that run their own).
        rooms: :class:`~actors.config.RoomsConfig` fields over the environment's.
        limits: :class:`~actors.gateway.limits.GatewayLimits` fields over the
            environment's.
    """

    model_config = ConfigDict(extra="forbid")

    dev: bool = False
    replicas: int = Field(1, ge=1)
    max_replicas_per_node: Optional[int] = Field(None, ge=1)
    side_actors: bool = True
    rooms: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, Any] = Field(default_factory=dict)


def resolve_auth(auth: AuthSettings | None, dev: bool) -> AuthSettings:
    """The identity settings a deployment runs with.

    Args:
        auth: settings to start from (default: the environment's, ``ROOMS_*``).
        dev: development mode (turns ``dev_auth`` on).

    Returns:
        A copy; in development mode with a random session secret unless one is set
        (bound once, so shared by every replica).

    Raises:
        ValueError: outside development mode no token secret is set (the error names
            ``ROOMS_TOKEN_SECRET``).
    """
    auth = (auth or AuthSettings()).model_copy()
    if dev:
        auth.dev_auth = True
    if auth.dev_auth and auth.session_secret is None:
        auth.session_secret = SecretStr(secrets.token_urlsafe(32))
    if auth.token_secret is None and not auth.dev_auth:
        raise ValueError("no token secret: set ROOMS_TOKEN_SECRET (in a Serve config: the "
                         "application's runtime_env.env_vars, or a Kubernetes Secret), or "
                         "run in development mode (--dev, args.dev: true)")
    return auth


def application(config: RoomsConfig, auth: AuthSettings, limits: GatewayLimits, *,
                replicas: int = 1, max_replicas_per_node: int | None = None,
                side_actors: bool = True, assets: Any = None, partytracks: Any = None,
                env: dict[str, str] | None = None) -> Any:
    """The gateway deployment bound with its settings: what :func:`build` and
    :func:`actors.gateway.deploy.deploy_gateway` both run.

    Args:
        config: the rooms' settings, handed to every replica.
        auth: identity settings (see :func:`resolve_auth`).
        limits: the replicas' limits.
        replicas: gateway replicas (>= 1).
        max_replicas_per_node: at most this many on one node, or ``None``.
        side_actors: each replica makes sure the alarm scheduler and the warm pools
            run (:func:`actors.side_actors.start_side_actors`).
        assets: the meeting page's script (default: the packaged build,
            :func:`actors.gateway.pages.load_web_assets`).
        partytracks: the Calls proxy's settings (default: the environment's).
        env: environment variables of the replicas' runtime environment.

    Returns:
        A ``serve.Application``. Raises nothing of its own.
    """
    from .app import Gateway
    from .pages import load_web_assets
    from .partytracks import PartyTracksSettings

    env = replica_env(limits, env)
    options: dict[str, Any] = {"num_replicas": replicas,
                               "max_ongoing_requests": limits.max_ongoing_requests,
                               "ray_actor_options": {"num_cpus": 0, **(
                                   {"runtime_env": {"env_vars": env}} if env else {})}}
    if max_replicas_per_node:
        options["max_replicas_per_node"] = max_replicas_per_node
    if config.log_format == "json":  # Serve's own lines of the replicas too
        options["logging_config"] = {"encoding": "JSON"}
    return Gateway.options(**options).bind(
        config, auth, limits, assets if assets is not None else load_web_assets(),
        partytracks or PartyTracksSettings(), side_actors)


def replica_env(limits: GatewayLimits, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment variables of the replicas' runtime environment: ``env`` and the
    allocator's arenas (``MALLOC_ARENA_MAX`` from ``limits.malloc_arena_max``, unless 0
    or ``env`` names it already).

    Args:
        limits: the replicas' limits.
        env: variables given by the caller (Serve's ingress settings), or ``None``.

    Returns:
        A new ``{name: value}`` (empty: no runtime environment of the replicas' own).
    """
    out = dict(env or {})
    if limits.malloc_arena_max > 0:
        out.setdefault("MALLOC_ARENA_MAX", str(limits.malloc_arena_max))
    return out


def build(args: dict[str, Any]) -> Any:
    """Serve's application builder (``import_path: actors.gateway.application:build``):
    the gateway deployment from ``args`` and the application's environment.

    Args:
        args: the ``args`` of the Serve config (see :class:`GatewayArgs`).

    Returns:
        A ``serve.Application``.

    Logs a warning when Serve's proxy, configured from the environment
    (:mod:`actors.gateway.proxy_callback`), would refuse or compress WebSocket
    messages differently from these replicas (:func:`proxy_mismatch`).

    Raises:
        pydantic.ValidationError: ``args`` has an unknown key or a bad value (also in
            ``rooms`` or ``limits``).
        ValueError: an unknown key in ``rooms`` or ``limits``; or see
            :func:`resolve_auth`.
    """
    parsed = GatewayArgs.model_validate(args or {})
    for key, model in (("rooms", RoomsConfig), ("limits", GatewayLimits)):
        unknown = sorted(set(getattr(parsed, key)) - set(model.model_fields))
        if unknown:
            raise ValueError(f"args.{key}: unknown setting(s) {', '.join(unknown)}")
    config = RoomsConfig(**parsed.rooms)
    limits = GatewayLimits(**parsed.limits)
    mismatch = proxy_mismatch(config.max_message_bytes, limits.ws_compression)
    if mismatch:
        log.warning(mismatch)
    return application(config, resolve_auth(None, parsed.dev), limits,
                       replicas=parsed.replicas,
                       max_replicas_per_node=parsed.max_replicas_per_node,
                       side_actors=parsed.side_actors)
