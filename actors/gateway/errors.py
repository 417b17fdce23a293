"""How the gateway answers each error: one HTTP status and one WebSocket close, from one
table.

========================  ======  =====  ====================================
error                     HTTP    close  reason sent with the close
========================  ======  =====  ====================================
``AuthError``             401     1008   ``unauthorized``
``InvalidRoomId``         400     1008   ``invalid room id``
``NotOwner``              403     1008   ``connection belongs to another user``
``OperatorRequired``      403     1008   ``operator only``
``RoomFull``              503     1013   ``room full``
``NoFreeSlot``            503     1013   ``no free room slot``
``RoomUnavailable``       503     1011   ``room unavailable``
``RoomHibernating``       503     1011   ``room unavailable``
``StorageUnavailable``    503     1011   ``storage unavailable``
``StoreNotShared``        500     1011   ``room error``
any other ``RoomsError``  500     1011   ``room error``
========================  ======  =====  ====================================

A 503 carries ``Retry-After: 1``; a 401 carries ``WWW-Authenticate: Bearer``. The body
is ``{"error": str(error)}`` (no error text ever holds a secret).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi.responses import JSONResponse

from rooms.errors import RoomsError
from storage.base import StorageUnavailable

from ..errors import (AuthError, InvalidRoomId, NoFreeSlot, NotOwner, OperatorRequired,
                      RoomFull, RoomHibernating, RoomUnavailable)
from .limits import CLOSE_POLICY, CLOSE_ROOM_UNAVAILABLE, CLOSE_TRY_AGAIN

__all__ = ["Answer", "answer_for", "error_frame"]


@dataclass(frozen=True, slots=True)
class Answer:
    """The gateway's answer to one kind of error.

    Attributes:
        status: the HTTP status of a route's response (or a refused handshake).
        close: the WebSocket close code of an accepted socket.
        reason: the close reason (at most 123 bytes, RFC 6455).
    """

    status: int
    close: int
    reason: str

    def response(self, error: BaseException) -> JSONResponse:
        """The HTTP response for ``error``: ``{"error": ...}`` with this status."""
        headers = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        elif self.status == 503:
            headers["Retry-After"] = "1"
        text = str(error)
        if isinstance(error, AuthError):
            text = f"unauthorized: {text}"
        return JSONResponse({"error": text}, status_code=self.status, headers=headers)


_ANSWERS: dict[type[RoomsError], Answer] = {
    AuthError: Answer(401, CLOSE_POLICY, "unauthorized"),
    InvalidRoomId: Answer(400, CLOSE_POLICY, "invalid room id"),
    NotOwner: Answer(403, CLOSE_POLICY, "connection belongs to another user"),
    OperatorRequired: Answer(403, CLOSE_POLICY, "operator only"),
    RoomFull: Answer(503, CLOSE_TRY_AGAIN, "room full"),
    NoFreeSlot: Answer(503, CLOSE_TRY_AGAIN, "no free room slot"),
    RoomUnavailable: Answer(503, CLOSE_ROOM_UNAVAILABLE, "room unavailable"),
    RoomHibernating: Answer(503, CLOSE_ROOM_UNAVAILABLE, "room unavailable"),
    StorageUnavailable: Answer(503, CLOSE_ROOM_UNAVAILABLE, "storage unavailable"),
}
_DEFAULT = Answer(500, CLOSE_ROOM_UNAVAILABLE, "room error")


def answer_for(error: RoomsError) -> Answer:
    """Return the :class:`Answer` for ``error`` (its class or nearest base in the table;
    errors Ray re-raises from a room actor keep their class)."""
    for cls in type(error).__mro__:
        answer = _ANSWERS.get(cls)
        if answer is not None:
            return answer
    return _DEFAULT


def error_frame(text: str) -> str:
    """The protocol's ``error`` message as a JSON text frame."""
    return json.dumps({"type": "error", "error": text}, separators=(",", ":"))
