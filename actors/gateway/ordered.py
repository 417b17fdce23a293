"""The ordered merge of a room's outbox entries in one replica: pure code, no Ray, no I/O.

A replica learns of a room's released entries from two paths (the result of its own
``deliver`` and its long-poll, :mod:`actors.gateway.channel`), in any interleaving. The
sockets must be written each entry once, in sequence order. :class:`OrderedMerge` holds
the replica's ``cursor`` (the newest entry fanned out) and the entries ``held`` after a
hole, and decides for each result what to fan out now and whether the sockets must be
sent the room's whole state first (a *gap*: entries they will never be sent).

The rules:

- the first result only sets the cursor (a socket that joins gets what follows);
- an entry at or before the cursor is a duplicate and is dropped;
- an entry after a hole is held until the hole fills;
- a hole that nothing can fill any more (no ``deliver`` under way, whose result
  might carry the missing entries) is a gap: resend the state, then release what is
  held, in order;
- a result marked ``gap`` by the room (its outbox no longer has what follows the
  cursor, or the cursor is ahead of the room's, after the room lost its outbox) is a
  gap too; the cursor jumps forward past the hole, or to the room's end, and never
  back (that would send entries twice) unless the room's outbox was lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..wire import Delivery, OutboxEntry

__all__ = ["Merged", "OrderedMerge"]


@dataclass(frozen=True, slots=True)
class Merged:
    """What to do with one result, in this order.

    Attributes:
        resend_state: send every socket the room's current ``roomState`` first.
        entries: the entries to fan out, in sequence order (each for the first time).
        started: this result set the first cursor (the channel can admit sockets).
    """

    resend_state: bool = False
    entries: tuple[OutboxEntry, ...] = ()
    started: bool = False


@dataclass
class OrderedMerge:
    """The cursor and held entries of one room in one replica (see the module
    docstring).

    Attributes:
        cursor: the sequence number of the newest entry fanned out (``None``: no
            result yet).
        held: entries after a hole, by sequence number.
        gaps: how many times the state had to be resent.
    """

    cursor: int | None = None
    held: dict[int, OutboxEntry] = field(default_factory=dict)
    gaps: int = 0

    def accept(self, result: Delivery | None, delivering: bool) -> Merged:
        """Merge one ``poll`` or ``deliver`` result.

        Args:
            result: the result, or ``None`` for a ``deliver`` that failed (nothing of
                it was applied; only the held entries are reconsidered).
            delivering: a ``deliver`` call of this replica is under way (its result
                may fill a hole, so held entries wait for it).

        Returns:
            A :class:`Merged`: what to send, in order.
        """
        resend = False
        out: list[OutboxEntry] = []
        if result is not None:
            if self.cursor is None:
                self.cursor = result.cursor
                return Merged(started=True)
            if result.gap:
                resend = True
                if result.entries:  # skip the hole (never back: that would send twice)
                    self.cursor = max(self.cursor, result.entries[0].seq - 1)
                else:  # the room's end; behind us only after its outbox was lost
                    if result.cursor < self.cursor:
                        self.held.clear()
                    self.cursor = result.cursor
            for entry in result.entries:
                if entry.seq > self.cursor:
                    self.held[entry.seq] = entry
            while self.cursor + 1 in self.held:
                self.cursor += 1
                out.append(self.held.pop(self.cursor))
            if not self.held and not result.entries:
                self.cursor = max(self.cursor, result.cursor)
        if self.held and not delivering and self.cursor is not None:
            # the entries before the oldest held one will not come: state heals it
            resend = True
            for seq in sorted(self.held):
                out.append(self.held.pop(seq))
                self.cursor = seq
        if resend:
            self.gaps += 1
        return Merged(resend_state=resend, entries=tuple(out))
