"""``actors.net.free_port`` hands out ports outside the kernel's ephemeral range, where
Ray's own servers and connections take theirs (one once took the gateway's port between
the pick and HAProxy's bind), and never the same port twice in a process."""

from __future__ import annotations

import socket
from pathlib import Path

from actors.net import PORT_RANGE, free_port


def test_free_ports_are_outside_the_ephemeral_range_distinct_and_bindable():
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        assert PORT_RANGE[0] <= port < PORT_RANGE[1]
        assert not low <= port <= high, f"{port} is in the ephemeral range {low}-{high}"
    with socket.socket() as sock:  # free indeed
        sock.bind(("127.0.0.1", ports[-1]))


def test_a_busy_port_is_skipped(monkeypatch):
    import actors.net as net

    real = net.random.randrange
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picks = iter([taken, taken])  # the first two picks are the busy port
        monkeypatch.setattr(net.random, "randrange",
                            lambda *bounds: next(picks, None) or real(*bounds))
        port = free_port()
        assert port != taken and PORT_RANGE[0] <= port < PORT_RANGE[1]
