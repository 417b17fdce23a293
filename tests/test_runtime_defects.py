"""One test per hidden fault path of the runtime listed in issue 19 that had none yet,
each written to fail on the defect (no Ray: the pieces run in this process with Ray's
calls replaced where they would need a cluster). The others: a retried activation
(``tests/test_room_actor.py``), the scheduler's holds (``tests/test_scheduler.py``),
``get_room`` on its own threads (``tests/test_room_ref.py``), the store URL's password
(``tests/test_storage.py``)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

import actors.room_actor as room_actor
import actors.warmpool as warmpool
from actors.config import RoomsConfig
from actors.gateway.channel import ChannelState, RoomChannel
from actors.gateway.limits import GatewayLimits
from actors.gateway.room_ref import RoomRef
from actors.room_actor import RoomActor
from storage import MemoryStore


async def test_exit_from_a_background_task_asks_the_actor_to_stop(monkeypatch):
    """Before: ``_exit`` raised ``ray.actor.exit_actor()`` inside the idle, alarm or
    job task, whose ``except Exception`` could swallow it (whether the actor exited
    depended on a Ray flag). Now it asks the actor to call its own ``stop``."""
    actor = RoomActor("exit-room", RoomsConfig(idle_timeout=0), store=MemoryStore())
    stops: list[str] = []

    def exit_actor():
        raise RuntimeError("exit_actor raised inside a background task")

    monkeypatch.setattr(room_actor, "_in_ray_actor", lambda: True)
    monkeypatch.setattr(room_actor.ray.actor, "exit_actor", exit_actor)
    fake = SimpleNamespace(current_actor=SimpleNamespace(
        stop=SimpleNamespace(remote=lambda: stops.append("stop"))))
    monkeypatch.setattr(room_actor.ray, "get_runtime_context", lambda: fake)

    async def background():  # as the idle watch runs it
        try:
            actor._exit()
        except Exception as error:  # noqa: BLE001 - what a background task does
            return error
        return None

    assert await asyncio.ensure_future(background()) is None
    assert stops == ["stop"]


async def test_a_warm_pool_looks_its_node_up_off_the_event_loop(monkeypatch):
    """Before: ``WarmPool._prestart`` called the blocking ``ray.nodes()`` on the pool
    actor's event loop; now the loop keeps running while it waits."""
    def slow_nodes():
        time.sleep(0.5)  # a GCS round trip under load
        return [{"NodeID": "n1", "Alive": True, "NodeManagerAddress": "127.0.0.1",
                 "NodeManagerPort": 1}]

    monkeypatch.setattr(warmpool.ray, "nodes", slow_nodes)
    monkeypatch.setattr(warmpool, "prestart", lambda *a, **k: True)
    pool = warmpool.WarmPool("n1", 2, refill_s=3600)
    gaps: list[float] = []

    async def ticker():
        last = time.monotonic()
        for _ in range(40):
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.05)  # the ticker runs before the look-up starts
    await pool._prestart(("job", "env"), 2)
    await ticking
    pool._task.cancel()
    assert pool.prestarted == 2
    assert max(gaps) < 0.3, f"the event loop stalled for {max(gaps):.2f} s"


async def test_a_warm_pool_keeps_every_task_it_starts(monkeypatch):
    """Before: the initial top-ups were created with no reference kept, so the event
    loop's weak reference was all that held them (they could be collected mid-run)."""
    release = asyncio.Event()

    async def held(*args, **kwargs):
        await release.wait()

    monkeypatch.setattr(warmpool.WarmPool, "_prestart", held)
    pool = warmpool.WarmPool("n1", 2, refill_s=3600, initial=[("job", "env")])
    await asyncio.sleep(0)
    assert len(pool._tasks) == 1 and not next(iter(pool._tasks)).done()
    release.set()
    await asyncio.sleep(0.01)
    assert not pool._tasks  # dropped once done
    pool._task.cancel()


class _Handle:
    """A room actor handle whose ``activation`` answers ``epoch`` (made on a thread,
    as ``ray.get_actor`` runs there; its call is awaited on ``loop``)."""

    def __init__(self, epoch: int, loop: asyncio.AbstractEventLoop) -> None:

        def remote():
            future = loop.create_future()
            future.set_result(epoch)
            return future

        self.activation = SimpleNamespace(remote=remote)


@pytest.mark.parametrize("epoch, awake", [(5, False), (6, True)])
async def test_a_hibernating_channel_learns_of_a_reactivation_from_the_rooms_epoch(
        monkeypatch, epoch, awake):
    """Before: a channel compared a private attribute of the actor handles (the hibernated
    actor and the one found now; if Ray renamed that attribute both were ``None``,
    compared equal, and a reactivation by another replica was never noticed. Now the
    room reports its activation epoch: newer than the one that hibernated is awake."""
    import actors.gateway.channel as channel_module

    limits = GatewayLimits(wake_check_s=0.05)
    channel = RoomChannel(RoomRef("r", RoomsConfig(), limits), limits,
                          on_empty=lambda c: None)
    channel.state = ChannelState.HIBERNATING
    channel._hibernated_epoch = 5
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(channel_module.ray, "get_actor",
                        lambda name, ns: _Handle(epoch, loop))
    await channel._await_reactivation()
    assert channel.state is (ChannelState.POLLING if awake else ChannelState.HIBERNATING)


async def test_a_late_frame_of_a_replaced_socket_does_not_take_the_state_back():
    """Found by the chaos benchmark (2 rounds: 2 of 4 writers' acknowledged updates
    lost): a replica dies with a batch of socket S1 in flight; the client reconnects
    through another replica as S2 and sends newer updates; the dead replica's
    ``deliver`` then runs in the room. Before, S1's old update was applied last and the
    state went back. Now a connection is owned by its newest socket: once S2's frame
    is applied, S1 is retired; S1's frames that come first are still applied. The
    retirement is part of the snapshot (it survives a restart)."""
    from actors.applied import AppliedFrames
    from actors.wire import Frame

    def update(n: int) -> str:
        import json
        return json.dumps({"type": "userUpdate", "user": {
            "id": "a", "name": "a", "raisedHand": False, "speaking": False, "joined": True,
            "tracks": {"audioUnavailable": False, "audio": f"a/{n}"}}})

    def audio(state: dict) -> str:
        return next(u["tracks"]["audio"] for u in state["users"] if u["id"] == "a")

    store = MemoryStore()
    actor = RoomActor("retire-room", RoomsConfig(idle_timeout=0), store=store)
    await actor.connect("a", "alice", None, "S1")
    await actor.deliver([Frame("a", update(1), "S1", 1)], None)
    await actor.connect("a", "alice", None, "S2")
    await actor.deliver([Frame("a", update(2), "S1", 2)], None)  # S1's, before S2's: applied
    assert audio(await actor.state()) == "a/2"
    await actor.deliver([Frame("a", update(3), "S2", 1)], None)
    await actor.deliver([Frame("a", update(1), "S1", 3)], None)  # the dead replica's, late
    assert audio(await actor.state()) == "a/3"

    again = AppliedFrames(actor.applied.record())  # as a restarted room loads it
    assert again.apply_frame("S1", 9, "a") is False
    assert again.apply_frame("S2", 2, "a") is True


async def test_a_failed_deliver_claims_nothing_so_its_pollers_poll_still_wakes():
    """Found by the chaos benchmark (a writer stalled ~25 s, a poll timeout, after the
    store came back): a ``deliver`` claimed for its poller every sequence number its
    turns were given as soon as they were staged; when the save then failed, the
    deliver returned an error, not the entries, yet the poller's poll skipped them when
    they were released later. Now a deliver claims only what its result carries."""
    from actors.outbox import Outbox
    from actors.wire import OutboxEntry

    outbox = Outbox(100)
    with pytest.raises(RuntimeError):
        with outbox.claiming("P"):
            raise RuntimeError("storage unavailable")  # the batch's save failed
    waiting = asyncio.ensure_future(outbox.wait(0, 5.0, "P", lambda: False))
    await asyncio.sleep(0.05)
    outbox.publish(OutboxEntry(seq=1, to="all", data="{}"))  # released after the store is back
    result = await asyncio.wait_for(waiting, 1.0)
    assert [e.seq for e in result.entries] == [1]

    # a deliver that returned entries up to 1 claims exactly those
    with outbox.claiming("P"):
        outbox.claim("P", 1)
    later = asyncio.ensure_future(outbox.wait(1, 5.0, "P", lambda: False))
    await asyncio.sleep(0.05)
    outbox.publish(OutboxEntry(seq=2, to="all", data="{}"))
    assert [e.seq for e in (await asyncio.wait_for(later, 1.0)).entries] == [2]


async def test_a_reconnect_after_a_room_restart_gets_what_its_dead_replica_owed():
    """Found by the chaos benchmark (3 rounds: 1 of 12,749 direct messages lost): the
    room restarts (SIGKILL) while a socket stays open on replica R1; a direct message
    to it is released; R1 dies before fanning it out; the client reconnects through R2.
    Before, which poller served the connection was known only to the activation that
    saw its ``connect``, so the restarted room owed the reconnect nothing and the
    message was lost. Now the readers' table (connection -> poller and socket, the
    pollers' cursors) is part of the snapshot."""
    import json

    from actors.wire import Frame

    store = MemoryStore()
    config = RoomsConfig(idle_timeout=0)
    first = RoomActor("owed-room", config, store=store)
    await first.connect("a", "alice", "R1", "S1")
    await first.connect("b", "bob", "R2", "T1")
    cursor = (await first.deliver([], 0, "R1")).cursor

    restarted = RoomActor("owed-room", config, store=store)  # the same room, a new process
    cursor = (await restarted.deliver([], cursor, "R1")).cursor  # R1 polls it again
    dm = json.dumps({"type": "directMessage", "to": "a", "message": "hello a"})
    await restarted.deliver([Frame("b", dm, "T1", 1)], cursor, "R2")
    # R1 dies before fanning the message out; "a" reconnects through R2
    await restarted.connect("a", "alice", "R2", "S2")
    replay = (await restarted.deliver([], cursor, "R2")).entries
    assert any(e.data and "hello a" in e.data and e.reaches("a") and e.seq > cursor + 1
               for e in replay), [e.data for e in replay]
