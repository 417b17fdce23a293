"""Room slots: a bound on the live rooms of each node, as a Ray resource, and shedding
at the bound.

Each room actor takes one unit of the custom resource :data:`ROOM_SLOT` (when the
cluster offers it); each node offers ``ROOMS_MAX_LIVE_ROOMS`` units (``rooms serve`` and
``rooms demo`` start their Ray with them; on a cluster, ``ray start
--resources='{"room_slot": N}'``). So Ray itself places a new room on a node with a free
slot and never past the bound. The default bound comes from the node's memory:
:func:`default_max_live_rooms`.

At the bound (no free slot anywhere), creating a room first sheds one: the least
recently active live room that may hibernate (no AI job under way, no turn for
``ROOMS_SHED_IDLE_S`` seconds other than its own alarm) hibernates, which frees its slot; its clients stay
connected at the gateway and its next message wakes it (where a slot is free, shedding
another if needed). Like Orleans' activation shedding under memory pressure and Akka
Cluster Sharding's limit of active entities.
"""

from __future__ import annotations

import logging
import time

import ray

from .config import RoomsConfig
from .room_client import RoomClient
from .wire import Activity

__all__ = ["ROOM_COST_BYTES", "ROOM_SLOT", "default_max_live_rooms", "free_slots",
           "offers_slots", "shed_one", "slot_resources"]

log = logging.getLogger("ray_rooms.slots")

ROOM_SLOT = "room_slot"
"""The custom Ray resource one room actor takes."""
ROOM_COST_BYTES = 56 * 2**20
"""Memory of one live room (its worker's PSS), measured by ``benchmarks/activation.py``
on Ray 2.60 / Python 3.11: ~53 MiB, rounded up."""
MEMORY_SHARE = 0.75
"""The share of a node's memory the default bound gives to rooms (the rest: Ray's own
processes, the gateway, the object store's use, the OS)."""

_offers: tuple[float, bool] | None = None


def default_max_live_rooms(memory_bytes: int | None = None) -> int:
    """The default ``ROOMS_MAX_LIVE_ROOMS``: ``MEMORY_SHARE`` of ``memory_bytes``
    (default: this machine's physical memory) over :data:`ROOM_COST_BYTES`, at least 1.
    A 24 GiB node: 329 rooms."""
    if memory_bytes is None:
        import os

        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, int(memory_bytes * MEMORY_SHARE // ROOM_COST_BYTES))


def slot_resources(config: RoomsConfig) -> dict[str, float]:
    """The ``resources`` a node started for rooms offers: ``{"room_slot": bound}``."""
    return {ROOM_SLOT: float(config.max_live_rooms or default_max_live_rooms())}


def offers_slots(ttl_s: float = 30.0) -> bool:
    """Whether the cluster offers room slots at all (cached ``ttl_s`` seconds). A cluster
    started without them runs rooms unbounded, as before."""
    global _offers
    if not ray.is_initialized():
        return False
    now = time.monotonic()
    if _offers is None or now - _offers[0] > ttl_s:
        _offers = (now, ray.cluster_resources().get(ROOM_SLOT, 0) > 0)
    return _offers[1]


def free_slots() -> float:
    """Room slots free in the whole cluster now."""
    return ray.available_resources().get(ROOM_SLOT, 0.0)


def shed_one(config: RoomsConfig, *, prefix: str = "room:", exclude: str | None = None,
             timeout_s: float = 5.0) -> str | None:
    """Hibernate the least recently active room of ``config.namespace`` that may go:
    no AI job under way, no AI enabled, and idle at least ``config.shed_idle_s`` seconds.

    Args:
        config: the namespace and the idle threshold.
        prefix: the actor name prefix of rooms (``actors.directory.ACTOR_PREFIX``).
        exclude: a room id never to shed (the one being created).
        timeout_s: seconds to wait for the rooms' answers.

    Returns:
        The id of the room that hibernated, or ``None`` if none may (every room is busy:
        the new room then waits for a slot). Raises nothing.
    """
    handles = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        if entry["namespace"] == config.namespace and name.startswith(prefix):
            room = name[len(prefix):]
            if room != exclude:
                try:
                    handles[room] = RoomClient(ray.get_actor(name, namespace=config.namespace))
                except ValueError:
                    continue
    refs = {room: client.activity() for room, client in handles.items()}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
    ready_set = set(ready)
    candidates: list[Activity] = []
    for room, ref in refs.items():
        if ref not in ready_set:
            continue
        try:
            fact: Activity = ray.get(ref)
        except Exception:  # noqa: BLE001 - dead or restarting: not a candidate
            continue
        if fact.lifecycle == "active" and not fact.jobs and not fact.ai \
                and fact.idle_s >= config.shed_idle_s:
            candidates.append(fact)
    for fact in sorted(candidates, key=lambda f: -f.idle_s):
        try:
            went = ray.get(handles[fact.room].hibernate(), timeout=timeout_s)
        except ray.exceptions.RayActorError:
            went = True  # it exited during the call: hibernated
        except Exception:  # noqa: BLE001
            went = False
        if went:
            log.info("room %s shed (idle %.1f s) to free a slot", fact.room, fact.idle_s)
            from . import metrics

            metrics.room_shed(fact.room)
            return fact.room
    return None
