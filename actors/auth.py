"""Identity for the gateway: who a request comes from, and whether it is an operator.

Four sources of a user's name, tried in this order (the first present one decides; a
present but refused credential is a 401, never a fall-through):

1. **A token**: a JSON Web Token (RFC 7519) signed with HMAC-SHA256 (RFC 7518 section
   3.2) whose ``sub`` claim is the user's name and whose ``exp`` claim bounds its life,
   from the ``token`` query parameter (WebSocket clients such as partysocket can only
   send query parameters) or an ``Authorization: Bearer`` header.
2. **A trusted proxy header** (``ROOMS_AUTH_PROXY_HEADER``, e.g.
   ``Cf-Access-Authenticated-User-Email`` set by Cloudflare Access, as Orange Meets
   reads it): honoured only when that variable is set. Set it only behind a proxy that
   sets the header itself and strips it from clients' requests; otherwise anyone can
   name themselves.
3. **A session cookie** (:data:`SESSION_COOKIE`): a token as in 1, set by ``POST
   /set-username`` in development mode (Orange's dev flow) and accepted in development
   mode only, signed with ``ROOMS_SESSION_SECRET``.
4. **Development mode** only: a plain ``?username=`` or ``X-Rooms-User`` header.

The room gets the name from here, never from a message body (docs/protocol.md, "The
room protocol").

================================  ==============================================  =========
variable                          meaning                                         default
================================  ==============================================  =========
``ROOMS_TOKEN_SECRET``            the HMAC key (at least 32 bytes); never logged  unset
``ROOMS_OPERATOR_SECRET``         a shared secret that makes a request an         unset
                                  operator's (header ``X-Rooms-Operator``)
``ROOMS_DEV_AUTH``                development mode: also accept ``?username=``    ``false``
                                  and the session cookie; every identity is an
                                  operator
``ROOMS_AUTH_PROXY_HEADER``       a header a trusted proxy sets to the user's     unset
                                  name (e.g. ``Cf-Access-Authenticated-User-
                                  Email``)
``ROOMS_SESSION_SECRET``          the HMAC key of session cookies (at least 32    random per
                                  bytes)                                          gateway
``ROOMS_ALLOWED_ORIGINS``         origins besides the gateway's own whose pages   none
                                  may use the session cookie (comma-separated,
                                  e.g. ``https://meet.example.com``)
================================  ==============================================  =========

Operators. Listing rooms and reading any room's state are operator routes. A request is
an operator's when its token carries the claim ``"operator": true`` (``issue_token(...,
operator=True)``), or when it sends ``X-Rooms-Operator: <ROOMS_OPERATOR_SECRET>`` (with
any identity), or in development mode. :func:`identify` returns both facts as an
:class:`Identity`.

Errors: :class:`~actors.errors.AuthError` (a :class:`ValueError`) says *why* a credential was refused
(missing, malformed, bad signature, expired, bad name); it never carries the token or
the secret.
"""

from __future__ import annotations

import hmac
import re
import time
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence
from urllib.parse import urlsplit

import jwt
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import AuthError

__all__ = [
    "ALGORITHM",
    "AuthError",
    "AuthSettings",
    "Identity",
    "MIN_SECRET_BYTES",
    "OPERATOR_HEADER",
    "SESSION_COOKIE",
    "authenticate",
    "origin_allowed",
    "identify",
    "issue_token",
    "session_cookie",
    "validate_user_name",
    "verify_token",
]

OPERATOR_HEADER = "x-rooms-operator"
"""The header that carries ``ROOMS_OPERATOR_SECRET`` (lower case, as ASGI gives it)."""

ALGORITHM = "HS256"
"""The only signature algorithm issued and accepted (HMAC with SHA-256)."""

MIN_SECRET_BYTES = 32
"""RFC 7518 section 3.2: an HS256 key must be at least as long as the hash (32 bytes)."""

SESSION_COOKIE = "rooms-session"
"""The name of the development-mode session cookie (a token, see the module docstring)."""

MAX_NAME_CHARS = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AuthSettings(BaseSettings):
    """The gateway's authentication settings, from ``ROOMS_TOKEN_SECRET`` and
    ``ROOMS_DEV_AUTH``.

    Attributes:
        token_secret: the HMAC key as a :class:`pydantic.SecretStr` (its ``repr`` and
            ``str`` print ``**********``), or ``None`` when unset (then only dev mode
            can admit anyone).
        operator_secret: a shared secret whose presence in ``X-Rooms-Operator`` makes
            a request an operator's, or ``None``.
        dev_auth: accept a plain ``?username=`` (or ``X-Rooms-User`` header) and the
            session cookie without a token, and treat every identity as an operator.
            For development only.
        auth_proxy_header: the header (any case) a trusted proxy sets to the user's
            name, or ``None`` (the default: no header names anyone).
        session_secret: the HMAC key of the session cookie, or ``None`` (then no
            cookie is issued or accepted; ``rooms serve`` sets a random one per run).
        allowed_origins: origins (``scheme://host[:port]``, comma-separated) besides
            the gateway's own from which a browser may use the session cookie: a
            WebSocket handshake or ``POST /set-username`` from any other origin is
            refused (a page on another site cannot act as the visitor).
    """

    model_config = SettingsConfigDict(env_prefix="ROOMS_", extra="ignore")

    token_secret: SecretStr | None = None
    operator_secret: SecretStr | None = None
    dev_auth: bool = False
    auth_proxy_header: str | None = None
    session_secret: SecretStr | None = None
    allowed_origins: str = ""

    @property
    def origins(self) -> frozenset[str]:
        """:attr:`allowed_origins` as a set of lower-case origins."""
        return frozenset(o.strip().lower().rstrip("/")
                         for o in self.allowed_origins.split(",") if o.strip())

    @property
    def cookies_accepted(self) -> bool:
        """Whether the session cookie is issued and accepted (dev mode with a secret)."""
        return self.dev_auth and self.session_secret is not None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request comes from.

    Attributes:
        name: the user's name (a token's ``sub``, or the dev-mode username).
        operator: whether the request may use the operator routes (and every room).
        source: which credential named it: ``"token"``, ``"proxy"``, ``"cookie"`` (an
            ambient credential a browser sends by itself: see :func:`origin_allowed`)
            or ``"dev"`` (not part of equality).
    """

    name: str
    operator: bool = False
    source: Literal["token", "proxy", "cookie", "dev"] = field(default="token",
                                                              compare=False)
    rooms: frozenset[str] | None = None
    """The rooms a room-scoped token admits (its ``rooms`` claim), or ``None``: any."""

    def may_enter(self, room: str) -> bool:
        """Whether this identity may use room ``room`` (an operator may use any)."""
        return self.rooms is None or self.operator or room in self.rooms


def _key(secret: str | SecretStr) -> bytes:
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if not isinstance(raw, str):
        raise TypeError("the token secret must be a str or SecretStr")
    key = raw.encode("utf-8")
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the token secret must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 3.2)"
        )
    return key


def validate_user_name(name: object) -> str:
    """Return ``name`` if it is a usable user name, else raise :class:`AuthError`.

    A user name is 1-64 characters of valid Unicode text, not all blank, with no
    control characters.
    """
    if not isinstance(name, str) or not name.strip():
        raise AuthError("the user name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise AuthError(f"the user name is longer than {MAX_NAME_CHARS} characters")
    if _CONTROL.search(name):
        raise AuthError("the user name has control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise AuthError("the user name is not valid Unicode text") from None
    return name


def issue_token(name: str, secret: str | SecretStr, ttl_s: float = 3600.0, *,
                operator: bool = False, rooms: Sequence[str] | None = None) -> str:
    """Sign a token for user ``name``.

    Args:
        name: the user's name (the ``sub`` claim); see :func:`validate_user_name`.
        secret: the HMAC key, at least :data:`MIN_SECRET_BYTES` bytes.
        ttl_s: seconds until the token expires (the ``exp`` claim), > 0.
        operator: add the claim ``"operator": true`` (the operator routes).
        rooms: room ids the token admits, and only those (the claim ``"rooms":
            [...]``, as LiveKit's room grants); ``None``: every room.

    Returns:
        The compact JWT (``header.payload.signature``, base64url).

    Raises:
        AuthError: the name is not usable.
        ValueError: the secret is too short, ``ttl_s`` is not positive, or a room id
            is not valid (or ``rooms`` is empty).
    """
    validate_user_name(name)
    if rooms is not None:
        from .directory import validate_room_id

        rooms = [validate_room_id(room) for room in rooms]
        if not rooms:
            raise ValueError("a room-scoped token needs at least one room")
    if not ttl_s > 0:
        raise ValueError("ttl_s must be > 0 seconds")
    now = int(time.time())
    claims: dict[str, object] = {"sub": name, "iat": now,
                                 "exp": now + max(1, int(round(ttl_s)))}
    if operator:
        claims["operator"] = True
    if rooms is not None:
        claims["rooms"] = list(rooms)
    return jwt.encode(claims, _key(secret), algorithm=ALGORITHM)


def verify_token(token: str, secret: str | SecretStr, *, leeway_s: float = 5.0) -> str:
    """Check a token's signature and expiry and return the user name it carries (see
    :func:`verify_claims`, whose errors it raises)."""
    return validate_user_name(verify_claims(token, secret, leeway_s=leeway_s).get("sub"))


def verify_claims(token: str, secret: str | SecretStr, *,
                  leeway_s: float = 5.0) -> dict[str, object]:
    """Check a token's signature and expiry and return its claims.

    Args:
        token: a compact JWT made by :func:`issue_token` (or any HS256 JWT with ``sub``
            and ``exp``).
        secret: the HMAC key it must be signed with.
        leeway_s: seconds of clock skew tolerated on ``exp``/``iat``.

    Returns:
        The claims (``sub``: the user's name; ``operator`` if set).

    Raises:
        AuthError: the token is malformed, signed with another key or algorithm,
            expired, lacks ``sub``/``exp``, or names an unusable user.
        ValueError: the secret is too short.
    """
    key = _key(secret)
    if not isinstance(token, str) or not token:
        raise AuthError("no token")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "exp"]},
            leeway=leeway_s,
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("the token has expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError("the token's signature does not match") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError(f"the token is not signed with {ALGORITHM}") from None
    except jwt.MissingRequiredClaimError as error:
        raise AuthError(f"the token lacks the {error.claim!r} claim") from None
    except jwt.DecodeError:
        raise AuthError("the token is malformed") from None
    except jwt.InvalidTokenError as error:  # iat in the future, bad claim types, ...
        raise AuthError(f"the token is invalid ({type(error).__name__})") from None
    return claims


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise AuthError("the Authorization header is not 'Bearer <token>'")
    return credentials.strip()


def authenticate(
    query: Mapping[str, str], headers: Mapping[str, str], settings: AuthSettings,
    cookies: Mapping[str, str] | None = None,
) -> str:
    """Return the user name of a request (:func:`identify`'s ``name``; same errors)."""
    return identify(query, headers, settings, cookies).name


def session_cookie(name: str, settings: AuthSettings, ttl_s: float = 7 * 86400.0) -> str:
    """Return the value of the session cookie naming user ``name`` (a token signed with
    ``settings.session_secret``, valid ``ttl_s`` seconds).

    Raises:
        AuthError: the name is not usable.
        ValueError: no session secret is configured, or it is too short.
    """
    if settings.session_secret is None:
        raise ValueError("no session secret: set ROOMS_SESSION_SECRET")
    return issue_token(name, settings.session_secret, ttl_s)


def identify(
    query: Mapping[str, str], headers: Mapping[str, str], settings: AuthSettings,
    cookies: Mapping[str, str] | None = None,
) -> Identity:
    """Return who a request comes from and whether it is an operator's, from the first
    credential it carries, in the order of the module docstring.

    Args:
        query: the request's query parameters (``token``, ``username``).
        headers: the request's headers; names are looked up lower-case, as ASGI gives
            them (``authorization``, the proxy header, ``x-rooms-user``).
        settings: the secrets, the proxy header and the dev flag.
        cookies: the request's cookies by name (:data:`SESSION_COOKIE`), or ``None``.

    Returns:
        The :class:`Identity`.

    Raises:
        AuthError: no credential, or a refused one (the caller answers 401).
    """
    token = query.get("token") or _bearer(headers)
    rooms: frozenset[str] | None = None
    proxied = (headers.get(settings.auth_proxy_header.lower())
               if settings.auth_proxy_header else None)
    cookie = (cookies or {}).get(SESSION_COOKIE) if settings.cookies_accepted else None
    if token:
        if settings.token_secret is None:
            raise AuthError("tokens are not accepted: ROOMS_TOKEN_SECRET is not set")
        claims = verify_claims(token, settings.token_secret)
        name = validate_user_name(claims.get("sub"))
        operator = claims.get("operator") is True
        source = "token"
        granted = claims.get("rooms")
        if granted is not None:
            if not (isinstance(granted, list) and granted
                    and all(isinstance(r, str) for r in granted)):
                raise AuthError("the token's 'rooms' claim is not a list of room ids")
            rooms = frozenset(granted)
    elif proxied:
        name = validate_user_name(proxied.strip())
        operator = False
        source = "proxy"
    elif cookie:
        assert settings.session_secret is not None  # cookies_accepted
        name = validate_user_name(verify_claims(cookie, settings.session_secret).get("sub"))
        operator = False
        source = "cookie"
    elif settings.dev_auth:
        name = query.get("username") or headers.get("x-rooms-user")
        if not name:
            raise AuthError("no token and no username (dev mode)")
        name = validate_user_name(name)
        operator = False
        source = "dev"
    else:
        raise AuthError("no credential: send ?token=<jwt> or 'Authorization: Bearer <jwt>'"
                        + (f", or come through the proxy that sets {settings.auth_proxy_header}"
                           if settings.auth_proxy_header else ""))
    return Identity(name, operator or settings.dev_auth or _operator_secret(headers, settings),
                    source, rooms)


def origin_allowed(headers: Mapping[str, str], settings: AuthSettings) -> bool:
    """Whether a request that carries an ambient credential (the session cookie) comes
    from a page that may use it: its ``Origin`` is the gateway's own (its host equals
    the ``Host`` header) or one of ``settings.allowed_origins``. A request with no
    ``Origin`` is allowed only when ``Sec-Fetch-Site`` does not say it is cross-site
    (browsers send ``Origin`` with every WebSocket handshake and cross-site POST).

    Args:
        headers: the request's headers, lower-case names (``origin``, ``host``,
            ``sec-fetch-site``).
        settings: the configured origins.

    Returns:
        ``True`` if the credential may be used (Fetch standard, CORS-safelisted
        checks; RFC 6454 origins).
    """
    origin = (headers.get("origin") or "").strip().lower().rstrip("/")
    if not origin or origin == "null":
        if origin == "null":
            return False
        return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    if origin in settings.origins:
        return True
    host = (headers.get("host") or "").strip().lower()
    return bool(host) and urlsplit(origin).netloc == host


def _operator_secret(headers: Mapping[str, str], settings: AuthSettings) -> bool:
    """Whether the request carries the configured operator secret (constant time)."""
    given = headers.get(OPERATOR_HEADER)
    if not given or settings.operator_secret is None:
        return False
    expected = settings.operator_secret.get_secret_value()
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())
