"""DAEMON services (orchestrator.core.daemon.plan_daemon): one task per eligible node."""
from __future__ import annotations

from itertools import count

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.ecs import TaskDefinitionSpec
from orchestrator.core.daemon import eligible, plan_daemon
from orchestrator.core.services import HEALTH_STOP_REASON, TaskView, new_deployment, primary_of, record_failure
from orchestrator.models import DeploymentConfiguration, Node, PlacementConstraint, Service, ServiceSpec

T0 = 1_000_000.0
_ids = count()


def td_spec(constraints: list[dict] | None = None) -> TaskDefinitionSpec:
    return TaskDefinitionSpec.model_validate({
        "family": "agent", "placementConstraints": constraints or [],
        "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 32}],
    })


def daemon(constraints: list[dict] | None = None, launch_type: str = "EC2", td: str = "agent:1",
           min_time: int = 0, bake: int = 0) -> Service:
    """A DAEMON service; without proof time or bake unless a test sets them."""
    spec = ServiceSpec(serviceName="agent", taskDefinition=td, schedulingStrategy="DAEMON", launchType=launch_type,
                       placementConstraints=[PlacementConstraint(**c) for c in constraints or []],
                       deploymentConfiguration=DeploymentConfiguration(minimumHealthyTimeSeconds=min_time,
                                                                       bakeTimeSeconds=bake))
    s = Service(cluster="default", serviceName="agent", spec=spec)
    s.deployments = new_deployment([], td, 0, T0)
    return s


def node(i: int | str, status: str = "ACTIVE", connected: bool = True, **attrs) -> Node:
    return Node(cluster="default", nodeId=f"n{i}", status=status, connected=connected, attributes=attrs)


def tv(dep: str, node_id: str, status: str = "RUNNING", health: str = "HEALTHY", draining: bool = False,
       tid: str | None = None, td: str = "agent:1", since: float = T0) -> TaskView:
    return TaskView(task_id=tid or f"d{next(_ids)}", deployment_id=dep, node_id=node_id, last_status=status,
                    task_definition=td, health=health, has_health_check=False, started_at=T0,
                    healthy_since=since if status == "RUNNING" else None, node_draining=draining)


def stopped(plan) -> set[str]:
    return {x.task_id for x in plan.stop}


def test_one_task_per_eligible_node():
    s = daemon()
    plan = plan_daemon(s, [], [node(1), node(2), node(3)], td_spec(), T0)
    assert sorted(plan.start_on) == ["n1", "n2", "n3"] and plan.start == 0 and not plan.stop
    p = primary_of(s)
    dep = next(d for d in plan.deployments if d.id == p.id)
    assert dep.desiredCount == 3 and dep.pendingCount == 3


def test_steady_when_every_node_runs_its_task():
    s = daemon()
    p = primary_of(s).id
    plan = plan_daemon(s, [tv(p, "n1"), tv(p, "n2")], [node(1), node(2)], td_spec(), T0)
    assert plan.start_on == [] and plan.stop == [] and plan.steady
    dep = next(d for d in plan.deployments if d.status == "PRIMARY")
    assert dep.rolloutState == "COMPLETED" and dep.runningCount == 2


def test_a_joining_node_gets_one_task():
    s = daemon()
    p = primary_of(s).id
    plan = plan_daemon(s, [tv(p, "n1"), tv(p, "n2")], [node(1), node(2), node(3)], td_spec(), T0)
    assert plan.start_on == ["n3"] and not plan.stop and not plan.steady


def test_pending_task_on_a_node_is_not_doubled():
    s = daemon()
    p = primary_of(s).id
    plan = plan_daemon(s, [tv(p, "n1", status="PENDING", health="UNKNOWN")], [node(1)], td_spec(), T0)
    assert plan.start_on == [] and plan.stop == []


def test_draining_node_loses_its_task():
    s = daemon()
    p = primary_of(s).id
    ts = [tv(p, "n1", tid="a"), tv(p, "n2", tid="b", draining=True)]
    plan = plan_daemon(s, ts, [node(1), node(2, status="DRAINING")], td_spec(), T0)
    assert stopped(plan) == {"b"} and plan.start_on == []
    assert "n2" in plan.stop[0].reason and "drain" in plan.stop[0].reason


def test_disconnected_node_gets_no_new_task():
    s = daemon()
    plan = plan_daemon(s, [], [node(1), node(2, connected=False)], td_spec(), T0)
    assert plan.start_on == ["n1"]


def test_constraint_mismatched_node_gets_none():
    s = daemon(constraints=[{"type": "memberOf", "expression": "attribute:role == edge"}])
    nodes = [node(1, role="edge"), node(2, role="core"), node(3)]
    plan = plan_daemon(s, [], nodes, td_spec(), T0)
    assert plan.start_on == ["n1"]


def test_task_definition_constraints_count_too():
    s = daemon()
    nodes = [node(1, gpu="yes"), node(2)]
    plan = plan_daemon(s, [], nodes, td_spec([{"type": "memberOf", "expression": "attribute:gpu exists"}]), T0)
    assert plan.start_on == ["n1"]


def test_node_that_stops_matching_loses_its_task():
    s = daemon(constraints=[{"type": "memberOf", "expression": "attribute:role == edge"}])
    p = primary_of(s).id
    ts = [tv(p, "n1", tid="a"), tv(p, "n2", tid="b")]
    plan = plan_daemon(s, ts, [node(1, role="edge"), node(2, role="core")], td_spec(), T0)
    assert stopped(plan) == {"b"} and "no longer eligible" in plan.stop[0].reason


def test_launch_type_must_be_offered_by_the_node():
    s = daemon(launch_type="FARGATE")
    far = node(1)
    far.capacityProviders = ["EC2", "FARGATE"]
    plan = plan_daemon(s, [], [far, node(2)], td_spec(), T0)
    assert plan.start_on == ["n1"]
    assert eligible(far, s, td_spec()) and not eligible(node(2), s, td_spec())


def test_new_revision_replaces_each_nodes_task():
    s = daemon()
    old = primary_of(s).id
    ts = [tv(old, "n1", tid="a"), tv(old, "n2", tid="b")]
    s.deployments = new_deployment(s.deployments, "agent:2", 0, T0 + 10)
    plan = plan_daemon(s, ts, [node(1), node(2)], td_spec(), T0 + 10)
    assert stopped(plan) == {"a", "b"}
    assert all(x.reason == "Task replaced by a newer deployment" for x in plan.stop)
    assert sorted(plan.start_on) == ["n1", "n2"]
    assert not plan.steady


def test_old_deployment_retires_when_its_tasks_are_gone():
    s = daemon()
    old = primary_of(s).id
    s.deployments = new_deployment(s.deployments, "agent:2", 0, T0 + 10)
    new = primary_of(s).id
    plan = plan_daemon(s, [tv(new, "n1", td="agent:2")], [node(1)], td_spec(), T0 + 20)
    assert next(d for d in plan.deployments if d.id == old).status == "INACTIVE"
    assert plan.steady and next(d for d in plan.deployments if d.id == new).rolloutState == "COMPLETED"


def test_duplicate_task_on_a_node_is_stopped():
    s = daemon()
    p = primary_of(s).id
    plan = plan_daemon(s, [tv(p, "n1", tid="a"), tv(p, "n1", tid="b")], [node(1)], td_spec(), T0)
    assert len(plan.stop) == 1 and plan.start_on == []


def test_draining_service_stops_everything():
    s = daemon()
    s.status = "DRAINING"
    p = primary_of(s).id
    plan = plan_daemon(s, [tv(p, "n1"), tv(p, "n2")], [node(1), node(2)], td_spec(), T0)
    assert len(plan.stop) == 2 and plan.start_on == []


def test_stopping_tasks_are_ignored():
    s = daemon()
    p = primary_of(s).id
    t = TaskView(task_id="x", deployment_id=p, node_id="n1", last_status="RUNNING", task_definition="agent:1",
                 stopping=True)
    plan = plan_daemon(s, [t], [node(1)], td_spec(), T0)
    assert plan.stop == [] and plan.start_on == ["n1"]


def test_daemon_respects_launch_backoff():
    s = daemon()
    d = primary_of(s)
    record_failure(d, T0)
    record_failure(d, T0)  # next launch at T0 + 2
    plan = plan_daemon(s, [], [node(1)], td_spec(), T0 + 1)
    assert plan.start_on == [] and plan.wake_at == T0 + 2


def test_daemon_replaces_a_task_failing_health_checks():
    s = daemon()
    p = primary_of(s).id
    sick = TaskView(task_id="sick", deployment_id=p, node_id="n1", last_status="RUNNING", task_definition="agent:1",
                    health="UNHEALTHY", has_health_check=True, started_at=T0)
    plan = plan_daemon(s, [sick], [node(1)], td_spec(), T0 + 600)
    assert [(x.task_id, x.reason) for x in plan.stop] == [("sick", HEALTH_STOP_REASON)]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ACTIVE", "DRAINING"]), st.booleans(), st.sampled_from(["edge", "core"])),
                min_size=0, max_size=8),
       st.lists(st.tuples(st.integers(0, 9), st.booleans()), max_size=12))
def test_property_after_the_plan_each_eligible_node_has_exactly_one_current_task(node_specs, task_specs):
    s = daemon(constraints=[{"type": "memberOf", "expression": "attribute:role == edge"}])
    p = primary_of(s).id
    s.deployments = new_deployment(s.deployments, "agent:2", 0, T0)
    new = primary_of(s).id
    nodes = [node(i, status=st_, connected=c, role=r) for i, (st_, c, r) in enumerate(node_specs)]
    by_id = {n.nodeId: n for n in nodes}
    tasks = [tv(new if cur else p, f"n{i}", draining=(f"n{i}" in by_id and by_id[f"n{i}"].status == "DRAINING"),
                td="agent:2" if cur else "agent:1")
             for i, cur in task_specs]
    plan = plan_daemon(s, tasks, nodes, td_spec(), T0)
    assert len(set(plan.start_on)) == len(plan.start_on)
    left = [t for t in tasks if t.task_id not in stopped(plan)]
    for n in nodes:
        want = n.connected and n.status == "ACTIVE" and n.attributes["role"] == "edge"
        here = [t for t in left if t.node_id == n.nodeId]
        current = [t for t in here if t.deployment_id == new] + (["new"] if n.nodeId in plan.start_on else [])
        if want:
            assert len(current) == 1 and len(here) == len(current) - (n.nodeId in plan.start_on)
        elif not n.connected and n.status == "ACTIVE" and n.attributes["role"] == "edge":
            # disconnected: keeps its current task (node-lost decides), never gets a new one
            had = [t for t in tasks if t.node_id == n.nodeId and t.deployment_id == new]
            assert n.nodeId not in plan.start_on and len(current) == min(1, len(had))
            assert all(t.deployment_id == new for t in here)
        else:
            assert here == [] and n.nodeId not in plan.start_on


# ---- proof and bake (as for REPLICA services) -------------------------------------------------
def test_daemon_rollout_completes_only_after_proof_and_bake():
    s = daemon(min_time=10, bake=5)
    p = primary_of(s).id
    views = [tv(p, "n1", since=T0), tv(p, "n2", since=T0)]
    plan = plan_daemon(s, views, [node(1), node(2)], td_spec(), T0 + 3)
    assert not plan.steady and plan.wake_at == T0 + 10  # not proven yet: back when the proof ends
    assert next(d for d in plan.deployments if d.id == p).rolloutState == "IN_PROGRESS"
    s.deployments = plan.deployments
    plan = plan_daemon(s, views, [node(1), node(2)], td_spec(), T0 + 10)  # proven: the bake starts
    dep = next(d for d in plan.deployments if d.id == p)
    assert dep.rolloutState == "IN_PROGRESS" and dep.bakeStartedAt == T0 + 10 and plan.wake_at == T0 + 15
    s.deployments = plan.deployments
    plan = plan_daemon(s, views, [node(1), node(2)], td_spec(), T0 + 15)
    assert next(d for d in plan.deployments if d.id == p).rolloutState == "COMPLETED" and plan.steady


def test_daemon_task_that_crashes_within_its_proof_never_completes_the_rollout():
    s = daemon(min_time=10, bake=0)
    p = primary_of(s).id
    now = T0
    for _ in range(5):  # RUNNING for 5 s, then it dies and a new one starts: never 10 s healthy
        plan = plan_daemon(s, [tv(p, "n1", since=now)], [node(1)], td_spec(), now + 5)
        s.deployments = plan.deployments
        assert primary_of(s).rolloutState == "IN_PROGRESS" and not plan.steady
        now += 6


def test_a_disconnected_node_keeps_its_task_and_gets_no_new_one():
    """A broker restart disconnects every node for a moment: no daemon task may be stopped for it."""
    s = daemon()
    p = primary_of(s).id
    gone, empty = node(1, connected=False), node(2, connected=False)
    plan = plan_daemon(s, [tv(p, "n1", tid="a")], [gone, empty, node(3)], td_spec(), T0)
    assert plan.stop == [] and plan.start_on == ["n3"]
    assert next(d for d in plan.deployments if d.id == p).desiredCount == 2  # n1 (kept) and n3


def test_an_invalid_member_of_expression_makes_no_node_eligible_and_does_not_raise():
    s = daemon(constraints=[{"type": "memberOf", "expression": "attribute:zone =="}])
    plan = plan_daemon(s, [], [node(1), node(2)], td_spec(), T0)
    assert plan.start_on == [] and not eligible(node(1), s, td_spec())
