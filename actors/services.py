"""Build the AI agent's bridges (httpx clients) inside a room actor's process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rooms.ports import AiService, MediaBridge

from .config import ServiceEndpoints

if TYPE_CHECKING:
    from bridges.config import CallsSettings

__all__ = ["build_services", "calls_settings", "realtime_model"]


def build_services(endpoints: ServiceEndpoints) -> tuple[MediaBridge, AiService]:
    """Return ``(CallsClient, RealtimeClient)`` for ``endpoints``.

    Explicit fields of ``endpoints`` win; the rest come from the environment of this
    process (``CALLS_*``, ``OPENAI_*``, see :mod:`bridges.config`).

    Raises:
        ValueError: Calls or OpenAI credentials are configured nowhere.
    """
    from bridges.config import OpenAISettings

    calls = calls_settings(endpoints)
    openai = OpenAISettings()
    if endpoints.openai_base_url:
        openai.base_url = endpoints.openai_base_url
    if endpoints.openai_api_key is not None:
        openai.api_key = endpoints.openai_api_key
    if endpoints.openai_voice_api:
        openai.voice_api = endpoints.openai_voice_api
    options = {"timeout": endpoints.timeout, "retries": endpoints.retries}
    return calls.client(**options), openai.client(**options)


def calls_settings(endpoints: ServiceEndpoints) -> "CallsSettings":
    """Return the Cloudflare Calls settings for ``endpoints``: its explicit fields, the
    rest from this process's environment (``CALLS_*``, :class:`bridges.config.CallsSettings`).
    Raises nothing; check ``.configured`` before use."""
    from bridges.config import CallsSettings

    calls = CallsSettings()
    if endpoints.calls_base_url:
        calls.base_url = endpoints.calls_base_url
    if endpoints.calls_app_id:
        calls.app_id = endpoints.calls_app_id
    if endpoints.calls_app_secret is not None:
        calls.app_secret = endpoints.calls_app_secret
    return calls


def realtime_model(endpoints: ServiceEndpoints) -> str:
    """Return the OpenAI Realtime model for new calls: ``endpoints.openai_model`` if
    given, else ``OPENAI_MODEL`` from this process's environment, else
    the voice backend's default, ``"gpt-realtime"`` or ``"gpt-live-1"`` (see
    :class:`bridges.config.OpenAISettings`)."""
    if endpoints.openai_model:
        return endpoints.openai_model
    from bridges.config import OpenAISettings

    settings = OpenAISettings()
    if endpoints.openai_voice_api:
        settings.voice_api = endpoints.openai_voice_api
    return settings.model_or_default
