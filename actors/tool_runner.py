"""The tool runner: runs each AI tool call once, outside the room's process.

A room records a tool call durably before it runs and its output after (docs/ai.md,
"Tools"). The run itself happens here, in ``rooms-tools`` (one detached actor per
namespace, created on first use), not in the room's process: a room SIGKILLed while its
tool runs does not kill the run, and its next activation asks again for the same call
id and gets that same run's output. A run is kept by ``(room, call id)``: asked twice,
the tool runs once.

What can still run a tool twice: the runner's own process dying (Ray restarts it
empty) between a run and the room's receipt of its output. The tool gets the call id
(:class:`rooms.tools.ToolCall`) to make its side effects idempotent for that case.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
from typing import Any

import ray

from rooms.tools import Tool, ToolCall, ToolsError, load_tools

__all__ = ["RUNNER_NAME", "ToolRunner", "tool_runner"]

RUNNER_NAME = "rooms-tools"
"""The detached runner actor's name (in the rooms' namespace)."""

log = logging.getLogger("ray_rooms.tools")


def _error(text: str) -> str:
    return json.dumps({"error": text})


class ToolRunner:
    """Runs tool calls, once per ``(room, call id)``, and keeps their outputs.

    Args:
        max_kept: the finished runs kept (the oldest forgotten first).
    """

    def __init__(self, max_kept: int = 10_000) -> None:
        self._runs: collections.OrderedDict[tuple[str, str], asyncio.Future] = \
            collections.OrderedDict()
        self._tools: dict[str, dict[str, Tool]] = {}
        self.max_kept = max_kept
        self.started = 0
        """How many runs started (one per distinct call)."""

    async def run(self, spec: str, room: str, call_id: str, name: str, arguments: str,
                  timeout_s: float = 30.0) -> str:
        """Run tool ``name`` of the tools ``spec`` names (``ROOMS_AI_TOOLS``) for call
        ``call_id`` of ``room``, or join the run of that call already under way or done.

        Args:
            spec: ``"module:attribute"`` (:func:`rooms.tools.load_tools`).
            room: the room id.
            call_id: the model's function call id.
            name: the tool's name.
            arguments: the arguments, JSON text (an object).
            timeout_s: seconds the tool may take.

        Returns:
            The output for the model, JSON text: the tool's result, or
            ``{"error": ...}`` for an unknown tool, bad arguments, a timeout or a failed
            tool (its detail goes to the log under the error id the text names). Never
            raises for the tool's failures.
        """
        key = (room, call_id)
        run = self._runs.get(key)
        if run is None:
            self.started += 1
            run = asyncio.ensure_future(self._run(spec, room, call_id, name, arguments,
                                                  timeout_s))
            self._runs[key] = run
            while len(self._runs) > self.max_kept:
                oldest_key, oldest = next(iter(self._runs.items()))
                if not oldest.done():
                    break
                del self._runs[oldest_key]
        return await asyncio.shield(run)

    def runs(self) -> int:
        """How many runs started since this process began (tests, operators)."""
        return self.started

    async def _run(self, spec: str, room: str, call_id: str, name: str, arguments: str,
                   timeout_s: float) -> str:
        try:
            tools = self._tools.get(spec)
            if tools is None:
                tools = self._tools[spec] = load_tools(spec)
        except ToolsError as error:
            log.error("tools of %s cannot be loaded: %s", room, error)
            return _error("the application's tools cannot be loaded")
        tool = tools.get(name)
        if tool is None:
            return _error(f"there is no tool named {name[:64]!r}")
        try:
            args: Any = json.loads(arguments or "{}")
        except ValueError:
            args = None
        if not isinstance(args, dict):
            return _error("the arguments are not a JSON object")
        try:
            result = await asyncio.wait_for(tool.run(ToolCall(call_id, room, args)), timeout_s)
            return json.dumps(result, default=str)
        except asyncio.TimeoutError:
            return _error(f"the tool took longer than {timeout_s:g} s")
        except Exception as error:  # noqa: BLE001 - the model gets a clean error
            error_id = secrets.token_hex(6)
            log.exception("tool %s of room %s (call %s) failed (error id %s)", name, room,
                          call_id, error_id, extra={"room": room, "error_id": error_id})
            return _error(f"the tool failed ({type(error).__name__}); error id {error_id}")


RemoteToolRunner = ray.remote(ToolRunner)


def tool_runner(namespace: str) -> "ray.actor.ActorHandle":
    """Get or create ``rooms-tools`` of ``namespace`` (detached, restarted for ever, no
    CPU, up to 1,000 runs at once).

    Raises:
        ray.exceptions.RaySystemError: Ray is not initialised / reachable.
    """
    return RemoteToolRunner.options(
        name=RUNNER_NAME, namespace=namespace, get_if_exists=True, lifetime="detached",
        max_restarts=-1, max_task_retries=0, num_cpus=0, max_concurrency=1000).remote()
