"""The public API roots of the two services the bridges call.

Kept apart from the clients (:mod:`bridges.calls`, :mod:`bridges.openai`), which import
httpx, so that :mod:`bridges.config` can default to them without importing a client.
"""

__all__ = ["CALLS_BASE_URL", "OPENAI_BASE_URL"]

CALLS_BASE_URL = "https://rtc.live.cloudflare.com/v1"
"""The Cloudflare Calls API root (``CALLS_BASE_URL`` in the environment overrides it:
:class:`bridges.config.CallsSettings`)."""

OPENAI_BASE_URL = "https://api.openai.com/v1"
"""The OpenAI API root (``OPENAI_BASE_URL`` in the environment overrides it:
:class:`bridges.config.OpenAISettings`)."""
