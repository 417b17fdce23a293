"""The room's lane: a gateway replica on the room's own node calls the room's ``deliver``
and ``poll`` over a Unix socket instead of a Ray actor call.

Why. A Ray actor call from a Serve replica to an async actor costs ~1.1-1.6 ms here
(its submission, the task-execution thread's hand-off to the event loop, the reply's
way back); a request over a Unix socket between the same two event loops ~0.07-0.15 ms
(``python -m benchmarks.callcost --lane``). A WebSocket round trip is mostly that call
(see ``docs/performance.md``), so a room on the replica's node is reached this way.
Everything else stays a Ray call: resolving the room (``get_room``), its ``lane``
address, ``connect``, ``close``, the watch on a slow call (``RoomActor.activation``),
and every call to a room on another node.

The lane changes no guarantee, because it carries the very same calls
(``RoomActor.deliver_wire`` and ``RoomActor.poll_wire``: the same lists, the same
results) and fails the way a Ray call does. A lane that breaks (the room's process
died, or its activation ended and closed its server) fails every call still waiting on
it with :class:`LaneClosed`, which the gateway treats as Ray's ``RayActorError``: it
resolves the room again and sends the batch again, and the room applies a numbered
frame once (:mod:`actors.applied`). A room's own refusal (``RoomHibernating``,
``StorageUnavailable``, ...) comes back as that exception.

The protocol (ours, version :data:`VERSION`):

- transport: a Unix stream socket; on Linux in the abstract namespace (no file, gone
  with the process), elsewhere a file in a directory only the user can enter;
- every message: a 4-byte big-endian length, then that many bytes of msgpack (binary
  type on; strings UTF-8 with ``surrogatepass``); at most :data:`MAX_MESSAGE_BYTES`;
- the client's first message: ``[VERSION, token]``, the token the room handed out with
  the address over Ray (``RoomActor.lane``); anything else, or nothing within
  :data:`HANDSHAKE_S`, and the room closes the connection;
- then requests ``[id, op, call]`` (``op``: ``"deliver"`` or ``"poll"``; ``call``: what
  :func:`~actors.wire.deliver_call` or :func:`~actors.wire.poll_call` builds), each
  handled at once, so replies may come in any order: ``[id, OK, result]``,
  ``[id, REFUSED, pickle of a RoomsError]`` or ``[id, FAILED, error id]`` (the detail
  is in the room's log under that id; no traceback, path or address crosses).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import pickle
import secrets
import socket
import struct
import sys
import tempfile
from typing import Any, Awaitable, Callable, Mapping, Sequence

import msgpack

from rooms.errors import RoomsError

__all__ = ["FAILED", "HANDSHAKE_S", "LaneClient", "LaneClosed", "LaneFailed", "LaneServer",
           "MAX_MESSAGE_BYTES", "OK", "OPS", "REFUSED", "VERSION"]

log = logging.getLogger("ray_rooms.lane")

VERSION = 1
"""The protocol's version, sent in the handshake."""

OPS = ("deliver", "poll")
"""The calls a lane carries."""

OK, REFUSED, FAILED = 0, 1, 2
"""A reply's kinds: the call's result; a room's refusal (a pickled
:class:`~rooms.errors.RoomsError`, as Ray would carry it); another error (its id)."""

MAX_MESSAGE_BYTES = 1 << 30
"""The largest message either side reads (bytes): a poll's result can carry a whole
outbox (``ROOMS_OUTBOX_SIZE`` entries of up to ``ROOMS_MAX_STATE_BYTES``)."""

HANDSHAKE_S = 5.0
"""Seconds a connection has to send its handshake."""

_HEADER = struct.Struct(">I")

Handler = Callable[[Sequence[Any]], Awaitable[Any]]


class LaneClosed(ConnectionError):
    """The lane broke (the room's process died, or its activation closed the lane) or
    could not be opened; a call waiting on it has no answer and may be sent again."""


class LaneFailed(RuntimeError):
    """The room failed a call with an error that is not a room's refusal; ``str``
    carries only the id under which the room logged it."""


def _pack(message: Any) -> bytes:
    body = msgpack.packb(message, use_bin_type=True, unicode_errors="surrogatepass")
    return _HEADER.pack(len(body)) + body


async def _read(reader: asyncio.StreamReader) -> Any:
    """One message from ``reader``.

    Raises:
        asyncio.IncompleteReadError: the stream ended.
        ValueError: the length is over :data:`MAX_MESSAGE_BYTES` or the body is not
            msgpack.
    """
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"a lane message of {size} bytes is over the bound")
    body = await reader.readexactly(size)
    try:
        return msgpack.unpackb(body, raw=False, unicode_errors="surrogatepass",
                               strict_map_key=False)
    except Exception as error:  # noqa: BLE001 - msgpack raises several kinds
        raise ValueError(f"a lane message is not msgpack ({type(error).__name__})") from None


def _socket_address() -> str:
    """A new address for a server: abstract on Linux, else a file under a directory
    of the user's own (mode 0700)."""
    name = f"ray-rooms-lane-{os.getpid()}-{secrets.token_hex(8)}"
    if sys.platform.startswith("linux"):
        return "\0" + name
    folder = os.path.join(tempfile.gettempdir(), f"ray-rooms-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    return os.path.join(folder, name[:40] + ".sock")


class LaneServer:
    """A room's end of its lanes: serves ``deliver`` and ``poll`` on the room's event
    loop, for the clients that show the token.

    Args:
        handlers: for each op of :data:`OPS`, the coroutine function that answers it
            (``RoomActor.deliver_wire``, ``RoomActor.poll_wire``): given the call's
            list, it returns the result's lists.
    """

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self.handlers = dict(handlers)
        self.token = secrets.token_bytes(32)
        self.address = ""
        self.calls = 0
        """Requests answered so far (any kind of reply)."""
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._starting = asyncio.Lock()

    async def start(self) -> list[Any]:
        """Listen (once; later calls return the same) and return ``[address, token]``,
        what :meth:`LaneClient.connect` takes.

        Raises:
            OSError: the socket could not be made.
        """
        async with self._starting:
            if self._server is None:
                address = _socket_address()
                # bound here: uvloop takes no abstract address by name
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.bind(address)
                    if not address.startswith("\0"):
                        os.chmod(address, 0o600)
                    self._server = await asyncio.start_unix_server(
                        self._serve, sock=sock, limit=1 << 20)
                except BaseException:
                    sock.close()
                    raise
                self.address = address
        return [self.address, self.token]

    def close(self) -> None:
        """Stop listening and close every connection: the calls waiting on them fail
        with :class:`LaneClosed` on the clients' side; the requests under way here
        run on, their replies dropped."""
        if self._server is not None:
            self._server.close()
            if not self.address.startswith("\0"):
                try:
                    os.unlink(self.address)
                except OSError:
                    pass
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            hello = await asyncio.wait_for(_read(reader), HANDSHAKE_S)
            if (not isinstance(hello, list) or len(hello) != 2 or hello[0] != VERSION
                    or not isinstance(hello[1], bytes)
                    or not hmac.compare_digest(hello[1], self.token)):
                log.warning("lane: a connection without the handshake; closed")
                return
            while True:
                request = await _read(reader)
                if (not isinstance(request, list) or len(request) != 3
                        or not isinstance(request[1], str)
                        or request[1] not in self.handlers):
                    log.warning("lane: a request that is not [id, op, call]; closed")
                    return
                task = asyncio.ensure_future(self._answer(writer, *request))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            return
        except asyncio.CancelledError:  # the loop is closing: so is the connection
            return
        except ValueError as error:
            log.warning("lane: %s; closed", error)
        except Exception as error:  # noqa: BLE001 - that connection ends, the room goes on
            log.warning("lane: a connection failed (%s); closed", type(error).__name__)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, request_id: Any, op: str,
                      call: Any) -> None:
        try:
            reply = [request_id, OK, await self.handlers[op](call)]
        except asyncio.CancelledError:  # no answer will come: the caller sends it again
            writer.close()
            raise
        except Exception as error:  # noqa: BLE001 - a refusal crosses, the rest by id
            reply = _refusal(request_id, op, error)
        self.calls += 1
        if writer.is_closing():
            return
        try:
            message = _pack(reply)
        except Exception as error:  # noqa: BLE001 - a result msgpack cannot carry
            message = _pack(_failure(request_id, op, error))
        try:
            writer.write(message)
            await writer.drain()
        except ConnectionError:
            pass


def _refusal(request_id: Any, op: str, error: Exception) -> list[Any]:
    """The reply for a call that raised ``error``: a room's refusal pickled as Ray
    would carry it, anything else (or a refusal that does not pickle) by its id."""
    if isinstance(error, RoomsError):
        try:
            return [request_id, REFUSED, pickle.dumps(error)]
        except Exception:  # noqa: BLE001 - then as any other error
            pass
    return _failure(request_id, op, error)


def _failure(request_id: Any, op: str, error: BaseException) -> list[Any]:
    """A ``FAILED`` reply; the detail goes to the room's log under the id it carries."""
    error_id = secrets.token_hex(6)
    log.error("error id %s: lane %s failed: %s", error_id, op, error, exc_info=error,
              extra={"error_id": error_id})
    return [request_id, FAILED, error_id]


class LaneClient:
    """A gateway replica's end of one lane to one room: sends calls, matches replies.

    Made by :meth:`connect`; one per room reference (``RoomRef``), closed with it.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._closed = False
        self._reading = asyncio.ensure_future(self._read_replies(reader))

    @classmethod
    async def connect(cls, address: Sequence[Any]) -> "LaneClient":
        """Open a lane to the room that handed out ``address``.

        Args:
            address: ``[address, token]``, what ``RoomActor.lane`` returned.

        Returns:
            The open :class:`LaneClient`.

        Raises:
            LaneClosed: the room's socket is gone or refused the connection.
            ValueError: ``address`` is not ``[str, bytes]``.
        """
        if (len(address) != 2 or not isinstance(address[0], str)
                or not isinstance(address[1], bytes)):
            raise ValueError("a lane address is [address, token]")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:  # connected here: uvloop takes no abstract address by name
            sock.setblocking(False)
            try:
                sock.connect(address[0])
            except BlockingIOError:  # the room's backlog is full: wait for it
                await asyncio.get_running_loop().sock_connect(sock, address[0])
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        except OSError as error:
            sock.close()
            raise LaneClosed(f"no lane: {error.strerror or type(error).__name__}") from None
        writer.write(_pack([VERSION, address[1]]))
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        """Whether the lane broke or was closed (calls then raise :class:`LaneClosed`)."""
        return self._closed

    async def call(self, op: str, call: Sequence[Any]) -> Any:
        """Send one call and return its result.

        Args:
            op: one of :data:`OPS`.
            call: the call's list (:func:`~actors.wire.deliver_call`,
                :func:`~actors.wire.poll_call`).

        Returns:
            The room's result, as its ``*_wire`` method returned it.

        Raises:
            LaneClosed: the lane broke before the reply came (the call may or may not
                have been handled).
            RoomsError: the room's refusal, as the room raised it.
            LaneFailed: the room failed the call otherwise.
        """
        if self._closed:
            raise LaneClosed("the lane is closed")
        request_id = next(self._ids)
        reply: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = reply
        try:
            self._writer.write(_pack([request_id, op, call]))
            try:
                await self._writer.drain()
            except ConnectionError:
                raise LaneClosed("the lane broke while sending") from None
            kind, value = await reply
        finally:
            self._waiting.pop(request_id, None)
        if kind == OK:
            return value
        if kind == REFUSED:
            error = pickle.loads(value)
            if isinstance(error, RoomsError):
                raise error
        raise LaneFailed(f"the room failed the call (error id {value})"
                         if isinstance(value, str) else "the room failed the call")

    def close(self) -> None:
        """Close the lane; the calls waiting on it raise :class:`LaneClosed`."""
        if not self._closed:
            self._closed = True
            self._writer.close()
            self._reading.cancel()
            self._fail_waiting()

    def _fail_waiting(self) -> None:
        for reply in self._waiting.values():
            if not reply.done():
                reply.set_exception(LaneClosed("the lane closed before the reply"))
        self._waiting.clear()

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await _read(reader)
                reply = self._waiting.get(message[0])
                if reply is not None and not reply.done():
                    reply.set_result((message[1], message[2]))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the stream ended or broke: the lane is gone
            pass
        finally:
            self._closed = True
            self._fail_waiting()
            self._writer.close()
