"""The AI agent's flows: bring an AI voice into the call, hand its control, release it.

These coroutines run *outside* the room's input gate (a flow awaits services for
seconds; the room goes on handling other messages). They talk to the outside world only
through the ports of :mod:`rooms.ports` and report back as
:class:`~rooms.room.AiProgress` / :class:`~rooms.room.AiEnableResult` /
:class:`~rooms.room.AiControlResult`, which the actor feeds into the room as turns.

The wire steps follow docs/ai.md and the contracts in ``bridges/contracts/``:

1. Calls ``POST /apps/{appId}/sessions/new?thirdparty=true&correlationId=<meetingId>``
2. Calls ``POST .../sessions/{id}/tracks/new`` with one local, bidirectional audio
   track and no offer: the SFU answers with an offer.
3. OpenAI ``POST /v1/realtime/calls`` (create-realtime-call) with that offer: the
   answer SDP and the call id (``Location``); or, with the Live backend,
   ``POST /v1/live/sessions`` (create-live): the answer and the session id.
4. Calls ``PUT .../sessions/{id}/renegotiate`` with the answer.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

from .messages import AI_TRACK_NAME
from .ports import AiService, BridgeError, MediaBridge, TrackObject
from .room import AiControlResult, AiEnableResult, AiProgress
from .state import ControlJob, EnableJob, ReleaseJob

__all__ = ["DEFAULT_MODEL", "run_control", "run_enable", "run_release"]

DEFAULT_MODEL = "gpt-realtime"
"""The OpenAI Realtime model used when none is configured."""

log = logging.getLogger("ray_rooms.ai")

Record = Callable[[AiProgress], Awaitable[None]]


def _cause(error: BaseException) -> str:
    if isinstance(error, BridgeError):
        return str(error)
    return f"{type(error).__name__}: {error}"


async def run_enable(
    job: EnableJob,
    calls: MediaBridge,
    ai: AiService,
    *,
    model: str = DEFAULT_MODEL,
    record: Record,
) -> AiEnableResult:
    """Run the enable flow for ``job``.

    Args:
        job: the room's enable job (attempt, meeting id, instructions, voice).
        calls: the SFU bridge.
        ai: the voice-model bridge.
        model: the OpenAI Realtime model id.
        record: persists progress (session id, mid, call id, step) as a room turn
            before the next step starts, so a crash can be cleaned up after.

    Returns:
        The result; on failure ``error`` is ``"<step>: <cause>"`` and everything the
        flow created has been released (best effort; release failures are logged).
        Never raises for service failures.
    """
    session_id: str | None = None
    mid: str | None = None
    call_id: str | None = None
    step = "calls sessions/new"
    try:
        await record(AiProgress(job.attempt, {"step": step}))
        session_id, _ = await calls.new_session(
            thirdparty=True, correlation_id=job.meeting_id
        )
        step = "calls tracks/new"
        await record(AiProgress(job.attempt, {"sessionId": session_id, "step": step}))
        tracks = await calls.new_tracks(session_id, [TrackObject(
            location="local", trackName=AI_TRACK_NAME,
            bidirectionalMediaStream=True, kind="audio",
        )])
        if tracks.sessionDescription is None or tracks.sessionDescription.type != "offer":
            raise BridgeError("the SFU sent no offer for the AI's track",
                              service="calls", operation="tracks/new")
        mid = tracks.tracks[0].mid if tracks.tracks else None
        step = f"openai {getattr(ai, 'create_operation', 'realtime/calls')}"
        await record(AiProgress(job.attempt, {"mid": mid, "step": step}))
        call = await ai.create_call(
            tracks.sessionDescription, model=model,
            instructions=job.instructions, voice=job.voice,
        )
        call_id = call.call_id
        step = "calls renegotiate"
        await record(AiProgress(job.attempt, {"callId": call_id, "step": step}))
        await calls.renegotiate(session_id, call.answer)
    except Exception as error:  # noqa: BLE001 - every failure ends the flow cleanly
        await run_release(
            ReleaseJob(session_id, tuple(m for m in [mid] if m), call_id,
                       reason=f"enable failed at {step}"),
            calls, ai,
        )
        return AiEnableResult(job.attempt, error=f"{step}: {_cause(error)}")
    return AiEnableResult(
        job.attempt, session_id=session_id, track_name=AI_TRACK_NAME,
        mid=mid, call_id=call_id,
    )


async def run_control(job: ControlJob, calls: MediaBridge) -> AiControlResult:
    """Feed the requesting user's track into the AI session's bidirectional transceiver.

    Calls ``POST .../sessions/{aiSession}/tracks/new`` with ``{location: "remote",
    sessionId, trackName, mid: "#<AI track name>"}``.

    Returns:
        The result; ``error`` is ``"calls tracks/new: <cause>"`` on failure. Never raises
        for service failures.
    """
    try:
        await calls.new_tracks(job.session_id, [TrackObject(
            location="remote", sessionId=job.track.sessionId,
            trackName=job.track.trackName, mid=f"#{job.track_name}",
        )])
    except Exception as error:  # noqa: BLE001
        return AiControlResult(job.attempt, job.conn, error=f"calls tracks/new: {_cause(error)}",
                               restore=job.restore)
    return AiControlResult(job.attempt, job.conn, track=job.track, restore=job.restore)


async def run_release(job: ReleaseJob, calls: MediaBridge, ai: AiService) -> list[str]:
    """Release what an AI flow created: force-close its Calls tracks, hang up its call.

    When the flow never learnt its track's mid (``tracks/new`` failed, or timed out
    after the SFU had added the track), the AI's own session is asked for its tracks
    (``GET .../sessions/{id}``) and every active one is closed: the session is the
    room's alone. Best effort: each release is tried even if another fails.

    Returns:
        The failures, as ``"<operation>: <cause>"`` strings (empty when all succeeded).
    """
    failures: list[str] = []
    mids = list(job.mids)
    if job.session_id and not mids:
        try:
            state = await calls.get_session(job.session_id)
            mids = [t.mid for t in state.tracks if t.mid and t.status != "inactive"]
        except Exception as error:  # noqa: BLE001
            failures.append(f"calls sessions/get: {_cause(error)}")
    if job.session_id and mids:
        try:
            await calls.close_tracks(job.session_id, mids, force=True)
        except Exception as error:  # noqa: BLE001
            failures.append(f"calls tracks/close: {_cause(error)}")
    if job.call_id:
        try:
            await ai.hangup(job.call_id)
        except Exception as error:  # noqa: BLE001
            failures.append(f"openai hangup: {_cause(error)}")
    for failure in failures:
        log.warning("AI release (%s) incomplete: %s", job.reason, failure)
    return failures
