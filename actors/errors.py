"""The room runtime's errors: what a room actor, the directory, the gateway and the
identity check raise. Their root is :class:`rooms.errors.RoomsError`, whose docstring
draws the whole tree::

    RoomRuntimeError          the room runtime refused a call or could not make it
    ├── RoomFull              the room has RoomsConfig.max_connections connections
    ├── NoFreeSlot            every room slot is taken by a room that may not hibernate
    ├── RoomHibernating       the room's actor is exiting; call it again through get_room
    ├── RoomUnavailable       a room call failed on every attempt (actor dead, restarting)
    ├── InvalidRoomId         (also ValueError) not 1-128 characters of [A-Za-z0-9._~-]
    ├── AuthError             (also ValueError) a credential was missing or refused
    ├── NotOwner              the connection id belongs to another identity
    ├── OperatorRequired      an operator route called without an operator credential
    ├── RoomNotGranted        a token scoped to other rooms used for this one
    ├── NotAMember            a member's route called by someone not in the room
    ├── OriginRefused         a browser credential (the session cookie) sent from a
    │                         page of another origin
    ├── QuotaExceeded         an identity is at one of its bounds (seats, users, new
    │                         rooms per minute, messages per second)
    ├── MessageRefused        the room answered an HTTP message with an error (bad
    │                         input, a bound); nothing of it was applied
    ├── SnapshotRefused       a save's record could not be encoded or passed
    │                         ROOMS_MAX_SNAPSHOT_BYTES; its turns were rolled back
    └── StoreNotShared        ROOMS_STORE_URL is SQLite or memory on a multi-node cluster

The gateway answers each with one HTTP status and WebSocket close code, from one table
(:mod:`actors.gateway.errors`). None of them carries a secret; all are picklable (they
cross Ray processes: a room actor raises, a gateway replica catches).
"""

from __future__ import annotations

from rooms.errors import RoomsError

__all__ = ["AuthError", "InvalidRoomId", "MessageRefused", "NoFreeSlot", "NotOwner", "OperatorRequired",
           "NotAMember", "OriginRefused", "QuotaExceeded", "RoomFull", "RoomNotGranted", "RoomHibernating", "RoomRuntimeError",
           "RoomUnavailable", "SnapshotRefused", "StoreNotShared"]


class RoomRuntimeError(RoomsError):
    """The room runtime refused a call or could not make it."""


class RoomFull(RoomRuntimeError):
    """The room has ``RoomsConfig.max_connections`` connections; the new one is refused
    (the gateway closes its socket with 1013 ``room full``)."""


class NoFreeSlot(RoomRuntimeError):
    """A room that has no actor (new, or hibernated) could not start: every
    ``room_slot`` of the cluster stayed taken, for ``ROOMS_SLOT_WAIT_S`` seconds, by
    rooms that may not hibernate (an AI job under way, or a turn within
    ``ROOMS_SHED_IDLE_S``). Nothing was started; the gateway closes the socket with 1013
    ``no free room slot`` (try again later)."""


class RoomHibernating(RoomRuntimeError):
    """The room is hibernating (its actor is exiting); call it again through
    :func:`actors.directory.get_room` to reactivate it."""


class RoomUnavailable(RoomRuntimeError):
    """A room call failed on every attempt (actor dead, restarting or hibernating)."""


class InvalidRoomId(RoomRuntimeError, ValueError):
    """A room id is empty, longer than 128 characters, or has characters other than
    letters, digits and ``. _ ~ -``."""


class AuthError(RoomRuntimeError, ValueError):
    """A credential was missing or refused; ``str(error)`` says why (no secrets)."""


class StoreNotShared(RoomRuntimeError):
    """``ROOMS_STORE_URL`` names a store on one machine (SQLite, memory) while the Ray
    cluster has more than one alive node; the message says what to set."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __reduce__(self):  # picklable across Ray processes
        return (type(self), (str(self),))


class NotOwner(RoomRuntimeError):
    """A connection id was used by an identity other than the one that opened it (a
    socket with another user's ``_pk``, an HTTP message with another user's ``?conn=``);
    the room is unchanged."""


class NotAMember(RoomRuntimeError):
    """A member's route (a room's transcript) was called by an identity that has no
    user or connection in the room, without an operator credential."""


class OperatorRequired(RoomRuntimeError):
    """An operator route (listing rooms, reading any room) was called without an
    operator credential."""


class QuotaExceeded(RoomRuntimeError):
    """An identity is at one of its bounds: its seats or users in a room
    (``ROOMS_MAX_SEATS_PER_IDENTITY``, ``ROOMS_MAX_USERS_PER_IDENTITY``), the rooms it may
    start per minute, or the messages it may send per second. ``str(error)`` says which
    and is safe to show; ``retry_after`` is the seconds after which trying again can
    succeed (``None``: when one of its seats or users is gone)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self):  # picklable across Ray processes
        return (type(self), (str(self), self.retry_after))


class SnapshotRefused(RoomRuntimeError):
    """The room could not save the turns of a call: their snapshot record could not be
    encoded or passed ``ROOMS_MAX_SNAPSHOT_BYTES``. They were rolled back (nothing of
    them was released) and the room goes on from its last durable state; the detail is
    logged under the error id the message names."""


class RoomNotGranted(RoomRuntimeError):
    """The caller's token is scoped to rooms (its ``rooms`` claim, as LiveKit's room
    grants) and this room is not one of them."""


class OriginRefused(RoomRuntimeError):
    """A request carried the session cookie (a credential the browser sends by
    itself) from a page whose origin is neither the gateway's own nor one of
    ``ROOMS_ALLOWED_ORIGINS``; refused, so another site cannot act as the visitor."""


class MessageRefused(RoomRuntimeError):
    """The room answered a message sent over HTTP with an ``error`` (not a valid
    message, or a turn past one of the room's bounds): nothing of it was applied.
    ``str(error)`` is the room's public text; ``error_id`` the id of the room's log
    line (the HTTP body carries the same id)."""

    def __init__(self, message: str, error_id: str | None = None) -> None:
        super().__init__(message)
        self.error_id = error_id

    def __reduce__(self):  # picklable across Ray processes
        return (type(self), (str(self), self.error_id))
