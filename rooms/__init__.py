"""ray-rooms' domain: the Orange Meets room protocol, the room's turn logic and the AI agent.

Plain Python: nothing here imports Ray, httpx or aiortc. The actor (:mod:`actors`) runs a
:class:`Room` per room; the bridges (:mod:`bridges`) implement :mod:`rooms.ports`.
"""

from .errors import RoomsError
from .messages import (
    AI_TRACK_NAME,
    AI_USER_ID,
    DEFAULT_MAX_MESSAGE_BYTES,
    ClientMessage,
    ProtocolError,
    RoomState,
    User,
    parse_client_message,
)
from .room import (
    ALARM_INTERVAL,
    HEARTBEAT_TIMEOUT,
    AiControlResult,
    AiEnableResult,
    AiProgress,
    Room,
)
from .state import AiState, ControlJob, Effects, EnableJob, Outgoing, ReleaseJob, RoomData

__all__ = [
    "AI_TRACK_NAME", "AI_USER_ID", "ALARM_INTERVAL", "DEFAULT_MAX_MESSAGE_BYTES",
    "HEARTBEAT_TIMEOUT", "AiControlResult", "AiEnableResult", "AiProgress", "AiState",
    "ClientMessage", "ControlJob", "Effects", "EnableJob", "Outgoing", "ProtocolError",
    "ReleaseJob", "Room", "RoomData", "RoomState", "RoomsError", "User", "parse_client_message",
]
