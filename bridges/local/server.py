"""Serve an ASGI app with uvicorn on loopback, in a background thread with its own loop.

The emulators' aiortc peer connections live in that loop, so the service keeps running
while the thread that started it (a test, the CLI) does blocking work; other threads
reach the loop with :meth:`LocalService.run_coroutine`.

Usage::

    with LocalService(app, name="calls") as service:     # start() on enter
        httpx.get(service.base_url + "/healthz")
        service.run_coroutine(emulator.close_all())        # runs in the service loop
    # stop() on exit: uvicorn shut down, on_stop hook awaited, loop closed, thread joined
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import uvicorn

__all__ = ["LocalService"]

T = TypeVar("T")
log = logging.getLogger("ray_rooms.emulators")


class LocalService:
    """One ASGI app served by uvicorn on ``host:port`` in a dedicated thread and loop.

    Args:
        app: the ASGI application.
        host: interface to bind, ``127.0.0.1`` by default (loopback only).
        port: TCP port; 0 picks a free one (read it from :attr:`port` after ``start``).
        name: a label for the thread and logs.
        on_stop: optional coroutine function awaited in the service loop after uvicorn
            stopped and before the loop closes (e.g. close the peer connections).

    Thread-safety: ``start``/``stop``/``run_coroutine`` may be called from any thread
    except the service thread itself.
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "local-service",
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.requested_port = port
        self.name = name
        self.on_stop = on_stop
        self.port: int | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running service (no trailing slash).

        Raises: ``RuntimeError`` if the service is not started.
        """
        if self.port is None:
            raise RuntimeError(f"{self.name} is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the service thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> str:
        """Bind the socket, start the thread and wait until uvicorn serves.

        Args:
            timeout: seconds to wait for uvicorn to be ready.
        Returns: :attr:`base_url`.
        Raises: ``OSError`` if the port cannot be bound; ``RuntimeError`` if the service
            is already running or uvicorn failed / did not start within ``timeout``.
        """
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._thread_main, args=(sock,), name=f"{self.name}:{self.port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError(f"{self.name} did not start within {timeout} s")
        if self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError(f"{self.name} failed to start: {error!r}")
        return self.base_url

    def _thread_main(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(sock))
        except BaseException as exc:  # noqa: BLE001 - reported to start()/logs
            self._error = exc
            log.exception("%s stopped with an error", self.name)
        finally:
            try:
                self._cancel_leftovers(loop)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
                sock.close()
                self._ready.set()

    async def _serve(self, sock: socket.socket) -> None:
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=5,
        )
        server = uvicorn.Server(config)
        self._server = server
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.005)
        self._ready.set()
        try:
            await serving
        finally:
            if self.on_stop is not None:
                try:
                    await asyncio.wait_for(self.on_stop(), timeout=5)
                except Exception:  # noqa: BLE001 - shutdown goes on
                    log.exception("%s on_stop hook failed", self.name)

    @staticmethod
    def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

    def run_coroutine(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` in the service loop from another thread and return its result.

        Args:
            coro: the coroutine object to run.
            timeout: seconds to wait for the result (``None`` = for ever).
        Returns: the coroutine's result.
        Raises: whatever the coroutine raises; ``TimeoutError`` after ``timeout``;
            ``RuntimeError`` if the service is not running.
        """
        if self.loop is None or not self.running or self.loop.is_closed():
            coro.close()
            raise RuntimeError(f"{self.name} is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop uvicorn, await the ``on_stop`` hook, close the loop and join the thread.

        Idempotent. Args: ``timeout``: seconds to wait for the thread to end.
        Raises: ``RuntimeError`` if the thread did not end within ``timeout``.
        """
        thread = self._thread
        if thread is None:
            return
        if self._server is not None and self.loop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(setattr, self._server, "should_exit", True)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"{self.name} did not stop within {timeout} s")
        self._thread = None
        self._server = None
        self.loop = None

    def __enter__(self) -> LocalService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.base_url if self.port is not None and self.running else "stopped"
        return f"<LocalService {self.name} {state}>"
