"""Combined faults while clients stream (issue 19): the room's process SIGKILLed, a
gateway replica killed, the PostgreSQL server stopped and restarted, against a real
gateway, checked from the clients' side.

Each writer is one socket in the room and behaves as a careful partysocket client: one
frame in flight at a time, and a heartbeat every 4 s (over HTTP as its own connection,
so that an ``error`` on its socket is always its frame's). It sends a ``userUpdate`` with a counter and waits until a
``roomState`` shows it; then a ``directMessage`` to the next writer, and waits until that
writer received it. A frame answered with an ``error`` (the store is down, the room
could not be reached) was not applied: the writer sends it again. A socket that closes
(its replica died) is opened again with the same ``_pk``, and the frame in flight is
sent again.

What it checks, per fault and in the end:

- **stalls**: after each fault healed (the room answers again, the store is back, every
  socket is open again), the seconds until every writer's next frame is applied;
- **lost**: a direct message never received, an acknowledged update missing from the
  final state;
- **twice**: a direct message received more than once. The room replays what a socket
  of a connection whose replica died without a close may not have been sent (the last
  cursor that replica's poller reported): at least once, so a message that replica had
  just written may come twice; those are counted apart (``replayed``), and only for
  sockets that were reopened after their replica died.

Run: ``python -m benchmarks.chaos`` (starts Ray, a PostgreSQL server of its own, a
two-replica gateway) or use :func:`chaos` from a test (``tests/test_chaos.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import httpx

from benchmarks.killstorm import room_answers, update_frame
from tests.wsclient import Client, open_client

__all__ = ["ChaosResult", "Fault", "chaos"]

Fault = Callable[["Writers"], Awaitable[str]]
"""One fault: ``await fault(writers)`` makes it happen to ``writers.room`` (or to the
replica of one of ``writers.replicas``) and returns once it healed from its own side
(the process killed, the server back), with a label for the report."""


@dataclass
class ChaosResult:
    """What the clients saw.

    Attributes:
        faults: the label of each fault made.
        heal_s: per fault, seconds from its start until it healed and the room answered.
        stall_s: per fault, the slowest writer's seconds from the heal to its next frame
            applied (``None``: never within the wait).
        dms_sent, dms_lost, dms_twice: direct messages sent (once each, counting
            retries once), never received, received more than once (not replays).
        replayed: direct messages received twice by a socket reopened after its
            replica died (at least once by design, see the module docstring).
        lost_updates: writers whose last acknowledged update is not in the final state.
        reconnects: sockets opened again.
        close_codes: why the reopened sockets had closed (``"code reason"``: count).
        errors: ``error`` replies, by text (each made the writer resend).
    """

    faults: list[str] = field(default_factory=list)
    close_codes: dict[str, int] = field(default_factory=dict)
    heal_s: list[float] = field(default_factory=list)
    stall_s: list[float | None] = field(default_factory=list)
    dms_sent: int = 0
    dms_lost: list[str] = field(default_factory=list)
    dms_twice: list[str] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)
    lost_updates: list[str] = field(default_factory=list)
    reconnects: int = 0
    errors: Counter = field(default_factory=Counter)

    def stalls_over(self, seconds: float) -> int:
        """Faults after which some writer took longer than ``seconds`` (or never)."""
        return sum(1 for s in self.stall_s if s is None or s > seconds)

    def summary(self) -> str:
        """One paragraph of figures."""
        stalls = [s if s is not None else float("inf") for s in self.stall_s] or [0.0]
        return (f"{len(self.faults)} faults ({dict(Counter(self.faults))}); healed p50 "
                f"{statistics.median(self.heal_s or [0]):.2f} s; slowest writer after the "
                f"heal: p50 {statistics.median(stalls):.2f} s, max {max(stalls):.2f} s; "
                f"faults with a writer stalled > 2 s: {self.stalls_over(2.0)}; direct "
                f"messages: {self.dms_sent} sent, {len(self.dms_lost)} lost, "
                f"{len(self.dms_twice)} twice, {len(self.replayed)} replayed after a "
                f"replica died; lost acknowledged updates: {len(self.lost_updates)}; "
                f"reconnects: {self.reconnects} {self.close_codes}; error replies: {dict(self.errors)}"
                + (f"; lost: {self.dms_lost[:10]}" if self.dms_lost else ""))


class Writers:
    """The writers' sockets, reopened when they close (see the module docstring).

    Args:
        ws_url: ``ws://host:port`` of the gateway.
        room: the room id.
        names: the writers' connection ids (also their user names).
    """

    def __init__(self, ws_url: str, room: str, names: list[str]) -> None:
        self.ws_url = ws_url
        self.room = room
        self.names = names
        self.sockets: dict[str, Client] = {}
        self.history: dict[str, list[Client]] = {w: [] for w in names}
        self.reopened_after: dict[str, float] = {}
        self.reconnects = 0
        self.close_codes: Counter[str] = Counter()
        """Why the sockets that were reopened had closed (``code reason``)."""

    @property
    def replicas(self) -> dict[str, str]:
        """The gateway replica id of each writer's socket now."""
        return {w: c.ws.response.headers.get("x-rooms-replica", "")
                for w, c in self.sockets.items()}

    async def open(self, w: str) -> Client:
        """Open ``w``'s socket (again), retrying while no replica takes it (60 s)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                client = await open_client(
                    f"{self.ws_url}/parties/rooms/{self.room}?_pk={w}&username={w}")
                break
            except Exception:  # noqa: BLE001 - refused while Serve replaces a replica
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        if w in self.sockets:
            self.reconnects += 1
            old = self.sockets[w].ws
            self.close_codes[f"{old.close_code} {old.close_reason or ''}".strip()] += 1
            self.reopened_after[w] = time.monotonic()
        self.sockets[w] = client
        self.history[w].append(client)
        return client

    async def socket(self, w: str) -> Client:
        """``w``'s open socket, reopened if it closed."""
        client = self.sockets[w]
        if client.closed.is_set():
            client = await self.open(w)
        return client

    def all_open(self) -> bool:
        """Whether every writer's current socket is open."""
        return all(not c.closed.is_set() for c in self.sockets.values())

    def received(self, w: str) -> list[dict]:
        """Every message ``w`` received, over all its sockets, in order."""
        return [m for c in self.history[w] for m in c.messages]


async def chaos(base_url: str, faults: list[Fault], *, writers: int = 4,
                wait_s: float = 30.0, settle_s: float = 1.0,
                progress: Callable[[str], None] = lambda line: None) -> ChaosResult:
    """Stream through the gateway at ``base_url`` (dev-mode identities) while making
    ``faults`` one after another; return what the clients saw.

    Args:
        base_url: ``http://host:port`` of the gateway.
        faults: the faults, in order (each awaited; see :data:`Fault`).
        writers: sockets in the room.
        wait_s: seconds to wait for the room, the sockets and every writer after a fault.
        settle_s: seconds of streaming before the first fault and between faults.
        progress: called with a line per fault.

    Returns:
        The :class:`ChaosResult`.
    """
    room = f"chaos-{uuid.uuid4().hex[:8]}"
    names = [f"w{i}" for i in range(writers)]
    socks = Writers(base_url.replace("http://", "ws://"), room, names)
    for w in names:
        await socks.open(w)
    applied = {w: 0 for w in names}
    moved: dict[str, list[float]] = {w: [] for w in names}
    dms: list[tuple[str, str]] = []  # (target, text), each once
    stop = asyncio.Event()
    result = ChaosResult()

    async def send_until(w: str, frame: str, done: Callable[[], bool]) -> None:
        """Send ``frame`` until ``done()``; resend after an error or a reopen."""
        began, told = time.monotonic(), False
        while not stop.is_set():
            client = await socks.socket(w)
            start = len(client.messages)
            try:
                await client.ws.send(frame)
            except Exception:  # noqa: BLE001 - closed meanwhile: reopen, resend
                await asyncio.sleep(0.05)
                continue
            while not stop.is_set():
                if done():
                    return
                if not told and time.monotonic() - began > 5:
                    told = True
                    progress(f"  {w} has waited 5 s for {json.loads(frame)['type']} "
                             f"(socket {len(socks.history[w])}, replica "
                             f"{socks.replicas.get(w, '?')}, last: "
                             f"{[m['type'] for m in client.messages[-3:]]})")
                errors = [m for m in client.messages[start:] if m["type"] == "error"]
                if errors:
                    result.errors[errors[0]["error"][:80]] += 1
                    await asyncio.sleep(0.2)
                    break  # not applied: send again
                if client.closed.is_set():
                    break  # its replica died: reopen, send again
                await asyncio.sleep(0.005)

    def shown(w: str, n: int) -> Callable[[], bool]:
        def check() -> bool:
            for client in socks.history[w][-2:]:
                for message in reversed(client.messages[-50:]):
                    if message["type"] == "roomState":
                        for user in message["state"]["users"]:
                            audio = user["tracks"].get("audio") or "x/0"
                            if user["id"] == w and int(audio.split("/")[1]) >= n:
                                return True
            return False
        return check

    def arrived(target: str, text: str) -> Callable[[], bool]:
        def check() -> bool:
            return any(m["type"] == "directMessage" and m["message"] == text
                       for client in socks.history[target][-2:]
                       for m in client.messages[-200:])
        return check

    async def writer(w: str) -> None:
        n = 0
        target = names[(names.index(w) + 1) % len(names)]
        while not stop.is_set():
            n += 1
            await send_until(w, update_frame(w, n), shown(w, n))
            if stop.is_set():
                return
            applied[w] = n
            moved[w].append(time.monotonic())
            text = f"{w}:{n}"
            dms.append((target, text))
            await send_until(w, json.dumps({"type": "directMessage", "to": target,
                                            "message": text}), arrived(target, text))
            moved[w].append(time.monotonic())

    async def heartbeats(w: str) -> None:
        """Orange's client sends a heartbeat every 5 s (the room sweeps users without
        one for 15 s, closing their sockets). Sent over HTTP as the writer's own
        connection, so that an ``error`` on its socket is always its frame's."""
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
            while not stop.is_set():
                try:
                    await http.post(f"/rooms/{room}/messages",
                                    params={"conn": w, "username": w},
                                    content=b'{"type":"heartbeat"}')
                except httpx.HTTPError:
                    pass  # the room or the store is down: the next one
                await asyncio.sleep(4.0)

    tasks = [asyncio.ensure_future(writer(w)) for w in names]
    tasks += [asyncio.ensure_future(heartbeats(w)) for w in names]
    try:
        async with httpx.AsyncClient(base_url=base_url) as http:
            await asyncio.sleep(settle_s)
            for fault in faults:
                started = time.monotonic()
                label = await fault(socks)
                deadline = time.monotonic() + wait_s
                await room_answers(http, room, deadline)
                while not socks.all_open() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                healed = time.monotonic()
                while any(not any(t > healed for t in moved[w]) for w in names) and \
                        time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                firsts = [next((t - healed for t in moved[w] if t > healed), None)
                          for w in names]
                stall = None if any(f is None for f in firsts) else max(firsts)
                result.faults.append(label)
                result.heal_s.append(healed - started)
                result.stall_s.append(stall)
                progress(f"{label}: healed in {healed - started:.2f} s, slowest writer "
                         f"{'never' if stall is None else f'{stall:.2f} s'} after ("
                         + ", ".join(f"{w} {'-' if f is None else f'{f:.2f}'}"
                                     for w, f in zip(names, firsts)) + ")"
                         + (f"; sockets closed so far: {dict(socks.close_codes)}"
                            if socks.close_codes else ""))
                await asyncio.sleep(settle_s)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
    counts: Counter[tuple[str, str]] = Counter()
    for w in names:
        for message in socks.received(w):
            if message["type"] == "directMessage":
                counts[(w, message["message"])] += 1
    result.dms_sent = len(dms)
    result.dms_lost = [f"{t}<-{x}" for t, x in dms if counts[(t, x)] == 0]
    for (target, text), count in counts.items():
        if count > 1:
            bucket = result.replayed if target in socks.reopened_after else result.dms_twice
            bucket.append(f"{target}<-{text}")
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        state = (await http.get(f"/rooms/{room}", params={"username": "chaos-op"})).json()
    final = {u["id"]: int((u["tracks"].get("audio") or "x/0").split("/")[1])
             for u in state["users"]}
    result.lost_updates = [w for w in names if final.get(w, 0) < applied[w]]
    result.reconnects = socks.reconnects
    result.close_codes = dict(socks.close_codes)
    for w in names:
        await socks.sockets[w].ws.close()
    return result


# ---- faults ------------------------------------------------------------------------------

def kill_room(pid_of: Callable[[str], int]) -> Fault:
    """A fault: SIGKILL the room's worker process (``pid_of(room)`` finds it)."""
    async def fault(socks: Writers) -> str:
        pid = await asyncio.to_thread(pid_of, socks.room)
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.05)
        return "room SIGKILL"
    return fault


def kill_replica(kill: Callable[[str], None], writer: str = "w0") -> Fault:
    """A fault: kill the gateway replica of ``writer``'s socket (``kill(replica id)``)."""
    async def fault(socks: Writers) -> str:
        replica = socks.replicas[writer]
        doomed = [c for w, c in socks.sockets.items() if socks.replicas[w] == replica]
        await asyncio.to_thread(kill, replica)
        deadline = time.monotonic() + 10
        while any(not c.closed.is_set() for c in doomed) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the replica's sockets saw it die
        return "replica killed"
    return fault


def stop_store(stop: Callable[[], None], start: Callable[[], None], down_s: float = 10.0,
               during: Fault | None = None) -> Fault:
    """A fault: stop the store's server, wait ``down_s`` seconds (making ``during``
    meanwhile, e.g. a room SIGKILL), start it again."""
    async def fault(socks: Writers) -> str:
        await asyncio.to_thread(stop)
        label = f"store down {down_s:.0f} s"
        try:
            await asyncio.sleep(down_s / 2)
            if during is not None:
                label += " + " + await during(socks)
            await asyncio.sleep(down_s / 2)
        finally:
            await asyncio.to_thread(start)
        return label
    return fault


def main(argv: list[str] | None = None) -> None:
    """Run the chaos scenario on a local Ray with a PostgreSQL server of its own and a
    two-replica gateway; print the summary; exit 1 if an invariant failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the fault cycle")
    args = parser.parse_args(argv)
    import ray

    from actors.config import RoomsConfig
    from actors.directory import actor_name
    from actors.gateway import GatewayLimits, deploy_gateway, shutdown_gateway
    from actors.net import free_port
    from storage.pgserver import ThrowawayPostgres
    from tests.gateways import kill_replica as kill_serve_replica

    server = ThrowawayPostgres(database="rooms_chaos").start()
    ray.init(namespace="rooms-chaos", include_dashboard=False)
    config = RoomsConfig(namespace="rooms-chaos", store_url=server.create_database("chaos"))
    url = deploy_gateway(config, port=free_port(), replicas=2, name="rooms-chaos",
                         dev=True, limits=GatewayLimits(rate_per_s=1000, burst=1000,
                                                        http_rate_per_s=1000,
                                                        http_burst=1000))

    def pid_of(room: str) -> int:
        return ray.get(ray.get_actor(actor_name(room), namespace=config.namespace)
                       .pid.remote(), timeout=30)

    try:
        result = asyncio.run(run_cycle(url, pid_of, server, kill_serve_replica,
                                       rounds=args.rounds, progress=print))
    finally:
        shutdown_gateway("rooms-chaos")
        ray.shutdown()
        server.remove()
    print(result.summary())
    ok = (result.stalls_over(2.0) == 0 and not result.dms_lost and not result.dms_twice
          and not result.lost_updates)
    print("invariants:", "hold" if ok else "FAILED")
    sys.exit(0 if ok else 1)


async def run_cycle(url: str, pid_of: Callable[[str], int], server,
                    kill: Callable[[str], None], *, rounds: int = 1,
                    progress: Callable[[str], None] = lambda line: None) -> ChaosResult:
    """The fault cycle of :func:`main` and ``tests/test_chaos.py``, ``rounds`` times:
    room SIGKILL, a replica killed (writer ``w0``'s), room SIGKILL, the store down
    10 s with a room SIGKILL in the middle."""
    room_kill = kill_room(pid_of)
    faults: list[Fault] = []
    for _ in range(rounds):
        faults += [room_kill, kill_replica(kill), room_kill,
                   stop_store(server.stop, server.start, 10.0, during=room_kill)]
    return await chaos(url, faults, progress=progress)


if __name__ == "__main__":
    main()
