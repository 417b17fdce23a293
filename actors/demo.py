"""``rooms demo``: a whole meeting on this machine, with real clients and real media.

Three participants (alice, bob, carol) connect through the gateway's WebSocket (the
partysocket path, with signed tokens), publish tones through the Calls emulator (440,
660 and 880 Hz), and then: alice enables the AI and takes control; carol pulls the AI's
voice and hears it answer with alice's 440 Hz; alice hands control to bob and carol hears
660 Hz; carol reads each one's caption (``aiTranscript``, the AI's transcript read by the
room's sideband); bob disables the AI; everyone leaves. Every step is checked; the run
prints a timeline and a summary and exits non-zero if a step fails.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["DemoFailed", "run_demo"]


class DemoFailed(RuntimeError):
    """A step of the demo did not do what it should (message: the step and why)."""


@dataclass
class Client:
    """A meeting participant: a WebSocket to the gateway plus an aiortc peer."""

    name: str
    conn: str
    ws: Any
    peer: Any
    states: list[dict] = field(default_factory=list)
    others: list[dict] = field(default_factory=list)
    reader: asyncio.Task | None = None
    track: tuple[str, str] | None = None

    async def send(self, **message: Any) -> None:
        """Send ``message`` (the keyword arguments) as one JSON text frame; raises what
        the ``websockets`` connection raises when it is closed."""
        await self.ws.send(json.dumps(message))

    async def read(self) -> None:
        """Read frames until the socket closes: ``roomState`` states into ``states``,
        every other message into ``others``."""
        async for text in self.ws:
            message = json.loads(text)
            if message.get("type") == "roomState":
                self.states.append(message["state"])
            else:
                self.others.append(message)

    def last(self) -> dict:
        """The newest ``roomState`` state received, or ``{}`` before the first."""
        return self.states[-1] if self.states else {}


def _caption(client: Client, speaker: str) -> dict | None:
    """The newest ``aiTranscript`` line ``client`` received attributed to ``speaker``."""
    return next((m for m in reversed(client.others)
                 if m.get("type") == "aiTranscript" and m.get("speaker") == speaker), None)


async def _until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise DemoFailed(f"{what}: not reached within {timeout:.0f} s")


async def _meeting(system, room: str, say: Callable[[str], None]) -> dict[str, Any]:
    import websockets

    from bridges.local.participant import Participant

    from .auth import issue_token

    emu = system.emulators
    calls_secret = system.config.services.calls_app_secret.get_secret_value()
    ws_base = system.gateway_url.replace("http", "ws", 1)
    clients: dict[str, Client] = {}
    tones = {"alice": 440.0, "bob": 660.0, "carol": 880.0}
    try:
        for name, freq in tones.items():
            conn = f"{name}-{uuid.uuid4().hex[:6]}"
            token = issue_token(name, system.token_secret, 600)
            ws = await websockets.connect(f"{ws_base}/parties/rooms/{room}?_pk={conn}&token={token}")
            peer = Participant(system.config.services.calls_base_url, "local-app", calls_secret,
                               freq_hz=freq, track_name=f"{name}-mic")
            client = Client(name, conn, ws, peer)
            client.reader = asyncio.ensure_future(client.read())
            clients[name] = client
            say(f"{name} connected through the gateway as {conn}")
        alice, bob, carol = clients["alice"], clients["bob"], clients["carol"]
        await _until("everyone sees three users",
                     lambda: all(len(c.last().get("users", [])) == 3 for c in clients.values()))
        say("every client's roomState lists 3 users")

        for client in clients.values():
            session_id, track = await client.peer.publish()
            client.track = (session_id, track)
            await client.send(type="userUpdate", user={
                "id": client.conn, "name": client.name, "joined": True, "raisedHand": False,
                "speaking": False, "tracks": {"audio": f"{session_id}/{track}",
                                               "audioEnabled": True, "audioUnavailable": False}})
            await client.send(type="heartbeat")
        say(f"alice, bob, carol publish tones of {', '.join(f'{f:.0f}' for f in tones.values())} Hz")

        started = time.monotonic()
        await alice.send(type="enableAi", instructions="You are a helpful meeting assistant.",
                         voice="alloy")
        state = await _until("the AI is enabled", lambda: next(
            (s for s in carol.states if s["ai"].get("enabled") or s["ai"].get("error")), None))
        if state["ai"].get("error"):
            raise DemoFailed(f"enableAi: {state['ai']['error']}")
        ai_user = next(u for u in state["users"] if u["id"] == "ai")
        ai_session, ai_track = ai_user["tracks"]["audio"].split("/", 1)
        say(f"alice enabled the AI in {time.monotonic() - started:.2f} s "
            f"(Calls session {ai_session[:8]}…, OpenAI call up)")

        await alice.send(type="requestAiControl", track={"sessionId": alice.track[0],
                                                         "trackName": alice.track[1]})
        await _until("alice controls the AI",
                     lambda: carol.last().get("ai", {}).get("controllingUser") == alice.conn)
        say("alice holds control of the AI")
        await carol.peer.pull(ai_session, ai_track)
        heard = await carol.peer.wait_for_frequency(440.0, timeout=15)
        say(f"carol hears the AI answer alice: {heard:.0f} Hz")
        line = await _until("a caption of alice's", lambda: _caption(carol, alice.conn))
        say(f"carol's caption (aiTranscript): {line['name']}: {line['text']}")

        # Orange's push-to-talk button sends this from every participant: a quiet no-op
        await bob.send(type="relinquishAiControl")
        await bob.send(type="partyserver-ping")  # answered after the relinquish's turn
        await _until("bob's relinquish of control he does not hold is a quiet no-op",
                     lambda: any(m.get("type") == "partyserver-pong" for m in bob.others))
        if (any(m.get("type") == "error" for m in bob.others)
                or carol.last().get("ai", {}).get("controllingUser") != alice.conn):
            raise DemoFailed("bob's relinquish of control he does not hold changed something")
        await alice.send(type="relinquishAiControl")
        await _until("alice relinquished",
                     lambda: carol.last().get("ai", {}).get("controllingUser") is None)
        await bob.send(type="requestAiControl", track={"sessionId": bob.track[0],
                                                       "trackName": bob.track[1]})
        await _until("bob controls the AI",
                     lambda: carol.last().get("ai", {}).get("controllingUser") == bob.conn)
        heard = await carol.peer.wait_for_frequency(660.0, timeout=15)
        say(f"alice handed control to bob; carol hears the AI answer bob: {heard:.0f} Hz")
        line = await _until("a caption of bob's", lambda: _caption(carol, bob.conn))
        say(f"carol's caption (aiTranscript): {line['name']}: {line['text']}")

        await bob.send(type="disableAi")
        await _until("the AI is disabled", lambda: carol.last().get("ai", {}).get("enabled") is False
                     and all(u["id"] != "ai" for u in carol.last().get("users", [])))
        await _until("the emulators hold no AI session or call",
                     lambda: not emu.openai.active_calls()
                     and ai_session not in emu.calls.open_sessions(), timeout=10)
        say("bob disabled the AI: its Calls session is closed and the OpenAI call hung up")

        for client in clients.values():
            await client.send(type="userLeft")
        await _until("everyone's socket is closed",
                     lambda: all(c.reader.done() for c in clients.values()))
        say("everyone left; the gateway closed every socket")
        return {"ai_session": ai_session}
    finally:
        for client in clients.values():
            if client.reader:
                client.reader.cancel()
            await client.ws.close()
            await client.peer.close()


def run_demo(*, address: str | None = None, echo: Callable[[str], None] = print) -> bool:
    """Start the system (Ray, emulators, gateway), run the meeting, stop the system.

    Args:
        address: a Ray cluster address, or ``None`` to start a new local Ray (always
            fresh, so the demo never depends on what else runs on the machine).
        echo: where the timeline goes (one line a step).

    Returns:
        ``True`` if every step passed.
    """
    import tempfile

    import ray

    from .config import RoomsConfig
    from .directory import actor_name
    from .room_client import RoomClient
    import secrets

    from pydantic import SecretStr

    from bridges.config import CallsSettings, OpenAISettings

    from .system import start_system

    t0 = time.monotonic()
    passed: list[str] = []

    def say(text: str) -> None:
        passed.append(text)
        echo(f"[{time.monotonic() - t0:6.2f}s] {text}")

    store = tempfile.mkdtemp(prefix="rooms-demo-")
    config = RoomsConfig(namespace="rooms-demo", store_url=f"sqlite:///{store}/demo.sqlite3")
    echo("starting Ray, the local Calls and OpenAI emulators, and the gateway…")
    system = start_system(address=address or "local", port=0, config=config,
                          token_secret=SecretStr(secrets.token_urlsafe(32)),
                          emulators=not (CallsSettings().configured
                                         and OpenAISettings().configured))
    say("system up: " + ", ".join(f"{k} {v}" for k, v in system.urls.items()))
    room = f"demo-{uuid.uuid4().hex[:8]}"
    ok = False
    try:
        asyncio.run(_meeting(system, room, say))
        info = ray.get(RoomClient(ray.get_actor(actor_name(room),
                                                namespace=config.namespace)).info())
        say(f"room {room}: {info.turns} turns, {info.saves} snapshot saves, "
            f"peak {info.peakUserCount} users")
        ok = True
    except DemoFailed as error:
        echo(f"FAILED: {error}")
    except Exception as error:  # noqa: BLE001 - report any failure as a failed step
        echo(f"FAILED: {type(error).__name__}: {error}")
    finally:
        system.stop()
    echo("")
    echo(f"summary: {len(passed)} steps passed, {'all ok' if ok else 'a step FAILED'} "
         f"({time.monotonic() - t0:.1f} s)")
    return ok
