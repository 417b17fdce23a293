"""The alarm scheduler's own bookkeeping (no Ray: a memory store and a stand-in wake)."""

from __future__ import annotations

import asyncio
import time

from actors.scheduler import AlarmScheduler
from storage import MemoryStore


async def test_a_hold_is_dropped_once_past_even_when_the_alarm_was_cleared():
    # Before: a room held after a "not due" answer kept its entry until its alarm was
    # due again, so rooms whose alarm was cleared kept theirs for ever (issue 19).
    store = MemoryStore()
    epoch = await store.claim_epoch("r")
    await store.save("r", b"x", epoch=epoch, alarm_at=time.time() - 1)

    async def not_due(room_id: str) -> bool:
        return False

    scheduler = AlarmScheduler(store=store, wake=not_due, poll_interval=0.05, grace=0)
    try:
        deadline = time.monotonic() + 5
        while "r" not in scheduler._hold:
            assert time.monotonic() < deadline, "the room was never held"
            await asyncio.sleep(0.01)
        await store.save("r", b"x", epoch=epoch, alarm_at=None)  # the alarm is cleared
        await asyncio.sleep(0.3)
        assert "r" not in scheduler._hold
    finally:
        await scheduler.stop()
