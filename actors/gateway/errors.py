"""How the gateway answers each error: one HTTP status, one WebSocket close and one
public text, from one table, and the one sanitizer every client-visible error goes
through.

========================  ======  =====  ====================================
error                     HTTP    close  reason sent with the close
========================  ======  =====  ====================================
``BodyTooLarge``          413     1009   ``message too big``
``ProtocolError``         400     1008   ``invalid message``
``MessageRefused``        422     1008   ``message refused``
``AuthError``             401     1008   ``unauthorized``
``InvalidRoomId``         400     1008   ``invalid room id``
``NotOwner``              403     1008   ``connection belongs to another user``
``OperatorRequired``      403     1008   ``operator only``
``NotAMember``            403     1008   ``not a member of this room``
``OriginRefused``         403     1008   ``origin refused``
``RoomNotGranted``        403     1008   ``room not granted``
``QuotaExceeded``         429     1013   ``quota exceeded``
``SnapshotRefused``       422     1011   ``message refused``
``RoomFull``              503     1013   ``room full``
``NoFreeSlot``            503     1013   ``no free room slot``
``RoomUnavailable``       503     1011   ``room unavailable``
``RoomHibernating``       503     1011   ``room unavailable``
``StorageUnavailable``    503     1011   ``storage unavailable``
``StoreNotShared``        500     1011   ``room error``
anything else             500     1011   ``room error``
========================  ======  =====  ====================================

The sanitizer (:func:`public_error`): what a client sees (an HTTP body ``{"error":
text, "errorId": id}``, an ``error`` frame, a close reason) is the error's public text
and an error id. The public text is the error's own message for the errors written for
clients (the first line of it, control characters removed, at most 300 characters;
an error Ray re-raised from a room actor is unwrapped to the room's own error first,
never its remote traceback), and a fixed text for the rest (a store's error names its
host; an unexpected error's text is not for clients). The detail (the full text,
traceback, pid, address) goes only to the gateway's log line that carries the same id.
A 503 carries ``Retry-After: 1`` (a 429 the seconds its quota names); a 401 carries
``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
from dataclasses import dataclass

from fastapi.responses import JSONResponse

from rooms.messages import ProtocolError
from storage.base import StorageUnavailable

from ..errors import (AuthError, InvalidRoomId, MessageRefused, NoFreeSlot, NotAMember, NotOwner,
                      OperatorRequired,
                      OriginRefused, RoomNotGranted, QuotaExceeded, RoomFull, RoomHibernating, RoomUnavailable,
                      SnapshotRefused, StoreNotShared)
from .limits import CLOSE_POLICY, CLOSE_ROOM_UNAVAILABLE, CLOSE_TRY_AGAIN

__all__ = ["Answer", "BodyTooLarge", "PublicError", "answer_for", "error_frame", "public_error"]

log = logging.getLogger("ray_rooms.gateway")

MAX_PUBLIC_CHARS = 300
"""Longest public error text, in characters."""

_NOT_SHOWN = re.compile(r"[\x00-\x1f\x7f-\x9f]|\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True, slots=True)
class Answer:
    """The gateway's answer to one kind of error.

    Attributes:
        status: the HTTP status of a route's response (or a refused handshake).
        close: the WebSocket close code of an accepted socket.
        reason: the close reason (the error id is appended; at most 123 bytes in all,
            RFC 6455 section 5.5).
        public: the fixed public text, or ``None`` when the error's own message is
            written for clients.
    """

    status: int
    close: int
    reason: str
    public: str | None = None


@dataclass(frozen=True, slots=True)
class PublicError:
    """What a client may see of one error, and the id of the log line with the rest.

    Attributes:
        answer: the status, close code and close reason of its kind.
        text: the public text.
        error_id: the id the gateway logged the detail under (12 hex digits).
        retry_after: seconds for ``Retry-After`` (``None``: none, or the default).
    """

    answer: Answer
    text: str
    error_id: str
    retry_after: float | None = None

    def response(self) -> JSONResponse:
        """The HTTP response: ``{"error": text, "errorId": id}`` with the status."""
        headers = {}
        if self.answer.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        elif self.answer.status == 429:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after or 1)))
        elif self.answer.status == 503:
            headers["Retry-After"] = "1"
        return JSONResponse({"error": self.text, "errorId": self.error_id},
                            status_code=self.answer.status, headers=headers)

    def frame(self) -> str:
        """The protocol's ``error`` message with this text and id, as a JSON frame."""
        return error_frame(self.text, self.error_id)

    @property
    def close_reason(self) -> str:
        """The close reason: the kind's reason and the error id (at most 123 bytes)."""
        return f"{self.answer.reason} ({self.error_id})"[:123]


class BodyTooLarge(ProtocolError):
    """An HTTP body larger than its limit (by ``Content-Length`` or as read)."""


_ANSWERS: dict[type[BaseException], Answer] = {
    BodyTooLarge: Answer(413, 1009, "message too big"),
    ProtocolError: Answer(400, CLOSE_POLICY, "invalid message"),
    MessageRefused: Answer(422, CLOSE_POLICY, "message refused"),
    AuthError: Answer(401, CLOSE_POLICY, "unauthorized"),
    InvalidRoomId: Answer(400, CLOSE_POLICY, "invalid room id"),
    NotOwner: Answer(403, CLOSE_POLICY, "connection belongs to another user"),
    OperatorRequired: Answer(403, CLOSE_POLICY, "operator only"),
    NotAMember: Answer(403, CLOSE_POLICY, "not a member of this room"),
    RoomNotGranted: Answer(403, CLOSE_POLICY, "room not granted"),
    OriginRefused: Answer(403, CLOSE_POLICY, "origin refused"),
    QuotaExceeded: Answer(429, CLOSE_TRY_AGAIN, "quota exceeded"),
    SnapshotRefused: Answer(422, CLOSE_ROOM_UNAVAILABLE, "message refused"),
    RoomFull: Answer(503, CLOSE_TRY_AGAIN, "room full"),
    NoFreeSlot: Answer(503, CLOSE_TRY_AGAIN, "no free room slot"),
    RoomUnavailable: Answer(503, CLOSE_ROOM_UNAVAILABLE, "room unavailable"),
    RoomHibernating: Answer(503, CLOSE_ROOM_UNAVAILABLE, "room unavailable",
                            "the room is unavailable; try again"),
    StorageUnavailable: Answer(503, CLOSE_ROOM_UNAVAILABLE, "storage unavailable",
                               "storage unavailable; try again"),
    StoreNotShared: Answer(500, CLOSE_ROOM_UNAVAILABLE, "room error"),
}
_DEFAULT = Answer(500, CLOSE_ROOM_UNAVAILABLE, "room error", "the room could not handle "
                  "the request")


def unwrap(error: BaseException) -> BaseException:
    """The room's own error inside an error Ray re-raised from an actor call
    (``RayTaskError`` keeps it as ``cause``), else ``error`` itself."""
    for _ in range(4):
        cause = getattr(error, "cause", None)
        if not isinstance(cause, BaseException) or cause is error:
            break
        error = cause
    return error


def answer_for(error: BaseException) -> Answer:
    """Return the :class:`Answer` for ``error`` (its class or nearest base in the table,
    after :func:`unwrap`; errors Ray re-raises from a room actor keep their class)."""
    for cls in type(unwrap(error)).__mro__:
        answer = _ANSWERS.get(cls)
        if answer is not None:
            return answer
    return _DEFAULT


def scrub(text: str) -> str:
    """``text`` fit for a client: its first line, escape codes and control characters
    removed, at most :data:`MAX_PUBLIC_CHARS` characters."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = _NOT_SHOWN.sub("", first)
    return first if len(first) <= MAX_PUBLIC_CHARS else first[:MAX_PUBLIC_CHARS] + "…"


def public_error(error: BaseException, *, level: int = logging.INFO) -> PublicError:
    """Sanitize ``error`` for a client and log its detail under a new error id.

    Args:
        error: what a route or a socket failed with (a room's error re-raised by Ray
            included).
        level: the log level of the detail line (``logging.WARNING`` and above for
            errors that are not the client's doing).

    Returns:
        The :class:`PublicError`: public text, error id, kind.
    """
    inner = unwrap(error)
    answer = answer_for(inner)
    if answer.public is not None:
        text = answer.public
    else:
        text = scrub(str(inner)) or answer.reason
        if isinstance(inner, AuthError) and not text.startswith("unauthorized"):
            text = f"unauthorized: {text}"
    error_id = getattr(inner, "error_id", None) or secrets.token_hex(6)
    if answer is _DEFAULT and level < logging.WARNING:
        level = logging.WARNING
    log.log(level, "error id %s: %s: %s", error_id, type(inner).__name__, str(error)[:4000],
            exc_info=error if level >= logging.WARNING else None,
            extra={"error_id": error_id})
    return PublicError(answer, text, error_id, getattr(inner, "retry_after", None))


def error_frame(text: str, error_id: str | None = None) -> str:
    """The protocol's ``error`` message (``{"type": "error", "error": text,
    "errorId": id}``) as a JSON text frame. Without ``error_id`` a new id is made and
    logged with ``text`` (INFO), so every error a client sees has a log line."""
    if error_id is None:
        error_id = secrets.token_hex(6)
        log.info("error id %s: %s", error_id, text[:500], extra={"error_id": error_id})
    return json.dumps({"type": "error", "error": text, "errorId": error_id},
                      separators=(",", ":"))
