"""Service reconciliation: a pure function from a service and its tasks to a plan.

One function, :func:`plan_service`, covers steady state, scaling, rolling deployments, health
replacement, node drain, the deployment circuit breaker and launch backoff, with ECS's
semantics:

* ``desired`` = desiredCount; at most ``floor(desired * maximumPercent / 100)`` tasks
  RUNNING+PENDING; never fewer than ``ceil(desired * minimumHealthyPercent / 100)`` proven.
* A task is healthy when RUNNING and (HEALTHY, or it has no health check), and *proven* once it
  has stayed healthy ``minimumHealthyTimeSeconds`` (the orchestrator's clock, from the report
  that first showed it healthy). Only proven tasks count for minimumHealthyPercent and for
  completing a deployment: a revision that crashes a moment after RUNNING never replaces the
  tasks that serve.
* A deployment whose tasks are all proven bakes for ``bake_seconds`` (failures still count
  toward the circuit breaker), then COMPLETES; one that proves no new task for
  ``progressDeadlineSeconds`` fails.
* Tasks of the PRIMARY deployment on ACTIVE nodes are "current"; every other active task
  (older deployments, draining nodes) is "old" and is replaced, old ones stopped first.
* Failures (essential exit, failed start, failed health checks) count against the PRIMARY
  deployment; at ECS's threshold the breaker marks it FAILED and, with rollback, starts a
  rollback deployment to the last COMPLETED task definition.

The plan is applied by :mod:`orchestrator.controller`; nothing here does I/O.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from dockyard.health import is_healthy
from dockyard.wire import (
    HEALTH_STOP_REASON,
    REPLACED_REASON,
    SERVICE_SCHEDULER_INITIATED,
    StopCode,
)
from orchestrator.core.scheduler import pick_scale_in
from orchestrator.models import Deployment, Service

BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
HISTORY = 10  # finished deployments kept for `rollout history` and rollback


@dataclass(frozen=True)
class TaskView:
    task_id: str
    deployment_id: str | None
    node_id: str | None
    last_status: str
    task_definition: str = ""  # family:revision
    health: str = "UNKNOWN"
    has_health_check: bool = False
    started_at: float | None = None
    healthy_since: float | None = None  # the orchestrator's clock when it last became healthy
    node_draining: bool = False
    stopping: bool = False  # asked to stop, containers not yet gone: still occupies maximumPercent room
    node_attributes: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def healthy(self) -> bool:
        return is_healthy(self.last_status, self.health, self.has_health_check)

    def proven(self, now: float, min_time: float) -> bool:
        """Healthy, and for at least ``min_time`` seconds."""
        return self.healthy and self.healthy_since is not None and now - self.healthy_since >= min_time


@dataclass(frozen=True)
class StopTask:
    task_id: str
    stop_code: StopCode
    reason: str
    failure: bool = False  # counts against the deployment (circuit breaker, backoff)


@dataclass
class ServicePlan:
    start: int = 0  # new tasks of the PRIMARY deployment, placed by the scheduler
    start_on: list[str] = field(default_factory=list)  # DAEMON: one new task pinned to each of these nodes
    stop: list[StopTask] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    adopt: list[str] = field(default_factory=list)  # tasks of an older deployment with the primary's revision
    wake_at: float | None = None  # the earliest time-driven change (backoff, proof, bake, grace, deadline)
    steady: bool = False  # desiredCount proven tasks of a finished primary deployment, nothing else
    failing: str | None = None  # why the service keeps failing, when it does

    def wake(self, when: float) -> None:
        if self.wake_at is None or when < self.wake_at:
            self.wake_at = when


def failure_threshold(desired: int) -> int:
    """ECS: 0.5 x desiredCount, rounded up, at least 3 and at most 200."""
    return min(200, max(3, math.ceil(desired * 0.5)))


def record_failure(d: Deployment, now: float) -> None:
    """A task of deployment ``d`` failed: count it and push back the next launch."""
    d.failedTasks += 1
    d.launchFailures += 1
    d.nextLaunchAt = now + min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (d.launchFailures - 1))
    d.updatedAt = now


def new_deployment(
    deployments: list[Deployment], taskdef_ref: str, desired: int, now: float, rollback: bool = False
) -> list[Deployment]:
    """Deployments after starting one for ``taskdef_ref``: the old PRIMARY turns ACTIVE and drains."""
    out: list[Deployment] = []
    for d in deployments:
        d = d.model_copy()
        if d.status == "PRIMARY":
            d.status = "ACTIVE"
            if d.rolloutState == "IN_PROGRESS":
                d.rolloutStateReason = "ECS deployment superseded by a newer deployment."
        out.append(d)
    primary = Deployment(
        id=deployment_id(taskdef_ref, now, deployments), taskDefinition=taskdef_ref, desiredCount=desired,
        createdAt=now, updatedAt=now, isRollback=rollback,
    )
    return [primary] + out


def deployment_id(taskdef_ref: str, now: float, deployments: list[Deployment]) -> str:
    """ECS-style ``ecs-svc/<16 hex>``, derived from what the planner was given (so planning stays
    a pure function): the revision, the time and the ids of the deployments before it."""
    seed = "|".join([taskdef_ref, repr(now), *(d.id for d in deployments)])
    return "ecs-svc/" + hashlib.sha256(seed.encode()).hexdigest()[:16]


def stop_unhealthy(service: Service, tasks: list[TaskView], primary: Deployment, plan: ServicePlan,
                   now: float) -> list[TaskView]:
    """Add a stop for every task failing its health checks past the grace period (a failure of its
    deployment); return the other tasks."""
    grace = service.spec.healthCheckGracePeriodSeconds
    live: list[TaskView] = []
    for t in tasks:
        unhealthy = t.last_status == "RUNNING" and t.health == "UNHEALTHY"
        if unhealthy and (t.started_at or 0) + grace <= now:
            plan.stop.append(StopTask(t.task_id, SERVICE_SCHEDULER_INITIATED, HEALTH_STOP_REASON, failure=True))
            if t.deployment_id == primary.id:
                record_failure(primary, now)
        else:
            if unhealthy:  # replaced once its grace period ends: come back then
                plan.wake((t.started_at or 0) + grace)
            live.append(t)
    return live


def fail_deployment(service: Service, plan: ServicePlan, primary: Deployment, reason: str,
                    now: float) -> Deployment:
    """Mark the PRIMARY deployment FAILED and, with the circuit breaker's rollback, start a
    rollback deployment to the last COMPLETED other revision. Returns the PRIMARY after that."""
    name = service.serviceName
    breaker = service.spec.deploymentConfiguration.deploymentCircuitBreaker
    primary.rolloutState = "FAILED"
    primary.rolloutStateReason = reason
    primary.bakeStartedAt = None
    primary.updatedAt = now
    plan.events.append(f"(service {name}) (deployment {primary.id}) deployment failed: {reason}")
    target = rollback_target(plan.deployments, primary)
    if breaker.enable and breaker.rollback and target is not None:
        desired = service.spec.desiredCount if service.status == "ACTIVE" else 0
        plan.deployments = new_deployment(plan.deployments, target.taskDefinition, desired, now, rollback=True)
        plan.events.append(
            f"(service {name}) rolling back to deployment {target.id} (task definition {target.taskDefinition})."
        )
        return plan.deployments[0]
    return primary


def rollback_target(deployments: list[Deployment], primary: Deployment | None) -> Deployment | None:
    """The newest COMPLETED deployment of another revision than ``primary``'s: where the circuit
    breaker's rollback and `rollout undo` go."""
    return next((d for d in deployments if d is not primary and d.rolloutState == "COMPLETED"
                 and (primary is None or d.taskDefinition != primary.taskDefinition)), None)


def check_progress(service: Service, plan: ServicePlan, primary: Deployment, proven: int, desired: int,
                   now: float) -> Deployment:
    """Progress of the PRIMARY deployment (``proven``: its tasks proven healthy) and its deadline:
    an IN_PROGRESS deployment that proves no new task for ``progressDeadlineSeconds`` fails (and,
    with the breaker's rollback, rolls back). Returns the PRIMARY after that."""
    cfg = service.spec.deploymentConfiguration
    if primary.lastProgressAt is None:
        primary.lastProgressAt = primary.createdAt
    if proven > primary.provenCount:
        primary.lastProgressAt = now
    primary.provenCount = proven
    deadline = cfg.progressDeadlineSeconds
    if primary.rolloutState != "IN_PROGRESS" or not deadline or proven >= desired:
        return primary
    if now - primary.lastProgressAt < deadline:
        plan.wake(primary.lastProgressAt + deadline)
        return primary
    return fail_deployment(service, plan, primary, (
        f"ECS deployment made no progress for {deadline}s (progressDeadlineSeconds): no new task "
        f"stayed healthy for {cfg.minimumHealthyTimeSeconds}s (minimumHealthyTimeSeconds)."), now)


def advance_rollout(service: Service, plan: ServicePlan, primary: Deployment, all_proven: bool, now: float) -> None:
    """Bake and completion of an IN_PROGRESS PRIMARY deployment (REPLICA and DAEMON).

    ``all_proven``: the service has exactly its desired tasks, all proven and of this deployment.
    The bake starts when that holds and starts over if it stops holding; the deployment COMPLETES
    once it has lasted ``bake_seconds``."""
    if primary.rolloutState != "IN_PROGRESS":
        return
    if not all_proven:
        primary.bakeStartedAt = None
        return
    bake = service.spec.deploymentConfiguration.bake_seconds
    if primary.bakeStartedAt is None:
        primary.bakeStartedAt = now
        if bake > 0:
            plan.events.append(f"(service {service.serviceName}) (deployment {primary.id}) all "
                               f"{primary.provenCount} tasks proven healthy; baking for {bake:g}s before completing.")
    if now - primary.bakeStartedAt < bake:
        plan.wake(primary.bakeStartedAt + bake)
        return
    primary.rolloutState = "COMPLETED"
    primary.rolloutStateReason = f"ECS deployment {primary.id} completed."
    primary.launchFailures = 0
    primary.nextLaunchAt = 0.0
    primary.updatedAt = now
    plan.events.append(f"(service {service.serviceName}) (deployment {primary.id}) deployment completed.")


def failing_reason(primary: Deployment, desired: int, all_proven: bool) -> str | None:
    """Tasks keep failing: as many failures in a row since the service was last steady as the
    circuit breaker's threshold (whether or not the breaker is on)."""
    if all_proven or primary.launchFailures < failure_threshold(desired):
        return None
    return (f"{primary.launchFailures} tasks of {primary.taskDefinition} failed in a row since the service was last "
            f"steady (deployment {primary.id} {primary.rolloutState}); relaunching with backoff")


def follow_family(service: Service, latest: str | None) -> str | None:
    """The task definition (``family:revision``) to start a deployment of, if any. ``latest``: the
    ref the service's ``taskDefinition`` resolves to now (the family's newest ACTIVE revision, or
    the pinned one). A service without a deployment gets one; a service that follows a family
    deploys a revision newer than any it has deployed (so a rolled-back revision is not retried,
    but the next one is)."""
    if service.status != "ACTIVE" or latest is None:
        return None
    primary = primary_of(service)
    if primary is None:
        return latest
    if ":" in service.spec.taskDefinition or primary.taskDefinition == latest:
        return None
    family, _, rev = latest.rpartition(":")
    deployed = [int(d.taskDefinition.rpartition(":")[2]) for d in service.deployments
                if d.taskDefinition.rpartition(":")[0] == family]
    return latest if int(rev) > max(deployed, default=0) else None


def primary_of(service: Service) -> Deployment | None:
    return primary_in(service.deployments)


def primary_in(deployments: list[Deployment]) -> Deployment | None:
    """The PRIMARY deployment of a list (a service's, or a plan's copies)."""
    return next((d for d in deployments if d.status == "PRIMARY"), None)


def plan_service(service: Service, tasks: list[TaskView], now: float) -> ServicePlan:
    """Plan one REPLICA service. ``tasks``: its tasks not yet STOPPED (``stopping`` ones included)."""
    # Every task not yet STOPPED still runs containers, including those asked to stop (now or
    # earlier): all of them count toward maximumPercent.
    present = len(tasks)
    tasks = [t for t in tasks if not t.stopping]
    plan = ServicePlan(deployments=[d.model_copy() for d in service.deployments])
    primary = primary_in(plan.deployments)
    if primary is None:
        return plan
    name = service.serviceName
    desired = service.spec.desiredCount if service.status == "ACTIVE" else 0
    cfg = service.spec.deploymentConfiguration
    max_total = math.floor(desired * cfg.maximumPercent / 100)
    min_healthy = math.ceil(desired * cfg.minimumHealthyPercent / 100)
    min_time = cfg.minimumHealthyTimeSeconds
    proven_ids: set[str] = set()
    for t in tasks:
        if t.proven(now, min_time):
            proven_ids.add(t.task_id)
        elif t.healthy and t.healthy_since is not None:
            plan.wake(t.healthy_since + min_time)  # its proof ends then

    def proven(t: TaskView) -> bool:
        return t.task_id in proven_ids

    # 1. Replace tasks that fail their health checks (after the grace period).
    live = stop_unhealthy(service, tasks, primary, plan, now)

    # 2. Circuit breaker: failures before or after RUNNING count until the deployment COMPLETES.
    breaker = cfg.deploymentCircuitBreaker
    if breaker.enable and primary.rolloutState == "IN_PROGRESS" and primary.failedTasks >= failure_threshold(desired):
        primary = fail_deployment(service, plan, primary, (
            f"ECS deployment circuit breaker: task failed to start or failed health checks "
            f"({primary.failedTasks} failed tasks, threshold {failure_threshold(desired)})."), now)
    # ... and the progress deadline: no new task proven for progressDeadlineSeconds.
    primary = check_progress(service, plan, primary, sum(
        proven(t) for t in live if t.deployment_id == primary.id
        or (primary.isRollback and t.task_definition == primary.taskDefinition)), desired, now)

    # 3. Split tasks into current (primary, on ACTIVE nodes) and old (to be replaced).
    # A task of an older deployment that already runs the primary's revision (e.g. after a rollback)
    # is adopted instead of replaced.
    current = [t for t in live if (t.deployment_id == primary.id or t.task_definition == primary.taskDefinition)
               and not t.node_draining]
    plan.adopt = [t.task_id for t in current if t.deployment_id != primary.id]
    if not primary.isRollback:
        # Only a rollback adopts; any other new deployment (e.g. new placement rules) replaces every task.
        current = [t for t in current if t.deployment_id == primary.id]
        plan.adopt = []
    current_ids = {t.task_id for t in current}  # by id: `t not in current` was O(n) per task
    old = [t for t in live if t.task_id not in current_ids]
    healthy = sum(proven(t) for t in live)

    # 4. Stop old tasks: unproven ones freely, proven ones while the minimum still holds.
    for t in sorted(old, key=lambda t: (proven(t), t.task_id)):
        if not proven(t):
            plan.stop.append(StopTask(t.task_id, SERVICE_SCHEDULER_INITIATED, _replace_reason(t)))
        elif healthy - 1 >= min_healthy:
            plan.stop.append(StopTask(t.task_id, SERVICE_SCHEDULER_INITIATED, _replace_reason(t)))
            healthy -= 1
    stopping = {s.task_id for s in plan.stop}
    old_left = [t for t in old if t.task_id not in stopping]

    # 5. Scale in: the current deployment beyond desired (pending, then not yet proven, then proven
    #    tasks as ECS picks), then whatever still exceeds maximumPercent (a scale-in during a rollout).
    scale_reason = f"Scaling activity initiated by (service {name})"
    if len(current) > desired:
        excess = len(current) - desired
        unready = sorted((t for t in current if not proven(t)),
                         key=lambda t: (t.last_status == "RUNNING", t.healthy, t.task_id))
        victims = [t.task_id for t in unready][:excess]
        if excess > len(victims):
            spread_field = next((s.field for s in service.spec.placementStrategy if s.type == "spread"), None)
            ready = [(t.task_id, t.node_id, t.node_attributes) for t in current if proven(t)]
            victims += pick_scale_in(ready, excess - len(victims), spread_field)
        victim_ids = set(victims)
        for t in current:
            if t.task_id in victim_ids:
                plan.stop.append(StopTask(t.task_id, SERVICE_SCHEDULER_INITIATED, scale_reason))
                healthy -= proven(t)
        current = [t for t in current if t.task_id not in victim_ids]
    over = len(current) + len(old_left) - max_total
    if over > 0:
        unready_ids = {t.task_id for t in [t for t in current if not proven(t)][:over]}
        for t in current:
            if t.task_id in unready_ids:
                plan.stop.append(StopTask(t.task_id, SERVICE_SCHEDULER_INITIATED, scale_reason))
                over -= 1
        current = [t for t in current if t.task_id not in unready_ids]
        for t in sorted(old_left, key=lambda t: t.task_id):
            if over > 0 and healthy - 1 >= min_healthy:
                plan.stop.append(StopTask(t.task_id, SERVICE_SCHEDULER_INITIATED, scale_reason))
                healthy -= 1
                over -= 1
    stopping = {s.task_id for s in plan.stop}
    old_left = [t for t in old if t.task_id not in stopping]

    # 6. Start tasks of the primary deployment within maximumPercent, unless failed or backing off.
    want = desired - len(current)
    room = max_total - present
    if want > 0 and room > 0 and primary.rolloutState != "FAILED":
        if now < primary.nextLaunchAt:
            plan.wake(primary.nextLaunchAt)
        else:
            plan.start = min(want, room)

    # 7. Deployment bookkeeping: counts, proof, bake, completion, retirement of drained deployments.
    all_proven = not old_left and len(current) == desired and sum(proven(t) for t in current) == desired
    if all_proven:  # a steady service forgets old launch failures (backoff starts over)
        primary.launchFailures, primary.nextLaunchAt = 0, 0.0
    advance_rollout(service, plan, primary, all_proven, now)
    counts: dict[str, tuple[int, int]] = {}
    for t in live:
        if t.task_id in stopping:
            continue
        dep = primary.id if t.task_id in plan.adopt else (t.deployment_id or "")
        r, p = counts.get(dep, (0, 0))
        counts[dep] = (r + (t.last_status == "RUNNING"), p + (t.last_status != "RUNNING"))
    kept: list[Deployment] = []
    history: list[Deployment] = []
    for d in plan.deployments:
        r, p = counts.get(d.id, (0, 0))
        if d.status == "PRIMARY":
            d.desiredCount, d.runningCount, d.pendingCount = desired, r, p + (plan.start if d is primary else 0)
            kept.append(d)
        elif d.status == "ACTIVE":
            d.desiredCount, d.runningCount, d.pendingCount = 0, r, p
            # A drained older deployment retires once the primary has finished (completed or failed).
            if r + p == 0 and primary.rolloutState != "IN_PROGRESS":
                d.status = "INACTIVE"
                d.updatedAt = now
                history.append(d)
            else:
                kept.append(d)
        else:
            history.append(d)
    plan.deployments = kept + history[:HISTORY]
    plan.steady = all_proven and len(kept) == 1 and primary.rolloutState == "COMPLETED"
    plan.failing = failing_reason(primary, desired, all_proven)
    if plan.start:
        plan.events.append(f"(service {name}) has started {plan.start} tasks.")
    retired = [s for s in plan.stop if not s.failure]
    if retired:
        plan.events.append(f"(service {name}) has stopped {len(retired)} running tasks.")
    return plan


def _replace_reason(t: TaskView) -> str:
    if t.node_draining:
        return f"Container instance {t.node_id} is being drained"
    return REPLACED_REASON
