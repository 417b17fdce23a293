"""Addressing: a room id names exactly one live actor, ``room:<room id>``.

:func:`get_room` gets the room's actor if it exists and creates it otherwise, in one
atomic step of Ray's GCS (``get_if_exists=True``), so any number of callers racing for a
new room end up with the same single actor. Room actors are detached (they outlive the
process that created them), restart on failure (``max_restarts=-1``, reloading their
snapshot) and need no CPU reservation, so thousands fit on a small node.
"""

from __future__ import annotations

import re
import time
from typing import Any

import ray

from .config import RoomsConfig
from .errors import InvalidRoomId, NoFreeSlot
from .room_actor import RoomActor
from .room_client import RoomClient
from .slots import ROOM_SLOT, free_slots, offers_slots, shed_one
from .warmpool import preloads_ai, room_runtime_env
from .wire import Placement

__all__ = ["ACTOR_PREFIX", "InvalidRoomId", "RemoteRoomActor", "actor_name", "get_room",
           "list_room_actors", "room_actor_options", "validate_room_id"]

ACTOR_PREFIX = "room:"
_ROOM_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")

RemoteRoomActor = ray.remote(RoomActor)
"""The Ray actor class of :class:`actors.room_actor.RoomActor`."""


def validate_room_id(room_id: str) -> str:
    """Return ``room_id`` if it is a valid room id, else raise :class:`InvalidRoomId`."""
    if not isinstance(room_id, str) or not _ROOM_ID.fullmatch(room_id):
        raise InvalidRoomId(
            "room id must be 1-128 characters of letters, digits and . _ ~ -"
        )
    return room_id


def actor_name(room_id: str) -> str:
    """Return the Ray actor name of a room: ``room:<room id>``."""
    return ACTOR_PREFIX + room_id


def room_actor_options(room_id: str, config: RoomsConfig) -> dict[str, Any]:
    """Return the ``.options()`` of a room's actor (name, namespace, lifetime, restarts;
    the runtime environment whose workers the warm pools prestart; one ``room_slot`` when
    the cluster offers slots)."""
    slots = {"resources": {ROOM_SLOT: 1}} if offers_slots() else {}
    return {
        **slots,
        "runtime_env": room_runtime_env(config.store_url, preloads_ai(config)),
        "name": actor_name(validate_room_id(room_id)),
        "namespace": config.namespace,
        "get_if_exists": True,
        "lifetime": "detached",
        "max_restarts": -1,
        "max_task_retries": 0,
        "max_concurrency": 10_000,
        "num_cpus": 0,
    }


def get_room(room_id: str, config: RoomsConfig | None = None) -> "ray.actor.ActorHandle":
    """Get or create the actor of room ``room_id``.

    Args:
        room_id: the room id (see :func:`validate_room_id`).
        config: the runtime settings a *new* actor is created with (default: from the
            environment); an existing actor keeps its own.

    Returns:
        The actor handle; call its methods (``connect``, ``message``, ``poll``, ...)
        with ``.remote()``.

    At the ``room_slot`` bound (no free slot in the cluster), creating a room that has
    no actor (new, or hibernated) first hibernates the least recently active idle room
    (:func:`actors.slots.shed_one`); while none may go, it waits for a slot, trying again
    every second, for at most ``config.slot_wait_s`` seconds (blocking the caller).

    Raises:
        InvalidRoomId: the id is not a valid room id.
        NoFreeSlot: no slot came free within ``config.slot_wait_s``; nothing started.
    """
    config = config or RoomsConfig()
    options = room_actor_options(room_id, config)
    if "resources" in options and free_slots() < 1 and not _exists(options["name"], config):
        _make_room_for(room_id, config)
    return RemoteRoomActor.options(**options).remote(room_id, config)


def _make_room_for(room_id: str, config: RoomsConfig, retry_s: float = 1.0) -> None:
    """At the bound: shed a room for ``room_id`` or wait for a free slot, at most
    ``config.slot_wait_s`` seconds. Raises :class:`NoFreeSlot` when neither happens."""
    deadline = time.monotonic() + config.slot_wait_s
    while True:
        if shed_one(config, prefix=ACTOR_PREFIX, exclude=room_id) is not None:
            return  # its slot frees as its actor exits; Ray places the new room then
        if free_slots() >= 1:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise NoFreeSlot(f"no free room slot: room {room_id!r} cannot start, every "
                             "room slot is taken by a busy room; try again later")
        time.sleep(min(retry_s, left))


def _exists(name: str, config: RoomsConfig) -> bool:
    try:
        ray.get_actor(name, namespace=config.namespace)
        return True
    except ValueError:
        return False


def list_room_actors(namespace: str = "rooms", *,
                     timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Return ``[{"room", "name", "state", "pid", "node_id", "node"}]`` for every room
    actor that Ray knows in ``namespace``, on every node of the cluster.

    Uses Ray's state API (alive, restarting and dead actors) when the dashboard runs;
    otherwise the GCS's list of named actors (live ones only, state ``"ALIVE"``). A live
    actor whose node the listing lacks is asked (``RoomActor.where``, which does not
    activate the room; at most ``timeout_s`` seconds for all). ``node`` is
    ``"<node address>/<first 8 hex digits of the node id>"`` (nodes may share an
    address), or ``None`` when unknown.
    """
    rows = []
    try:
        from ray.util.state import list_actors

        actors = list_actors(filters=[("ray_namespace", "=", namespace)], limit=10_000,
                             raise_on_missing_output=False)
        for actor in actors:
            name = actor.name or ""
            if name.startswith(ACTOR_PREFIX):
                rows.append({"room": name[len(ACTOR_PREFIX):], "name": name,
                             "state": actor.state, "pid": actor.pid, "node_id": actor.node_id})
    except Exception:  # noqa: BLE001 - no dashboard: fall back to the GCS
        rows = []
    if not rows:
        for entry in ray.util.list_named_actors(all_namespaces=True):
            name = entry["name"]
            if entry["namespace"] == namespace and name.startswith(ACTOR_PREFIX):
                rows.append({"room": name[len(ACTOR_PREFIX):], "name": name,
                             "state": "ALIVE", "pid": None, "node_id": None})
    _locate(rows, namespace, timeout_s)
    return sorted(rows, key=lambda r: r["room"])


def _locate(rows: list[dict[str, Any]], namespace: str, timeout_s: float) -> None:
    """Fill in ``node_id``/``pid`` of live rows that lack them, and ``node`` of all."""
    asked = {}
    for row in rows:
        if row["node_id"] is None and row["state"] == "ALIVE":
            try:
                handle = ray.get_actor(row["name"], namespace=namespace)
            except ValueError:  # gone meanwhile
                continue
            asked[RoomClient(handle).where()] = row
    if asked:
        ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=timeout_s)
        for ref in ready:
            try:
                where: Placement = ray.get(ref)
            except ray.exceptions.RayError:  # died or exiting meanwhile
                continue
            asked[ref].update(node_id=where.node_id, pid=where.pid)
    addresses = {node["NodeID"]: node.get("NodeManagerAddress", "?") for node in ray.nodes()}
    for row in rows:
        node_id = row.get("node_id")
        row["node"] = f"{addresses.get(node_id, '?')}/{node_id[:8]}" if node_id else None
