"""A replica's reference to one room actor, with retries across deaths and hibernation."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from ray.exceptions import RayActorError

from ..config import RoomsConfig
from ..directory import get_room
from ..errors import RoomHibernating, RoomUnavailable
from .limits import GatewayLimits

__all__ = ["RoomRef"]

# A child of Serve's logger, so that lines land in the replica's Serve log.
log = logging.getLogger("ray.serve.ray_rooms.gateway")


class RoomRef:
    """A replica's reference to one room actor: resolves it with ``get_room`` and
    retries calls across actor deaths and hibernation.

    Args:
        room_id: a valid room id.
        config: the settings a new room actor is created with.
        limits: attempts and back-off.
    """

    def __init__(self, room_id: str, config: RoomsConfig, limits: GatewayLimits) -> None:
        self.room_id = room_id
        self.config = config
        self.limits = limits
        self.handle: Any = None
        self.on_activation: Callable[[], None] | None = None

    async def resolve(self) -> Any:
        """Return the room's actor handle, getting or creating the actor if needed
        (reactivating a hibernated room)."""
        if self.handle is None:
            self.handle = await asyncio.to_thread(get_room, self.room_id, self.config)
        return self.handle

    def forget(self, handle: Any) -> None:
        """Drop ``handle`` (it failed) so that the next call resolves the room again."""
        if self.handle is handle:
            self.handle = None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` of the room actor with ``args`` and ``kwargs`` and return
        its result.

        Retries, with exponential back-off, when the actor is dead or unavailable
        (``RayActorError``) or hibernating (:class:`RoomHibernating`), resolving the
        room again each time (which reactivates it).

        Raises:
            RoomUnavailable: every attempt failed that way.
            Exception: any other error the room raised (not retried).
        """
        delay = self.limits.backoff_s
        for attempt in range(self.limits.call_attempts):
            handle = await self.resolve()
            try:
                result = await getattr(handle, method).remote(*args, **kwargs)
            except (RayActorError, RoomHibernating) as error:
                log.info("room %s: %s failed (%s), attempt %d", self.room_id, method,
                         type(error).__name__, attempt + 1)
                self.forget(handle)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.limits.max_backoff_s)
                continue
            if self.on_activation is not None:
                self.on_activation()
            return result
        raise RoomUnavailable(f"room {self.room_id!r} is unavailable")
