"""A replica's reference to one room actor, with retries across deaths and hibernation,
and a watch on calls that a death of the room's process could leave unanswered.

A call in flight when the actor's process dies should fail with ``RayActorError``, and on
Ray 2.60 it did in every kill storm measured here (``benchmarks/killstorm.py``). But Ray
has had releases where such a call, or one queued while the actor restarted, stayed
pending (ray-project/ray#15045, and the fix for resubmitted actor tasks in #51904), and
a room whose ``deliver`` or ``poll`` never returns stalls every socket of the replica. So
a reference does not trust a slow call: it knows the epoch of the room's activation
(each activation claims a higher one, reported in every ``deliver`` and ``poll`` result
and by ``RoomActor.activation``), and a call outstanding longer than ``watch_s`` is
checked against it. If the room has moved to a newer activation, the call is abandoned
(:class:`ActivationLost`) and sent again: frames are numbered, so a batch sent twice is
applied once (:mod:`actors.applied`). The same epoch tells a hibernating channel that
another replica woke the room (no private handle attribute needed).

A room on the replica's own node is sent its ``deliver`` and ``poll`` calls over its
lane (:mod:`actors.lane`), a Unix socket the reference opens when it resolves the room
and closes when it forgets it; a lane that breaks fails its calls as a dead actor does
(:class:`~actors.lane.LaneClosed` is retried like ``RayActorError``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence, TypeVar

from ray.exceptions import RayActorError
from tenacity import (AsyncRetrying, retry_if_exception_type, stop_after_delay,
                      wait_exponential, wait_random)

from ..config import RoomsConfig
from ..directory import get_room
from ..errors import RoomHibernating, RoomUnavailable
from ..lane import LaneClient, LaneClosed
from ..room_client import RoomClient
from ..wire import Delivery, Frame, deliver_call, poll_call
from .limits import GatewayLimits

if TYPE_CHECKING:
    from ray import ObjectRef

T = TypeVar("T")

__all__ = ["ActivationLost", "RoomRef"]

log = logging.getLogger("ray_rooms.gateway")


_RESOLVERS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="rooms-resolve")
"""The threads that run ``get_room`` for a replica. At the slot bound one call blocks up
to ``ROOMS_SLOT_WAIT_S`` (10 s); on asyncio's default executor (``min(32, cores + 4)``
threads: 6 on 2 cores) a few of them would stall every other ``to_thread`` of the
replica, so they have threads of their own."""


LANE_OPEN_S = 60.0
"""Seconds a reference waits for a room to hand out its lane and for the lane to open
(the first call of a new room waits for the actor to start)."""

LANE_RETRY_S = 5.0
"""Seconds after a failed attempt to open a room's lane before a call tries again (a room
that answered that it offers none is not asked again until it is resolved anew)."""


class ActivationLost(Exception):
    """A call went to an activation of the room that is gone (the room answers from a
    newer epoch); it will not be answered, so the caller sends it again."""


class RoomRef:
    """A replica's reference to one room actor: resolves it with ``get_room``, retries
    calls across actor deaths and hibernation, and abandons calls whose activation died
    (see the module docstring).

    Args:
        room_id: a valid room id.
        config: the settings a new room actor is created with (``lane``: whether to
            ask the room for a lane).
        limits: attempts, back-off and ``watch_s``.
        node: the Ray node id (hex) of the caller; ``""``: never ask for a lane.
    """

    def __init__(self, room_id: str, config: RoomsConfig, limits: GatewayLimits,
                 node: str = "") -> None:
        self.room_id = room_id
        self.config = config
        self.limits = limits
        self.node = node if config.lane else ""
        self.client: RoomClient | None = None
        """The room's client while resolved (``None``: resolve before the next call)."""
        self.lane: LaneClient | None = None
        """The lane to the resolved room, when it is on this node (see the module
        docstring)."""
        self._resolving = asyncio.Lock()
        self._opening: asyncio.Task | None = None  # _open_lane, while under way
        self._lane_retry_at = 0.0  # monotonic s: no new attempt before (a failed one)
        self._lane_refused: RoomClient | None = None  # that room offers no lane
        self.on_activation: Callable[[], None] | None = None
        self.epoch = 0
        """The newest activation epoch of the room this reference has seen (0: none)."""
        self._new_epoch = asyncio.Event()

    async def resolve(self) -> RoomClient:
        """Return the room's client, getting or creating the actor if needed
        (reactivating a hibernated room), on the resolvers' own threads.

        A room on this node is asked for its lane meanwhile, in the background: the
        calls go through Ray until it is open (or for good, when it cannot be opened).

        Raises:
            NoFreeSlot: the room has no actor and no slot freed within
                ``ROOMS_SLOT_WAIT_S``.
        """
        client = self.client
        if client is not None:
            return client
        async with self._resolving:  # concurrent callers share one look-up and lane
            if self.client is None:
                loop = asyncio.get_running_loop()
                handle = await loop.run_in_executor(_RESOLVERS, get_room, self.room_id,
                                                    self.config)
                self.client = RoomClient(handle)
                self._lane_retry_at = 0.0
                self._start_opening(self.client)
            return self.client

    def _start_opening(self, client: RoomClient) -> None:
        """Start :meth:`_open_lane` for ``client`` unless it is under way, lanes are off,
        the room said it offers none, or a failed attempt was too recent."""
        if (self.node and self._lane_refused is not client
                and (self._opening is None or self._opening.done())
                and time.monotonic() >= self._lane_retry_at):
            self._opening = asyncio.ensure_future(self._open_lane(client))

    async def _open_lane(self, client: RoomClient) -> None:
        """Ask the room behind ``client`` for its lane and open it (see
        :meth:`resolve`); it serves while ``client`` is the resolved one. No lane (it
        is on another node, lanes are off, or it fails within :data:`LANE_OPEN_S`):
        the calls stay with Ray, and a later call tries again after
        :data:`LANE_RETRY_S`."""
        try:
            # a room restarting answers with an error for a moment: ask again, often
            # enough that the lane opens soon after the room answers Ray's calls again
            # (a Ray call a quarter second at most while it restarts)
            async for attempt in AsyncRetrying(
                    stop=stop_after_delay(LANE_OPEN_S),
                    wait=wait_exponential(multiplier=0.05, max=0.2) + wait_random(0, 0.05),
                    retry=retry_if_exception_type(RayActorError), reraise=True):
                with attempt:
                    address = await asyncio.wait_for(_result(client.lane(self.node)),
                                                     LANE_OPEN_S)
            if address is None:
                self._lane_refused = client
                return
            lane = await asyncio.wait_for(LaneClient.connect(address), LANE_OPEN_S)
        except Exception as error:  # noqa: BLE001 - Ray's calls still work
            log.info("room %s: no lane (%s: %s); calls go through Ray", self.room_id,
                     type(error).__name__, error)
            self._lane_retry_at = time.monotonic() + LANE_RETRY_S
            return
        if self.client is client and self.node:
            self.lane = lane
        else:  # forgotten meanwhile
            lane.close()

    def forget(self, client: RoomClient) -> None:
        """Drop ``client`` (its call failed) and its lane, so that the next call
        resolves the room again."""
        if self.client is client:
            self.client = None
            self._close_lane()

    def close_lane(self) -> None:
        """Close the lane, if any, for good: later calls go through Ray (the reference
        is being dropped: its channel's last socket left, or the replica stops)."""
        self.node = ""
        self._close_lane()

    def _close_lane(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
            self._opening = None
        if self.lane is not None:
            self.lane.close()
            self.lane = None

    def _lane_of(self, client: RoomClient) -> LaneClient | None:
        """The open lane to the room behind ``client``, if it has one. Without one
        (it broke while ``client`` stayed the resolved one, as when Ray restarts the
        room's process under the same handle, or opening it failed), it is asked for
        again in the background (:meth:`_start_opening`)."""
        if self.client is not client:
            return None
        lane = self.lane
        if lane is not None and not lane.closed:
            return lane
        self.lane = None
        self._start_opening(client)
        return None

    def see(self, epoch: int) -> None:
        """Note that the room answers from activation ``epoch``; an epoch newer than
        the known one wakes every :meth:`wait` whose call went to an older activation."""
        if epoch > self.epoch:
            self.epoch = epoch
            changed, self._new_epoch = self._new_epoch, asyncio.Event()
            changed.set()

    async def wait(self, client: RoomClient, ref: "ObjectRef[T] | Awaitable[T]",
                   probe_after: float | None = None) -> T:
        """Await ``ref``, a call made through ``client``, and return its result, unless
        the room moves to another activation meanwhile (see the module docstring).

        Args:
            client: the client the call was made through.
            ref: the call's ``ObjectRef``, or the awaitable of a call over the lane.
            probe_after: seconds before the first check of a call still outstanding
                (default ``limits.watch_s``; a long-poll passes its own timeout plus
                that). A check asks the room for its epoch (``RoomActor.activation``,
                which does not activate it); a newer epoch seen meanwhile by any other
                call through this reference counts at once, without a check.

        Returns:
            The call's result (a :class:`~actors.wire.Delivery`'s epoch is noted).

        Raises:
            ActivationLost: the room answers from a newer activation than the one this
                call went to; the call was abandoned (its result, if it ever comes, is
                dropped).
            Exception: whatever the call raised.
        """
        sent = self.epoch
        task = asyncio.ensure_future(_result(ref))
        interval = self.limits.watch_s if probe_after is None else probe_after
        try:
            while True:
                changed = asyncio.ensure_future(self._new_epoch.wait())
                try:
                    done, _ = await asyncio.wait({task, changed}, timeout=interval,
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:
                    changed.cancel()
                if task in done:
                    result = task.result()
                    if isinstance(result, Delivery):
                        self.see(result.epoch)
                    return result
                if self.epoch <= sent:
                    current = await self._probe(client)
                    if current is not None:
                        self.see(current)
                if self.epoch > sent:
                    raise ActivationLost(f"room {self.room_id!r} restarted (epoch {sent} -> "
                                         f"{self.epoch})")
                interval = self.limits.watch_s
        finally:
            if not task.done():
                task.cancel()

    async def _probe(self, client: RoomClient) -> int | None:
        """The epoch of the room's activation now, or ``None`` when it does not answer
        within ``watch_s`` (restarting: the call's own fate decides)."""
        try:
            return await asyncio.wait_for(_result(client.activation()),
                                          self.limits.watch_s)
        except Exception:  # noqa: BLE001 - restarting, or gone
            return None

    # ---- the room's calls, typed (see actors.room_client) --------------------------

    async def deliver(self, frames: Sequence[Frame], cursor: int | None,
                      poller: str | None, written: int | None = None) -> Delivery:
        """``RoomActor.deliver`` with :meth:`call`'s retries (a batch sent twice is
        applied once: its frames are numbered); the result's epoch is noted
        (:meth:`see`)."""
        def send(room: RoomClient) -> Any:
            lane = self._lane_of(room)
            if lane is None:
                return room.deliver(frames, cursor, poller, written)
            return lane.call("deliver", deliver_call(frames, cursor, poller, written))

        return self._noted(await self.call(send))

    async def poll(self, client: RoomClient, cursor: int | None, timeout: float,
                   poller: str | None, written: int | None) -> Delivery:
        """One long-poll through ``client`` (``RoomActor.poll``, called as
        ``RoomActor.poll_wire``), watched as :meth:`wait` watches a call (first check
        after ``timeout`` plus ``limits.watch_s`` seconds); no retries: the caller polls
        again. The result's epoch is noted (:meth:`see`).

        Raises:
            ActivationLost: the room moved to another activation meanwhile.
            LaneClosed: the lane it went through broke (the caller forgets the client).
            Exception: whatever the call raised.
        """
        lane = self._lane_of(client)
        sent = (client.poll_wire(cursor, timeout, poller, written) if lane is None
                else lane.call("poll", poll_call(cursor, timeout, poller, written)))
        return self._noted(await self.wait(client, sent,
                                           probe_after=timeout + self.limits.watch_s))

    def _noted(self, wire: Sequence[Any]) -> Delivery:
        """Rebuild a ``deliver``'s or ``poll``'s result from its wire lists
        (:meth:`~actors.wire.Delivery.from_wire`) and note its epoch (:meth:`see`)."""
        delivery = Delivery.from_wire(wire)
        self.see(delivery.epoch)
        return delivery

    async def connect(self, conn: str, name: str, poller: str | None,
                      socket: str | None) -> int:
        """``RoomActor.connect`` with :meth:`call`'s retries."""
        return await self.call(lambda room: room.connect(conn, name, poller, socket))

    async def close(self, conn: str, code: int, reason: str, socket: str | None,
                    delivered: int | None) -> int:
        """``RoomActor.close`` with :meth:`call`'s retries."""
        return await self.call(lambda room: room.close(conn, code, reason, socket,
                                                       delivered))

    async def message(self, conn: str, text: str | bytes, sender: str | None,
                      key: str | None) -> int:
        """``RoomActor.message`` (refusals raised as ``MessageRefused``) with
        :meth:`call`'s retries; the idempotency ``key`` makes a retry apply once."""
        return await self.call(lambda room: room.message(conn, text, sender, key,
                                                         refusals=True))

    async def state(self) -> dict[str, Any]:
        """``RoomActor.state`` (the ``RoomState`` JSON object) with :meth:`call`'s
        retries."""
        return await self.call(lambda room: room.state())

    async def call(self, send: Callable[[RoomClient], Any]) -> Any:
        """Make one call of the room, ``send(client)``, and return its result.

        Retries, with exponential back-off, when the actor is dead or unavailable
        (``RayActorError``, or its lane broke: :class:`~actors.lane.LaneClosed`) or
        hibernating (:class:`RoomHibernating`), resolving the
        room again each time (which reactivates it); and at once when the call went to
        an activation that is gone (:class:`ActivationLost`, see :meth:`wait`).

        Args:
            send: makes the call through the client it is given (a
                :class:`~actors.room_client.RoomClient` method, or its lane's) and
                returns its ref or awaitable.

        Raises:
            RoomUnavailable: every attempt failed that way.
            NoFreeSlot: the room could not be started (see :meth:`resolve`).
            Exception: any other error the room raised (not retried).
        """
        delay = self.limits.backoff_s
        for attempt in range(self.limits.call_attempts):
            client = await self.resolve()
            try:
                result = await self.wait(client, send(client))
            except ActivationLost as lost:
                log.info("room %s: call abandoned (%s), attempt %d", self.room_id, lost,
                         attempt + 1)
                continue
            except (RayActorError, RoomHibernating, LaneClosed) as error:
                log.info("room %s: call failed (%s), attempt %d", self.room_id,
                         type(error).__name__, attempt + 1)
                self.forget(client)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.limits.max_backoff_s)
                continue
            if self.on_activation is not None:
                self.on_activation()
            return result
        raise RoomUnavailable(f"room {self.room_id!r} is unavailable")


async def _result(ref: Any) -> Any:
    """Await a Ray ``ObjectRef`` (as a coroutine, so that it can run as a task)."""
    return await ref
