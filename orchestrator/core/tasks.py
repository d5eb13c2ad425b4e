"""The task state machine on the orchestrator side: folding agent reports into Task records.

    PROVISIONING --placed--> PENDING --agent: essential containers up--> RUNNING
    RUNNING/PENDING --essential exit | failed start | stop requested--> STOPPING --> STOPPED

Pure: takes a Task and a TaskReport, changes the Task, says what happened.
"""
from __future__ import annotations

from dataclasses import dataclass

from dockyard.wire import TaskReport
from orchestrator.models import Task, TaskContainer

FAILURE_CODES = ("EssentialContainerExited", "TaskFailedToStart")


@dataclass(frozen=True)
class Outcome:
    changed: bool
    stopped_now: bool = False  # the task reached STOPPED with this report
    failure: bool = False  # it stopped on its own (essential exit, failed start), not because we asked


def apply_report(task: Task, r: TaskReport, now: float) -> Outcome:
    before = (task.lastStatus, task.healthStatus, [c.model_dump() for c in task.containers], task.pullError, task.ipAddress)
    if task.lastStatus == "STOPPED":
        return Outcome(False)
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
            task.stopCode = r.stopCode or "EssentialContainerExited"
            task.stoppedReason = r.stoppedReason or "Essential container in task exited"
        if r.startedAt and not task.startedAt:
            task.startedAt = r.startedAt
    elif r.lastStatus in ("STOPPING", "DEACTIVATING", "DEPROVISIONING"):
        task.lastStatus = "STOPPING"
    elif task.lastStatus in ("PROVISIONING", "PENDING"):
        task.lastStatus = "PENDING" if r.lastStatus in ("PENDING", "PROVISIONING") else r.lastStatus
    after = (task.lastStatus, task.healthStatus, [c.model_dump() for c in task.containers], task.pullError, task.ipAddress)
    return Outcome(before != after, stopped_now, failure and task.stopCode in FAILURE_CODES)


def proof_clock(healthy_since: float | None, healthy: bool, now: float) -> float | None:
    """A task's healthySince after a report: kept while it stays healthy, ``now`` when it turns
    healthy, None when it is not (a later recovery starts the proof over)."""
    if not healthy:
        return None
    return healthy_since if healthy_since is not None else now


def mark_stopped(task: Task, stop_code: str, reason: str, now: float) -> None:
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


def request_stop(task: Task, stop_code: str, reason: str, now: float) -> bool:
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
