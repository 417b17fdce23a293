"""The local Calls SFU and OpenAI Realtime emulators: spec shapes, errors, faults, real media.

Real HTTP on loopback (httpx), real aiortc peers, every 2xx exchange validated against
the specs with tests/contracts.py; error bodies checked against the services' error shapes.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import pytest
from aiortc import RTCSessionDescription

from bridges.local import Emulators, start_emulators
from bridges.local.ice import loopback_peer_connection
from bridges.local.media import AudioRecorder, ToneTrack, dominant_frequency, rms
from bridges.local.participant import Participant
from tests.contracts import openai_schema, validate_calls_exchange, validate_openai_exchange

pytestmark = pytest.mark.media

AI_TRACK = "ai-generated-voice"


@pytest.fixture(scope="module")
def emu() -> Emulators:
    emulators = start_emulators(app_id="test-app", app_secret="test-secret", api_key="sk-test")
    yield emulators
    emulators.stop()
    assert not emulators.calls_service.running and not emulators.openai_service.running


@pytest.fixture
async def calls(emu: Emulators):
    async with httpx.AsyncClient(base_url=f"{emu.calls_base_url}/apps/{emu.app_id}",
                                 headers={"Authorization": f"Bearer {emu.app_secret}"},
                                 timeout=10) as client:
        yield client
    emu.calls.faults.clear()


@pytest.fixture
async def openai(emu: Emulators):
    async with httpx.AsyncClient(base_url=emu.openai_base_url,
                                 headers={"Authorization": f"Bearer {emu.api_key}"},
                                 timeout=10) as client:
        yield client
    emu.openai.faults.clear()


def calls_error(response: httpx.Response, status: int) -> dict:
    """Check a Calls request-level error: status and {errorCode, errorDescription}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body.get("errorCode"), str) and body["errorCode"]
    assert isinstance(body.get("errorDescription"), str) and body["errorDescription"]
    return body


def openai_error(response: httpx.Response, status: int) -> dict:
    """Check an OpenAI error: status and the spec's ErrorResponse schema."""
    assert response.status_code == status, response.text
    body = response.json()
    jsonschema.Draft202012Validator(openai_schema("ErrorResponse")).validate(body)
    return body


async def ok(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    validate_calls_exchange(response)
    return response.json() if response.content else {}


def realtime_form(offer_sdp: str, **session) -> dict:
    session = {"type": "realtime", "model": "gpt-realtime", **session}
    return {"sdp": (None, offer_sdp, "application/sdp"),
            "session": (None, json.dumps(session), "application/json")}


async def create_call(openai: httpx.AsyncClient, offer_sdp: str, **session) -> httpx.Response:
    """POST /realtime/calls as multipart (sdp + session), body kept for spec validation."""
    request = openai.build_request("POST", "/realtime/calls", files=realtime_form(offer_sdp, **session))
    await request.aread()
    return await openai.send(request)


# ---------------------------------------------------------------- Calls shapes and errors

async def test_sessions_new_is_201_and_records_query(emu: Emulators, calls) -> None:
    r = await calls.post("/sessions/new", params={"thirdparty": "true", "correlationId": "meeting-1"})
    body = await ok(r, 201)
    info = emu.calls.session_info(body["sessionId"])
    assert info["thirdparty"] is True and info["correlationId"] == "meeting-1"
    r = await calls.get(f"/sessions/{body['sessionId']}")
    assert await ok(r) == {"tracks": [], "dataChannels": []}


async def test_unknown_session_is_410(calls) -> None:
    sid = "0" * 32
    calls_error(await calls.post(f"/sessions/{sid}/tracks/new", json={"tracks": []}), 410)
    calls_error(await calls.put(f"/sessions/{sid}/renegotiate",
                                json={"sessionDescription": {"type": "answer", "sdp": "v=0"}}), 410)
    calls_error(await calls.put(f"/sessions/{sid}/tracks/close", json={"tracks": [{"mid": "0"}], "force": True}), 410)
    calls_error(await calls.put(f"/sessions/{sid}/tracks/update", json={"tracks": [{"mid": "0"}]}), 410)
    calls_error(await calls.get(f"/sessions/{sid}"), 410)


async def test_bearer_auth_is_required(emu: Emulators, openai) -> None:
    async with httpx.AsyncClient(timeout=5) as anon:
        url = f"{emu.calls_base_url}/apps/{emu.app_id}/sessions/new"
        calls_error(await anon.post(url), 401)
        calls_error(await anon.post(url, headers={"Authorization": "Bearer wrong"}), 401)
        other_app = f"{emu.calls_base_url}/apps/other-app/sessions/new"
        calls_error(await anon.post(other_app, headers={"Authorization": f"Bearer {emu.app_secret}"}), 401)
        r = await anon.post(f"{emu.openai_base_url}/realtime/calls", content="v=0\r\n",
                            headers={"Content-Type": "application/sdp", "Authorization": "Bearer nope"})
        body = openai_error(r, 401)
        assert "sk-test" not in r.text and "nope" not in r.text
        assert body["error"]["code"] == "invalid_api_key"
    assert emu.calls.request_counts["sessions/new"] >= 3


async def test_pulling_a_missing_track_is_a_per_track_error(calls) -> None:
    sid = (await ok(await calls.post("/sessions/new"), 201))["sessionId"]
    other = (await ok(await calls.post("/sessions/new"), 201))["sessionId"]
    r = await calls.post(f"/sessions/{sid}/tracks/new", json={
        "tracks": [{"location": "remote", "sessionId": other, "trackName": "nope"}]})
    body = await ok(r)
    assert body["requiresImmediateRenegotiation"] is False
    assert body["tracks"][0]["errorCode"] == "not_found_track_error"
    r = await calls.put(f"/sessions/{sid}/tracks/close", json={"tracks": [{"mid": "9"}], "force": True})
    body = await ok(r)
    assert body["tracks"] == [{"mid": "9", "errorCode": "close_track_error",
                               "errorDescription": "Track doesn't exist or was already closed"}]
    calls_error(await calls.post(f"/sessions/{sid}/tracks/new", content=b"{not json"), 400)


# ---------------------------------------------------------------- OpenAI peer

async def test_realtime_call_data_channel_echo_and_hangup(emu: Emulators, openai) -> None:
    pc = loopback_peer_connection()
    channel = pc.createDataChannel("oai-events")
    events: asyncio.Queue = asyncio.Queue()
    channel.on("message", lambda m: events.put_nowait(json.loads(m)))
    pc.addTrack(ToneTrack(440))
    heard: list[AudioRecorder] = []
    pc.on("track", lambda t: heard.append(AudioRecorder(t)))
    await pc.setLocalDescription(await pc.createOffer())
    r = await create_call(openai, pc.localDescription.sdp, instructions="be brief",
                          audio={"output": {"voice": "marin"}})
    assert r.status_code == 201, r.text
    validate_openai_exchange(r)
    assert r.headers["content-type"].startswith("application/sdp")
    call_id = r.headers["location"].rsplit("/", 1)[1]
    assert r.headers["location"] == f"/v1/realtime/calls/{call_id}"
    await pc.setRemoteDescription(RTCSessionDescription(sdp=r.text, type="answer"))
    try:
        created = await asyncio.wait_for(events.get(), 5)
        assert created["type"] == "session.created" and created["event_id"]
        session = created["session"]
        assert (session["model"], session["instructions"], session["audio"]["output"]["voice"]) == (
            "gpt-realtime", "be brief", "marin")
        assert call_id in emu.openai.active_calls()
        recorder = heard[0]
        recorder.start()
        for _ in range(40):
            await asyncio.sleep(0.1)
            samples = recorder.samples(0.4)
            if rms(samples) > 300 and abs(dominant_frequency(samples, 48000) - 440) < 15:
                break
        assert abs(dominant_frequency(recorder.samples(0.4), 48000) - 440) < 15
        r = await openai.post(f"/realtime/calls/{call_id}/hangup")
        assert r.status_code == 200
        validate_openai_exchange(r)
        assert call_id not in emu.openai.active_calls()
        openai_error(await openai.post(f"/realtime/calls/{call_id}/hangup"), 404)
        openai_error(await openai.post("/realtime/calls/rtc_nope/hangup"), 404)
        openai_error(await openai.post("/realtime/calls", content="hello",
                                       headers={"Content-Type": "application/sdp"}), 400)
    finally:
        await recorder.stop()
        await pc.close()


# ---------------------------------------------------------------- the AI flow, end to end

async def create_ai_session(calls, openai, correlation_id: str) -> tuple[str, str]:
    """The AI flow exactly as the room's agent runs it: returns (sessionId, call_id)."""
    sid = (await ok(await calls.post("/sessions/new", params={
        "thirdparty": "true", "correlationId": correlation_id}), 201))["sessionId"]
    body = await ok(await calls.post(f"/sessions/{sid}/tracks/new", json={"tracks": [{
        "location": "local", "trackName": AI_TRACK, "bidirectionalMediaStream": True, "kind": "audio"}]}))
    assert body["requiresImmediateRenegotiation"] is True
    assert body["sessionDescription"]["type"] == "offer"
    assert body["tracks"][0]["trackName"] == AI_TRACK and body["tracks"][0]["mid"]
    r = await create_call(openai, body["sessionDescription"]["sdp"])
    assert r.status_code == 201, r.text
    validate_openai_exchange(r)
    call_id = r.headers["location"].rsplit("/", 1)[1]
    assert await ok(await calls.put(f"/sessions/{sid}/renegotiate", json={
        "sessionDescription": {"type": "answer", "sdp": r.text}})) == {}
    return sid, call_id


async def give_control(calls, ai_sid: str, session_id: str, track_name: str) -> dict:
    body = await ok(await calls.post(f"/sessions/{ai_sid}/tracks/new", json={"tracks": [{
        "location": "remote", "sessionId": session_id, "trackName": track_name, "mid": f"#{AI_TRACK}"}]}))
    assert body["requiresImmediateRenegotiation"] is False
    assert "errorCode" not in body["tracks"][0]
    return body


async def test_ai_flow_end_to_end_with_real_media(emu: Emulators, calls, openai) -> None:
    creds = (emu.calls_base_url, emu.app_id, emu.app_secret)
    async with Participant(*creds, freq_hz=440) as a, Participant(*creds, freq_hz=660) as b:
        a_sid, a_track = await a.publish()
        ai_sid, call_id = await create_ai_session(calls, openai, "meeting-e2e")
        assert ai_sid in emu.calls.open_sessions() and call_id in emu.openai.active_calls()

        a_pull_mid = await a.pull(ai_sid, AI_TRACK)
        await asyncio.sleep(0.8)
        freq, level = a.heard(0.4)
        assert level < 300 or abs(freq - 440) > 50, (freq, level)  # silence: nobody controls the AI

        body = await give_control(calls, ai_sid, a_sid, a_track)
        ai_mid = body["tracks"][0]["mid"]
        assert abs(await a.wait_for_frequency(440) - 440) < 15  # A hears its own voice echoed

        b_sid, b_track = await b.publish()
        body = await give_control(calls, ai_sid, b_sid, b_track)
        assert body["tracks"][0]["mid"] == ai_mid  # the same bidirectional transceiver
        assert abs(await a.wait_for_frequency(660) - 660) < 15  # only the newest controller

        state = await ok(await calls.get(f"/sessions/{ai_sid}"))
        assert {(t["trackName"], t["status"]) for t in state["tracks"]} == {(AI_TRACK, "active")}

        # release everything: tracks closed (force), OpenAI call hung up
        for sid, mids in ((a_sid, ["0", a_pull_mid]), (b_sid, ["0"]), (ai_sid, [ai_mid])):
            body = await ok(await calls.put(f"/sessions/{sid}/tracks/close",
                                            json={"tracks": [{"mid": m} for m in mids], "force": True}))
            assert all("errorCode" not in t for t in body["tracks"]), body
            assert sid not in emu.calls.open_sessions()
        body = await ok(await calls.put(f"/sessions/{ai_sid}/tracks/close",
                                        json={"tracks": [{"mid": ai_mid}], "force": True}))
        assert body["tracks"][0]["errorCode"] == "close_track_error"
        state = await ok(await calls.get(f"/sessions/{ai_sid}"))
        assert [t["status"] for t in state["tracks"]] == ["inactive"]
        r = await openai.post(f"/realtime/calls/{call_id}/hangup")
        assert r.status_code == 200
        assert call_id not in emu.openai.active_calls()
        assert not [t for t in emu.calls.active_tracks() if t[0] in (a_sid, b_sid, ai_sid)]


# ---------------------------------------------------------------- fault switches

async def test_fault_5xx_once_then_ok(emu: Emulators, calls, openai) -> None:
    emu.calls.faults.set("sessions/new", status=503, times=1)
    body = calls_error(await calls.post("/sessions/new"), 503)
    assert body["errorCode"] == "internal_error"
    await ok(await calls.post("/sessions/new"), 201)
    emu.openai.faults.set("realtime/calls", status=500, times=1)
    openai_error(await openai.post("/realtime/calls", content="v=0\r\n",
                                   headers={"Content-Type": "application/sdp"}), 500)
    assert emu.openai.faults.list() == []


async def test_fault_delay_triggers_client_timeout(emu: Emulators, calls) -> None:
    emu.calls.faults.set("*/sessions/new", delay=1.0, times=1)  # a path glob
    with pytest.raises(httpx.ReadTimeout):
        await calls.post("/sessions/new", timeout=0.3)
    await ok(await calls.post("/sessions/new", timeout=0.5), 201)


async def test_faults_over_http_and_malformed_answer(emu: Emulators, calls, openai) -> None:
    async with httpx.AsyncClient(timeout=5) as control:
        r = await control.post(emu.calls_faults_url, json={"match": "tracks/new", "malformed_answer": True,
                                                           "times": 1})
        assert r.status_code == 201 and r.json()["times"] == 1
        assert (await control.post(emu.calls_faults_url, json={"match": "x"})).status_code == 422
        r = await control.post(emu.openai_faults_url, json={"match": "realtime/calls", "malformed_answer": True})
        assert r.status_code == 201
        assert len((await control.get(emu.openai_faults_url)).json()["faults"]) == 1

        sid = (await ok(await calls.post("/sessions/new"), 201))["sessionId"]
        r = await calls.post(f"/sessions/{sid}/tracks/new", json={"tracks": [{
            "location": "local", "trackName": AI_TRACK, "bidirectionalMediaStream": True, "kind": "audio"}]})
        body = await ok(r)
        assert not body["sessionDescription"]["sdp"].startswith("v=")
        r = await create_call(openai, _minimal_offer())
        assert r.status_code == 201 and not r.text.startswith("v=")

        assert (await control.delete(emu.openai_faults_url)).status_code == 204
        assert emu.openai.faults.list() == []
        r = await create_call(openai, _minimal_offer())
        assert r.status_code == 201 and r.text.startswith("v=")
        call_id = r.headers["location"].rsplit("/", 1)[1]
        assert (await openai.post(f"/realtime/calls/{call_id}/hangup")).status_code == 200


_OFFER: list[str] = []


def _minimal_offer() -> str:
    """An audio-only SDP offer from a throw-away aiortc peer (made once, in the test loop)."""
    return _OFFER[0]


@pytest.fixture(autouse=True)
async def _offer() -> None:
    if not _OFFER:
        pc = loopback_peer_connection()
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        _OFFER.append(pc.localDescription.sdp)
        await pc.close()
