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
replica has reactivated it (it looks the actor up every ``wake_check_s``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from typing import Any, Callable

import ray

from ..directory import actor_name
from ..errors import NoFreeSlot, RoomUnavailable
from ..wire import Delivery, OutboxEntry
from .errors import public_error
from .limits import GatewayLimits
from .room_ref import ActivationLost, RoomRef
from .client_socket import ClientSocket

__all__ = ["RoomChannel"]

log = logging.getLogger("ray.serve.ray_rooms.gateway")


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
        self.cursor: int | None = None
        self.held: dict[int, OutboxEntry] = {}
        self.hibernating = False
        """The room said it hibernates: the poll waits for a reactivation."""
        self._on_empty = on_empty
        self._ready: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._reactivated = asyncio.Event()
        self._hibernated_epoch = 0  # the epoch of the activation that hibernated
        self._frames: deque[tuple[ClientSocket, str | bytes, int]] = deque()
        self._sender: asyncio.Task | None = None
        self._in_flight = False
        self._room_caught_up = asyncio.Event()
        self._room_caught_up.set()
        self._accepting = asyncio.Lock()
        ref.on_activation = self._activated
        self.stats = {"entries": 0, "gaps": 0, "polls": 0, "hibernations": 0,
                      "batches": 0, "frames": 0, "redeliveries": 0}

    def count(self) -> int:
        """Return the number of sockets of the room in this replica."""
        return sum(len(s) for s in self.sockets.values())

    def add(self, sock: ClientSocket) -> None:
        """Register ``sock`` (before its ``connect`` turn, so it gets that broadcast)."""
        self.sockets.setdefault(sock.conn, set()).add(sock)
        if self._task is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._run())

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
        """Wait until the poll holds a cursor (so a following ``connect`` is seen)."""
        assert self._ready is not None
        await asyncio.shield(self._ready)

    def stop(self) -> None:
        """Cancel the poll task (frames already queued are still sent)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _activated(self) -> None:
        if self.hibernating:
            self._reactivated.set()

    # ---- frames to the room ----------------------------------------------------------

    async def submit(self, sock: ClientSocket, data: str | bytes) -> None:
        """Queue one frame of ``sock`` for the room; returns at once unless
        ``room_queue`` frames are already waiting (then when the room has caught up).
        Errors come back to ``sock`` as ``error`` frames."""
        while len(self._frames) >= self.limits.room_queue:
            self._room_caught_up.clear()
            await self._room_caught_up.wait()
        sock.frames += 1
        self._frames.append((sock, data, sock.frames))
        sock.pending += 1
        sock.drained.clear()
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_frames())

    async def _send_frames(self) -> None:
        try:
            while self._frames:
                batch = [self._frames.popleft()
                         for _ in range(min(self.limits.max_batch, len(self._frames)))]
                if len(self._frames) < self.limits.room_queue:
                    self._room_caught_up.set()
                self.stats["batches"] += 1
                self.stats["frames"] += len(batch)
                self._in_flight = True
                try:
                    result = await self._deliver_batch(batch)
                finally:
                    self._in_flight = False
                try:
                    await self.accept(result)
                finally:
                    for sock, _, _ in batch:
                        sock.pending -= 1
                        if sock.pending == 0:
                            sock.drained.set()
        finally:
            self._sender = None
            self._room_caught_up.set()

    async def _deliver_batch(self, batch: list[tuple[ClientSocket, str | bytes, int]]
                             ) -> Delivery | None:
        """Send ``batch`` until the room acknowledges it (a ``deliver`` result), also
        across the room's death and restart: each frame goes with its socket's id and
        number, and the room skips what it applied already (:mod:`actors.applied`).
        Returns ``None`` after telling the senders why, when the room stays unreachable
        for ``redeliver_s`` or cannot take the frames."""
        frames = [(sock.conn, data, sock.id, number) for sock, data, number in batch]
        deadline = time.monotonic() + self.limits.redeliver_s
        while True:
            try:
                return await self.ref.call("deliver", frames, self.cursor, self.poller)
            except RoomUnavailable as error:
                if time.monotonic() < deadline:
                    self.stats["redeliveries"] += 1
                    continue  # the room is restarting: send the same frames again
                failure: BaseException = error
            except Exception as error:  # noqa: BLE001 - tell the senders (sanitized), go on
                # StorageUnavailable: the room kept its last durable state; NoFreeSlot: a
                # hibernated room could not wake; SnapshotRefused: rolled back. In each
                # case nothing of the batch was applied.
                failure = error
            public = public_error(failure)
            for sock, _, _ in batch:
                sock.send(public.frame())
            return None

    # ---- entries from the room -------------------------------------------------------

    async def accept(self, result: Delivery | None) -> None:
        """Fan out the entries of a ``poll`` or ``deliver`` result (``None``: a failed
        ``deliver``), each once and in sequence order; resend ``roomState`` on a gap
        or on a hole no ``deliver`` under way can fill."""
        async with self._accepting:
            if result is not None:
                if self.cursor is None:
                    self.cursor = result.cursor
                    return
                if result.gap:
                    self.stats["gaps"] += 1
                    await self._send_state()
                    if result.entries:  # skip the hole (never back: that would send twice)
                        self.cursor = max(self.cursor, result.entries[0].seq - 1)
                    else:  # the room's end; behind us only after its outbox was lost
                        if result.cursor < self.cursor:
                            self.held.clear()
                        self.cursor = result.cursor
                for entry in result.entries:
                    if entry.seq > self.cursor:
                        self.held[entry.seq] = entry
                while self.cursor + 1 in self.held:
                    self.cursor += 1
                    self._fan_out(self.held.pop(self.cursor))
                if not self.held and not result.entries:
                    self.cursor = max(self.cursor, result.cursor)
            if self.held and not self._in_flight:
                # the entries before the oldest held one will not come: state heals it
                self.stats["gaps"] += 1
                await self._send_state()
                for seq in sorted(self.held):
                    self._fan_out(self.held.pop(seq))
                    self.cursor = seq

    # ---- the long-poll ---------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.limits.backoff_s
        timeout = self.limits.poll_timeout or self.ref.config.poll_timeout
        while self.sockets:
            if self.hibernating:
                await self._await_reactivation()
                continue
            handle = None
            try:
                handle = await self.ref.resolve()
                first = self.cursor is None
                self.stats["polls"] += 1
                wait = 0 if first else timeout
                result: Delivery = await self.ref.wait(
                    handle, handle.poll.remote(self.cursor, wait, self.poller),
                    probe_after=wait + self.limits.watch_s)
            except asyncio.CancelledError:
                raise
            except ActivationLost:  # the poll went to an activation that died: poll anew
                continue
            except NoFreeSlot as error:  # at the bound: refuse the sockets still waiting
                if self._ready is not None and not self._ready.done():
                    self._ready.set_exception(error)
                    return
                await asyncio.sleep(delay)
                continue
            except Exception as error:  # noqa: BLE001 - back off, resolve again
                log.info("room %s: poll failed (%s); retrying", self.ref.room_id,
                         type(error).__name__)
                if handle is not None:
                    self.ref.forget(handle)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.limits.max_backoff_s)
                continue
            delay = self.limits.backoff_s
            if result.hibernating:
                # A room that hibernates before we hold a cursor: resolve (reactivate)
                # and ask again; otherwise wait for a reactivation with the cursor kept.
                self.ref.forget(handle)
                if self.cursor is None:
                    await asyncio.sleep(delay)
                    continue
                self.stats["hibernations"] += 1
                self.hibernating = True
                self._hibernated_epoch = max(self.ref.epoch, result.epoch)
                self._reactivated.clear()
                continue
            await self.accept(result)
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)

    async def _await_reactivation(self) -> None:
        """Wait for a frame to reactivate the room, or for another replica to have
        done it (a live actor with a new id under the room's name)."""
        try:
            await asyncio.wait_for(self._reactivated.wait(), self.limits.wake_check_s)
        except asyncio.TimeoutError:
            try:
                handle = await asyncio.to_thread(
                    ray.get_actor, actor_name(self.ref.room_id), self.ref.config.namespace)
                epoch = await asyncio.wait_for(handle.activation.remote(),
                                               self.limits.wake_check_s)
            except ValueError:  # no actor: still hibernating
                return
            except Exception:  # noqa: BLE001 - the hibernating actor is exiting
                return
            if epoch <= self._hibernated_epoch:
                return  # the hibernating actor is still exiting (or not yet active)
        self.hibernating = False

    async def _send_state(self) -> None:
        try:
            state = await self.ref.call("state")
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
