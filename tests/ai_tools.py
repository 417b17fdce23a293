"""Tools for the AI tests (``ROOMS_AI_TOOLS=tests.ai_tools:TOOLS``).

``note`` appends ``start <call id>`` to the file its ``path`` argument names (without
one, as a Live delegation calls it: :func:`notes_of` the room), waits ``seconds``
(default 1.5, so a test can SIGKILL the room while it runs), appends ``end <call id>``
and answers ``{"noted": <text>, "call": <call id>}``: the file says how many times each
call ran and finished.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from rooms.tools import Tool, ToolCall


def notes_of(room: str) -> Path:
    """Where ``note`` writes for ``room`` when it is given no path."""
    folder = Path(tempfile.gettempdir()) / "rooms-ai-tools"
    folder.mkdir(exist_ok=True)
    return folder / f"{room}.log"


async def note(call: ToolCall) -> dict:
    path = Path(call.arguments.get("path") or notes_of(call.room))
    with path.open("a") as f:
        f.write(f"start {call.call_id}\n")
    await asyncio.sleep(float(call.arguments.get("seconds", 1.5)))
    with path.open("a") as f:
        f.write(f"end {call.call_id}\n")
    return {"noted": call.arguments.get("text", ""), "call": call.call_id}


TOOLS = [Tool("note", "Write a note to a file.", {
    "type": "object",
    "properties": {"path": {"type": "string"}, "text": {"type": "string"},
                   "seconds": {"type": "number"}},
    "required": [],
}, note)]
