"""Configuration of the room runtime, from ``ROOMS_*`` environment variables.

================================  =========================================  ===========
variable                          meaning                                    default
================================  =========================================  ===========
``ROOMS_NAMESPACE``               Ray namespace of the room actors           ``rooms``
``ROOMS_STORE_URL``               snapshot store (``sqlite:///path``,        SQLite file
                                  ``memory://name``,                         (see below)
                                  ``postgresql://user@host:port/db``)
``ROOMS_IDLE_TIMEOUT``            seconds without turns before a room        ``60``
                                  hibernates (0 disables hibernation)
``ROOMS_MAX_MESSAGE_BYTES``       client message size limit, bytes (also     ``65536``
                                  the WebSocket frame limit, and HTTP bodies)
``ROOMS_MAX_STATE_BYTES``         a room's encoded users, bytes: a turn      ``262144``
                                  that would pass it is refused
``ROOMS_MAX_SNAPSHOT_BYTES``      a room's whole snapshot record, bytes: a   ``8388608``
                                  save that would pass it is refused and
                                  its turns are rolled back
``ROOMS_MAX_USERS_PER_IDENTITY``  users one identity may have in a room      ``16``
``ROOMS_MAX_SEATS_PER_IDENTITY``  open connections one identity may hold in  ``16``
                                  a room
``ROOMS_OUTBOX_SIZE``             outgoing messages a room keeps for polls   ``1024``
``ROOMS_POLL_TIMEOUT``            seconds a gateway long-poll waits          ``25``
``ROOMS_LANE``                    a gateway replica calls a room on its own  ``true``
                                  node over a Unix socket, not a Ray call
                                  (actors.lane); false: Ray calls only
``ROOMS_STORE_RETRY_S``           seconds a room retries a failed snapshot   ``10``
                                  save before its turns fail with
                                  ``storage unavailable``
``ROOMS_MAX_LIVE_ROOMS``          room slots a node offers (the Ray          from the
                                  resource ``room_slot``), given when Ray    node's memory
                                  is started by ``rooms serve``/``demo``     (see slots)
``ROOMS_SHED_IDLE_S``             a room must be this many seconds without   ``5``
                                  a turn before it may be shed at the bound
``ROOMS_SLOT_WAIT_S``             seconds a room without an actor waits for  ``10``
                                  a free slot (shedding idle rooms) before
                                  it is refused with ``no free room slot``
``ROOMS_WARM_WORKERS``            idle worker processes per node kept        ``2``
                                  ready for new rooms (0: none)
``ROOMS_LOG_FORMAT``              log lines of every process: ``text`` or    ``text``
                                  ``json`` (:mod:`actors.logs`)
``ROOMS_LOG_LEVEL``               level of the ``ray_rooms`` loggers         ``INFO``
``ROOMS_OTEL_ENDPOINT``           OTLP/HTTP traces URL: a trace per frame    unset (off)
                                  (:mod:`actors.tracing`, extra ``otel``)
================================  =========================================  ===========

The default store is ``storage.factory.DEFAULT_STORE_URL``: a SQLite file under
``~/.local/share/ray-rooms``. The credentials of Cloudflare Calls and OpenAI are read
by :mod:`bridges.config` (``CALLS_*``, ``OPENAI_*``); a :class:`RoomsConfig` only carries
the *base URLs and credentials* when they are given explicitly (e.g. the local
emulators), as :class:`pydantic.SecretStr`, which never prints its value.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rooms.limits import RoomLimits
from rooms.sideband_wire import DEFAULT_SPEAKER_TEMPLATE
from storage.factory import DEFAULT_STORE_URL

from .webhooks import WebhookSettings

__all__ = ["RoomsConfig", "ServiceEndpoints"]


class ServiceEndpoints(BaseSettings):
    """Where the AI agent's two services are, and the credentials to use.

    Fields left ``None`` are read from the environment by :mod:`bridges.config`
    (``CALLS_APP_ID``, ``CALLS_APP_SECRET``, ``CALLS_BASE_URL``, ``OPENAI_API_KEY``,
    ``OPENAI_BASE_URL``, ``OPENAI_MODEL``, ``OPENAI_VOICE_API``) inside the room actor's
    process.
    """

    model_config = SettingsConfigDict(env_prefix="ROOMS_AI_", extra="ignore")

    calls_base_url: str | None = None
    calls_app_id: str | None = None
    calls_app_secret: SecretStr | None = None
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str | None = None
    openai_voice_api: Literal["realtime", "live"] | None = Field(
        None, description="the voice backend: realtime (calls) or live (the Live API); "
                          "None: OPENAI_VOICE_API, else realtime")
    timeout: float = Field(10.0, gt=0, description="seconds per service call")
    retries: int = Field(3, ge=0, description="times a retryable service call is repeated (attempts = retries + 1)")


class RoomsConfig(BaseSettings):
    """The room runtime's settings (see the module docstring for the variables)."""

    model_config = SettingsConfigDict(env_prefix="ROOMS_", extra="ignore")

    namespace: str = "rooms"
    store_url: str = Field(default_factory=lambda: DEFAULT_STORE_URL)
    idle_timeout: float = Field(60.0, ge=0, description="seconds; 0 disables hibernation")
    max_message_bytes: int = Field(64 * 1024, gt=0)
    max_state_bytes: int = Field(256 * 1024, gt=0)
    max_snapshot_bytes: int = Field(8 * 1024 * 1024, gt=0)
    max_users_per_identity: int = Field(16, gt=0)
    max_seats_per_identity: int = Field(16, gt=0)
    outbox_size: int = Field(1024, gt=0)
    max_connections: int = Field(
        1000, gt=0, description="connections of one room across all gateway replicas")
    poll_timeout: float = Field(25.0, gt=0)
    lane: bool = Field(
        True, description="a gateway replica calls a room on its own node over a Unix "
                          "socket (actors.lane) rather than as a Ray actor call; false: "
                          "Ray calls only")
    store_retry_s: float = Field(
        10.0, gt=0, description="seconds a room retries a failed save before its turns "
                                "fail with storage unavailable")
    max_live_rooms: int | None = Field(
        None, gt=0, description="room slots per node (None: from the node's memory)")
    shed_idle_s: float = Field(
        5.0, ge=0, description="seconds without a turn before a room may be shed")
    slot_wait_s: float = Field(
        10.0, ge=0, description="seconds a new room waits for a free slot at the bound")
    warm_workers: int = Field(
        2, ge=0, description="idle worker processes per node ready for new rooms")
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines of every ray-rooms process: text or JSON "
                            "(actors.logs)")
    log_level: str = Field("INFO", description="the level of the ray_rooms loggers")
    otel_endpoint: str = Field(
        "", description="OTLP/HTTP traces URL; spans per frame (actors.tracing); "
                        "empty: off")
    services: ServiceEndpoints = Field(default_factory=ServiceEndpoints)
    ai_speaker_template: str = Field(
        DEFAULT_SPEAKER_TEMPLATE, max_length=2000,
        description="the sentence the room adds to the AI's instructions naming who "
                    "holds control; {name} is replaced by their display name")
    ai_tools: str = Field(
        "", description="the application's AI tools: 'module:attribute' naming a list of "
                        "rooms.tools.Tool (empty: none)")
    ai_tool_timeout_s: float = Field(30.0, gt=0, description="seconds one tool call may take")
    ai_prepare: bool = Field(
        True, description="build the AI's service clients in the background once a room "
                          "is active (~0.1 s of CPU and ~5 MiB per room where Calls is "
                          "configured; their imports and TLS context are then part of "
                          "the rooms' worker preload), so enableAi does not wait for "
                          "them; false: on the first enableAi")
    ai_live_delegate_tool: str = Field(
        "", description="Live API: the tool (of ai_tools) a client delegation runs, with "
                        "the recent transcript; empty: delegations are not answered")
    webhooks: WebhookSettings = Field(
        default_factory=WebhookSettings,
        description="lifecycle webhooks (ROOMS_WEBHOOK_*, actors.webhooks)")

    def room_limits(self) -> RoomLimits:
        """The bounds a room enforces (:class:`rooms.limits.RoomLimits`) from these
        settings."""
        return RoomLimits(max_message_bytes=self.max_message_bytes,
                          max_state_bytes=self.max_state_bytes,
                          max_users_per_identity=self.max_users_per_identity,
                          max_seats_per_identity=self.max_seats_per_identity)
