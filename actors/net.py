"""Small network helpers shared by the command line, the gateway and the tests."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (it may be taken by the
    time the caller binds it; fine for tests and local defaults).

    Raises:
        OSError: ``host`` is not an address of this machine.
    """
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
