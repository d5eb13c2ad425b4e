"""An orchestrator restarted during a rolling deployment of a load-balanced service (issue 16):
until the LB node has reported again, the targets that served keep their last known health and
drains last their deregistrationDelay. Before, every serving target looked unproven after the
restart: the deployment stopped them all at once and the drains ended at once (HAProxy had no
server left: 1,093 failed requests in tests/integration/test_chaos.py)."""
from __future__ import annotations

from dockyard.lb import LbStatus, TargetReport
from dockyard.wire import ContainerReport, NetworkBinding, StatusDoc, TaskReport
from orchestrator.core import targets as core
from orchestrator.state import State
from orchestrator.store import Store
from test_controller_sim import CLUSTER, Sim, service

LB_DOCS = [
    {"apiVersion": "dockyard/v1", "kind": "TargetGroup", "metadata": {"name": "web"},
     "spec": {"deregistrationDelay": 30}},
    {"apiVersion": "dockyard/v1", "kind": "LoadBalancer", "metadata": {"name": "front"},
     "spec": {"listeners": [{"port": 80, "defaultActions": [{"targetGroupName": "web"}]}]}},
]
DEPLOY = {"maximumPercent": 150, "minimumHealthyPercent": 50, "minimumHealthyTimeSeconds": 0, "bakeTimeSeconds": 0}


def taskdef(mark: str) -> dict:
    return {"apiVersion": "dockyard/v1", "kind": "TaskDefinition", "metadata": {"name": "web"},
            "spec": {"containerDefinitions": [{"name": "web", "image": "busybox", "memory": 64, "command": [mark],
                                               "portMappings": [{"containerPort": 8080}]}]}}


def web(mark: str) -> list[dict]:
    svc = service(desired=4, deploymentConfiguration=DEPLOY,
                  loadBalancers=[{"targetGroupName": "web", "containerName": "web", "containerPort": 8080}])
    return [*LB_DOCS, taskdef(mark), svc]


def online(sim: Sim) -> None:
    sim.node_online("lb", loadBalancer=True, address="10.0.0.1")
    for n in ("n1", "n2"):
        sim.node_online(n, address=f"10.0.0.{n[-1]}1")


def apps_report(sim: Sim) -> None:
    """Every node runs what its document says (the LB node runs tasks too), a host port each."""
    for node in ("lb", "n1", "n2"):
        doc = sim.docs.get(node)
        reports = []
        for i, dt in enumerate(doc.tasks if doc else []):
            running = dt.desiredStatus == "RUNNING"
            reports.append(TaskReport(
                taskId=dt.taskId, lastStatus="RUNNING" if running else "STOPPED", startedAt=sim.clock.t,
                containers=[ContainerReport(name="web", lastStatus="RUNNING" if running else "STOPPED",
                                            exitCode=None if running else 0,
                                            networkBindings=[NetworkBinding(containerPort=8080, hostPort=49200 + i)]
                                            if running else [])]))
        sim.status(node, reports)


def lb_report(sim: Sim) -> None:
    """The LB node: every target of its document healthy (active) or draining with 0 sessions."""
    doc = sim.docs.get("lb")
    lb = doc.loadBalancer if doc else None
    targets = [TargetReport(targetGroup=g.name, id=t.id, taskId=t.taskId,
                            health="healthy" if t.state == "active" else "draining", sessions=0)
               for g in (lb.targetGroups if lb else []) for t in g.targets]
    sim.seq += 1
    sim.ctl.on_status(CLUSTER, "lb", StatusDoc(nodeId="lb", bootId=sim.boot["lb"], seq=sim.seq, kind="update",
                                               observedEpoch=doc.epoch if doc else 0,
                                               observedGeneration=doc.generation if doc else 0,
                                               loadBalancer=LbStatus(targets=targets, running=True)))


def settle(sim: Sim, steps: int = 12) -> None:
    for _ in range(steps):
        sim.reconcile(1.0)
        apps_report(sim)
        lb_report(sim)


def serving(sim: Sim) -> set[str]:
    """Tasks still in rotation: RUNNING and not being stopped."""
    return {t.taskId for t in sim.tasks() if t.lastStatus == "RUNNING" and t.desiredStatus == "RUNNING"}


def test_a_restart_mid_deployment_keeps_the_serving_targets_until_the_lb_reports(monkeypatch, tmp_path):
    store = Store(tmp_path / "d.db")
    first = Sim(monkeypatch, State(store), epoch=1)
    online(first)
    first.apply(*web("v1"))
    settle(first)
    v1 = serving(first)
    assert len(v1) == 4 and all(t.healthySince is not None for t in first.tasks())
    first.apply(*web("v2"))
    first.reconcile(1.0)  # the deployment starts: 2 of v1 drain (50 %), v2 tasks placed, not yet healthy
    assert len(serving(first) & v1) == 2
    store.close()

    store = Store(tmp_path / "d.db")  # SIGKILLed and restarted: no LB report in memory
    second = Sim(monkeypatch, State(store), epoch=2)
    second.clock.t = first.clock.t + 1
    second.ctl.started_at = second.clock.t
    second.ctl.on_broker_connected(second.clock.t)
    second.docs, second.boot = first.docs, first.boot
    online(second)
    apps_report(second)
    for _ in range(3):  # passes before the LB node's first report
        second.reconcile(1.0)
        apps_report(second)
        left = serving(second) & v1
        # minimumHealthyPercent 50 of 4: at least 2 of the v1 targets stay in rotation, and none of
        # the drained ones is released before its deregistrationDelay (30 s).
        assert len(left) >= 2, f"only {len(left)} serving targets left before the LB reported"
        assert not [t for t in second.tasks() if t.lastStatus == "STOPPING"], "a drain ended without the LB"
    assert second.ctl.targets.pending(CLUSTER, second.clock.t)
    settle(second, 20)  # the LB reports again: the deployment goes on and completes
    assert not second.ctl.targets.pending(CLUSTER, second.clock.t)
    now = serving(second)
    assert len(now) == 4 and not now & v1
    store.close()


def test_without_an_lb_node_nothing_is_pending():
    assert not core.view_pending([], [], now=0.0, session_since=None, window=15.0)
