"""The room-slot bound, in a Ray of its own: a node with 5 ``room_slot`` units, the
gateway, the local emulators. Run by tests/test_slots.py as
``python -m tests.slots_scenario <facts.json>``; it records what happened as JSON.

1. Five rooms take the five slots, each with a socket through the gateway and a user
   (``raisedHand`` set, to check state later). Room ``r0``, the least recently active,
   has an AI job under way (its ``enableAi`` waits on a Calls call the emulator delays).
2. A sixth room is opened: at the bound, the least recently active room that may
   hibernate (``r1``: ``r0`` has its job) hibernates, and the sixth room starts.
3. ``r1``'s socket is still open; its next frame wakes it (shedding the next idle room,
   ``r2``) with its state.
4. Every live room kept busy (``r0``'s job, a heartbeat every 0.3 s in the others): a
   seventh room finds no room it may shed, waits ``slot_wait_s`` and is refused with
   1013 ``no free room slot``; no room was shed; a frame to the shed ``r2`` gets an
   ``error`` and is not applied. Once the rooms are idle again, the
   seventh room starts, shedding the least recently active (``r3``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid

import ray
from pydantic import SecretStr

from actors.config import RoomsConfig, ServiceEndpoints
from actors.directory import ACTOR_PREFIX
from actors.gateway import deploy_gateway
from actors.net import free_port
from actors.slots import free_slots
from bridges.local import start_emulators
from tests.wsclient import open_client

SLOTS = 5


def alive_rooms(namespace: str) -> list[str]:
    return sorted(e["name"][len(ACTOR_PREFIX):] for e in ray.util.list_named_actors(True)
                  if e["namespace"] == namespace and e["name"].startswith(ACTOR_PREFIX))


def user_of(message: dict, conn: str) -> dict | None:
    if message.get("type") != "roomState":
        return None
    return next((u for u in message["state"]["users"] if u["id"] == conn), None)


async def r0_jobs(namespace: str) -> int:
    """AI jobs under way in room r0 (its enableAi, held by the emulator)."""
    info = await ray.get_actor(ACTOR_PREFIX + "r0", namespace=namespace).info.remote()
    return info.jobs


async def scenario(facts: dict) -> None:
    tmp = tempfile.mkdtemp(prefix="slots-")
    with start_emulators(app_id="slots-app", app_secret="slots-secret",
                         api_key="sk-slots") as emu:
        config = RoomsConfig(
            namespace=f"slots-{uuid.uuid4().hex[:6]}", store_url=f"sqlite:///{tmp}/r.sqlite3",
            idle_timeout=0, shed_idle_s=1.0, poll_timeout=5.0, slot_wait_s=2.0,
            warm_workers=0,  # no pool's process starts beside this run (2 cores)
            services=ServiceEndpoints(
                calls_base_url=emu.calls_base_url, calls_app_id="slots-app",
                calls_app_secret=SecretStr("slots-secret"),
                openai_base_url=emu.openai_base_url, openai_api_key=SecretStr("sk-slots"),
                timeout=120.0, retries=0))
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
                 log_to_driver=False, namespace=config.namespace,
                 resources={"room_slot": SLOTS})
        url = deploy_gateway(config, port=free_port(), dev=True, name="slots")
        ws = url.replace("http://", "ws://")
        emu.calls.faults.set("sessions/new", delay=100.0, times=1)  # r0's AI job hangs

        clients = {}
        for i in range(SLOTS):
            room, conn = f"r{i}", f"c{i}"
            client = await open_client(f"{ws}/parties/rooms/{room}?_pk={conn}&username=u{i}")
            client.send({"type": "userUpdate", "user": {"id": conn, "name": f"u{i}",
                                                        "joined": True, "raisedHand": True}})
            await client.wait_for(lambda m, c=conn: (user_of(m, c) or {}).get("raisedHand"),
                                  f"{room}'s user")
            if i == 0:
                client.send({"type": "enableAi"})
                await client.wait_for(lambda m: m.get("type") == "roomState"
                                      and m["state"]["ai"].get("connectionPending"),
                                      "r0's enableAi under way")
            clients[room] = client
            await asyncio.sleep(0.3)  # r0 is the least recently active, then r1, ...
        for room, client in clients.items():  # heartbeats, in the same order: users
            client.send({"type": "heartbeat"})  # stay within Orange's 15 s timeout on a
            await asyncio.sleep(0.3)              # slow run; r0 stays least recently active
        facts["free_at_bound"] = await asyncio.to_thread(free_slots)
        facts["alive_at_bound"] = alive_rooms(config.namespace)
        await asyncio.sleep(1.5)  # every room idle past shed_idle_s

        # 2. a sixth room
        started = time.monotonic()
        sixth = await open_client(f"{ws}/parties/rooms/r5?_pk=c5&username=u5")
        sixth.send({"type": "userUpdate", "user": {"id": "c5", "name": "u5", "joined": True}})
        await sixth.wait_for(lambda m: user_of(m, "c5") is not None, "the sixth room", 60)
        facts["sixth_started_s"] = round(time.monotonic() - started, 2)
        facts["alive_after_sixth"] = alive_rooms(config.namespace)
        facts["sockets_open_after_sixth"] = {r: not c.closed.is_set() for r, c in clients.items()}
        facts["free_after_sixth"] = await asyncio.to_thread(free_slots)
        facts["r0_jobs_after_sixth"] = await r0_jobs(config.namespace)

        # 3. the shed room's next frame wakes it with its state
        await asyncio.sleep(1.5)  # the others idle again
        shed = clients["r1"]
        before = len(shed.messages)
        shed.send({"type": "userUpdate", "user": {"id": "c1", "name": "u1", "joined": True,
                                                  "raisedHand": True, "speaking": True}})
        woke = await shed.wait_index(
            lambda m: (user_of(m, "c1") or {}).get("speaking") is True, "r1 woke", 60)
        message = shed.messages[woke]
        facts["woken_index_after"] = woke >= before
        facts["woken_user"] = user_of(message, "c1")
        facts["woken_users"] = sorted(u["id"] for u in message["state"]["users"])
        facts["alive_after_wake"] = alive_rooms(config.namespace)
        facts["r0_jobs_after_wake"] = await r0_jobs(config.namespace)

        # 4. every live room busy: a seventh room is refused, not left pending
        busy = [clients["r1"], clients["r3"], clients["r4"], sixth]

        async def keep_busy() -> None:
            while True:
                for client in busy:
                    client.send({"type": "heartbeat"})
                await asyncio.sleep(0.3)

        keeper = asyncio.ensure_future(keep_busy())
        await asyncio.sleep(0.5)
        started = time.monotonic()
        seventh = await open_client(f"{ws}/parties/rooms/r6?_pk=c6&username=u6")
        await asyncio.wait_for(seventh.closed.wait(), 60)
        facts["refused_after_s"] = round(time.monotonic() - started, 2)
        facts["refused_close"] = [seventh.ws.close_code, seventh.ws.close_reason]
        facts["refused_messages"] = seventh.messages
        facts["alive_after_refusal"] = alive_rooms(config.namespace)
        facts["sockets_open_after_refusal"] = {
            r: not c.closed.is_set() for r, c in [*clients.items(), ("r5", sixth)]}
        # the shed r2's socket is open; its frame cannot wake it now: an error, not applied
        shed2 = clients["r2"]
        before = len(shed2.messages)
        shed2.send({"type": "userUpdate", "user": {"id": "c2", "name": "u2", "joined": True,
                                                   "raisedHand": False}})
        await shed2.wait_index(lambda m: m.get("type") == "error", "r2's error", 60)
        facts["r2_frame_answers"] = shed2.messages[before:]
        facts["alive_after_r2_frame"] = alive_rooms(config.namespace)
        keeper.cancel()
        await asyncio.sleep(1.0)  # a margin beyond the frames' delivery jitter on a busy run
        for client in [clients["r1"], clients["r4"], sixth]:  # r3: the least recently active
            client.send({"type": "heartbeat"})
        await asyncio.sleep(1.5)  # idle again: the seventh room may shed one now
        facts["idle_before_seventh"] = {
            r: round((await ray.get_actor(ACTOR_PREFIX + r, namespace=config.namespace)
                      .activity.remote()).idle_s, 2)
            for r in alive_rooms(config.namespace)}
        seventh = await open_client(f"{ws}/parties/rooms/r6?_pk=c6&username=u6")
        seventh.send({"type": "userUpdate", "user": {"id": "c6", "name": "u6", "joined": True}})
        await seventh.wait_for(lambda m: user_of(m, "c6") is not None, "the seventh room", 60)
        facts["alive_after_seventh"] = alive_rooms(config.namespace)
        for client in [*clients.values(), sixth, seventh]:
            await client.ws.close()


def main() -> None:
    facts: dict = {}
    try:
        asyncio.run(scenario(facts))
    finally:
        with open(sys.argv[1], "w") as out:
            json.dump(facts, out, indent=1)
        ray.shutdown()


if __name__ == "__main__":
    main()
