"""The room actor's durable-object guarantees, on a real local Ray and a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from actors.seam import actor_id
from actors.config import RoomsConfig
from actors.room_actor import RoomActor
from storage import MemoryStore, SqliteStore, StaleEpoch, decode_snapshot

from .conftest import TEST_NAMESPACE


@pytest.fixture
def config(sqlite_url) -> RoomsConfig:
    return RoomsConfig(namespace=TEST_NAMESPACE, store_url=sqlite_url, idle_timeout=0)


def _wait_restarted(ray, handle, old_pid, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = ray.get(handle.pid.remote(), timeout=10)
            if pid != old_pid:
                return pid
        except Exception:  # noqa: BLE001 - restarting
            pass
        time.sleep(0.2)
    raise AssertionError("the room actor did not restart")


def test_concurrent_get_or_create_is_one_actor(ray_session, config, unique_room):
    ray = ray_session
    from actors.directory import get_room

    @ray.remote(num_cpus=0)
    def racer(room_id, cfg):
        handle = get_room(room_id, cfg)
        return ray.get(handle.pid.remote()), actor_id(handle)

    results = ray.get([racer.remote(unique_room, config) for _ in range(20)])
    assert len({actor_id for _, actor_id in results}) == 1
    assert len({pid for pid, _ in results}) == 1
    assert ray.get_actor(f"room:{unique_room}", namespace=TEST_NAMESPACE)


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
def test_restart_keeps_last_acknowledged_turn(ray_session, config, unique_room, how):
    ray = ray_session
    from actors.directory import get_room

    room = get_room(unique_room, config)
    ray.get(room.connect.remote("a", "alice"))
    ray.get(room.connect.remote("b", "bob"))
    update = {"type": "userUpdate", "user": {
        "id": "a", "name": "ignored", "raisedHand": True, "speaking": False, "joined": True,
        "tracks": {"audioUnavailable": False, "audio": "sess-a/mic", "audioEnabled": True}}}
    ray.get(room.message.remote("a", json.dumps(update)))
    ray.get(room.message.remote("b", json.dumps({"type": "userLeft"})))
    acknowledged = ray.get(room.state.remote())
    info = ray.get(room.info.remote())
    old_pid = info.pid

    if how == "ray.kill":
        ray.kill(room, no_restart=False)
    else:
        os.kill(old_pid, signal.SIGKILL)
    _wait_restarted(ray, room, old_pid)

    assert ray.get(room.state.remote()) == acknowledged
    after = ray.get(room.info.remote())
    assert after.epoch == info.epoch + 1
    assert after.seq >= info.seq
    # the room goes on: the outbox sequence continues where it was
    seq = ray.get(room.message.remote("a", json.dumps({"type": "partyserver-ping"})))
    assert seq == after.seq + 1
    polled = ray.get(room.poll.remote(after.seq, 5))
    assert [json.loads(e.data) for e in polled.entries] == [{"type": "partyserver-pong"}]


def test_stale_epoch_write_is_refused(ray_session, config, unique_room, sqlite_url):
    ray = ray_session
    from actors.directory import get_room

    room = get_room(unique_room, config)
    ray.get(room.connect.remote("a", "alice"))
    path = sqlite_url.removeprefix("sqlite:///")
    store = SqliteStore("/" + path if not path.startswith("/") else path)

    async def newer_activation():
        before = await store.load(unique_room)
        epoch = await store.claim_epoch(unique_room)  # a newer activation claims the room
        return before, epoch

    before, epoch = asyncio.run(newer_activation())
    with pytest.raises(ray.exceptions.RayError):
        ray.get(room.message.remote("a", json.dumps({"type": "heartbeat"})), timeout=30)
    after = asyncio.run(store.load(unique_room))
    assert after == before  # the zombie wrote nothing
    assert decode_snapshot(unique_room, after).epoch < epoch

    async def direct_stale_save():
        with pytest.raises(StaleEpoch):
            await store.save(unique_room, after, epoch=epoch - 1)

    asyncio.run(direct_stale_save())


class DelayedStore(MemoryStore):
    """A memory store whose saves take ``delay`` seconds and are observable."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.saved_versions: list[bytes] = []

    async def save(self, room_id, data, *, epoch, alarm_at=None):
        await asyncio.sleep(self.delay)
        await super().save(room_id, data, epoch=epoch, alarm_at=alarm_at)
        self.saved_versions.append(data)


async def test_output_gate_holds_messages_until_snapshot_is_durable():
    store = DelayedStore(0.3)
    actor = RoomActor("gate", RoomsConfig(idle_timeout=0), store=store)
    await actor.poll(None, 0)
    start = actor.outbox.released

    turn = asyncio.ensure_future(actor.connect("a", "alice"))
    # while the save is under way, nothing may leave the outbox
    early = await actor.poll(start, 0.15)
    assert early.entries == () and not turn.done()
    saves_before = len(store.saved_versions)
    result = await actor.poll(start, 2.0)
    assert len(store.saved_versions) == saves_before + 1
    [entry] = result.entries
    state = json.loads(entry.data)["state"]
    assert [u["id"] for u in state["users"]] == ["a"]
    # the snapshot saved before the release already holds what the message says
    saved = decode_snapshot("gate", store.saved_versions[-1])
    assert list(saved.state["room"]["users"]) == ["a"]
    await turn

    # group commit: turns arriving during one save share the next one
    saves_before = len(store.saved_versions)
    await asyncio.gather(*(actor.message(c, json.dumps({"type": "heartbeat"})) for c in ["a"] * 5))
    assert len(store.saved_versions) - saves_before <= 2


async def test_activity_counts_clients_turns_not_the_rooms_own_alarm():
    """Shedding picks the room its users left quiet longest: the alarm's sweeps (a turn
    every 15 s in a room with users) do not make a room recently active."""
    actor = RoomActor("quiet", RoomsConfig(idle_timeout=0), store=MemoryStore())
    await actor.connect("a", "alice")
    await asyncio.sleep(0.3)
    assert await actor.alarm(force=True)
    idle = actor.activity().idle_s
    assert idle >= 0.3, idle  # the alarm ran, and the room still counts as quiet
    await actor.message("a", json.dumps({"type": "heartbeat"}))
    assert actor.activity().idle_s < idle  # a client's frame is activity


class _FailingSaves(MemoryStore):
    """A memory store whose first ``failures`` saves fail (the store is down)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def save(self, room_id, data, *, epoch, alarm_at=None):
        from storage import StorageUnavailable

        if self.failures > 0:
            self.failures -= 1
            raise StorageUnavailable("the store is down")
        await super().save(room_id, data, epoch=epoch, alarm_at=alarm_at)


async def test_an_activation_retried_after_a_store_outage_publishes_restored_entries_once():
    # Before: the retried activation reused the Outbox of the failed one: `released`
    # moved back and the restored entries were published again, out of order (issue 19).
    from storage import StorageUnavailable

    store = _FailingSaves(0)
    first = RoomActor("o", RoomsConfig(idle_timeout=0), store=store)
    await first.connect("a", "alice")
    await first.connect("b", "bob")
    first.room.data.ai.connectionPending = True  # so the next activation's start saves
    await first.message("a", json.dumps({"type": "userUpdate", "user": {"id": "a", "name": "a"}}))
    first._exit()
    store.failures = 10**6
    second = RoomActor("o", RoomsConfig(idle_timeout=0, store_retry_s=0.2), store=store)
    with pytest.raises(StorageUnavailable):
        await second.state()
    store.failures = 0
    await second.state()  # the activation is retried and succeeds
    seqs = [e.seq for e in second.outbox.since(0).entries]
    assert seqs == sorted(set(seqs)), seqs
    await second.message("a", json.dumps({"type": "partyserver-ping"}))
    seqs = [e.seq for e in second.outbox.since(0).entries]
    assert seqs == sorted(set(seqs)) and seqs[-1] == second.outbox.released
    second._exit()


_ENDPOINTS = dict(calls_base_url="http://127.0.0.1:9/v1", calls_app_id="app",
                  calls_app_secret="secret", openai_base_url="http://127.0.0.1:9/v1",
                  openai_api_key="key")


async def test_an_active_room_prepares_its_ai_clients_before_enable_ai():
    """With Calls configured, a room builds its AI clients in a thread once it is active
    (issue 23: enableAi waited ~0.1 s for their imports and TLS context); the enable job
    then uses those very clients. Off (``ai_prepare=False``) or unconfigured: nothing is
    built until the first enableAi."""
    from actors.config import ServiceEndpoints

    endpoints = ServiceEndpoints(**_ENDPOINTS)
    actor = RoomActor("prep", RoomsConfig(idle_timeout=0, services=endpoints),
                      store=MemoryStore())
    await actor.connect("a", "alice")
    prepared = actor._prepared_services
    assert prepared is not None, "an active room with Calls configured prepares its clients"
    await asyncio.wait_for(asyncio.wait([prepared]), 30)
    calls, ai = await actor._services_ready()
    assert (calls, ai) == prepared.result()

    off = RoomActor("prep-off", RoomsConfig(idle_timeout=0, ai_prepare=False,
                                            services=endpoints), store=MemoryStore())
    await off.connect("a", "alice")
    assert off._prepared_services is None

    bare = RoomActor("prep-none", RoomsConfig(idle_timeout=0), store=MemoryStore())
    await bare.connect("a", "alice")
    if not os.environ.get("CALLS_APP_ID"):
        assert bare._prepared_services is None  # nothing configured: nothing built


_WITHOUT_AI = """
import asyncio, sys
from actors.config import RoomsConfig
from actors.room_actor import RoomActor
from storage.factory import open_store

async def main():
    url = "sqlite:///" + sys.argv[1]
    room = RoomActor("r", RoomsConfig(store_url=url, idle_timeout=0), store=open_store(url))
    await room.connect("c", "caller", "P", "s")
    await room.message("c", '{"type":"heartbeat"}')
    await asyncio.sleep(0.2)  # a preparation of the AI's clients would have started
    print(sorted({name.split(".")[0] for name in sys.modules}
                 & {"httpx", "websockets", "rich", "click", "pygments"}))

asyncio.run(main())
"""


def test_a_room_whose_ai_is_not_configured_imports_no_http_client(tmp_path):
    """A room with no Calls credentials never builds the AI's clients, so its process
    imports none of what they need: httpx (which imports its command line's click, rich
    and pygments when they are installed) and websockets cost a room's process ~6 MiB
    and its start. Run in a fresh interpreter, with no ``CALLS_*``/``OPENAI_*``."""
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLS_", "OPENAI_"))}
    done = subprocess.run([sys.executable, "-c", _WITHOUT_AI, str(tmp_path / "r.sqlite3")],
                          cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
