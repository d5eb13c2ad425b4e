"""DAEMON services: one task per ACTIVE node that meets the constraints (pure).

A node that drains or stops matching loses its task; a node that joins gets one. A node that
disconnects keeps its task: whether the node is lost is decided by the node-lost rules
(orchestrator/core/nodes.py), not here, so a broker restart stops no daemon task; a new task
starts only on a connected node. A new revision replaces each node's task, stopping the old one first (ECS's daemon
deployments default to minimumHealthyPercent 0, maximumPercent 100).
"""
from __future__ import annotations

from dockyard.wire import REPLACED_REASON, SERVICE_SCHEDULER_INITIATED
from orchestrator.core import query
from orchestrator.core.services import (
    ServicePlan,
    StopTask,
    TaskView,
    advance_rollout,
    check_progress,
    failing_reason,
    primary_in,
    stop_unhealthy,
)
from orchestrator.models import Node, Service


def eligible(n: Node, service: Service, td_spec) -> bool:
    """The node should run the service's task (connected or not)."""
    if n.status != "ACTIVE" or service.spec.launchType not in n.capacityProviders:
        return False
    constraints = list(service.spec.placementConstraints) + (list(td_spec.placementConstraints) if td_spec else [])
    for c in constraints:
        if c.type == "memberOf" and c.expression:
            try:
                if not query.evaluate(query.parse(c.expression), n.nodeId, n.attributes):
                    return False
            except query.QueryError:
                return False  # rejected at apply time; never crash the loop on old data
    return True


def plan_daemon(service: Service, tasks: list[TaskView], nodes: list[Node], td_spec, now: float) -> ServicePlan:
    tasks = [t for t in tasks if not t.stopping]
    plan = ServicePlan(deployments=[d.model_copy() for d in service.deployments])
    primary = primary_in(plan.deployments)
    if primary is None:
        return plan
    tasks = stop_unhealthy(service, tasks, primary, plan, now)  # as for REPLICA services
    wanted = {n.nodeId for n in nodes if service.status == "ACTIVE" and eligible(n, service, td_spec)}
    known = {n.nodeId for n in nodes}
    by_node: dict[str | None, list[TaskView]] = {}
    for t in tasks:
        by_node.setdefault(t.node_id, []).append(t)
    start_on: list[str] = []
    for node_id, ts in by_node.items():
        keep_one = node_id in wanted
        for t in sorted(ts, key=lambda t: (t.deployment_id != primary.id, not t.healthy, t.task_id)):
            if keep_one and t.deployment_id == primary.id:
                keep_one = False
                continue
            if node_id is not None and node_id not in known:
                continue
            reason = (f"Container instance {node_id} is being drained" if t.node_draining
                      else REPLACED_REASON if t.deployment_id != primary.id
                      else f"Node {node_id} no longer eligible for daemon service")
            plan.stop.append(StopTask(t.task_id, SERVICE_SCHEDULER_INITIATED, reason))
    stopping = {s.task_id for s in plan.stop}
    connected = {n.nodeId for n in nodes if n.connected}
    for node_id in sorted(wanted):
        live = [t for t in by_node.get(node_id, []) if t.task_id not in stopping]
        if not live and node_id in connected:
            start_on.append(node_id)
    # A disconnected node without a task of the service is not counted until it comes back.
    wanted = {i for i in wanted if i in connected or any(t.task_id not in stopping for t in by_node.get(i, []))}
    if start_on and now < primary.nextLaunchAt:  # launch backoff after failures
        plan.wake(primary.nextLaunchAt)
        start_on = []
    plan.start_on = start_on
    running = sum(1 for t in tasks if t.task_id not in stopping and t.last_status == "RUNNING")
    d = primary
    d.desiredCount, d.runningCount = len(wanted), running
    d.pendingCount = len(tasks) - len(stopping) - running + len(start_on)
    # Proof as for REPLICA services: a task counts healthy once it stayed healthy minimumHealthyTimeSeconds.
    min_time = service.spec.deploymentConfiguration.minimumHealthyTimeSeconds
    proven = 0
    for t in tasks:
        if t.task_id in stopping or t.deployment_id != primary.id:
            continue
        if t.proven(now, min_time):
            proven += 1
        elif t.healthy and t.healthy_since is not None:
            plan.wake(t.healthy_since + min_time)
    all_proven = not plan.stop and not start_on and proven == len(tasks)
    if all_proven:
        d.launchFailures, d.nextLaunchAt = 0, 0.0
    check_progress(service, plan, d, proven, len(wanted), now)  # no rollback target: a DAEMON never adopts
    advance_rollout(service, plan, d, all_proven, now)
    plan.steady = all_proven and d.rolloutState == "COMPLETED"
    plan.failing = failing_reason(d, len(wanted), all_proven)
    kept = [x for x in plan.deployments if x.status == "PRIMARY"]
    others = [x for x in plan.deployments if x.status != "PRIMARY"]
    finished = kept[0].rolloutState != "IN_PROGRESS"
    for x in others:
        if finished and not any(t.deployment_id == x.id and t.task_id not in stopping for t in tasks):
            x.status = "INACTIVE"
    plan.deployments = kept + others
    if start_on:
        plan.events.append(f"(service {service.serviceName}) has started {len(start_on)} tasks.")
    return plan
