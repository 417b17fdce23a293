"""The root of every error ray-rooms raises on purpose, and the whole tree.

Catch :class:`RoomsError` to catch any of them; catch a branch to catch one kind of
failure. Each class is defined in the module of the concept it belongs to (the layer
that raises it), and every one of them derives from :class:`RoomsError`::

    RoomsError                          (rooms.errors) any ray-rooms error
    ├── ProtocolError                   (rooms.messages; also ValueError) a client frame
    │                                   is not a valid message of the room protocol
    ├── BridgeError                     (rooms.ports) a call to Calls or OpenAI failed;
    │   │                               its own tree is drawn in bridges/errors.py
    │   ├── InvalidAnswer               the answer is not what the protocol promises
    │   ├── BridgeConnectionError       no HTTP answer (refused, reset); BridgeTimeout
    │   └── HTTPStatusError             an error status; CallsError, TrackError, OpenAIError
    ├── StorageError                    (storage.base) a snapshot store failed; its tree
    │   ├── StorageUnavailable          is drawn in storage/base.py
    │   ├── StaleEpoch
    │   └── SnapshotError               CorruptSnapshot, UnknownSchemaVersion
    └── RoomRuntimeError                (actors.errors) the room runtime refused or failed
        ├── RoomFull                    the room has ROOMS_MAX_CONNECTIONS connections
        ├── RoomHibernating             the room's actor is exiting; call it again
        ├── RoomUnavailable             a room call failed on every attempt
        ├── InvalidRoomId               (also ValueError) not 1-128 of [A-Za-z0-9._~-]
        ├── AuthError                   (also ValueError) a credential was refused
        ├── NotOwner                    a connection id used by another identity
        ├── OperatorRequired            an operator route without an operator
        └── StoreNotShared              a one-machine store on a multi-node cluster

No error's message holds a secret (tokens, app secrets, API keys): texts from services
are scrubbed before they enter an exception, and credentials are never formatted in.
Errors that cross Ray processes are picklable.
"""

from __future__ import annotations

__all__ = ["RoomsError"]


class RoomsError(Exception):
    """The root of every error ray-rooms raises on purpose (see the module docstring)."""
