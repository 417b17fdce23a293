"""The wheel, for real (issue 20): built from the repository's tracked files alone (no
built page, no node_modules: the package build runs ``npm ci`` and esbuild itself),
installed in a fresh virtual environment with no checkout on the path, and run from
there: ``rooms serve --dev`` serves ``/meet/{room}`` and its script, and ``rooms demo``
passes.

The virtual environment takes the heavy dependencies (Ray, aiortc, ...) from this
interpreter's site-packages (``--system-site-packages``) and installs the wheel itself
with ``--no-deps``; a check makes sure ``actors`` is imported from the wheel, not from
the checkout (whose editable install is on the base interpreter's path)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from actors.net import free_port

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ray  # it runs Ray (its own), one Ray-heavy thing at a time


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the tracked files (``git ls-files``)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    assert not (source / "actors" / "gateway" / "static").exists()
    out = tmp / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w",
                            str(out), str(source)], capture_output=True, text=True,
                           timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [whl] = out.glob("ray_rooms-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed (``bin/`` path)."""
    where = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(where)],
                   check=True, timeout=300)
    done = subprocess.run([str(where / "bin" / "python"), "-m", "pip", "install",
                           "--no-deps", "--quiet", str(wheel)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return where / "bin"


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RAY_ADDRESS", "ROOMS_WEB_DIST")}
    env.update(RAY_USAGE_STATS_ENABLED="0", ROOMS_STORE_URL=f"sqlite:///{tmp / 'r.sqlite3'}",
               PATH=f"{tmp}:{env.get('PATH', '')}")
    return env


def test_the_wheel_carries_the_built_page(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        page = archive.read("actors/gateway/static/meeting.js")
    assert len(page) > 10_000 and b"WebSocket" in page
    assert not any(n.startswith(("tests/", "web/")) for n in names), names[:20]


async def test_the_installed_wheel_serves_the_page_from_its_own_files(venv, tmp_path):
    """From the wheel, under a route prefix and an application name of its own
    (``ROOMS_GATEWAY_ROUTE_PREFIX``, ``ROOMS_GATEWAY_APP_NAME``): the page, its script
    and the room's WebSocket are all served under the prefix."""
    from tests.wsclient import open_client

    env = {**_env(tmp_path), "ROOMS_GATEWAY_ROUTE_PREFIX": "/meetings",
           "ROOMS_GATEWAY_APP_NAME": "wheel-rooms"}
    where = subprocess.run([str(venv / "python"), "-c",
                            "import actors; print(actors.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert str(ROOT) not in where and str(venv.parent) in where, where
    port = free_port()
    proc = subprocess.Popen([str(venv / "rooms"), "serve", "--dev", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/meetings/healthz",
                             timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "rooms serve from the wheel never answered"
            time.sleep(1)
        base = f"http://127.0.0.1:{port}/meetings"
        meet = httpx.get(f"{base}/meet/wheel-room", params={"username": "w"}, timeout=10)
        assert meet.status_code == 200, meet.text[:300]
        assert 'src="/meetings/web/meeting.js"' in meet.text and '"base": "/meetings"' in \
            meet.text, meet.text[:600]
        script = httpx.get(f"{base}/web/meeting.js", timeout=10)
        assert script.status_code == 200 and len(script.content) > 10_000
        start = httpx.get(f"{base}/", timeout=10)
        assert 'action="/meetings/set-username"' in start.text, start.text[:600]
        client = await open_client(base.replace("http://", "ws://")
                                   + "/parties/rooms/wheel-room?_pk=w1&username=w")
        try:
            await client.wait_for(lambda m: m["type"] == "roomState", "roomState", 60)
        finally:
            await client.ws.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.timeout(900)
def test_rooms_demo_passes_from_the_wheel(venv, tmp_path):
    done = subprocess.run([str(venv / "rooms"), "demo"], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "all ok" in done.stdout
