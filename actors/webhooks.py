"""Lifecycle webhooks: a room tells a product what happened in it, as LiveKit's webhooks
do, at least once.

The events (``type``): ``meeting_started``, ``meeting_ended`` (``durationS``,
``peakUsers``), ``participant_joined`` and ``participant_left`` (``conn``, ``name``),
``ai_enabled``, ``ai_disabled``, ``ai_control_changed`` (``conn``: the user whose
microphone now feeds the AI, ``null`` when released), ``ai_error`` (``error``).

Each is derived from a turn (:func:`derive`: the room's users and AI state before and
after it, and the room's log records), and is part of that turn's durable state: the
room's snapshot holds every event not yet delivered (``state["webhooks"]``), written in
the same save as the turn, so an event is never sent before its turn is durable and
survives a SIGKILL of the room's process. After the save the room's
:class:`WebhookSender` POSTs each event, in order, to every URL of
``ROOMS_WEBHOOK_URLS``, as JSON::

    {"id": "<unique>", "type": "participant_joined", "room": "standup",
     "at": 1796118000.123, "seq": 7, "data": {"conn": "alice-pk", "name": "alice"}}

with the header ``X-Rooms-Signature: t=<unix seconds>,v1=<hex>``, where ``v1`` is the
HMAC-SHA256, keyed with ``ROOMS_WEBHOOK_SECRET``, of ``"<t>.<body>"`` (the scheme of
Stripe's webhooks; :func:`verify` checks it). A URL that does not answer 2xx is tried
again with exponential back-off (up to ``ROOMS_WEBHOOK_RETRY_MAX_S`` between tries)
until it does; later events wait behind it (order per room and URL). Delivery never
blocks a turn. A restarted room sends again what its snapshot holds, so a receiver may
get an event twice: it drops duplicates by ``id``. ``seq`` orders one room's events.
At most ``ROOMS_WEBHOOK_MAX_PENDING`` events wait per room (the oldest are dropped, with
a warning). A room that hibernates with events pending sends them when it is next
activated.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:  # imported when an event is sent: a room with no webhooks never pays it
    import httpx

__all__ = ["EVENT_TYPES", "SIGNATURE_HEADER", "Facts", "WebhookSender", "WebhookSettings",
           "derive", "facts_of", "sign", "verify"]

log = logging.getLogger("ray_rooms.webhooks")

EVENT_TYPES: tuple[str, ...] = (
    "meeting_started", "meeting_ended", "participant_joined", "participant_left",
    "ai_enabled", "ai_disabled", "ai_control_changed", "ai_error",
)
"""Every event type, in the order a meeting usually produces them."""

SIGNATURE_HEADER = "X-Rooms-Signature"


class WebhookSettings(BaseSettings):
    """Where and how rooms send their lifecycle events (environment
    ``ROOMS_WEBHOOK_*``).

    Attributes:
        urls: comma-separated URLs that receive every event (empty: no webhooks).
        secret: the HMAC-SHA256 key of the signature header (required with ``urls``).
        timeout_s: seconds one POST may take.
        retry_max_s: longest wait between two tries of a URL, seconds.
        max_pending: events waiting per room at most.
    """

    model_config = SettingsConfigDict(env_prefix="ROOMS_WEBHOOK_", extra="ignore")

    urls: str = ""
    secret: SecretStr | None = None
    timeout_s: float = Field(5.0, gt=0)
    retry_max_s: float = Field(10.0, gt=0)
    max_pending: int = Field(1000, gt=0)

    def url_list(self) -> list[str]:
        """The URLs, in order."""
        return [u.strip() for u in self.urls.split(",") if u.strip()]


@dataclass(frozen=True)
class Facts:
    """What events are derived from: a room's users (``conn -> name``), AI state and
    meeting, at one moment."""

    users: dict[str, str]
    ai_enabled: bool
    ai_controller: str | None
    meeting: str | None
    peak: int


def facts_of(data: Any) -> Facts:
    """The :class:`Facts` of a :class:`rooms.state.RoomData`."""
    return Facts(users={c: u.name for c, u in data.users.items()},
                 ai_enabled=bool(data.ai.enabled), ai_controller=data.ai.controllingUser,
                 meeting=data.meetingId, peak=int(data.peakUserCount))


def derive(before: Facts, after: Facts, records: Iterable[dict[str, Any]],
           started_at: float | None, now: float) -> list[tuple[str, dict[str, Any]]]:
    """The lifecycle events of one turn, in order: ``[(type, data)]``.

    Args:
        before, after: the room's facts before and after the turn.
        records: the turn's log records (``eventName``: ``startingMeeting``,
            ``endingMeeting``, ``aiError``, ...).
        started_at: when the current meeting started (UNIX seconds), for
            ``meeting_ended``'s duration; ``None``: unknown.
        now: the turn's time (UNIX seconds).
    """
    names = [r.get("eventName") for r in records]
    events: list[tuple[str, dict[str, Any]]] = []
    if "startingMeeting" in names or (after.meeting and after.meeting != before.meeting):
        events.append(("meeting_started", {"meetingId": after.meeting}))
    for conn, name in after.users.items():
        if conn not in before.users:
            events.append(("participant_joined", {"conn": conn, "name": name}))
    if after.ai_enabled and not before.ai_enabled:
        events.append(("ai_enabled", {}))
    if after.ai_controller != before.ai_controller:
        events.append(("ai_control_changed", {"conn": after.ai_controller}))
    for record in records:
        if record.get("eventName") == "aiError":
            events.append(("ai_error", {"error": str(record.get("error"))[:500]}))
    if before.ai_enabled and not after.ai_enabled:
        events.append(("ai_disabled", {}))
    for conn, name in before.users.items():
        if conn not in after.users:
            events.append(("participant_left", {"conn": conn, "name": name}))
    if "endingMeeting" in names:
        duration = None if started_at is None else round(max(0.0, now - started_at), 3)
        events.append(("meeting_ended", {"meetingId": before.meeting,
                                         "peakUsers": before.peak if before.peak else after.peak,
                                         "durationS": duration}))
    return events


def sign(secret: str, body: bytes, at: int | None = None) -> str:
    """The signature header's value for ``body``: ``t=<at>,v1=<hex HMAC-SHA256 of
    "<at>.<body>">`` (``at``: UNIX seconds, default now)."""
    at = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def verify(secret: str, body: bytes, header: str, tolerance_s: float = 300.0) -> bool:
    """Whether ``header`` (``X-Rooms-Signature``) signs ``body`` with ``secret`` and is
    at most ``tolerance_s`` seconds old (what a receiver checks; see
    docs/operating.md, Webhooks)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        at = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, at), f"t={at},v1={parts.get('v1', '')}")


def new_event(room: str, seq: int, kind: str, data: dict[str, Any], at: float) -> dict:
    """One event as sent and as kept in the snapshot."""
    return {"id": uuid.uuid4().hex, "type": kind, "room": room, "at": round(at, 3),
            "seq": seq, "data": data}


class WebhookSender:
    """Sends one room's released events to every URL, in order, retrying until each URL
    answers 2xx (see the module docstring); runs as one background task while events
    wait.

    Args:
        settings: the URLs, the secret and the timings.
        on_delivered: called after an event reached every URL (the room then drops it
            from its next snapshot).
        transport: an httpx transport (tests), or ``None``.

    Raises:
        ValueError: URLs without a secret.
    """

    def __init__(self, settings: WebhookSettings,
                 on_delivered: Callable[[], None] = lambda: None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.urls = settings.url_list()
        if self.urls and settings.secret is None:
            raise ValueError("ROOMS_WEBHOOK_URLS needs ROOMS_WEBHOOK_SECRET")
        self.pending: list[dict[str, Any]] = []
        self._acked: dict[str, set[str]] = {}  # event id -> URLs that answered 2xx
        self._on_delivered = on_delivered
        self._transport = transport
        self._task: asyncio.Task | None = None
        self.delivered = 0
        self.failures = 0

    def add(self, events: Iterable[dict[str, Any]]) -> None:
        """Queue released ``events`` (after their turn is durable) and make sure the
        sending task runs."""
        self.pending.extend(events)
        overflow = len(self.pending) - self.settings.max_pending
        if overflow > 0:
            log.warning("webhook events dropped: %d waiting past the bound", overflow)
            del self.pending[:overflow]
        if self.pending and self.urls and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        """Stop sending (the room is leaving its process; what waits is in its
        snapshot)."""
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        import httpx  # ~50 ms, only in the processes of rooms that send events

        secret = self.settings.secret.get_secret_value() if self.settings.secret else ""
        async with httpx.AsyncClient(timeout=self.settings.timeout_s,
                                     transport=self._transport) as http:
            while self.pending:
                event = self.pending[0]
                acked = self._acked.setdefault(event["id"], set())
                delay = 0.1
                while len(acked) < len(self.urls):
                    for url in self.urls:
                        if url not in acked and await self._post(http, url, event, secret):
                            acked.add(url)
                    if len(acked) < len(self.urls):
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, self.settings.retry_max_s)
                if self.pending and self.pending[0] is event:
                    self.pending.pop(0)
                self._acked.pop(event["id"], None)
                self.delivered += 1
                self._on_delivered()

    async def _post(self, http: httpx.AsyncClient, url: str, event: dict[str, Any],
                    secret: str) -> bool:
        import httpx

        body = json.dumps(event, separators=(",", ":")).encode()
        try:
            reply = await http.post(url, content=body, headers={
                "Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)})
        except httpx.HTTPError as error:
            self.failures += 1
            log.info("webhook to %s failed (%s)", url.split("?")[0][:200],
                     type(error).__name__, extra={"room": event.get("room")})
            return False
        if 200 <= reply.status_code < 300:
            return True
        self.failures += 1
        log.info("webhook to %s answered %d", url.split("?")[0][:200], reply.status_code,
                 extra={"room": event.get("room")})
        return False
