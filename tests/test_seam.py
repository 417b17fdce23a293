"""The seam to Ray's private APIs (:mod:`actors.seam`): each one checked against the Ray
version it was last verified on, and each fallback exercised with the private piece
taken away. A Ray upgrade fails ``test_ray_is_the_version_the_seam_was_checked_on``
first: re-check every function of the seam on the new version (the tests below say
what each relies on), then update ``CHECKED_ON_RAY``."""

from __future__ import annotations

import inspect
import sys

import pytest
import ray

from actors import seam


def _block(monkeypatch, *modules: str) -> None:
    """Make ``import`` of each of ``modules`` raise ImportError (as if Ray dropped it)."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_ray_is_the_version_the_seam_was_checked_on():
    assert ray.__version__ == seam.CHECKED_ON_RAY, (
        f"Ray {ray.__version__} is installed; actors/seam.py was checked on "
        f"{seam.CHECKED_ON_RAY}: re-check each private API it uses (this module's tests), "
        "then update CHECKED_ON_RAY")


# ---- the worker setup hook (actors.warmpool) ------------------------------------------

def test_setup_hook_variable_is_the_one_rays_worker_reads():
    """Checked on Ray 2.60.0: ``default_worker.py`` reads this variable to run a setup
    hook (``tests/test_warmpool.py`` shows a room's worker ran it)."""
    from ray._private.ray_constants import WORKER_PROCESS_SETUP_HOOK_ENV_VAR
    from ray._private.workers import default_worker

    assert seam.setup_hook_env_var() == WORKER_PROCESS_SETUP_HOOK_ENV_VAR
    assert "WORKER_PROCESS_SETUP_HOOK_ENV_VAR" in inspect.getsource(default_worker)


def test_setup_hook_variable_falls_back_to_the_ray2_name(monkeypatch):
    _block(monkeypatch, "ray._private.ray_constants")
    assert seam.setup_hook_env_var() == "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"


# ---- the raylet's PrestartWorkers (actors.warmpool) -----------------------------------

def test_prestart_workers_request_has_the_fields_we_send():
    """Checked on Ray 2.60.0 (the real call is exercised by ``tests/test_warmpool.py``)."""
    from ray._private.grpc_utils import init_grpc_channel  # noqa: F401
    from ray.core.generated import node_manager_pb2, node_manager_pb2_grpc

    fields = {f.name for f in node_manager_pb2.PrestartWorkersRequest.DESCRIPTOR.fields}
    assert {"language", "job_id", "runtime_env_info", "num_workers",
            "keep_alive_duration_secs"} <= fields
    assert hasattr(node_manager_pb2_grpc.NodeManagerServiceStub, "__init__")


def test_without_the_private_rpc_rooms_start_cold(monkeypatch):
    from actors.warmpool import prestart

    _block(monkeypatch, "ray._private.grpc_utils")
    with pytest.raises(ImportError):
        seam.prestart_workers("127.0.0.1", 1, 1, serialized_env="{}", job_id="01000000",
                              keep_alive_s=1)
    node = {"NodeManagerAddress": "127.0.0.1", "NodeManagerPort": 1}
    assert prestart(node, 1, serialized_env="{}", job_id="01000000", keep_alive_s=1) is False


# ---- token auth (actors.system) -------------------------------------------------------

def test_token_auth_helper_exists():
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    assert seam.token_auth_enabled() == bool(is_token_auth_enabled())


def test_token_auth_falls_back_to_the_environment(monkeypatch):
    _block(monkeypatch, "ray._private.authentication.authentication_utils")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert seam.token_auth_enabled() is True
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert seam.token_auth_enabled() is False


# ---- Serve's controller (actors.gateway.deploy) ---------------------------------------

def test_serve_controller_name_and_shutdown_method_exist():
    """Checked on Ray 2.60.0: the controller is a named actor in Serve's namespace with
    ``graceful_shutdown(wait)``."""
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    from ray.serve._private.controller import ServeController

    assert SERVE_CONTROLLER_NAME and SERVE_NAMESPACE
    assert "wait" in inspect.signature(ServeController.graceful_shutdown).parameters


def test_serve_controller_reports_its_http_options():
    """Checked on Ray 2.60.0: ``ServeController.get_http_config()`` returns the
    ``HTTPOptions`` (``host``, ``port``) Serve started with."""
    from ray.serve._private.controller import ServeController
    from ray.serve.config import HTTPOptions

    assert callable(getattr(ServeController, "get_http_config", None))
    assert {"host", "port"} <= set(HTTPOptions.model_fields)


def test_without_serves_private_names_there_is_no_controller(monkeypatch):
    _block(monkeypatch, "ray.serve._private.constants")
    assert seam.serve_controller() is None
    assert seam.serve_http_address() is None


# ---- uvicorn's frame limit (actors.gateway) -------------------------------------------

def test_serve_starts_uvicorn_where_the_frame_limit_applies():
    """Checked on Ray 2.60.0: Serve builds ``uvicorn.Config`` in
    ``start_asgi_http_server``; uvicorn's Config has ``ws_max_size``."""
    import uvicorn
    from ray.serve._private import http_util

    assert "uvicorn.Config" in inspect.getsource(http_util.start_asgi_http_server)
    assert hasattr(uvicorn.Config(app=lambda s, r, w: None), "ws_max_size")
    assert hasattr(uvicorn.Config(app=lambda s, r, w: None), "ws_per_message_deflate")


def test_configure_websockets_sets_the_frame_limit_and_compression_of_later_servers():
    """What :func:`actors.seam.configure_websockets` does to the ``uvicorn.Config`` that
    Serve builds after it: a lower ``ws_max_size``, and permessage-deflate as asked
    (an explicit argument of the caller still wins)."""
    import uvicorn

    app = lambda s, r, w: None  # noqa: E731
    default = uvicorn.Config(app=app)
    try:
        assert seam.configure_websockets(4096, compression=False)
        config = uvicorn.Config(app=app)
        assert config.ws_max_size == 4096 and config.ws_per_message_deflate is False
        assert uvicorn.Config(app=app, ws_per_message_deflate=True).ws_per_message_deflate
        assert seam.configure_websockets(4096, compression=True)
        assert uvicorn.Config(app=app).ws_per_message_deflate is True
    finally:
        seam.configure_websockets(default.ws_max_size, default.ws_per_message_deflate)


# ---- handles and the cluster launcher -------------------------------------------------

def test_actor_id_reads_the_handles_id_or_gives_none():
    assert "_actor_id" in inspect.getsource(ray.actor.ActorHandle.__init__)
    assert seam.actor_id(object()) is None


def test_cluster_config_validation_exists():
    from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: F401


def test_no_other_module_reaches_into_ray_internals():
    """The seam is the only place: a new private use elsewhere fails here."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    private = re.compile(r"ray\._private|serve\._private|autoscaler\._private|"
                         r"core\.generated|\._actor_id\b|_raylet\b")
    offenders = []
    for package in ("actors", "rooms", "bridges", "storage", "benchmarks", "tests"):
        for path in (root / package).rglob("*.py"):
            if path.name in ("seam.py", "test_seam.py") or "node_modules" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if private.search(line) and not line.lstrip().startswith("#"):
                    offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_raylet_runtime_env_forms():
    """Checked on Ray 2.60.0 (``tests/test_warmpool.py`` checks the match itself): a
    driver's actor keeps ``RuntimeEnv.serialize()``; a merged one is compact JSON."""
    from ray.runtime_env import RuntimeEnv

    env = {"env_vars": {"B": "2", "A": "1"}}
    assert seam.raylet_runtime_env(env, merged=False) == RuntimeEnv(**env).serialize()
    assert seam.raylet_runtime_env(env, merged=True) == '{"env_vars":{"A":"1","B":"2"}}'


def test_ray_serializer_is_the_one_calls_use_and_packs_plain_lists_with_msgpack(ray_session):
    """The serializer a call's arguments go through (what ``benchmarks/wirecost.py``
    times): it carries a value whole, and a list of plain values comes out smaller than
    the same values in tuples, which it pickles (the rule ``actors.wire.frames_wire``
    relies on)."""
    serialize = seam.ray_serializer()
    assert getattr(serialize, "__name__", "") == "serialize"  # not the fallback's lambda
    plain = [["c", "text", "s-1", 1, None]] * 4
    as_tuples = [tuple(f) for f in plain]
    assert ray_session.get(ray_session.put(plain)) == plain
    assert serialize(plain).total_bytes < serialize(as_tuples).total_bytes


def test_without_the_private_module_the_serializer_is_cloudpickle(monkeypatch):
    from ray import cloudpickle

    monkeypatch.setitem(sys.modules, "ray._private.worker", None)  # import fails
    serialize = seam.ray_serializer()
    assert serialize([("c", 1)]) == cloudpickle.dumps([("c", 1)], protocol=5)
