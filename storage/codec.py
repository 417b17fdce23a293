"""The msgpack snapshot codec: one versioned record per room.

A snapshot record is a msgpack map with short keys (docs/guarantees.md, "Snapshots")::

    {"v": 1, "room": "<room id>", "epoch": <int>, "seq": <int>, "state": {...}}

``v`` is the schema version (:data:`SCHEMA_VERSION`), ``room`` the room id the record
belongs to, ``epoch`` the epoch of the activation that wrote it (see
:mod:`storage.base`, fencing), ``seq`` the room's turn sequence number and ``state`` the
room's state as plain JSON-like data: ``dict``, ``list``, ``str``, ``int`` (64-bit),
``float``, ``bool``, ``None`` (``bytes`` also survive, as msgpack ``bin``). Tuples are
written as msgpack arrays and therefore read back as lists. msgpack extension types
(including timestamps) are not part of the format.

Reading is strict: anything that is not such a record raises
:class:`~storage.base.CorruptSnapshot`, a record of an unknown schema version raises
:class:`~storage.base.UnknownSchemaVersion`; both name the room. A bad record is never
silently replaced by an empty state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from storage.base import CorruptSnapshot, UnknownSchemaVersion

__all__ = [
    "KNOWN_SCHEMA_VERSIONS",
    "SCHEMA_VERSION",
    "Snapshot",
    "decode_snapshot",
    "encode_snapshot",
]

SCHEMA_VERSION = 1
"""The schema version this code writes."""

KNOWN_SCHEMA_VERSIONS: frozenset[int] = frozenset({1})
"""The schema versions this code can read."""

# Scalars allowed in a state, and as map keys (msgpack maps may have non-str keys).
_SCALARS = (str, int, float, bool, type(None), bytes)


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """One room's persisted record.

    Attributes:
        room_id: the room the record belongs to.
        epoch: the epoch (>= 0) of the activation that wrote it.
        seq: the room's turn sequence number (>= 0) at the time of writing.
        state: the room's state, plain JSON-like data (see the module docstring).
        schema_version: the record's schema version; :data:`SCHEMA_VERSION` for new
            records.
    """

    room_id: str
    epoch: int
    seq: int
    state: dict[Any, Any] = dataclasses.field(hash=False)
    schema_version: int = SCHEMA_VERSION


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """Encode ``snapshot`` as a msgpack record (format in the module docstring).

    Args:
        snapshot: the record to write; its ``schema_version`` must be
            :data:`SCHEMA_VERSION` (this code writes no other format).

    Returns:
        The msgpack bytes, to be passed to ``SnapshotStore.save``.

    Raises:
        ValueError: ``snapshot.schema_version`` is not :data:`SCHEMA_VERSION`, or the
            state cannot be encoded (a type msgpack does not know, an integer outside
            the signed/unsigned 64-bit range, a string with lone surrogates).
    """
    if snapshot.schema_version != SCHEMA_VERSION:
        raise ValueError(
            f"room {snapshot.room_id!r}: cannot write schema version "
            f"{snapshot.schema_version} (this code writes {SCHEMA_VERSION})"
        )
    try:
        return msgpack.packb(
            {
                "v": SCHEMA_VERSION,
                "room": snapshot.room_id,
                "epoch": snapshot.epoch,
                "seq": snapshot.seq,
                "state": snapshot.state,
            },
            use_bin_type=True,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(
            f"room {snapshot.room_id!r}: snapshot cannot be encoded as msgpack: {exc}"
        ) from exc


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed in a snapshot")


def _check_plain(value: Any) -> bool:
    """Return whether ``value`` is plain JSON-like data (iteratively, no recursion limit)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, _SCALARS):
                    return False
                stack.append(sub)
        elif isinstance(item, list):
            stack.extend(item)
        elif not isinstance(item, _SCALARS):
            return False
    return True


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def decode_snapshot(room_id: str, data: bytes) -> Snapshot:
    """Decode the stored record of ``room_id``.

    Args:
        room_id: the room whose record ``data`` is supposed to be; a record naming
            another room is refused.
        data: the bytes returned by ``SnapshotStore.load``.

    Returns:
        The :class:`Snapshot` (its ``state`` uses lists for arrays).

    Raises:
        CorruptSnapshot: ``data`` is not msgpack, not a map, has trailing bytes,
            contains extension types, lacks a key or has one of the wrong type
            (``v``/``epoch``/``seq`` non-negative ints, ``room`` str, ``state`` map of
            plain data), or belongs to another room. Its message names ``room_id``.
        UnknownSchemaVersion: the record's ``v`` is an int this code cannot read.
    """
    try:
        record = msgpack.unpackb(
            data, raw=False, strict_map_key=False, use_list=True, ext_hook=_reject_ext
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # FormatError/ExtraData/StackError, bad UTF-8, unhashable keys, our ext refusal.
        raise CorruptSnapshot(room_id, f"snapshot is not a msgpack record ({exc})") from exc
    if not isinstance(record, dict):
        raise CorruptSnapshot(
            room_id, f"snapshot is a msgpack {type(record).__name__}, not a map"
        )
    version = record.get("v")
    if not _is_count(version):
        raise CorruptSnapshot(room_id, "snapshot has no integer schema version 'v'")
    if version not in KNOWN_SCHEMA_VERSIONS:
        raise UnknownSchemaVersion(
            room_id,
            f"snapshot has schema version {version}; this code reads "
            f"{sorted(KNOWN_SCHEMA_VERSIONS)}",
        )
    stored_room = record.get("room")
    if not isinstance(stored_room, str):
        raise CorruptSnapshot(room_id, "snapshot has no string room id 'room'")
    if stored_room != room_id:
        raise CorruptSnapshot(room_id, f"snapshot belongs to room {stored_room!r}")
    epoch = record.get("epoch")
    seq = record.get("seq")
    if not _is_count(epoch):
        raise CorruptSnapshot(room_id, "snapshot has no non-negative integer 'epoch'")
    if not _is_count(seq):
        raise CorruptSnapshot(room_id, "snapshot has no non-negative integer 'seq'")
    state = record.get("state")
    if not isinstance(state, dict):
        raise CorruptSnapshot(room_id, "snapshot has no 'state' map")
    if not _check_plain(state):
        raise CorruptSnapshot(room_id, "snapshot state holds non-plain data")
    return Snapshot(
        room_id=stored_room, epoch=epoch, seq=seq, state=state, schema_version=version
    )
