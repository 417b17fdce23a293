"""Building the meeting page's script: ``npm ci`` and esbuild in ``web/`` (``rooms web
build``, and the package build: ``setup.py``'s ``build_py`` runs it when the script is
missing, so a wheel carries it). The result, ``actors/gateway/static/meeting.js``
(package data), is what :mod:`actors.gateway.pages` serves; nothing third-party is
committed, the build fetches it from npm.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Callable

__all__ = ["WebBuildError", "build_web", "static_dir", "web_source_dir"]


class WebBuildError(RuntimeError):
    """The meeting page could not be built (no npm, no sources, or a failing step); the
    message says which and how to fix it."""


def static_dir() -> Path:
    """Where the build writes the script: ``actors/gateway/static`` (package data)."""
    return Path(__file__).resolve().parent / "gateway" / "static"


def web_source_dir() -> Path:
    """The page's npm project (``web/`` beside the package: a clone or an editable
    install)."""
    return Path(__file__).resolve().parents[1] / "web"


def build_web(echo: Callable[[str], None] = print, *, timeout_s: float = 600.0) -> Path:
    """Install the page's npm packages (``npm ci``, from ``package-lock.json``) and bundle
    ``web/src/meeting.js`` (``npm run build``).

    Args:
        echo: where progress lines go.
        timeout_s: seconds each npm step may take.

    Returns:
        The directory of the built script (``actors/gateway/static``).

    Raises:
        WebBuildError: npm is missing, ``web/`` is missing, or a step failed (its last
            output lines are in the message).
    """
    source = web_source_dir()
    if not (source / "package.json").is_file():
        raise WebBuildError(f"no web/package.json at {source}: build from a clone of ray-rooms")
    npm = shutil.which("npm")
    if npm is None:
        raise WebBuildError("npm is not installed (Debian: apt-get install nodejs npm)")
    steps = [[npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
             [npm, "run", "--silent", "build"]]
    for step in steps:
        echo(f"web: npm {step[1] if step[1] == 'ci' else 'run build'} …")
        try:
            done = subprocess.run(step, cwd=source, capture_output=True, text=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise WebBuildError(f"`npm {step[1]}` took more than {timeout_s:g} s") from None
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise WebBuildError(f"`npm {step[1]}` failed (exit {done.returncode}):\n{tail}")
    dist = static_dir()
    if not (dist / "meeting.js").is_file():
        raise WebBuildError(f"the build ran but wrote no {dist / 'meeting.js'}")
    echo(f"web: built {dist / 'meeting.js'} ({(dist / 'meeting.js').stat().st_size} bytes)")
    return dist
