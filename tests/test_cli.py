"""The ``rooms`` command line, in-process on the shared Ray (typer's CliRunner)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from actors.cli import app

from .conftest import TEST_NAMESPACE


def test_send_show_ls(ray_session, unique_room, sqlite_url, monkeypatch):
    monkeypatch.setenv("ROOMS_NAMESPACE", TEST_NAMESPACE)
    monkeypatch.setenv("ROOMS_STORE_URL", sqlite_url)
    monkeypatch.setenv("ROOMS_IDLE_TIMEOUT", "0")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-value")
    runner = CliRunner()

    update = {"type": "userUpdate", "user": {"id": "x", "name": "x", "raisedHand": True,
              "speaking": False, "joined": True, "tracks": {"audioUnavailable": False}}}
    result = runner.invoke(app, ["send", unique_room, "--as", "c1", json.dumps(update)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    [state] = [r["state"] for r in out["replies"] if r["type"] == "roomState"]
    assert state["users"][0]["raisedHand"] is True and state["users"][0]["id"] == "c1"

    result = runner.invoke(app, ["send", unique_room, "--as", "c1", "{not json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["replies"] == [{"type": "error", "error": "message is not valid JSON"}]

    result = runner.invoke(app, ["show", unique_room])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["state"] == state and shown["actor"]["room"] == unique_room

    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 0
    line = next(l for l in result.output.splitlines() if l.startswith(unique_room))
    assert line.split()[1:] == ["yes", "ALIVE"]
    for output in (result.output, shown.__repr__()):
        assert "sk-very-secret-value" not in output
