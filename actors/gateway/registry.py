"""The rooms one replica serves: a :class:`RoomChannel` per room with sockets here, and a
bounded cache of :class:`RoomRef` for rooms reached over HTTP only."""

from __future__ import annotations

from ..config import RoomsConfig
from .channel import RoomChannel
from .limits import GatewayLimits
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
                self._refs.pop(next(iter(self._refs)))
            ref = self._refs[room_id] = RoomRef(room_id, self.config, self.limits)
        return ref

    def channel(self, room_id: str) -> RoomChannel:
        """Return the channel of ``room_id``, making it if there is none."""
        channel = self.channels.get(room_id)
        if channel is None:
            ref = self._refs.pop(room_id, None) or RoomRef(room_id, self.config, self.limits)
            channel = self.channels[room_id] = RoomChannel(ref, self.limits, self.drop,
                                                           self.replica)
        return channel

    def drop(self, channel: RoomChannel) -> None:
        """Forget ``channel`` (its last socket left)."""
        if self.channels.get(channel.ref.room_id) is channel:
            del self.channels[channel.ref.room_id]

    def close(self) -> None:
        """Stop every room's poll (the replica is shutting down)."""
        for channel in list(self.channels.values()):
            channel.stop()
        self.channels.clear()
