"""The ``rooms`` command line.

``rooms ls [--json]``                the rooms: stored snapshots and live actors
``rooms show ROOM``                  a room's state (``RoomState`` JSON) and its actor facts
``rooms send ROOM --as CONN 'JSON'`` send a protocol message to a room as a connection
``rooms serve``                      start Ray (or join one), deploy the gateway
``rooms token NAME``                 print a signed identity token
``rooms config``                     print the effective settings (secrets redacted)
``rooms slots``                      this node's room slots, as ``ray start --resources``
``rooms demo``                       a scripted meeting with real clients and media
``rooms --version``                  the installed version

``--address`` names a running Ray cluster (``auto`` for the local one). ``ls``,
``show`` and ``send`` join a local Ray if one runs, or start one; ``serve`` and
``demo`` start a new local Ray unless given ``--address``. ``show`` and ``send`` never
create a room: a room with neither a snapshot nor a live actor is reported as unknown.
Settings come from ``ROOMS_*`` environment variables (see :mod:`actors.config`);
secrets are never printed.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from .config import RoomsConfig

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Chat rooms as Ray actors (ray-rooms).")

AddressOption = typer.Option(
    None, "--address", help="Ray cluster address ('auto': the local cluster; default: "
    "join a local Ray if one runs, else start one)."
)
NewRayAddressOption = typer.Option(
    None, "--address", help="Ray cluster address to join ('auto': the local cluster; "
    "default: start a new local Ray for this run)."
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"ray-rooms {version('ray-rooms')}")
        except PackageNotFoundError:  # pragma: no cover - run from a bare checkout
            typer.echo("ray-rooms (not installed)")
        raise typer.Exit()


@app.callback()
def _main(
    _version_flag: bool = typer.Option(False, "--version", callback=_version,
                                       is_eager=True, help="Print the version and exit."),
) -> None:
    """Chat rooms as Ray actors (ray-rooms)."""


def _init_ray(address: str | None, config: RoomsConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs = {"namespace": config.namespace, "configure_logging": False,
              "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
        return
    try:
        ray.init(address="auto", **kwargs)
    except (ConnectionError, RuntimeError):
        ray.init(include_dashboard=False, **kwargs)


def _print_json(value) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


@app.command("ls")
def ls(address: Optional[str] = AddressOption,
       as_json: bool = typer.Option(False, "--json", help="print a JSON list of "
                                    "{room, stored, actor, node}")) -> None:
    """List rooms: those with a stored snapshot and those with a live actor, with the
    node each live one runs on (cluster-wide)."""
    import asyncio

    from storage import open_store

    from .directory import list_room_actors

    config = RoomsConfig()
    _init_ray(address, config)

    async def stored() -> list[str]:
        store = open_store(config.store_url)
        try:
            return await store.list_rooms()
        finally:
            await store.close()

    rooms = {room: {"room": room, "stored": True, "actor": None, "node": None}
             for room in asyncio.run(stored())}
    for row in list_room_actors(config.namespace):
        entry = rooms.setdefault(row["room"], {"room": row["room"], "stored": False})
        entry.update(actor=row["state"], node=row["node"])
    if as_json:
        _print_json(sorted(({"room": r["room"], "stored": r["stored"],
                             "actor": r.get("actor"), "node": r.get("node")}
                            for r in rooms.values()), key=lambda r: r["room"]))
        return
    if not rooms:
        typer.echo("no rooms")
        return
    typer.echo(f"{'ROOM':40} {'STORED':7} {'ACTOR':11} NODE")
    for row in sorted(rooms.values(), key=lambda r: r["room"]):
        typer.echo(f"{row['room']:40} {'yes' if row['stored'] else 'no':7} "
                   f"{row['actor'] or '-':11} {row.get('node') or '-'}")


def _known_or_exit(room: str, config: RoomsConfig) -> None:
    """Exit 2 with a message, creating nothing, when ``room`` is not a valid room id
    or has neither a live actor nor a stored snapshot."""
    import asyncio

    import ray

    from storage import open_store

    from .directory import actor_name, validate_room_id
    from .errors import InvalidRoomId

    try:
        validate_room_id(room)
    except InvalidRoomId as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        ray.get_actor(actor_name(room), namespace=config.namespace)
        return
    except ValueError:
        pass

    async def stored() -> bool:
        store = open_store(config.store_url)
        try:
            return await store.load(room) is not None
        finally:
            await store.close()

    if not asyncio.run(stored()):
        typer.echo(f"error: no room {room!r} (no snapshot in the store and no live actor "
                   f"in namespace {config.namespace!r}); nothing was created", err=True)
        raise typer.Exit(2)


@app.command("show")
def show(room: str, address: Optional[str] = AddressOption) -> None:
    """Print ROOM's state (RoomState JSON) and its actor facts (epoch, seq, counts)."""
    import ray

    from .directory import get_room
    from .room_client import RoomClient

    config = RoomsConfig()
    _init_ray(address, config)
    _known_or_exit(room, config)
    client = RoomClient(get_room(room, config))
    state, info = ray.get([client.state(), client.info()])
    _print_json({"state": state, "actor": info.record()})


@app.command("transcript")
def transcript_cmd(room: str, address: Optional[str] = AddressOption,
                   as_json: bool = typer.Option(False, "--json", help="print the JSON object")
                   ) -> None:
    """Print the AI transcript of ROOM's meeting (the current one, else the last one):
    one line per utterance, ``speaker: text``, oldest first."""
    import ray

    from .directory import get_room
    from .room_client import RoomClient

    config = RoomsConfig()
    _init_ray(address, config)
    _known_or_exit(room, config)
    found = ray.get(RoomClient(get_room(room, config)).transcript("cli", operator=True))
    if as_json:
        _print_json(found.record())
        return
    if not found.lines:
        typer.echo(f"room {room!r} has no transcript")
        return
    typer.echo(f"meeting {found.meetingId}")
    for line in found.lines:
        typer.echo(f"{line.get('name') or line.get('speaker') or '?'}: {line['text']}")


@app.command("send")
def send(
    room: str,
    message: str = typer.Argument(..., help="the protocol message, as JSON text"),
    conn: str = typer.Option(..., "--as", help="the connection id to send as: a connected "
                             "socket's, or http:<name> (a connection with no open socket "
                             "cannot act for its user)"),
    address: Optional[str] = AddressOption,
) -> None:
    """Send one protocol MESSAGE to ROOM as connection CONN and print the replies."""
    import ray

    from .directory import get_room
    from .room_client import RoomClient

    config = RoomsConfig()
    _init_ray(address, config)
    _known_or_exit(room, config)
    client = RoomClient(get_room(room, config))
    start = ray.get(client.poll(None, 0)).cursor
    seq = ray.get(client.message(conn, message))
    entries = ray.get(client.poll(start, 0)).entries if seq > start else ()
    replies = [json.loads(e.data) for e in entries if e.data and e.reaches(conn)]
    _print_json({"seq": seq, "replies": replies})
    if any(r.get("type") == "error" for r in replies):
        sys.exit(1)


def bytecode_warning() -> str | None:
    """The warning ``rooms serve`` and ``rooms demo`` print when every room's process
    would compile the room runtime again (:func:`actors.warmpool.missing_bytecode`), or
    ``None``. Names the package directories to compile and the command that does it."""
    from .warmpool import missing_bytecode

    missing = missing_bytecode()
    if not missing:
        return None
    count = sum(len(files) for files in missing.values())
    return (f"WARNING: {count} source files of the room runtime have no bytecode "
            f"and PYTHONDONTWRITEBYTECODE is set, so every room's process compiles them "
            f"when it starts (~0.1 s of CPU each); compile them once: python -m "
            f"compileall -q {' '.join(sorted(missing))} (docs/operating.md, \"Bytecode\")")


@app.command("serve")
def serve_cmd(
    address: Optional[str] = NewRayAddressOption,
    host: str = typer.Option("127.0.0.1", help="the gateway's listen address"),
    port: int = typer.Option(8000, help="the gateway's port (0: any free port)"),
    replicas: int = typer.Option(1, help="gateway replicas"),
    dev: bool = typer.Option(False, "--dev", help="development mode: accept ?username= and "
                             "the meeting page's name cookie without a token"),
    ingress: Optional[str] = typer.Option(
        None, help="haproxy (Serve's HAProxy + direct ingress) or proxy (Serve's proxy "
                   "actor); default ROOMS_GATEWAY_INGRESS or haproxy"),
    emulators: Optional[bool] = typer.Option(
        None, "--emulators/--no-emulators", help="start the local Calls and OpenAI "
        "emulators for the AI agent (default: with --dev when no credentials are set)"),
) -> None:
    """Start a local Ray (or join one with --address) and deploy the gateway (with the
    alarm scheduler and the warm pools); print the URLs and wait (Ctrl-C stops).
    Outside --dev it needs ROOMS_TOKEN_SECRET; the local Calls and OpenAI emulators
    start with --dev (when no credentials are set) or --emulators."""
    import signal
    import time

    from .auth import AuthSettings
    from .errors import StoreNotShared
    from .system import start_system

    if not dev and AuthSettings().dev_auth:
        dev = True
        typer.echo("WARNING: development mode is on (ROOMS_DEV_AUTH=true in the "
                   "environment): anyone is admitted by name and every identity is an "
                   "operator", err=True)
    warning = bytecode_warning()
    if warning:
        typer.echo(warning, err=True)
    typer.echo("starting…")
    # a new local Ray unless told to join one (--address auto joins the local cluster)
    try:
        system = start_system(address=address or "local", host=host, port=port,
                              replicas=replicas, dev=dev, ingress=ingress,
                              emulators=emulators)
    except (StoreNotShared, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    # before anything is printed: a SIGTERM right after the URLs must stop cleanly (Ray's
    # own handler, installed by ray.init, would dump a stack and kill the process). The
    # handler takes no lock: it runs in the main thread between two bytecodes, and a
    # threading.Event.set() there would deadlock if the signal landed while that thread
    # held the Event's own (non-reentrant) lock inside Event.wait; a suspect for the one
    # loaded CI run whose serve never printed "stopping" (not reproduced).
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop.append(signum))
    for what, url in system.urls.items():
        typer.echo(f"{what:16} {url}")
    typer.echo("identity: signed tokens (ROOMS_TOKEN_SECRET)" + (
        ", or ?username= and the meeting page's name cookie (--dev: development mode, "
        "every identity is an operator)"
        if dev else "; operators: a token with \"operator\": true, or the "
                    "X-Rooms-Operator header with ROOMS_OPERATOR_SECRET"))
    try:
        while not stop:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("stopping…")
        if not system.stop():
            import os

            # Ray is gone: its exit handlers would wait for it too
            typer.echo(f"stopped without Ray (it did not answer within "
                       f"{system.stop_timeout_s:.0f} s)", err=True)
            sys.stdout.flush()
            os._exit(1)


@app.command("token")
def token(
    name: str = typer.Argument(..., help="the user's name (the token's sub claim)"),
    operator: bool = typer.Option(False, "--operator", help="add \"operator\": true "
                                  "(the operator routes, every room)"),
    room: Optional[list[str]] = typer.Option(None, "--room", help="admit only this room "
                                             "(repeatable): the rooms claim"),
    ttl: float = typer.Option(3600.0, "--ttl", help="seconds until it expires (exp)"),
) -> None:
    """Print a signed identity token (HS256 with ROOMS_TOKEN_SECRET). Claims: sub (the
    name), iat, exp, and optionally operator and rooms; see docs/operating.md."""
    from .auth import AuthSettings, issue_token
    from .errors import AuthError

    secret = AuthSettings().token_secret
    if secret is None:
        typer.echo("error: ROOMS_TOKEN_SECRET is not set (the gateway's token secret, at "
                   "least 32 bytes)", err=True)
        raise typer.Exit(2)
    try:
        typer.echo(issue_token(name, secret, ttl, operator=operator, rooms=room or None))
    except (AuthError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


@app.command("slots")
def slots_cmd() -> None:
    """Print this node's room slots as `ray start --resources` JSON: {"room_slot": N}
    (ROOMS_MAX_LIVE_ROOMS, else from the node's memory). For example:
    ray start --head --resources="$(rooms slots)"."""
    from .slots import slot_resources

    typer.echo(json.dumps({k: int(v) for k, v in slot_resources(RoomsConfig()).items()}))


@app.command("config")
def config_cmd() -> None:
    """Print the effective settings (ROOMS_*, CALLS_*, OPENAI_* and their defaults) as
    JSON; secrets and store passwords are redacted."""
    from bridges.config import CallsSettings, OpenAISettings
    from storage import redact_url

    from .auth import AuthSettings
    from .gateway.limits import GatewayLimits

    def dump(model) -> dict:
        return json.loads(model.model_dump_json())  # SecretStr prints as **********

    rooms = dump(RoomsConfig())
    rooms["store_url"] = redact_url(rooms["store_url"])
    _print_json({"rooms": rooms, "auth": dump(AuthSettings()),
                 "gateway": dump(GatewayLimits()), "calls": dump(CallsSettings()),
                 "openai": dump(OpenAISettings())})


web = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The meeting page served by the gateway (GET /, GET /meet/{room}).")
app.add_typer(web, name="web")


@web.command("build")
def web_build() -> None:
    """Build the meeting page's script: `npm ci` and esbuild in web/ (needs Node.js and
    npm). It is written to the package (actors/gateway/static; a wheel carries it
already); `rooms serve` serves it from there on its next start."""
    from .webbuild import WebBuildError, build_web

    try:
        build_web(echo=typer.echo)
    except WebBuildError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


@app.command("demo")
def demo(address: Optional[str] = NewRayAddressOption) -> None:
    """Run a scripted meeting with real clients and media against a fresh local system;
    print a timeline and a summary; exit 1 if a step fails."""
    from .demo import run_demo

    warning = bytecode_warning()
    if warning:
        typer.echo(warning, err=True)
    if not run_demo(address=address, echo=typer.echo):
        raise typer.Exit(1)


def _one_line_summaries(*apps: typer.Typer) -> None:
    """Give every command of ``apps`` that has no ``short_help`` the first paragraph of
    its docstring on one line: the commands' list of ``rooms --help`` otherwise keeps
    the docstring's line breaks (typer's rich help re-wraps only a command's own page)."""
    for typer_app in apps:
        for info in typer_app.registered_commands:
            doc = info.help or (info.callback.__doc__ if info.callback else None)
            if info.short_help is None and doc:
                info.short_help = " ".join(doc.strip().split("\n\n")[0].split())


_one_line_summaries(app, web)


def main() -> None:  # pragma: no cover - console entry point
    """Run the ``rooms`` command line."""
    app()


if __name__ == "__main__":  # python -m actors.cli
    main()
