"""The meeting page the gateway serves to browsers, and its built script.

=======================  ===========================================================
``GET /``                pick a name (development mode) and a room
``POST /set-username``   development mode: form field ``username`` -> the session
                         cookie (:data:`actors.auth.SESSION_COOKIE`), then a 303 to
                         ``/meet/<room>`` (form field ``room``) or the ``return-url``
                         query parameter (a local path; default ``/``)
``GET /meet?room=<r>``   303 to ``/meet/<r>``
``GET /meet/{room}``     the meeting: users and their state, mic on/off, the others'
                         audio, enable/disable the AI, hold to talk to it, errors
``GET /web/{name}``      the page's built script (``meeting.js``)
=======================  ===========================================================

The script (``web/src/meeting.js``) uses Cloudflare's own browser libraries from npm,
partysocket and partytracks; ``rooms web build`` (``npm ci`` + esbuild) writes it to
``actors/gateway/static``, package data that the wheel carries (the package build runs
the same build). :func:`load_web_assets` reads it, with :mod:`importlib.resources`, in
the process that deploys the gateway, which hands the bytes to every replica (so
replicas on other nodes need no build). Without a build the meeting page answers 503
saying how to build it.
"""

from __future__ import annotations

import html
import importlib.resources
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse, Response

__all__ = ["WEB_DIST_ENV", "WebAssets", "base_path", "index_page", "load_web_assets", "meeting_page",
           "safe_return_path", "web_dist_dir"]

WEB_DIST_ENV = "ROOMS_WEB_DIST"
"""Environment variable naming the directory of the built script (default: the
package's ``actors/gateway/static``)."""

_ASSET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\.js")
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; media-src 'self' blob: mediastream:; "
        "img-src 'self' data:; frame-ancestors 'none'")

_STYLE = """
body{font:16px/1.4 system-ui,sans-serif;margin:0;background:#fafaf7;color:#222}
main{max-width:44rem;margin:2rem auto;padding:0 1rem}
h1{font-size:1.5rem} h1 small{font-weight:normal;color:#777;font-size:.9rem}
form{display:grid;gap:.75rem;max-width:20rem}
input,button{font:inherit;padding:.45rem .7rem;border-radius:.4rem;border:1px solid #bbb}
button{background:#f38020;color:#fff;border-color:#d96a10;cursor:pointer}
button:disabled{background:#ccc;border-color:#bbb;cursor:default}
.controls{display:flex;gap:.5rem;flex-wrap:wrap;margin:1rem 0}
#users{list-style:none;padding:0} #users li{display:flex;gap:1rem;padding:.5rem;
border-bottom:1px solid #e5e5e0} #users .name{flex:1;font-weight:600}
#users .mic,#users .heard{color:#555;min-width:8rem}
#errors{color:#b00020} #status,#ai-state{color:#555} #captions{background:#111;color:#fff;padding:.4em 1.6em;min-height:1em}
"""


def _page(title: str, body: str, script: str | None = None) -> HTMLResponse:
    tag = (f'<script src="{html.escape(script, quote=True)}" defer></script>' if script
           else "")
    return HTMLResponse(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>{tag}</head>"
        f"<body><main>{body}</main></body></html>",
        headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
                 "Cache-Control": "no-store"})


@dataclass(frozen=True)
class WebAssets:
    """The built scripts of the meeting page, by file name (``{"meeting.js": bytes}``),
    or none when the page was not built."""

    scripts: dict[str, bytes] = field(default_factory=dict)

    @property
    def built(self) -> bool:
        """Whether the meeting page's script is there."""
        return "meeting.js" in self.scripts

    def response(self, name: str) -> Response:
        """The script ``name`` (``application/javascript``), or 404."""
        body = self.scripts.get(name) if _ASSET_NAME.fullmatch(name) else None
        if body is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(body, media_type="application/javascript",
                        headers={"Cache-Control": "no-cache",
                                 "X-Content-Type-Options": "nosniff"})


def web_dist_dir() -> Path:
    """Where the built script is: ``$ROOMS_WEB_DIST``, else the package data directory
    ``static`` of :mod:`actors.gateway` (an installed wheel, a clone, an editable
    install alike)."""
    configured = os.environ.get(WEB_DIST_ENV)
    if configured:
        return Path(configured)
    return Path(str(importlib.resources.files("actors.gateway").joinpath("static")))


def load_web_assets(directory: Path | None = None) -> WebAssets:
    """Read the built ``*.js`` files of ``directory`` (default :func:`web_dist_dir`).

    Returns:
        The :class:`WebAssets` (empty when the directory does not exist). Raises nothing.
    """
    directory = directory or web_dist_dir()
    scripts: dict[str, bytes] = {}
    if directory.is_dir():
        for path in sorted(directory.glob("*.js")):
            if _ASSET_NAME.fullmatch(path.name):
                scripts[path.name] = path.read_bytes()
    return WebAssets(scripts)


def safe_return_path(value: str | None, default: str = "/") -> str:
    """``value`` if it is a path on this site (``/...``, not ``//host`` or ``/\\host``,
    no scheme, no control characters), else ``default`` (an open-redirect guard, as
    Orange's ``safeRedirect``)."""
    if (not value or not value.startswith("/") or value.startswith(("//", "/\\"))
            or any(ord(c) < 32 for c in value)):
        return default
    return value


def base_path(request: Any) -> str:
    """The path the gateway application is served under: Serve's route prefix, which
    it gives the application as the ASGI ``root_path`` (``""`` at ``/``). Every link,
    redirect and cookie path of the pages starts with it."""
    return str(request.scope.get("root_path") or "").rstrip("/")


def index_page(dev: bool, name: str | None, room: str | None = None, *,
               base: str = "") -> HTMLResponse:
    """The start page: a name field (development mode) and a room field.

    Args:
        dev: the gateway runs in development mode (the name is asked for and kept in
            the session cookie).
        name: the caller's name if already known, to fill in.
        room: the room to fill in (default ``lobby``).
        base: the application's route prefix (:func:`base_path`).
    """
    value = html.escape(name or "", quote=True)
    room_value = html.escape(room or "lobby", quote=True)
    who = (f'<label>Your name <input name=username required maxlength=64 autocomplete=off '
           f'value="{value}" autofocus></label>' if dev else
           f"<p>Signed in as <b>{html.escape(name)}</b></p>" if name else
           "<p>Sign in through your organisation's proxy first.</p>")
    action = html.escape(base + ("/set-username" if dev else "/meet"), quote=True)
    method = "post" if dev else "get"
    body = (f"<h1>ray-rooms <small>meetings on Ray</small></h1>"
            f"<form method={method} action=\"{action}\">{who}"
            "<label>Room <input name=room required maxlength=64 pattern=\"[A-Za-z0-9_.:\\-]+\" "
            f"value=\"{room_value}\"></label><button type=submit>Join</button></form>")
    return _page("ray-rooms", body)


def meeting_page(room: str, name: str, assets: WebAssets, *, base: str = "") -> HTMLResponse:
    """The meeting page of ``room`` for user ``name`` (see the module docstring), or a
    503 page saying how to build the script when it is missing. ``base`` is the
    application's route prefix (:func:`base_path`): the script connects under it."""
    if not assets.built:
        response = _page("meeting page not built", "<h1>The meeting page is not built</h1>"
                         "<p>Run <code>rooms web build</code> (needs Node.js and npm), then "
                         "restart <code>rooms serve</code>.</p>")
        response.status_code = 503
        return response
    config = json.dumps({"room": room, "name": name, "base": base}).replace("<", "\\u003c")
    body = (f"<h1>{html.escape(room)} <small id=status>connecting…</small></h1>"
            f'<script type="application/json" id="rooms-config">{config}</script>'
            "<div class=controls><button id=mic aria-pressed=true>Mic on</button>"
            "<button id=ai-toggle>Enable AI</button>"
            "<button id=ai-talk disabled>Hold to talk to AI</button></div>"
            "<p id=ai-state>AI off</p><ol id=captions aria-live=polite></ol>"
            "<ul id=users></ul><ul id=errors></ul>")
    return _page(f"{room} · ray-rooms", body, base + "/web/meeting.js")
