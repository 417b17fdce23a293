"""Rooms across a real 3-node Ray cluster (``ray.cluster_utils.Cluster``) with the
PostgreSQL store: placement, node loss, the gateway through a node loss, alarms after
losing the scheduler's node, and ``rooms ls`` cluster-wide.

The cluster runs in a driver process of its own (tests/cluster_scenario.py), since this
session's driver is already joined to its local Ray; this test checks the facts it
recorded, among them that a single-machine store is refused on such a cluster (the rest
of the suite runs with SQLite on one node, where it stays the default).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def facts(postgres_server, tmp_path_factory):
    """Run the scenario once; return the facts it recorded."""
    url = postgres_server.create_database("cluster_scenario")
    out = tmp_path_factory.mktemp("cluster") / "facts.json"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "tests.cluster_scenario", url, str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    result = json.loads(out.read_text())
    print(json.dumps({k: result[k] for k in ("recovered", "alarm_fired_after_s",
                                             "sockets_after_loss")}, indent=1))
    return result


def test_new_rooms_spread_over_the_nodes(facts):
    nodes = set(facts["placement"].values())
    assert len(nodes) >= 2, facts["placement"]
    assert nodes <= {facts["nodes"]["head"], *facts["nodes"]["workers"]}


def test_nodes_that_join_later_get_a_warm_pool(facts):
    # ensure_warm_pools ran when only the head was up; the workers got theirs after
    nodes = facts["nodes"]
    assert sorted([nodes["head"], *nodes["workers"]]) == facts["warm_pool_nodes"], facts


def test_rooms_of_a_lost_node_answer_again_elsewhere_with_their_state(facts):
    recovered = facts["recovered"]
    lost = [r for r, n in facts["placement"].items() if n == max(
        facts["nodes"]["workers"],
        key=lambda w: sum(1 for v in facts["placement"].values() if v == w))]
    assert lost and set(recovered) == set(lost), (lost, recovered)
    for room, fact in recovered.items():
        print(f"{room}: answered again after {fact['seconds']} s on {fact['node'][:8]}")
        assert fact["state_ok"], room
        assert fact["node"] not in {facts["placement"][room]}
        # bounded, not fast: typically 1.5-6 s here; the CI machine is shared and 2-core,
        # and one run of a loaded suite took 9.9 s (speed belongs in benchmarks/)
        assert fact["seconds"] < 30.0, fact
    assert facts["quiet_room_ok"]


def test_the_gateway_keeps_serving_through_a_node_loss(facts):
    sockets = facts["sockets_after_loss"]
    victim = max(facts["nodes"]["workers"], key=lambda w: sum(
        1 for v in facts["placement"].values() if v == w))
    assert len(set(facts["socket_nodes"])) >= 2, facts["socket_nodes"]  # >1 replica node
    # Serve's proxy (this gateway's ingress) refused the frame over the message limit
    # itself: closed 1009, and the room never saw it (no ``error`` answer)
    assert facts["oversized"]["close"] == 1009, facts["oversized"]
    assert "error" not in facts["oversized"]["seen"], facts["oversized"]
    survivors = [s for s in sockets if s["node"] != victim]
    assert survivors, sockets
    assert facts["post_after_loss"] == 200
    for sock in survivors:
        assert sock["open"] and sock["got_marker"], sock
    for sock in sockets:
        if sock["node"] == victim:
            assert not sock["open"], sock  # its replica died with the node: it knows


def test_alarms_fire_after_losing_the_schedulers_node(facts):
    assert facts["scheduler_node"] in facts["nodes"]["workers"]
    assert facts["alarm_users_before"] == 1
    assert facts["alarm_fired_after_s"] is not None and facts["alarm_fired_after_s"] < 30
    # the restarted scheduler (now on the head node) woke the room, which ran its alarm
    after = facts["scheduler_after"]
    assert after["running"] and after["wakes"] >= 1 and after["node"] == facts["nodes"]["head"]


def test_rooms_ls_lists_every_room_with_its_node_cluster_wide(facts):
    assert facts["ls_exit"] == 0, facts["ls"]
    lines = {line.split()[0]: line.split() for line in facts["ls"].splitlines()[1:]}
    for room in facts["placement"]:
        assert room in lines, facts["ls"]
        stored, actor, node = lines[room][1:]
        assert stored == "yes" and actor == "ALIVE" and node != "-", lines[room]
    shown = {lines[room][3].split("/")[1] for room in facts["placement"]}
    assert shown == {n[:8] for n in facts["placement"].values()}, facts["ls"]
    assert len(shown) >= 2
    # after losing both workers every room is still there, on the head node
    after = {row["room"]: row["node"] or "" for row in facts["list_room_actors"]}
    head = facts["nodes"]["head"][:8]
    assert all(after[room].endswith("/" + head) for room in facts["placement"]), (
        facts["list_room_actors"], facts["list_room_actors_after_s"])


def test_a_single_machine_store_is_refused_on_a_cluster(facts):
    refused = facts["sqlite_room"]
    assert refused["refused"], refused
    assert "ROOMS_STORE_URL" in refused["error"] and "3 alive nodes" in refused["error"]
    serve = facts["sqlite_serve"]
    assert serve["exit"] == 2 and "ROOMS_STORE_URL" in serve["output"], serve
