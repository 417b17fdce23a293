"""The seam to what Ray and Serve do not make public: each use of their internals (or of
the libraries they run for us) is one function here, with a public fallback, and
``tests/test_seam.py`` checks each against the Ray version named in
:data:`CHECKED_ON_RAY`, so that an upgrade fails one clear test instead of degrading
silently. Nothing else in the project imports ``ray._private``, ``ray.serve._private``,
``ray.core.generated`` or reads a private attribute of a Ray object.

* :func:`configure_websockets`: Serve runs uvicorn in each replica (its direct
  ingress behind HAProxy) and exposes neither uvicorn's ``ws_max_size`` (16 MiB by
  default), so a client could make a replica buffer a 16 MiB frame before our size
  check, nor ``ws_per_message_deflate`` (``ROOMS_GATEWAY_WS_COMPRESSION``: every frame
  is compressed per socket, ~0.2 ms for a 50-user ``roomState``). Checked on Ray 2.60.0 with uvicorn
  0.38-0.40: Serve builds ``uvicorn.Config`` in
  ``ray.serve._private.http_util.start_asgi_http_server`` *after* the deployment's
  constructor ran (``ReplicaBase.initialize`` then ``_on_initialized``), and uvicorn's
  WebSocket protocols read ``config.ws_max_size`` and ``config.ws_per_message_deflate``
  per connection. Fallback: only the gateway's own size check, after the frame was
  read, and uvicorn's default compression. :func:`websockets_configured` tells whether
  it ran in this process (Serve's proxy callback, :mod:`actors.gateway.proxy_callback`,
  leaves a replica's own settings in place).
* :func:`setup_hook_env_var`: the environment variable Ray's ``default_worker.py``
  reads to run a worker setup hook (``ray._private.ray_constants.
  WORKER_PROCESS_SETUP_HOOK_ENV_VAR``); Ray honours ``worker_process_setup_hook`` only
  in a job's runtime environment, so room actors set the variable themselves
  (:mod:`actors.warmpool`). Fallback: the name Ray 2.x uses.
* :func:`prestart_workers`: the raylet's ``NodeManagerService.PrestartWorkers`` gRPC
  (``ray.core.generated``, through ``ray._private.grpc_utils.init_grpc_channel`` for
  Ray's token authentication). Fallback: no prestart (new rooms start cold).
* :func:`raylet_runtime_env`: the text the raylet matches idle workers by. An actor
  created from a process without a runtime environment of its own (a driver) keeps
  Python's ``RuntimeEnv.serialize()`` (``json.dumps``, sorted, ``", "``/``": "``); one
  created from a process that has one (a Serve replica, whose environment carries
  Serve's variables) gets both merged by the C++ core worker, serialized compactly
  (sorted, no spaces). Checked on Ray 2.60.0: warm workers prestarted with the Python
  form were never taken by rooms a gateway replica created (each started cold, ~1.3 s
  instead of ~0.1 s); with the compact form they were. Fallback: the Python form.
* :func:`token_auth_enabled`: whether Ray protects its Dashboard with a token
  (``ray._private.authentication``). Fallback: the ``RAY_AUTH_MODE`` variable.
* :func:`serve_controller` and :func:`stop_serve`: Serve's controller actor (its name
  and namespace in ``ray.serve._private.constants``) and its ``graceful_shutdown``
  method, to stop Serve without a failed task in the log. Fallback:
  ``serve.shutdown()``.
* :func:`serve_http_address`: where a running Serve's ingress listens (the
  controller's ``get_http_config``), so a gateway is never announced on a port Serve
  does not listen on. Fallback: ``None`` (not checked).
* :func:`actor_id`: an actor handle's id (``ActorHandle._actor_id``, for tests and
  operators). Fallback: ``None``.
* :func:`validate_cluster_config`: the cluster launcher's validation of a
  ``ray up`` config (``ray.autoscaler._private.util``). Fallback: refuse (raises).
* :func:`ray_serializer`: the serializer a Ray call puts its arguments and result
  through (the worker's serialization context, ``ray._private.worker``), for
  ``benchmarks/wirecost.py``, which times what the wire between replica and room costs
  it. Fallback: ``ray.cloudpickle`` (what Ray uses for anything msgpack cannot carry).
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from typing import Any, Callable

__all__ = ["CHECKED_ON_RAY", "actor_id", "configure_websockets", "prestart_workers",
           "ray_serializer", "raylet_runtime_env",
           "serve_controller", "serve_http_address", "setup_hook_env_var", "stop_serve",
           "token_auth_enabled", "validate_cluster_config", "websockets_configured"]

CHECKED_ON_RAY = "2.60.0"
"""The Ray version every function here was checked on (``tests/test_seam.py``)."""

_SETUP_HOOK_FALLBACK = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"

log = logging.getLogger("ray_rooms.seam")

_PATCHED_ATTR = "_ray_rooms_ws_max_size"
_DEFLATE_ATTR = "_ray_rooms_ws_deflate"


def configure_websockets(max_bytes: int, compression: bool = False) -> bool:
    """Make every uvicorn server this process starts from now on refuse WebSocket
    messages larger than ``max_bytes`` (it closes the connection with 1009, "message
    too big", RFC 6455 section 7.4.1, before buffering more than that), and offer
    permessage-deflate (RFC 7692) to clients only if ``compression``.

    Args:
        max_bytes: the largest message, bytes (the room's message limit).
        compression: whether to negotiate permessage-deflate when a client offers it
            (browsers always do): frames are smaller on the wire, but each is
            compressed once per socket in the replica and inflated by every client.

    Returns:
        ``True`` if both are in place; ``False`` if uvicorn is missing or its
        ``Config`` no longer has ``ws_max_size`` (then only the gateway's own size
        check applies, after the frame was read, and uvicorn's default compression;
        a warning is logged).
    """
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - Serve depends on uvicorn
        log.warning("uvicorn is not installed: WebSocket frames are not limited by size")
        return False
    config_class = uvicorn.Config
    original = getattr(config_class.__init__, "__wrapped__", config_class.__init__)
    # Read the constructor's parameters; never build a Config here: its constructor
    # runs uvicorn's logging.config.dictConfig, which closes every handler of the
    # process, Serve's buffering handler among them (its target gone, it then kept
    # every log record of the replica for ever: ~1.5 KB a request).
    parameters = inspect.signature(original).parameters
    if "ws_max_size" not in parameters or "ws_per_message_deflate" not in parameters:
        log.warning("uvicorn.Config has no ws_max_size or ws_per_message_deflate: "
                    "WebSocket frames are not limited and compression is uvicorn's default")
        return False

    def __init__(self, *args, **kwargs):  # noqa: N807 - the wrapped constructor
        original(self, *args, **kwargs)
        limit = getattr(config_class, _PATCHED_ATTR, None)
        if limit is not None and self.ws_max_size > limit:
            self.ws_max_size = limit
        deflate = getattr(config_class, _DEFLATE_ATTR, None)
        if deflate is not None and "ws_per_message_deflate" not in kwargs:
            self.ws_per_message_deflate = deflate

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(config_class, _PATCHED_ATTR, int(max_bytes))
    setattr(config_class, _DEFLATE_ATTR, bool(compression))
    config_class.__init__ = __init__
    return True


def websockets_configured() -> bool:
    """Whether :func:`configure_websockets` ran in this process (so its limits apply to
    the uvicorn servers it starts from now on).

    Returns:
        ``True`` once :func:`configure_websockets` put its limits in place; ``False``
        before, or if uvicorn is missing.
    """
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - Serve depends on uvicorn
        return False
    return getattr(uvicorn.Config, _PATCHED_ATTR, None) is not None


def raylet_runtime_env(env: dict[str, Any], merged: bool) -> str:
    """The serialized runtime environment by which the raylet matches an idle worker to
    an actor whose environment (as the actor sees it, ``get_runtime_context()
    .runtime_env``) is ``env``.

    Args:
        env: the actor's runtime environment (a plain dict).
        merged: whether its creator ran in a runtime environment of its own, so that
            the core worker merged the two (see the module docstring).

    Returns:
        The JSON text (sorted keys; compact when ``merged``). Raises nothing.
    """
    import json

    if merged:
        return json.dumps(env, sort_keys=True, separators=(",", ":"))
    return json.dumps(env, sort_keys=True)


def setup_hook_env_var() -> str:
    """Return the name of the environment variable that makes Ray's worker run a setup
    hook (a ``module.function`` name) when the worker process starts.

    Returns:
        Ray's own constant, or ``"__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"`` (Ray 2.x)
        if the constant moved. Raises nothing.
    """
    try:
        from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR
    except ImportError:
        return _SETUP_HOOK_FALLBACK
    return str(WORKER_PROCESS_SETUP_HOOK_ENV_VAR)


def prestart_workers(address: str, port: int, count: int, *, serialized_env: str,
                     job_id: str, keep_alive_s: float, timeout_s: float = 10.0) -> bool:
    """Ask the raylet at ``address:port`` to start ``count`` idle Python workers for
    job ``job_id`` and runtime environment ``serialized_env``.

    Args:
        address: the raylet's node manager address (``ray.nodes()``'s
            ``NodeManagerAddress``).
        port: its ``NodeManagerPort``.
        count: workers to start (> 0).
        serialized_env: ``RuntimeEnv.serialize()`` of the environment (Ray's JSON).
        job_id: the job (hex).
        keep_alive_s: seconds the raylet keeps them past its idle-worker soft limit.
        timeout_s: the RPC's deadline, seconds.

    Returns:
        Whether the raylet accepted the request.

    Raises:
        ImportError: Ray's internal gRPC helper or generated stubs are not there (the
            fallback: the caller starts no workers).
        Exception: the RPC failed (``grpc.RpcError`` and the like).
    """
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc
    from ray.core.generated import runtime_environment_pb2

    channel = init_grpc_channel(f"{address}:{port}")
    try:
        stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
        stub.PrestartWorkers(node_manager_pb2.PrestartWorkersRequest(
            language=common_pb2.PYTHON, job_id=bytes.fromhex(job_id),
            runtime_env_info=runtime_environment_pb2.RuntimeEnvInfo(
                serialized_runtime_env=serialized_env),
            num_workers=int(count), keep_alive_duration_secs=int(keep_alive_s)),
            timeout=timeout_s)
    finally:
        channel.close()
    return True


def token_auth_enabled() -> bool:
    """Whether the connected Ray protects its Dashboard with a token (Ray 2.60's
    default, ``RAY_AUTH_MODE=token``; ``RAY_AUTH_MODE=disabled`` turns it off).

    Returns:
        Ray's own answer, or (if its helper moved) whether ``RAY_AUTH_MODE`` is
        ``token``. Raises nothing.
    """
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:
        return os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    try:
        return bool(is_token_auth_enabled())
    except Exception:  # noqa: BLE001 - an operator hint only
        return os.environ.get("RAY_AUTH_MODE", "").lower() == "token"


def serve_controller() -> Any:
    """Return the connected Ray cluster's Serve controller actor handle, or ``None``
    when Serve is not running (or its private name moved: then the callers use Serve's
    public API only). Raises nothing."""
    import ray

    try:
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    except ImportError:
        return None
    try:
        return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return None


def serve_http_address(timeout_s: float = 10.0) -> tuple[str, int] | None:
    """Return ``(host, port)`` where the running Serve's HTTP ingress listens (Serve's
    ``HTTPOptions``, fixed when Serve started), or ``None`` when Serve is not running or
    its controller cannot say within ``timeout_s`` seconds (or its private method moved).
    Raises nothing."""
    import ray

    controller = serve_controller()
    if controller is None or not hasattr(controller, "get_http_config"):
        return None
    try:
        options = ray.get(controller.get_http_config.remote(), timeout=timeout_s)
        return str(options.host), int(options.port)
    except Exception:  # noqa: BLE001 - exiting, slow or changed: the caller cannot check
        return None


def stop_serve(timeout_s: float = 30.0) -> None:
    """Shut Serve down without a task in flight when its controller exits.

    ``serve.shutdown()`` waits in ``ServeController.graceful_shutdown`` until the
    controller kills itself, so Ray reports that task as failed ("killed by
    ``ray.kill``") on every stop. Here the controller is only told to shut down
    (``wait=False``), we wait up to ``timeout_s`` seconds for it to be gone, and
    ``serve.shutdown()`` then just drops the driver's cached client (its INFO lines
    saying the controller is gone are held back). Fallback (no private controller):
    ``serve.shutdown()`` alone. Raises nothing Serve's own shutdown does not.
    """
    import ray
    from ray import serve

    controller = serve_controller()
    if controller is not None and hasattr(controller, "graceful_shutdown"):
        try:
            ray.get(controller.graceful_shutdown.remote(False), timeout=timeout_s)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass  # already exiting, or slow: serve.shutdown below finishes it
        except Exception as error:  # noqa: BLE001 - the method changed: public path
            log.warning("Serve's graceful_shutdown failed (%s); using serve.shutdown",
                        type(error).__name__)
        deadline = time.monotonic() + timeout_s
        while serve_controller() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
    serve_log = logging.getLogger("ray.serve")
    level = serve_log.level
    serve_log.setLevel(logging.WARNING)
    try:
        serve.shutdown()
    finally:
        serve_log.setLevel(level)


def actor_id(handle: Any) -> str | None:
    """Return the hex id of the actor behind ``handle``, or ``None`` if Ray no longer
    exposes it on the handle. Raises nothing."""
    ident = getattr(handle, "_actor_id", None)
    return ident.hex() if ident is not None and hasattr(ident, "hex") else None


def validate_cluster_config(config: dict[str, Any]) -> dict[str, Any]:
    """Fill in a cluster launcher config's defaults (``ray up``'s YAML, loaded; the
    argument is not changed) and validate the result the way ``ray up`` does; return
    the prepared config.

    Raises:
        ImportError: the launcher's validation moved (nothing to check against).
        Exception: the config is invalid (``jsonschema``'s ``ValidationError``,
            ``ValueError``).
    """
    from ray.autoscaler._private.util import prepare_config, validate_config

    import copy

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def ray_serializer() -> Callable[[Any], Any]:
    """Return the function this process's Ray worker serializes a call's argument or
    result with: ``serialize(value)`` gives Ray's serialized object (msgpack for lists,
    strings, bytes, integers and ``None`` of exact types; cloudpickle, protocol 5, for
    the rest). Needs ``ray.init`` (or a Ray worker); raises nothing itself.

    Fallback (Ray moved it): ``ray.cloudpickle.dumps`` with protocol 5, which is what Ray
    does with every value msgpack cannot carry; the msgpack fast path is then missed.
    """
    try:
        from ray._private.worker import global_worker

        return global_worker.get_serialization_context().serialize
    except (ImportError, AttributeError):
        from ray import cloudpickle

        return lambda value: cloudpickle.dumps(value, protocol=5)
