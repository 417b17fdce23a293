"""Build the AI agent's bridges (httpx clients) inside a room actor's process."""

from __future__ import annotations

from rooms.ports import AiService, MediaBridge

from .config import ServiceEndpoints

__all__ = ["build_services", "realtime_model"]


def build_services(endpoints: ServiceEndpoints) -> tuple[MediaBridge, AiService]:
    """Return ``(CallsClient, RealtimeClient)`` for ``endpoints``.

    Explicit fields of ``endpoints`` win; the rest come from the environment of this
    process (``CALLS_*``, ``OPENAI_*``, see :mod:`bridges.config`).

    Raises:
        ValueError: Calls or OpenAI credentials are configured nowhere.
    """
    from bridges.config import CallsSettings, OpenAISettings

    calls = CallsSettings()
    if endpoints.calls_base_url:
        calls.base_url = endpoints.calls_base_url
    if endpoints.calls_app_id:
        calls.app_id = endpoints.calls_app_id
    if endpoints.calls_app_secret is not None:
        calls.app_secret = endpoints.calls_app_secret
    openai = OpenAISettings()
    if endpoints.openai_base_url:
        openai.base_url = endpoints.openai_base_url
    if endpoints.openai_api_key is not None:
        openai.api_key = endpoints.openai_api_key
    options = {"timeout": endpoints.timeout, "retries": endpoints.retries}
    return calls.client(**options), openai.client(**options)


def realtime_model(endpoints: ServiceEndpoints) -> str:
    """Return the OpenAI Realtime model for new calls: ``endpoints.openai_model`` if
    given, else ``OPENAI_MODEL`` from this process's environment, else
    ``"gpt-realtime"`` (see :class:`bridges.config.OpenAISettings`)."""
    if endpoints.openai_model:
        return endpoints.openai_model
    from bridges.config import OpenAISettings

    return OpenAISettings().model
