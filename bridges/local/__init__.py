"""Local emulators of Cloudflare Calls and OpenAI Realtime, on aiortc, on loopback.

::

    from bridges.local import start_emulators

    with start_emulators() as emu:                 # both services up, < 1 s
        emu.calls_base_url      # http://127.0.0.1:PORT/v1  ({base}/apps/{appId}/sessions/new)
        emu.openai_base_url     # http://127.0.0.1:PORT/v1  ({base}/realtime/calls)
        emu.calls.faults.set("tracks/new", status=503, times=1)
        emu.calls.open_sessions(), emu.openai.active_calls()
    # stop(): peer connections closed, threads joined

Public API: :func:`start_emulators`, :class:`Emulators`, :class:`CallsEmulator`,
:class:`RealtimeEmulator`, :class:`LocalService`, :class:`Faults`; media tooling in
:mod:`bridges.local.media` (``ToneTrack``, ``AudioRecorder``, ``dominant_frequency``) and
:mod:`bridges.local.participant` (``Participant``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .faults import Fault, Faults
from .ice import use_loopback_ice
from .realtime import RealtimeEmulator
from .server import LocalService
from .sfu import CallsEmulator

__all__ = [
    "CallsEmulator",
    "Emulators",
    "Fault",
    "Faults",
    "LocalService",
    "RealtimeEmulator",
    "start_emulators",
]


@dataclass
class Emulators:
    """Both running emulators and their services (returned by :func:`start_emulators`).

    Attributes:
        calls / openai: the emulator objects (state, ``faults``, introspection).
        calls_service / openai_service: their :class:`LocalService` (own thread + loop).
        app_id, app_secret, api_key: the credentials the emulators accept.
    """

    calls: CallsEmulator
    openai: RealtimeEmulator
    calls_service: LocalService
    openai_service: LocalService
    app_id: str
    app_secret: str
    api_key: str

    @property
    def calls_base_url(self) -> str:
        """Calls API base, ``http://127.0.0.1:PORT/v1`` (as ``https://rtc.live.cloudflare.com/v1``)."""
        return self.calls_service.base_url + self.calls.base_path

    @property
    def openai_base_url(self) -> str:
        """OpenAI API base, ``http://127.0.0.1:PORT/v1`` (as ``https://api.openai.com/v1``)."""
        return self.openai_service.base_url + self.openai.base_path

    @property
    def calls_faults_url(self) -> str:
        """``POST``/``GET``/``DELETE`` URL of the Calls emulator's fault switches."""
        return self.calls_service.base_url + "/__emulator/faults"

    @property
    def openai_faults_url(self) -> str:
        """``POST``/``GET``/``DELETE`` URL of the OpenAI emulator's fault switches."""
        return self.openai_service.base_url + "/__emulator/faults"

    def stop(self) -> None:
        """Close every peer connection and stop both services (idempotent)."""
        try:
            self.calls_service.stop()
        finally:
            self.openai_service.stop()

    def __enter__(self) -> Emulators:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:  # no secrets
        return f"<Emulators calls={self.calls_service!r} openai={self.openai_service!r}>"


def start_emulators(
    host: str = "127.0.0.1",
    calls_port: int = 0,
    openai_port: int = 0,
    app_id: str = "local-app",
    app_secret: str = "local-secret",
    api_key: str = "sk-local",
    echo_delay: float = 0.2,
) -> Emulators:
    """Start the Calls SFU emulator and the OpenAI Realtime emulator, each in its own thread.

    Args:
        host: interface to bind (loopback by default).
        calls_port / openai_port: TCP ports; 0 picks free ones.
        app_id / app_secret: the Calls app id and bearer secret the SFU accepts.
        api_key: the bearer API key the OpenAI emulator accepts.
        echo_delay: seconds the OpenAI emulator's voice lags behind what it hears.
    Returns: the running :class:`Emulators` (call ``stop()`` or use it as a context manager).
    Raises: ``OSError`` if a port cannot be bound; ``RuntimeError`` if a service fails to start.
    """
    use_loopback_ice()
    calls = CallsEmulator(app_id=app_id, app_secret=app_secret)
    openai = RealtimeEmulator(api_key=api_key, echo_delay=echo_delay)
    calls_service = LocalService(calls.app, host=host, port=calls_port, name="calls-emulator",
                                 on_stop=calls.close)
    openai_service = LocalService(openai.app, host=host, port=openai_port, name="openai-emulator",
                                  on_stop=openai.close)
    calls_service.start()
    try:
        openai_service.start()
    except BaseException:
        calls_service.stop()
        raise
    return Emulators(calls, openai, calls_service, openai_service, app_id, app_secret, api_key)
