"""The seam to what Ray and Serve do not make public: each use of their internals (or of
the libraries they run for us) in one function here, with a fallback and a test that
names the version it was checked on (``tests/test_seam.py``), so that an upgrade fails
one clear test instead of degrading silently.

* :func:`limit_websocket_frames`: Serve runs uvicorn in each replica (its direct
  ingress behind HAProxy) and does not expose uvicorn's ``ws_max_size`` (16 MiB by
  default), so a client could make a replica buffer a 16 MiB frame before our size
  check. Checked on Ray 2.60.0 with uvicorn 0.38-0.40: Serve builds ``uvicorn.Config``
  in ``ray.serve._private.http_util.start_asgi_http_server`` *after* the deployment's
  constructor ran (``ReplicaBase.initialize`` then ``_on_initialized``), and uvicorn's
  WebSocket protocols read ``config.ws_max_size`` per connection.
"""

from __future__ import annotations

import logging

__all__ = ["limit_websocket_frames"]

log = logging.getLogger("ray_rooms.seam")

_PATCHED_ATTR = "_ray_rooms_ws_max_size"


def limit_websocket_frames(max_bytes: int) -> bool:
    """Make every uvicorn server this process starts from now on refuse WebSocket
    messages larger than ``max_bytes`` (it closes the connection with 1009, "message
    too big", RFC 6455 section 7.4.1, before buffering more than that).

    Args:
        max_bytes: the largest message, bytes (the room's message limit).

    Returns:
        ``True`` if the limit is in place; ``False`` if uvicorn is missing or no longer
        has ``Config.ws_max_size`` (then only the gateway's own size check applies,
        after the frame was read; a warning is logged).
    """
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - Serve depends on uvicorn
        log.warning("uvicorn is not installed: WebSocket frames are not limited by size")
        return False
    config_class = uvicorn.Config
    original = getattr(config_class.__init__, "__wrapped__", config_class.__init__)
    probe = config_class(app=lambda scope, receive, send: None)
    if not hasattr(probe, "ws_max_size"):
        log.warning("uvicorn.Config has no ws_max_size: WebSocket frames are not limited")
        return False

    def __init__(self, *args, **kwargs):  # noqa: N807 - the wrapped constructor
        original(self, *args, **kwargs)
        limit = getattr(config_class, _PATCHED_ATTR, None)
        if limit is not None and self.ws_max_size > limit:
            self.ws_max_size = limit

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(config_class, _PATCHED_ATTR, int(max_bytes))
    config_class.__init__ = __init__
    return True
