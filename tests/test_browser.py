"""A real browser in a real meeting: two headless Chromiums open the gateway's meeting
page, where Cloudflare's own client libraries from npm (partysocket, partytracks) join a
room through the gateway and its ``/partytracks`` proxy to the local Calls emulator.
Each fake microphone plays a tone (440 Hz, 660 Hz); each page hears the other's (a
WebAudio analyser finds the frequency). Alice enables the AI and holds the talk button;
Bob hears the AI's voice (the OpenAI emulator echoes Alice's 440 Hz). This shows a
browser's own SDP and ICE working with the Calls emulator, not only aiortc's.

A screenshot of the meeting with both participants goes to
``test-artifacts/browser/meeting.png`` (``$ROOMS_TEST_ARTIFACTS`` to move it).
"""

from __future__ import annotations


import pytest

from tests.browsers import artifact_dir, chromium, tone_wav
from tests.polling import until

pytestmark = [pytest.mark.ray, pytest.mark.media, pytest.mark.timeout(300)]

ALICE_HZ, BOB_HZ = 440.0, 660.0
TOLERANCE_HZ = 15.0


def _meeting(driver) -> dict:
    return driver.execute_script(
        "const m = window.roomsMeeting; return m && {id: m.id, state: m.state, "
        "heard: m.heard, errors: m.errors, published: m.published, "
        "captions: m.captions}") or {}


def _hears(driver, user_id: str, freq_hz: float) -> float | None:
    heard = _meeting(driver).get("heard", {}).get(user_id) or {}
    freq = heard.get("freq") or 0.0
    return freq if abs(freq - freq_hz) <= TOLERANCE_HZ else None


def _join(driver, base: str, name: str, room: str) -> str:
    """Sign in on the start page (development mode: the name cookie), join ``room``;
    return this page's connection id once it is in the room with a published mic."""
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    driver.find_element(By.NAME, "username").send_keys(name)
    field = driver.find_element(By.NAME, "room")
    field.clear()
    field.send_keys(room)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    until(f"{name}'s mic published", lambda: _meeting(driver).get("published"))
    return _meeting(driver)["id"]


def test_two_browsers_hear_each_other_and_the_ai(meeting_gateway, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    base, secret = meeting_gateway["url"], meeting_gateway["app_secret"]
    alice = chromium(tone_wav(tmp_path / "alice.wav", ALICE_HZ))
    bob = chromium(tone_wav(tmp_path / "bob.wav", BOB_HZ))
    try:
        alice_id = _join(alice, base, "alice", "browser-meeting")
        bob_id = _join(bob, base, "bob", "browser-meeting")

        # each hears the other's tone, through the SFU emulator
        until("alice hears bob's 660 Hz", lambda: _hears(alice, bob_id, BOB_HZ))
        until("bob hears alice's 440 Hz", lambda: _hears(bob, alice_id, ALICE_HZ))
        for driver, other in ((alice, "bob"), (bob, "alice")):
            names = {u["name"] for u in _meeting(driver)["state"]["users"] if u.get("joined")}
            assert names == {"alice", "bob"}, names
            assert other in driver.find_element(By.ID, "users").text
        alice.save_screenshot(str(artifact_dir("browser") / "meeting.png"))

        # alice enables the AI and holds to talk; bob hears the AI echo her 440 Hz
        alice.find_element(By.ID, "ai-toggle").click()
        until("the AI is enabled", lambda: _meeting(alice)["state"]["ai"].get("enabled"),
               timeout=60)
        talk = alice.find_element(By.ID, "ai-talk")
        ActionChains(alice).click_and_hold(talk).perform()
        until("alice controls the AI",
               lambda: _meeting(bob)["state"]["ai"].get("controllingUser") == alice_id)
        until("bob hears the AI's 440 Hz", lambda: _hears(bob, "ai", ALICE_HZ), timeout=60)
        until("bob still hears alice while she talks to the AI",
               lambda: _hears(bob, alice_id, ALICE_HZ), timeout=10)
        # the AI's transcript reaches bob's page as captions: alice's words, then its own
        until("bob's page shows alice's caption",
               lambda: "alice: tone 440 Hz" in bob.find_element(By.ID, "captions").text,
               timeout=30)
        captions = _meeting(bob)["captions"]
        assert any(c["speaker"] == alice_id and c["text"] == "tone 440 Hz" for c in captions)
        bob.save_screenshot(str(artifact_dir("browser") / "meeting-ai.png"))

        # releasing hands control back; the AI's ear gets silence again
        ActionChains(alice).release(talk).perform()
        until("control released",
               lambda: "controllingUser" not in _meeting(bob)["state"]["ai"])
        until("the AI falls silent for bob",
               lambda: (_meeting(bob)["heard"].get("ai") or {}).get("freq") == 0, timeout=30)

        for driver in (alice, bob):
            meeting = _meeting(driver)
            assert meeting["errors"] == [], meeting["errors"]
            # neither the Calls secret nor the HttpOnly cookies reach the page
            assert secret not in driver.page_source
            cookies = driver.execute_script("return document.cookie")
            assert "partytracks-session" not in cookies and "rooms-session" not in cookies
            # (the session locks live under /partytracks, so this page cannot list them;
            # every Calls request above needed its lock to pass)
            assert any(c["name"] == "rooms-session" and c["httpOnly"]
                       for c in driver.get_cookies())
    finally:
        alice.quit()
        bob.quit()
