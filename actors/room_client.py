"""One typed client for a room actor: every caller outside the room (gateway replicas,
the CLI, slot shedding, the alarm scheduler) reaches a room through :class:`RoomClient`,
never by a method name in a string or a fact read from a dict by key.

Each method sends one Ray actor call and returns its ``ObjectRef``, typed with what
the call returns: await it in async code, or ``ray.get`` it in sync code. The
arguments and results are the wire types of :mod:`actors.wire`; the methods are
:class:`actors.room_actor.RoomActor`'s, where each is documented in full.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from .wire import (Activity, Delivery, Frame, Placement, RoomInfo, Transcript, deliver_call,
                   poll_call)

if TYPE_CHECKING:
    from ray import ObjectRef

__all__ = ["RoomClient"]

class RoomClient:
    """Typed calls to one room actor (see the module docstring).

    Args:
        handle: the room's Ray actor handle (from :func:`actors.directory.get_room`, or
            ``ray.get_actor``).
    """

    __slots__ = ("handle",)

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RoomClient) and other.handle is self.handle

    def __hash__(self) -> int:
        return id(self.handle)

    # ---- turns ---------------------------------------------------------------------

    def deliver(self, frames: Sequence[Frame], cursor: int | None,
                poller: str | None, written: int | None = None) -> "ObjectRef[list[Any]]":
        """Send a batch of client frames (``RoomActor.deliver``, called as
        ``RoomActor.deliver_wire``: one argument, a result of plain lists); the result,
        rebuilt with :meth:`Delivery.from_wire <actors.wire.Delivery.from_wire>`,
        carries the released entries after ``cursor``; ``written`` is the poller's write
        watermark (see ``RoomActor.poll``). Raises (on await) ``RoomHibernating``,
        ``StorageUnavailable``, ``NoFreeSlot``, ``SnapshotRefused`` or Ray's
        ``RayActorError``."""
        return self.handle.deliver_wire.remote(deliver_call(frames, cursor, poller, written))

    def connect(self, conn: str, name: str, poller: str | None,
                socket: str | None) -> "ObjectRef[int]":
        """Seat connection ``conn`` as user ``name`` (``RoomActor.connect``); the
        result is the outbox sequence number after the turn. Raises (on await)
        ``RoomFull``, ``NotOwner``, ``QuotaExceeded``."""
        return self.handle.connect.remote(conn, name, poller, socket)

    def message(self, conn: str, text: str | bytes, sender: str | None = None,
                key: str | None = None, refusals: bool = False) -> "ObjectRef[int]":
        """Handle one protocol message from ``conn`` (``RoomActor.message``); the
        result is the outbox sequence number after it. Raises (on await)
        ``MessageRefused`` when ``refusals`` and the room refused it."""
        return self.handle.message.remote(conn, text, sender, key, refusals=refusals)

    def close(self, conn: str, code: int, reason: str, socket: str | None,
              delivered: int | None) -> "ObjectRef[int]":
        """Tell the room that ``socket`` of ``conn`` closed with ``code``/``reason``
        after it was sent entries through ``delivered`` (``RoomActor.close``); the
        result is the outbox sequence number after the turn."""
        return self.handle.close.remote(conn, code, reason, socket, delivered)

    def alarm(self, force: bool = False) -> "ObjectRef[bool]":
        """Run the room's alarm if due (or ``force``); the result says whether it ran
        (``RoomActor.alarm``)."""
        return self.handle.alarm.remote(force=force)

    # ---- reads ---------------------------------------------------------------------

    def poll(self, cursor: int | None, timeout: float | None = None,
             poller: str | None = None, written: int | None = None) -> "ObjectRef[Delivery]":
        """Wait up to ``timeout`` seconds for entries after ``cursor`` (the long-poll,
        ``RoomActor.poll``; ``written``: the poller's write watermark)."""
        return self.handle.poll.remote(cursor, timeout, poller, written)

    def poll_wire(self, cursor: int | None, timeout: float | None = None,
                  poller: str | None = None,
                  written: int | None = None) -> "ObjectRef[list[Any]]":
        """:meth:`poll` as the gateway makes it (``RoomActor.poll_wire``: one argument,
        a result of plain lists); the result, rebuilt with
        :meth:`~actors.wire.Delivery.from_wire`, is :meth:`poll`'s."""
        return self.handle.poll_wire.remote(poll_call(cursor, timeout, poller, written))

    def state(self) -> "ObjectRef[dict[str, Any]]":
        """The room's ``RoomState`` JSON object as of its last durable snapshot (the
        protocol's own shape, sent to clients as is)."""
        return self.handle.state.remote()

    def info(self) -> "ObjectRef[RoomInfo]":
        """Operator facts of the activation (activates the room)."""
        return self.handle.info.remote()

    def transcript(self, identity: str, operator: bool = False) -> "ObjectRef[Transcript]":
        """The meeting's AI transcript for ``identity`` (``RoomActor.transcript``; its
        ``NotAMember`` unless ``identity`` is in the room or ``operator``)."""
        return self.handle.transcript.remote(identity, operator)

    # ---- without activating the room -----------------------------------------------

    def lane(self, node: str) -> "ObjectRef[list[Any] | None]":
        """The room's lane address for a caller on node ``node`` (``RoomActor.lane``:
        ``[address, token]``, or ``None`` when it offers none), for
        :meth:`actors.lane.LaneClient.connect`."""
        return self.handle.lane.remote(node)

    def activation(self) -> "ObjectRef[int]":
        """The epoch of the activation that answers (0: none yet)."""
        return self.handle.activation.remote()

    def activity(self) -> "ObjectRef[Activity]":
        """How busy the room is (for shedding)."""
        return self.handle.activity.remote()

    def where(self) -> "ObjectRef[Placement]":
        """Where the actor runs."""
        return self.handle.where.remote()

    def hibernate(self) -> "ObjectRef[bool]":
        """Save and exit if idle; ``False``: it cannot now (``RoomActor.hibernate``)."""
        return self.handle.hibernate.remote()
