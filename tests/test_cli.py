"""The ``rooms`` command line, in-process on the shared Ray (typer's CliRunner)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from actors.cli import app
from tests.gateways import read_until_serving
from bridges.local import start_emulators

from .conftest import TEST_NAMESPACE

APP_SECRET = "cli-app-secret-" + "s" * 16
API_KEY = "sk-cli-very-secret-value"


@pytest.fixture(scope="module")
def emu():
    """The local Calls and OpenAI emulators, accepting only this module's secrets."""
    emulators = start_emulators(app_id="cli-app", app_secret=APP_SECRET, api_key=API_KEY)
    yield emulators
    emulators.stop()


def test_send_show_ls(ray_session, unique_room, sqlite_url, monkeypatch, emu):
    monkeypatch.setenv("ROOMS_NAMESPACE", TEST_NAMESPACE)
    monkeypatch.setenv("ROOMS_STORE_URL", sqlite_url)
    monkeypatch.setenv("ROOMS_IDLE_TIMEOUT", "0")
    # the CLI reads these into the room's config (RoomsConfig.services), so the room
    # actor it creates holds the secrets: none may reach the CLI's output
    monkeypatch.setenv("ROOMS_AI_CALLS_BASE_URL", emu.calls_base_url)
    monkeypatch.setenv("ROOMS_AI_CALLS_APP_ID", "cli-app")
    monkeypatch.setenv("ROOMS_AI_CALLS_APP_SECRET", APP_SECRET)
    monkeypatch.setenv("ROOMS_AI_OPENAI_BASE_URL", emu.openai_base_url)
    monkeypatch.setenv("ROOMS_AI_OPENAI_API_KEY", API_KEY)
    runner = CliRunner()
    outputs = []

    update = {"type": "userUpdate", "user": {"id": "x", "name": "x", "raisedHand": True,
              "speaking": False, "joined": True, "tracks": {"audioUnavailable": False}}}
    # send and show never create a room (tests/test_cli_production.py): the room is
    # created the way a client creates one, by using it (here: its state, directly)
    from actors.config import RoomsConfig
    from actors.directory import get_room

    ray_session.get(get_room(unique_room, RoomsConfig()).state.remote(), timeout=60)
    # a connection with no open socket acts over HTTP's own id, http:<name>
    result = runner.invoke(app, ["send", unique_room, "--as", "http:c1", json.dumps(update)])
    assert result.exit_code == 0, result.output
    outputs.append(result.output)
    out = json.loads(result.output)
    [state] = [r["state"] for r in out["replies"] if r["type"] == "roomState"]
    assert state["users"][0]["raisedHand"] is True and state["users"][0]["id"] == "http:c1"

    result = runner.invoke(app, ["send", unique_room, "--as", "http:c1", "{not json"])
    assert result.exit_code == 1
    [reply] = json.loads(result.output)["replies"]
    assert reply["error"] == "message is not valid JSON" and len(reply["errorId"]) == 12

    result = runner.invoke(app, ["show", unique_room])
    assert result.exit_code == 0, result.output
    outputs.append(result.output)
    shown = json.loads(result.output)
    assert shown["state"] == state and shown["actor"]["room"] == unique_room

    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 0
    line = next(l for l in result.output.splitlines() if l.startswith(unique_room))
    stored, actor, node = line.split()[1:]
    assert (stored, actor) == ("yes", "ALIVE")
    node_id = ray_session.get_runtime_context().get_node_id()
    assert node.endswith("/" + node_id[:8]), node
    outputs.append(result.output)

    # the room uses the secrets it was given: the AI comes into the call through the
    # emulators, which refuse any other key
    result = runner.invoke(app, ["send", unique_room, "--as", "c1", '{"type":"enableAi"}'])
    assert result.exit_code == 0, result.output
    outputs.append(result.output)
    deadline = time.monotonic() + 20
    while True:
        result = runner.invoke(app, ["show", unique_room])
        outputs.append(result.output)
        shown = json.loads(result.output)
        if not shown["state"]["ai"].get("connectionPending") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert shown["state"]["ai"]["enabled"] is True, shown["state"]["ai"]
    result = runner.invoke(app, ["send", unique_room, "--as", "c1", '{"type":"disableAi"}'])
    assert result.exit_code == 0, result.output
    outputs.append(result.output)
    for output in outputs:
        assert APP_SECRET not in output and API_KEY not in output


@pytest.mark.timeout(600)
def test_serve_tells_how_to_reach_the_dashboard_and_stops_quietly(tmp_path):
    """``rooms serve`` as a user runs it (its own Ray, in a subprocess): it prints the
    Dashboard URL with how to get past Ray's token prompt, and a SIGTERM stops it
    without Ray's "graceful_shutdown failed ... killed by ray.kill" complaint."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "ROOMS_STORE_URL": f"sqlite:///{tmp_path / 'rooms.sqlite3'}"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "actors.cli", "serve", "--port", "0",
                             "--dev"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=tmp_path)
    try:
        lines = read_until_serving(proc, 120)
        dashboard = [l for l in lines if l.startswith("dashboard")]
        assert dashboard, "".join(lines)
        assert "ray get-auth-token" in dashboard[0], dashboard[0]
        assert "every identity is an operator" in "".join(lines)  # --dev says so
        proc.send_signal(signal.SIGTERM)
        # generous: one loaded CI run (a second Ray beside the session's, 2 cores) saw
        # no output at all within 120 s of the SIGTERM; alone it stops in ~5 s
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    assert "stopping" in output
    assert "graceful_shutdown failed" not in output and "killed by `ray.kill`" not in output, output


def test_the_commands_list_gives_each_summary_as_one_paragraph():
    """``rooms --help`` lists each command with its docstring's first paragraph as one
    re-wrapped text (typer kept the docstring's own line breaks there, which broke the
    list mid-sentence)."""
    result = subprocess.run([sys.executable, "-m", "actors.cli", "--help"], text=True,
                            capture_output=True, timeout=60,
                            env={**os.environ, "COLUMNS": "400", "TERM": "dumb"})
    assert result.returncode == 0, result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines()
            if line.startswith("│ ") and len(line.split()) > 2}
    # one row per command, its whole first paragraph on it at this width
    assert "with the node each live one runs on (cluster-wide)." in rows["ls"], rows
    assert "Outside --dev it needs ROOMS_TOKEN_SECRET" in rows["serve"], rows
    assert "exit 1 if a step fails." in rows["demo"], rows


def test_a_checkout_without_bytecode_is_warned_of_where_rooms_would_compile_it(tmp_path):
    """``rooms serve`` and ``rooms demo`` warn (:func:`actors.cli.bytecode_warning`) when
    ``PYTHONDONTWRITEBYTECODE`` is set and the room runtime has no bytecode: every room's
    process would compile it again. The warning names the directories to compile; once
    they are compiled, as a wheel install has them, or without that variable, there is
    no warning. Run in fresh interpreters on a copy of the packages with no
    ``__pycache__``."""
    import shutil
    from pathlib import Path

    from actors.warmpool import RUNTIME_PACKAGES

    root = Path(__file__).resolve().parents[1]
    for name in RUNTIME_PACKAGES:
        shutil.copytree(root / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
    probe = "from actors.cli import bytecode_warning; print(bytecode_warning())"

    def warning(dont_write: bool) -> str:
        env = {**os.environ, "PYTHONPATH": str(tmp_path),
               "PYTHONDONTWRITEBYTECODE": "1" if dont_write else ""}
        done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    first = warning(dont_write=True)
    dirs = " ".join(str(tmp_path / name) for name in sorted(RUNTIME_PACKAGES))
    assert first.startswith("WARNING: "), first
    assert f"python -m compileall -q {dirs} " in first, first
    assert not list(tmp_path.rglob("__pycache__"))  # the check itself wrote none
    compiled = subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs.split()],
                              capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    assert warning(dont_write=True) == "None"
    shutil.rmtree(tmp_path / "rooms" / "__pycache__")
    assert warning(dont_write=False) == "None"  # Python writes what it imports
