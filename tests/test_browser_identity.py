"""Identity for browsers (actors/auth.py): a trusted proxy's header, and the development-
mode session cookie set by ``POST /set-username``; neither can be forged or used when
not configured. The rules are checked on :func:`actors.auth.identify` (every route and
the WebSocket go through it), the cookie flow over real HTTP and a real WebSocket
against a development-mode gateway (``meeting_gateway``).
"""

from __future__ import annotations

import uuid
from http.cookies import SimpleCookie

import httpx
import pytest
from pydantic import SecretStr

from actors.auth import SESSION_COOKIE, AuthSettings, Identity, identify, issue_token
from actors.errors import AuthError
from tests.wsclient import open_client

PROXY = "Cf-Access-Authenticated-User-Email"
SECRET = SecretStr("s" * 40)
TOKEN_SECRET = SecretStr("t" * 40)


def test_the_proxy_header_names_the_user_only_when_configured():
    proxied = AuthSettings(auth_proxy_header=PROXY)
    headers = {PROXY.lower(): "alice@example.com"}
    assert identify({}, headers, proxied) == Identity("alice@example.com", False)
    # not configured: the same header names nobody (strict mode: no credential at all)
    with pytest.raises(AuthError, match="no credential"):
        identify({}, headers, AuthSettings(token_secret=TOKEN_SECRET))
    # configured for another header: this one is ignored too
    with pytest.raises(AuthError):
        identify({}, headers, AuthSettings(auth_proxy_header="X-Other-User"))
    # a blank header is no identity; a control character is refused
    with pytest.raises(AuthError):
        identify({}, {PROXY.lower(): "  "}, proxied)
    with pytest.raises(AuthError, match="control"):
        identify({}, {PROXY.lower(): "a\x00b"}, proxied)


def test_a_token_wins_over_the_proxy_header():
    settings = AuthSettings(auth_proxy_header=PROXY, token_secret=TOKEN_SECRET)
    token = issue_token("bob", TOKEN_SECRET)
    assert identify({"token": token}, {PROXY.lower(): "alice"}, settings).name == "bob"


def test_the_session_cookie_only_in_development_mode_and_only_signed_by_the_gateway():
    dev = AuthSettings(dev_auth=True, session_secret=SECRET)
    cookie = {SESSION_COOKIE: issue_token("carol", SECRET)}
    assert identify({}, {}, dev, cookie).name == "carol"
    # forged: signed with another key -> refused, not ignored
    forged = {SESSION_COOKIE: issue_token("carol", SecretStr("f" * 40))}
    with pytest.raises(AuthError, match="signature"):
        identify({}, {}, dev, forged)
    with pytest.raises(AuthError):
        identify({}, {}, dev, {SESSION_COOKIE: "not-a-token"})
    # not development mode: even a well-signed cookie names nobody
    strict = AuthSettings(token_secret=TOKEN_SECRET, session_secret=SECRET)
    with pytest.raises(AuthError, match="no credential"):
        identify({}, {}, strict, cookie)
    # development mode without a session secret issues and accepts no cookie
    assert not AuthSettings(dev_auth=True).cookies_accepted


def _set_cookie(response: httpx.Response) -> SimpleCookie:
    return SimpleCookie(response.headers["set-cookie"])


@pytest.mark.ray
async def test_set_username_then_the_meeting_page_and_socket_know_the_name(meeting_gateway):
    name, room = f"dana-{uuid.uuid4().hex[:6]}", f"cookie-{uuid.uuid4().hex[:8]}"
    base = meeting_gateway["url"]
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.post("/set-username", data={"username": name, "room": room})
        assert response.status_code == 303
        assert response.headers["location"] == f"/meet/{room}"
        morsel = _set_cookie(response)[SESSION_COOKIE]
        assert morsel["httponly"] and morsel["path"] == "/"
        assert morsel["samesite"].lower() == "lax"
        cookie = f"{SESSION_COOKIE}={morsel.value}"
        client.cookies.clear()
        page = await client.get(f"/meet/{room}", headers={"Cookie": cookie})
        assert page.status_code == 200
        assert f'"name": "{name}"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        script = await client.get("/web/meeting.js")
        assert script.status_code == 200 and "partytracks" in script.text
        # without the cookie the page sends the browser to pick a name first
        bare = await client.get(f"/meet/{room}")
        assert bare.status_code == 303 and bare.headers["location"] == f"/?room={room}"
        # a forged cookie is refused everywhere, not taken as "no identity"
        forged = issue_token(name, SecretStr("f" * 40))
        refused = await client.post(f"/rooms/{room}/messages", json={"type": "heartbeat"},
                                    headers={"Cookie": f"{SESSION_COOKIE}={forged}"})
        assert refused.status_code == 401
    # the WebSocket handshake carries the cookie: the room seats the cookie's name
    ws = base.replace("http://", "ws://") + f"/parties/rooms/{room}?_pk=dana-pk"
    client = await open_client(ws, headers={"Cookie": cookie})
    try:
        client.send({"type": "userUpdate", "user": {"id": "dana-pk", "name": "someone else",
                                                    "joined": True}})
        state = await client.wait_for(
            lambda m: m["type"] == "roomState" and any(
                u["id"] == "dana-pk" and u.get("joined") for u in m["state"]["users"]),
            "dana's seat")
        seat = next(u for u in state["state"]["users"] if u["id"] == "dana-pk")
        assert seat["name"] == name
    finally:
        await client.ws.close()


@pytest.mark.ray
async def test_set_username_refuses_bad_input_and_open_redirects(meeting_gateway):
    async with httpx.AsyncClient(base_url=meeting_gateway["url"]) as client:
        empty = await client.post("/set-username", data={"username": "  "})
        assert empty.status_code == 400 and "set-cookie" not in empty.headers
        bad_room = await client.post("/set-username", data={"username": "erin", "room": "a b"})
        assert bad_room.status_code == 400
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            response = await client.post("/set-username", params={"return-url": target},
                                         data={"username": "erin"})
            assert response.status_code == 303
            assert response.headers["location"] == "/", target
        local = await client.post("/set-username", params={"return-url": "/meet/x"},
                                  data={"username": "erin"})
        assert local.headers["location"] == "/meet/x"
