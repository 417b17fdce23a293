"""Batches of one room's frames in one replica: pure asyncio, no Ray.

Frames are queued in arrival order and sent to the room one batch at a time: while a
batch is under way (:attr:`BatcherState.DELIVERING`), every frame that arrives waits, and
the next batch carries all of them (at most ``max_batch``). A sender whose frame would
make the queue longer than ``max_queue`` waits until the room has caught up (the
socket's reads stop: back-pressure to the client, not memory in the replica).

The batcher does not know what a frame or a room is: it is given an async ``deliver``
callable that takes one batch and returns when the batch is done (acknowledged and its
result handled, or failed and its senders told). Each queued item's ``done`` callback
runs after its batch, whatever happened to it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable, Generic, TypeVar

__all__ = ["Batcher", "BatcherState"]

T = TypeVar("T")

log = logging.getLogger("ray_rooms.gateway")


class BatcherState(enum.Enum):
    """Whether a batch is under way."""

    IDLE = "idle"
    """No batch under way; the queue is empty."""
    DELIVERING = "delivering"
    """A batch is under way (its ``deliver`` has not returned)."""


@dataclass(slots=True)
class _Queued(Generic[T]):
    item: T
    done: Callable[[], None] | None


class Batcher(Generic[T]):
    """One room's frames in one replica, sent in batches (see the module docstring).

    Args:
        deliver: ``await deliver(items)`` sends one batch (a list, in arrival order) and
            returns when it is done; it should not raise (an exception is logged and
            the batch counts as done).
        max_batch: the most items in one batch (>= 1).
        max_queue: the most items waiting; :meth:`submit` waits beyond it (>= 1).
    """

    def __init__(self, deliver: Callable[[list[T]], Awaitable[None]], max_batch: int,
                 max_queue: int) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self._deliver = deliver
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.state = BatcherState.IDLE
        self.batches = 0
        """Batches sent."""
        self.items = 0
        """Items sent."""
        self._queue: deque[_Queued[T]] = deque()
        self._caught_up = asyncio.Event()
        self._caught_up.set()
        self._sender: asyncio.Task | None = None

    @property
    def delivering(self) -> bool:
        """Whether a batch is under way."""
        return self.state is BatcherState.DELIVERING

    def queued(self) -> int:
        """The number of items waiting for a batch (not counting the one under way)."""
        return len(self._queue)

    async def submit(self, item: T, done: Callable[[], None] | None = None) -> None:
        """Queue ``item``; returns at once, unless ``max_queue`` items are waiting (then
        once the room has caught up). ``done()`` is called after ``item``'s batch."""
        while len(self._queue) >= self.max_queue:
            self._caught_up.clear()
            await self._caught_up.wait()
        self._queue.append(_Queued(item, done))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        try:
            while self._queue:
                batch = [self._queue.popleft()
                         for _ in range(min(self.max_batch, len(self._queue)))]
                if len(self._queue) < self.max_queue:
                    self._caught_up.set()
                self.batches += 1
                self.items += len(batch)
                self.state = BatcherState.DELIVERING
                try:
                    await self._deliver([queued.item for queued in batch])
                except Exception:  # noqa: BLE001 - deliver tells its senders; go on
                    log.exception("a batch failed unexpectedly")
                finally:
                    self.state = BatcherState.IDLE
                    for queued in batch:
                        if queued.done is not None:
                            queued.done()
        finally:
            self._sender = None
            self.state = BatcherState.IDLE
            self._caught_up.set()
