"""Contract checks against the project's API contracts, for tests.

Loads the two OpenAPI contracts in ``bridges/contracts/`` and validates HTTP requests
and responses against them with openapi-core, whatever base URL they were sent to (the
real services, the local emulators or a loopback test server):

* the Cloudflare Calls contract, ``calls.yaml``: every path from ``/apps/...`` on;
* the OpenAI Realtime contract, ``openai_realtime.yaml``: every path from
  ``/realtime/...`` on.

Usage::

    from tests.contracts import validate_calls_request, validate_calls_response

    validate_calls_request("POST", url, headers, body)          # raises SpecViolation
    validate_calls_response("POST", url, 201, headers, body)

    validate_calls_exchange(response)       # an httpx.Response and its request

Every ``validate_*`` function returns ``None`` and raises :class:`SpecViolation` (an
``AssertionError``, so pytest shows it as a failed check) with openapi-core's reasons.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from bridges.contracts import CALLS_CONTRACT, OPENAI_CONTRACT

__all__ = [
    "SpecViolation",
    "calls_spec",
    "openai_schema",
    "openai_spec",
    "validate_calls_exchange",
    "validate_calls_request",
    "validate_calls_response",
    "validate_openai_exchange",
    "validate_openai_request",
    "validate_openai_response",
]

_CALLS_SERVER = "https://rtc.live.cloudflare.com/v1"
_OPENAI_SERVER = "https://api.openai.com/v1"

Body = bytes | str | None
Headers = Mapping[str, str] | httpx.Headers | None


class SpecViolation(AssertionError):
    """A request or response does not match its API contract (the message lists why)."""


def _load_yaml(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


@functools.cache
def calls_spec() -> OpenAPI:
    """Return the Cloudflare Calls contract as an openapi-core ``OpenAPI`` (loaded once)."""
    return OpenAPI.from_dict(_load_yaml(CALLS_CONTRACT))


@functools.cache
def _openai_dict() -> dict[str, Any]:
    return _load_yaml(OPENAI_CONTRACT)


@functools.cache
def openai_spec() -> OpenAPI:
    """Return the OpenAI Realtime contract as an openapi-core ``OpenAPI`` (loaded once;
    the document itself is checked by openapi-spec-validator)."""
    config = Config(
        extra_media_type_deserializers={"application/sdp": _sdp_loads},
    )
    return OpenAPI.from_dict(_openai_dict(), config=config)


def _sdp_loads(value: bytes, **parameters: str) -> str:
    """Deserialize an ``application/sdp`` body or part: SDP is UTF-8 text (RFC 8866)."""
    return value.decode(parameters.get("charset", "utf-8"))


def openai_schema(name: str) -> dict[str, Any]:
    """Return ``components.schemas[name]`` of the OpenAI contract as a JSON Schema dict.

    The result carries the contract's other schemas under ``components`` so that its
    ``#/components/schemas/...`` references resolve (use with ``jsonschema``'s
    ``Draft202012Validator``).
    """
    spec = _openai_dict()
    return {**copy.deepcopy(spec["components"]["schemas"][name]), "components": spec["components"]}


def _relocate(url: str, marker: str, server: str) -> tuple[str, str, dict[str, str]]:
    """Map ``url`` (any base) onto the spec's server: return (host_url, path, query)."""
    parts = urlsplit(str(url))
    at = parts.path.find(marker)
    if at < 0:
        raise SpecViolation(f"{parts.path!r} is not a path of this API (no {marker!r})")
    server_parts = urlsplit(server)
    host_url = f"{server_parts.scheme}://{server_parts.netloc}"
    path = server_parts.path.rstrip("/") + parts.path[at:]
    return host_url, path, dict(parse_qsl(parts.query, keep_blank_values=True))


def _bytes(body: Body) -> bytes:
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else bytes(body)


def _content_type(headers: Headers) -> str:
    hdrs = httpx.Headers(headers or {})
    return hdrs.get("content-type", "")


def _check(spec: OpenAPI, what: str, errors: list[Exception]) -> None:
    if errors:
        reasons = []
        for err in errors:
            reasons.append(f"{type(err).__name__}: {err}")
            for inner in getattr(err, "schema_errors", None) or []:
                reasons.append(f"  - {getattr(inner, 'message', inner)}")
            cause = err.__cause__
            if cause is not None:
                reasons.append(f"  caused by {type(cause).__name__}: {cause}")
                for inner in getattr(cause, "schema_errors", None) or []:
                    reasons.append(f"  - {getattr(inner, 'message', inner)}")
        raise SpecViolation(f"{what} does not match the spec:\n" + "\n".join(reasons))


def _mock_request(method: str, url: str, headers: Headers, body: Body, marker: str,
                  server: str) -> MockRequest:
    host_url, path, query = _relocate(url, marker, server)
    ct = _content_type(headers)
    return MockRequest(
        host_url, method, path, args=query, headers=dict(httpx.Headers(headers or {})),
        data=_bytes(body), content_type=ct.lower(),
    )


def _validate_request(spec: OpenAPI, method: str, url: str, headers: Headers, body: Body,
                      marker: str, server: str) -> None:
    req = _mock_request(method, url, headers, body, marker, server)
    _check(spec, f"request {method.upper()} {req.path}", list(spec.iter_request_errors(req)))


def _validate_response(spec: OpenAPI, method: str, url: str, status: int, headers: Headers,
                       body: Body, marker: str, server: str) -> None:
    req = _mock_request(method, url, None, None, marker, server)
    resp = MockResponse(
        _bytes(body), status_code=status, headers=dict(httpx.Headers(headers or {})),
        content_type=_content_type(headers).split(";")[0].strip().lower(),
    )
    _check(spec, f"response {status} to {method.upper()} {req.path}",
           list(spec.iter_response_errors(req, resp)))


def validate_calls_request(method: str, url: str, headers: Headers, body: Body) -> None:
    """Validate one request against the Calls contract.

    Args:
        method: the HTTP method, any case.
        url: the full URL as sent (any base; the part from ``/apps/`` on is matched).
        headers: the request headers (``Authorization: Bearer`` is checked: the spec's
            ``secret`` security scheme).
        body: the raw body (bytes or str), or ``None``.

    Raises:
        SpecViolation: the path, parameters, security or body do not match.
    """
    _validate_request(calls_spec(), method, url, headers, body, "/apps/", _CALLS_SERVER)


def validate_calls_response(method: str, url: str, status: int, headers: Headers,
                            body: Body) -> None:
    """Validate one response (status, headers, JSON body) against the Calls contract.

    Args: as :func:`validate_calls_request`, plus ``status`` (the HTTP status code).

    Raises:
        SpecViolation: the status is not declared for the operation or the body does not
            match its schema.
    """
    _validate_response(calls_spec(), method, url, status, headers, body, "/apps/", _CALLS_SERVER)


def validate_openai_request(method: str, url: str, headers: Headers, body: Body) -> None:
    """Validate one request against the OpenAI Realtime contract.

    ``POST /realtime/calls`` as ``multipart/form-data`` is decoded part by part (the
    ``session`` part as JSON against ``RealtimeSessionCreateRequestGA``).

    Args: as :func:`validate_calls_request` (the part from ``/realtime/`` on is matched).

    Raises:
        SpecViolation: the path, parameters or body do not match.
    """
    _validate_request(openai_spec(), method, url, headers, body, "/realtime/", _OPENAI_SERVER)


def validate_openai_response(method: str, url: str, status: int, headers: Headers,
                             body: Body) -> None:
    """Validate one response against the OpenAI Realtime contract.

    Args: as :func:`validate_calls_response`.

    Raises:
        SpecViolation: the status is not declared for the operation or the body does not
            match.
    """
    _validate_response(openai_spec(), method, url, status, headers, body, "/realtime/",
                       _OPENAI_SERVER)


def _request_body(request: httpx.Request) -> bytes:
    """The request's body, reading a (re-iterable) streamed body such as multipart."""
    try:
        return request.content
    except httpx.RequestNotRead:
        return request.read()


def validate_calls_exchange(response: httpx.Response) -> None:
    """Validate an ``httpx.Response`` (body read) and its ``request`` against the Calls contract.

    Usable from an ``httpx.AsyncClient`` response event hook (``await response.aread()``
    first).

    Raises:
        SpecViolation: either side does not match.
    """
    req = response.request
    validate_calls_request(req.method, str(req.url), req.headers, _request_body(req))
    validate_calls_response(req.method, str(req.url), response.status_code, response.headers,
                            response.content)


def validate_openai_exchange(response: httpx.Response) -> None:
    """Validate an ``httpx.Response`` and its ``request`` against the OpenAI contract.

    Raises:
        SpecViolation: either side does not match.
    """
    req = response.request
    validate_openai_request(req.method, str(req.url), req.headers, _request_body(req))
    validate_openai_response(req.method, str(req.url), response.status_code, response.headers,
                             response.content)
