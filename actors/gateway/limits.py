"""The gateway's limits, timings and close codes (environment ``ROOMS_GATEWAY_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CLOSE_POLICY", "CLOSE_ROOM_UNAVAILABLE", "CLOSE_TRY_AGAIN", "GatewayLimits",
           "MAX_CONN_ID_CHARS", "NODE_HEADER", "REPLICA_HEADER"]

CLOSE_POLICY = 1008
"""WebSocket close code for a refused identity or sustained rate-limit abuse (RFC 6455
policy violation)."""
CLOSE_ROOM_UNAVAILABLE = 1011
"""WebSocket close code when the room cannot be reached (RFC 6455 internal error)."""
CLOSE_TRY_AGAIN = 1013
"""WebSocket close code for a full room or a too-slow client (try again later)."""

MAX_CONN_ID_CHARS = 128
"""Longest connection id (``_pk`` or ``?conn=``) accepted, in characters."""
REPLICA_HEADER = "x-rooms-replica"
"""Response header naming the replica that serves a WebSocket (for operators, tests)."""
NODE_HEADER = "x-rooms-node"
"""Response header naming the Ray node (id, hex) of that replica."""


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
        max_backoff_s: longest back-off, seconds; it bounds how long after a room's
            reactivation its held frames are sent again.
        redeliver_s: seconds a batch of frames is sent again while its room is
            unreachable (its process died and restarts) before its senders get an
            ``error``; the room applies each frame once, however often it is sent.
        wake_check_s: seconds between looks for a reactivated actor while the room
            hibernates.
        watch_s: seconds a room call may be outstanding before the replica asks the
            room which activation it runs (a call whose activation died is abandoned
            and sent again; see :mod:`actors.gateway.room_ref`).
        max_ongoing_requests: Serve's concurrency cap per replica; every open WebSocket
            counts as one ongoing request.
        max_batch: frames of one room sent in one ``RoomActor.deliver`` call.
        ws_compression: negotiate permessage-deflate (RFC 7692) with clients that offer
            it (browsers do), as Cloudflare Workers do by default (compatibility dates
            from 2023-08-15). A 16 KB ``roomState`` of 50 users with tracks is ~0.5 KB
            on the wire, but each frame is compressed once per socket (~0.09 ms a socket
            for that one on a 2-core machine: a 50-socket broadcast took 8.0 ms of
            writing with it, 3.5 ms without) and inflated by every client; off saves the
            replica's CPU where bandwidth is cheap.
        room_queue: frames of one room waiting in one replica for the next
            ``deliver`` call; past it, the sockets of the room are not read until the
            room catches up (TCP back-pressure on the clients).
        http_rate_per_s: ``POST /rooms/{room}/messages`` per second one identity may
            send to one replica, sustained (429 with ``Retry-After`` past it).
        http_burst: such messages one identity may send at once.
        rooms_per_minute: rooms one identity may start (a room with no live actor:
            new, or woken from hibernation) through one replica per minute, sustained
            (a socket is refused with HTTP 429, a message with 429 and
            ``Retry-After``); as many at once.
        max_identities: identities whose quotas one replica tracks (the least
            recently seen is forgotten first).
        malloc_arena_max: glibc malloc arenas of a replica's process
            (``MALLOC_ARENA_MAX`` in the replicas' runtime environment, mallopt(3)
            ``M_ARENA_MAX``; rooms a replica creates inherit it); 0 leaves glibc's
            default of 8 per core. A replica's threads (Ray's core worker, uvicorn,
            Serve) may each take an arena of their own by default; 2 bounds that.
            (Its growth under reconnect churn, once blamed on arenas, was Serve's
            log buffer: ``docs/guarantees.md``.) Read when the replica's process
            starts.
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
    max_backoff_s: float = Field(0.5, gt=0)
    redeliver_s: float = Field(60.0, gt=0)
    wake_check_s: float = Field(1.0, gt=0)
    watch_s: float = Field(1.0, gt=0)
    max_ongoing_requests: int = Field(10_000, ge=1)
    max_batch: int = Field(256, ge=1)
    room_queue: int = Field(4096, ge=1)
    http_rate_per_s: float = Field(20.0, gt=0)
    http_burst: int = Field(40, ge=1)
    rooms_per_minute: float = Field(20.0, gt=0)
    max_identities: int = Field(10_000, ge=1)
    ws_compression: bool = True
    malloc_arena_max: int = Field(2, ge=0)
