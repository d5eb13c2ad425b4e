"""The task state machine on the orchestrator side: folding agent reports into Task records.

    PROVISIONING --placed--> PENDING --agent: essential containers up--> RUNNING
    RUNNING/PENDING --essential exit | failed start | stop requested--> STOPPING --> STOPPED

Pure: takes a Task and a TaskReport, changes the Task, says what happened.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dockyard.wire import (
    ESSENTIAL_CONTAINER_EXITED,
    ESSENTIAL_EXITED_REASON,
    FAILURE_CODES,
    StopCode,
    TaskReport,
)
from orchestrator.models import (
    PlacementConstraint,
    PlacementStrategy,
    Service,
    Task,
    TaskContainer,
    TaskDefinition,
)


@dataclass(frozen=True)
class Outcome:
    changed: bool
    stopped_now: bool = False  # the task reached STOPPED with this report
    failure: bool = False  # it stopped on its own (essential exit, failed start), not because we asked


def apply_report(task: Task, r: TaskReport, now: float) -> Outcome:
    if task.lastStatus == "STOPPED":
        return Outcome(False)
    before = (task.lastStatus, task.healthStatus, task.containers, task.pullError, task.ipAddress)
    task.containers = [TaskContainer.from_report(c) for c in r.containers]
    task.healthStatus = r.healthStatus
    task.pullError = r.pullError
    task.ipAddress = r.ipAddress or task.ipAddress
    stopped_now = failure = False
    if r.lastStatus == "RUNNING":
        task.lastStatus = "RUNNING"
        task.startedAt = task.startedAt or r.startedAt or now
    elif r.lastStatus == "STOPPED":
        stopped_now = True
        failure = task.desiredStatus == "RUNNING"
        task.lastStatus = "STOPPED"
        task.stoppedAt = r.stoppedAt or now
        task.stoppingAt = task.stoppingAt or task.stoppedAt
        if task.desiredStatus == "RUNNING":  # it ended on its own
            task.desiredStatus = "STOPPED"
            task.stopCode = r.stopCode or ESSENTIAL_CONTAINER_EXITED
            task.stoppedReason = r.stoppedReason or ESSENTIAL_EXITED_REASON
        if r.startedAt and not task.startedAt:
            task.startedAt = r.startedAt
    elif r.lastStatus in ("STOPPING", "DEACTIVATING", "DEPROVISIONING"):
        task.lastStatus = "STOPPING"
    elif task.lastStatus in ("PROVISIONING", "PENDING"):
        task.lastStatus = "PENDING" if r.lastStatus in ("PENDING", "PROVISIONING") else r.lastStatus
    after = (task.lastStatus, task.healthStatus, task.containers, task.pullError, task.ipAddress)
    return Outcome(before != after, stopped_now, failure and task.stopCode in FAILURE_CODES)


def proof_clock(healthy_since: float | None, healthy: bool, now: float) -> float | None:
    """A task's healthySince after a report: kept while it stays healthy, ``now`` when it turns
    healthy, None when it is not (a later recovery starts the proof over)."""
    if not healthy:
        return None
    return healthy_since if healthy_since is not None else now


def mark_stopped(task: Task, stop_code: StopCode, reason: str, now: float) -> None:
    """Stop a task without waiting for an agent (never placed, or its node is lost)."""
    task.desiredStatus = "STOPPED"
    task.lastStatus = "STOPPED"
    task.stopCode = task.stopCode or stop_code
    task.stoppedReason = task.stoppedReason or reason
    task.stoppingAt = task.stoppingAt or now
    task.stoppedAt = now
    for c in task.containers:
        if c.lastStatus != "STOPPED":
            c.lastStatus = "STOPPED"


def request_stop(task: Task, stop_code: StopCode, reason: str, now: float) -> bool:
    """Ask for a task to stop; the agent stops its containers. False if it was already stopping."""
    if task.desiredStatus == "STOPPED":
        return False
    task.desiredStatus = "STOPPED"
    task.stopCode = stop_code
    task.stoppedReason = reason
    task.stoppingAt = now
    if task.nodeId is None:
        mark_stopped(task, stop_code, reason, now)
    return True


def new_task(task_id: str, cluster: str, td: TaskDefinition, now: float, service: Service | None = None,
             deployment_id: str | None = None, node_id: str | None = None, started_by: str | None = None,
             launch_type: str | None = None, constraints: Iterable[PlacementConstraint] = (),
             strategy: Iterable[PlacementStrategy] | None = None) -> Task:
    """A new task record of ``td`` (a service's, or a standalone one), PROVISIONING until placed
    (PENDING when pinned to ``node_id``, as DAEMON tasks are). ``constraints`` add to the task
    definition's and the service's own; ``strategy`` defaults to the service's."""
    s = service
    return Task(
        taskId=task_id,
        cluster=cluster,
        taskDefinition=td.ref,
        family=td.family,
        revision=td.revision,
        group=f"service:{s.serviceName}" if s else f"family:{td.family}",
        serviceName=s.serviceName if s else None,
        deploymentId=deployment_id,
        startedBy=started_by or (f"ecs-svc/{s.serviceName}" if s else None),
        launchType=launch_type or (s.spec.launchType if s else "EC2"),
        cpu=td.spec.total_cpu,
        memory=td.spec.total_memory,
        placementConstraints=[*td.spec.placementConstraints, *(s.spec.placementConstraints if s else ()),
                              *constraints],
        placementStrategy=list(strategy) if strategy is not None else (list(s.spec.placementStrategy) if s else []),
        createdAt=now,
        nodeId=node_id,
        lastStatus="PENDING" if node_id else "PROVISIONING",
    )


def missing_from_snapshot(tasks: Iterable[Task], reported: set[str], observed_generation: int) -> list[Task]:
    """The node's tasks that a full snapshot no longer shows although the agent has applied a
    document that carried them: the agent lost them (e.g. removed behind its back)."""
    return [t for t in tasks if t.taskId not in reported and t.placedGeneration is not None
            and observed_generation >= t.placedGeneration]
