"""The outside world behind the ports of :mod:`rooms.ports`.

* :class:`CallsClient`: Cloudflare Calls (the SFU), a :class:`rooms.ports.MediaBridge`;
* :class:`RealtimeClient`: OpenAI Realtime over WebRTC, a :class:`rooms.ports.AiService`;
* :class:`CallsSettings`, :class:`OpenAISettings`: their credentials from the environment;
* the errors they raise (:mod:`bridges.errors`), all :class:`BridgeError`;
* :func:`validate_sdp`: the check applied to every SDP a service returns.

``bridges.local`` holds the aiortc emulators of both services (import it explicitly).

The names load on first use (:pep:`562`): importing the package, or
:mod:`bridges.config` to check whether a service is configured, imports no HTTP client.
"""

from __future__ import annotations

import importlib
from typing import Any

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

_HOMES = {
    "BridgeError": "rooms.ports", "InvalidAnswer": "rooms.ports",
    "CALLS_BASE_URL": "bridges.endpoints", "OPENAI_BASE_URL": "bridges.endpoints",
    "CallsSettings": "bridges.config", "OpenAISettings": "bridges.config",
    "CallsClient": "bridges.calls",
    "RealtimeClient": "bridges.openai", "call_id_from_location": "bridges.openai",
    "session_config": "bridges.openai",
    "validate_sdp": "bridges.sdp",
    **dict.fromkeys(("CALLS_RETRYABLE_CODES", "BridgeConnectionError", "BridgeTimeout",
                     "CallsError", "HTTPStatusError", "OpenAIError", "TrackError",
                     "is_retryable_status", "scrub"), "bridges.errors"),
}
"""The module each name of :data:`__all__` comes from."""


def __getattr__(name: str) -> Any:
    """Import the name's module (:data:`_HOMES`) on first use and return the name.

    Raises:
        AttributeError: ``name`` is not one of :data:`__all__`.
    """
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The package's names, loaded or not."""
    return sorted(set(globals()) | set(__all__))
