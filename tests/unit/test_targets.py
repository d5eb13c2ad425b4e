"""The load-balancer target lifecycle (orchestrator.core.targets), the drain in the task state
machine, and the health rule that combines container and target health."""
from __future__ import annotations

from dockyard.health import with_targets
from dockyard.lb import LoadBalancerSpec, ServiceLoadBalancer, TargetGroupSpec, TargetReport
from dockyard.wire import TaskReport
from orchestrator.core import targets as core
from orchestrator.core.tasks import fold_report, stop_changes
from orchestrator.models import Node, Task, TaskContainer

LB = LoadBalancerSpec(name="front", listeners=[{"port": 80, "defaultActions": [{"targetGroupName": "web"}]}])
TGS = {"web": TargetGroupSpec(name="web", deregistrationDelay=30)}
ENTRY = [ServiceLoadBalancer(targetGroupName="web", containerName="app", containerPort=8080)]


def task(status: str = "RUNNING", desired: str = "RUNNING", **kw) -> Task:
    c = TaskContainer(name="app", lastStatus="RUNNING", networkBindings=[{"containerPort": 8080, "hostPort": 49200, "protocol": "tcp"}])
    return Task(taskId="t1", cluster="c", taskDefinition="web:1", family="web", revision=1, lastStatus=status,
                desiredStatus=desired, nodeId="n2", serviceName="web", group="service:web", containers=[c], **kw)


def node(nid: str, lb: bool = False, connected: bool = True, **attrs: str) -> Node:
    return Node(cluster="c", nodeId=nid, address=f"10.0.0.{nid[-1]}", loadBalancer=lb, connected=connected, attributes=attrs)


def report(health: str, sessions: int = 0, task_id: str = "t1") -> TargetReport:
    return TargetReport(targetGroup="web", id=core.target_id(task_id, 8080), taskId=task_id, health=health, sessions=sessions)


def test_a_running_task_is_an_active_target_at_its_node_address_and_host_port():
    (ref,) = core.task_targets(task(), ENTRY, node("n2"), host_network=False)
    assert (ref.target_group, ref.target.address, ref.target.port, ref.target.state) == ("web", "10.0.0.2", 49200, "active")


def test_host_network_uses_the_container_port_and_no_address_means_no_target():
    t = task()
    t.containers[0].networkBindings = []
    assert core.task_targets(t, ENTRY, node("n2"), host_network=True)[0].target.port == 8080
    assert core.task_targets(t, ENTRY, node("n2"), host_network=False) == []
    assert core.task_targets(task(), ENTRY, Node(cluster="c", nodeId="n2"), host_network=False) == []


def test_target_states_follow_the_task():
    assert core.is_target_state(task()) == "active"
    assert core.is_target_state(task("DEACTIVATING", "STOPPED")) == "draining"
    for t in (task("PENDING"), task("STOPPING", "STOPPED"), task("STOPPED", "STOPPED"), task("RUNNING", "STOPPED")):
        assert core.is_target_state(t) is None


def test_lb_document_serves_only_load_balancers_of_that_node_with_their_groups():
    targets = {"web": [core.task_targets(task(), ENTRY, node("n2"), False)[0].target]}
    doc = core.lb_document(node("n1", lb=True), [LB], TGS, targets)
    assert [ls.port for ls in doc.listeners] == [80] and doc.listeners[0].default == [("web", 1)]
    assert [tg.name for tg in doc.targetGroups] == ["web"] and doc.targetGroups[0].targets[0].port == 49200
    narrowed = LB.model_copy(update={"nodes": "attribute:zone == b"})
    assert core.lb_document(node("n1", lb=True, zone="a"), [narrowed], TGS, targets).listeners == []
    assert core.lb_document(node("n3"), [LB], TGS, targets).listeners == []  # not a --load-balancer node


def test_healthy_only_when_every_connected_serving_lb_node_says_so():
    serving = core.serving_nodes([LB], [node("n1", lb=True), node("n3", lb=True), node("n4", lb=True, connected=False)])
    assert serving == {"web": ["n1", "n3"]}
    assert core.target_health("t1", ["web"], serving, {"n1": {("web", "t1"): report("healthy")}}) == "UNKNOWN"
    both = {n: {("web", "t1"): report("healthy")} for n in ("n1", "n3")}
    assert core.target_health("t1", ["web"], serving, both) == "HEALTHY"
    one_bad = {**both, "n3": {("web", "t1"): report("unhealthy")}}
    assert core.target_health("t1", ["web"], serving, one_bad) == "UNHEALTHY"
    assert core.target_health("t1", ["web"], {}, both) == "UNKNOWN"  # no LB serves the group: unconfirmed


def test_a_drain_ends_when_every_lb_node_shows_it_draining_without_sessions_or_the_delay_passed():
    t = task("DEACTIVATING", "STOPPED", drainingSince=100.0)
    serving = {"web": ["n1", "n3"]}
    busy = {"n1": {("web", "t1"): report("draining", 0)}, "n3": {("web", "t1"): report("draining", 2)}}
    assert not core.drain_released(t, ["web"], TGS, serving, busy, now=101.0)
    not_yet_seen = {"n1": {("web", "t1"): report("healthy")}}  # the LB has not applied the drain yet
    assert not core.drain_released(t, ["web"], TGS, serving, not_yet_seen, now=101.0)
    idle = {"n1": {("web", "t1"): report("draining", 0)}}  # n3 never had it: nothing to wait for there
    assert core.drain_released(t, ["web"], TGS, serving, idle, now=101.0)
    assert core.drain_released(t, ["web"], TGS, serving, busy, now=130.0)  # deregistrationDelay 30 s
    assert core.drain_deadline(t, ["web"], TGS) == 130.0


def test_stopping_a_target_deactivates_it_and_reports_keep_it_deactivating():
    t = task()
    ch = stop_changes(t, "ServiceSchedulerInitiated", "scale-in", 50.0, drain=True)
    assert ch is not None and ch["lastStatus"] == "DEACTIVATING" and ch["drainingSince"] == 50.0
    assert "lastStatus" not in (stop_changes(task(), "UserInitiated", "x", 50.0, drain=False) or {})
    t2 = task("DEACTIVATING", "STOPPED", drainingSince=50.0)
    changes, _ = fold_report(t2, TaskReport(taskId="t1", lastStatus="RUNNING"), 51.0)
    assert changes.get("lastStatus", "DEACTIVATING") == "DEACTIVATING"
    changes, out = fold_report(t2, TaskReport(taskId="t1", lastStatus="STOPPED"), 52.0)
    assert changes["lastStatus"] == "STOPPED" and out.stopped_now  # died while draining: stopped at once


def test_target_health_joins_the_task_health_rule():
    assert with_targets("UNKNOWN", False, None) == ("UNKNOWN", False)  # in no target group: unchanged
    assert with_targets("UNKNOWN", False, "HEALTHY") == ("HEALTHY", True)
    assert with_targets("UNKNOWN", False, "UNKNOWN") == ("UNKNOWN", True)  # not yet confirmed: not healthy
    assert with_targets("HEALTHY", True, "UNHEALTHY") == ("UNHEALTHY", True)  # replaced, after the grace period
    assert with_targets("UNKNOWN", True, "HEALTHY") == ("UNKNOWN", True)  # its own check has not passed yet


def test_the_view_is_pending_until_every_lb_node_reported_or_its_reconnect_window_passed():
    # An orchestrator just restarted: LB node n1 known (connected or not), no report yet.
    assert core.view_pending([("n1", True)], [], now=100.0, session_since=99.0, window=15.0)
    assert core.view_pending([("n1", False)], [], now=100.0, session_since=99.0, window=15.0)
    assert core.view_pending([("n1", False)], [], now=100.0, session_since=None, window=15.0)  # no session yet
    assert not core.view_pending([("n1", True)], ["n1"], now=100.0, session_since=99.0, window=15.0)  # reported
    assert not core.view_pending([("n1", False)], [], now=120.0, session_since=99.0, window=15.0)  # gone for good
    assert core.view_pending([("n1", True)], [], now=120.0, session_since=99.0, window=15.0)  # connected: it will
    assert core.view_pending([("n1", True), ("n2", True)], ["n1"], now=100.0, session_since=99.0, window=15.0)
    assert not core.view_pending([], [], now=100.0, session_since=None, window=15.0)  # no LB node at all


def test_while_the_view_is_pending_a_target_keeps_its_last_known_health_and_a_drain_its_delay():
    assert core.last_known_health(task(healthySince=90.0)) == "HEALTHY"  # it served before the restart
    assert core.last_known_health(task()) == "UNKNOWN"  # new: never confirmed by an LB
    assert core.last_known_health(task("DEACTIVATING", "STOPPED", healthySince=90.0)) == "UNKNOWN"
    t = task("DEACTIVATING", "STOPPED", drainingSince=100.0)
    # No report yet from the LB node: not "nobody has it", so the drain lasts deregistrationDelay.
    assert core.drain_released(t, ["web"], TGS, {}, {}, now=100.5)  # (the old rule: released at once)
    assert not core.drain_released(t, ["web"], TGS, {}, {}, now=100.5, pending=True)
    assert core.drain_released(t, ["web"], TGS, {}, {}, now=130.0, pending=True)
