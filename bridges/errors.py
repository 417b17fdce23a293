"""The errors the bridges raise, and how they decide what may be retried.

Every failure of a bridge is a :class:`rooms.ports.BridgeError`; the room logic can
catch that one class, read ``service``/``operation``/``status``/``code``/``description``
to tell a user what failed and why, and ``retryable`` to decide whether trying again may
help. No message, ``str()`` or ``repr()`` ever contains a secret: every text taken from
a response or a transport error goes through :func:`scrub` first, and no exception keeps
a reference to an httpx request (whose headers carry the bearer token), so they can be
pickled across Ray processes safely.

Exception hierarchy (its root is :class:`rooms.errors.RoomsError`)::

    BridgeError (rooms.ports)       a call to an outside service failed
    ├── InvalidAnswer (rooms.ports) the answer is not what the protocol promises:
    │                               not SDP, no JSON, no sessionId, no call id in Location
    ├── BridgeConnectionError       no HTTP answer: connection refused or reset (retryable)
    │   └── BridgeTimeout           no HTTP answer within the timeout (retryable)
    └── HTTPStatusError             the service answered with an error (``status``;
        │                           ``retryable`` for 408, 429 and 5xx)
        ├── CallsError              Calls answered with an error status, or with a
        │   │                       request-level ``errorCode``/``errorDescription``
        │   │                       (also inside a 200)
        │   └── TrackError          a per-track ``errorCode`` inside a 200 (``mid``,
        │                           ``track_name``)
        └── OpenAIError             OpenAI answered with an error status; its body
                                    ``{"error": {"message", "type", "code"}}`` gives
                                    ``description`` and ``code`` (``error.code`` or else
                                    ``error.type``)

What is retryable (:func:`is_retryable_status`, :data:`CALLS_RETRYABLE_CODES`): HTTP 408,
429 and 5xx, timeouts and connection errors, and Calls' retryable error codes. Any other
4xx and an invalid answer are not. A request that *creates* something (Calls
``sessions/new`` and ``tracks/new``, OpenAI ``create-realtime-call``) is repeated only
when it provably did not reach the service or the service said it did nothing
(:func:`safe_to_repeat`): a blind repeat could leave a second session or a billed call
behind. A :class:`TrackError`'s ``retryable`` reflects its
code, but the bridges never repeat a request because of one (that would repeat the
tracks that succeeded): the caller decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from rooms.ports import BridgeError, InvalidAnswer

__all__ = [
    "CALLS_RETRYABLE_CODES",
    "BridgeConnectionError",
    "BridgeError",
    "BridgeTimeout",
    "CallsError",
    "HTTPStatusError",
    "InvalidAnswer",
    "OpenAIError",
    "TrackError",
    "is_retryable_status",
    "retrying",
    "safe_to_repeat",
    "scrub",
]

#: Calls ``errorCode`` values that report a transient fault of the SFU (the spec
#: documents ``internal_error`` = "Backend error"); a request failing with one of them at
#: request level is repeated.
CALLS_RETRYABLE_CODES: frozenset[str] = frozenset(
    {"internal_error", "service_unavailable", "rate_limited", "timeout"}
)

_REDACTED = "[redacted]"
_MAX_TEXT = 300  # characters of a response body quoted in a description

_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s\"',;}]+")
_AUTH_HEADER = re.compile(r"(?i)(authorization|api[-_]?key|secret|token)(\"?\s*[:=]\s*\"?)[^\s\"',;}]+")
_OPENAI_KEY = re.compile(r"\b(sk|ek|rk)-[A-Za-z0-9_\-]{8,}")


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return ``text`` without secrets, shortened to a few hundred characters.

    Removes bearer/basic credentials, ``authorization: ...``-like assignments, OpenAI
    style keys (``sk-...``) and every non-empty value of ``secrets`` (replaced by
    ``[redacted]``).

    Args:
        text: any text taken from a response or an error.
        secrets: the caller's secret values (e.g. the app secret, the API key).

    Returns:
        the scrubbed text, at most about 300 characters (``…`` marks a cut).
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{_REDACTED}", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{_REDACTED}", text)
    text = _OPENAI_KEY.sub(_REDACTED, text)
    text = " ".join(text.split())
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT] + "…"
    return text


def is_retryable_status(status: int) -> bool:
    """Return whether an HTTP ``status`` may succeed if repeated: 408, 429 and 5xx."""
    return status in (408, 429) or 500 <= status <= 599


class BridgeConnectionError(BridgeError):
    """No HTTP answer arrived: the connection was refused, reset or broken (retryable).

    ``status`` is ``None``; ``description`` names the transport failure.

    Attributes (besides :class:`BridgeError`'s):
        sent: whether the request may have reached the service. ``False`` only when it
            provably did not: the connection (DNS, TCP, TLS) was never established, or
            no pooled connection was free.
    """

    def __init__(self, description: str, *, retryable: bool = True, sent: bool = True,
                 **kwargs) -> None:
        super().__init__(description, retryable=retryable, **kwargs)
        self.sent = sent


class BridgeTimeout(BridgeConnectionError):
    """No HTTP answer arrived within the bridge's timeout (retryable).

    The service may still have carried out the request (e.g. created a session).
    """


class HTTPStatusError(BridgeError):
    """The service answered with an error (an error status, or an error inside a 200).

    Attributes (besides :class:`BridgeError`'s):
        retry_after: seconds from a ``Retry-After`` header, or ``None``.
    """

    def __init__(self, description: str, *, retry_after: float | None = None,
                 **kwargs) -> None:
        super().__init__(description, **kwargs)
        self.retry_after = retry_after


class CallsError(HTTPStatusError):
    """Cloudflare Calls answered with an error.

    Raised for an error status (``code``/``description`` from its ``errorCode``/
    ``errorDescription`` body if any), and for a 2xx whose body carries a top-level
    ``errorCode`` (``status`` is then the 2xx status). ``retryable`` if the status is
    retryable or the code is in :data:`CALLS_RETRYABLE_CODES`.
    """


class TrackError(CallsError):
    """A track failed inside a successful Calls answer (a per-track ``errorCode``).

    Attributes (besides :class:`CallsError`'s):
        mid: the failed track's ``mid`` if the SFU gave one.
        track_name: the failed track's ``trackName`` if the SFU gave one.

    ``retryable`` follows the code, but the bridges do not repeat the request
    themselves: that would repeat the tracks that succeeded.
    """

    def __init__(self, description: str, *, mid: str | None = None,
                 track_name: str | None = None, **kwargs) -> None:
        super().__init__(description, **kwargs)
        self.mid = mid
        self.track_name = track_name


class OpenAIError(HTTPStatusError):
    """OpenAI answered with an error status (``{"error": {...}}`` body when it has one).

    Attributes (besides :class:`HTTPStatusError`'s):
        error_type: ``error.type`` (e.g. ``"invalid_request_error"``), or ``None``.
        param: ``error.param``, or ``None``.
    """

    def __init__(self, description: str, *, error_type: str | None = None,
                 param: str | None = None, **kwargs) -> None:
        super().__init__(description, **kwargs)
        self.error_type = error_type
        self.param = param


def transport_error(exc: httpx.TransportError, *, service: str, operation: str,
                    timeout: float, secrets: Iterable[str | None] = ()) -> BridgeError:
    """Map an httpx transport failure to :class:`BridgeTimeout`/:class:`BridgeConnectionError`.

    Args:
        exc: the httpx exception (not kept: it references the request and its headers).
        service, operation: as in :class:`BridgeError`.
        timeout: the timeout that applied, in seconds (quoted in the description).
        secrets: values to scrub from the description.

    Returns:
        the bridge error to raise (retryable).
    """
    detail = scrub(str(exc), secrets)
    name = type(exc).__name__
    sent = not isinstance(exc, _NOT_SENT)
    if isinstance(exc, httpx.TimeoutException):
        return BridgeTimeout(
            f"no answer within {timeout:g} s ({name}{': ' + detail if detail else ''})",
            service=service, operation=operation, sent=sent,
        )
    return BridgeConnectionError(
        f"no answer: {name}{': ' + detail if detail else ''}",
        service=service, operation=operation, sent=sent,
    )


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
             httpx.UnsupportedProtocol, httpx.ProxyError)
"""Transport failures before any byte of the request left: DNS, TCP connect, TLS
handshake (httpx raises those as ConnectError/ConnectTimeout), no free pooled
connection, a URL httpx cannot send to."""


def safe_to_repeat(exc: BaseException) -> bool:
    """Whether a request that *creates* something (a Calls session or track, an OpenAI
    call) may be sent again after ``exc``: only when it provably did not reach the
    service (:attr:`BridgeConnectionError.sent` is false) or the service said it did
    nothing (HTTP 429, or 503 with ``Retry-After``). After a timeout or another 5xx
    the first request may have created it: a second would leave one behind whose id
    nobody learns."""
    if isinstance(exc, BridgeConnectionError):
        return not exc.sent
    status = getattr(exc, "status", None)
    return status == 429 or (status == 503 and getattr(exc, "retry_after", None) is not None)


def parse_retry_after(value: str | None) -> float | None:
    """Return a ``Retry-After`` header's delay in seconds (delta-seconds form), or ``None``."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: ignored, the exponential backoff applies


def retrying(retries: int, backoff: float, max_backoff: float, *,
             creates: bool = False) -> AsyncRetrying:
    """Return a tenacity policy that repeats only retryable :class:`BridgeError` s.

    A :class:`TrackError` is never repeated (see its docstring).

    Args:
        retries: how many times to repeat after the first attempt (``0``: never).
        backoff: the first wait in seconds; each further wait doubles.
        max_backoff: the longest wait in seconds (also caps ``Retry-After``).
        creates: the request creates something: repeat it only when
            :func:`safe_to_repeat` says so.

    Returns:
        an ``AsyncRetrying`` that re-raises the last error once attempts are exhausted.
    """
    exponential = wait_exponential(multiplier=backoff, min=backoff, max=max_backoff)

    def wait(state: RetryCallState) -> float:
        delay = exponential(state)
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, min(retry_after, max_backoff))
        return delay

    retryable: Callable[[BaseException], bool] = (
        lambda exc: isinstance(exc, BridgeError) and exc.retryable
        and not isinstance(exc, TrackError) and (not creates or safe_to_repeat(exc))
    )
    return AsyncRetrying(
        retry=retry_if_exception(retryable),
        stop=stop_after_attempt(max(0, retries) + 1),
        wait=wait,
        reraise=True,
    )
