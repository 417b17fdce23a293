"""The application's tools: loading ROOMS_AI_TOOLS, and the runner that runs a call once
(:mod:`rooms.tools`, :mod:`actors.tool_runner`), without Ray."""

from __future__ import annotations

import asyncio
import json

import pytest

from actors.tool_runner import ToolRunner
from rooms.tools import Tool, ToolsError, declarations, load_tools

SPEC = "tests.ai_tools:TOOLS"


async def boom(call):
    raise RuntimeError("secret detail /etc/passwd")


BROKEN = [Tool("boom", "Fails.", {"type": "object"}, boom)]


def test_tools_load_from_their_setting_and_declare_themselves() -> None:
    tools = load_tools(SPEC)
    assert list(tools) == ["note"]
    [declared] = declarations(tools)
    assert declared["type"] == "function" and declared["name"] == "note"
    assert set(declared["parameters"]["properties"]) == {"path", "text", "seconds"}
    assert load_tools("") == {}
    for bad in ("tests.ai_tools", "tests.nowhere:TOOLS", "tests.ai_tools:NOPE"):
        with pytest.raises(ToolsError):
            load_tools(bad)


async def test_a_call_runs_once_however_often_it_is_asked_for(tmp_path) -> None:
    runner = ToolRunner()
    log = tmp_path / "notes"
    args = json.dumps({"path": str(log), "text": "x", "seconds": 0.3})
    outputs = await asyncio.gather(*[runner.run(SPEC, "r", "call_1", "note", args)
                                     for _ in range(3)])
    again = await runner.run(SPEC, "r", "call_1", "note", args)
    assert len(set(outputs + [again])) == 1
    assert json.loads(again) == {"noted": "x", "call": "call_1"}
    assert log.read_text().split("\n")[:-1] == ["start call_1", "end call_1"]
    assert runner.runs() == 1
    await runner.run(SPEC, "other-room", "call_1", "note", args)
    assert runner.runs() == 2  # a call id is a room's own


async def test_the_model_gets_clean_errors(tmp_path) -> None:
    runner = ToolRunner()
    assert "no tool named" in json.loads(await runner.run(SPEC, "r", "c1", "nope", "{}"))["error"]
    assert "not a JSON object" in json.loads(await runner.run(SPEC, "r", "c2", "note", "[1]"))["error"]
    slow = json.dumps({"path": str(tmp_path / "n"), "seconds": 5})
    assert "longer than 0.2 s" in json.loads(
        await runner.run(SPEC, "r", "c3", "note", slow, timeout_s=0.2))["error"]
    import tests.test_tools as me
    failed = json.loads(await runner.run(f"{me.__name__}:BROKEN", "r", "c4", "boom", "{}"))
    assert failed["error"].startswith("the tool failed (RuntimeError); error id ")
    assert "secret" not in failed["error"] and "/etc" not in failed["error"]
    broken = json.loads(await runner.run("tests.nowhere:TOOLS", "r", "c5", "note", "{}"))
    assert broken == {"error": "the application's tools cannot be loaded"}
