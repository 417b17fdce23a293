"""One room as one replica sees it: the room's sockets here, the frames they send, and
the one long-poll that feeds them.

Frames go to the room in batches: one ``RoomActor.deliver`` call at a time per channel,
carrying every frame that arrived while the previous call was under way (at most
``max_batch``), in arrival order. The call returns the released outbox entries, which
are fanned out here at once; the long-poll (``RoomActor.poll``) brings the rest (turns
of other replicas, alarms, AI results). The room does not wake this channel's poll for
entries its ``deliver`` returns (the channel's ``poller`` id claims them), so a message
whose only reader is its own replica costs one Ray call. Entries from both paths are
fanned out once each, in sequence order: entries after a hole wait in ``held`` until the
``deliver`` under way fills it; a hole nothing can fill any more is a gap (``roomState``
is resent).

When the room hibernates the channel stops polling, keeps its cursor, and resumes when a
frame reactivates the room (through :func:`actors.directory.get_room`), or when another
replica has reactivated it (it looks the actor up every ``wake_check_s`` and asks its
activation epoch: newer than the one that hibernated means awake).

The channel's lifecycle is one explicit state, :class:`ChannelState`::

    STARTING --first poll result (a cursor)--> POLLING
    STARTING --no free slot--> STOPPED (the waiting sockets are refused)
    POLLING --the room hibernates--> HIBERNATING --reactivated--> POLLING
    any --last socket left / replica shutting down--> STOPPED

The batches (:mod:`actors.gateway.batcher`, whose own state says whether a ``deliver``
is under way) and the ordered merge (:mod:`actors.gateway.ordered`) are pure code of
their own; this module joins them to the room.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
import uuid
from typing import Callable

import ray

from .. import metrics, tracing
from ..directory import actor_name
from ..errors import NoFreeSlot, RoomUnavailable
from ..room_client import RoomClient
from ..wire import Delivery, Frame, OutboxEntry
from .batcher import Batcher
from .client_socket import ClientSocket
from .errors import public_error
from .limits import GatewayLimits
from .ordered import OrderedMerge
from .room_ref import ActivationLost, RoomRef

__all__ = ["ChannelState", "RoomChannel"]

log = logging.getLogger("ray_rooms.gateway")

_Queued = tuple[ClientSocket, "str | bytes", int, float, object]
"""A frame waiting for its batch: the socket, the data, the socket's frame number, when
it was queued (``time.perf_counter()``, seconds), and its ``rooms.frame`` span (``None``
when tracing is off, :mod:`actors.tracing`)."""


class ChannelState(enum.Enum):
    """The lifecycle of a :class:`RoomChannel` (see the module docstring)."""

    STARTING = "starting"
    """No cursor yet: sockets wait in :meth:`RoomChannel.ready`."""
    POLLING = "polling"
    """Long-polling the room; sockets are admitted."""
    HIBERNATING = "hibernating"
    """The room hibernated; waiting for it to be reactivated (the cursor is kept)."""
    STOPPED = "stopped"
    """No poll: the last socket left, the replica is shutting down, or the room could
    not be started."""


class RoomChannel:
    """The sockets of one room in one replica, the frames they send, and the one
    long-poll that feeds them (see the module docstring).

    Args:
        ref: the room's reference.
        limits: timings and batch sizes.
        on_empty: called when the last socket left (the replica forgets the channel).
        replica: the replica's id (the poller id is derived from it).
    """

    def __init__(self, ref: RoomRef, limits: GatewayLimits,
                 on_empty: Callable[["RoomChannel"], None], replica: str = "") -> None:
        self.ref = ref
        self.limits = limits
        self.poller = f"{replica}:{uuid.uuid4().hex[:8]}"
        self.sockets: dict[str, set[ClientSocket]] = {}
        self.state = ChannelState.STOPPED
        self.merge = OrderedMerge()
        self.batcher: Batcher[_Queued] = Batcher(self._deliver_batch, limits.max_batch,
                                                 limits.room_queue)
        self._on_empty = on_empty
        self._changed = asyncio.Event()  # set on every state change
        self._refusal: BaseException | None = None  # why STARTING ended in STOPPED
        self._poll: asyncio.Task | None = None  # runs while not STOPPED
        self._hibernated_epoch = 0  # the epoch of the activation that hibernated
        self._accepting = asyncio.Lock()
        ref.on_activation = self._activated
        self.stats = {"entries": 0, "polls": 0, "hibernations": 0, "redeliveries": 0}

    @property
    def cursor(self) -> int | None:
        """The sequence number of the newest entry fanned out (``None``: not started)."""
        return self.merge.cursor

    @property
    def written(self) -> int | None:
        """The write watermark: every entry up to it that reaches one of this replica's
        open sockets has been written to that socket (not only queued). It is
        :attr:`cursor` when every socket's queue is empty, else one below the oldest
        entry still queued. The room keeps it as this poller's position for a reconnect
        whose socket's replica died without a close (``Outbox.connected``): a replica
        SIGKILLed between queueing and writing leaves nothing owed unsent."""
        cursor = self.merge.cursor
        if cursor is None:
            return None
        oldest = [seq for group in self.sockets.values() for sock in group
                  if (seq := sock.oldest_unwritten) is not None]
        return min(cursor, min(oldest) - 1) if oldest else cursor

    def counters(self) -> dict[str, int]:
        """The channel's counters (for ``/healthz``): entries, gaps, polls,
        hibernations, batches, frames, redeliveries."""
        return {**self.stats, "gaps": self.merge.gaps, "batches": self.batcher.batches,
                "frames": self.batcher.items}

    def _set(self, state: ChannelState) -> None:
        if state is not self.state:
            self.state = state
            self._changed.set()
            self._changed = asyncio.Event()

    def count(self) -> int:
        """Return the number of sockets of the room in this replica."""
        return sum(len(s) for s in self.sockets.values())

    def add(self, sock: ClientSocket) -> None:
        """Register ``sock`` (before its ``connect`` turn, so it gets that broadcast);
        a stopped channel starts its poll (STARTING)."""
        self.sockets.setdefault(sock.conn, set()).add(sock)
        if self.state is ChannelState.STOPPED:
            self._refusal = None
            self._set(ChannelState.POLLING if self.merge.cursor is not None
                      else ChannelState.STARTING)
            self._poll = asyncio.ensure_future(self._run())

    def remove(self, sock: ClientSocket) -> bool:
        """Unregister ``sock``; return whether another socket of the same connection id
        remains here. Stops the poll when the channel is empty."""
        group = self.sockets.get(sock.conn)
        if group is not None:
            group.discard(sock)
            if not group:
                del self.sockets[sock.conn]
        if not self.sockets:
            self.stop()
            self._on_empty(self)
        return bool(self.sockets.get(sock.conn))

    async def ready(self) -> None:
        """Wait until the poll holds a cursor (so a following ``connect`` is seen).

        Raises:
            NoFreeSlot: the room could not be started (no free room slot).
            RoomUnavailable: the channel stopped before it started.
        """
        while self.state is ChannelState.STARTING:
            await self._changed.wait()
        if self._refusal is not None:
            raise self._refusal
        if self.state is ChannelState.STOPPED:
            raise RoomUnavailable(f"room {self.ref.room_id!r} is unavailable")

    def stop(self) -> None:
        """Stop the poll (STOPPED); frames already queued are still sent."""
        self._set(ChannelState.STOPPED)
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None

    def _activated(self) -> None:
        """A call of the room succeeded (through :meth:`RoomRef.call`): a hibernated
        room is awake again."""
        if self.state is ChannelState.HIBERNATING:
            self._set(ChannelState.POLLING)

    # ---- frames to the room ----------------------------------------------------------

    async def submit(self, sock: ClientSocket, data: str | bytes) -> None:
        """Queue one frame of ``sock`` for the room; returns at once unless
        ``room_queue`` frames are already waiting (then when the room has caught up).
        Errors come back to ``sock`` as ``error`` frames."""
        sock.frames += 1
        sock.pending += 1
        sock.drained.clear()

        def done() -> None:
            sock.pending -= 1
            if sock.pending == 0:
                sock.drained.set()

        frame_span = tracing.start("rooms.frame", attributes={
            "rooms.room": self.ref.room_id, "rooms.conn": sock.conn}) \
            if tracing.enabled() else None
        await self.batcher.submit((sock, data, sock.frames, time.perf_counter(),
                                   frame_span), done)

    async def _deliver_batch(self, batch: list[_Queued]) -> None:
        """Send ``batch`` until the room acknowledges it (a ``deliver`` result), also
        across the room's death and restart, and fan out the result: each frame goes
        with its socket's id and number, and the room skips what it applied already
        (:mod:`actors.applied`). After ``redeliver_s`` of an unreachable room, or when
        the room cannot take the frames, the senders are told why (an ``error``)."""
        started = time.perf_counter()
        frames = [Frame(sock.conn, data, sock.id, number, tracing.traceparent(span))
                  for sock, data, number, _, span in batch]
        for *_, queued, _ in batch:
            metrics.stage("queue", started - queued)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.redeliver_s
        result: Delivery | None = None
        while True:
            try:
                sent = time.perf_counter()
                result = await self.ref.deliver(frames, self.merge.cursor, self.poller,
                                                self.written)
                metrics.deliver(time.perf_counter() - sent, len(frames))
                break
            except RoomUnavailable as error:
                if loop.time() < deadline:
                    self.stats["redeliveries"] += 1
                    continue  # the room is restarting: send the same frames again
                failure: BaseException = error
            except Exception as error:  # noqa: BLE001 - tell the senders (sanitized), go on
                # StorageUnavailable: the room kept its last durable state; NoFreeSlot: a
                # hibernated room could not wake; SnapshotRefused: rolled back. In each
                # case nothing of the batch was applied.
                failure = error
            public = public_error(failure)
            for sock, *_ in batch:
                sock.send(public.frame())
            break
        # The batcher stays DELIVERING until this result is merged, so a poll result
        # merged meanwhile holds the entries this one fills in; this result is the last
        # that could fill a hole of this channel, so it merges as "no deliver under way".
        spans = [s for *_, s in batch if s is not None]
        if not spans:  # tracing off
            await self.accept(result, delivering=False)
            return
        with tracing.span("rooms.fanout",
                          parent=tracing.extract(tracing.traceparent(spans[0]))):
            await self.accept(result, delivering=False)
        for frame_span in spans:
            frame_span.end()

    # ---- entries from the room -------------------------------------------------------

    async def accept(self, result: Delivery | None, delivering: bool | None = None) -> None:
        """Fan out the entries of a ``poll`` or ``deliver`` result (``None``: a failed
        ``deliver``), each once and in sequence order (:class:`OrderedMerge`);
        resend ``roomState`` first on a gap.

        Args:
            result: the result.
            delivering: whether a ``deliver`` of this channel is under way whose result
                may fill a hole (default: whether the batcher is delivering; a batch's
                own result passes ``False``).
        """
        async with self._accepting:
            if delivering is None:
                delivering = self.batcher.delivering
            merged = self.merge.accept(result, delivering)
            if merged.started and self.state is ChannelState.STARTING:
                self._set(ChannelState.POLLING)
            if merged.resend_state:
                await self._send_state()
            if merged.entries:
                started = time.perf_counter()
                for entry in merged.entries:
                    self._fan_out(entry)
                metrics.stage("fanout", time.perf_counter() - started)

    # ---- the long-poll ---------------------------------------------------------------

    async def _run(self) -> None:
        """Poll the room while the channel is not STOPPED (see the module docstring)."""
        delay = self.limits.backoff_s
        timeout = self.limits.poll_timeout or self.ref.config.poll_timeout
        while self.state is not ChannelState.STOPPED:
            if self.state is ChannelState.HIBERNATING:
                await self._await_reactivation()
                continue
            client = None
            try:
                client = await self.ref.resolve()
                wait = 0 if self.merge.cursor is None else timeout
                self.stats["polls"] += 1
                result = await self.ref.poll(client, self.merge.cursor, wait,
                                             self.poller, self.written)
            except asyncio.CancelledError:
                raise
            except ActivationLost:  # the poll went to an activation that died: poll anew
                continue
            except NoFreeSlot as error:  # at the bound: refuse the sockets still waiting
                if self.state is ChannelState.STARTING:
                    self._refusal = error
                    self._set(ChannelState.STOPPED)
                    self._poll = None
                    return
                await asyncio.sleep(delay)
                continue
            except Exception as error:  # noqa: BLE001 - back off, resolve again
                log.info("room %s: poll failed (%s); retrying", self.ref.room_id,
                         type(error).__name__)
                if client is not None:
                    self.ref.forget(client)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.limits.max_backoff_s)
                continue
            delay = self.limits.backoff_s
            if result.hibernating:
                # A room that hibernates before we hold a cursor: resolve (reactivate)
                # and ask again; otherwise wait for a reactivation with the cursor kept.
                self.ref.forget(client)
                if self.merge.cursor is None:
                    await asyncio.sleep(delay)
                    continue
                if self.state is ChannelState.POLLING:
                    self.stats["hibernations"] += 1
                    self._hibernated_epoch = max(self.ref.epoch, result.epoch)
                    self._set(ChannelState.HIBERNATING)
                continue
            await self.accept(result)

    async def _await_reactivation(self) -> None:
        """Wait for a frame to reactivate the room (:meth:`_activated`), or for another
        replica to have done it (a live actor under the room's name whose activation
        epoch is newer than the one that hibernated)."""
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), self.limits.wake_check_s)
            return  # the state changed (POLLING or STOPPED)
        except asyncio.TimeoutError:
            pass
        try:
            handle = await asyncio.to_thread(
                ray.get_actor, actor_name(self.ref.room_id), self.ref.config.namespace)
            epoch = await asyncio.wait_for(RoomClient(handle).activation(),
                                           self.limits.wake_check_s)
        except ValueError:  # no actor: still hibernating
            return
        except Exception:  # noqa: BLE001 - the hibernating actor is exiting
            return
        if epoch > self._hibernated_epoch and self.state is ChannelState.HIBERNATING:
            self._set(ChannelState.POLLING)

    async def _send_state(self) -> None:
        try:
            state = await self.ref.state()
        except Exception as error:  # noqa: BLE001 - the next gap or broadcast repairs it
            log.warning("room %s: state after a gap failed (%s)", self.ref.room_id,
                        type(error).__name__)
            return
        text = json.dumps({"type": "roomState", "state": state}, separators=(",", ":"))
        for group in list(self.sockets.values()):
            for sock in group:
                sock.send(text)

    def _fan_out(self, entry: OutboxEntry) -> None:
        """Write ``entry`` to the sockets it reaches; then close ``entry.conn``'s
        sockets if it carries a close."""
        self.stats["entries"] += 1
        if entry.data is not None:
            for sock in entry.pick(self.sockets):
                sock.send(entry.data, entry.seq)
        if entry.close is not None:
            code, reason = entry.close
            for sock in list(self.sockets.get(entry.conn or "", ())):
                sock.close(code, reason)
