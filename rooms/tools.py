"""The application's tools the room's AI may call, and what a tool call is.

An application registers async Python tools through one setting,
``ROOMS_AI_TOOLS=<module>:<attribute>``, naming a list (or a function returning a
list) of :class:`Tool`. The room declares them to the live session (``session.update``
``tools``, OpenAI's function tools), and when the model calls one
(``response.function_call_arguments.done``) the room records the call in its durable
state *before* the tool runs and its output *after*, and runs it once through the tool
runner (:mod:`actors.tool_runner`), whatever happens to the room's process meanwhile
(docs/ai.md, "Tools").

Example (``myapp/tools.py``)::

    from rooms.tools import Tool, ToolCall

    async def weather(call: ToolCall) -> dict:
        return {"city": call.arguments["city"], "sky": "clear"}

    TOOLS = [Tool("weather", "The weather in a city now.",
                  {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}, weather)]

and ``ROOMS_AI_TOOLS=myapp.tools:TOOLS``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

__all__ = ["Tool", "ToolCall", "ToolsError", "declarations", "load_tools"]


class ToolsError(ValueError):
    """``ROOMS_AI_TOOLS`` does not name a list of :class:`Tool` (message says why)."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call of a tool, as the tool receives it.

    Attributes:
        call_id: the model's function call id; the same for every run of this call, so
            a tool with side effects can use it as an idempotency key.
        room: the room id.
        arguments: the arguments the model gave (decoded JSON object).
    """

    call_id: str
    room: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Tool:
    """A function tool.

    Attributes:
        name: the name the model calls it by (``^[a-zA-Z0-9_-]{1,64}$``).
        description: what it does and when to call it (for the model).
        parameters: a JSON Schema object of its arguments.
        run: ``async (ToolCall) -> JSON-serialisable`` result; an exception becomes
            ``{"error": "<its type>"}`` for the model (its text goes only to the log).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[ToolCall], Awaitable[Any]]

    def declaration(self) -> dict[str, Any]:
        """The tool as ``session.tools`` declares it: ``{type: "function", name,
        description, parameters}``."""
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": self.parameters}


def declarations(tools: dict[str, Tool]) -> tuple[dict[str, Any], ...]:
    """The ``session.tools`` list for ``tools`` (sorted by name, so it compares equal
    across processes)."""
    return tuple(tools[name].declaration() for name in sorted(tools))


def load_tools(spec: str) -> dict[str, Tool]:
    """Import the tools ``spec`` names.

    Args:
        spec: ``"module:attribute"``; the attribute is a list of :class:`Tool` or a
            function returning one. ``""`` means no tools.

    Returns:
        ``{name: Tool}``.

    Raises:
        ToolsError: a malformed spec, a module or attribute that cannot be imported, an
            item that is not a :class:`Tool`, or two tools of one name.
    """
    if not spec:
        return {}
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ToolsError(f"ROOMS_AI_TOOLS must be 'module:attribute', not {spec!r}")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ToolsError(f"ROOMS_AI_TOOLS {spec!r}: {type(error).__name__}: {error}") from None
    if callable(found) and not isinstance(found, (list, tuple)):
        found = found()
    tools: dict[str, Tool] = {}
    for tool in found:
        if not isinstance(tool, Tool):
            raise ToolsError(f"ROOMS_AI_TOOLS {spec!r}: {tool!r} is not a rooms.tools.Tool")
        if tool.name in tools:
            raise ToolsError(f"ROOMS_AI_TOOLS {spec!r}: two tools named {tool.name!r}")
        tools[tool.name] = tool
    return tools
