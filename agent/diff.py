"""The agent's pure core: desired tasks + actual containers -> a plan of container actions.

Functional core, imperative shell: everything here takes a snapshot (desired tasks, the
containers as listed, what is already known finished) and returns a value; it imports no
Docker or MQTT code, reads no clock (time, where a rule needs it, is an argument) and mutates
nothing it is given. The shell lists containers, calls :func:`plan`, has
:mod:`agent.executor` apply the actions in order per task, and publishes :func:`task_report`
results through :mod:`agent.reporter`. Being level-triggered, running :func:`plan` again
after (part of) a plan was executed gives the remaining work and nothing more.

Rules (ECS semantics):
* A container is created and started only when all its ``dependsOn`` conditions hold
  (START: started; COMPLETE: exited; SUCCESS: exited 0; HEALTHY: Docker health healthy).
  A condition that can never hold (SUCCESS dependency exited non-zero, HEALTHY dependency
  exited or went unhealthy) fails the task: ``TaskFailedToStart``.
* A container whose ``restartPolicy`` is enabled, that exited with a code not in
  ``ignoredExitCodes`` after running at least ``restartAttemptPeriod`` seconds since its last
  (re)start, is restarted in place (:class:`Restart`, same container); any other exit is
  handled as without a policy (:func:`restart_due`).
* An essential container that exited stops the task: ``EssentialContainerExited``.
* A finished task (in ``finished``, or newly finished by this plan) is never started again;
  its running containers are stopped in reverse dependency order, its containers kept.
* ``desiredStatus == STOPPED``: stop the containers (reverse order), keep them.
* Tasks absent from the desired set: stop every container; remove them, then the task network
  and the task-scoped volumes, once ``cleanup_wait`` seconds passed since the last of them
  exited (ECS's ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION: a stopped task's logs stay readable
  meanwhile). Containers that never ran are removed at once.
* Only containers labelled with this node are ever considered.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

from agent.runtime import ActualContainer
from dockyard.ecs import ContainerDefinition, ContainerDependency, start_order
from dockyard.health import checked_containers, task_health
from dockyard.wire import (
    ContainerReport,
    DesiredDoc,
    DesiredDocHead,
    DesiredTask,
    HealthStatus,
    NetworkBinding,
    TaskReport,
    TaskStatus,
)

ContainerStatus = Literal["PENDING", "RUNNING", "STOPPED"]

ESSENTIAL_EXITED = "EssentialContainerExited"
FAILED_TO_START = "TaskFailedToStart"


# ---- actions ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Create:
    task: DesiredTask
    container_name: str

    @property
    def task_id(self) -> str:
        return self.task.taskId

    @property
    def definition(self) -> ContainerDefinition:
        return next(c for c in self.task.taskDefinition.containerDefinitions if c.name == self.container_name)


@dataclass(frozen=True)
class Start:
    task_id: str
    container_name: str
    docker_id: str | None  # None: the container the preceding Create of this task made


@dataclass(frozen=True)
class Restart:
    """Start an exited container again, in place (its restart policy); counted as a restart."""

    task_id: str
    container_name: str
    docker_id: str


@dataclass(frozen=True)
class Stop:
    task_id: str
    container_name: str
    docker_id: str
    timeout: int


@dataclass(frozen=True)
class Remove:
    task_id: str
    container_name: str
    docker_id: str


@dataclass(frozen=True)
class RemoveNetwork:
    task_id: str
    network: str


@dataclass(frozen=True)
class RemoveVolume:
    """A task-scoped Docker volume, removed once the task's containers are gone."""

    task_id: str
    volume: str


Action = Create | Start | Restart | Stop | Remove | RemoveNetwork | RemoveVolume


@dataclass(frozen=True)
class Finish:
    """Why a task reached (or is heading to) STOPPED on its own."""

    stop_code: str | None
    reason: str | None
    container: str | None = None  # the container that caused it, if any
    exit_code: int | None = None


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    finished: dict[str, Finish] = field(default_factory=dict)  # tasks this plan found finished (new)

    def by_task(self) -> dict[str, list[Action]]:
        out: dict[str, list[Action]] = defaultdict(list)
        for a in self.actions:
            out[a.task_id].append(a)
        return dict(out)


# ---- dependency conditions ------------------------------------------------------------------
OK, WAIT = "ok", "wait"


def condition_state(dep: ContainerDependency, c: ActualContainer | None, planned_running: bool = False) -> str:
    """``ok``, ``wait`` or a failure text: can ``dep`` never hold any more?"""
    cond = dep.condition
    if c is None or c.state == "created":
        return OK if (planned_running and cond == "START") else WAIT
    if c.running:
        if cond == "START":
            return OK
        if cond == "HEALTHY":
            if c.health == "healthy":
                return OK
            if c.health == "unhealthy":
                return f"dependency '{dep.containerName}' is UNHEALTHY (condition HEALTHY)"
        return WAIT
    # exited
    if cond in ("START", "COMPLETE"):
        return OK
    if cond == "SUCCESS":
        if c.exit_code == 0:
            return OK
        return f"dependency '{dep.containerName}' exited with code {c.exit_code} (condition SUCCESS)"
    return f"dependency '{dep.containerName}' exited before becoming HEALTHY (condition HEALTHY)"


def _pick(cs: list[ActualContainer]) -> tuple[ActualContainer, list[ActualContainer]]:
    """One container per (task, name); duplicates (should never happen) are extras to remove."""
    ranked = sorted(cs, key=lambda c: (c.running, c.state != "created", c.started_at or 0.0, c.id), reverse=True)
    return ranked[0], ranked[1:]


def _stop_remove(task_id: str, cs: Iterable[ActualContainer], remove: bool) -> list[Action]:
    acts: list[Action] = []
    for c in cs:
        if c.running:
            acts.append(Stop(task_id, c.container_name, c.id, c.stop_timeout))
    if remove:
        acts += [Remove(task_id, c.container_name, c.id) for c in cs]
    return acts


def _reverse_start_order(task: DesiredTask | None, cs: Mapping[str, ActualContainer]) -> list[ActualContainer]:
    if task is not None:
        order = [n for n in reversed(start_order(task.taskDefinition.containerDefinitions)) if n in cs]
        order += sorted(n for n in cs if n not in order)
        return [cs[n] for n in order]
    # Definition unknown (task left the desired set): newest start first approximates it.
    return sorted(cs.values(), key=lambda c: (c.started_at or 0.0, c.container_name), reverse=True)


# ---- restart policy -------------------------------------------------------------------------
def restart_due(d: ContainerDefinition, c: ActualContainer, now: float | None = None) -> bool:
    """ECS's container restart policy: restart ``c`` in place? Only when it exited, its policy is
    enabled, its exit code is not ignored and it ran at least ``restartAttemptPeriod`` seconds
    since its last (re)start (Docker's StartedAt is the last start; ``now`` stands in for a
    missing FinishedAt). A container that exits sooner is not restarted: ECS's guard against
    restart loops."""
    rp = d.restartPolicy
    if rp is None or not rp.enabled or not c.exited or c.started_at is None:
        return False
    if c.exit_code is not None and c.exit_code in rp.ignoredExitCodes:
        return False
    end = c.finished_at if c.finished_at is not None else now
    return end is not None and end - c.started_at >= rp.restartAttemptPeriod


# ---- the plan -------------------------------------------------------------------------------
def plan(
    desired: Sequence[DesiredTask],
    actual: Sequence[ActualContainer],
    node_id: str,
    finished: Mapping[str, Finish] | None = None,
    networks: Mapping[str, str] | None = None,
    volumes: Mapping[str, Sequence[str]] | None = None,
    now: float | None = None,
    cleanup_wait: float = 0.0,
) -> Plan:
    """Compute the actions that move ``actual`` towards ``desired``.

    ``finished``: tasks already known STOPPED (never restarted). ``networks``: per-task
    networks of this node (task id -> network name). ``volumes``: task-scoped volumes of this
    node (task id -> volume names). ``now``: the wall clock (epoch seconds, as Docker's
    timestamps), for the restart policy and the cleanup wait. ``cleanup_wait``: seconds a task
    absent from ``desired`` keeps its stopped containers (0: removed at once).
    """
    finished = finished or {}
    networks = networks or {}
    volumes = volumes or {}
    out = Plan()
    by_task: dict[str, list[ActualContainer]] = defaultdict(list)
    for c in actual:
        if c.node == node_id and c.task_id:
            by_task[c.task_id].append(c)

    seen: set[str] = set()
    for task in desired:
        tid = task.taskId
        if tid in seen:
            continue
        seen.add(tid)
        primary: dict[str, ActualContainer] = {}
        grouped: dict[str, list[ActualContainer]] = defaultdict(list)
        for c in by_task.pop(tid, []):
            grouped[c.container_name].append(c)
        for name, cs in grouped.items():
            keep, extras = _pick(cs)
            primary[name] = keep
            out.actions += _stop_remove(tid, extras, remove=True)

        defs = {d.name: d for d in task.taskDefinition.containerDefinitions}
        order = start_order(task.taskDefinition.containerDefinitions)
        fin = finished.get(tid)
        restarting: list[str] = []
        if fin is None and task.desiredStatus == "RUNNING":
            restarting = [n for n in order if n in primary and restart_due(defs[n], primary[n], now)]
            # A container about to restart is neither an essential exit nor a dependency's outcome.
            view = {n: c for n, c in primary.items() if n not in restarting} if restarting else primary
            fin = _essential_exit(order, defs, view) or _dependency_failure(order, defs, view)
            if fin is not None:
                out.finished[tid] = fin
        if fin is not None or task.desiredStatus == "STOPPED":
            out.actions += _stop_remove(tid, _reverse_start_order(task, primary), remove=False)
            continue
        out.actions += [Restart(tid, n, primary[n].id) for n in restarting]

        planned: set[str] = set()  # started by this plan (in order, so START conditions hold)
        for name in order:
            pc = primary.get(name)
            if pc is not None and pc.state != "created":
                continue  # running, restarting (above), or exited (non-essential, no restart due)
            ready = all(
                condition_state(dep, primary.get(dep.containerName), dep.containerName in planned) == OK
                for dep in defs[name].dependsOn
            )
            if not ready:
                continue
            if pc is None:
                out.actions.append(Create(task, name))
                out.actions.append(Start(tid, name, None))
            else:
                out.actions.append(Start(tid, name, pc.id))
            planned.add(name)

    # Tasks no longer desired: stop everything; after the cleanup wait remove it, then the per-task network.
    for tid, cs in sorted(by_task.items()):
        grouped2: dict[str, list[ActualContainer]] = defaultdict(list)
        for c in cs:
            grouped2[c.container_name].append(c)
        ordered = _reverse_start_order(None, {n: _pick(v)[0] for n, v in grouped2.items()})
        extras = [c for c in cs if c not in ordered]
        if cleanup_due(cs, now, cleanup_wait) is not None:
            out.actions += _stop_remove(tid, ordered + extras, remove=False)  # kept: not removed yet
            continue
        out.actions += _stop_remove(tid, ordered + extras, remove=True)
        if tid in networks:
            out.actions.append(RemoveNetwork(tid, networks[tid]))
        out.actions += [RemoveVolume(tid, v) for v in volumes.get(tid, ())]
    for tid, net in sorted(networks.items()):
        if tid not in seen and tid not in by_task:
            out.actions.append(RemoveNetwork(tid, net))
    for tid, vols in sorted(volumes.items()):
        if tid not in seen and tid not in by_task:
            out.actions += [RemoveVolume(tid, v) for v in vols]
    return out


def cleanup_due(cs: Sequence[ActualContainer], now: float | None, cleanup_wait: float) -> float | None:
    """When the stopped containers ``cs`` of a task no longer desired are to be removed (epoch seconds), or None
    when that is now: ``cleanup_wait`` after the last of them exited. Still running ones count from ``now``
    (they are stopped first); containers that never ran are not kept."""
    if cleanup_wait <= 0 or now is None:
        return None
    ends = [c.finished_at if c.exited and c.finished_at else now for c in cs if c.running or c.exited]
    if not ends:
        return None
    due = max(ends) + cleanup_wait
    return due if due > now else None


def _essential_exit(order: list[str], defs: Mapping[str, ContainerDefinition], cs: Mapping[str, ActualContainer]) -> Finish | None:
    for name in order:
        c = cs.get(name)
        if c is not None and c.exited and defs[name].essential:
            return Finish(ESSENTIAL_EXITED, "Essential container in task exited", name, c.exit_code)
    return None


def _dependency_failure(order: list[str], defs: Mapping[str, ContainerDefinition], cs: Mapping[str, ActualContainer]) -> Finish | None:
    for name in order:
        c = cs.get(name)
        if c is not None and c.state != "created":
            continue
        for dep in defs[name].dependsOn:
            st = condition_state(dep, cs.get(dep.containerName))
            if st not in (OK, WAIT):
                return Finish(FAILED_TO_START, f"Container '{name}' can never start: {st}", name)
    return None


# ---- reports --------------------------------------------------------------------------------
_HEALTH: dict[str, HealthStatus] = {"healthy": "HEALTHY", "unhealthy": "UNHEALTHY"}


def container_report(name: str, c: ActualContainer | None, stopping: bool, finish: Finish | None,
                     restart_count: int = 0) -> ContainerReport:
    if c is None:
        reason = finish.reason if finish is not None and finish.container == name else None
        return ContainerReport(name=name, lastStatus="STOPPED" if stopping else "PENDING", reason=reason)
    status: ContainerStatus = "RUNNING" if c.running else "STOPPED" if c.exited else ("STOPPED" if stopping else "PENDING")
    reason = "OOMKilled" if c.oom_killed else (c.error or None)
    return ContainerReport(
        name=name,
        dockerId=c.id,
        image=c.image or None,
        lastStatus=status,
        exitCode=c.exit_code if c.exited else None,
        reason=reason,
        healthStatus=_HEALTH.get(c.health or "", "UNKNOWN"),
        networkBindings=[NetworkBinding(**vars(p)) for p in c.ports],
        startedAt=c.started_at,
        finishedAt=c.finished_at if c.exited else None,
        restartCount=restart_count,
    )


def task_report(
    task_id: str,
    task: DesiredTask | None,
    containers: Sequence[ActualContainer],
    finish: Finish | None = None,
    pull_error: str | None = None,
    restarts: Mapping[str, int] | None = None,
) -> TaskReport:
    """The TaskReport of one task from its desired entry (None: not desired) and containers;
    ``restarts``: restart-policy restarts per docker id (the agent counts them).

    ``healthStatus`` follows :func:`dockyard.health.task_health` (ECS's rule, the one the
    orchestrator applies too): the essential containers that have a health check decide;
    UNHEALTHY if any of them is, HEALTHY when all are, UNKNOWN otherwise or without any."""
    cs: dict[str, ActualContainer] = {}
    grouped: dict[str, list[ActualContainer]] = defaultdict(list)
    for c in containers:
        grouped[c.container_name].append(c)
    for name, group in grouped.items():
        cs[name] = _pick(group)[0]
    stopping = task is None or finish is not None or task.desiredStatus == "STOPPED"
    if task is not None:
        names = [d.name for d in task.taskDefinition.containerDefinitions]
        essential = {d.name for d in task.taskDefinition.containerDefinitions if d.essential}
        checked: Collection[str] = checked_containers(task.taskDefinition.containerDefinitions)
    else:  # definition unknown: the labels say which are essential, Docker's health which have a check
        names = sorted(cs)
        essential = {n for n, c in cs.items() if c.essential}
        checked = {n for n in essential if cs[n].health is not None}
    names += sorted(n for n in cs if n not in names)
    restarts = restarts or {}
    reports = [container_report(n, cs.get(n), stopping, finish, restarts.get(cs[n].id, 0) if n in cs else 0)
               for n in names]

    any_running = any(c.running for c in cs.values())
    last: TaskStatus
    if stopping:
        last = "STOPPING" if any_running else "STOPPED"
    else:
        # A container about to be restarted in place keeps its task RUNNING (as ECS).
        defs = {d.name: d for d in task.taskDefinition.containerDefinitions} if task is not None else {}
        up = {n for n, c in cs.items() if c.running or (n in defs and restart_due(defs[n], c))}
        ess = [r for r in reports if r.name in essential]
        last = "RUNNING" if ess and all(r.name in up for r in ess) else "PENDING"
    health = cast(HealthStatus, task_health(((r.name, r.healthStatus) for r in reports), checked))
    started = [c.started_at for c in cs.values() if c.started_at]
    finished_at = [c.finished_at for c in cs.values() if c.finished_at and c.exited]
    ips = [c.ip_address for n, c in sorted(cs.items(), key=lambda kv: kv[0] not in essential) if c.ip_address]
    return TaskReport(
        taskId=task_id,
        lastStatus=last,
        healthStatus=health,
        containers=reports,
        stopCode=finish.stop_code if finish is not None else None,
        stoppedReason=finish.reason if finish is not None else None,
        pullError=pull_error,
        startedAt=min(started) if started else None,
        stoppedAt=(max(finished_at) if finished_at else None) if last == "STOPPED" else None,
        ipAddress=ips[0] if ips else None,
    )


# ---- desired documents --------------------------------------------------------------------------
OTHER_NODE, STALE = "other-node", "stale"


def rejects(head: DesiredDocHead, node_id: str, cluster: str, applied: tuple[int, int] | None,
            floor: tuple[int, int] | None = None) -> str | None:
    """Why a desired document is not applied (``OTHER_NODE``, ``STALE``), or None: a document
    applies only to its own node and only if its (epoch, generation) is newer than the one
    last applied, so duplicates, replays and a stale orchestrator are harmless. ``floor``: the
    version an earlier run of the agent applied last (its high-water on disk): an older one is
    stale too (a retained document a fenced ex-leader left), the same one applies again."""
    if head.nodeId != node_id or head.cluster != cluster:
        return OTHER_NODE
    if applied is not None and head.version() <= applied:
        return STALE
    if floor is not None and head.version() < floor:
        return STALE
    return None


def changed_task_ids(previous: DesiredDoc | None, doc: DesiredDoc) -> set[str]:
    """Tasks new in ``doc``, changed (desiredStatus) or gone since ``previous``. Entries that
    :func:`agent.session.parse_desired` carried over unchanged are the same objects."""
    old = {t.taskId: t for t in previous.tasks} if previous is not None else {}
    ids = {t.taskId for t in doc.tasks if old.get(t.taskId) is not t}
    return ids | (old.keys() - {t.taskId for t in doc.tasks})
