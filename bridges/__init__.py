"""The outside world behind the ports of :mod:`rooms.ports`.

* :class:`CallsClient`: Cloudflare Calls (the SFU), a :class:`rooms.ports.MediaBridge`;
* :class:`RealtimeClient`: OpenAI Realtime over WebRTC, a :class:`rooms.ports.AiService`;
* :class:`CallsSettings`, :class:`OpenAISettings`: their credentials from the environment;
* the errors they raise (:mod:`bridges.errors`), all :class:`BridgeError`;
* :func:`validate_sdp`: the check applied to every SDP a service returns.

``bridges.local`` holds the aiortc emulators of both services (import it explicitly).
"""

from rooms.ports import BridgeError, InvalidAnswer

from .calls import CALLS_BASE_URL, CallsClient
from .config import CallsSettings, OpenAISettings
from .errors import (
    CALLS_RETRYABLE_CODES,
    BridgeConnectionError,
    BridgeTimeout,
    CallsError,
    HTTPStatusError,
    OpenAIError,
    TrackError,
    is_retryable_status,
    scrub,
)
from .openai import OPENAI_BASE_URL, RealtimeClient, call_id_from_location, session_config
from .sdp import validate_sdp

__all__ = [
    "CALLS_BASE_URL",
    "CALLS_RETRYABLE_CODES",
    "OPENAI_BASE_URL",
    "BridgeConnectionError",
    "BridgeError",
    "BridgeTimeout",
    "CallsClient",
    "CallsError",
    "CallsSettings",
    "HTTPStatusError",
    "InvalidAnswer",
    "OpenAIError",
    "OpenAISettings",
    "RealtimeClient",
    "TrackError",
    "call_id_from_location",
    "is_retryable_status",
    "scrub",
    "session_config",
    "validate_sdp",
]
