"""Helpers for the browser-facing tests: a development-mode gateway in front of the local
Calls and OpenAI emulators (what ``rooms serve --dev`` runs), and headless Chromium
(Debian's ``chromium`` and ``chromium-driver``, driven by Selenium) with a fake
microphone playing a WAV tone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
import wave
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from pydantic import SecretStr

from actors.config import RoomsConfig, ServiceEndpoints
from actors.gateway import GatewayLimits, deploy_gateway, shutdown_gateway
from actors.gateway.pages import load_web_assets
from actors.net import free_port
from bridges.local import start_emulators

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[1]


def artifact_dir(*parts: str) -> Path:
    """A directory for test artifacts (screenshots): ``$ROOMS_TEST_ARTIFACTS`` or
    ``test-artifacts/`` in the repository, plus ``parts``; created if missing."""
    root = Path(os.environ.get("ROOMS_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def browser_gateway(app: str, tmp_dir: Path) -> Iterator[dict[str, Any]]:
    """The emulators and a development-mode gateway ``app`` using them; yields
    ``{"url", "config", "emulators", "app_secret"}``.

    Raises:
        AssertionError: the meeting page's script is not built (``rooms web build``;
            ``.ci/run`` builds it).
    """
    assert load_web_assets().built, "the meeting page is not built: run `rooms web build`"
    app_secret = "calls-secret-" + secrets.token_urlsafe(12)
    api_key = "sk-test-" + secrets.token_urlsafe(8)
    with start_emulators(app_id="browser-app", app_secret=app_secret, api_key=api_key) as emu:
        config = RoomsConfig(
            namespace=f"rooms-{app}-{uuid.uuid4().hex[:8]}",
            store_url=f"sqlite:///{tmp_dir / 'rooms.sqlite3'}", idle_timeout=0,
            poll_timeout=5.0,
            services=ServiceEndpoints(
                calls_base_url=emu.calls_base_url, calls_app_id="browser-app",
                calls_app_secret=SecretStr(app_secret), openai_base_url=emu.openai_base_url,
                openai_api_key=SecretStr(api_key)))
        url = deploy_gateway(config, port=free_port(), name=app, dev=True,
                             limits=GatewayLimits(rate_per_s=1000, burst=1000))
        try:
            yield {"url": url, "config": config, "emulators": emu, "app_secret": app_secret}
        finally:
            shutdown_gateway(app)


def tone_wav(path: Path, freq_hz: float, seconds: float = 2.0, rate: int = 48000) -> Path:
    """Write a mono 16-bit WAV of a ``freq_hz`` sine (whole periods, so Chromium's loop
    of it has no click) and return ``path``."""
    n = int(rate * seconds)
    n -= n % int(rate // np.gcd(int(rate), int(freq_hz)))
    t = np.arange(n) / rate
    samples = (0.3 * 32767 * np.sin(2 * np.pi * freq_hz * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def chromium(wav: Path):
    """A headless Chromium whose microphone plays ``wav`` (Selenium ``WebDriver``).

    Raises:
        AssertionError: Debian's chromium or chromium-driver is missing (``.ci/run``
            installs them).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for binary in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(binary), f"{binary} is missing: apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={wav}",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=900,600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
