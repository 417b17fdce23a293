"""Loopback-only ICE for the local emulators and their test peers.

Every aiortc peer connection of the emulators (and of :mod:`bridges.local.media`'s test
participants) must gather host candidates on ``127.0.0.1`` only and use no STUN/TURN
server: the machine may reach nothing but loopback, and aioice, by default, skips
``127.0.0.1`` and gathers every other interface address.

:func:`use_loopback_ice` replaces aioice's host-address discovery, process-wide, with
``["127.0.0.1"]``. It is idempotent. :func:`rtc_configuration` returns the
``RTCConfiguration(iceServers=[])`` to give every ``RTCPeerConnection`` (``None`` would
make aiortc fall back to a public STUN server).
"""

from __future__ import annotations

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection

__all__ = ["loopback_peer_connection", "rtc_configuration", "use_loopback_ice"]

LOOPBACK = "127.0.0.1"


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """aioice ``get_host_addresses`` replacement: ``["127.0.0.1"]`` when IPv4 is on."""
    return [LOOPBACK] if use_ipv4 else []


def use_loopback_ice() -> None:
    """Make aioice gather host candidates on 127.0.0.1 only, in this whole process.

    Affects every ICE agent created afterwards in this process (aiortc's included).
    Idempotent; raises nothing.
    """
    if aioice.ice.get_host_addresses is not _loopback_host_addresses:
        aioice.ice.get_host_addresses = _loopback_host_addresses


def rtc_configuration() -> RTCConfiguration:
    """Return an ``RTCConfiguration`` with no ICE servers (no STUN, no TURN)."""
    return RTCConfiguration(iceServers=[])


def loopback_peer_connection() -> RTCPeerConnection:
    """Create an ``RTCPeerConnection`` that uses loopback host candidates only.

    Must be called inside a running asyncio event loop (aiortc binds to it).
    """
    use_loopback_ice()
    return RTCPeerConnection(configuration=rtc_configuration())
