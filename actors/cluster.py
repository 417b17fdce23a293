"""What the room runtime requires of the Ray cluster it runs on.

A room's snapshot must be readable from whichever node Ray restarts the room on. SQLite
(a file on one machine's disk) and memory (one process) cannot do that, so a room
runtime that sees more than one alive node with such a store refuses to run rooms
(:func:`check_store_fits_cluster`), naming ``ROOMS_STORE_URL``; on one machine the
embedded SQLite default stays.
"""

from __future__ import annotations

import ray

from storage import is_shared_store, redact_url

from .errors import StoreNotShared

__all__ = ["alive_nodes", "check_store_fits_cluster"]


def alive_nodes() -> int:
    """The number of alive nodes of the connected Ray cluster (0 when not connected)."""
    if not ray.is_initialized():
        return 0
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def check_store_fits_cluster(store_url: str) -> None:
    """Refuse a single-machine store on a cluster of more than one alive node.

    Args:
        store_url: the room runtime's ``ROOMS_STORE_URL``.

    Raises:
        StoreNotShared: ``store_url`` is SQLite or memory and the connected Ray cluster
            has more than one alive node.
    """
    if is_shared_store(store_url):
        return
    nodes = alive_nodes()
    if nodes > 1:
        raise StoreNotShared(
            f"ROOMS_STORE_URL={redact_url(store_url)!r} is a store on one machine, but "
            f"this Ray cluster has {nodes} alive nodes: a room restarted on another node "
            "would lose its state. Set ROOMS_STORE_URL=postgresql://user@host:port/db "
            "(a PostgreSQL server every node reaches).")
