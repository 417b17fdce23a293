"""Tests of storage/: the msgpack codec, MemoryStore, SqliteStore and open_store.

The store contract (storage/base.py) is tested against every backend (memory, SQLite,
PostgreSQL on a throwaway server); the SQLite
backend is also tested with two connections on one file, with a second *process*
(multiprocessing, spawn) and with a held write lock.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import storage
from storage import (
    SCHEMA_VERSION,
    CorruptSnapshot,
    MemoryStore,
    PostgresStore,
    Snapshot,
    SnapshotError,
    SnapshotStore,
    SqliteStore,
    StaleEpoch,
    StorageError,
    UnknownSchemaVersion,
    decode_snapshot,
    default_store_url,
    encode_snapshot,
    open_store,
)

ROOM = "room-x"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request, tmp_path):
    """Yield an empty store of each backend; closed afterwards."""
    if request.param == "memory":
        s: SnapshotStore = MemoryStore()
    elif request.param == "sqlite":
        s = SqliteStore(tmp_path / "rooms.sqlite3")
    else:
        s = PostgresStore(request.getfixturevalue("postgres_url"))
    yield s
    await s.close()


# ------------------------------------------------------------------ store contract


async def test_store_implements_protocol(store):
    assert isinstance(store, SnapshotStore)


async def test_round_trip(store):
    assert await store.load(ROOM) is None
    epoch = await store.claim_epoch(ROOM)
    data = bytearray(b"\x00snapshot\xff")
    await store.save(ROOM, data, epoch=epoch)
    data[0] = 0x55  # the store must have copied the bytes
    loaded = await store.load(ROOM)
    assert loaded == b"\x00snapshot\xff"
    assert isinstance(loaded, bytes)
    await store.save(ROOM, b"second", epoch=epoch)
    assert await store.load(ROOM) == b"second"
    assert await store.load("other") is None


async def test_codec_through_store(store):
    epoch = await store.claim_epoch(ROOM)
    snap = Snapshot(ROOM, epoch, 7, {"users": {"u1": {"name": "Ann", "audio": True}}, "n": 1.5})
    await store.save(ROOM, encode_snapshot(snap), epoch=epoch)
    assert decode_snapshot(ROOM, await store.load(ROOM)) == snap


async def test_claim_epoch_increments_from_one_per_room(store):
    assert [await store.claim_epoch(ROOM) for _ in range(3)] == [1, 2, 3]
    assert await store.claim_epoch("b") == 1
    assert await store.claim_epoch(ROOM) == 4


async def test_stale_save_is_refused_and_record_untouched(store):
    old = await store.claim_epoch(ROOM)
    await store.save(ROOM, b"from-old", epoch=old, alarm_at=100.0)
    new = await store.claim_epoch(ROOM)
    with pytest.raises(StaleEpoch) as info:
        await store.save(ROOM, b"zombie", epoch=old, alarm_at=5.0)
    err = info.value
    assert (err.room_id, err.epoch, err.current) == (ROOM, old, new)
    assert repr(ROOM) in str(err)
    assert await store.load(ROOM) == b"from-old"
    assert await store.due_alarms(1000.0) == [(ROOM, 100.0)]
    await store.save(ROOM, b"from-new", epoch=new)
    assert await store.load(ROOM) == b"from-new"


async def test_save_without_claim_and_with_newer_epoch(store):
    # No epoch claimed yet counts as 0; the fence only refuses epochs older than claimed.
    await store.save(ROOM, b"a", epoch=0)
    assert await store.claim_epoch(ROOM) == 1
    with pytest.raises(StaleEpoch):
        await store.save(ROOM, b"b", epoch=0)
    await store.save(ROOM, b"c", epoch=1)
    assert await store.load(ROOM) == b"c"


async def test_stale_delete_is_refused_and_record_untouched(store):
    old = await store.claim_epoch(ROOM)
    await store.save(ROOM, b"keep", epoch=old, alarm_at=3.0)
    new = await store.claim_epoch(ROOM)
    with pytest.raises(StaleEpoch) as info:
        await store.delete(ROOM, epoch=old)
    assert (info.value.epoch, info.value.current) == (old, new)
    assert await store.load(ROOM) == b"keep"
    assert await store.next_alarm() == 3.0
    assert await store.list_rooms() == [ROOM]


async def test_delete_keeps_epoch_counter(store):
    epoch = await store.claim_epoch(ROOM)
    await store.save(ROOM, b"x", epoch=epoch, alarm_at=1.0)
    await store.delete(ROOM, epoch=epoch)
    assert await store.load(ROOM) is None
    assert await store.list_rooms() == []
    assert await store.next_alarm() is None
    assert await store.claim_epoch(ROOM) == epoch + 1
    # the counter still fences the deleted room
    with pytest.raises(StaleEpoch):
        await store.save(ROOM, b"zombie", epoch=epoch)
    assert await store.load(ROOM) is None
    await store.delete("never-saved", epoch=0)  # no snapshot: a no-op


async def test_transcripts_append_once_per_line_and_read_by_meeting(store):
    await store.append_transcript("r1", "m1", [("in:a", '{"text": "one"}'),
                                                ("out:b", '{"text": "two"}')])
    await store.append_transcript("r1", "m1", [("out:b", '{"text": "two again"}'),
                                                ("in:c", '{"text": "three"}')])
    await store.append_transcript("r2", "m9", [("in:a", '{"text": "other room"}')])
    assert await store.read_transcript("r1", "m1") == (
        "m1", ['{"text": "one"}', '{"text": "two"}', '{"text": "three"}'])
    assert await store.read_transcript("r1") == await store.read_transcript("r1", "m1")
    await store.append_transcript("r1", "m2", [("in:a", '{"text": "next meeting"}')])
    assert await store.read_transcript("r1") == ("m2", ['{"text": "next meeting"}'])
    assert await store.read_transcript("r1", "m1", limit=1) == ("m1", ['{"text": "one"}'])
    assert await store.read_transcript("nobody") == (None, [])


async def test_list_rooms_sorted(store):
    for room in ["b", "a", "é", "Z", "a2"]:
        await store.save(room, b"s", epoch=await store.claim_epoch(room))
    await store.claim_epoch("claimed-only")  # an epoch alone is not a snapshot
    assert await store.list_rooms() == sorted(["b", "a", "é", "Z", "a2"])


async def test_due_alarms_and_next_alarm(store):
    assert await store.next_alarm() is None
    assert await store.due_alarms(1e12) == []
    alarms = {"r1": 30.0, "r2": 10.0, "r3": None, "r4": 20.0, "r5": 10.0}
    for room, at in alarms.items():
        await store.save(room, b"s", epoch=1, alarm_at=at)
    assert await store.next_alarm() == 10.0
    assert await store.due_alarms(9.999) == []
    assert await store.due_alarms(10.0) == [("r2", 10.0), ("r5", 10.0)]  # inclusive
    assert await store.due_alarms(25) == [("r2", 10.0), ("r5", 10.0), ("r4", 20.0)]
    # re-saving without an alarm clears it; with another time moves it
    await store.save("r2", b"s", epoch=1)
    await store.save("r5", b"s", epoch=1, alarm_at=40)
    assert await store.next_alarm() == 20.0
    assert await store.due_alarms(100) == [("r4", 20.0), ("r1", 30.0), ("r5", 40.0)]
    await store.delete("r4", epoch=1)
    assert await store.next_alarm() == 30.0


async def test_save_rejects_bad_arguments(store):
    with pytest.raises(TypeError):
        await store.save(ROOM, "text, not bytes", epoch=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.save(ROOM, b"x", epoch=1, alarm_at=math.nan)
    with pytest.raises(ValueError):
        await store.save(ROOM, b"x", epoch=1, alarm_at=math.inf)
    assert await store.load(ROOM) is None


# ------------------------------------------------------------------------- codec


def _raw(**record) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


GOOD = {"v": SCHEMA_VERSION, "room": ROOM, "epoch": 2, "seq": 9, "state": {"a": [1]}}


def test_codec_round_trip_and_format():
    snap = Snapshot(ROOM, 3, 41, {"users": [{"id": "u", "n": None}], "x": b"\x00", 5: -1.25})
    data = encode_snapshot(snap)
    assert msgpack.unpackb(data, raw=False, strict_map_key=False) == {
        "v": 1, "room": ROOM, "epoch": 3, "seq": 41, "state": snap.state,
    }
    assert decode_snapshot(ROOM, data) == snap
    assert decode_snapshot(ROOM, _raw(**GOOD)) == Snapshot(ROOM, 2, 9, {"a": [1]})


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="never-used-byte"),
        pytest.param(b"\x85\xa1v", id="truncated"),
        pytest.param(_raw(**GOOD) + b"\x00", id="trailing-bytes"),
        pytest.param(msgpack.packb([1, ROOM, 2, 3, {}]), id="array-not-map"),
        pytest.param(msgpack.packb("hello"), id="str-not-map"),
        pytest.param(_raw(room=ROOM, epoch=1, seq=1, state={}), id="no-version"),
        pytest.param(_raw(**{**GOOD, "v": "1"}), id="version-str"),
        pytest.param(_raw(**{**GOOD, "v": True}), id="version-bool"),
        pytest.param(_raw(**{k: v for k, v in GOOD.items() if k != "room"}), id="no-room"),
        pytest.param(_raw(**{**GOOD, "room": 5}), id="room-int"),
        pytest.param(_raw(**{k: v for k, v in GOOD.items() if k != "epoch"}), id="no-epoch"),
        pytest.param(_raw(**{**GOOD, "epoch": "2"}), id="epoch-str"),
        pytest.param(_raw(**{**GOOD, "epoch": 2.0}), id="epoch-float"),
        pytest.param(_raw(**{**GOOD, "seq": -1}), id="seq-negative"),
        pytest.param(_raw(**{**GOOD, "seq": False}), id="seq-bool"),
        pytest.param(_raw(**{k: v for k, v in GOOD.items() if k != "state"}), id="no-state"),
        pytest.param(_raw(**{**GOOD, "state": [1, 2]}), id="state-list"),
        pytest.param(_raw(**{**GOOD, "state": {"e": msgpack.ExtType(5, b"x")}}), id="ext"),
        pytest.param(_raw(**{**GOOD, "state": {"t": msgpack.Timestamp(1, 0)}}), id="timestamp"),
        pytest.param(b"\x81\x91\x01\x01", id="unhashable-key"),
        pytest.param(b"\x81\xa2\xff\xfe\x01", id="bad-utf8"),
    ],
)
def test_decode_corrupt_raises_corrupt_snapshot_naming_room(data):
    with pytest.raises(CorruptSnapshot) as info:
        decode_snapshot(ROOM, data)
    assert info.value.room_id == ROOM
    assert repr(ROOM) in str(info.value)


def test_decode_record_of_another_room_is_corrupt():
    data = encode_snapshot(Snapshot("other-room", 1, 1, {}))
    with pytest.raises(CorruptSnapshot) as info:
        decode_snapshot(ROOM, data)
    assert info.value.room_id == ROOM
    assert repr(ROOM) in str(info.value) and "other-room" in str(info.value)


@pytest.mark.parametrize("version", [0, 2, 99])
def test_decode_unknown_schema_version(version):
    with pytest.raises(UnknownSchemaVersion) as info:
        decode_snapshot(ROOM, _raw(**{**GOOD, "v": version}))
    assert not isinstance(info.value, CorruptSnapshot)
    assert isinstance(info.value, SnapshotError) and isinstance(info.value, StorageError)
    assert info.value.room_id == ROOM
    assert repr(ROOM) in str(info.value) and str(version) in str(info.value)


def test_encode_refuses_unencodable_state_and_other_versions():
    with pytest.raises(ValueError, match="room-x"):
        encode_snapshot(Snapshot(ROOM, 1, 1, {"s": {1, 2}}))
    with pytest.raises(ValueError, match="room-x"):
        encode_snapshot(Snapshot(ROOM, 1, 1, {"big": 2**64}))
    with pytest.raises(ValueError, match="schema version 2"):
        encode_snapshot(Snapshot(ROOM, 1, 1, {}, schema_version=2))


def test_snapshot_is_frozen():
    snap = Snapshot(ROOM, 1, 1, {})
    with pytest.raises(AttributeError):
        snap.seq = 2  # type: ignore[misc]


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | _text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    room=_text,
    epoch=st.integers(min_value=0, max_value=2**63 - 1),
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    state=st.dictionaries(_text, _json, max_size=8),
)
def test_codec_round_trips_json_like_states(room, epoch, seq, state):
    snap = Snapshot(room, epoch, seq, state)
    assert decode_snapshot(room, encode_snapshot(snap)) == snap


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64))
def test_decode_of_arbitrary_bytes_raises_only_snapshot_errors(data):
    try:
        snap = decode_snapshot(ROOM, data)
    except SnapshotError as exc:
        assert exc.room_id == ROOM
    else:
        assert snap.room_id == ROOM  # random bytes forming a valid record is fine


# ------------------------------------------------------------------ sqlite specifics


async def test_sqlite_file_settings_and_directory_creation(tmp_path):
    path = tmp_path / "a" / "b" / "rooms.sqlite3"
    s = SqliteStore(path)
    try:
        assert path.is_file() and s.path == path
        assert s.synchronous == "NORMAL"
        with sqlite3.connect(path) as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
        assert {"snapshots", "epochs", "snapshots_alarm_at"} <= tables
    finally:
        await s.close()
    full = SqliteStore(path, synchronous="full")
    assert full.synchronous == "FULL"
    await full.close()
    with pytest.raises(ValueError):
        SqliteStore(path, synchronous="OFF")


async def test_sqlite_persists_across_reopen_and_close_is_final(tmp_path):
    path = tmp_path / "rooms.sqlite3"
    s = SqliteStore(path)
    epoch = await s.claim_epoch(ROOM)
    await s.save(ROOM, b"durable", epoch=epoch, alarm_at=12.5)
    await s.close()
    await s.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        await s.load(ROOM)
    with pytest.raises(StorageError, match="closed"):
        await s.save(ROOM, b"x", epoch=epoch)
    again = SqliteStore(str(path))
    try:
        assert await again.load(ROOM) == b"durable"
        assert await again.next_alarm() == 12.5
        assert await again.claim_epoch(ROOM) == epoch + 1
    finally:
        await again.close()


async def test_sqlite_refuses_foreign_files(tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError):
        SqliteStore(junk)
    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as raw:
        raw.execute("PRAGMA user_version=7")
    with pytest.raises(StorageError, match="version 7"):
        SqliteStore(newer)


async def test_two_sqlite_stores_on_one_file_fence_each_other(tmp_path):
    path = tmp_path / "shared.sqlite3"
    a, b = SqliteStore(path), SqliteStore(path)
    try:
        ea = await a.claim_epoch(ROOM)
        await a.save(ROOM, b"a1", epoch=ea)
        eb = await b.claim_epoch(ROOM)
        assert eb == ea + 1
        assert await b.load(ROOM) == b"a1"
        with pytest.raises(StaleEpoch) as info:
            await a.save(ROOM, b"a-zombie", epoch=ea)
        assert info.value.current == eb
        with pytest.raises(StaleEpoch):
            await a.delete(ROOM, epoch=ea)
        await b.save(ROOM, b"b1", epoch=eb, alarm_at=4.0)
        assert await a.load(ROOM) == b"b1"
        assert await a.due_alarms(5.0) == [(ROOM, 4.0)]
    finally:
        await a.close()
        await b.close()


async def test_sqlite_waits_for_and_times_out_on_a_held_write_lock(tmp_path):
    path = tmp_path / "locked.sqlite3"
    s = SqliteStore(path, busy_timeout=0.05)
    patient = SqliteStore(path, busy_timeout=10.0)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        await s.save(ROOM, b"before", epoch=0)
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(StorageError, match="locked") as info:
            await s.save(ROOM, b"blocked", epoch=0)
        assert not isinstance(info.value, StaleEpoch)
        assert time.monotonic() - started < 2.0
        with pytest.raises(StorageError):
            await s.claim_epoch(ROOM)
        assert await s.load(ROOM) == b"before"  # WAL: readers are not blocked

        releaser = threading.Timer(0.2, lambda: holder.execute("COMMIT"))
        releaser.start()
        await patient.save(ROOM, b"after", epoch=0)  # waits in the busy handler
        releaser.join()
        assert await s.load(ROOM) == b"after"
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        await s.close()
        await patient.close()


# Child of the cross-process test: runs in a spawned interpreter, in step with the parent.
def _child_process(path: str, n: int, ready, go1, go2, out) -> None:
    async def main() -> None:
        s = SqliteStore(path)
        ready.set()
        go1.wait(60)
        claims = []
        for _ in range(n):
            claims.append(await s.claim_epoch(ROOM))
            time.sleep(0.0002)  # let the parent's claims interleave with ours
        out.put(("claims", claims))
        go2.wait(60)
        try:
            await s.save(ROOM, b"child-stale", epoch=claims[-1])
            out.put(("stale", None))
        except StaleEpoch as exc:
            out.put(("stale", exc.current))
        out.put(("seen", await s.load(ROOM)))
        epoch = await s.claim_epoch(ROOM)
        await s.save(ROOM, b"child", epoch=epoch)
        out.put(("claimed", epoch))
        await s.close()

    asyncio.run(main())


async def test_sqlite_fences_across_processes(tmp_path):
    path = tmp_path / "multi.sqlite3"
    n = 200
    ctx = multiprocessing.get_context("spawn")
    ready, go1, go2, out = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_child_process, args=(str(path), n, ready, go1, go2, out))
    s = SqliteStore(path)
    proc.start()
    try:
        assert await asyncio.to_thread(ready.wait, 60), "child did not start"
        go1.set()
        mine = []
        for _ in range(n):
            mine.append(await s.claim_epoch(ROOM))
            await asyncio.sleep(0.0002)

        def get(kind):
            got_kind, value = out.get(timeout=60)
            assert got_kind == kind
            return value

        theirs = await asyncio.to_thread(get, "claims")
        # Concurrent UPSERTs from two processes: every epoch handed out exactly once.
        assert mine == sorted(mine) and theirs == sorted(theirs)
        assert sorted(mine + theirs) == list(range(1, 2 * n + 1))

        parent_epoch = await s.claim_epoch(ROOM)
        assert parent_epoch == 2 * n + 1
        await s.save(ROOM, b"parent", epoch=parent_epoch)
        go2.set()
        assert await asyncio.to_thread(get, "stale") == parent_epoch
        assert await asyncio.to_thread(get, "seen") == b"parent"
        child_epoch = await asyncio.to_thread(get, "claimed")
        assert child_epoch == parent_epoch + 1
        with pytest.raises(StaleEpoch) as info:
            await s.save(ROOM, b"parent-zombie", epoch=parent_epoch)
        assert info.value.current == child_epoch
        assert await s.load(ROOM) == b"child"
        await asyncio.to_thread(proc.join, 60)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
        await s.close()


# ----------------------------------------------------------------------- factory


async def test_open_store_memory_urls():
    a, b = open_store("memory://"), open_store("memory://")
    assert isinstance(a, MemoryStore) and a is not b
    shared = open_store("memory://test-storage-shared")
    assert open_store("memory://test-storage-shared") is shared
    assert open_store("memory://test-storage-other") is not shared
    await shared.save(ROOM, b"x", epoch=1)
    await shared.close()
    assert await open_store("memory://test-storage-shared").load(ROOM) == b"x"


async def test_open_store_sqlite_urls(tmp_path, monkeypatch):
    absolute = tmp_path / "abs" / "rooms.db"
    s = open_store(f"sqlite://{absolute}")
    assert isinstance(s, SqliteStore) and s.path == absolute and absolute.is_file()
    await s.close()
    monkeypatch.chdir(tmp_path)
    rel = open_store("sqlite://rel/rooms.db?synchronous=FULL&busy_timeout=1.5")
    assert (tmp_path / "rel" / "rooms.db").is_file() and rel.synchronous == "FULL"
    await rel.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://localhost/0", "unknown store URL scheme 'redis'"),
        ("rooms.sqlite3", "no scheme"),
        ("sqlite://", "no database file"),
        ("sqlite:///tmp/x.db?mode=ro", "unknown option 'mode'"),
        ("sqlite:///tmp/x.db?busy_timeout=soon", "busy_timeout"),
    ],
)
def test_open_store_rejects_bad_urls(url, match):
    with pytest.raises(ValueError, match=match):
        open_store(url)


def test_default_store_url():
    assert default_store_url({"ROOMS_STORE_URL": "memory://x"}) == "memory://x"
    default = default_store_url({})
    home = Path.home().as_posix()
    assert default == f"sqlite://{home}/.local/share/ray-rooms/rooms.sqlite3"
    assert default_store_url({"ROOMS_STORE_URL": "  "}) == default
    assert storage.DEFAULT_STORE_URL == default_store_url()


def test_package_reexports():
    for name in [
        "Snapshot", "encode_snapshot", "decode_snapshot", "SCHEMA_VERSION", "MemoryStore",
        "SqliteStore", "open_store", "DEFAULT_STORE_URL", "StorageError", "StaleEpoch",
        "SnapshotError", "CorruptSnapshot", "UnknownSchemaVersion", "SnapshotStore",
    ]:
        assert name in storage.__all__ and hasattr(storage, name)


def test_storage_errors_survive_pickling():
    """Ray ships exceptions between processes by pickling them."""
    import pickle

    stale = pickle.loads(pickle.dumps(StaleEpoch(ROOM, 1, 2)))
    assert (type(stale), stale.room_id, stale.epoch, stale.current) == (StaleEpoch, ROOM, 1, 2)
    for cls in (CorruptSnapshot, UnknownSchemaVersion):
        err = pickle.loads(pickle.dumps(cls(ROOM, "bad")))
        assert type(err) is cls and err.room_id == ROOM and str(err) == str(cls(ROOM, "bad"))


def test_a_store_url_without_a_scheme_is_refused_without_its_password():
    # Before: the error quoted the URL whole, password and all (issue 19).
    from storage import open_store

    with pytest.raises(ValueError) as refused:
        open_store("admin:hunter2-secret@db.internal:5432/rooms")
    assert "hunter2" not in str(refused.value) and "no scheme" in str(refused.value)
