"""One client WebSocket, from handshake to close: identity, limits, relaying its frames
to the room's channel, and telling the room when it closes.

Close codes the gateway sends (besides those the room asks for, e.g. 1000
``User left``, 1011 ``heartbeat timeout``); each reason carries the error id of the
gateway's log line, ``"<reason> (<error id>)"``:

=====  ===========================================================================
1008   sustained rate-limit abuse (``"rate limit abuse"``); a ``_pk`` that another
       identity opened (``"connection belongs to another user"``: its seat stays)
1009   a message larger than ``max_message_bytes`` (sent by the WebSocket layer,
       uvicorn, before the frame is buffered; see :mod:`actors.seam`)
1011   the room could not be reached after retries (``"room unavailable"``)
1013   the room is full (``"room full"``: ``RoomsConfig.max_connections`` in the
       room, or ``max_connections_per_room`` sockets of it in this replica); the
       identity holds its seats or users of the room (``"quota exceeded"``); the
       client reads too slowly (``"client too slow"``)
=====  ===========================================================================

A refused handshake is answered with an HTTP response ``{"error", "errorId"}``, not a
close: no identity 401; a session cookie from another origin 403; a token scoped to
other rooms 403; a bad room id or
``_pk`` 400; the identity's new-room quota 429. Frames over the rate limit are
answered with an ``error`` frame and the socket stays open; every frame counts toward
it, refused ones too.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from rooms.errors import RoomsError
from rooms.messages import ProtocolError, check_socket_conn_id

from .. import metrics
from ..auth import AuthSettings, identify, origin_allowed
from ..directory import validate_room_id
from ..errors import (AuthError, NoFreeSlot, NotOwner, OriginRefused, QuotaExceeded,
                      RoomFull, RoomNotGranted)
from .channel import RoomChannel
from .errors import error_frame, public_error
from .limits import CLOSE_POLICY, CLOSE_TRY_AGAIN, NODE_HEADER, REPLICA_HEADER, GatewayLimits
from .client_socket import ClientSocket
from .quotas import IdentityQuotas
from .ratelimit import TokenBucket
from .registry import RoomRegistry

__all__ = ["refusal_reason", "serve_websocket"]

_open_sockets = 0  # this replica's accepted sockets not yet closed (a metrics gauge)

_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (NotOwner, "not_owner"), (RoomFull, "room_full"), (QuotaExceeded, "quota"),
    (NoFreeSlot, "no_slot"), (AuthError, "unauthorized"), (OriginRefused, "unauthorized"),
    (RoomNotGranted, "unauthorized"), (ProtocolError, "invalid"), (ValueError, "invalid"),
)


def refusal_reason(error: BaseException) -> str:
    """The ``reason`` tag (:data:`actors.metrics.REFUSALS`) of a refused handshake or
    connect, from its error's type (``other`` for any other)."""
    for kind, reason in _REASONS:
        if isinstance(error, kind):
            return reason
    return "other"


def _count_open(change: int) -> None:
    global _open_sockets
    _open_sockets += change
    metrics.gauge("rooms_gateway_sockets_open", _open_sockets)

log = logging.getLogger("ray_rooms.gateway")


async def serve_websocket(ws: WebSocket, room: str, registry: RoomRegistry,
                          auth: AuthSettings, limits: GatewayLimits,
                          quotas: IdentityQuotas | None = None) -> None:
    """Serve one partysocket connection to ``room`` as connection ``?_pk=`` until it
    closes (see the module docstring for the close codes).

    The handshake is refused with an HTTP response (the error's public text and id,
    :func:`~actors.gateway.errors.public_error`) when: no identity (401); a session
    cookie from another site's page (403, :func:`~actors.auth.origin_allowed`); a token
    whose ``rooms`` claim does not name the room (403); a bad
    room id or ``_pk`` (400, :func:`rooms.messages.check_socket_conn_id`: ``ai`` and
    ``http:`` ids are reserved); the identity's ``rooms_per_minute`` is spent and the
    room has no live actor (429). An accepted socket is written nothing until the room
    has accepted it as its connection id's owner (:class:`ClientSocket`, PENDING).

    Args:
        ws: the WebSocket, not yet accepted.
        room: the room id from the path.
        registry: the replica's rooms.
        auth: the identity settings.
        limits: the replica's limits.
        quotas: the replica's per-identity quotas (default: a fresh set, for tests).
    """
    query = ws.query_params
    quotas = quotas or IdentityQuotas(limits)
    try:
        identity = identify(query, ws.headers, auth, ws.cookies)
        if identity.source == "cookie" and not origin_allowed(ws.headers, auth):
            raise OriginRefused("this page's origin may not use the session cookie")
        validate_room_id(room)
        if not identity.may_enter(room):
            raise RoomNotGranted("this token does not admit this room")
        conn = query.get("_pk")
        conn = uuid.uuid4().hex if conn is None else check_socket_conn_id(conn)
        await registry.check_start(room, identity.name, quotas)
    except (RoomsError, ProtocolError) as error:
        metrics.refused(refusal_reason(error))
        await _deny(ws, public_error(error).response())
        return
    name = identity.name
    channel = registry.channel(room)
    await ws.accept(headers=[(REPLICA_HEADER.encode(), registry.replica.encode()),
                             (NODE_HEADER.encode(), registry.node.encode())])
    if channel.count() >= limits.max_connections_per_room:
        metrics.refused("room_full")
        metrics.closed(CLOSE_TRY_AGAIN)
        await ws.close(CLOSE_TRY_AGAIN, "room full")
        if not channel.sockets:
            channel.stop()
            registry.drop(channel)
        return
    sock = ClientSocket(conn, ws, limits.send_queue)
    channel.add(sock)
    code, reason, connected = 1006, "", False
    _count_open(+1)
    try:
        await channel.ready()
        if sock.sent_seq is None:
            sock.sent_seq = channel.cursor
        await channel.ref.connect(conn, name, channel.poller, sock.id)
        connected = True
        sock.admit()
        code, reason = await _relay(ws, sock, channel, registry.config.max_message_bytes,
                                    limits)
    except (WebSocketDisconnect, asyncio.CancelledError) as error:
        code = getattr(error, "code", 1006)
    except Exception as error:  # noqa: BLE001 - RoomFull, NotOwner, QuotaExceeded, ...;
        # never let one socket take the replica down
        public = public_error(error)
        if not connected:
            metrics.refused(refusal_reason(error))
        sock.close(public.answer.close, public.close_reason)
        code, reason = public.answer.close, public.close_reason
        await _wait(sock.closed, 2.0)
    finally:
        _count_open(-1)
        metrics.closed(sock.close_code[0] if sock.close_code else code)
        others = channel.remove(sock)
        sock.stop()
        if connected and not others:
            # Orange's onClose, after the socket's last frames; shielded so a
            # cancelled handler still tells the room.
            task = asyncio.ensure_future(_close_after(sock, channel, code, reason, limits))
            task.add_done_callback(_log_failure)
            try:
                await asyncio.shield(task)
            except BaseException:  # noqa: BLE001 - logged by the callback
                pass


async def _close_after(sock: ClientSocket, channel: RoomChannel, code: int, reason: str,
                       limits: GatewayLimits) -> None:
    """Tell the room that ``sock`` closed, once its queued frames have been handled
    (also across a room restart: at most ``redeliver_s`` + ``max_backoff_s`` * 4
    seconds later). The room then forgets the socket's frame numbers, so none of its
    frames may still be on the way."""
    await _wait(sock.drained, limits.redeliver_s + limits.max_backoff_s * 4)
    await channel.ref.close(sock.conn, code, reason, sock.id, sock.sent_seq)


async def _relay(ws: WebSocket, sock: ClientSocket, channel: RoomChannel, max_bytes: int,
                 limits: GatewayLimits) -> tuple[int, str]:
    """Relay the socket's frames to the room until the client closes it or the gateway
    does (``sock.closed``); returns the close ``(code, reason)``."""
    reader = asyncio.ensure_future(_read(ws, sock, channel, max_bytes, limits))
    closed = asyncio.ensure_future(sock.closed.wait())
    try:
        done, _ = await asyncio.wait({reader, closed}, return_when=asyncio.FIRST_COMPLETED)
        if reader in done:
            return reader.result()
        return sock.close_code or (1006, "connection lost")
    except asyncio.CancelledError:
        # Serve's direct ingress cancels the handler as soon as its own receive loop
        # sees the client's close frame, before our reader has read it: the close code
        # the client sent (1000, 1001, ...) is then already queued for the reader.
        # Without this every clean close reached the room and the metrics as 1006.
        code = await _queued_close(reader)
        if code is None:
            raise  # cancelled for another reason (the replica is shutting down)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # handled: the handler goes on to tell the room
        return code
    finally:
        reader.cancel()
        closed.cancel()


async def _queued_close(reader: asyncio.Future) -> tuple[int, str] | None:
    """The ``(code, reason)`` the reader returns within ``_CLOSE_READ_S`` seconds once
    the handler is cancelled (the client's close frame already received), or ``None``."""
    if not reader.done():
        await asyncio.wait({reader}, timeout=_CLOSE_READ_S)
    if reader.done() and not reader.cancelled() and reader.exception() is None:
        return reader.result()
    return None


_CLOSE_READ_S = 0.2
"""Seconds a cancelled handler waits for its reader to read a queued close frame."""


async def _read(ws: WebSocket, sock: ClientSocket, channel: RoomChannel, limit: int,
                limits: GatewayLimits) -> tuple[int, str]:
    """Read frames, apply the size and rate limits, queue the rest for the room;
    returns the client's close ``(code, reason)``."""
    quick = limit // 4  # a str of at most this many characters fits in UTF-8
    bucket = TokenBucket(limits.rate_per_s, limits.burst)
    strikes = TokenBucket(1.0, limits.abuse_strikes)
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return int(message.get("code") or 1005), str(message.get("reason") or "")
        text = message.get("text")
        data: str | bytes | None = text if text is not None else message.get("bytes")
        if data is None:
            continue
        # Every frame counts toward the rate limit and the abuse close, refused ones too.
        if not bucket.take():
            if not strikes.take():
                metrics.refused("abuse")
                sock.close(CLOSE_POLICY, "rate limit abuse")
                continue
            metrics.refused("rate")
            sock.send(error_frame(f"rate limit exceeded ({limits.rate_per_s:g} messages/s)"))
            continue
        if isinstance(data, bytes) or len(data) > quick:
            # Uvicorn's frame limit is the message limit (actors.gateway.frames); this
            # is for ingresses that read frames before us (Serve's proxy actor).
            size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) \
                else len(data)
            if size > limit:
                metrics.refused("size")
                sock.send(error_frame(f"message too large ({size} > {limit} bytes)"))
                continue
        metrics.frame_in(data)
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
