"""Fault switches of the local emulators: make the next requests fail, stall or lie.

Both emulators (:class:`~bridges.local.sfu.CallsEmulator`,
:class:`~bridges.local.realtime.RealtimeEmulator`) hold a :class:`Faults` as ``.faults``.
A fault matches requests by **operation name** or by a **glob on the request path**, and
applies to the next ``times`` matching requests (``None`` = until cleared):

==============  ====================================================================
operations      Calls: ``sessions/new``, ``tracks/new``, ``renegotiate``,
                ``tracks/close``, ``tracks/update``, ``session`` (GET session state);
                OpenAI: ``realtime/calls`` (create a call), ``hangup``; ``*`` = all.
path glob       ``fnmatch`` on the path as received, e.g. ``/v1/apps/*/tracks/new``.
==============  ====================================================================

Effects, applied in this order: ``delay`` (seconds slept before the request is handled:
to trigger client timeouts; the request is then handled normally unless ``status`` is
set), ``status`` (answer this HTTP status with the service's error body instead of
handling the request: Calls ``{"errorCode", "errorDescription"}``, OpenAI
``{"error": {"message", "type", "code", "param"}}``), ``malformed_answer`` (handle the
request, but replace any SDP in the answer with text that is not SDP).

From Python (any thread)::

    emulator.faults.set("tracks/new", status=503, times=1)     # 5xx once, then succeed
    emulator.faults.set("realtime/calls", delay=3.0, times=1)  # stall one call 3 s
    emulator.faults.set("renegotiate", malformed_answer=True)  # until cleared
    emulator.faults.clear()

Over HTTP (from another process, e.g. a Ray worker), on the emulator's root URL::

    POST   /__emulator/faults   {"match": "tracks/new", "status": 503, "times": 1}
                                -> 201 {"id": 1, "match": ..., ...}
    GET    /__emulator/faults   -> 200 {"faults": [...]}
    DELETE /__emulator/faults   -> 204 (all faults cleared)
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import threading
from dataclasses import asdict, dataclass, field

from pydantic import BaseModel, Field, model_validator

__all__ = ["Fault", "FaultSpec", "Faults"]


class FaultSpec(BaseModel):
    """The JSON body of ``POST /__emulator/faults`` (same fields as :meth:`Faults.set`)."""

    match: str = Field(min_length=1)
    status: int | None = Field(default=None, ge=100, le=599)
    delay: float = Field(default=0.0, ge=0.0, le=600.0)
    malformed_answer: bool = False
    times: int | None = Field(default=None, ge=1)
    error_code: str | None = None
    error_message: str | None = None
    retry_after: float | None = Field(default=None, ge=0.0)

    @model_validator(mode="after")
    def _has_effect(self) -> FaultSpec:
        if self.status is None and not self.delay and not self.malformed_answer:
            raise ValueError("a fault needs status, delay or malformed_answer")
        return self


@dataclass
class Fault:
    """One armed fault (see the module docstring for the meaning of each field).

    Attributes:
        id: a number unique within its :class:`Faults`.
        match: operation name, ``*``, or a glob on the request path.
        status: HTTP status to answer instead of handling the request, or ``None``.
        delay: seconds to sleep before handling (or failing) the request.
        malformed_answer: replace the SDP of the answer with non-SDP text.
        times: how many more requests it applies to; ``None`` = until cleared.
        error_code / error_message: override the error body's code / message.
        retry_after: with ``status``, send ``Retry-After: <seconds>`` (the service
            saying it did nothing and when to come back), or ``None``.
        hits: how many requests it has applied to so far.
    """

    id: int
    match: str
    status: int | None = None
    delay: float = 0.0
    malformed_answer: bool = False
    times: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    retry_after: float | None = None
    hits: int = field(default=0)

    def matches(self, operation: str, path: str) -> bool:
        """Whether this fault applies to a request of ``operation`` at ``path``."""
        return self.match in ("*", operation) or fnmatch.fnmatchcase(path, self.match)

    def as_dict(self) -> dict:
        """The fault as a JSON-ready dict."""
        return asdict(self)


class Faults:
    """A thread-safe list of armed faults, consulted by an emulator on every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def set(
        self,
        match: str,
        *,
        status: int | None = None,
        delay: float = 0.0,
        malformed_answer: bool = False,
        times: int | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        retry_after: float | None = None,
    ) -> Fault:
        """Arm a fault; faults are tried in the order they were armed.

        Args:
            match: operation name (e.g. ``"tracks/new"``), ``"*"``, or a path glob.
            status: HTTP status (100..599) to answer with the service's error body.
            delay: seconds (>= 0) to sleep before the request is handled.
            malformed_answer: answer with a non-SDP ``sdp``.
            times: apply to the next ``times`` (>= 1) matching requests only;
                ``None`` = every matching request until :meth:`clear`.
            error_code / error_message: override the error body's code / message.
            retry_after: with ``status``, the ``Retry-After`` header (seconds).
        Returns: the armed :class:`Fault`.
        Raises: ``ValueError`` (pydantic ``ValidationError``) for an invalid or
            effect-less fault.
        """
        spec = FaultSpec(
            match=match, status=status, delay=delay, malformed_answer=malformed_answer,
            times=times, error_code=error_code, error_message=error_message,
            retry_after=retry_after,
        )
        return self.add(spec)

    def add(self, spec: FaultSpec) -> Fault:
        """Arm the fault described by a validated :class:`FaultSpec`; return it."""
        with self._lock:
            fault = Fault(id=next(self._ids), **spec.model_dump())
            self._faults.append(fault)
            return fault

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        """Return a copy of the armed faults."""
        with self._lock:
            return [Fault(**asdict(f)) for f in self._faults]

    def take(self, operation: str, path: str) -> Fault | None:
        """Consume one application of the first fault matching this request.

        Args:
            operation: the emulator's operation name for the request.
            path: the request's URL path.
        Returns: a copy of the matching fault (its ``times`` already decremented; it is
            disarmed when it reaches 0), or ``None``.
        """
        with self._lock:
            for fault in self._faults:
                if fault.matches(operation, path):
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return Fault(**asdict(fault))
        return None

    async def before(self, operation: str, request) -> Fault | None:
        """What an emulator endpoint does before handling a request: read (and cache)
        the body, take the matching fault (see :meth:`take`) and sleep its ``delay``.

        Args:
            operation: the emulator's operation name.
            request: the Starlette request.
        Returns: the fault to apply further (status, malformed answer), or ``None``.
        """
        await request.body()  # read it before any delay, so a caller that gives up is seen
        fault = self.take(operation, request.url.path)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        return fault


#: SDP text the emulators answer when a fault asks for a malformed answer.
MALFORMED_SDP = "this is not an SDP answer\r\n"


def fault_routes(faults: Faults, path: str = "/__emulator/faults") -> list:
    """Starlette routes that arm (POST), list (GET) and clear (DELETE) ``faults`` over HTTP.

    POST body: a :class:`FaultSpec` JSON object -> 201 with the armed fault; an invalid
    body -> 422 ``{"detail": ...}``. GET -> 200 ``{"faults": [...]}``. DELETE -> 204.
    """
    from pydantic import ValidationError
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def arm(request: Request) -> Response:
        try:
            spec = FaultSpec.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse({"detail": exc.errors(include_url=False, include_context=False)},
                                status_code=422)
        return JSONResponse(faults.add(spec).as_dict(), status_code=201)

    async def listing(request: Request) -> Response:
        return JSONResponse({"faults": [f.as_dict() for f in faults.list()]})

    async def clear(request: Request) -> Response:
        faults.clear()
        return Response(status_code=204)

    return [
        Route(path, arm, methods=["POST"]),
        Route(path, listing, methods=["GET"]),
        Route(path, clear, methods=["DELETE"]),
    ]
