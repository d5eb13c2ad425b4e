"""DAEMON services: one task per ACTIVE, connected node that meets the constraints (pure).

A node that drains, disconnects for good or stops matching loses its task; a node that joins
gets one. A new revision replaces each node's task, stopping the old one first (ECS's daemon
deployments default to minimumHealthyPercent 0, maximumPercent 100).
"""
from __future__ import annotations

from orchestrator.core import query
from orchestrator.core.services import ServicePlan, StopTask, TaskView, stop_unhealthy
from orchestrator.models import Node, Service


def eligible(n: Node, service: Service, td_spec) -> bool:
    if not n.connected or n.status != "ACTIVE" or service.spec.launchType not in n.capacityProviders:
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
    primary = next((d for d in plan.deployments if d.status == "PRIMARY"), None)
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
                      else "Task replaced by a newer deployment" if t.deployment_id != primary.id
                      else f"Node {node_id} no longer eligible for daemon service")
            plan.stop.append(StopTask(t.task_id, "ServiceSchedulerInitiated", reason))
    stopping = {s.task_id for s in plan.stop}
    for node_id in sorted(wanted):
        live = [t for t in by_node.get(node_id, []) if t.task_id not in stopping]
        if not live:
            start_on.append(node_id)
    if start_on and now < primary.nextLaunchAt:  # launch backoff after failures
        plan.wake_at = primary.nextLaunchAt
        start_on = []
    plan.start_on = start_on
    running = sum(1 for t in tasks if t.task_id not in stopping and t.last_status == "RUNNING")
    d = primary
    d.desiredCount, d.runningCount = len(wanted), running
    d.pendingCount = len(tasks) - len(stopping) - running + len(start_on)
    plan.steady = not plan.stop and not start_on and all(
        t.healthy and t.deployment_id == primary.id for t in tasks)
    if plan.steady:
        d.launchFailures, d.nextLaunchAt = 0, 0.0
    if plan.steady and d.rolloutState == "IN_PROGRESS":
        d.rolloutState, d.rolloutStateReason, d.updatedAt = "COMPLETED", f"ECS deployment {d.id} completed.", now
    kept = [x for x in plan.deployments if x.status == "PRIMARY"]
    others = [x for x in plan.deployments if x.status != "PRIMARY"]
    for x in others:
        if not any(t.deployment_id == x.id and t.task_id not in stopping for t in tasks):
            x.status = "INACTIVE"
    plan.deployments = kept + others
    if start_on:
        plan.events.append(f"(service {service.serviceName}) has started {len(start_on)} tasks.")
    return plan
