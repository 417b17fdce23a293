"""The alarm scheduler: runs persisted room alarms while their rooms hibernate.

A Durable Object's alarm fires even when the object is not in memory. Here a live room
runs its own alarm with a timer (:class:`actors.room_actor.RoomActor`); a hibernated
room has no process, so one detached actor per namespace, :class:`AlarmScheduler`
(named ``alarm-scheduler``), watches the snapshot store's alarm index
(:meth:`storage.base.SnapshotStore.next_alarm` / ``due_alarms``) and, when a room's
alarm is due, calls ``RoomClient(get_room(room_id, config)).alarm()``: that reactivates the
room from its snapshot, and :meth:`RoomActor.alarm` runs the alarm only if it is due.

Delivery is **at least once**:

* an alarm stays in the store until the room's alarm turn clears or moves it (the turn's
  snapshot save writes the new ``alarm_at``), so a failed wake is found again;
* a failed wake is retried with capped exponential backoff and jitter (tenacity), at most
  ``max_attempts`` times in a row, after which the room is left alone for
  ``retry_max_wait`` seconds and then picked up again from the store;
* at most one wake per room is in flight, and at most ``max_concurrency`` in total.

A live room's own timer fires at ``alarm_at``; the scheduler waits ``grace`` seconds
longer before it steps in, so live rooms normally run their alarm themselves and the
scheduler only wakes hibernated ones. Either may come first: an alarm that is no longer
due is a cheap no-op (``alarm()`` returns ``False``).

The scheduler needs a store that every process can see (a SQLite file on the node that
runs the rooms, or a networked store); a ``memory://`` store is private to one process,
so the scheduler would see no alarms.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt
from tenacity import wait_exponential, wait_random

from storage import SnapshotStore, open_store, redact_url

from . import logs
from .config import RoomsConfig

__all__ = ["SCHEDULER_NAME", "AlarmScheduler", "RemoteAlarmScheduler", "ensure_scheduler",
           "scheduler_actor_options"]

log = logging.getLogger("ray_rooms.scheduler")

SCHEDULER_NAME = "alarm-scheduler"
"""The Ray actor name of the alarm scheduler (in the rooms' namespace)."""

WakeFn = Callable[[str], Awaitable[bool]]
"""``wake(room_id) -> ran``: make the room run its alarm if due; raise on failure."""


def _retryable(error: BaseException) -> bool:
    """Every wake failure is worth another try except an invalid room id (it can never
    name an actor)."""
    from .directory import InvalidRoomId

    return not isinstance(error, InvalidRoomId)


class AlarmScheduler:
    """Wakes rooms whose persisted alarm is due (see the module docstring).

    Usable as a plain object (call :meth:`start`) or as the Ray actor
    :data:`RemoteAlarmScheduler`, where the constructor starts the loop itself (so a
    restarted scheduler resumes without anyone calling it).

    Args:
        config: the runtime settings; ``config.store_url`` is the store to watch and the
            config woken rooms are created with (default: from the environment).
        store: a snapshot store to use instead of opening ``config.store_url`` (tests).
        wake: ``async wake(room_id) -> bool`` to use instead of
            ``get_room(room_id, config).alarm.remote()`` (tests of the plain class).
        poll_interval: the longest sleep between two looks at the store, seconds; it
            bounds how late an alarm set by another process is noticed.
        grace: seconds after ``alarm_at`` before the scheduler wakes a room (a live
            room's own timer goes first).
        call_timeout: seconds one wake may take before it counts as failed.
        max_attempts: wakes tried in a row for one due alarm before backing off.
        retry_max_wait: cap of the backoff between tries, and the pause after
            ``max_attempts`` failures, seconds.
        max_concurrency: wakes in flight at once, over all rooms.
        clock: UNIX time in seconds (default :func:`time.time`).
    """

    def __init__(
        self,
        config: RoomsConfig | None = None,
        *,
        store: SnapshotStore | None = None,
        wake: WakeFn | None = None,
        poll_interval: float = 1.0,
        grace: float = 0.5,
        call_timeout: float = 30.0,
        max_attempts: int = 6,
        retry_max_wait: float = 30.0,
        max_concurrency: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if poll_interval <= 0 or grace < 0 or call_timeout <= 0 or max_attempts < 1:
            raise ValueError("poll_interval and call_timeout must be > 0, grace >= 0, "
                             "max_attempts >= 1")
        self.config = config or RoomsConfig()
        if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
            logs.configure(self.config.log_format, self.config.log_level)
        self._store = store
        self._wake_fn = wake
        self.poll_interval = poll_interval
        self.grace = grace
        self.call_timeout = call_timeout
        self.max_attempts = max_attempts
        self.retry_max_wait = retry_max_wait
        self._limit = asyncio.Semaphore(max_concurrency)
        self._clock = clock
        self._in_flight: dict[str, asyncio.Task] = {}
        self._hold: dict[str, float] = {}  # room id -> monotonic time before which to skip
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stats: dict[str, Any] = {"wakes": 0, "ran": 0, "not_due": 0, "failures": 0,
                                       "gave_up": 0, "last_error": None, "loops": 0}
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a plain object outside an event loop: the owner calls start()
        self._task = asyncio.ensure_future(self._run())

    # ---- the actor's API --------------------------------------------------------------

    async def start(self) -> bool:
        """Start the scheduling loop if it is not running.

        Returns:
            ``True`` if this call started it, ``False`` if it was already running.
        """
        if self._task is not None and not self._task.done():
            return False
        self._task = asyncio.ensure_future(self._run())
        return True

    async def stop(self) -> None:
        """Stop the loop and the wakes in flight (their alarms stay in the store), and
        close the store if the scheduler opened it."""
        tasks = [t for t in (self._task, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self._store is not None and self._owns_store:
            await self._store.close()
            self._store = None

    async def kick(self) -> None:
        """Look at the store now instead of at the next poll (e.g. after a room set an
        alarm earlier than any the scheduler knew). Returns at once."""
        if self._wakeup is not None:
            self._wakeup.set()

    async def stats(self) -> dict[str, Any]:
        """Return operator facts about the scheduler (no secrets).

        Returns:
            ``{"running": bool, "store": str (password redacted), "namespace": str,
            "in_flight": [room id], "held": [room id], "wakes": int, "ran": int,
            "not_due": int, "failures": int, "gave_up": int, "last_error": str|None,
            "loops": int, "next_alarm": float|None (UNIX s)}``; ``wakes`` counts
            completed wakes, ``ran`` those where the room ran its alarm, ``not_due``
            those where it was no longer due, ``failures`` failed tries.
        """
        next_alarm = None
        if self._store is not None:
            try:
                next_alarm = await self._store.next_alarm()
            except Exception:  # noqa: BLE001 - facts only
                pass
        now = time.monotonic()
        return {
            "running": self._task is not None and not self._task.done(),
            "store": redact_url(self.config.store_url),
            "namespace": self.config.namespace,
            "in_flight": sorted(self._in_flight),
            "held": sorted(r for r, until in self._hold.items() if until > now),
            "next_alarm": next_alarm,
            **self._stats,
        }

    # ---- the loop ------------------------------------------------------------------

    _owns_store = False

    def _open_store(self) -> SnapshotStore:
        if self._store is None:
            if self.config.store_url.startswith("memory://"):
                log.warning("alarm scheduler: store %s is private to this process; it "
                            "will see no room's alarms", self.config.store_url)
            self._store = open_store(self.config.store_url)
            self._owns_store = True
        return self._store

    async def _run(self) -> None:
        self._wakeup = asyncio.Event()
        log.info("alarm scheduler watching %s", redact_url(self.config.store_url))
        while True:
            self._wakeup.clear()
            self._stats["loops"] += 1
            delay = self.poll_interval
            try:
                store = self._open_store()
                now = self._clock()
                mono = time.monotonic()
                # a hold past its time is dropped, due or not: a room whose alarm was
                # cleared meanwhile would otherwise keep its entry for ever
                self._hold = {r: until for r, until in self._hold.items() if until > mono}
                for room_id, at in await store.due_alarms(now - self.grace):
                    if room_id in self._in_flight or self._hold.get(room_id, 0.0) > mono:
                        continue
                    self._hold.pop(room_id, None)
                    task = asyncio.ensure_future(self._fire(room_id, at))
                    self._in_flight[room_id] = task
                nxt = await store.next_alarm()
                if nxt is not None:
                    until = nxt + self.grace - self._clock()
                    if until > 0:
                        delay = min(delay, until)
                    # else: every due alarm is in flight or held; a finished wake sets
                    # the event, and held rooms are looked at again at the next poll.
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the store may come back
                self._stats["last_error"] = f"store: {type(error).__name__}: {error}"[:300]
                log.exception("alarm scheduler: reading alarms failed; retrying")
            try:
                await asyncio.wait_for(self._wakeup.wait(), max(delay, 0.005))
            except asyncio.TimeoutError:
                pass

    async def _fire(self, room_id: str, at: float) -> None:
        try:
            async with self._limit:
                # up to 1 s of jitter, within the cap: their sum is at most retry_max_wait
                jitter = min(1.0, self.retry_max_wait / 2)
                retrying = AsyncRetrying(
                    stop=stop_after_attempt(self.max_attempts),
                    wait=wait_exponential(multiplier=0.1, max=self.retry_max_wait - jitter)
                    + wait_random(0, jitter),
                    retry=retry_if_exception(_retryable),
                    before_sleep=self._log_retry(room_id),
                    reraise=True,
                )
                async for attempt in retrying:
                    with attempt:
                        ran = await self._wake_once(room_id)
            self._stats["wakes"] += 1
            if ran:
                self._stats["ran"] += 1
                log.info("alarm scheduler: room %s ran its alarm due at %.3f", room_id, at)
            else:
                # The room says it is not due (a live room's timer went first, or the
                # clocks differ): look again after a pause rather than at once.
                self._stats["not_due"] += 1
                self._hold[room_id] = time.monotonic() + self.poll_interval
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the alarm stays in the store
            self._stats["gave_up"] += 1
            self._stats["last_error"] = f"room {room_id}: {type(error).__name__}"
            self._hold[room_id] = time.monotonic() + self.retry_max_wait
            log.error("alarm scheduler: room %s: alarm due at %.3f not run after %d "
                      "tries (%s); trying again in %.0f s", room_id, at, self.max_attempts,
                      type(error).__name__, self.retry_max_wait)
        finally:
            self._in_flight.pop(room_id, None)
            if self._wakeup is not None:
                self._wakeup.set()

    def _log_retry(self, room_id: str):
        def before_sleep(state) -> None:
            self._stats["failures"] += 1
            error = state.outcome.exception() if state.outcome else None
            log.warning("alarm scheduler: waking room %s failed (%s); try %d",
                        room_id, type(error).__name__, state.attempt_number)
        return before_sleep

    async def _wake_once(self, room_id: str) -> bool:
        if self._wake_fn is not None:
            return bool(await asyncio.wait_for(self._wake_fn(room_id), self.call_timeout))
        from .directory import get_room
        from .room_client import RoomClient

        # get_room is a blocking round trip to Ray's GCS: keep it off the event loop.
        handle = await asyncio.to_thread(get_room, room_id, self.config)
        ref = RoomClient(handle).alarm()
        return bool(await asyncio.wait_for(asyncio.wrap_future(ref.future()),
                                           self.call_timeout))


def scheduler_actor_options(config: RoomsConfig, name: str = SCHEDULER_NAME) -> dict[str, Any]:
    """Return the ``.options()`` of the scheduler actor: ``name`` in ``config.namespace``,
    get-if-exists, detached, restarted for ever, no CPU reservation."""
    return {
        "name": name,
        "namespace": config.namespace,
        "get_if_exists": True,
        "lifetime": "detached",
        "max_restarts": -1,
        "max_task_retries": 0,
        "num_cpus": 0,
    }


RemoteAlarmScheduler = ray.remote(AlarmScheduler)
"""The Ray actor class of :class:`AlarmScheduler`."""


def ensure_scheduler(
    config: RoomsConfig | None = None, *, name: str = SCHEDULER_NAME, **options: Any
) -> "ray.actor.ActorHandle":
    """Get or create the namespace's alarm scheduler actor (one per namespace).

    Args:
        config: the settings a *new* scheduler is created with (its store and the
            config of the rooms it wakes; default: from the environment). An existing
            scheduler keeps its own.
        name: the actor name (default ``alarm-scheduler``; tests use their own).
        **options: keyword arguments of :class:`AlarmScheduler` for a new scheduler
            (``poll_interval``, ``grace``, ``call_timeout``, ...).

    Returns:
        The actor handle (methods ``stats``, ``kick``, ``start``, ``stop`` with
        ``.remote()``). The loop is already running in the actor; this function does
        not wait for it.

    Raises:
        ray.exceptions.RaySystemError: Ray is not initialised / reachable.
    """
    config = config or RoomsConfig()
    return RemoteAlarmScheduler.options(**scheduler_actor_options(config, name)).remote(
        config, **options)
