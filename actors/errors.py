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
    └── StoreNotShared        ROOMS_STORE_URL is SQLite or memory on a multi-node cluster

The gateway answers each with one HTTP status and WebSocket close code, from one table
(:mod:`actors.gateway.errors`). None of them carries a secret; all are picklable (they
cross Ray processes: a room actor raises, a gateway replica catches).
"""

from __future__ import annotations

from rooms.errors import RoomsError

__all__ = ["AuthError", "InvalidRoomId", "NoFreeSlot", "NotOwner", "OperatorRequired",
           "RoomFull", "RoomHibernating", "RoomRuntimeError", "RoomUnavailable",
           "StoreNotShared"]


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


class OperatorRequired(RoomRuntimeError):
    """An operator route (listing rooms, reading any room) was called without an
    operator credential."""
