"""A replica's room reference abandons a call whose activation died (no Ray needed:
the handle is a stand-in whose calls are futures)."""

from __future__ import annotations

import asyncio

import pytest

from actors.config import RoomsConfig
from actors.gateway.limits import GatewayLimits
from actors.gateway.room_ref import ActivationLost, RoomRef
from actors.room_client import RoomClient
from actors.wire import Delivery


class _Method:
    def __init__(self, answer):
        self.answer = answer
        self.calls = 0

    def remote(self, *args, **kwargs):
        self.calls += 1
        return self.answer(self.calls)


class _Handle:
    """``deliver_wire``'s first call never returns (its activation died); later calls
    return a Delivery from epoch 2 (as its wire lists); ``activation`` says 2."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.deliver_wire = _Method(lambda n: loop.create_future() if n == 1 else
                                    _done(Delivery(cursor=7, epoch=2).wire()))
        self.activation = _Method(lambda n: _done(2))


def _done(value):
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def _ref(**limits) -> RoomRef:
    return RoomRef("r", RoomsConfig(), GatewayLimits(watch_s=0.05, **limits))


async def test_a_call_to_a_dead_activation_is_abandoned_and_sent_again():
    ref = _ref()
    ref.epoch = 1  # the last answer came from activation 1
    handle = _Handle()
    ref.client = RoomClient(handle)
    result = await asyncio.wait_for(ref.deliver([], 0, "p"), 5)
    assert result.cursor == 7 and ref.epoch == 2 and handle.deliver_wire.calls == 2


async def test_a_newer_epoch_seen_elsewhere_abandons_a_long_poll_at_once():
    ref = _ref()
    ref.epoch = 1
    handle = _Handle()
    never = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(ref.wait(RoomClient(handle), never, probe_after=60))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    ref.see(2)  # a deliver's result came from activation 2
    with pytest.raises(ActivationLost):
        await asyncio.wait_for(waiting, 1)
    assert handle.activation.calls == 0  # no probe was needed


async def test_a_slow_call_of_the_live_activation_is_awaited():
    ref = _ref()
    ref.epoch = 2
    handle = _Handle()
    slow = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.3, slow.set_result, Delivery(cursor=3, epoch=2))
    result = await ref.wait(RoomClient(handle), slow)
    assert result.cursor == 3 and handle.activation.calls >= 2  # probed, same epoch


async def test_rooms_waiting_for_a_slot_do_not_stall_the_replicas_other_threads(monkeypatch):
    # Before: get_room ran on asyncio's default executor (6 threads on 2 cores); at the
    # slot bound each call blocks up to ROOMS_SLOT_WAIT_S, so a handful of new rooms
    # stalled every other to_thread of the replica (issue 19).
    import threading
    import time

    import actors.gateway.room_ref as room_ref

    release = threading.Event()

    def waiting_for_a_slot(room_id, config):
        release.wait(10)
        return object()

    monkeypatch.setattr(room_ref, "get_room", waiting_for_a_slot)
    refs = [_ref() for _ in range(40)]
    resolving = [asyncio.ensure_future(ref.resolve()) for ref in refs]
    await asyncio.sleep(0.2)
    started = time.monotonic()
    assert await asyncio.wait_for(asyncio.to_thread(lambda: 42), 5) == 42
    assert time.monotonic() - started < 1.0
    release.set()
    await asyncio.gather(*resolving)


async def test_a_deliver_result_from_a_newer_activation_is_noted_at_once():
    """The epoch a ``deliver`` result carries (across Ray as wire lists) moves the
    reference on by itself, with no probe: the calls still waiting on the older
    activation are abandoned at once."""
    ref = _ref()
    ref.epoch = 2
    handle = _Handle()
    handle.deliver_wire = _Method(lambda n: _done(Delivery(cursor=9, epoch=3).wire()))
    ref.client = RoomClient(handle)
    never = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(ref.wait(RoomClient(handle), never, probe_after=60))
    result = await asyncio.wait_for(ref.deliver([], 0, "p"), 5)
    assert result.cursor == 9 and ref.epoch == 3
    with pytest.raises(ActivationLost):
        await asyncio.wait_for(waiting, 1)
    assert handle.activation.calls == 0


async def test_a_poll_result_from_a_newer_activation_is_noted_at_once():
    """A long-poll's result crosses Ray as wire lists (``poll_wire``) and comes back a
    Delivery whose epoch moves the reference on, as a ``deliver``'s does; a poll that
    went to a dead activation is abandoned (``ActivationLost``), not sent again: the
    channel polls anew."""
    ref = _ref()
    ref.epoch = 2
    handle = _Handle()
    handle.poll_wire = _Method(lambda n: _done(Delivery(cursor=11, epoch=3).wire()))
    never = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(ref.wait(RoomClient(handle), never, probe_after=60))
    result = await asyncio.wait_for(ref.poll(RoomClient(handle), 4, 0.0, "p", None), 5)
    assert result == Delivery(cursor=11, epoch=3) and ref.epoch == 3
    with pytest.raises(ActivationLost):
        await asyncio.wait_for(waiting, 1)

    handle.poll_wire = _Method(lambda n: asyncio.get_running_loop().create_future())
    handle.activation = _Method(lambda n: _done(4))  # the room restarted meanwhile
    with pytest.raises(ActivationLost):
        await asyncio.wait_for(ref.poll(RoomClient(handle), 11, 0.0, "p", None), 5)
    assert handle.poll_wire.calls == 1


async def test_a_lane_is_opened_once_a_room_that_restarts_slowly_answers(monkeypatch):
    """The room's process is restarting for longer than a few retries (its ``lane``
    call fails with ``RayActorError`` for 9 s): the reference keeps asking in the
    background, the calls go through Ray meanwhile, and then over the lane. (Before:
    it gave up after six attempts, ~3-8 s, and a room restarted on a loaded machine
    was never reached over its lane again; CI saw it.)"""
    from ray.exceptions import RayActorError

    from actors.gateway import room_ref as room_ref_module
    from actors.lane import LaneServer

    async def lane_deliver(call):
        return Delivery(cursor=9, epoch=2).wire()

    server = LaneServer({"deliver": lane_deliver, "poll": lane_deliver})
    address = await server.start()
    loop = asyncio.get_running_loop()
    back_at = loop.time() + 9.0

    def lane_answer(n):
        future = loop.create_future()
        if loop.time() < back_at:
            future.set_exception(RayActorError())
        else:
            future.set_result(address)
        return future

    handle = _Handle()
    handle.deliver_wire = _Method(lambda n: _done(Delivery(cursor=7, epoch=2).wire()))
    handle.lane = _Method(lane_answer)
    monkeypatch.setattr(room_ref_module, "get_room", lambda room_id, config: handle)
    ref = RoomRef("r", RoomsConfig(), GatewayLimits(watch_s=0.05), node="n")
    try:
        through_ray = 0
        deadline = loop.time() + 30
        while server.calls == 0:
            assert loop.time() < deadline, (
                f"no call over the lane; {handle.lane.calls} lane requests")
            result = await ref.deliver([], 0, "p")
            through_ray += result.cursor == 7
            await asyncio.sleep(0.2)
        assert through_ray > 0 and handle.lane.calls > 6
        assert (await ref.deliver([], 0, "p")).cursor == 9  # and it stays on the lane
    finally:
        ref.close_lane()
        server.close()
