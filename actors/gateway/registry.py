"""The rooms one replica serves: a :class:`RoomChannel` per room with sockets here, and a
bounded cache of :class:`RoomRef` for rooms reached over HTTP only."""

from __future__ import annotations

import asyncio

import ray

from ..config import RoomsConfig
from ..directory import actor_name
from .channel import RoomChannel
from .limits import GatewayLimits
from .quotas import IdentityQuotas
from .room_ref import RoomRef

__all__ = ["RoomRegistry"]

_MAX_REFS = 1024
"""Room references kept for HTTP-only rooms; the oldest is forgotten past this."""


class RoomRegistry:
    """The channels and room references of one replica.

    Args:
        config: the settings new room actors are created with.
        limits: the replica's limits (handed to every channel and reference).
        replica: the replica's id (poller ids are derived from it).
        node: the Ray node id (hex) the replica runs on, or ``""`` outside Ray.
    """

    def __init__(self, config: RoomsConfig, limits: GatewayLimits, replica: str,
                 node: str = "") -> None:
        self.config = config
        self.limits = limits
        self.replica = replica
        self.node = node
        self.channels: dict[str, RoomChannel] = {}
        self._refs: dict[str, RoomRef] = {}

    def ref(self, room_id: str) -> RoomRef:
        """Return the reference to ``room_id`` (its channel's, if it has one here)."""
        channel = self.channels.get(room_id)
        if channel is not None:
            return channel.ref
        ref = self._refs.get(room_id)
        if ref is None:
            if len(self._refs) >= _MAX_REFS:
                self._refs.pop(next(iter(self._refs))).close_lane()
            ref = self._refs[room_id] = RoomRef(room_id, self.config, self.limits,
                                                self.node)
        return ref

    async def check_start(self, room_id: str, identity: str, quotas: IdentityQuotas) -> None:
        """Count ``room_id`` against ``identity``'s ``rooms_per_minute`` if reaching it
        starts the room (no live actor: new, or hibernated). A room this replica
        already reaches costs nothing and no look-up.

        Raises:
            QuotaExceeded: ``identity`` is at its quota; nothing was started.
        """
        if room_id in self.channels:
            return
        ref = self._refs.get(room_id)
        if ref is not None and ref.client is not None:
            return
        if not await asyncio.to_thread(self._live, room_id):
            quotas.room_start(identity)

    def _live(self, room_id: str) -> bool:
        try:
            ray.get_actor(actor_name(room_id), namespace=self.config.namespace)
            return True
        except ValueError:
            return False

    def channel(self, room_id: str) -> RoomChannel:
        """Return the channel of ``room_id``, making it if there is none."""
        channel = self.channels.get(room_id)
        if channel is None:
            ref = (self._refs.pop(room_id, None)
                   or RoomRef(room_id, self.config, self.limits, self.node))
            channel = self.channels[room_id] = RoomChannel(ref, self.limits, self.drop,
                                                           self.replica)
        return channel

    def drop(self, channel: RoomChannel) -> None:
        """Forget ``channel`` (its last socket left)."""
        if self.channels.get(channel.ref.room_id) is channel:
            del self.channels[channel.ref.room_id]
            channel.ref.close_lane()  # its lane; frames still queued go through Ray

    def close(self) -> None:
        """Stop every room's poll (the replica is shutting down)."""
        for channel in list(self.channels.values()):
            channel.stop()
            channel.ref.close_lane()
        self.channels.clear()
        for ref in self._refs.values():
            ref.close_lane()
        self._refs.clear()
