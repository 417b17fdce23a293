"""Hibernation and persisted alarms on a real local Ray and a real SQLite file.

A room with a short idle timeout gives its actor back, keeps its state in its snapshot,
and wakes with a new epoch on the next message; an alarm set before it slept is run by
the alarm scheduler (``actors.scheduler``) while it sleeps.

The room's alarm interval and heartbeat timeout are 15 s. Rather than wait for them,
the alarm test moves the hibernated room's clock: it rewrites the stored snapshot with
its alarm and the stale user's heartbeat shifted into the past by the same amount (the
same as 15 s having passed), written with the epoch of the activation that made it, as
the room itself would have.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from actors.seam import actor_id
from actors.config import RoomsConfig
from actors.directory import actor_name, get_room
from rooms.room import ALARM_INTERVAL
from storage import Snapshot, decode_snapshot, encode_snapshot, open_store

from .conftest import TEST_NAMESPACE
from .polling import until

pytestmark = pytest.mark.ray


@pytest.fixture
def config(sqlite_url) -> RoomsConfig:
    return RoomsConfig(namespace=TEST_NAMESPACE, store_url=sqlite_url, idle_timeout=1.0,
                       poll_timeout=30.0)


def _load(url: str, room_id: str) -> Snapshot | None:
    async def load():
        store = open_store(url)
        try:
            raw = await store.load(room_id)
        finally:
            await store.close()
        return None if raw is None else decode_snapshot(room_id, raw)

    return asyncio.run(load())


def _alive(ray, room_id: str) -> bool:
    try:
        ray.get_actor(actor_name(room_id), namespace=TEST_NAMESPACE)
        return True
    except ValueError:
        return False


def _age_snapshot(url: str, room_id: str, seconds: float, stale: set[str]) -> Snapshot:
    """Move a sleeping room's clock ``seconds`` ahead: its alarm and the heartbeats of
    the users in ``stale`` (all others keep theirs) move into the past. Saved with the
    snapshot's own epoch, i.e. as the last activation would have written it."""

    async def age():
        store = open_store(url)
        try:
            snap = decode_snapshot(room_id, await store.load(room_id))
            room = snap.state["room"]
            room["alarmAt"] -= seconds
            for conn in stale:
                room["heartbeats"][conn] -= seconds
            await store.save(room_id, encode_snapshot(snap), epoch=snap.epoch,
                             alarm_at=room["alarmAt"])
            return snap
        finally:
            await store.close()

    return asyncio.run(age())


def test_idle_room_hibernates_and_wakes_with_its_state(ray_session, config, unique_room,
                                                        sqlite_url):
    ray = ray_session
    room = get_room(unique_room, config)
    ray.get(room.connect.remote("a", "alice"))
    ray.get(room.connect.remote("b", "bob"))
    before = ray.get(room.state.remote())
    info = ray.get(room.info.remote())
    assert {u["id"] for u in before["users"]} == {"a", "b"} and before["meetingId"]

    # a gateway's long-poll is waiting when the room goes to sleep
    poll = room.poll.remote(info.seq, 30)
    answer = ray.get(poll, timeout=20)
    assert answer.hibernating is True and answer.entries == ()

    until("the actor to exit", lambda: not _alive(ray, unique_room), 20, every=0.1)
    named = ray.util.list_named_actors(all_namespaces=True)
    assert {"name": actor_name(unique_room), "namespace": TEST_NAMESPACE} not in named
    with pytest.raises(ray.exceptions.RayActorError):  # exited for good, not restarted
        ray.get(room.pid.remote(), timeout=20)

    snap = _load(sqlite_url, unique_room)
    assert snap is not None and snap.epoch == info.epoch
    assert set(snap.state["room"]["users"]) == {"a", "b"}
    assert snap.state["room"]["meetingId"] == before["meetingId"]

    # the next message wakes it from its snapshot, with a new epoch
    woken = get_room(unique_room, config)
    seq = ray.get(woken.message.remote("a", json.dumps({"type": "partyserver-ping"})))
    after = ray.get(woken.state.remote())
    assert after == before
    info2 = ray.get(woken.info.remote())
    assert info2.epoch == info.epoch + 1
    assert info2.pid != info.pid
    assert seq == info.seq + 1  # the outbox sequence goes on across activations
    polled = ray.get(woken.poll.remote(info.seq, 5))
    assert [json.loads(e.data) for e in polled.entries] == [{"type": "partyserver-pong"}]


def test_a_busy_room_does_not_hibernate(ray_session, config, unique_room):
    ray = ray_session
    room = get_room(unique_room, config)
    ray.get(room.connect.remote("a", "alice"))
    epoch = ray.get(room.info.remote()).epoch
    deadline = time.monotonic() + 2.5 * config.idle_timeout
    while time.monotonic() < deadline:  # a turn every idle_timeout / 4
        ray.get(room.message.remote("a", json.dumps({"type": "heartbeat"})))
        time.sleep(config.idle_timeout / 4)
    assert ray.get(room.info.remote()).epoch == epoch  # the same activation throughout


@pytest.fixture
def scheduler(ray_session, config):
    """``(handle, name)`` of a scheduler of its own (this test's store), killed after."""
    from actors.scheduler import ensure_scheduler

    name = f"alarm-scheduler-test-{uuid.uuid4().hex[:8]}"
    handle = ensure_scheduler(config, name=name, poll_interval=0.5, grace=0.3)
    yield handle, name
    ray_session.kill(handle, no_restart=True)


def test_ensure_scheduler_is_get_or_create(ray_session, scheduler, config):
    ray = ray_session
    from actors.scheduler import ensure_scheduler

    handle, name = scheduler
    again = ensure_scheduler(config, name=name)
    assert actor_id(again) == actor_id(handle) is not None
    assert actor_id(ray.get_actor(name, namespace=TEST_NAMESPACE)) == actor_id(handle)
    stats = ray.get(handle.stats.remote())
    assert stats["running"] is True and stats["namespace"] == TEST_NAMESPACE
    assert stats["store"] == config.store_url and stats["in_flight"] == []


def test_alarm_fires_while_the_room_hibernates(ray_session, config, scheduler, sqlite_url):
    ray = ray_session
    suffix = uuid.uuid4().hex[:8]
    lonely, busy = f"alarm-lonely-{suffix}", f"alarm-busy-{suffix}"

    # "lonely": one user who stops sending heartbeats; "busy": a stale user and a live one
    rooms = {lonely: get_room(lonely, config), busy: get_room(busy, config)}
    ray.get(rooms[lonely].connect.remote("a", "alice"))
    ray.get(rooms[busy].connect.remote("a", "alice"))
    ray.get(rooms[busy].connect.remote("b", "bob"))
    infos = {r: ray.get(h.info.remote()) for r, h in rooms.items()}
    for info in infos.values():
        assert info.alarmAt is not None and info.alarmAt > time.time() + 10

    until("both rooms to hibernate", lambda: not any(_alive(ray, r) for r in rooms), 20,
          every=0.1)
    until("both rooms to hibernate", lambda: not any(_alive(ray, r) for r in rooms), 20, every=0.1)

    # let 15 s pass for the sleeping rooms: the alarm falls due in 1 s, and the users
    # who stopped sending heartbeats are older than the heartbeat timeout by then
    shift = infos[lonely].alarmAt - (time.time() + 1.0)
    _age_snapshot(sqlite_url, lonely, shift, stale={"a"})
    shift_busy = infos[busy].alarmAt - (time.time() + 1.0)
    aged = _age_snapshot(sqlite_url, busy, shift_busy, stale={"a"})
    alarm_busy = aged.state["room"]["alarmAt"]
    assert not any(_alive(ray, r) for r in rooms)

    # nobody calls the rooms: the scheduler wakes them when their alarm is due
    def swept():
        snaps = {r: _load(sqlite_url, r) for r in rooms}
        return snaps if all(s.epoch > infos[r].epoch for r, s in snaps.items()) else None

    snaps = until("the scheduler to wake both rooms", swept, 20, every=0.1)

    # the lonely room: its stale user is gone and the meeting ended
    state = snaps[lonely].state["room"]
    assert snaps[lonely].epoch == infos[lonely].epoch + 1
    assert not state.get("users") and state.get("meetingId") is None
    assert state.get("alarmAt") is None

    # the busy room: only the stale user went; the meeting goes on, the alarm re-armed
    state = snaps[busy].state["room"]
    assert snaps[busy].epoch == infos[busy].epoch + 1
    assert set(state["users"]) == {"b"}
    assert state["meetingId"] == infos[busy].meetingId
    fired_at = state["alarmAt"] - ALARM_INTERVAL  # the alarm turn re-arms at now + 15 s
    assert alarm_busy <= fired_at < alarm_busy + 5.0  # on time: not early, not much late

    assert snaps[busy].seq > infos[busy].seq  # it told the others (userLeftNotification)

    stats = ray.get(scheduler[0].stats.remote())
    # the scheduler woke both (the woken room's own timer may run the alarm first; then
    # the scheduler's call finds it no longer due, which is fine)
    assert stats["wakes"] >= 2 and stats["ran"] + stats["not_due"] >= 2
    assert stats["failures"] == 0 and stats["gave_up"] == 0


def test_a_failing_wake_is_retried_and_the_alarm_kept(ray_session, config, unique_room,
                                                      sqlite_url):
    """At least once: a room that cannot wake (its snapshot is unreadable) is retried with
    backoff, its alarm stays in the store, and it runs once it can wake again."""
    ray = ray_session
    from actors.scheduler import ensure_scheduler

    due = time.time() - 1.0

    async def write(data: bytes | None):
        """Save ``data`` (as an operator would: claiming an epoch) with the alarm ``due``,
        or only read; return the due alarms."""
        store = open_store(sqlite_url)
        try:
            if data is not None:
                epoch = await store.claim_epoch(unique_room)
                await store.save(unique_room, data, epoch=epoch, alarm_at=due)
            return await store.due_alarms(time.time())
        finally:
            await store.close()

    assert (unique_room, due) in asyncio.run(write(b"\xc1 not a snapshot"))
    name = f"alarm-scheduler-test-{uuid.uuid4().hex[:8]}"
    handle = ensure_scheduler(config, name=name, poll_interval=0.3, grace=0.0,
                              max_attempts=2, retry_max_wait=1.0)
    try:
        def retried_after_giving_up():
            stats = ray.get(handle.stats.remote())
            return stats if stats["gave_up"] >= 2 else None

        stats = until("two rounds of failed wakes", retried_after_giving_up, 30, every=0.1)
        assert stats["failures"] >= 2 and stats["ran"] == 0
        assert "CorruptSnapshot" in stats["last_error"] or "RayTaskError" in stats["last_error"]
        assert (unique_room, due) in asyncio.run(write(None))  # the alarm is kept

        # repaired (an operator restores a good snapshot): the next round runs the alarm
        good = Snapshot(unique_room, 0, 0, {"room": {"alarmAt": due}, "outbox": []})
        asyncio.run(write(encode_snapshot(good)))
        # the room actor that failed to activate stays failed (see the report): replace it
        ray.kill(ray.get_actor(actor_name(unique_room), namespace=TEST_NAMESPACE),
                 no_restart=True)

        def ran():
            stats = ray.get(handle.stats.remote())
            return stats if stats["ran"] + stats["not_due"] >= 1 else None

        until("the repaired room's alarm to run", ran, 30, every=0.1)
        snap = _load(sqlite_url, unique_room)
        assert snap.epoch >= 1 and snap.state["room"].get("alarmAt") is None
    finally:
        ray.kill(handle, no_restart=True)


def test_metrics_are_exported_from_a_room_process(ray_session):
    """The room metrics reach the node's Prometheus endpoint through the metrics sink,
    with bounded tags and without the room process's ``WorkerId``."""
    import httpx

    ray = ray_session

    @ray.remote(num_cpus=0)
    def a_room_process(tag: str) -> dict:
        from actors import metrics

        metrics.room_activated(tag)
        metrics.turn("heartbeat", 0.0004)
        metrics.turn(f"client-chosen-{tag}", 0.003)  # unknown types count as "other"
        metrics.snapshot_saved(1500, 0.0002)
        metrics.ai_session(tag, True)
        metrics.ai_error("calls tracks/new: HTTP 503 from the SFU")
        facts_live = metrics.process_facts()
        metrics.flush()  # the report that carries the room as live
        metrics.room_hibernated(tag)
        metrics.flush()
        return {"live": facts_live, "after": metrics.process_facts()}

    facts = ray.get(a_room_process.remote(uuid.uuid4().hex[:8]))
    assert facts["live"]["enabled"] and facts["live"]["ai_sessions_active"] >= 1
    assert facts["after"]["rooms_active"] == facts["live"]["rooms_active"] - 1
    assert facts["after"]["ai_sessions_active"] == facts["live"]["ai_sessions_active"] - 1

    port = ray.nodes()[0]["MetricsExportPort"]
    wanted = {
        "ray_rooms_messages_total": 'type="heartbeat"',
        "ray_rooms_turn_seconds_bucket": 'le="0.0005"',
        "ray_rooms_snapshot_bytes_count": "",
        "ray_rooms_snapshot_save_seconds_count": "",
        "ray_rooms_activations_total": "",
        "ray_rooms_hibernations_total": "",
        "ray_rooms_ai_errors_total": 'step="calls tracks/new"',
        "ray_rooms_active": "",
        "ray_rooms_ai_sessions_active": "",
    }

    def exported():
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        series = [line for line in text.splitlines() if line.startswith("ray_rooms_")]
        missing = [name for name, label in wanted.items()
                   if not any(s.startswith(name + "{") and label in s for s in series)]
        return series if not missing else None

    series = until("the room metrics at the metrics endpoint", exported, 30, every=0.5)
    assert any('type="other"' in s for s in series if s.startswith("ray_rooms_messages"))
    assert not any("client-chosen" in s for s in series)
    from actors.metrics_sink import SINK_NAME, SINK_NAMESPACE

    sink = ray.get_actor(SINK_NAME, namespace=SINK_NAMESPACE)
    sink_worker = ray.get(sink.__ray_call__.remote(
        lambda self: ray.get_runtime_context().get_worker_id()))
    workers = {part.split('"')[1] for s in series for part in s.split(",")
               if part.startswith("WorkerId=")}
    assert workers <= {sink_worker}, (workers, sink_worker)


def test_metrics_are_no_ops_outside_ray():
    import subprocess
    import sys

    code = ("from actors import metrics; metrics.turn('heartbeat', 0.1); "
            "metrics.room_activated('r'); metrics.ai_error('x: y'); "
            "import sys, json; print(json.dumps(metrics.process_facts())); "
            "sys.exit('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"enabled": False, "rooms_active": 0,
                                      "ai_sessions_active": 0}


def test_a_restart_keeps_the_users_whose_heartbeats_it_could_not_store(ray_session,
                                                                     sqlite_url):
    """The room's process SIGKILLed when its users' last stored heartbeats are older than
    the timeout and its alarm is due (as after the store was down for 10 s: the
    heartbeats sent meanwhile were refused). The restarted activation runs the alarm at
    once and keeps them: it counts their heartbeats from its own start. A wake from
    hibernation does not (``test_alarm_fires_while_the_room_hibernates``)."""
    import os
    import signal

    from rooms import HEARTBEAT_TIMEOUT

    ray = ray_session
    config = RoomsConfig(namespace=TEST_NAMESPACE, store_url=sqlite_url, idle_timeout=0)
    room_id = f"restart-beats-{uuid.uuid4().hex[:8]}"
    room = get_room(room_id, config)
    ray.get(room.connect.remote("a", "alice"))
    ray.get(room.connect.remote("b", "bob"))
    epoch = ray.get(room.info.remote()).epoch
    pid = ray.get(room.pid.remote())
    aged = _age_snapshot(sqlite_url, room_id, HEARTBEAT_TIMEOUT + 5, stale={"a", "b"})
    assert aged.state["room"]["alarmAt"] < time.time()
    os.kill(pid, signal.SIGKILL)

    def restarted():
        try:
            return ray.get(room.info.remote(), timeout=10).epoch > epoch
        except ray.exceptions.RayActorError:
            return False  # still restarting

    until("the room to restart", restarted, 60)
    assert ray.get(room.alarm.remote(force=True))
    state = ray.get(room.state.remote())
    assert [u["id"] for u in state["users"]] == ["a", "b"], state
    ray.kill(room, no_restart=True)
