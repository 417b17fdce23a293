"""The PostgreSQL store beyond the shared store contract (tests/test_storage.py):
schema versioning, one lazy connection per store, reconnects across a server restart,
and a room's behaviour while its store is down (output gate shut, nothing acknowledged
lost). Every test runs against a real PostgreSQL server started for the session (or,
where the test stops it, for the test)."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest

from actors.config import RoomsConfig
from actors.room_actor import RoomActor
from storage import (PostgresStore, StaleEpoch, StorageError, StorageUnavailable,
                     decode_snapshot, open_store)
from storage.pgserver import ThrowawayPostgres
from storage import redact_url
from storage.postgres import APPLICATION_NAME, STORE_SCHEMA_VERSION

ROOM = "pg-room"


async def _store_connections(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
            " AND datname = current_database()", APPLICATION_NAME)
    finally:
        await conn.close()


async def test_schema_is_created_on_first_use_versioned_and_never_dropped(postgres_url):
    store = PostgresStore(postgres_url)
    epoch = await store.claim_epoch(ROOM)
    await store.save(ROOM, b"kept", epoch=epoch)
    await store.close()

    again = PostgresStore(postgres_url)  # a second process: migrates nothing, keeps data
    assert await again.load(ROOM) == b"kept"
    await again.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch("SELECT version, description FROM rooms_schema_migrations")
        assert [r["version"] for r in rows] == list(range(1, STORE_SCHEMA_VERSION + 1)) \
            == [1, 2]
        # a database migrated by a newer ray-rooms is refused, not touched
        await conn.execute("INSERT INTO rooms_schema_migrations(version, description)"
                           " VALUES (99, 'from the future')")
    finally:
        await conn.close()
    newer = PostgresStore(postgres_url)
    with pytest.raises(StorageError, match="schema version 99"):
        await newer.load(ROOM)
    await newer.close()


async def test_concurrent_first_use_migrates_once(postgres_url):
    stores = [PostgresStore(postgres_url) for _ in range(6)]
    epochs = await asyncio.gather(*(s.claim_epoch(ROOM) for s in stores))
    assert sorted(epochs) == [1, 2, 3, 4, 5, 6]
    for store in stores:
        await store.close()


async def test_one_lazy_connection_per_store_closed_with_it(postgres_url):
    store = open_store(postgres_url + "?statement_cache_size=0&retry_s=2")
    assert isinstance(store, PostgresStore)
    assert store.statement_cache_size == 0 and store.retry_s == 2.0
    assert not store.connected and await _store_connections(postgres_url) == 0
    epoch = await store.claim_epoch(ROOM)
    await asyncio.gather(*(store.save(ROOM, b"x%d" % i, epoch=epoch) for i in range(20)),
                         *(store.load(ROOM) for _ in range(20)))
    assert store.connected and await _store_connections(postgres_url) == 1
    await store.close()
    assert await _store_connections(postgres_url) == 0
    with pytest.raises(StorageError, match="closed"):
        await store.load(ROOM)


async def test_two_stores_fence_each_other(postgres_url):
    old, new = PostgresStore(postgres_url), PostgresStore(postgres_url)
    first = await old.claim_epoch(ROOM)
    await old.save(ROOM, b"old", epoch=first)
    second = await new.claim_epoch(ROOM)
    with pytest.raises(StaleEpoch) as info:
        await old.save(ROOM, b"zombie", epoch=first)
    assert (info.value.epoch, info.value.current) == (first, second)
    assert await new.load(ROOM) == b"old"
    await old.close()
    await new.close()


def test_passwords_never_show():
    url = "postgresql://rooms:s3cret-pw@127.0.0.1:1/rooms?retry_s=0.2&connect_timeout=0.2"
    assert "s3cret-pw" not in redact_url(url) and "***" in redact_url(url)
    store = PostgresStore(url)
    assert "s3cret-pw" not in repr(store)
    with pytest.raises(StorageUnavailable) as info:
        asyncio.run(store.load(ROOM))
    assert "s3cret-pw" not in str(info.value)
    with pytest.raises(ValueError) as bad:
        open_store("postgresql://rooms:s3cret-pw@h/db?retry_s=soon")
    assert "s3cret-pw" not in str(bad.value)


@pytest.fixture
def own_server():
    """A PostgreSQL server of this test's own (the test stops and starts it)."""
    server = ThrowawayPostgres(database="rooms").start()
    yield server
    server.remove()


async def test_the_store_reconnects_across_a_server_restart(own_server):
    store = PostgresStore(own_server.url + "?retry_s=15")
    epoch = await store.claim_epoch(ROOM)
    await store.save(ROOM, b"before", epoch=epoch)
    own_server.stop()
    restart = asyncio.get_running_loop().run_in_executor(
        None, lambda: (time.sleep(1.0), own_server.start()))
    started = time.monotonic()
    await store.save(ROOM, b"during", epoch=epoch)  # waits for the server, then lands
    assert time.monotonic() - started >= 0.9
    await restart
    assert await store.load(ROOM) == b"during"
    own_server.stop()
    short = PostgresStore(own_server.url + "?retry_s=0.5&connect_timeout=0.5")
    with pytest.raises(StorageUnavailable, match="unreachable"):
        await short.load(ROOM)
    own_server.start()
    assert await short.load(ROOM) == b"during"
    await store.close()
    await short.close()


def _update(conn: str, n: int) -> str:
    return json.dumps({"type": "userUpdate", "user": {
        "id": conn, "name": conn, "raisedHand": n % 2 == 1, "speaking": False,
        "joined": True, "tracks": {"audioUnavailable": False, "audio": f"s/{n}"}}})


async def test_a_store_outage_shuts_the_output_gate_and_loses_nothing_acknowledged(own_server):
    """Four writers stream userUpdates into a room whose PostgreSQL stops for longer
    than the room's retry bound and then comes back. While it is down nothing is
    released; turns that could not be made durable fail with StorageUnavailable and
    leave the room at its last durable state; afterwards the room goes on, and every
    acknowledged update is in the state and in the store."""
    config = RoomsConfig(store_url=own_server.url + "?retry_s=0.3&connect_timeout=0.3",
                         idle_timeout=0, store_retry_s=1.5)
    actor = RoomActor(ROOM, config)
    conns = ["w0", "w1", "w2", "w3"]
    for conn in conns:
        await actor.connect(conn, conn)
    acked: dict[str, int] = {}
    failed: dict[str, int] = {c: 0 for c in conns}
    stop = asyncio.Event()

    async def writer(conn: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                await actor.message(conn, _update(conn, n))
                acked[conn] = n
            except StorageUnavailable:
                failed[conn] += 1
            await asyncio.sleep(0.02)

    tasks = [asyncio.ensure_future(writer(c)) for c in conns]
    await asyncio.sleep(0.5)
    own_server.stop()
    await asyncio.sleep(0.2)
    released = actor.outbox.released
    await asyncio.sleep(0.8)  # inside the retry bound: the output gate stays shut
    assert actor.outbox.released == released
    await asyncio.sleep(1.5)  # past the bound: the waiting turns failed
    assert all(failed[c] >= 1 for c in conns), failed
    state = await actor.state()
    audio = {u["id"]: u["tracks"].get("audio") for u in state["users"]}
    assert all(audio[c] == f"s/{acked[c]}" for c in conns), (audio, acked)
    own_server.start()
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)
    assert actor.outbox.released > released  # the room went on

    state = await actor.state()
    audio = {u["id"]: u["tracks"].get("audio") for u in state["users"]}
    assert audio == {c: f"s/{acked[c]}" for c in conns}
    store = PostgresStore(own_server.url)
    saved = decode_snapshot(ROOM, await store.load(ROOM))
    assert {c: u["tracks"]["audio"] for c, u in saved.state["room"]["users"].items()} == \
        {c: f"s/{acked[c]}" for c in conns}
    await store.close()
    actor._exit()
