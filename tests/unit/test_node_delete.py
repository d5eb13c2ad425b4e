"""``node delete --force`` (Ops.delete_node): a connected node is deregistered, its service tasks are replaced."""
from __future__ import annotations

import pytest

from orchestrator.ops import UserError
from test_controller_sim import CLUSTER, Sim, service, taskdef


def test_a_connected_node_needs_force_and_its_tasks_move(monkeypatch):
    sim = Sim(monkeypatch)
    sim.node_online("a")
    sim.node_online("b")
    sim.apply(taskdef(), service(desired=2, placementConstraints=[{"type": "distinctInstance"}]))
    sim.reconcile()
    sim.agents()
    sim.reconcile()
    on_b = [t for t in sim.tasks() if t.nodeId == "b"]
    assert len(on_b) == 1
    with pytest.raises(UserError) as e:
        sim.ops.delete_node(CLUSTER, "b")
    assert "--force" in e.value.hint
    sim.ops.delete_node(CLUSTER, "b", force=True)
    assert (CLUSTER, "b") not in sim.state.nodes
    assert on_b[0].lastStatus == "STOPPED" and on_b[0].stoppedReason == "Node b deleted"
    sim.node_online("c")
    sim.reconcile()
    assert {t.nodeId for t in sim.tasks()} == {"a", "c"}
