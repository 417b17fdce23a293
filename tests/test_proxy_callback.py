"""Serve's proxy callback (:mod:`actors.gateway.proxy_callback`) in a fresh process, as
Serve's proxy actor calls it: the environment's limits reach the uvicorn servers the
process builds afterwards; a replica's own settings stay; invalid variables fall back to
the defaults with an error in the log. (Through real sockets: ``tests/test_serve_deploy``
and ``tests/test_cluster``.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from actors.gateway.proxy_callback import PROXY_CALLBACK_ENV_VAR, proxy_env

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys, uvicorn
from actors.seam import configure_websockets, websockets_configured
if sys.argv[1] == "replica":
    configure_websockets(1234, True)   # the gateway replica's own call, first
before = websockets_configured()
import importlib, os
module, _, name = os.environ["@VAR@"].rpartition(".")  # as Serve resolves it
returned = getattr(importlib.import_module(module), name)()
config = uvicorn.Config(app=lambda s, r, w: None)
print(json.dumps({"before": before, "returned": returned, "max": config.ws_max_size,
                  "deflate": config.ws_per_message_deflate}))
""".replace("@VAR@", PROXY_CALLBACK_ENV_VAR)


def _probe(env: dict[str, str], mode: str = "proxy") -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_the_callback_applies_the_environments_limits_to_later_servers():
    result, _ = _probe(proxy_env(4096, False))
    assert result == {"before": False, "returned": [], "max": 4096, "deflate": False}
    result, _ = _probe(proxy_env(70_000, True))
    assert result["max"] == 70_000 and result["deflate"] is True


def test_a_replicas_own_settings_win_and_bad_values_fall_back_to_the_defaults():
    result, _ = _probe(proxy_env(4096, False), mode="replica")
    assert result == {"before": True, "returned": [], "max": 1234, "deflate": True}
    env = {**proxy_env(4096, False), "ROOMS_MAX_MESSAGE_BYTES": "-5"}
    result, log = _probe(env)
    assert result["max"] == 64 * 1024 and result["deflate"] is True
    assert "invalid ROOMS_MAX_MESSAGE_BYTES" in log


def test_the_builder_warns_when_args_set_what_the_proxy_reads_from_the_environment(
        monkeypatch, caplog):
    """A Serve config's ``args.rooms.max_message_bytes`` reaches the replicas only: the
    builder says so when the proxy's environment has another value."""
    from actors.gateway.application import build
    from actors.gateway.proxy_callback import proxy_mismatch

    monkeypatch.setenv("ROOMS_TOKEN_SECRET", "t" * 40)
    for name, value in proxy_env(64 * 1024, True).items():
        monkeypatch.setenv(name, value)
    assert proxy_mismatch(64 * 1024, True) is None
    with caplog.at_level("WARNING", logger="ray_rooms.gateway"):
        build({"rooms": {"max_message_bytes": 100_000}, "limits": {"ws_compression": False}})
    [warning] = [r.getMessage() for r in caplog.records if "Serve's proxy" in r.getMessage()]
    assert "over 65536 bytes (the gateway's limit: 100000)" in warning
    assert "compression on (the gateway: off)" in warning
    monkeypatch.delenv(PROXY_CALLBACK_ENV_VAR)
    assert proxy_mismatch(100_000, False) is None  # no proxy callback: nothing to say
