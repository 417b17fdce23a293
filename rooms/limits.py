"""The bounds a room enforces on what its clients can make it hold.

A client can only grow a room's state through its own users (``userUpdate``, a new
connection) and its HTTP sender's id; every such turn is checked against these bounds
and refused with an ``error`` to its sender when it would pass one (docs/protocol.md,
"Bad input"; docs/operating.md, "Limits"). Field lengths are capped by the protocol
models themselves (:mod:`rooms.messages`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "RoomLimits"]


@dataclass(frozen=True, slots=True)
class RoomLimits:
    """One room's bounds.

    Attributes:
        max_message_bytes: the largest client message, bytes of UTF-8 (64 KiB).
        max_state_bytes: the largest encoded ``RoomState`` the room holds, bytes (its
            users as JSON, with their connection, owner and heartbeat entries): a turn
            that would pass it is refused (256 KiB).
        max_users_per_identity: users one identity may have in the room at once (each
            ``_pk`` it opened and its ``http:`` sender's user count); a connect or a
            ``userUpdate`` that would add one more is refused (16).
        max_seats_per_identity: open connections one identity may hold in the room at
            once; the next connect is refused (16).
        transcript_lines: the newest AI transcript lines a room keeps in its state and
            snapshot (50); older lines are only in the store's transcript.
        transcript_chars: the longest transcript line kept, characters (2,000); a
            longer one is cut.
    """

    max_message_bytes: int = 64 * 1024
    max_state_bytes: int = 256 * 1024
    max_users_per_identity: int = 16
    max_seats_per_identity: int = 16
    transcript_lines: int = 50
    transcript_chars: int = 2000


DEFAULT_LIMITS = RoomLimits()
"""The defaults of :class:`RoomLimits`."""
