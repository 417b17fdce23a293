"""Store URLs as they may be shown: without their password."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """Return the store URL ``url`` with its password replaced by ``***`` (for logs,
    errors and the Dashboard); ``"<unparseable store URL>"`` if it cannot be parsed."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable store URL>"
    if password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
