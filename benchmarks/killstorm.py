"""A black-box kill storm: writers stream through a real gateway while the room's
process is SIGKILLed, and what the clients see is checked (issue 19).

Four sockets share one room. Each writer sends a ``userUpdate`` with a counter, waits
until a ``roomState`` shows it, then sends a ``directMessage`` to the next writer and
its next ``userUpdate`` (one update and one message in flight per socket), plus a
``heartbeat`` every 4 s. ``--delay`` seconds after every writer has progressed, the
room's worker process is SIGKILLed (the pid comes from Ray: the fault, not the
clients, uses Ray), ``--kills`` times. Measured per kill: SIGKILL to the room
answering ``GET /rooms/{room}`` again, and from then to each writer's next update
showing; at the end, direct messages lost or duplicated, and whether every writer's
last acknowledged update is in the room's state.

Run against a gateway you started (``ROOMS_GATEWAY_RATE_PER_S=1000
ROOMS_GATEWAY_BURST=1000 rooms serve --dev``, then ``python -m benchmarks.killstorm
--url http://127.0.0.1:8000 --kills 30``), or let it start ``rooms serve --dev`` itself
(no ``--url``; it raises the rate limit so). Each writer sends about a hundred frames a
second, five times the gateway's default per-connection rate limit: at the default,
its frames are refused with ``error`` replies (counted in the result), and a client
that waits for a refused update stalls. The scenario itself is
:func:`kill_storm`, which ``tests/test_kill_storm.py`` runs against one and two
gateway replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import httpx

from tests.wsclient import Client, open_client

__all__ = ["StormResult", "kill_storm", "room_answers", "update_frame"]


@dataclass
class StormResult:
    """What the clients saw in one storm.

    Attributes:
        kills: the kills made.
        answer_s: per kill, seconds from SIGKILL to the room answering again.
        stall_s: per kill and writer, seconds from the room answering again to the
            writer's next update showing in a ``roomState`` (``None``: never, within
            the wait).
        dms_sent, dms_lost, dms_twice: direct messages sent, never received, received
            more than once.
        lost_updates: writers whose last acknowledged update is not in the final state.
        dropped: sockets the gateway closed.
        closes: the close code and reason of each dropped socket.
        errors: ``error`` replies the writers got, by text (a refused frame is not a
            lost one: the gateway's per-connection rate limit, 20 messages/s by
            default, refuses a writer this fast unless it is raised).
        replicas: the gateway replica of each writer's socket.
    """

    kills: int = 0
    answer_s: list[float] = field(default_factory=list)
    stall_s: list[dict[str, float | None]] = field(default_factory=list)
    dms_sent: int = 0
    dms_lost: list[str] = field(default_factory=list)
    dms_twice: list[str] = field(default_factory=list)
    lost_updates: list[str] = field(default_factory=list)
    dropped: int = 0
    closes: list[tuple[int | None, str]] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    replicas: dict[str, str] = field(default_factory=dict)

    def stalls_over(self, seconds: float) -> int:
        """Kills after which some writer took longer than ``seconds`` (or never)."""
        return sum(1 for kill in self.stall_s
                   if any(v is None or v > seconds for v in kill.values()))

    def summary(self) -> str:
        """One paragraph of figures."""
        worst = [max((v if v is not None else float("inf")) for v in k.values())
                 for k in self.stall_s] or [0.0]
        return (f"{self.kills} kills; answer again p50 {statistics.median(self.answer_s):.2f} s "
                f"max {max(self.answer_s):.2f} s; slowest writer after the answer: p50 "
                f"{statistics.median(worst):.2f} s, max {max(worst):.2f} s; kills with a "
                f"writer stalled > 2 s: {self.stalls_over(2.0)}; direct messages: "
                f"{self.dms_sent} sent, {len(self.dms_lost)} lost, {len(self.dms_twice)} twice;"
                f" lost acknowledged updates: {len(self.lost_updates)}; sockets dropped: "
                f"{self.dropped} {self.closes}; error replies: {dict(self.errors)}; "
                f"replicas: {len(set(self.replicas.values()))}")


async def room_answers(http: httpx.AsyncClient, room: str,
                       deadline: float | None = None) -> bool:
    """Wait until ``GET /rooms/{room}`` answers 200 (dev-mode operator), polling every
    20 ms; return ``False`` if ``deadline`` (``time.monotonic()``) passed first."""
    while deadline is None or time.monotonic() < deadline:
        try:
            reply = await http.get(f"/rooms/{room}", params={"username": "storm-op"},
                                   timeout=5)
            if reply.status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.02)
    return False


def update_frame(conn: str, n: int) -> str:
    """A ``userUpdate`` of ``conn`` whose audio track name carries the counter ``n``."""
    return json.dumps({"type": "userUpdate", "user": {
        "id": conn, "name": conn, "raisedHand": n % 2 == 1, "speaking": False,
        "joined": True, "tracks": {"audioUnavailable": False, "audio": f"{conn}/{n}"}}})


def _seen(client: Client, conn: str, start: int) -> tuple[int, int]:
    """The newest update of ``conn`` in ``client``'s roomStates from index ``start``,
    and the index to look from next."""
    newest = 0
    messages = client.messages
    end = len(messages)
    for message in messages[start:end]:
        if message["type"] == "roomState":
            for user in message["state"]["users"]:
                if user["id"] == conn:
                    newest = max(newest, int(user["tracks"].get("audio", "x/0").split("/")[1]))
    return newest, end


async def kill_storm(base_url: str, pid_of: Callable[[str], int], *, kills: int = 30,
                     writers: int = 4, delay_s: float = 0.2, wait_s: float = 15.0,
                     room: str | None = None, urls: list[str] | None = None,
                     spread: int = 1,
                     progress: Callable[[str], None] = lambda line: None) -> StormResult:
    """Run the storm against the gateway at ``base_url`` (dev-mode identities).

    Args:
        base_url: ``http://host:port`` of the gateway (``GET /rooms/{room}`` as an
            operator: development mode).
        pid_of: the pid of ``room``'s worker process now (raises while it restarts).
        kills: SIGKILLs to make.
        writers: sockets in the room.
        delay_s: seconds after every writer progressed before the next kill.
        wait_s: seconds to wait for every writer to progress after a kill.
        room: the room id (default: a new one).
        urls: the gateway base URL of each writer's socket (several replicas); default
            ``base_url`` for all.
        spread: gateway replicas the sockets must be spread over (a socket that lands
            on a replica already used is opened again, while fewer are used).
        progress: called with a line per kill.

    Returns:
        The :class:`StormResult`.
    """
    room = room or f"storm-{uuid.uuid4().hex[:8]}"
    names = [f"w{i}" for i in range(writers)]
    urls = urls or [base_url] * writers
    clients: dict[str, Client] = {}
    for i, w in enumerate(names):
        ws = urls[i % len(urls)].replace("http://", "ws://")
        for _ in range(40):  # until the sockets so far are on `spread` replicas
            client = await open_client(f"{ws}/parties/rooms/{room}?_pk={w}&username={w}")
            here = client.ws.response.headers.get("x-rooms-replica", "")
            seen = {c.ws.response.headers.get("x-rooms-replica", "") for c in clients.values()}
            if len(seen) >= spread or here not in seen:
                break
            await client.ws.close()
            await asyncio.sleep(0.1)
        clients[w] = client
    for w, client in clients.items():
        await client.wait_for(lambda m, w=w: m["type"] == "roomState" and any(
            u["id"] == w for u in m["state"]["users"]), f"{w}'s seat", 60)
    applied = {w: 0 for w in names}
    first_seen: dict[str, list[tuple[float, int]]] = {w: [] for w in names}
    sent: Counter[str] = Counter()
    stop = asyncio.Event()
    result = StormResult()

    async def writer(w: str) -> None:
        client, n, index = clients[w], 0, 0
        target = names[(names.index(w) + 1) % len(names)]
        last_beat = time.monotonic()
        while not stop.is_set():
            n += 1
            await client.ws.send(update_frame(w, n))
            if time.monotonic() - last_beat > 4.0:
                await client.ws.send(json.dumps({"type": "heartbeat"}))
                last_beat = time.monotonic()
            while applied[w] < n and not stop.is_set():
                newest, index = _seen(client, w, index)
                if newest > applied[w]:
                    applied[w] = newest
                    first_seen[w].append((time.monotonic(), newest))
                await asyncio.sleep(0.005)
            if stop.is_set():
                return
            text = f"{w}:{n}"
            sent[f"{target}<-{text}"] += 1
            await client.ws.send(json.dumps({"type": "directMessage", "to": target,
                                             "message": text}))

    tasks = [asyncio.ensure_future(writer(w)) for w in names]
    try:
        async with httpx.AsyncClient(base_url=base_url) as http:
            await asyncio.sleep(1.0)
            for k in range(kills):
                before = dict(applied)
                deadline = time.monotonic() + wait_s
                while any(applied[w] <= before[w] for w in names) and \
                        time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(delay_s)
                before = dict(applied)
                pid = await asyncio.to_thread(pid_of, room)
                os.kill(pid, signal.SIGKILL)
                killed = time.monotonic()
                await asyncio.sleep(0.05)
                await room_answers(http, room)
                answered = time.monotonic()
                deadline = answered + wait_s
                while any(applied[w] <= before[w] for w in names) and \
                        time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                stall = {w: next((max(0.0, t - answered) for t, v in first_seen[w]
                                  if v > before[w]), None) for w in names}
                result.kills += 1
                result.answer_s.append(answered - killed)
                result.stall_s.append(stall)
                progress(f"kill {k + 1}/{kills}: answered in {answered - killed:.2f} s, "
                         "writers moved " + ", ".join(
                             f"{w} {'never' if v is None else f'{v:.2f} s'}"
                             for w, v in stall.items()))
        stop.set()
        await asyncio.gather(*tasks)
        await asyncio.sleep(2.0)  # the last direct messages arrive
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
    received: Counter[str] = Counter()
    for w, client in clients.items():
        for message in client.messages:
            if message["type"] == "directMessage":
                received[f"{w}<-{message['message']}"] += 1
    result.dms_sent = sum(sent.values())
    result.dms_lost = sorted((sent - received).elements())
    result.dms_twice = sorted(k for k, v in received.items() if v > 1)
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        state = (await http.get(f"/rooms/{room}", params={"username": "storm-op"})).json()
    shown = {u["id"]: int((u["tracks"].get("audio") or "x/0").split("/")[1])
             for u in state["users"]}
    # the state holds each writer's last acknowledged update, or the one it sent after
    result.lost_updates = [w for w in names if shown.get(w, 0) < applied[w]]
    result.dropped = sum(1 for c in clients.values() if c.closed.is_set())
    result.closes = [(c.ws.close_code, c.ws.close_reason) for c in clients.values()
                     if c.closed.is_set()]
    result.errors = Counter(m["error"] for c in clients.values() for m in c.messages
                            if m["type"] == "error")
    result.replicas = {w: c.ws.response.headers.get("x-rooms-replica", "")
                       for w, c in clients.items()}
    for client in clients.values():
        await client.ws.close()
    return result


def _ray_pid_of(namespace: str) -> Callable[[str], int]:
    import ray

    from actors.directory import actor_name

    def pid_of(room: str) -> int:
        deadline = time.monotonic() + 60
        while True:
            try:
                handle = ray.get_actor(actor_name(room), namespace=namespace)
                return ray.get(handle.pid.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - restarting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    return pid_of


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.killstorm [--url URL] [--kills 30] [--replicas 1]
    [--namespace rooms]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running dev-mode gateway (default: start "
                                      "`rooms serve --dev` on a free port)")
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--namespace", default="rooms")
    parser.add_argument("--replicas", type=int, default=1,
                        help="gateway replicas to start, the sockets spread over them "
                             "(without --url)")
    args = parser.parse_args(argv)
    import subprocess

    import ray

    from actors.net import free_port

    server = None
    url = args.url
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "ROOMS_GATEWAY_RATE_PER_S": "1000",
               "ROOMS_GATEWAY_BURST": "1000"}
        server = subprocess.Popen(["rooms", "serve", "--dev", "--port", str(port),
                                   "--address", "local", "--replicas", str(args.replicas)],
                                  env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("rooms serve --dev did not start")
            time.sleep(1)
    try:
        ray.init(address="auto", namespace=args.namespace, log_to_driver=False,
                 configure_logging=False)
        result = asyncio.run(kill_storm(url, _ray_pid_of(args.namespace), kills=args.kills,
                                        writers=args.writers, spread=args.replicas,
                                        progress=print))
        print(result.summary())
        if result.dms_lost:
            print("lost:", result.dms_lost[:20])
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(120)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
