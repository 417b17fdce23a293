"""The ``/partytracks`` Calls proxy, over real HTTP: a development-mode gateway in front of
the local Calls emulator (``meeting_gateway``), and the proxy class alone in front of a
Calls service that does not answer.

What it must do (actors/gateway/partytracks.py): forward the session operations with the
app secret, for identified users only; answer ``generate-ice-servers``; lock each session
to the user and browser that created it (``partytracks-session-<id>`` cookie); refuse
other paths, large bodies and floods; never hand the secret to a client.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from http.cookies import SimpleCookie

import httpx
import jwt
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from actors.gateway.partytracks import PartyTracksProxy, PartyTracksSettings
from actors.net import free_port
from bridges.local.server import LocalService

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]


def _user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


def _no_secret(response: httpx.Response, secret: str) -> httpx.Response:
    """Fail if the app secret is anywhere in ``response`` (headers or body)."""
    assert secret not in response.text
    assert all(secret not in value for value in response.headers.values())
    return response


async def _new_session(client: httpx.AsyncClient, user: str, secret: str) -> tuple[str, str]:
    """Create a Calls session through the proxy as ``user``; return ``(session id, lock
    cookie value)``."""
    response = _no_secret(await client.post("/partytracks/sessions/new",
                                             params={"username": user}), secret)
    assert response.status_code == 201, response.text
    session = response.json()["sessionId"]
    cookie = SimpleCookie(response.headers["set-cookie"])[f"partytracks-session-{session}"]
    return session, cookie.value


async def test_the_proxy_needs_an_identity(meeting_gateway):
    async with httpx.AsyncClient(base_url=meeting_gateway["url"]) as client:
        for method, path in (("POST", "sessions/new"), ("GET", "generate-ice-servers")):
            response = await client.request(method, f"/partytracks/{path}")
            assert response.status_code == 401, (path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"


async def test_sessions_new_sets_an_httponly_lock_cookie(meeting_gateway):
    secret = meeting_gateway["app_secret"]
    async with httpx.AsyncClient(base_url=meeting_gateway["url"]) as client:
        response = _no_secret(await client.post("/partytracks/sessions/new",
                                                params={"username": _user()}), secret)
    assert response.status_code == 201
    session = response.json()["sessionId"]
    assert session in meeting_gateway["emulators"].calls.sessions  # the SFU made it
    header = response.headers["set-cookie"]
    morsel = SimpleCookie(header)[f"partytracks-session-{session}"]
    assert morsel["path"] == "/partytracks"
    assert morsel["httponly"] is True or "httponly" in header.lower()
    assert morsel["samesite"].lower() == "strict"
    assert "secure" not in header.lower()  # plain http on loopback; set over https


async def test_a_session_answers_only_its_creator_with_its_cookie(meeting_gateway):
    secret = meeting_gateway["app_secret"]
    alice = _user()
    async with httpx.AsyncClient(base_url=meeting_gateway["url"]) as client:
        session, lock = await _new_session(client, alice, secret)
        other, other_lock = await _new_session(client, alice, secret)
        path = f"/partytracks/sessions/{session}"
        name = f"partytracks-session-{session}"

        async def get(user: str, cookies: dict[str, str]) -> int:
            client.cookies.clear()
            response = await client.get(path, params={"username": user},
                                        headers={"Cookie": "; ".join(
                                            f"{k}={v}" for k, v in cookies.items())})
            _no_secret(response, secret)
            return response.status_code

        assert await get(alice, {name: lock}) == 200
        assert await get(alice, {}) == 401                      # no cookie
        assert await get(_user(), {name: lock}) == 401          # another user, same cookie
        assert await get(alice, {name: other_lock}) == 401      # another session's lock
        assert await get(alice, {f"partytracks-session-{other}": other_lock}) == 401
        forged = jwt.encode({"sessionId": session, "sub": alice}, "x" * 32, algorithm="HS256")
        assert await get(alice, {name: forged}) == 401          # not signed by the gateway
        # the same lock opens every operation of the session, e.g. tracks/close
        client.cookies.clear()
        response = await client.put(f"{path}/tracks/close", params={"username": alice},
                                    headers={"Cookie": f"{name}={lock}"},
                                    json={"tracks": [{"mid": "7"}], "force": True})
        assert response.status_code == 200, response.text
        assert response.json()["tracks"][0]["errorCode"] == "close_track_error"


async def test_ice_servers_for_the_local_sfu_are_empty(meeting_gateway):
    async with httpx.AsyncClient(base_url=meeting_gateway["url"]) as client:
        response = await client.get("/partytracks/generate-ice-servers",
                                    params={"username": _user()})
    assert response.status_code == 200
    assert response.json() == {"iceServers": []}


async def test_only_session_operations_reach_calls(meeting_gateway):
    secret = meeting_gateway["app_secret"]
    calls = meeting_gateway["emulators"].calls
    before = sum(calls.request_counts.values())
    user = {"username": _user()}
    async with httpx.AsyncClient(base_url=meeting_gateway["url"]) as client:
        cases = [("GET", "/partytracks/sessions/new", 405),
                 ("POST", "/partytracks/apps/other/sessions/new", 404),
                 ("GET", "/partytracks/sessions/abc/..%2F..%2Fturn", 404),
                 ("DELETE", "/partytracks/sessions/abc", 405),
                 ("POST", "/partytracks/sessions/new%0A", 404),
                 ("GET", "/partytracks/sessions/abc%0A", 404),
                 ("POST", "/partytracks/", 404)]
        for method, path, status in cases:
            response = _no_secret(await client.request(method, path, params=user), secret)
            assert response.status_code == status, (method, path, response.status_code)
    assert sum(calls.request_counts.values()) == before


async def test_large_bodies_and_floods_are_refused(meeting_gateway):
    secret = meeting_gateway["app_secret"]
    user = _user()
    async with httpx.AsyncClient(base_url=meeting_gateway["url"]) as client:
        session, lock = await _new_session(client, user, secret)
        big = json.dumps({"sessionDescription": {"type": "offer", "sdp": "v=0" + "x" * 300_000}})
        response = await client.post(f"/partytracks/sessions/{session}/tracks/new",
                                     params={"username": user}, content=big,
                                     headers={"Content-Type": "application/json",
                                              "Cookie": f"partytracks-session-{session}={lock}"})
        assert response.status_code == 413, response.text
        # default: bursts of 40, 10/s; 80 at once cannot all pass
        flooder = _user()
        answers = await asyncio.gather(*(
            client.get("/partytracks/generate-ice-servers", params={"username": flooder})
            for _ in range(80)))
    codes = [a.status_code for a in answers]
    assert codes.count(429) >= 20 and codes.count(200) >= 40, codes
    limited = next(a for a in answers if a.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["errorCode"] == "rate_limited"


async def test_an_unreachable_calls_service_is_a_502_without_the_secret():
    secret = "calls-secret-" + uuid.uuid4().hex
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    proxy = PartyTracksProxy(dead, "app", SecretStr(secret),
                             PartyTracksSettings(timeout_s=2.0))

    async def route(request: Request):
        return await proxy.handle(request.path_params["path"], request, "alice")

    service = LocalService(Starlette(routes=[Route("/partytracks/{path:path}", route,
                                                   methods=["GET", "POST", "PUT"])]),
                           name="proxy-under-test")
    base = service.start()
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            response = await client.post("/partytracks/sessions/new")
            ice = await client.get("/partytracks/generate-ice-servers")
    finally:
        service.stop()
        await proxy.aclose()
    assert response.status_code == 502
    assert response.json()["errorCode"] == "calls_unreachable"
    _no_secret(response, secret)
    assert ice.json() == {"iceServers": []}  # a loopback SFU needs no STUN
