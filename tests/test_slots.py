"""Room slots and shedding at the bound (actors/slots.py), in a Ray of its own with 5
``room_slot`` units (tests/slots_scenario.py): a sixth room starts after the least
recently active room hibernates; that room's clients keep their sockets and its next
frame wakes it with its state; a room with an AI job under way is never the one shed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors.slots import ROOM_COST_BYTES, default_max_live_rooms

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def facts(tmp_path_factory):
    out = tmp_path_factory.mktemp("slots") / "facts.json"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "tests.slots_scenario", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    result = json.loads(out.read_text())
    print(json.dumps(result, indent=1))
    return result


def test_five_slots_hold_five_live_rooms(facts):
    assert facts["free_at_bound"] == 0
    assert facts["alive_at_bound"] == ["r0", "r1", "r2", "r3", "r4"]


def test_a_sixth_room_starts_after_the_least_recently_active_idle_room_hibernates(facts):
    # r0 is older but has an AI job under way: r1 goes
    assert facts["alive_after_sixth"] == ["r0", "r2", "r3", "r4", "r5"]
    assert facts["free_after_sixth"] == 0
    assert all(facts["sockets_open_after_sixth"].values()), facts["sockets_open_after_sixth"]


def test_the_shed_room_wakes_on_its_next_frame_with_its_state(facts):
    assert facts["woken_index_after"]
    user = facts["woken_user"]
    assert user["name"] == "u1" and user["raisedHand"] is True and user["speaking"] is True
    assert facts["woken_users"] == ["c1"]
    # waking it shed the next least recently active idle room, never r0
    assert facts["alive_after_wake"] == ["r0", "r1", "r3", "r4", "r5"]


def test_a_room_with_an_ai_job_is_never_shed(facts):
    assert "r0" in facts["alive_after_sixth"] and "r0" in facts["alive_after_wake"]
    # ... and its job was under way both times a room was shed
    assert facts["r0_jobs_after_sixth"] == 1 and facts["r0_jobs_after_wake"] == 1


def test_a_room_that_finds_every_slot_busy_is_refused_not_left_pending(facts):
    code, reason = facts["refused_close"]
    assert code == 1013 and reason.startswith("no free room slot (")
    assert facts["refused_messages"] == []  # never seated
    # it waited slot_wait_s (2 s) for a slot, then gave up
    assert 2.0 <= facts["refused_after_s"] < 30, facts["refused_after_s"]
    assert facts["alive_after_refusal"] == facts["alive_after_wake"]  # nothing was shed
    assert all(facts["sockets_open_after_refusal"].values())
    # a hibernated room's frame that cannot wake it is answered, not applied
    answers = facts["r2_frame_answers"]
    assert [m["type"] for m in answers] == ["error"], answers
    assert "no free room slot" in answers[0]["error"]
    assert facts["alive_after_r2_frame"] == facts["alive_after_wake"]
    # once rooms are idle again it starts, shedding the least recently active idle room
    assert facts["alive_after_seventh"] == ["r0", "r1", "r4", "r5", "r6"]  # r3 went


def test_the_default_bound_follows_memory():
    assert default_max_live_rooms(24 * 2**30) == int(24 * 2**30 * 0.75 // ROOM_COST_BYTES)
    assert default_max_live_rooms(10) == 1
