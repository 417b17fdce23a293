"""Small network helpers shared by the command line, the gateway and the tests."""

from __future__ import annotations

import errno
import random
import socket

__all__ = ["PORT_RANGE", "free_port"]

PORT_RANGE = (20000, 30000)
"""Where :func:`free_port` looks, ``[start, stop)``: below the ports Serve gives its
replicas' direct ingress (30000 up) and Linux's ephemeral range (32768-60999 by
default), which is where every bind to port 0 lands, Ray's own worker servers' included;
above Ray's default worker ports (10002-19999)."""

_handed: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now, from :data:`PORT_RANGE`,
    never one this process was handed before.

    A port the kernel picks (a bind to port 0) comes from its ephemeral range, where
    the many gRPC servers and connections Ray opens take theirs: one once took the
    gateway's port between this call and HAProxy's bind ("Address already in use").
    A port outside that range can still be taken by an explicit bind before the caller
    binds it; fine for tests and local defaults. After 200 busy tries, the kernel's
    pick.

    Raises:
        OSError: ``host`` is not an address of this machine.
    """
    for _ in range(200):
        port = random.randrange(*PORT_RANGE)
        if port in _handed:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError as error:
                if error.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
        _handed.add(port)
        return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
