"""The httpx bridges against a spec-shaped fake of both services, over real loopback HTTP.

A Starlette app served by uvicorn in a background thread (127.0.0.1, port 0, one per
module) plays Cloudflare Calls (``/v1/apps/{appId}/...``) and OpenAI Realtime
(``/v1/realtime/calls...``). It records every request, checks the bearer token, and
answers either like the spec's examples or with a fault a test injected (error statuses,
per-track errors, slow answers, malformed SDP). Every request the clients send, and every
non-fault answer the fake gives, is validated against the spec files (``tests/contracts.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import pickle
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

import httpx
import jsonschema
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridges import (
    BridgeConnectionError,
    BridgeError,
    BridgeTimeout,
    CallsClient,
    CallsError,
    CallsSettings,
    HTTPStatusError,
    InvalidAnswer,
    OpenAIError,
    OpenAISettings,
    RealtimeClient,
    TrackError,
    call_id_from_location,
    scrub,
    validate_sdp,
)
from rooms.ports import AiService, MediaBridge, SessionDescription, TrackObject
from tests.contracts import (
    SpecViolation,
    openai_schema,
    validate_calls_request,
    validate_calls_response,
    validate_openai_request,
    validate_openai_response,
)

APP_ID = "app-0f1e2d"
CALLS_SECRET = "calls-s3cr3t-DO-NOT-LEAK-7f3a9c"
OPENAI_KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"
SECRETS = (CALLS_SECRET, OPENAI_KEY)

# SDP as aiortc writes it, with LF endings (the bridges normalise to CRLF).
OFFER_SDP = """v=0
o=- 3930000000 3930000000 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic:WMS *
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 127.0.0.1
a=mid:0
a=sendrecv
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=setup:actpass
"""
ANSWER_SDP = OFFER_SDP.replace("a=setup:actpass", "a=setup:active")
OFFER = SessionDescription(sdp=OFFER_SDP, type="offer")
ANSWER = SessionDescription(sdp=ANSWER_SDP, type="answer")
FAST = {"backoff": 0.01, "max_backoff": 0.05}


# -- the fake services ---------------------------------------------------------------

@dataclass
class Reply:
    """An injected answer: status, JSON or text body, headers, and a delay in seconds."""

    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Exchange:
    """One recorded request and the answer the fake gave."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""
    fault: bool = False

    @property
    def path(self) -> str:
        return httpx.URL(self.url).path

    @property
    def query(self) -> dict[str, str]:
        return dict(httpx.URL(self.url).params)

    def json(self) -> Any:
        return json.loads(self.body)


class FakeServices:
    """The state of the fake: recorded exchanges and injected faults (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.exchanges: list[Exchange] = []
        self.faults: list[tuple[str, re.Pattern[str], list[Reply]]] = []
        self.ids = itertools.count(1)
        self.base_url = ""

    def reset(self) -> None:
        with self.lock:
            self.exchanges.clear()
            self.faults.clear()

    def fault(self, method: str, path: str, *replies: Reply) -> None:
        """Answer the next ``len(replies)`` requests matching ``method``/``path`` regex."""
        with self.lock:
            self.faults.append((method, re.compile(path), list(replies)))

    def take_fault(self, method: str, path: str) -> Reply | None:
        with self.lock:
            for m, pattern, replies in self.faults:
                if m == method and replies and pattern.search(path):
                    return replies.pop(0)
        return None

    def count(self, method: str, path: str) -> int:
        with self.lock:
            return sum(1 for x in self.exchanges
                       if x.method == method and re.search(path, x.path))

    def only(self, method: str, path: str) -> Exchange:
        with self.lock:
            found = [x for x in self.exchanges if x.method == method and re.search(path, x.path)]
        assert len(found) == 1, f"expected one {method} {path}, got {len(found)}"
        return found[0]


def _new_id(fake: FakeServices) -> str:
    return f"{next(fake.ids):032x}"


def _calls_default(fake: FakeServices, method: str, path: str, body: Any) -> tuple[int, Any]:
    """Spec-shaped answers of the Calls API (no state beyond id counters)."""
    if method == "POST" and path.endswith("/sessions/new"):
        out: dict[str, Any] = {"sessionId": _new_id(fake)}
        if body and body.get("sessionDescription"):
            out["sessionDescription"] = {"type": "answer", "sdp": ANSWER_SDP}
        return 201, out
    if method == "POST" and path.endswith("/tracks/new"):
        tracks, offered = [], bool(body.get("sessionDescription"))
        for n, t in enumerate(body.get("tracks", [])):
            item = {k: t[k] for k in ("trackName", "sessionId", "location") if k in t}
            item["mid"] = t.get("mid", str(n)) if not str(t.get("mid", "")).startswith("#") \
                else "0"
            tracks.append(item)
        sd = ({"type": "answer", "sdp": ANSWER_SDP} if offered
              else {"type": "offer", "sdp": OFFER_SDP})
        return 200, {"requiresImmediateRenegotiation": not offered, "tracks": tracks,
                     "sessionDescription": sd}
    if method == "PUT" and path.endswith("/renegotiate"):
        return 200, {}
    if method == "PUT" and path.endswith("/tracks/close"):
        out = {"requiresImmediateRenegotiation": False,
               "tracks": [{"mid": t["mid"]} for t in body["tracks"]]}
        if body.get("sessionDescription"):
            out["sessionDescription"] = {"type": "answer", "sdp": ANSWER_SDP}
        return 200, out
    if method == "PUT" and path.endswith("/tracks/update"):
        return 200, {"requiresImmediateRenegotiation": False, "tracks": body["tracks"]}
    if method == "GET" and re.search(r"/sessions/[^/]+$", path):
        return 200, {"tracks": [{"location": "local", "mid": "0", "status": "active",
                                 "trackName": "ai-generated-voice"}],
                     "dataChannels": []}
    return 404, {"errorCode": "not_found", "errorDescription": f"no route {method} {path}"}


def make_app(fake: FakeServices) -> Starlette:
    """The Starlette app that records, authenticates and answers every request."""

    async def handle(request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        exchange = Exchange(request.method, str(request.url), dict(request.headers), body)
        with fake.lock:
            fake.exchanges.append(exchange)
        is_openai = "/realtime/" in path
        token = OPENAI_KEY if is_openai else CALLS_SECRET
        reply = fake.take_fault(request.method, path)
        if reply is not None:
            exchange.fault = True
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.text is not None:
                response: Response = Response(reply.text, reply.status, reply.headers,
                                              media_type=reply.headers.get(
                                                  "content-type", "text/plain"))
            else:
                response = JSONResponse(reply.json, reply.status, reply.headers)
        elif request.headers.get("authorization") != f"Bearer {token}":
            exchange.fault = True
            response = JSONResponse({"errorCode": "unauthorized",
                                     "errorDescription": "bad bearer token"}, 401)
        elif is_openai:
            if request.method == "POST" and path.endswith("/realtime/calls"):
                call_id = f"rtc_{_new_id(fake)}"
                response = Response(ANSWER_SDP, 201, {"location": f"/v1/realtime/calls/{call_id}"},
                                    media_type="application/sdp")
            elif request.method == "POST" and path.endswith("/hangup"):
                response = Response(b"", 200)
            else:
                response = JSONResponse({"error": {"message": "no route", "type": "not_found",
                                                   "code": None, "param": None}}, 404)
        else:
            status, payload = _calls_default(fake, request.method, path,
                                             json.loads(body) if body else None)
            response = JSONResponse(payload, status)
        exchange.status = response.status_code
        exchange.response_headers = dict(response.headers)
        exchange.response_body = bytes(response.body)
        return response

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    return Starlette(routes=[Route("/{path:path}", handle, methods=methods)])


@pytest.fixture(scope="module")
def fake() -> Any:
    """The fake services, served by uvicorn on 127.0.0.1 (port 0) in a thread."""
    services = FakeServices()
    config = uvicorn.Config(make_app(services), host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", loop="asyncio", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-services", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the fake services did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    services.base_url = f"http://127.0.0.1:{port}/v1"
    yield services
    server.should_exit = True
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def contract(fake: FakeServices) -> Any:
    """Reset the fake; after the test, check every exchange against the specs."""
    fake.reset()
    yield
    for x in fake.exchanges:
        is_openai = "/realtime/" in x.path
        (validate_openai_request if is_openai else validate_calls_request)(
            x.method, x.url, x.headers, x.body)
        if not x.fault:
            (validate_openai_response if is_openai else validate_calls_response)(
                x.method, x.url, x.status, x.response_headers, x.response_body)


def calls(fake: FakeServices, **options: Any) -> CallsClient:
    return CallsClient(APP_ID, CALLS_SECRET, base_url=fake.base_url, **{**FAST, **options})


def openai(fake: FakeServices, **options: Any) -> RealtimeClient:
    return RealtimeClient(OPENAI_KEY, base_url=fake.base_url, **{**FAST, **options})


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), repr(exc.__dict__),
                 str(pickle.loads(pickle.dumps(exc)))):
        for secret in SECRETS:
            assert secret not in text, f"secret leaked in {text!r}"


# -- Calls: request shapes -------------------------------------------------------------

async def test_clients_implement_the_ports(fake: FakeServices) -> None:
    async with calls(fake) as c, openai(fake) as o:
        assert isinstance(c, MediaBridge)
        assert isinstance(o, AiService)
        assert CALLS_SECRET not in repr(c) and OPENAI_KEY not in repr(o)


async def test_new_session_thirdparty_with_correlation_id(fake: FakeServices) -> None:
    async with calls(fake) as c:
        session_id, answer = await c.new_session(thirdparty=True, correlation_id="meeting-42")
    x = fake.only("POST", r"/sessions/new$")
    assert x.path == f"/v1/apps/{APP_ID}/sessions/new"
    assert x.query == {"thirdparty": "true", "correlationId": "meeting-42"}
    assert x.headers["authorization"] == f"Bearer {CALLS_SECRET}"
    assert x.body == b""
    assert x.status == 201 and answer is None
    assert session_id == json.loads(x.response_body)["sessionId"]


async def test_new_session_with_offer_returns_crlf_answer(fake: FakeServices) -> None:
    async with calls(fake) as c:
        session_id, answer = await c.new_session(offer=OFFER)
    x = fake.only("POST", r"/sessions/new$")
    assert x.query == {}
    assert x.json() == {"sessionDescription": {"sdp": OFFER_SDP, "type": "offer"}}
    assert answer is not None and answer.type == "answer"
    assert answer.sdp == ANSWER_SDP.replace("\n", "\r\n")


async def test_new_tracks_local_without_offer_gets_sfu_offer(fake: FakeServices) -> None:
    track = TrackObject(location="local", trackName="ai-generated-voice",
                        bidirectionalMediaStream=True, kind="audio")
    async with calls(fake) as c:
        result = await c.new_tracks("sess1", [track])
    x = fake.only("POST", r"/tracks/new$")
    assert x.path == f"/v1/apps/{APP_ID}/sessions/sess1/tracks/new"
    assert x.json() == {"tracks": [{"location": "local", "trackName": "ai-generated-voice",
                                    "bidirectionalMediaStream": True, "kind": "audio"}]}
    assert result.requiresImmediateRenegotiation is True
    assert result.sessionDescription is not None
    assert result.sessionDescription.type == "offer"
    assert result.sessionDescription.sdp.endswith("\r\n") and "\n" not in \
        result.sessionDescription.sdp.replace("\r\n", "")
    assert result.tracks[0].trackName == "ai-generated-voice" and result.tracks[0].mid == "0"


async def test_new_tracks_local_with_offer_gets_answer(fake: FakeServices) -> None:
    track = TrackObject(location="local", mid="0", trackName="mic")
    async with calls(fake) as c:
        result = await c.new_tracks("sess1", [track], offer=OFFER)
    body = fake.only("POST", r"/tracks/new$").json()
    assert body == {"tracks": [{"location": "local", "mid": "0", "trackName": "mic"}],
                    "sessionDescription": {"sdp": OFFER_SDP, "type": "offer"}}
    assert result.sessionDescription is not None and result.sessionDescription.type == "answer"


async def test_new_tracks_remote_pull_into_named_transceiver(fake: FakeServices) -> None:
    track = TrackObject(location="remote", sessionId="user-session", trackName="mic-7",
                        mid="#ai-generated-voice")
    async with calls(fake) as c:
        result = await c.new_tracks("ai-session", [track])
    body = fake.only("POST", r"/sessions/ai-session/tracks/new$").json()
    assert body == {"tracks": [{"location": "remote", "sessionId": "user-session",
                                "trackName": "mic-7", "mid": "#ai-generated-voice"}]}
    assert result.tracks[0].sessionId == "user-session"


async def test_renegotiate_puts_the_answer(fake: FakeServices) -> None:
    async with calls(fake) as c:
        assert await c.renegotiate("sess1", ANSWER) is None
    x = fake.only("PUT", r"/renegotiate$")
    assert x.path == f"/v1/apps/{APP_ID}/sessions/sess1/renegotiate"
    assert x.json() == {"sessionDescription": {"sdp": ANSWER_SDP, "type": "answer"}}


async def test_close_tracks_forced(fake: FakeServices) -> None:
    async with calls(fake) as c:
        result = await c.close_tracks("sess1", ["0", "3"])
        assert (await c.close_tracks("sess1", [])).tracks == []  # nothing sent
    x = fake.only("PUT", r"/tracks/close$")
    assert x.json() == {"tracks": [{"mid": "0"}, {"mid": "3"}], "force": True}
    assert [t.mid for t in result.tracks] == ["0", "3"]


async def test_close_tracks_negotiated_sends_offer(fake: FakeServices) -> None:
    async with calls(fake) as c:
        result = await c.close_tracks("sess1", ["7"], force=False, offer=OFFER)
        with pytest.raises(ValueError):
            await c.close_tracks("sess1", ["7"], force=False)
    assert fake.only("PUT", r"/tracks/close$").json() == {
        "tracks": [{"mid": "7"}], "force": False,
        "sessionDescription": {"sdp": OFFER_SDP, "type": "offer"}}
    assert result.sessionDescription is not None and result.sessionDescription.type == "answer"


async def test_close_tracks_tolerates_already_closed(fake: FakeServices) -> None:
    fake.fault("PUT", r"/tracks/close$", Reply(200, {
        "requiresImmediateRenegotiation": False,
        "tracks": [{"mid": "0"}, {"mid": "1", "errorCode": "close_track_error",
                                  "errorDescription": "Track doesn't exist or was already closed"}]}))
    async with calls(fake) as c:
        result = await c.close_tracks("sess1", ["0", "1"])
    assert [(t.mid, t.errorCode) for t in result.tracks] == [("0", None),
                                                             ("1", "close_track_error")]


async def test_close_tracks_raises_other_track_errors(fake: FakeServices) -> None:
    fake.fault("PUT", r"/tracks/close$", Reply(200, {
        "requiresImmediateRenegotiation": False,
        "tracks": [{"mid": "0"},
                   {"mid": "1", "errorCode": "close_track_error", "errorDescription": "gone"},
                   {"mid": "2", "errorCode": "internal_error", "errorDescription": "Backend error"}]}))
    async with calls(fake) as c:
        with pytest.raises(TrackError) as info:
            await c.close_tracks("sess1", ["0", "1", "2"])
    err = info.value
    assert (err.mid, err.code, err.status, err.operation) == ("2", "internal_error", 200,
                                                              "tracks/close")
    assert "Backend error" in str(err)
    assert fake.count("PUT", r"/tracks/close$") == 1  # a per-track error is not retried


async def test_update_tracks(fake: FakeServices) -> None:
    track = TrackObject(location="remote", sessionId="other", trackName="cam", mid="7")
    async with calls(fake) as c:
        result = await c.update_tracks("sess1", [track])
    x = fake.only("PUT", r"/tracks/update$")
    assert x.json() == {"tracks": [{"location": "remote", "sessionId": "other",
                                    "trackName": "cam", "mid": "7"}]}
    assert result.tracks[0].mid == "7" and result.sessionDescription is None


async def test_get_session(fake: FakeServices) -> None:
    async with calls(fake) as c:
        state = await c.get_session("sess1")
    x = fake.only("GET", r"/sessions/sess1$")
    assert x.body == b"" and x.headers["authorization"] == f"Bearer {CALLS_SECRET}"
    assert state.tracks[0].status == "active" and state.dataChannels == []


# -- Calls: failures and retries ---------------------------------------------------------

async def test_5xx_then_success_is_retried(fake: FakeServices) -> None:
    fake.fault("GET", r"/sessions/sess1$", Reply(503, text="upstream busy"),
               Reply(502, {"errorCode": "internal_error", "errorDescription": "Backend error"}))
    async with calls(fake) as c:
        await c.get_session("sess1")
    assert fake.count("GET", r"/sessions/sess1$") == 3


async def test_a_creating_request_is_not_repeated_after_a_5xx_or_a_timeout(
        fake: FakeServices) -> None:
    """sessions/new or tracks/new may have created a session or track before the 5xx
    or the timeout: a repeat would leave one behind whose id nobody learns."""
    fake.fault("POST", r"/sessions/new$",
               Reply(502, {"errorCode": "internal_error", "errorDescription": "Backend error"}))
    async with calls(fake, retries=3) as c:
        with pytest.raises(CallsError) as info:
            await c.new_session()
    assert info.value.status == 502 and fake.count("POST", r"/sessions/new$") == 1
    fake.fault("POST", r"/tracks/new$", Reply(200, {"tracks": []}, delay=1.0))
    async with calls(fake, timeout=0.2, retries=3) as c:
        with pytest.raises(BridgeTimeout) as timeout:
            await c.new_tracks("sess1", [TrackObject(location="local", trackName="a",
                                                     kind="audio")])
    assert timeout.value.sent is True
    assert fake.count("POST", r"/tracks/new$") == 1


async def test_a_creating_request_is_repeated_when_the_service_did_nothing(
        fake: FakeServices) -> None:
    """429, and 503 with Retry-After, say the request was not carried out."""
    fake.fault("POST", r"/sessions/new$",
               Reply(503, {"errorCode": "service_unavailable", "errorDescription": "later"},
                     headers={"retry-after": "0"}),
               Reply(429, {"errorCode": "rate_limited", "errorDescription": "slow down"}))
    async with calls(fake, retries=3) as c:
        session_id, _ = await c.new_session()
    assert session_id and fake.count("POST", r"/sessions/new$") == 3


async def test_429_is_retried_honouring_retry_after(fake: FakeServices) -> None:
    fake.fault("PUT", r"/renegotiate$", Reply(429, {"errorCode": "rate_limited",
                                                   "errorDescription": "slow down"},
                                             headers={"retry-after": "0.2"}))
    async with calls(fake, max_backoff=1.0) as c:
        started = time.monotonic()
        await c.renegotiate("sess1", ANSWER)
    assert fake.count("PUT", r"/renegotiate$") == 2
    assert time.monotonic() - started >= 0.2


async def test_retries_exhausted_raise_the_last_error(fake: FakeServices) -> None:
    fake.fault("GET", r"/sessions/sess1$", *[Reply(500, {"errorCode": "internal_error",
                                                         "errorDescription": "boom"})] * 3)
    async with calls(fake, retries=2) as c:
        with pytest.raises(CallsError) as info:
            await c.get_session("sess1")
    assert fake.count("GET", r"/sessions/sess1$") == 3
    assert info.value.retryable and info.value.status == 500 and info.value.code == "internal_error"


async def test_4xx_is_not_retried(fake: FakeServices) -> None:
    fake.fault("POST", r"/tracks/new$", Reply(406, {"errorCode": "invalid_params",
                                                   "errorDescription": "no such session"}))
    async with calls(fake) as c:
        with pytest.raises(CallsError) as info:
            await c.new_tracks("nope", [TrackObject(location="local", trackName="a",
                                                    kind="audio")])
    err = info.value
    assert (err.status, err.code, err.description, err.retryable) == (
        406, "invalid_params", "no such session", False)
    assert str(err) == "calls tracks/new: HTTP 406 invalid_params: no such session"
    assert isinstance(err, HTTPStatusError) and isinstance(err, BridgeError)
    assert fake.count("POST", r"/tracks/new$") == 1


async def test_request_level_error_code_inside_200(fake: FakeServices) -> None:
    fake.fault("PUT", r"/renegotiate$",
               Reply(200, {"errorCode": "invalid_sdp", "errorDescription": "bad answer"}))
    async with calls(fake) as c:
        with pytest.raises(CallsError) as info:
            await c.renegotiate("sess1", ANSWER)
    assert (info.value.status, info.value.code, info.value.retryable) == (200, "invalid_sdp",
                                                                          False)
    assert fake.count("PUT", r"/renegotiate$") == 1


async def test_per_track_error_inside_200_raises_track_error(fake: FakeServices) -> None:
    fake.fault("POST", r"/tracks/new$", Reply(200, {
        "requiresImmediateRenegotiation": False,
        "tracks": [{"trackName": "mic-7", "sessionId": "user", "mid": "#ai-generated-voice",
                    "errorCode": "not_found", "errorDescription": "track mic-7 not found"}]}))
    async with calls(fake) as c:
        with pytest.raises(TrackError) as info:
            await c.new_tracks("ai", [TrackObject(location="remote", sessionId="user",
                                                  trackName="mic-7", mid="#ai-generated-voice")])
    err = info.value
    assert (err.track_name, err.mid, err.code) == ("mic-7", "#ai-generated-voice", "not_found")
    assert "track mic-7 not found" in err.description
    assert fake.count("POST", r"/tracks/new$") == 1


async def test_timeout_raises_bridge_timeout_after_retries(fake: FakeServices) -> None:
    fake.fault("GET", r"/sessions/sess1$", Reply(200, {"tracks": []}, delay=1.0),
               Reply(200, {"tracks": []}, delay=1.0))
    async with calls(fake, timeout=0.2, retries=1) as c:
        started = time.monotonic()
        with pytest.raises(BridgeTimeout) as info:
            await c.get_session("sess1")
    assert time.monotonic() - started < 0.9
    assert info.value.retryable and info.value.status is None
    assert fake.count("GET", r"/sessions/sess1$") == 2


async def test_connection_refused_is_retryable_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with CallsClient(APP_ID, CALLS_SECRET, base_url=f"http://127.0.0.1:{port}/v1",
                           retries=1, **FAST) as c:
        with pytest.raises(BridgeConnectionError) as info:
            await c.get_session("sess1")
    assert info.value.retryable and not isinstance(info.value, BridgeTimeout)
    assert info.value.sent is False  # refused: provably not sent, safe to repeat
    assert_no_secret(info.value)


async def test_malformed_sdp_in_calls_answer_is_invalid_answer(fake: FakeServices) -> None:
    fake.fault("POST", r"/tracks/new$", Reply(200, {
        "tracks": [{"trackName": "a", "mid": "0"}], "requiresImmediateRenegotiation": True,
        "sessionDescription": {"type": "offer", "sdp": "<html>oops</html>"}}))
    async with calls(fake) as c:
        with pytest.raises(InvalidAnswer) as info:
            await c.new_tracks("s", [TrackObject(location="local", trackName="a", kind="audio")])
    assert info.value.operation == "tracks/new" and not info.value.retryable
    assert fake.count("POST", r"/tracks/new$") == 1


async def test_non_json_200_and_missing_session_id_are_invalid_answers(fake: FakeServices) -> None:
    fake.fault("POST", r"/sessions/new$", Reply(201, text="ok"), Reply(201, {"nope": 1}))
    async with calls(fake) as c:
        with pytest.raises(InvalidAnswer, match="JSON"):
            await c.new_session()
        with pytest.raises(InvalidAnswer, match="sessionId"):
            await c.new_session()


# -- OpenAI --------------------------------------------------------------------------

def _multipart(x: Exchange) -> dict[str, tuple[str, bytes]]:
    """Parse a recorded multipart/form-data body: {name: (content type, payload)}."""
    raw = f"content-type: {x.headers['content-type']}\r\n\r\n".encode() + x.body
    message = BytesParser(policy=HTTP).parsebytes(raw)
    return {part.get_param("name", header="content-disposition"):
            (part.get_content_type(), part.get_payload(decode=True))
            for part in message.iter_parts()}


async def test_create_call_multipart_and_location(fake: FakeServices) -> None:
    async with openai(fake) as o:
        call = await o.create_call(OFFER, model="gpt-realtime", instructions="Be brief.",
                                   voice="marin")
    x = fake.only("POST", r"/realtime/calls$")
    assert x.path == "/v1/realtime/calls" and x.query == {}  # not the beta ?model= endpoint
    assert x.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert x.headers["content-type"].startswith("multipart/form-data; boundary=")
    parts = _multipart(x)
    assert parts["sdp"] == ("application/sdp", OFFER_SDP.encode())
    kind, payload = parts["session"]
    session = json.loads(payload)
    assert kind == "application/json"
    assert session == {"type": "realtime", "model": "gpt-realtime", "instructions": "Be brief.",
                       "audio": {"output": {"voice": "marin"}}}
    jsonschema.Draft202012Validator(openai_schema("RealtimeSessionCreateRequestGA")).validate(
        session)
    location = x.response_headers["location"]
    assert call.call_id == location.rsplit("/", 1)[1] and call.call_id.startswith("rtc_")
    assert call.answer.type == "answer" and call.answer.sdp == ANSWER_SDP.replace("\n", "\r\n")


async def test_create_call_minimal_session(fake: FakeServices) -> None:
    async with openai(fake) as o:
        await o.create_call(OFFER, model="gpt-realtime")
    session = json.loads(_multipart(fake.only("POST", r"/realtime/calls$"))["session"][1])
    assert session == {"type": "realtime", "model": "gpt-realtime"}


async def test_hangup(fake: FakeServices) -> None:
    async with openai(fake) as o:
        assert await o.hangup("rtc_abc") is None
    x = fake.only("POST", r"/hangup$")
    assert x.path == "/v1/realtime/calls/rtc_abc/hangup" and x.body == b""


@pytest.mark.parametrize("headers", [{}, {"location": "/v1/realtime/sessions/abc"},
                                     {"location": "/v1/realtime/calls/"}])
async def test_missing_or_malformed_location_is_invalid_answer(fake: FakeServices,
                                                               headers: dict) -> None:
    fake.fault("POST", r"/realtime/calls$",
               Reply(201, text=ANSWER_SDP, headers={**headers, "content-type": "application/sdp"}))
    async with openai(fake) as o:
        with pytest.raises(InvalidAnswer, match="Location"):
            await o.create_call(OFFER, model="gpt-realtime")


def test_call_id_from_absolute_location() -> None:
    assert call_id_from_location("https://api.openai.com/v1/realtime/calls/rtc_9") == "rtc_9"
    assert call_id_from_location("/v1/realtime/calls/rtc_9/") == "rtc_9"


async def test_malformed_openai_answer_is_invalid_answer(fake: FakeServices) -> None:
    fake.fault("POST", r"/realtime/calls$",
               Reply(201, text='{"not": "sdp"}',
                     headers={"location": "/v1/realtime/calls/rtc_1",
                              "content-type": "application/sdp"}))
    async with openai(fake) as o:
        with pytest.raises(InvalidAnswer, match="not SDP"):
            await o.create_call(OFFER, model="gpt-realtime")
    assert fake.count("POST", r"/realtime/calls$") == 1


async def test_openai_401_is_not_retried(fake: FakeServices) -> None:
    fake.fault("POST", r"/realtime/calls$", Reply(401, {"error": {
        "message": "Incorrect API key provided.", "type": "invalid_request_error",
        "code": "invalid_api_key", "param": None}}))
    async with openai(fake) as o:
        with pytest.raises(OpenAIError) as info:
            await o.create_call(OFFER, model="gpt-realtime")
    err = info.value
    assert (err.status, err.code, err.error_type, err.retryable) == (
        401, "invalid_api_key", "invalid_request_error", False)
    assert err.description == "Incorrect API key provided."
    assert fake.count("POST", r"/realtime/calls$") == 1


async def test_openai_503_with_retry_after_and_429_are_retried(fake: FakeServices) -> None:
    fake.fault("POST", r"/realtime/calls$",
               Reply(503, {"error": {"message": "busy", "type": "server_error",
                                     "code": None, "param": None}},
                     headers={"retry-after": "0"}),
               Reply(429, {"error": {"message": "rate", "type": "rate_limit_exceeded",
                                     "code": None, "param": None}}))
    async with openai(fake) as o:
        call = await o.create_call(OFFER, model="gpt-realtime")
    assert call.call_id and fake.count("POST", r"/realtime/calls$") == 3


async def test_openai_create_call_is_not_repeated_after_a_500(fake: FakeServices) -> None:
    """A 500 may come after the call was created (and billed): no second call."""
    fake.fault("POST", r"/realtime/calls$",
               Reply(500, {"error": {"message": "server", "type": "server_error",
                                     "code": None, "param": None}}))
    async with openai(fake, retries=3) as o:
        with pytest.raises(OpenAIError) as info:
            await o.create_call(OFFER, model="gpt-realtime")
    assert info.value.status == 500 and fake.count("POST", r"/realtime/calls$") == 1
    fake.fault("POST", r"/hangup$", Reply(500, {"error": {
        "message": "server", "type": "server_error", "code": None, "param": None}}))
    async with openai(fake, retries=3) as o:  # hanging up twice is harmless: repeated
        await o.hangup("rtc_x")
    assert fake.count("POST", r"/hangup$") == 2


async def test_openai_timeout(fake: FakeServices) -> None:
    fake.fault("POST", r"/hangup$", Reply(200, delay=1.0), Reply(200, delay=1.0))
    async with openai(fake, timeout=0.2, retries=1) as o:
        with pytest.raises(BridgeTimeout):
            await o.hangup("rtc_x")
    assert fake.count("POST", r"/hangup$") == 2


# -- secrets ---------------------------------------------------------------------------

async def test_no_secret_in_any_error(fake: FakeServices) -> None:
    """Even a service that echoes the token does not get it into an error."""
    raised: list[BaseException] = []
    fake.fault("PUT", r"/renegotiate$", Reply(400, {
        "errorCode": "bad", "errorDescription": f"Authorization: Bearer {CALLS_SECRET} refused"}))
    fake.fault("GET", r"/sessions/s$", Reply(403, text=f"token {CALLS_SECRET} not allowed"))
    fake.fault("POST", r"/tracks/new$", Reply(200, {"tracks": [
        {"mid": "0", "errorCode": "x", "errorDescription": f"secret={CALLS_SECRET}"}]}))
    fake.fault("POST", r"/realtime/calls$", Reply(401, {"error": {
        "message": f"Incorrect API key provided: {OPENAI_KEY}", "type": "invalid_request_error",
        "code": "invalid_api_key", "param": None}}))
    fake.fault("POST", r"/hangup$", Reply(200, delay=1.0))
    async with calls(fake, retries=0) as c, openai(fake, retries=0, timeout=0.2) as o:
        for op in (c.renegotiate("s", ANSWER), c.get_session("s"),
                   c.new_tracks("s", [TrackObject(location="local", trackName="a")]),
                   o.create_call(OFFER, model="gpt-realtime"), o.hangup("rtc_1")):
            with pytest.raises(BridgeError) as info:
                await op
            raised.append(info.value)
    assert [type(e) for e in raised] == [CallsError, CallsError, TrackError, OpenAIError,
                                         BridgeTimeout]
    for exc in raised:
        assert_no_secret(exc)
    assert "[redacted]" in str(raised[0]) and "[redacted]" in str(raised[3])


def test_scrub_removes_tokens_and_known_secrets() -> None:
    text = scrub(f"Authorization: Bearer abc.def; api_key={OPENAI_KEY} x {CALLS_SECRET}",
                 [CALLS_SECRET])
    assert "abc.def" not in text and OPENAI_KEY not in text and CALLS_SECRET not in text
    assert len(scrub("x" * 5000)) < 400


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CALLS_APP_ID", "CALLS_APP_SECRET", "CALLS_BASE_URL", "OPENAI_API_KEY",
                 "OPENAI_BASE_URL", "OPENAI_MODEL", "OPENAI_VOICE_API"):
        monkeypatch.delenv(name, raising=False)
    assert not CallsSettings().configured and not OpenAISettings().configured
    with pytest.raises(ValueError):
        CallsSettings().client()
    with pytest.raises(ValueError):
        OpenAISettings().client()
    assert OpenAISettings().model_or_default == "gpt-realtime"
    assert CallsSettings().base_url == "https://rtc.live.cloudflare.com/v1"
    monkeypatch.setenv("CALLS_APP_ID", APP_ID)
    monkeypatch.setenv("CALLS_APP_SECRET", CALLS_SECRET)
    monkeypatch.setenv("CALLS_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_MODEL", "gpt-realtime-mini")
    cs, oa = CallsSettings(), OpenAISettings()
    assert cs.configured and oa.configured and oa.model == "gpt-realtime-mini"
    for text in (repr(cs), str(cs), repr(oa), str(oa), repr(cs.client()), repr(oa.client())):
        assert CALLS_SECRET not in text and OPENAI_KEY not in text
    client = cs.client(retries=0)
    assert isinstance(client, CallsClient) and client.base_url == "http://127.0.0.1:9/v1"
    assert client.retries == 0
    from bridges.openai_live import LiveClient

    monkeypatch.setenv("OPENAI_VOICE_API", "live")
    monkeypatch.delenv("OPENAI_MODEL")
    live = OpenAISettings()
    assert isinstance(live.client(), LiveClient) and live.model_or_default == "gpt-live-1"


# -- SDP and the contract helper -----------------------------------------------------

def test_validate_sdp() -> None:
    ok = validate_sdp(OFFER_SDP, expected_type="offer", service="calls", operation="x")
    assert ok == OFFER_SDP.replace("\n", "\r\n")
    assert validate_sdp(ok, expected_type="offer", service="calls", operation="x") == ok
    for bad in ("", "v=1\no=-\ns=-\nt=0 0\nm=audio 9 RTP/AVP 0\n",
                "v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nt=0 0\n",  # no m= line
                "v=0\ns=-\nt=0 0\nm=audio 9 RTP/AVP 0\n",  # no o= line
                "v=0\no=-\ns=-\nt=0 0\nm=audio 9 RTP/AVP 0\nnot a line\n"):
        with pytest.raises(InvalidAnswer) as info:
            validate_sdp(bad, expected_type="answer", service="openai", operation="realtime/calls")
        assert info.value.service == "openai" and "SDP answer" in str(info.value)


def test_contract_helper_rejects_what_the_spec_forbids() -> None:
    url = "http://127.0.0.1:1/v1/apps/a/sessions/s/tracks/close"
    auth = {"authorization": "Bearer t", "content-type": "application/json"}
    validate_calls_request("PUT", url, auth, b'{"tracks": [{"mid": "0"}], "force": true}')
    with pytest.raises(SpecViolation, match="force"):
        validate_calls_request("PUT", url, auth, b'{"tracks": [{"mid": "0"}]}')
    with pytest.raises(SpecViolation, match="[Ss]ecurity"):
        validate_calls_request("GET", "http://x/v1/apps/a/sessions/s", {}, None)
    with pytest.raises(SpecViolation, match="sessionId"):
        validate_calls_response("POST", "http://x/v1/apps/a/sessions/new", 201,
                                {"content-type": "application/json"}, b"{}")
    with pytest.raises(SpecViolation):
        validate_openai_request("POST", "http://x/v1/realtime?model=gpt-realtime",
                                {"content-type": "application/sdp"}, OFFER_SDP)


# -- against the local emulators (bridges.local), as the rooms will use them -----------

@pytest.fixture(scope="module")
def emulators() -> Any:
    """Both aiortc emulators on loopback, for the module."""
    local = pytest.importorskip("bridges.local")
    with local.start_emulators() as emu:
        yield emu


async def test_ai_flow_against_the_emulators(emulators: Any) -> None:
    """enableAi's calls, then cleanup, against the emulators; every exchange spec-checked."""
    from tests.contracts import validate_calls_exchange, validate_openai_exchange

    checked: list[str] = []

    async def check(response: httpx.Response) -> None:
        await response.aread()
        if response.is_success:  # error answers are checked by the emulator's own tests
            if "/realtime/" in response.request.url.path:
                validate_openai_exchange(response)
            else:
                validate_calls_exchange(response)
            checked.append(f"{response.request.method} {response.request.url.path}")

    async with httpx.AsyncClient(event_hooks={"response": [check]}) as http:
        c = CallsClient(emulators.app_id, emulators.app_secret,
                        base_url=emulators.calls_base_url, client=http, **FAST)
        o = RealtimeClient(emulators.api_key, base_url=emulators.openai_base_url,
                           client=http, **FAST)
        session_id, _ = await c.new_session(thirdparty=True, correlation_id="meeting-1")
        tracks = await c.new_tracks(session_id, [TrackObject(
            location="local", trackName="ai-generated-voice", bidirectionalMediaStream=True,
            kind="audio")])
        assert tracks.requiresImmediateRenegotiation and tracks.sessionDescription is not None
        call = await o.create_call(tracks.sessionDescription, model="gpt-realtime",
                                   instructions="Answer briefly.", voice="marin")
        await c.renegotiate(session_id, call.answer)
        state = await c.get_session(session_id)
        assert [t.trackName for t in state.tracks] == ["ai-generated-voice"]
        mid = tracks.tracks[0].mid
        assert mid is not None
        await c.close_tracks(session_id, [mid])
        again = await c.close_tracks(session_id, [mid])  # already closed: tolerated
        assert again.tracks[0].errorCode == "close_track_error"
        await o.hangup(call.call_id)
        with pytest.raises(OpenAIError) as info:
            await o.hangup(call.call_id)
        assert info.value.status == 404 and not info.value.retryable
        await c.aclose()  # an injected client stays open
        assert not http.is_closed
    assert len(checked) == 8
