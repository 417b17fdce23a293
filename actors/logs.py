"""The system's log lines: one logger-name scheme and, on request, JSON lines.

Every logger of ray-rooms is ``ray_rooms.<component>`` (``ray_rooms.room``,
``ray_rooms.gateway``, ``ray_rooms.scheduler``, ...). Each process that runs a part of
the system (a room actor, a gateway replica, a side actor, the CLI) calls
:func:`configure` once with the rooms' settings; it gives the ``ray_rooms`` logger one
handler on the process's standard error, file descriptor 2 (which Ray keeps in the worker's ``worker-*.err`` log
and streams to the driver), in one of two formats (``ROOMS_LOG_FORMAT``):

* ``text`` (default): ``LEVEL logger: message [room=... conn=... error_id=...]``;
* ``json``: one JSON object per line, ``{"ts", "level", "logger", "message"}`` and, when
  the line is about them, the fields ``room``, ``conn``, ``identity``, ``error_id`` and
  ``event`` (a room's log record's kind), plus the record's other fields (``fields``),
  and ``exc`` (the traceback) for a line logged with one. Serve's own lines of the
  gateway's replicas are JSON too then (Serve's ``logging_config.encoding``).

A field goes in with ``extra``: ``log.info("...", extra={"room": room_id,
"error_id": id})``. The ``error_id`` a client is shown (``error{errorId}``, an HTTP
``{"errorId"}``, a close reason) is the ``error_id`` of the line that holds the
detail, so an operator finds it with ``grep`` or ``jq 'select(.error_id == "...")'``.
Log lines never carry a secret.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Literal

__all__ = ["FIELDS", "LOGGER", "JsonFormatter", "TextFormatter", "configure", "get"]

LOGGER = "ray_rooms"
"""The root of every logger of the system."""

FIELDS: tuple[str, ...] = ("room", "conn", "identity", "error_id", "event")
"""The fields a line carries when it is about them (``extra=``)."""

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def get(component: str) -> logging.Logger:
    """The logger of ``component`` (``ray_rooms.<component>``)."""
    return logging.getLogger(f"{LOGGER}.{component}")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring for its keys)."""

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one line of JSON (values that JSON cannot hold as
        their ``str``)."""
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name,
            "message": record.getMessage()}
        extras = _extras(record)
        for key in FIELDS:
            if extras.get(key) is not None:
                line[key] = extras.pop(key)
        fields = extras.pop("fields", None)
        if isinstance(fields, dict):
            line["fields"] = fields
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``LEVEL logger: message [key=value ...]`` (the fields of :data:`FIELDS` that the
    line carries)."""

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one text line (a traceback on the lines after it)."""
        extras = _extras(record)
        tail = " ".join(f"{k}={extras[k]}" for k in FIELDS if extras.get(k) is not None)
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        if tail:
            text += f" [{tail}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


_configured: tuple[str, str] | None = None


def configure(log_format: Literal["text", "json"] = "text", level: str = "INFO") -> None:
    """Give the ``ray_rooms`` logger its one stderr handler in ``log_format`` at
    ``level`` (idempotent; called again with other values, it changes them).

    Args:
        log_format: ``"text"`` or ``"json"`` (``ROOMS_LOG_FORMAT``).
        level: a :mod:`logging` level name (``ROOMS_LOG_LEVEL``).

    Raises:
        ValueError: an unknown format or level.
    """
    global _configured
    if log_format not in ("text", "json"):
        raise ValueError(f"unknown log format {log_format!r} (text or json)")
    if (log_format, level) == _configured:
        return
    root = logging.getLogger(LOGGER)
    root.setLevel(level.upper())
    for handler in [h for h in root.handlers if getattr(h, "_ray_rooms", False)]:
        root.removeHandler(handler)
    # the process's file descriptor 2 itself: Serve replaces ``sys.stderr`` in its
    # replicas with a stream into its own logger, which would wrap every line again
    stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler._ray_rooms = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.propagate = False
    _configured = (log_format, level)
