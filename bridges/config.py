"""Credentials and base URLs of the two services, read from the environment.

``CallsSettings`` reads ``CALLS_APP_ID``, ``CALLS_APP_SECRET``, ``CALLS_BASE_URL``;
``OpenAISettings`` reads ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_MODEL``.
Secrets are ``SecretStr``: a settings object's repr shows ``'**********'``.
``configured`` says whether the credentials are present (with none, the project runs
the local emulators instead); ``client()`` builds the bridge.

This module imports no HTTP client: a room checks ``configured`` when it starts, and a
room whose AI is not configured never imports httpx (nor, through httpx's command line,
click, rich and pygments) or websockets: ~6 MiB of a room's process and ~0.1 s of CPU
of its start (``python -m benchmarks.activation``). ``client()`` imports its bridge.

Usage::

    calls = CallsSettings()
    if calls.configured:
        bridge = calls.client()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .endpoints import CALLS_BASE_URL, OPENAI_BASE_URL

if TYPE_CHECKING:
    from .calls import CallsClient
    from .openai import RealtimeClient

__all__ = ["CallsSettings", "OpenAISettings"]


class CallsSettings(BaseSettings):
    """Cloudflare Calls settings (env ``CALLS_APP_ID``, ``CALLS_APP_SECRET``, ``CALLS_BASE_URL``).

    Attributes:
        app_id: the Calls app id, or ``None``.
        app_secret: the app secret (``SecretStr``), or ``None``.
        base_url: the API root, default ``https://rtc.live.cloudflare.com/v1``.
    """

    model_config = SettingsConfigDict(env_prefix="CALLS_", extra="ignore")

    app_id: str | None = None
    app_secret: SecretStr | None = None
    base_url: str = CALLS_BASE_URL

    @property
    def configured(self) -> bool:
        """Whether both the app id and a non-empty app secret are set."""
        return bool(self.app_id) and bool(self.app_secret and self.app_secret.get_secret_value())

    def client(self, **options: object) -> "CallsClient":
        """Return a :class:`CallsClient` for these settings.

        Args:
            **options: passed to :class:`CallsClient` (``timeout``, ``retries``,
                ``backoff``, ``max_backoff``, ``client``).

        Raises:
            ValueError: the credentials are not configured.
        """
        if not self.configured:
            raise ValueError("Cloudflare Calls is not configured: set CALLS_APP_ID and "
                             "CALLS_APP_SECRET")
        assert self.app_id is not None and self.app_secret is not None
        from .calls import CallsClient

        return CallsClient(self.app_id, self.app_secret.get_secret_value(),
                           base_url=self.base_url, **options)  # type: ignore[arg-type]


class OpenAISettings(BaseSettings):
    """OpenAI settings (env ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_MODEL``,
    ``OPENAI_VOICE_API``).

    Attributes:
        api_key: the API key (``SecretStr``), or ``None``.
        base_url: the API root, default ``https://api.openai.com/v1``.
        model: the model for new calls; ``None``: the backend's default.
        voice_api: the voice backend: ``realtime`` (Realtime calls, create-realtime-call)
            or ``live`` (the Live API, create-live).
    """

    model_config = SettingsConfigDict(env_prefix="OPENAI_", extra="ignore")

    api_key: SecretStr | None = None
    base_url: str = OPENAI_BASE_URL
    model: str | None = None
    voice_api: Literal["realtime", "live"] = "realtime"

    @property
    def model_or_default(self) -> str:
        """``model``, else the backend's default (``gpt-realtime``, ``gpt-live-1``)."""
        return self.model or ("gpt-live-1" if self.voice_api == "live" else "gpt-realtime")

    @property
    def configured(self) -> bool:
        """Whether a non-empty API key is set."""
        return bool(self.api_key and self.api_key.get_secret_value())

    def client(self, **options: object) -> "RealtimeClient":
        """Return a :class:`RealtimeClient` (or, for ``voice_api="live"``, a
        :class:`bridges.openai_live.LiveClient`) for these settings.

        Args:
            **options: passed to :class:`RealtimeClient` (``timeout``, ``retries``,
                ``backoff``, ``max_backoff``, ``client``).

        Raises:
            ValueError: the API key is not configured.
        """
        if not self.configured:
            raise ValueError("OpenAI is not configured: set OPENAI_API_KEY")
        assert self.api_key is not None
        if self.voice_api == "live":
            from .openai_live import LiveClient

            return LiveClient(self.api_key.get_secret_value(), base_url=self.base_url,
                              **options)  # type: ignore[arg-type]
        from .openai import RealtimeClient

        return RealtimeClient(self.api_key.get_secret_value(), base_url=self.base_url,
                              **options)  # type: ignore[arg-type]
