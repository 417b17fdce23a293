"""The batcher (:mod:`actors.gateway.batcher`): pure asyncio, no Ray."""

from __future__ import annotations

import asyncio

import pytest

from actors.gateway.batcher import Batcher, BatcherState


async def test_frames_arriving_during_a_batch_go_together_in_order():
    batches: list[list[int]] = []
    release = asyncio.Event()
    states: list[BatcherState] = []

    async def deliver(items: list[int]) -> None:
        states.append(batcher.state)
        batches.append(items)
        if len(batches) == 1:
            await release.wait()

    batcher: Batcher[int] = Batcher(deliver, max_batch=4, max_queue=100)
    done: list[int] = []
    await batcher.submit(0, lambda: done.append(0))
    await asyncio.sleep(0)
    assert batcher.delivering
    for n in range(1, 10):
        await batcher.submit(n, lambda n=n: done.append(n))
    release.set()
    while batcher.delivering or batcher.queued():
        await asyncio.sleep(0.01)
    assert batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert done == list(range(10))
    assert states == [BatcherState.DELIVERING] * 4 and batcher.state is BatcherState.IDLE
    assert (batcher.batches, batcher.items) == (4, 10)


async def test_a_full_queue_holds_the_sender_until_the_room_catches_up():
    release = asyncio.Event()

    async def deliver(items: list[int]) -> None:
        await release.wait()

    batcher: Batcher[int] = Batcher(deliver, max_batch=2, max_queue=3)
    await batcher.submit(0)
    await asyncio.sleep(0)  # 0 under way
    for n in range(1, 4):
        await batcher.submit(n)  # 3 waiting: at the bound
    blocked = asyncio.ensure_future(batcher.submit(4))
    await asyncio.sleep(0.05)
    assert not blocked.done() and batcher.queued() == 3
    release.set()
    await asyncio.wait_for(blocked, 1)


async def test_a_failing_batch_still_completes_its_items():
    async def deliver(items: list[int]) -> None:
        raise RuntimeError("boom")

    batcher: Batcher[int] = Batcher(deliver, max_batch=8, max_queue=8)
    done: list[int] = []
    await batcher.submit(1, lambda: done.append(1))
    await batcher.submit(2, lambda: done.append(2))
    for _ in range(50):
        if len(done) == 2:
            break
        await asyncio.sleep(0.01)
    assert done == [1, 2] and batcher.state is BatcherState.IDLE


def test_bounds_must_be_positive():
    with pytest.raises(ValueError):
        Batcher(lambda items: None, max_batch=0, max_queue=1)  # type: ignore[arg-type]
