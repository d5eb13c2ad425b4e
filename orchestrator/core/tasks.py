"""The task state machine on the orchestrator side: folding agent reports into Task records.

    PROVISIONING --placed--> PENDING --agent: essential containers up--> RUNNING
    RUNNING/PENDING --essential exit | failed start | stop requested--> STOPPING --> STOPPED
    RUNNING (a load-balancer target) --stop requested--> DEACTIVATING --drained--> STOPPING

Pure: ``fold_report`` and the ``*_changes`` functions take a Task (and a report) and return the
fields to change, mutating nothing; orchestrator/task_apply.py applies them.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from dockyard.ecs import TaskOverride, apply_overrides
from dockyard.wire import (
    ESSENTIAL_CONTAINER_EXITED,
    ESSENTIAL_EXITED_REASON,
    FAILURE_CODES,
    StopCode,
    TaskReport,
)
from orchestrator.models import (
    LaunchType,
    PlacementConstraint,
    PlacementStrategy,
    Service,
    Task,
    TaskContainer,
    TaskDefinition,
)


class Outcome(NamedTuple):
    """What a report did to a task (a tuple: built for every report folded, ~0.3 us against a
    frozen dataclass's ~1.5 us)."""

    changed: bool
    stopped_now: bool = False  # the task reached STOPPED with this report
    failure: bool = False  # it stopped on its own (essential exit, failed start), not because we asked
    details_only: bool = False  # what changed is in the containers' details only (State.flush may write it later)


# The fields a report can change that count as a change of the task (for the planners, the store).
_TRACKED = ("lastStatus", "healthStatus", "containers", "pullError", "ipAddress")


def fold_report(task: Task, r: TaskReport, now: float) -> tuple[dict[str, Any], Outcome]:
    """What agent report ``r`` changes in ``task``: (field -> new value, outcome). Changes
    nothing itself; orchestrator.task_apply applies the fields."""
    if task.lastStatus == "STOPPED":
        return {}, Outcome(False)
    held = task.containers
    same = len(held) == len(r.containers) and all(c.matches(rc) for c, rc in zip(held, r.containers, strict=True))
    new: dict[str, Any] = {
        "containers": held if same else [TaskContainer.from_report(c) for c in r.containers],
        "healthStatus": r.healthStatus,
        "pullError": r.pullError,
        "ipAddress": r.ipAddress or task.ipAddress,
    }
    stopped_now = failure = False
    stop_code = task.stopCode
    if r.lastStatus == "RUNNING":
        # A draining target keeps running on its node: it stays DEACTIVATING until released.
        # A released one is STOPPING until its node reports the stop.
        keep = task.desiredStatus == "STOPPED" and task.lastStatus in ("DEACTIVATING", "STOPPING")
        new["lastStatus"] = task.lastStatus if keep else "RUNNING"
        new["startedAt"] = task.startedAt or r.startedAt or now
    elif r.lastStatus == "STOPPED":
        stopped_now = True
        failure = task.desiredStatus == "RUNNING"
        new["lastStatus"] = "STOPPED"
        new["stoppedAt"] = r.stoppedAt or now
        new["stoppingAt"] = task.stoppingAt or new["stoppedAt"]
        if task.desiredStatus == "RUNNING":  # it ended on its own
            new["desiredStatus"] = "STOPPED"
            new["stopCode"] = stop_code = r.stopCode or ESSENTIAL_CONTAINER_EXITED
            new["stoppedReason"] = r.stoppedReason or ESSENTIAL_EXITED_REASON
        if r.startedAt and not task.startedAt:
            new["startedAt"] = r.startedAt
    elif r.lastStatus in ("STOPPING", "DEACTIVATING", "DEPROVISIONING"):
        new["lastStatus"] = "STOPPING"
    elif task.lastStatus in ("PROVISIONING", "PENDING"):
        new["lastStatus"] = "PENDING" if r.lastStatus in ("PENDING", "PROVISIONING") else r.lastStatus
    held_fields = task.__dict__  # the fields' values (a pydantic model keeps them there)
    changes = {k: v for k, v in new.items() if held_fields[k] != v}
    changed = any(k in changes for k in _TRACKED)
    return changes, Outcome(changed, stopped_now, failure and stop_code in FAILURE_CODES,
                            len(changes) == 1 and "containers" in changes)


def proof_clock(healthy_since: float | None, healthy: bool, now: float) -> float | None:
    """A task's healthySince after a report: kept while it stays healthy, ``now`` when it turns
    healthy, None when it is not (a later recovery starts the proof over)."""
    if not healthy:
        return None
    return healthy_since if healthy_since is not None else now


def stopped_changes(task: Task, stop_code: StopCode, reason: str, now: float) -> dict[str, Any]:
    """A task STOPPED without waiting for an agent (never placed, or its node is lost)."""
    return {
        "desiredStatus": "STOPPED",
        "lastStatus": "STOPPED",
        "stopCode": task.stopCode or stop_code,
        "stoppedReason": task.stoppedReason or reason,
        "stoppingAt": task.stoppingAt or now,
        "stoppedAt": now,
        "containers": [c if c.lastStatus == "STOPPED" else c.model_copy(update={"lastStatus": "STOPPED"})
                       for c in task.containers],
    }


def stop_changes(task: Task, stop_code: StopCode, reason: str, now: float, drain: bool = False) -> dict[str, Any] | None:
    """Ask for a task to stop (the agent stops its containers); None if it was already asked.
    ``drain``: the task is a load-balancer target; a RUNNING one goes DEACTIVATING first (its node
    keeps it running until core.targets.drain_released)."""
    if task.desiredStatus == "STOPPED":
        return None
    changes: dict[str, Any] = {"desiredStatus": "STOPPED", "stopCode": stop_code, "stoppedReason": reason,
                               "stoppingAt": now}
    if drain and task.lastStatus == "RUNNING":
        changes.update(lastStatus="DEACTIVATING", drainingSince=now)
    if task.nodeId is None:  # never placed: nothing to wait for
        changes.update(stopped_changes(task.model_copy(update=changes), stop_code, reason, now))
    return changes


def new_task(task_id: str, cluster: str, td: TaskDefinition, now: float, service: Service | None = None,
             deployment_id: str | None = None, node_id: str | None = None, started_by: str | None = None,
             launch_type: LaunchType | None = None, constraints: Iterable[PlacementConstraint] = (),
             strategy: Iterable[PlacementStrategy] | None = None, overrides: TaskOverride | None = None,
             tags: dict[str, str] | None = None, propagate: str | None = None, managed_tags: bool = False) -> Task:
    """A new task record of ``td`` (a service's, or a standalone one), PROVISIONING until placed
    (PENDING when pinned to ``node_id``, as DAEMON tasks are). ``constraints`` add to the task
    definition's and the service's own; ``strategy`` defaults to the service's. ``tags``,
    ``propagate`` and ``managed_tags`` as RunTask's; a service's tasks take the service's settings."""
    s = service
    if s is not None:
        propagate, managed_tags = s.spec.propagateTags, s.spec.enableECSManagedTags
    spec = apply_overrides(td.spec, overrides) if overrides else td.spec  # cpu/memory overrides reserve as asked
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
        cpu=spec.total_cpu,
        memory=spec.total_memory,
        overrides=overrides,
        placementConstraints=[*td.spec.placementConstraints, *(s.spec.placementConstraints if s else ()),
                              *constraints],
        placementStrategy=list(strategy) if strategy is not None else (list(s.spec.placementStrategy) if s else []),
        createdAt=now,
        nodeId=node_id,
        lastStatus="PENDING" if node_id else "PROVISIONING",
        tags=task_tags(cluster, td, s, tags or {}, propagate, managed_tags) or None,
    )


def sibling_task(first: Task, task_id: str, now: float) -> Task:
    """Another task made from :func:`new_task`'s arguments for ``first`` (a service starting
    several at once): ``first`` with its own id and creation time, and lists and tags of its
    own (their items are shared, as new_task shares them with the definition and the service).
    A copy: ~3 us against ~10 us to build and validate each one. ``first`` is not changed."""
    return first.model_copy(update={
        "taskId": task_id,
        "createdAt": now,
        "containers": [],
        "placementConstraints": list(first.placementConstraints),
        "placementStrategy": list(first.placementStrategy),
        "tags": dict(first.tags) if first.tags is not None else None,
    })


def task_tags(cluster: str, td: TaskDefinition, service: Service | None, tags: dict[str, str],
              propagate: str | None, managed: bool) -> dict[str, str]:
    """A new task's tags, as ECS makes them: the task definition's or the service's (propagateTags),
    then ECS's managed tags (``aws:ecs:clusterName``, ``aws:ecs:serviceName``), then the tags given,
    which win over both."""
    out: dict[str, str] = {}
    if propagate == "TASK_DEFINITION":
        out.update(td.tags)
    elif propagate == "SERVICE" and service is not None:
        out.update(service.tags)
    if managed:
        out["aws:ecs:clusterName"] = cluster
        if service is not None:
            out["aws:ecs:serviceName"] = service.serviceName
    out.update(tags)
    return out


def missing_from_snapshot(tasks: Iterable[Task], reported: set[str], observed_generation: int) -> list[Task]:
    """The node's tasks that a full snapshot no longer shows although the agent has applied a
    document that carried them: the agent lost them (e.g. removed behind its back)."""
    return [t for t in tasks if t.taskId not in reported and t.placedGeneration is not None
            and observed_generation >= t.placedGeneration]
