"""The room actor: one :class:`rooms.Room` per Ray actor, with Durable Object semantics.

:class:`RoomActor` is a plain class (testable without Ray); :data:`RemoteRoomActor` is
its Ray actor class, created by :func:`actors.directory.get_room`.

Guarantees (docs/guarantees.md):

* **Input gate**: the room handles one event at a time (``asyncio.Lock``); an AI job that
  awaits services runs outside the gate and re-enters as a turn with its result.
* **Output gate**: the messages a turn produces, and the AI jobs it starts, are released
  only after the snapshot that contains the turn is durable. Turns that arrive while a
  save is under way share the next save (group commit).
* **Fencing**: each activation claims a new epoch; a save refused as stale means a newer
  activation exists, and this one exits without releasing anything.
* **Outbox**: released messages get consecutive sequence numbers (kept across
  activations) in a bounded :class:`~actors.outbox.Outbox` that gateways read through
  :meth:`RoomActor.deliver` results and :meth:`RoomActor.poll`.
  Messages produced but not yet released are part of the snapshot, so a crash between
  save and release loses nothing acknowledged.
* **Alarm**: one persisted alarm, run by a timer while the room is live (and by the
  alarm scheduler while it hibernates).
* **Hibernation**: after ``idle_timeout`` seconds without turns the room saves and
  exits its actor; the next call through :func:`actors.directory.get_room` reactivates
  it from its snapshot.

An activation's lifecycle is one explicit state, :class:`Lifecycle`. Every call that
runs turns goes through one path, :meth:`RoomActor._turns`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from typing import Any, Callable, Sequence

import ray

from rooms import AiControlResult, AiEnableResult, Effects, Outgoing, Room, RoomData
from rooms.ai import run_control, run_enable, run_release
from rooms.messages import encode_server_message
from rooms.ports import AiService, MediaBridge
from rooms.ports import AiSideband
from rooms.room import AiCallEnded, AiToolCall, AiToolDelivered, AiToolOutput, AiTranscript
from rooms.sideband import Sideband, session_control
from rooms.sideband_wire import DELEGATION
from rooms.state import ControlJob, EnableJob, Job, ReleaseJob, ToolCallRecord, ToolJob
from rooms.tools import ToolsError, declarations, load_tools
from storage import (SnapshotStore, StaleEpoch, StorageError, StorageUnavailable,
                     decode_snapshot, encode_snapshot, open_store)
from storage.codec import Snapshot

from . import logs, metrics, tracing
from .applied import AppliedFrames
from .cluster import check_store_fits_cluster
from .config import RoomsConfig
from .errors import (MessageRefused, NotAMember, NotOwner, QuotaExceeded, RoomFull,
                     RoomHibernating, SnapshotRefused)
from .lane import LaneServer
from .outbox import Outbox
from .services import build_services, calls_settings, realtime_model
from .tool_runner import ToolRunner, tool_runner
from .warmpool import notify_started, preloaded_at
from .webhooks import WebhookSender, derive, facts_of, new_event
from .wire import (Activity, AiFacts, Delivery, Frame, OutboxEntry, Placement, RoomInfo,
                   Transcript)

__all__ = ["Lifecycle", "RoomActor", "RoomFull", "RoomHibernating"]

log = logging.getLogger("ray_rooms.room")

Hook = Callable[[Room, float], Effects]
"""A turn: given the room and the time (UNIX s), return the turn's effects."""


class Lifecycle(enum.Enum):
    """Where one activation of a room actor is (``RoomActor.lifecycle``)::

        INACTIVE --first call--> ACTIVATING --snapshot loaded--> ACTIVE
        ACTIVATING --failed--> INACTIVE (the next call tries again)
        ACTIVE --idle--> HIBERNATING (saves, then the actor exits for good)
        ACTIVE --stale epoch or failed save--> STOPPED (the actor exits or restarts)

    In ``HIBERNATING`` and ``STOPPED`` every call is refused with
    :class:`RoomHibernating` (the caller reactivates the room through ``get_room``).
    """

    INACTIVE = "inactive"
    ACTIVATING = "activating"
    ACTIVE = "active"
    HIBERNATING = "hibernating"
    STOPPED = "stopped"


def _entry(seq: int, out: Outgoing) -> OutboxEntry:
    data = None if out.message is None else encode_server_message(out.message)
    return OutboxEntry(seq=seq, to=out.to, conn=out.conn, data=data,
                       close=(int(out.close[0]), str(out.close[1])) if out.close else None)


def _in_ray_actor() -> bool:
    """Whether this code runs inside a Ray actor (not a driver or a plain process)."""
    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


@dataclasses.dataclass
class _Stats:
    """Counters of one activation (reported by :meth:`RoomActor.info`)."""

    turns: int = 0
    saves: int = 0
    duplicate_frames: int = 0
    activated_at: float = 0.0
    last_save_s: float | None = None
    snapshot_bytes: int | None = None


class RoomActor:
    """One room, its storage, its outbox, its alarm and its AI jobs.

    Args:
        room_id: the room id.
        config: the runtime settings (default: from the environment).
        store: a snapshot store to use instead of ``config.store_url`` (tests).
        services: ``(MediaBridge, AiService)`` to use instead of building the httpx
            bridges from ``config.services`` (tests).
        clock: UNIX time in seconds (default :func:`time.time`).
    """

    def __init__(
        self,
        room_id: str,
        config: RoomsConfig | None = None,
        *,
        store: SnapshotStore | None = None,
        services: tuple[MediaBridge, AiService] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.room_id = room_id
        self.config = config or RoomsConfig()
        if _in_ray_actor():  # a process of its own: its log lines as configured
            logs.configure(self.config.log_format, self.config.log_level)
            tracing.configure(self.config.otel_endpoint, "room")
        self._save_window: tuple[int, int] | None = None  # the last save, ns (tracing)
        self._store = store
        self._services = services
        self._prepared_services: asyncio.Future | None = None  # _prepare_services
        self._clock = clock
        self._gate = asyncio.Lock()
        self.lifecycle = Lifecycle.INACTIVE
        self._activation: asyncio.Task | None = None  # while ACTIVATING
        self.room: Room | None = None  # set when ACTIVE
        self.epoch = 0
        # output gate state
        self._version = 0  # increases with every turn that changed the state
        self._durable = 0  # the newest version known durable
        # the last durable snapshot's state: {"room", "applied"} and its sequence number
        self._durable_state: tuple[dict[str, Any], int] = ({"room": {}, "applied": {}}, 0)
        self.applied = AppliedFrames()
        self._pending: deque[tuple[int, list[OutboxEntry], list[Job]]] = deque()
        self._next_seq = 1
        self._commit_task: asyncio.Task | None = None
        self.outbox = Outbox(self.config.outbox_size)
        # lifecycle webhooks (actors.webhooks): events of turns not yet durable, by
        # version; the sender holds the released ones until every URL has them
        self._staged_events: list[tuple[int, list[dict[str, Any]]]] = []
        self._sender: WebhookSender | None = None
        self._event_seq = 0
        self._meeting_started_at: float | None = None
        # timers and jobs
        self._alarm_task: asyncio.Task | None = None
        self._alarm_at: float | None = None
        self._jobs: set[asyncio.Task] = set()
        self._last_turn = time.monotonic()
        self._last_active = self._last_turn  # the last turn not the room's own alarm
        self._idle_task: asyncio.Task | None = None
        self._ai_active = False
        self._sideband: Sideband | None = None  # while the room's AI is enabled
        self._closing: set[asyncio.Task] = set()  # background work (sideband closes, ...)
        self._tools: tuple[dict, ...] | None = None  # the declared tools, loaded once
        self._local_runner: ToolRunner | None = None  # outside Ray
        self._runner: Any = None  # the rooms-tools actor's handle, once looked up
        if _in_ray_actor():  # its node's warm pool replaces the worker (off the critical path)
            threading.Thread(target=notify_started, name="warm-pool-notify",
                             daemon=True).start()
        self._stats = _Stats()
        self._save_seconds: deque[float] = deque(maxlen=1024)  # the newest saves' times
        self._lane: LaneServer | None = None  # once a gateway replica asked (lane())

    # ---- activation -------------------------------------------------------------------

    def _refuse_if_exiting(self) -> None:
        if self.lifecycle in (Lifecycle.HIBERNATING, Lifecycle.STOPPED):
            raise RoomHibernating(f"room {self.room_id!r} is hibernating")

    async def _ensure_active(self) -> Room:
        self._refuse_if_exiting()
        if self.lifecycle is not Lifecycle.ACTIVE:
            if self._activation is None:
                self.lifecycle = Lifecycle.ACTIVATING
                self._activation = asyncio.ensure_future(self._activate())
            activation = self._activation
            try:
                await asyncio.shield(activation)
            except Exception:
                if activation.done() and self._activation is activation:
                    self._activation = None  # let the next call try again
                    if self.lifecycle is Lifecycle.ACTIVATING:
                        self.lifecycle = Lifecycle.INACTIVE
                raise
            self._activation = None
        assert self.room is not None
        return self.room

    async def _activate(self) -> None:
        if self._store is None:
            check_store_fits_cluster(self.config.store_url)
            self._store = open_store(self.config.store_url)
        store = self._store
        self.epoch = await store.claim_epoch(self.room_id)
        raw = await store.load(self.room_id)
        # Everything an activation builds starts anew here: an activation retried after
        # a failed one (StorageUnavailable) must not publish the restored entries twice.
        restored: list[OutboxEntry] = []
        released = 0
        readers = None
        hooks: dict[str, Any] = {}
        self._pending.clear()
        self._next_seq = 1
        self.applied = AppliedFrames()
        if raw is None:
            data = RoomData()
        else:
            snapshot = decode_snapshot(self.room_id, raw)
            data = RoomData.model_validate(snapshot.state["room"])
            self._next_seq = snapshot.seq + 1
            restored = [OutboxEntry.from_record(r) for r in snapshot.state.get("outbox", [])]
            released = snapshot.seq - len(restored)
            self.applied = AppliedFrames(snapshot.state.get("applied"))
            readers = snapshot.state.get("readers")
            hooks = snapshot.state.get("webhooks") or {}
        self.outbox = Outbox(self.config.outbox_size, released=released, readers=readers)
        self._durable_state = ({"room": data.model_dump(mode="json", exclude_none=True),
                                "applied": self.applied.record()}, self._next_seq - 1)
        room = self._new_room(data)
        self._restore_webhooks(hooks)
        for entry in restored:  # saved, maybe never released or never read: (re)publish
            self.outbox.publish(entry)
        self._stats.activated_at = time.time()
        log.info("room %s activated (epoch %d, seq %d)", self.room_id, self.epoch,
                 self._next_seq - 1)
        metrics.room_activated(self.room_id)
        async with self._gate:
            self.room = room
            fx = room.on_start(self._clock())
            version = self._stage(fx)
        await self._commit_through(version)
        self._after_turn(fx)
        self.lifecycle = Lifecycle.ACTIVE
        self._prepare_services()
        if room.data.transcript and room.data.meetingId:  # lines the last one may not have stored
            self._background(self._store_transcript(room.data.meetingId,
                                                    list(room.data.transcript)))
        if self.config.idle_timeout > 0 and self._idle_task is None:
            self._idle_task = asyncio.ensure_future(self._idle_watch())

    # ---- turns ------------------------------------------------------------------------

    async def _turns(self, hooks: Sequence[tuple[Hook, str | None]]) -> None:
        """Run ``hooks`` as turns, one at a time through the input gate, and return once
        the snapshot holding all of them is durable (they share one save).

        Args:
            hooks: ``[(hook, kind)]``; ``kind`` names the turn for metrics (``None``:
                the type of the message the room just handled).

        Raises:
            RoomHibernating: the room is exiting; no hook ran.
            Exception: whatever a hook raised (e.g. :class:`RoomFull`); the hooks
                before it keep their effects.
        """
        room = await self._ensure_active()
        started = time.perf_counter()
        kinds: list[str] = []
        effects: list[Effects] = []
        async with self._gate:
            self._refuse_if_exiting()  # hibernate() may have taken the gate first
            version = self._version
            for hook, kind in hooks:
                now = self._clock()
                before = facts_of(room.data) if self._sender is not None else None
                fx = hook(room, now)
                kinds.append(kind or room.last_message_type)
                effects.append(fx)
                version = self._stage(fx)
                if before is not None:
                    self._stage_events(version, before, room, fx, now)
        await self._commit_through(version)
        for fx in effects:
            self._after_turn(fx)
        if any(kind != "alarm" for kind in kinds):
            self._last_active = time.monotonic()
        elapsed = (time.perf_counter() - started) / max(1, len(hooks))
        for kind in kinds:
            metrics.turn(kind, elapsed)

    async def _turn(self, hook: Hook, kind: str | None = None) -> int:
        """Run one turn (see :meth:`_turns`); return the newest outbox sequence number."""
        await self._turns([(hook, kind)])
        return self._next_seq - 1

    def _stage(self, fx: Effects) -> int:
        """Assign sequence numbers to a turn's messages and queue them behind the output
        gate. Returns the state version that must be durable before their release."""
        self._stats.turns += 1
        self._last_turn = time.monotonic()
        if fx.changed:
            self._version += 1
        for record in fx.log:
            conn = record.get("connectionId")
            owner = self.room.owner(conn) if conn and self.room is not None else None
            log.info("%s", json.dumps(record, default=str)[:2000], extra={
                "room": self.room_id, "conn": conn, "identity": owner,
                "error_id": record.get("errorId"), "event": record.get("eventName")})
        entries = []
        for out in fx.messages:
            entries.append(_entry(self._next_seq, out))
            self._next_seq += 1
        if entries or fx.jobs:
            self._pending.append((self._version, entries, list(fx.jobs)))
        self._release()
        return self._version

    async def _commit_through(self, version: int) -> None:
        while self._durable < version:
            if self._commit_task is None:
                self._commit_task = asyncio.ensure_future(self._commit())
            await asyncio.shield(self._commit_task)

    def _snapshot(self) -> tuple[int, bytes, dict[str, Any], int]:
        """The state to save now: (version, encoded record, state, sequence). The state
        is ``{"room": RoomData, "outbox": [entries], "applied": frames, "readers":
        table}`` (the readers' table: :meth:`Outbox.readers`); the entries
        are a run of consecutive sequence numbers ending at the record's sequence: the
        released ones a live gateway replica may not have read yet
        (:meth:`Outbox.unacknowledged`: a replica's long-poll may have died with the
        process), then the unreleased ones."""
        room = self.room
        assert room is not None
        unread = self.outbox.unacknowledged(2 * self.config.poll_timeout + 5.0)
        unreleased = [e.record() for e in unread]
        unreleased += [e.record() for _, entries, _ in self._pending for e in entries]
        state = {"room": room.record(),
                 "outbox": unreleased, "applied": self.applied.record(),
                 "readers": self.outbox.readers(room.data.connections)}
        if self._sender is not None:
            state["webhooks"] = self._webhooks_record()
        seq = self._next_seq - 1
        data = encode_snapshot(Snapshot(self.room_id, self.epoch, seq, state))
        return self._version, data, state, seq

    def _encoded_snapshot(self) -> tuple[int, bytes, dict[str, Any], int]:
        """:meth:`_snapshot`, refusing a record that cannot be encoded or is larger than
        ``max_snapshot_bytes``: then every turn that is not durable is rolled back
        (nothing of them was released) and the room goes on from its last durable state.

        Raises:
            SnapshotRefused: as said; its message names the error id of the log line
                that holds the detail.
        """
        try:
            snapshot = self._snapshot()
            size = len(snapshot[1])
            if size <= self.config.max_snapshot_bytes:
                return snapshot
            detail = f"{size} bytes > ROOMS_MAX_SNAPSHOT_BYTES {self.config.max_snapshot_bytes}"
        except Exception as error:  # noqa: BLE001 - what a turn put in cannot be encoded
            detail = f"{type(error).__name__}: {error}"
        error_id = secrets.token_hex(6)
        log.error("room %s: snapshot refused (error id %s): %s; the turns that are not "
                  "durable are rolled back", self.room_id, error_id, detail[:500])
        self._roll_back()
        raise SnapshotRefused(f"the room could not save this turn, so it was not applied "
                              f"(error id {error_id})")

    async def _commit(self) -> None:
        """Save the newest state (every turn staged so far) and release what it makes
        durable. A store that fails is retried with back-off for ``store_retry_s``
        seconds, taking in the turns staged meanwhile; past that the room rolls back to
        its last durable state and every waiting turn fails with
        :class:`StorageUnavailable` (nothing of them was released)."""
        assert self._store is not None
        try:
            deadline = time.monotonic() + self.config.store_retry_s
            delay = 0.05
            while True:
                started = time.perf_counter()
                began_ns = time.time_ns()
                version, data, state, seq = self._encoded_snapshot()
                try:
                    alarm_at = self.room.alarm_at if self.room is not None else None
                    await self._store.save(self.room_id, data, epoch=self.epoch,
                                           alarm_at=alarm_at)
                    break
                except StaleEpoch:
                    log.error("room %s: epoch %d is stale; a newer activation exists, "
                              "exiting", self.room_id, self.epoch)
                    self._die(restart=False)
                    raise
                except StorageError as error:
                    if time.monotonic() + delay > deadline:
                        log.error("room %s: the store failed for %.0f s (%s); back to the "
                                  "last durable state", self.room_id,
                                  self.config.store_retry_s, error)
                        self._roll_back()
                        raise StorageUnavailable(
                            f"room {self.room_id!r}: storage unavailable") from None
                    log.warning("room %s: snapshot save failed (%s); retrying in %.2f s",
                                self.room_id, error, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                except Exception:
                    log.exception("room %s: snapshot save failed; restarting from the "
                                  "last durable snapshot", self.room_id)
                    self._die(restart=True)
                    raise
            self._stats.saves += 1
            self._stats.last_save_s = time.perf_counter() - started
            self._save_window = (began_ns, time.time_ns())
            self._save_seconds.append(self._stats.last_save_s)
            self._stats.snapshot_bytes = len(data)
            metrics.snapshot_saved(len(data), self._stats.last_save_s)
            self._durable = version
            self._durable_state = (state, seq)
            self._release()
        finally:
            self._commit_task = None

    def _new_room(self, data: RoomData | None) -> Room:
        """A :class:`Room` of this room id over ``data`` with the configured bounds."""
        return Room(self.room_id, data, limits=self.config.room_limits())

    def _roll_back(self) -> None:
        """Drop every turn that is not durable: the room's state, its sequence number,
        its applied frames and its held messages and jobs go back to the last durable
        snapshot."""
        state, seq = self._durable_state
        self.room = self._new_room(RoomData.model_validate(state["room"]))
        self.applied = AppliedFrames(state["applied"])
        self._pending.clear()
        self._staged_events.clear()
        self._version = self._durable
        self._next_seq = seq + 1

    def _release(self) -> None:
        """Release, in order, every queued turn whose snapshot is durable."""
        while self._staged_events and self._staged_events[0][0] <= self._durable:
            _, events = self._staged_events.pop(0)
            if self._sender is not None:
                self._sender.add(events)
        while self._pending and self._pending[0][0] <= self._durable:
            _, entries, jobs = self._pending.popleft()
            for entry in entries:
                self.outbox.publish(entry)
            for job in jobs:
                self._start_job(job)

    def _after_turn(self, fx: Effects) -> None:
        room = self.room
        if room is None:
            return
        if room.alarm_at != self._alarm_at:
            self._arm_alarm(room.alarm_at)
        if room.data.ai.enabled != self._ai_active:
            self._ai_active = room.data.ai.enabled
            metrics.ai_session(self.room_id, self._ai_active)
        self._keep_sideband(room)

    # ---- the AI's sideband (rooms.sideband) -----------------------------------------

    def _keep_sideband(self, room: Room) -> None:
        """Make the sideband match the room's AI state after a turn: one per enabled
        call (attached on the first turn that shows it, and by a new activation whose
        snapshot shows it), steered to name whoever holds control, closed when the AI
        leaves."""
        ai = room.data.ai
        wanted = ai.callId if ai.enabled else None
        current = self._sideband
        if current is not None and current.call_id != wanted:
            self._sideband = None
            self._close_sideband_later(current)
            current = None
        if wanted is None:
            return
        if current is None:
            try:
                _, service = self._get_services()
            except Exception as error:  # noqa: BLE001 - the enable job reports it
                log.warning("room %s: no AI sideband: %s", self.room_id, error)
                return
            if not isinstance(service, AiSideband):
                log.warning("room %s: the AI service %s has no sideband; the AI is "
                            "not steered", self.room_id, type(service).__name__)
                return
            current = self._sideband = Sideband(
                wanted, service, speaker=self._ai_speaker, on_line=self._ai_line,
                on_ended=self._ai_ended, on_tool_call=self._ai_tool_call,
                on_delivered=self._ai_tool_delivered)
            current.start()
        # While control is changing hands the model hears nobody: the Calls pull that
        # feeds the next holder's track lands before the turn naming them, and what the
        # model heard then would be attributed to the previous holder.
        holder = ai.controllingUser if ai.controlPending is None else None
        name = room.data.users[holder].name if holder in room.data.users else None
        current.steer(session_control(ai.instructions, name,
                                      self.config.ai_speaker_template, self._declared_tools()))
        for call in room.data.toolCalls:
            if call.status == "done" and call.callId == wanted and call.output is not None:
                current.deliver(call.id, call.output)

    def _declared_tools(self) -> tuple[dict, ...]:
        """The ``session.tools`` of the configured tools (``ROOMS_AI_TOOLS``), loaded
        once per activation; none (and one log line) if they cannot be loaded."""
        if self._tools is None:
            try:
                self._tools = declarations(load_tools(self.config.ai_tools))
            except ToolsError as error:
                log.error("room %s: no AI tools: %s", self.room_id, error)
                self._tools = ()
        return self._tools

    async def _ai_tool_call(self, call: AiToolCall) -> None:
        """A tool call from the sideband: a turn that records it (and starts its job once
        durable). A Live delegation (:data:`rooms.sideband_wire.DELEGATION`) becomes a
        call of ``ROOMS_AI_LIVE_DELEGATE_TOOL`` with ``{"delegation_id", "transcript":
        [the newest 10 lines as "name: text"]}``."""
        def hook(room: Room, now: float) -> Effects:
            event = call
            if call.name == DELEGATION:
                tool = self.config.ai_live_delegate_tool
                if not tool:
                    log.warning("room %s: a Live delegation is not answered: "
                                "ROOMS_AI_LIVE_DELEGATE_TOOL is not set", self.room_id)
                    return Effects()
                lines = [f"{line.name or line.speaker or '?'}: {line.text}"
                         for line in room.data.transcript[-10:]]
                event = AiToolCall(call.call_id, call.tool_call_id, tool, json.dumps(
                    {"delegation_id": call.tool_call_id, "transcript": lines}))
            return room.on_ai_event(event, now)

        await self._turn(hook, "ai")

    async def _ai_tool_delivered(self, tool_call_id: str) -> None:
        delivered = AiToolDelivered(tool_call_id)
        await self._turn(lambda room, now: room.on_ai_event(delivered, now), "ai")

    async def _run_tool(self, call: ToolCallRecord) -> str:
        """Run ``call`` through the tool runner (``rooms-tools`` inside Ray, one of its
        own outside); return the output (JSON text). A runner that died is asked again
        once (Ray restarts it)."""
        args = (self.config.ai_tools, self.room_id, call.id, call.name, call.arguments,
                self.config.ai_tool_timeout_s)
        if not _in_ray_actor():
            if self._local_runner is None:
                self._local_runner = ToolRunner()
            return await self._local_runner.run(*args)
        for attempt in range(2):
            try:
                if self._runner is None:  # a GCS look-up: once, not per call
                    self._runner = tool_runner(self.config.namespace)
                return await self._runner.run.remote(*args)
            except ray.exceptions.RayActorError:
                self._runner = None
                if attempt:
                    raise
                await asyncio.sleep(0.5)
        raise AssertionError("unreachable")

    def _close_sideband_later(self, sideband: Sideband) -> None:
        """Close ``sideband`` in the background."""
        self._background(sideband.close())

    def _background(self, work: Any) -> None:
        """Run the coroutine ``work`` as a task that is kept until it is done."""
        task = asyncio.ensure_future(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _ai_speaker(self) -> str | None:
        """The connection holding the AI's control now (for the sideband)."""
        return self.room.data.ai.controllingUser if self.room is not None else None

    async def _ai_line(self, line: AiTranscript) -> None:
        """A final transcript line: a turn (the line joins the room's state and is
        broadcast once durable), then appended to the store's meeting transcript."""
        await self._turn(lambda room, now: room.on_ai_event(line, now), "ai")
        room = self.room
        line_id = f"{line.direction}:{line.item_id}"[:200]
        if room is not None and room.data.meetingId:
            kept = [l for l in room.data.transcript[-4:] if l.id == line_id]
            await self._store_transcript(room.data.meetingId, kept)

    async def _store_transcript(self, meeting_id: str, lines: list) -> None:
        """Append ``lines`` (:class:`~rooms.state.TranscriptLine`) to the store's
        transcript of ``meeting_id``. Best effort: a failure is logged, and the lines
        still in the room's snapshot are appended again by its next activation (the
        store skips line ids it has)."""
        if not lines or self._store is None:
            return
        try:
            await self._store.append_transcript(self.room_id, meeting_id, [
                (l.id, json.dumps(l.model_dump(mode="json"))) for l in lines])
        except Exception as error:  # noqa: BLE001 - the snapshot still holds the lines
            log.warning("room %s: transcript lines not stored yet: %s", self.room_id,
                        str(error)[:300])

    async def transcript(self, identity: str, operator: bool = False) -> Transcript:
        """The AI transcript of the room's meeting (the current one, else the last one
        with a transcript), from the store, with the lines the room holds that the
        store does not have yet.

        Args:
            identity: the caller's authenticated name.
            operator: the caller holds an operator credential.

        Returns:
            A :class:`~actors.wire.Transcript` (at most 10,000 lines).

        Raises:
            NotAMember: ``identity`` has no user or connection in the room and is not
                an operator.
            StorageError: the store could not be read.
        """
        room = await self._ensure_active()
        data = room.data
        if not operator and identity not in data.owners.values() \
                and identity not in data.connections.values():
            raise NotAMember("only the room's members may read its transcript")
        assert self._store is not None
        meeting, texts = await self._store.read_transcript(self.room_id, data.meetingId)
        lines = [json.loads(t) for t in texts]
        if data.meetingId is not None:
            stored = {line["id"] for line in lines}
            lines += [line.model_dump(mode="json") for line in data.transcript
                      if line.id not in stored]
        return Transcript(room=self.room_id, meetingId=meeting, lines=tuple(lines))

    async def _ai_ended(self, event: AiCallEnded) -> None:
        await self._turn(lambda room, now: room.on_ai_event(event, now), "ai")

    def _die(self, *, restart: bool) -> None:
        """Leave the process: with ``restart`` Ray restarts the actor from its snapshot;
        without, the actor exits for good (a zombie of an older epoch frees its name)."""
        metrics.room_stopped(self.room_id)
        metrics.flush_before_exit()
        self.lifecycle = Lifecycle.STOPPED
        if restart and _in_ray_actor():
            os._exit(1)
        self._exit()

    # ---- the actor's API (called by gateways, the CLI, the scheduler) --------------

    async def connect(self, conn: str, name: str, poller: str | None = None,
                      socket: str | None = None) -> int:
        """A client connected as connection ``conn`` with the authenticated ``name``.

        When ``conn`` connected before in this activation, the messages it was owed
        and did not get are sent to it again first (``to: one``, in their order, as new
        outbox entries), then the connect's own ``roomState`` (see
        :meth:`Outbox.connected`). Closes and ``roomState`` broadcasts are not replayed
        (the connect broadcasts a newer ``roomState``); nor are messages no longer in
        the outbox.

        Args:
            conn: the connection id (partysocket's ``_pk``, stable across reconnects).
            name: the authenticated user name.
            poller: the gateway poller id that serves this socket.
            socket: an id unique to this socket; a later :meth:`close` with another
                socket id is stale and ignored.

        Returns:
            The outbox sequence number of the last message released so far.

        Raises:
            NotOwner: another identity opened ``conn`` (its seat stays as it is).
            RoomFull: ``conn`` is new and the room already has ``max_connections``.
            QuotaExceeded: ``name`` holds ``max_seats_per_identity`` connections or
                ``max_users_per_identity`` users of the room already.
            RoomHibernating: the actor is exiting; reactivate through ``get_room``.
        """
        def hook(room: Room, now: float) -> Effects:
            owner = room.owner(conn)
            if owner is not None and owner != name:
                raise NotOwner(f"connection {conn[:64]!r} belongs to another user")
            connections = room.data.connections
            if conn not in connections and len(connections) >= self.config.max_connections:
                raise RoomFull(f"room {self.room_id!r} is full "
                               f"({self.config.max_connections} connections)")
            refusal = room.admit(conn, name)
            if refusal is not None:
                raise QuotaExceeded(refusal)
            owed = self.outbox.connected(conn, poller, socket)
            fx = room.on_connect(conn, name, now)
            replay = [m for m in (json.loads(e.data) for e in owed if e.data is not None)
                      if m.get("type") != "roomState"]  # the connect sends a newer one
            if replay:
                fx.messages[:0] = [Outgoing("one", conn, m) for m in replay]
            return fx

        return await self._turn(hook, "connect")

    async def message(self, conn: str, text: str | bytes, sender: str | None = None,
                      idempotency_key: str | None = None, *,
                      refusals: bool = False) -> int:
        """Handle one client frame from ``conn``; returns after its turn is durable.

        Args:
            conn: the connection id the frame acts as.
            text: the frame (a protocol message as JSON text).
            sender: the authenticated identity that sent it, when the caller has not
                checked that it owns ``conn`` (the HTTP route): it must own ``conn``, or
                ``conn`` is ``http:<sender>`` (owned from its first use). ``None``: the
                caller vouches for it (a socket whose connect was checked; the CLI).
            idempotency_key: the HTTP ``Idempotency-Key``: a message whose key the same
                identity (``sender``, else ``conn``'s owner) sent for ``conn`` before is
                not applied again (the call just returns). Each identity's keys are
                kept apart, so no identity can push another's out.
            refusals: raise :class:`MessageRefused` when the room answered the message
                with an ``error`` (the HTTP route, whose caller has no socket to hear
                it); otherwise the ``error`` goes to ``conn``'s sockets.

        Returns:
            The outbox sequence number of the last message released so far (the turn's
            replies included).

        Raises:
            NotOwner: ``sender`` does not own ``conn``; the room is unchanged.
            MessageRefused: with ``refusals``, as said; nothing of it was applied
                (the message is recorded as handled, so a retry with the same
                idempotency key is not applied either).
            RoomHibernating: the actor is exiting; reactivate through ``get_room``.
        """
        refused: dict[str, Any] | None = None

        def hook(room: Room, now: float) -> Effects:
            nonlocal refused
            if sender is not None:
                owner = room.owner(conn)
                if owner is None and conn == f"http:{sender}":
                    room.claim(conn, sender)
                elif owner != sender:
                    raise NotOwner(f"connection {conn[:64]!r} is not yours")
            if idempotency_key is not None:
                identity = sender if sender is not None else (room.owner(conn) or "")
                first = self.applied.apply_key(identity, f"{conn}\n{idempotency_key}")
                fx = self._apply_once(room, conn, text, now, first)
            else:
                fx = room.on_message(conn, text, now)
            if refusals:
                for out in fx.messages:
                    if (out.to == "one" and out.conn == conn and out.message is not None
                            and out.message.get("type") == "error"):
                        refused = out.message
            return fx

        seq = await self._turn(hook)
        if refused is not None:
            raise MessageRefused(str(refused.get("error", "refused")), refused.get("errorId"))
        return seq

    async def deliver(self, frames: Sequence[Frame] | Sequence[Sequence[Any]],
                      cursor: int | None, poller: str | None = None,
                      written: int | None = None) -> Delivery:
        """Handle a batch of client frames, in order, and return the released outbox
        entries after ``cursor`` (the gateway's batched path).

        Each frame is its own turn (one at a time through the input gate); the batch
        shares one save (group commit), and the call returns once that save is
        durable, so every entry it returns is released.

        Args:
            frames: the frames of one room as a replica received them, in order
                (:class:`~actors.wire.Frame`: ``conn, data, socket, number``, or a
                list of those fields, as :func:`~actors.wire.frames_wire` sends them; a
                numbered frame already applied is skipped, see :mod:`actors.applied`;
                a frame with no socket and number is not deduplicated).
            cursor: the last sequence number the caller has fanned out (``None``:
                return no entries, only the cursor).
            poller: the caller's poller id (one per room per gateway replica). The
                entries this call returns are *claimed* for it: that poller's
                :meth:`poll` does not wake for them (they reach it here), which saves a
                Ray call per message when the sender's replica is the only reader.
            written: the caller's write watermark, at most ``cursor``: every entry up
                to it that reaches one of its open sockets is written to that socket
                (``RoomChannel.written``). A reconnect whose socket's replica died
                without a close is owed what came after it. ``None``: ``cursor``.

        Returns:
            A :class:`~actors.wire.Delivery` (never ``hibernating``); its entries may
            repeat ones the caller already has from a poll (it deduplicates by ``seq``).

        Raises:
            RoomHibernating: the actor is exiting; reactivate through ``get_room`` and
                send the batch again (no frame of it was handled).
        """
        # activate first: an activation builds a new outbox, which must hold the cursor
        # and the claim (before, the first deliver to a new activation noted them on
        # the outbox it then replaced)
        await self._ensure_active()
        self.outbox.note_cursor(poller, cursor, written)
        # until the result is read, entries released do not wake this poller's poll
        # (the result carries them); the claim then covers exactly what it carries
        with self.outbox.claiming(poller):
            await self._turns([(self._frame_hook(*frame), None) for frame in frames])
            if tracing.enabled():
                self._trace_save(frames)
            if cursor is None:
                result = Delivery(cursor=self.outbox.released)
            else:
                result = self.outbox.since(cursor)
                self.outbox.claim(poller, result.cursor)
        return dataclasses.replace(result, epoch=self.epoch)

    async def deliver_wire(self, call: Sequence[Any]) -> list[Any]:
        """:meth:`deliver` as the gateway calls it across Ray: its arguments as one
        list and its result as lists, so that Ray packs both with msgpack and pickles
        nothing (see :mod:`actors.wire`).

        Args:
            call: ``[frames, cursor, poller, written]``
                (:func:`~actors.wire.deliver_call`), each as :meth:`deliver` takes it.

        Returns:
            :meth:`deliver`'s :class:`~actors.wire.Delivery` as
            :meth:`~actors.wire.Delivery.wire`'s lists.

        Raises:
            What :meth:`deliver` raises; ``ValueError`` or ``TypeError`` when ``call``
            is not four values.
        """
        frames, cursor, poller, written = call
        return (await self.deliver(frames, cursor, poller, written)).wire()

    def _frame_hook(self, conn: str, text: str | bytes, socket: str | None = None,
                    number: int | None = None, trace: str | None = None) -> Hook:
        """The turn of one client frame; a numbered frame is applied once (its number
        is saved with the turn, so the turn always changes the state). With tracing on,
        the turn is a ``rooms.turn`` span, a child of the frame's ``trace``."""
        def apply(room: Room, now: float) -> Effects:
            if socket is None or number is None:
                return room.on_message(conn, text, now)
            first = self.applied.apply_frame(socket, number, conn)
            return self._apply_once(room, conn, text, now, first)

        if trace is None or not tracing.enabled():
            return apply  # the hot path: no span machinery when tracing is off

        def traced(room: Room, now: float) -> Effects:
            with tracing.span("rooms.turn", parent=tracing.extract(trace),
                              attributes={"rooms.room": self.room_id, "rooms.conn": conn}):
                return apply(room, now)

        return traced

    def _trace_save(self, frames: Sequence[Frame] | Sequence[Sequence[Any]]) -> None:
        """The ``rooms.save`` span of a batch: the last save's window, a child of the
        first traced frame, linked to the others (:mod:`actors.tracing`)."""
        traces = [f[4] for f in frames if len(f) > 4 and f[4]]
        if not traces or self._save_window is None:
            return
        began, ended = self._save_window
        current = tracing.start("rooms.save", parent=tracing.extract(traces[0]),
                                links=[tracing.link_context(t) for t in traces[1:]],
                                attributes={"rooms.room": self.room_id,
                                            "rooms.frames": len(frames)},
                                start_time=began)
        if current is not None:
            current.end(end_time=ended)

    def _apply_once(self, room: Room, conn: str, text: str | bytes, now: float,
                    first: bool) -> Effects:
        """Handle a frame that :attr:`applied` has just recorded (``first``), or skip one
        it had recorded before (applied by this activation or before its restart). A
        recorded frame's turn always changes the state: the record is saved with it."""
        if not first:
            self._stats.duplicate_frames += 1
            return Effects()
        fx = room.on_message(conn, text, now)
        fx.changed = True
        return fx

    async def close(self, conn: str, code: int = 1000, reason: str = "",
                    socket: str | None = None, delivered: int | None = None) -> int:
        """The socket of ``conn`` closed (Orange's ``onClose``).

        Args:
            conn, code, reason: the connection and the close code and reason.
            socket: the closed socket's id (as given to :meth:`connect`); when ``conn``
                has connected since with another socket, this close is stale and
                changes nothing (the new socket stays).
            delivered: the sequence number of the last message the socket was sent;
                a reconnect of ``conn`` gets what came after it (see :meth:`connect`).

        Returns:
            As :meth:`connect`.
        """
        def hook(room: Room, now: float) -> Effects:
            if socket is not None:
                self.applied.forget(socket)  # the gateway sends none of its frames again
            if not self.outbox.closed(conn, socket, delivered):
                return Effects()  # a reconnect overtook this close
            return room.on_close(conn, code, reason)

        return await self._turn(hook, "close")

    async def alarm(self, *, force: bool = False) -> bool:
        """Run the room's alarm if it is due (or ``force``).

        Returns:
            ``True`` if the alarm ran.
        """
        ran = False

        def hook(room: Room, now: float) -> Effects:
            nonlocal ran
            if not force and (room.alarm_at is None or room.alarm_at > now):
                return Effects()
            ran = True
            return room.on_alarm(now)

        await self._turn(hook, "alarm")
        return ran

    async def poll(self, cursor: int | None, timeout: float | None = None,
                   poller: str | None = None, written: int | None = None) -> Delivery:
        """Wait for released messages newer than ``cursor`` (the gateway's long-poll).

        Args:
            cursor: the last sequence number the caller has, or ``None`` to start at the
                current end of the outbox.
            timeout: seconds to wait when there is nothing new (default: the configured
                poll timeout).
            poller: the caller's poller id; entries claimed by an in-flight
                :meth:`deliver` of the same poller do not wake this poll (that call
                returns them), so the result may skip over them: the caller holds
                later entries until the :meth:`deliver` result fills the hole.
            written: the caller's write watermark (see :meth:`deliver`).

        Returns:
            A :class:`~actors.wire.Delivery`. ``gap``: messages after ``cursor`` are no
            longer in the outbox (or the cursor is ahead of it), so the caller resends
            the room's state to its sockets. ``hibernating``: the room is going to
            sleep; stop polling until the next message reactivates it.
        """
        try:
            await self._ensure_active()
        except RoomHibernating:
            return Delivery(cursor=cursor or 0, hibernating=True, epoch=self.epoch)
        if cursor is None:
            return Delivery(cursor=self.outbox.released, epoch=self.epoch)
        wait = self.config.poll_timeout if timeout is None else timeout
        result = await self.outbox.wait(cursor, wait, poller,
                                        lambda: self.lifecycle is not Lifecycle.ACTIVE,
                                        written)
        return dataclasses.replace(result, epoch=self.epoch)

    async def poll_wire(self, call: Sequence[Any]) -> list[Any]:
        """:meth:`poll` as the gateway calls it across Ray: its arguments as one list
        and its result as lists, so that Ray packs both with msgpack and pickles nothing
        (see :mod:`actors.wire`).

        Args:
            call: ``[cursor, timeout, poller, written]`` (:func:`~actors.wire.poll_call`),
                each as :meth:`poll` takes it.

        Returns:
            :meth:`poll`'s :class:`~actors.wire.Delivery` as
            :meth:`~actors.wire.Delivery.wire`'s lists.

        Raises:
            What :meth:`poll` raises; ``ValueError`` or ``TypeError`` when ``call`` is
            not four values.
        """
        cursor, timeout, poller, written = call
        return (await self.poll(cursor, timeout, poller, written)).wire()

    async def lane(self, node: str) -> list[Any] | None:
        """The address of the room's lane (:mod:`actors.lane`), for a gateway replica
        on node ``node``: it then calls :meth:`deliver_wire` and :meth:`poll_wire`
        over a Unix socket rather than as Ray calls. Starts the lane's server on the
        first call; does not activate the room.

        Args:
            node: the caller's Ray node id (hex).

        Returns:
            ``[address, token]`` (what :meth:`actors.lane.LaneClient.connect` takes), or
            ``None`` when the room offers no lane to that caller: another node, lanes
            off (``ROOMS_LANE=false``), outside Ray, or the room exiting.

        Raises:
            OSError: the lane's socket could not be made.
        """
        if (not self.config.lane or not _in_ray_actor()
                or self.lifecycle in (Lifecycle.HIBERNATING, Lifecycle.STOPPED)
                or node != ray.get_runtime_context().get_node_id()):
            return None
        if self._lane is None:
            self._lane = LaneServer({"deliver": self.deliver_wire, "poll": self.poll_wire})
        return await self._lane.start()

    def activation(self) -> int:
        """The epoch this activation claimed (0 while it has none yet), without
        activating the room: a gateway asks it of a call that is taking long, to learn
        whether the activation the call went to is still the room's (see
        :meth:`actors.gateway.room_ref.RoomRef.wait`)."""
        return self.epoch

    async def state(self) -> dict[str, Any]:
        """Return the room's ``RoomState`` JSON object (what ``roomState`` carries) as of
        its last durable snapshot: like every output, a read does not show turns whose
        snapshot is not durable yet (the output gate)."""
        room = await self._ensure_active()
        if self._durable >= self._version:
            return room.room_state()
        durable = RoomData.model_validate(self._durable_state[0]["room"])
        return self._new_room(durable).room_state()

    async def info(self) -> RoomInfo:
        """Return operator facts (a :class:`~actors.wire.RoomInfo`): ids, lifecycle,
        epoch, sequence, counts, alarm, AI state, and the durations (seconds) of the
        newest snapshot saves. No secrets."""
        room = await self._ensure_active()
        ai = room.data.ai
        return RoomInfo(
            room=self.room_id, lifecycle=self.lifecycle.value, epoch=self.epoch,
            seq=self._next_seq - 1, durable_version=self._durable,
            connections=len(room.data.connections), users=len(room.data.users),
            meetingId=room.data.meetingId, peakUserCount=room.data.peakUserCount,
            alarmAt=room.alarm_at,
            ai=AiFacts(enabled=ai.enabled, connectionPending=ai.connectionPending,
                       controllingUser=ai.controllingUser, error=ai.error,
                       sideband=self._sideband.state.value if self._sideband else None,
                       sideband_attaches=self._sideband.attaches if self._sideband else 0,
                       transcript_lines=len(room.data.transcript)),
            jobs=len(self._jobs), pid=os.getpid(), recent_save_s=tuple(self._save_seconds),
            turns=self._stats.turns, saves=self._stats.saves,
            duplicate_frames=self._stats.duplicate_frames,
            activated_at=self._stats.activated_at, last_save_s=self._stats.last_save_s,
            snapshot_bytes=self._stats.snapshot_bytes,
            lane_calls=self._lane.calls if self._lane is not None else 0)

    async def hibernate(self) -> bool:
        """Save, tell the pollers, and exit the actor for good if the room is idle.

        Returns:
            ``False`` if the room cannot hibernate now (AI jobs under way, its AI
            enabled or being enabled, or its last save failed with :class:`StorageUnavailable`); ``True``
            once it has saved and its actor is exiting. (Inside Ray the actor exits
            during this call, so a remote caller sees the actor go away instead.)
        """
        room = await self._ensure_active()
        if self._jobs or room.data.ai.enabled or room.data.ai.connectionPending:
            return False  # an AI's live session would end with the activation
        async with self._gate:
            self.lifecycle = Lifecycle.HIBERNATING
            # the saved state says it hibernated: the next activation is a wake, not a
            # restart (Room.on_start); a mark, not a turn (no message, no job)
            if room.on_hibernate(self._clock()).changed:
                self._version += 1
            version = self._version
        try:
            await self._commit_through(version)
        except StorageUnavailable:  # rolled back to the last durable state, the mark too
            self.lifecycle = Lifecycle.ACTIVE  # stay up; the idle watch tries again
            return False
        self.outbox.wake()
        await asyncio.sleep(0.05)  # let the pollers' answers leave
        log.info("room %s hibernates", self.room_id)
        metrics.room_hibernated(self.room_id)
        metrics.flush_before_exit()  # a short-lived room's counts leave with it
        if self._store is not None:
            await self._store.close()  # a networked store's connection goes with it
        self._exit()
        return True

    # ---- lifecycle webhooks (actors.webhooks) ---------------------------------------

    def _restore_webhooks(self, saved: dict[str, Any]) -> None:
        """A new activation's sender, with the events the last snapshot still held."""
        if self._sender is not None:
            self._sender.stop()
        self._staged_events.clear()
        self._sender = None
        settings = self.config.webhooks
        if settings.url_list():
            self._sender = WebhookSender(settings)
            self._event_seq = int(saved.get("seq", 0))
            self._meeting_started_at = saved.get("startedAt")
            self._sender.add(list(saved.get("pending") or []))

    def _stage_events(self, version: int, before: Any, room: Room, fx: Effects,
                      now: float) -> None:
        """Derive one turn's lifecycle events; they leave with its snapshot."""
        found = derive(before, facts_of(room.data), fx.log, self._meeting_started_at, now)
        if not found:
            return
        events = []
        for kind, data in found:
            self._event_seq += 1
            events.append(new_event(self.room_id, self._event_seq, kind, data, now))
            if kind == "meeting_started":
                self._meeting_started_at = now
            elif kind == "meeting_ended":
                self._meeting_started_at = None
        if version <= self._durable and self._sender is not None:
            self._sender.add(events)  # a turn that changed nothing durable
        else:
            self._staged_events.append((version, events))

    def _webhooks_record(self) -> dict[str, Any]:
        """The snapshot's ``webhooks``: every event not yet delivered (released ones
        first, then those of turns not yet durable), the event counter, and when the
        meeting started."""
        pending = list(self._sender.pending) if self._sender is not None else []
        for _, events in self._staged_events:
            pending.extend(events)
        return {"pending": pending, "seq": self._event_seq,
                "startedAt": self._meeting_started_at}

    def _exit(self) -> None:
        """End the actor for good (Ray frees its name): stop the timers, and inside Ray
        ask the actor itself to :meth:`stop`. ``ray.actor.exit_actor()`` is meant for
        an actor method; raised here, inside a background task (a save, an alarm, an
        AI job), it would be caught by that task's error handling, and whether the
        actor exits would depend on a flag internal to Ray. As a call of its own it
        always runs in a method."""
        if self._lane is not None:
            self._lane.close()  # its callers go back to Ray, which finds the room gone
        if self._sender is not None:
            self._sender.stop()
        if self._sideband is not None:
            self._close_sideband_later(self._sideband)
            self._sideband = None
        if self._idle_task:
            self._idle_task.cancel()
        if self._alarm_task:
            self._alarm_task.cancel()
        if _in_ray_actor():
            ray.get_runtime_context().current_actor.stop.remote()

    def stop(self) -> None:
        """Exit the actor for good (Ray frees its name; it is not restarted). Called by
        the actor itself once it has hibernated or found its epoch stale; inside Ray
        only (``ray.actor.exit_actor``)."""
        self.lifecycle = (self.lifecycle if self.lifecycle is Lifecycle.HIBERNATING
                          else Lifecycle.STOPPED)
        if _in_ray_actor():
            ray.actor.exit_actor()

    def activity(self) -> Activity:
        """How busy the room is, without activating it (for shedding at the slot bound):
        an :class:`~actors.wire.Activity` whose ``idle_s`` counts the seconds since its
        last turn other than its own alarm (a client's frame, a connect or close, an AI
        job's result). The alarm's sweeps do not make a room recently active: the least
        recently active room is the one its users left quiet."""
        ai = self.room.data.ai if self.room is not None else None
        return Activity(room=self.room_id, idle_s=time.monotonic() - self._last_active,
                        jobs=len(self._jobs), lifecycle=self.lifecycle.value,
                        ai=ai is not None and (ai.enabled or ai.connectionPending))

    def where(self) -> Placement:
        """Return where this actor runs, without activating the room (a
        :class:`~actors.wire.Placement`: node id, pid, lifecycle, and when its worker
        preloaded the room runtime)."""
        node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        return Placement(node_id=node_id, pid=os.getpid(), lifecycle=self.lifecycle.value,
                         preloaded_at=preloaded_at())

    def pid(self) -> int:
        """Return the process id of this actor's worker (for operators and tests)."""
        return os.getpid()

    # ---- alarm, idle, jobs -----------------------------------------------------------

    def _arm_alarm(self, at: float | None) -> None:
        if self._alarm_task is not None:
            self._alarm_task.cancel()
            self._alarm_task = None
        self._alarm_at = at
        if at is not None:
            self._alarm_task = asyncio.ensure_future(self._alarm_after(at))

    async def _alarm_after(self, at: float) -> None:
        await asyncio.sleep(max(0.0, at - self._clock()))
        self._alarm_task = None
        self._alarm_at = None
        try:
            await self.alarm()
        except Exception:  # noqa: BLE001 - the scheduler retries persisted alarms
            log.exception("room %s: alarm failed", self.room_id)

    async def _idle_watch(self) -> None:
        timeout = self.config.idle_timeout
        while self.lifecycle is Lifecycle.ACTIVE:
            await asyncio.sleep(min(timeout, max(0.05, timeout / 4)))
            waiting = self._sender is not None and bool(self._sender.pending)
            ai = self.room.data.ai if self.room is not None else None
            waiting = waiting or (ai is not None and (ai.enabled or ai.connectionPending))
            if time.monotonic() - self._last_turn >= timeout and not self._jobs \
                    and not waiting:
                self._last_turn = time.monotonic()  # if it cannot now, wait another round
                if _in_ray_actor():  # as an actor call, so it queues like any other
                    ray.get_runtime_context().current_actor.hibernate.remote()
                else:
                    await self.hibernate()

    def _get_services(self) -> tuple[MediaBridge, AiService]:
        """The room's Calls and voice-model clients, built on first use (or taken from
        :meth:`_prepare_services` once it finished). Raises ``ValueError`` when the
        services are not configured (:func:`actors.services.build_services`)."""
        if self._services is None:
            prepared = self._prepared_services
            if prepared is not None and prepared.done() and not prepared.cancelled() \
                    and prepared.exception() is None:
                self._services = prepared.result()
            else:
                self._services = build_services(self.config.services)
        return self._services

    def _prepare_services(self) -> None:
        """Build the AI's service clients in a worker thread, off any turn, once the room
        is active (``RoomsConfig.ai_prepare``), so that ``enableAi`` finds them ready.

        Their first build imports the bridges (httpx's transport, websockets) and loads
        the TLS context: ~0.1 s of CPU here, which ``enableAi`` otherwise waited for
        (issue 23). Nothing happens when the services are not configured (no Calls or
        OpenAI credentials), when they exist already, or when preparation is off.
        Raises nothing; a failure is left for the enable job to report."""
        if (not self.config.ai_prepare or self._services is not None
                or self._prepared_services is not None):
            return
        endpoints = self.config.services
        if not calls_settings(endpoints).configured:
            return
        self._prepared_services = asyncio.ensure_future(
            asyncio.to_thread(build_services, endpoints))
        self._prepared_services.add_done_callback(
            lambda f: f.cancelled() or f.exception())  # retrieved: never "never retrieved"

    async def _services_ready(self) -> tuple[MediaBridge, AiService]:
        """:meth:`_get_services`, after waiting for a preparation under way."""
        prepared = self._prepared_services
        if self._services is None and prepared is not None and not prepared.done():
            await asyncio.wait([prepared])
        return self._get_services()

    def _start_job(self, job: Job) -> None:
        task = asyncio.ensure_future(self._run_job(job))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _run_job(self, job: Job) -> None:
        if isinstance(job, ToolJob):
            try:
                output = AiToolOutput(job.call.id, await self._run_tool(job.call))
                await self._turn(lambda room, now: room.on_ai_event(output, now), "ai")
            except RoomHibernating:
                pass
            except Exception:  # noqa: BLE001 - the next activation asks the runner again
                log.exception("room %s: tool call %s failed", self.room_id, job.call.id)
            return
        try:
            try:
                calls, ai = await self._services_ready()
            except Exception as error:  # noqa: BLE001 - a misconfiguration is an AI error
                cause = f"configuration: {type(error).__name__}: {error}"
                metrics.ai_error("configuration")
                if isinstance(job, EnableJob):
                    result = AiEnableResult(job.attempt, error=cause)
                elif isinstance(job, ControlJob):
                    result = AiControlResult(job.attempt, job.conn, error=cause,
                                             restore=job.restore)
                else:
                    raise
                await self._turn(lambda room, now: room.on_ai_event(result, now), "ai")
                return
            if isinstance(job, EnableJob):
                async def record(progress):
                    await self._turn(lambda room, now: room.on_ai_event(progress, now), "ai")

                model = realtime_model(self.config.services)
                result = await run_enable(job, calls, ai, model=model, record=record)
                if result.error:
                    metrics.ai_error(result.error)
                await self._turn(lambda room, now: room.on_ai_event(result, now), "ai")
            elif isinstance(job, ControlJob):
                if self._sideband is not None and not job.restore:
                    await self._sideband.settled(1.0)  # muted before the track changes
                result = await run_control(job, calls)
                if result.error:
                    metrics.ai_error(result.error)
                await self._turn(lambda room, now: room.on_ai_event(result, now), "ai")
            elif isinstance(job, ReleaseJob):
                for failure in await run_release(job, calls, ai):
                    metrics.ai_error(failure)
        except RoomHibernating:
            pass
        except Exception:  # noqa: BLE001
            log.exception("room %s: AI job %s failed", self.room_id, type(job).__name__)
