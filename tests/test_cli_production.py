"""``rooms`` as an operator runs it in production (issue 20), each check a subprocess
of the real command: no start without a token secret, tokens minted with their claims,
the emulators only when asked for, half a set of AI credentials refused, development
mode from the environment announced, a stop bounded when Ray is gone under it, and read
commands that never create a room."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from actors.auth import verify_claims
from actors.cli import app
from tests.gateways import read_until_serving

from .conftest import TEST_NAMESPACE

SECRET = "production-secret-" + "p" * 32


def _env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ROOMS_", "CALLS_", "OPENAI_")) and k != "RAY_ADDRESS"}
    env.update({"RAY_USAGE_STATS_ENABLED": "0",
                "ROOMS_STORE_URL": f"sqlite:///{tmp_path / 'rooms.sqlite3'}", **extra})
    return env


def _rooms(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "actors.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_serve_refuses_to_start_without_a_token_secret(tmp_path):
    started = time.monotonic()
    done = _rooms("serve", "--port", "0", env=_env(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "ROOMS_TOKEN_SECRET" in done.stderr
    assert time.monotonic() - started < 30  # refused before Ray started


def test_half_a_set_of_ai_credentials_is_an_error_naming_what_is_missing(tmp_path):
    done = _rooms("serve", "--dev", "--port", "0",
                  env=_env(tmp_path, CALLS_APP_ID="app", CALLS_APP_SECRET="s" * 20))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "OPENAI_API_KEY" in done.stderr and "CALLS_APP_ID" not in done.stderr.split(
        "not set")[0]


def test_token_prints_a_signed_token_with_the_documented_claims(tmp_path):
    done = _rooms("token", "alice", "--room", "r1", "--room", "r2", "--ttl", "120",
                  env=_env(tmp_path, ROOMS_TOKEN_SECRET=SECRET))
    assert done.returncode == 0, done.stderr
    claims = verify_claims(done.stdout.strip(), SECRET)
    assert claims["sub"] == "alice" and claims["rooms"] == ["r1", "r2"]
    assert 115 <= claims["exp"] - claims["iat"] <= 125 and "operator" not in claims
    operator = _rooms("token", "root", "--operator", env=_env(tmp_path,
                                                                ROOMS_TOKEN_SECRET=SECRET))
    assert verify_claims(operator.stdout.strip(), SECRET)["operator"] is True
    missing = _rooms("token", "alice", env=_env(tmp_path))
    assert missing.returncode == 2 and "ROOMS_TOKEN_SECRET" in missing.stderr
    bad = _rooms("token", "alice", "--room", "no spaces", env=_env(
        tmp_path, ROOMS_TOKEN_SECRET=SECRET))
    assert bad.returncode == 2 and "room id" in bad.stderr


def test_version_and_config_redact_secrets(tmp_path):
    version = _rooms("--version", env=_env(tmp_path))
    assert version.returncode == 0 and version.stdout.startswith("ray-rooms ")
    env = _env(tmp_path, ROOMS_TOKEN_SECRET=SECRET, OPENAI_API_KEY="sk-very-secret-key",
               ROOMS_STORE_URL="postgresql://rooms:hunter2-password@db.example:5432/rooms")
    shown = _rooms("config", env=env)
    assert shown.returncode == 0, shown.stderr
    settings = json.loads(shown.stdout)
    for secret in (SECRET, "sk-very-secret-key", "hunter2-password"):
        assert secret not in shown.stdout
    assert settings["rooms"]["store_url"].startswith("postgresql://rooms:")
    assert settings["auth"]["token_secret"] == "**********"


@pytest.mark.timeout(600)
def test_dev_mode_from_the_environment_is_announced_and_a_stop_is_bounded_without_ray(
        tmp_path):
    """``ROOMS_DEV_AUTH=true`` starts development mode only with a warning; the local
    emulators do not start outside ``--dev`` (none asked for here: with the dev mode
    from the environment they do); and when its Ray is killed underneath it, ``rooms
    serve`` stops within its stop timeout instead of hanging."""
    env = _env(tmp_path, ROOMS_DEV_AUTH="true", ROOMS_GATEWAY_STOP_TIMEOUT_S="10")
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "serve", "--port", "0",
                             "--no-emulators"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = read_until_serving(proc, 240)
        output = "".join(lines)
        assert "WARNING: development mode is on (ROOMS_DEV_AUTH=true" in output, output
        assert "calls emulator" not in output and "AI agent" in output, output
        # Ray goes away underneath it: its GCS and raylet are children of `rooms serve`
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert children, "no Ray processes under rooms serve"
        for pid in children:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(1.0)
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
        assert time.monotonic() - stopped < 60, "the stop was not bounded"
        assert "stopping" in rest, rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        from actors.gateway.haproxy import reap_orphan_haproxy

        time.sleep(1.0)
        reap_orphan_haproxy()  # its Ray's HAProxy, orphaned (not the session's)


def test_show_and_send_of_an_unknown_room_create_nothing(ray_session, tmp_path, monkeypatch):
    import ray

    from actors.directory import actor_name

    monkeypatch.setenv("ROOMS_NAMESPACE", TEST_NAMESPACE)
    monkeypatch.setenv("ROOMS_STORE_URL", f"sqlite:///{tmp_path / 'rooms.sqlite3'}")
    runner = CliRunner()
    for argv in (["show", "no-such-room"],
                 ["send", "no-such-room", "--as", "http:x", '{"type":"heartbeat"}']):
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert "no room 'no-such-room'" in result.output and "nothing was created" in \
            result.output
    with pytest.raises(ValueError):
        ray.get_actor(actor_name("no-such-room"), namespace=TEST_NAMESPACE)
    listed = runner.invoke(app, ["ls", "--json"])
    assert listed.exit_code == 0, listed.output
    assert all(row["room"] != "no-such-room" for row in json.loads(listed.output))
