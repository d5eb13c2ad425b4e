"""The reconcile loop: the imperative shell around the pure core.

Level-triggered: every pass recomputes from the full state; MQTT messages and API calls only
wake it. A pass (1) notices lost nodes, (2) starts deployments for followed families,
(3) plans each service and applies the plan, (4) places pending tasks, (5) forgets old
stopped tasks, (6) publishes the desired document of every node whose task set changed,
and (7) writes all changed records in one transaction.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from cryptography.fernet import Fernet

from dockyard import __version__, sealing
from dockyard import log as dlog
from dockyard.ecs import apply_overrides
from dockyard.health import is_healthy, task_health, with_targets
from dockyard.wire import (
    PROTOCOL_VERSION,
    SERVICE_SCHEDULER_INITIATED,
    TASK_FAILED_TO_START,
    DesiredDoc,
    DesiredTask,
    Presence,
    Refusal,
    StatusDoc,
    TaskReport,
)
from orchestrator import metrics
from orchestrator.core import compat, fencing, scheduler
from orchestrator.core import nodes as nodes_core
from orchestrator.core import secrets as secrets_core
from orchestrator.core import services as svc_core
from orchestrator.core.scheduler import NodeView, TaskAsk
from orchestrator.core.tasks import (
    Outcome,
    missing_from_snapshot,
    new_task,
    proof_clock,
    sibling_task,
)
from orchestrator.lb_shell import Targets
from orchestrator.models import Cluster, Node, Service, ServiceEvent, Task, new_task_id
from orchestrator.secrets import SecretStore
from orchestrator.state import STOPPED_TASK_RETENTION, State
from orchestrator.task_apply import apply_report, mark_stopped, request_stop, set_fields

EVENTS_KEPT = 100
# Every this many seconds a pass plans every service, not only those marked dirty (the
# level-triggered backstop for anything that changes without marking them).
FULL_PASS_SECONDS = 5.0
# Every this many seconds the full pass also rebuilds the planners' task views from the tasks
# (the backstop for the views kept per service; see _task_views): 10k views cost ~80 ms, so not
# every 5 s.
FRESH_VIEWS_SECONDS = 60.0
# Coalescing: a pass waits PASS_GAP_MIN after its wake-up, and after a long pass FACTOR times
# as long as that pass blocked the loop (so passes hold it at most 1/(1+FACTOR) of the time and
# each plans a larger batch of changes; see run()).
PASS_GAP_MIN = 0.02
PASS_GAP_FACTOR = 1.5
Publish = Callable[[DesiredDoc], Awaitable[None]]
_UNKNOWN = secrets_core.Refs()  # a task definition whose secret references are not cached yet


def add_event(service: Service, message: str, now: float) -> None:
    """Newest first, bounded; a repeat of the newest message is collapsed into a count."""
    if service.events and service.events[0].message == message:
        service.events[0].count += 1
        service.events[0].createdAt = now
        return
    service.events.insert(0, ServiceEvent(message=message, createdAt=now))
    del service.events[EVENTS_KEPT:]


def _published_status(t: Task) -> str:
    """The desiredStatus the task's node gets: a draining target keeps running until released."""
    return "RUNNING" if t.lastStatus == "DEACTIVATING" else t.desiredStatus


def task_ask(t: Task, td_spec) -> TaskAsk:
    ports: list[tuple[int, str]] = []
    if t.launchType == "EC2" and td_spec.networkMode != "awsvpc":
        for c in td_spec.containerDefinitions:
            for pm in c.portMappings:
                hp = pm.containerPort if td_spec.networkMode == "host" else pm.hostPort
                if hp:
                    ports.append((hp, pm.protocol))
    strategy = tuple((s.type, s.field) for s in t.placementStrategy) or scheduler.DEFAULT_STRATEGY
    return TaskAsk(
        task_id=t.taskId,
        group=t.group,
        cpu=t.cpu,
        memory=t.memory,
        ports=tuple(sorted(ports)),
        launch_type=t.launchType,
        distinct_instance=any(c.type == "distinctInstance" for c in t.placementConstraints),
        member_of=tuple(c.expression for c in t.placementConstraints if c.type == "memberOf" and c.expression),
        strategy=strategy,
    )


class Controller:
    def __init__(self, state: State, epoch: int, publish: Publish, node_lost_seconds: float = 3.0,
                 mass_loss_fraction: float = 0.55, mass_loss_interval: float = 30.0,
                 clock: Callable[[], float] = time.time, secrets: SecretStore | None = None,
                 epoch_window: int = fencing.EPOCH_WINDOW) -> None:
        self.clock = clock  # the one clock the controller (and Ops) decide on time with
        self.state = state
        # Without a key file (unit tests): a key of this process only.
        self.secrets = secrets if secrets is not None else SecretStore(state.store, Fernet.generate_key(), verify=False)
        self._secret_refs: dict[str, secrets_core.Refs | None] = {}  # per family:revision (see _refs)
        self._sealed: dict[str, tuple[str, sealing.Sealed]] = {}  # task id -> (node seal key, blob)
        self.epoch = epoch
        self.epoch_window = epoch_window
        self._reasserted: dict[tuple[str, str], float] = {}  # node -> when we last re-asserted over it
        self._refused: dict[tuple[str, str], tuple[int, int]] = {}  # node -> version refused (alert once)
        self._fence_later: dict[tuple[str, str], tuple[tuple[int, int], bool, str]] = {}  # judged again in a pass
        self.publish = publish
        self.node_lost_seconds = node_lost_seconds
        self.mass_loss = nodes_core.MassLossPolicy(fraction=mass_loss_fraction, interval=mass_loss_interval)
        self.started_at = clock()
        # The orchestrator's broker session, as the bus reports it (on_broker_connected/-disconnected).
        # Without a bus (tests) it counts as connected since started_at.
        self.broker_connected = True
        self.broker_since: float | None = None
        self.broker_heard_at: float | None = None  # the bus's last probe echo (None: no bus)
        self._beating: dict[tuple[str, str], str] = {}  # nodes whose light heartbeat was heard: the boot
        self._mass_release: dict[str, float] = {}  # cluster -> when a node's tasks were last declared lost
        self._mass_holds: dict[str, tuple] = {}  # cluster -> signature of the mass-loss hold last reported
        self.log = dlog.get("controller", epoch=epoch)
        self._wake = asyncio.Event()
        self._next_wake: float | None = None
        self._published: dict[tuple[str, str], tuple] = {}
        self._service_wake: dict[tuple[str, str], float] = {}  # time-driven replans (backoff, grace)
        self._last_full_pass = float("-inf")
        self._last_fresh_views = float("-inf")
        self._last_pass_seconds = 0.0
        # The last report applied per task: most reports repeat (snapshots every 2 s from every
        # node) and apply_report is idempotent, so an identical one is skipped.
        self._applied: dict[str, TaskReport] = {}
        self._svc_views: dict[tuple[str, str], tuple[int, dict]] = {}  # see _task_views
        self._schedule_sig: tuple | None = None  # (capacity version, unplaced ids) after the last attempt
        self._schedule_retry_at = 0.0
        self._checked_by_ref: dict[str, frozenset[str]] = {}
        self.targets = Targets(state, clock)  # load-balancer targets: reports, drains, LB documents
        self.passes = 0

    # ---- waking --------------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            timeout = 1.0
            if self._next_wake is not None:
                timeout = max(0.0, min(timeout, self._next_wake - self.clock()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            # Coalesce a burst of messages into one pass. After a long pass, give the bus and the
            # API at least as long before the next one: a pass runs without yielding, so passes
            # back to back would starve the inbound messages (status reports, heartbeats) and
            # their backlog would grow until nodes time out.
            await asyncio.sleep(max(PASS_GAP_MIN, PASS_GAP_FACTOR * self._last_pass_seconds))
            try:
                await self.run_pass()
            except Exception:  # never let one bad pass kill the control plane
                self.log.exception("reconcile pass failed")
                await asyncio.sleep(0.5)

    async def run_pass(self) -> None:
        t0 = time.perf_counter()
        docs = self.reconcile(self.clock())
        busy = time.perf_counter() - t0
        # All documents at once: each publish waits for the broker's PUBACK (QoS 1); one after
        # the other they would wait for a round trip each.
        if docs:
            await asyncio.gather(*(self.publish(doc) for doc in docs))
        t1 = time.perf_counter()
        self.state.flush(defer_details=True)
        self.passes += 1
        # The coalescing gap after this pass is the time it blocked the loop, not its waits.
        self._last_pass_seconds = busy + time.perf_counter() - t1
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - t0)

    # ---- the pass ------------------------------------------------------------------------
    def reconcile(self, now: float) -> list[DesiredDoc]:
        self._next_wake = None
        self.fence_again()
        self.check_nodes(now)
        self.follow_families(now)
        self.reconcile_services(now)
        self.release_drains(now)
        self.schedule(now)
        self.collect_garbage(now)
        return self.desired_documents(now)

    def check_nodes(self, now: float) -> None:
        """Node liveness (orchestrator.core.nodes): time out silent nodes, stop the tasks of lost
        ones, within the broker-outage and mass-loss rules; report mass-loss holds as events."""
        views = [nodes_core.NodeLiveness(
            cluster=n.cluster, node_id=n.nodeId, connected=n.connected, last_seen_at=n.lastSeenAt,
            disconnected_at=n.disconnectedAt, status_interval=n.statusInterval,
            active_tasks=self.state.node_active_count(n.cluster, n.nodeId),
            heartbeat_interval=n.heartbeatInterval if self._beating.get((n.cluster, n.nodeId)) == n.bootId else None,
        ) for n in self.state.nodes.values()]
        broker = nodes_core.BrokerView(self.broker_connected,
                                       self.broker_since if self.broker_since is not None else self.started_at,
                                       self.broker_heard_at)
        plan = nodes_core.plan_nodes(views, now, broker, self.node_lost_seconds, self.mass_loss, self._mass_release)
        self._mass_release = dict(plan.last_release)
        for to in plan.timed_out:
            n = self.state.nodes[(to.cluster, to.node_id)]
            self.log.warning("node heartbeat timeout", node=n.nodeId, cluster=n.cluster)
            n.connected = False
            n.disconnectedAt = to.disconnected_at
            self.state.put_node(n)
        for lost_node in plan.lost:
            n = self.state.nodes[(lost_node.cluster, lost_node.node_id)]
            lost = self.state.node_active_tasks(n.cluster, n.nodeId)
            for t in lost:
                reason = f"Node {n.nodeId} lost: disconnected for more than {self.node_lost_seconds:g}s"
                mark_stopped(t, SERVICE_SCHEDULER_INITIATED if t.serviceName else TASK_FAILED_TO_START, reason, now)
                self.state.put_task(t)
                metrics.TASKS_STOPPED.labels(reason="node_lost").inc()
            if lost:
                self.log.warning("node lost; its tasks are stopped", node=n.nodeId, cluster=n.cluster, tasks=len(lost))
        self._report_mass_loss(plan.holds, now)
        if plan.wake_at is not None:
            self._wake_at(plan.wake_at)

    def release_drains(self, now: float) -> None:
        """DEACTIVATING targets whose drain is over (core.targets.drain_released) go STOPPING: their
        node gets desiredStatus STOPPED, so SIGTERM comes only after the load balancers let go."""
        if not self.state.load_balancers and not self.state.target_groups:
            return
        released, wake = self.targets.released(now)
        for t in released:
            t.lastStatus = "STOPPING"
            metrics.transition("STOPPING", None)
            self.state.put_task(t)
            self.log.info("target drained; stopping task", task=t.short_id, cluster=t.cluster,
                          seconds=round(now - (t.drainingSince or now), 3))
        if wake is not None:
            self._wake_at(wake)

    def _report_mass_loss(self, holds: tuple[nodes_core.Hold, ...], now: float) -> None:
        """Log a mass-loss hold and add it to the events of every ACTIVE service with tasks on the
        held nodes, once per change of the hold (not every pass); log when it ends."""
        current = {h.cluster: h for h in holds}
        for cluster in [c for c in self._mass_holds if c not in current]:
            del self._mass_holds[cluster]
            self.log.info("mass node loss: no node held back any more", cluster=cluster)
        for h in holds:
            if self._mass_holds.get(h.cluster) == h.signature:
                continue
            self._mass_holds[h.cluster] = h.signature
            self.log.warning("mass node loss: node-lost replacements held back", cluster=h.cluster, mode=h.mode,
                             down=h.down, nodes=h.total, held=list(h.held), next_release_at=h.next_release_at,
                             detail=h.message)
            names = {t.serviceName for node_id in h.held for t in self.state.node_active_tasks(h.cluster, node_id)
                     if t.serviceName}
            for name in sorted(names):
                s = self.state.services.get((h.cluster, name))
                if s is not None and s.status == "ACTIVE":
                    add_event(s, f"(service {name}) {h.message}.", now)
                    self.state.put_service(s)

    # ---- the broker session (reported by the bus) -----------------------------------------------
    def on_broker_connected(self, now: float) -> None:
        """A broker session began (subscriptions in place): node liveness is judged again, and
        every node gets its reconnect window from ``now`` to show itself (core.nodes)."""
        self.broker_connected = True
        self.broker_since = self.broker_heard_at = now
        if self.targets.session_since is None:  # the first session: LB reports may take its window to come
            self.targets.session_since = now
        self.log.info("broker session started; nodes not seen since get their reconnect window",
                      window_min=nodes_core.RECONNECT_WINDOW_MIN)
        self.wake()

    def on_broker_heard(self, now: float) -> None:
        """The session delivered the bus's own probe: it works (a silent node may be timed out)."""
        self.broker_heard_at = now

    def on_broker_disconnected(self, now: float) -> None:
        """No broker session (before the first connect, or it was lost): no node is timed out or
        declared lost until one starts again, since the orchestrator sees nothing meanwhile."""
        if self.broker_connected and self.broker_since is not None:
            self.log.warning("broker session lost; node liveness is not judged until it is back")
        self.broker_connected = False

    def follow_families(self, now: float) -> None:
        """Start the deployments core.services.follow_family asks for (new services, new revisions
        of a followed family)."""
        for s in self.state.services.values():
            td = self.state.resolve_taskdef(s.spec.taskDefinition)
            ref = svc_core.follow_family(s, td.ref if td else None)
            if ref is not None:
                self.start_deployment(s, ref, now)

    def start_deployment(self, s: Service, ref: str, now: float, rollback: bool = False) -> None:
        s.deployments = svc_core.new_deployment(s.deployments, ref, s.spec.desiredCount, now, rollback=rollback)
        add_event(s, f"(service {s.serviceName}) started deployment {s.deployments[0].id} of task definition {ref}.", now)
        s.steadyState = False
        self.state.put_service(s)

    def reconcile_services(self, now: float) -> None:
        """Plan the services marked dirty (their tasks, the service, or a node of their cluster
        changed) or whose wake-up time came; every FULL_PASS_SECONDS, all of them (and every
        FRESH_VIEWS_SECONDS from views rebuilt in full)."""
        full = now - self._last_full_pass >= FULL_PASS_SECONDS
        fresh = full and now - self._last_fresh_views >= FRESH_VIEWS_SECONDS
        if full:
            self._last_full_pass = now
            self._wake_at(now + FULL_PASS_SECONDS)
        if fresh:
            self._last_fresh_views = now
        dirty = self.state.take_dirty_services()
        for key, s in list(self.state.services.items()):
            due = self._service_wake.get(key)
            if full or key in dirty or (due is not None and due <= now):
                self._service_wake.pop(key, None)
                self.reconcile_service(s, now, fresh=fresh)
            elif due is not None:
                self._wake_at(due)
        for key in [k for k in self._service_wake if k not in self.state.services]:
            del self._service_wake[key]

    def _service_wake_at(self, s: Service, when: float) -> None:
        key = (s.cluster, s.serviceName)
        if key not in self._service_wake or when < self._service_wake[key]:
            self._service_wake[key] = when
        self._wake_at(when)

    def _task_views(self, s: Service, fresh: bool = False) -> list[svc_core.TaskView]:
        """The planner's view of the service's tasks not yet STOPPED, kept per service and
        updated for the tasks put since the last plan (State.changed_tasks), so a pass does not
        rebuild every view. Rebuilt in full when a node changed as planning sees it, and by a
        periodic full pass (``fresh``, every FRESH_VIEWS_SECONDS)."""
        key = (s.cluster, s.serviceName)
        changed = self.state.take_changed_tasks(key)
        entry = self._svc_views.get(key)
        if fresh or entry is None or entry[0] != self.state.nodes_version:
            views: dict[str, svc_core.TaskView] = {}
            for t in self.state.service_active_tasks(s.cluster, s.serviceName):
                views[t.taskId] = self._view(t)
        else:
            views = entry[1]
            for task_id in changed:
                changed_task = self.state.tasks.get(task_id)
                if changed_task is None or changed_task.lastStatus == "STOPPED" \
                        or (changed_task.cluster, changed_task.serviceName) != key:
                    views.pop(task_id, None)
                else:
                    views[task_id] = self._view(changed_task)
        self._svc_views[key] = (self.state.nodes_version, views)
        return list(views.values())

    def _checked(self, ref: str) -> frozenset[str]:
        """The essential containers of task definition ``ref`` that have a health check (task
        definitions are immutable: cached per ref)."""
        checked = self._checked_by_ref.get(ref)
        if checked is None:
            td = self.state.resolve_taskdef(ref)
            checked = frozenset(c.name for c in td.spec.containerDefinitions
                                if c.essential and c.healthCheck) if td else frozenset()
            if td is not None:
                self._checked_by_ref[ref] = checked
        return checked

    def _health(self, t: Task) -> tuple[str, bool]:
        """(health for deployments, has a health check) by the one rule in dockyard.health."""
        checked = self._checked(t.taskDefinition)
        if not checked:  # most task definitions: no health check, nothing to look at
            own: tuple[str, bool] = ("UNKNOWN", False)
        else:
            own = (task_health([(c.name, c.healthStatus) for c in t.containers], checked), True)
        if t.serviceName and self.state.load_balancers:
            return with_targets(*own, self.targets.health_of(t))
        return own

    def _view(self, t: Task) -> svc_core.TaskView:
        health, has_check = self._health(t)
        node = self.state.nodes.get((t.cluster, t.nodeId)) if t.nodeId else None
        return svc_core.TaskView(
            task_id=t.taskId,
            deployment_id=t.deploymentId,
            task_definition=t.taskDefinition,
            node_id=t.nodeId,
            last_status=t.lastStatus,
            health=health,
            has_health_check=has_check,
            started_at=t.startedAt,
            healthy_since=t.healthySince,
            node_draining=bool(node and node.status == "DRAINING"),
            stopping=t.desiredStatus == "STOPPED",
            node_attributes=node.attributes if node else {},
        )

    def reconcile_service(self, s: Service, now: float, fresh: bool = False) -> None:
        views = self._task_views(s, fresh)
        if s.spec.schedulingStrategy == "DAEMON":
            plan = self._plan_daemon(s, views, now)
        else:
            plan = svc_core.plan_service(s, views, now)
        changed = [d.model_dump() for d in plan.deployments] != [d.model_dump() for d in s.deployments]
        s.deployments = plan.deployments
        for ev in plan.events:
            add_event(s, ev, now)
        primary = svc_core.primary_of(s)
        for task_id in plan.adopt:
            t = self.state.tasks[task_id]
            t.deploymentId = primary.id if primary else t.deploymentId
            self.state.put_task(t)
        for stop in plan.stop:
            t = self.state.tasks[stop.task_id]
            if request_stop(t, stop.stop_code, stop.reason, now, drain=bool(self.targets.groups_of(t))):
                self.state.put_task(t)
                metrics.TASKS_STOPPED.labels(reason="scheduler").inc()
        if plan.start and primary is not None:
            td = self.state.resolve_taskdef(primary.taskDefinition)
            if td is not None:
                first = self.create_task(s.cluster, td, now, service=s, deployment_id=primary.id)
                for _ in range(plan.start - 1):
                    self._add_task(sibling_task(first, new_task_id(), now))
        if plan.start_on and primary is not None:
            td = self.state.resolve_taskdef(primary.taskDefinition)
            for node_id in plan.start_on if td is not None else ():
                self.create_task(s.cluster, td, now, service=s, deployment_id=primary.id, node_id=node_id)
        if plan.wake_at:
            self._service_wake_at(s, plan.wake_at)
        if plan.steady and not s.steadyState:
            add_event(s, f"(service {s.serviceName}) has reached a steady state.", now)
        if plan.steady != s.steadyState:
            s.steadyState = plan.steady
            changed = True
        if plan.failing != s.failingReason:
            if plan.failing and not s.failingReason:
                add_event(s, f"(service {s.serviceName}) is failing: {plan.failing}.", now)
                self.log.warning("service failing", cluster=s.cluster, service=s.serviceName, reason=plan.failing)
            s.failingReason = plan.failing
            changed = True
        if s.observedGeneration != s.generation:
            s.observedGeneration = s.generation
            changed = True
        if changed or plan.events or plan.stop or plan.start:
            self.state.put_service(s)
        if s.status == "DRAINING" and not views:
            s.status = "INACTIVE"
            self.state.delete_service(s)

    def _plan_daemon(self, s: Service, views: list[svc_core.TaskView], now: float) -> svc_core.ServicePlan:
        from orchestrator.core.daemon import plan_daemon

        primary = svc_core.primary_of(s)
        td = self.state.resolve_taskdef(primary.taskDefinition) if primary else None
        nodes = list(self.state.cluster_nodes(s.cluster))
        return plan_daemon(s, views, nodes, td.spec if td else None, now)

    def create_task(self, cluster: str, td, now: float, **kw) -> Task:
        """Create and store a task (core.tasks.new_task's arguments): the one creation path, for
        the service planners and for Ops' RunTask."""
        t = new_task(new_task_id(), cluster, td, now, **kw)
        if t.nodeId:
            t.placedAt = now
        self._add_task(t)
        return t

    def _add_task(self, t: Task) -> None:
        self.state.put_task(t)
        metrics.TASKS_CREATED.inc()
        metrics.transition(t.lastStatus, None)

    def schedule(self, now: float) -> None:
        pending = self.state.unplaced_tasks()
        if not pending:
            return
        sig = (self.state.capacity_version, tuple(t.taskId for t in pending))
        if not scheduler.retry_placement(sig, self._schedule_sig, now, self._schedule_retry_at):
            self._wake_at(self._schedule_retry_at)
            return
        self._schedule(pending, now)
        self._schedule_sig = (self.state.capacity_version, tuple(t.taskId for t in self.state.unplaced_tasks()))
        self._schedule_retry_at = now + scheduler.RETRY_SECONDS

    def _schedule(self, pending: list[Task], now: float) -> None:
        by_cluster: dict[str, list[Task]] = {}
        for t in pending:
            by_cluster.setdefault(t.cluster, []).append(t)
        for cluster, tasks in by_cluster.items():
            views = self.node_views(cluster)
            asks = []
            for t in tasks:
                td = self.state.resolve_taskdef(t.taskDefinition)
                if td is None:
                    mark_stopped(t, TASK_FAILED_TO_START, f"task definition {t.taskDefinition} not found", now)
                    self.state.put_task(t)
                    continue
                asks.append(task_ask(t, td.spec))
            t0 = time.perf_counter()
            result = scheduler.place(asks, list(views.values()))
            metrics.SCHEDULE_SECONDS.observe(time.perf_counter() - t0)
            for task_id, node_id in result.assigned.items():
                t = self.state.tasks[task_id]
                if t.lastStatus != "PENDING":
                    metrics.transition("PENDING", None)
                set_fields(t, {"nodeId": node_id, "lastStatus": "PENDING", "placedAt": now, "pendingReason": None})
                metrics.CREATED_TO_PLACED.observe(max(0.0, now - t.createdAt))
                self.state.put_task(t)
            metrics.PLACEMENTS.inc(len(result.assigned))
            unplaced_by_service: dict[str, str] = {}
            for task_id, reason in result.unplaced.items():
                t = self.state.tasks[task_id]
                if t.pendingReason != reason or t.lastStatus != "PENDING":
                    if t.lastStatus != "PENDING":
                        metrics.transition("PENDING", None)
                    t.pendingReason = reason
                    t.lastStatus = "PENDING"
                    self.state.put_task(t)
                if t.serviceName:
                    unplaced_by_service[t.serviceName] = reason
            for name, reason in unplaced_by_service.items():
                s = self.state.services.get((cluster, name))
                if s is not None:
                    msg = f"(service {name}) was unable to place a task because {reason}"
                    if not s.events or s.events[0].message != msg or now - s.events[0].createdAt > 30:
                        add_event(s, msg, now)
                        self.state.put_service(s)
            if result.unplaced:
                self._wake_at(now + scheduler.RETRY_SECONDS)  # retry placement periodically too (level-triggered)

    def node_views(self, cluster: str) -> dict[str, NodeView]:
        views: dict[str, NodeView] = {}
        for n in self.state.cluster_nodes(cluster):
            if not n.connected or n.status != "ACTIVE":
                continue
            views[n.nodeId] = NodeView(
                node_id=n.nodeId,
                cpu=n.resources.cpu,
                memory=n.resources.memory,
                attributes=n.attributes,
                capacity_providers=frozenset(n.capacityProviders),
            )
        for node_id, v in views.items():
            for t in self.state.node_active_tasks(cluster, node_id):
                td = self.state.resolve_taskdef(t.taskDefinition)
                if td is not None:
                    v.add(task_ask(t, td.spec))
        return views

    def collect_garbage(self, now: float) -> None:
        if self.passes % 100:
            return
        # STOPPED tasks live in the store once flushed: forgetting the old ones is one DELETE.
        self.state.collect_stopped(now - STOPPED_TASK_RETENTION)
        for task_id in [i for i in self._applied if (t := self.state.tasks.get(i)) is None or t.lastStatus == "STOPPED"]:
            del self._applied[task_id]
        for key in [k for k in self._svc_views if k not in self.state.services]:
            del self._svc_views[key]
        for task_id in [i for i in self._sealed if (t := self.state.tasks.get(i)) is None or t.lastStatus == "STOPPED"]:
            del self._sealed[task_id]

    # ---- secrets ---------------------------------------------------------------------------
    def _refs(self, t: Task) -> secrets_core.Refs | None:
        """The secrets task ``t``'s definition names, None for none (cached per family:revision:
        definitions are immutable)."""
        td = self.state.resolve_taskdef(t.taskDefinition)
        if td is None:
            return None
        r = secrets_core.refs(td.spec)
        self._secret_refs[t.taskDefinition] = r or None
        return r or None

    def task_secrets(self, t: Task, r: secrets_core.Refs, node: Node) -> tuple[sealing.Sealed | None, str | None]:
        """Task ``t``'s secrets (``r``) sealed to ``node`` (once per task and node key; the versions
        are fixed at the first publication), or the reason it cannot start (core.secrets)."""
        if not r or t.desiredStatus != "RUNNING":
            return None, None
        cached = self._sealed.get(t.taskId)
        if cached is not None and cached[0] == node.sealKey:
            return cached[1], None
        latest = self.secrets.latest_versions(r.names()) if t.secretVersions is None else {}
        res = secrets_core.resolve(r, latest, t.secretVersions, node.nodeId, node.sealKey is not None)
        if res.failure is not None:
            return None, res.failure
        values = {n: (got[1] if (got := self.secrets.value(n, v)) else None) for n, v in res.versions.items()}
        plaintext, why = secrets_core.payload(r, values)
        if why is not None:
            return None, why
        if not res.versions:  # only repositoryCredentials, none of them a secret: the agent's own
            return None, None
        assert node.sealKey is not None  # resolve() fails a node without one
        try:
            blob = sealing.seal(node.sealKey, t.taskId, plaintext)
        except sealing.SealError as e:
            return None, f"ResourceInitializationError: unable to deliver secrets to node {node.nodeId}: {e}"
        if t.secretVersions != res.versions:
            t.secretVersions = res.versions
            self.state.put_task(t)
        self._sealed[t.taskId] = (node.sealKey, blob)
        return blob, None

    def desired_documents(self, now: float | None = None) -> list[DesiredDoc]:
        docs = []
        for key in sorted(self.state.take_dirty_nodes()):
            cluster, node_id = key
            node = self.state.nodes.get(key)
            if node is None:
                continue
            tasks = sorted(
                self.state.node_active_tasks(cluster, node_id),
                key=lambda t: (t.createdAt, t.taskId),
            )
            lb_doc = self.targets.document(node) if node.loadBalancer else None
            content = (tuple((t.taskId, _published_status(t)) for t in tasks),
                       lb_doc.model_dump_json() if lb_doc is not None else None)
            if self._published.get(key) == content:
                continue
            desired_tasks = []
            for t in tasks:
                td = self.state.resolve_taskdef(t.taskDefinition)
                if td is None:
                    continue
                refs = self._secret_refs.get(t.taskDefinition, _UNKNOWN)
                blob = None
                if refs is not None and (refs is not _UNKNOWN or (refs := self._refs(t)) is not None):
                    blob, why = self.task_secrets(t, refs, node)
                    if why is not None and t.placedGeneration is None:  # fails to start: never published
                        when = self.clock() if now is None else now
                        mark_stopped(t, TASK_FAILED_TO_START, why, when)
                        self.state.put_task(t)
                        self._on_task_stopped(t, True, when)
                        continue
                    if why is not None:
                        # Published before (e.g. sealed again after a restart, and its version is gone
                        # since): it may run already; the agent fails it if it still needs them.
                        self.log.warning("task secrets unavailable; published without them", task=t.short_id,
                                         cluster=t.cluster, node=node_id, reason=why)
                # model_construct: every field comes from validated records (validating would re-run
                # TaskDefinitionSpec's model validators for every task of every document).
                desired_tasks.append(
                    DesiredTask.model_construct(
                        taskId=t.taskId,
                        family=t.family,
                        revision=t.revision,
                        desiredStatus=_published_status(t),
                        launchType=t.launchType,
                        serviceName=t.serviceName,
                        taskDefinition=apply_overrides(td.spec, t.overrides) if t.overrides else td.spec,
                        secrets=blob,
                    )
                )
            node.generation += 1
            for t in tasks:
                if t.placedGeneration is None:
                    t.placedGeneration = node.generation
                    self.state.put_task_record(t)
            self.state.put_node(node)
            self._published[key] = content
            # publishedAt given: model_construct would call its default factory through a
            # signature inspection per document.
            docs.append(DesiredDoc.model_construct(cluster=cluster, nodeId=node_id, epoch=self.epoch,
                                                   generation=node.generation, tasks=desired_tasks,
                                                   loadBalancer=lb_doc, publishedAt=time.time()))
        return docs

    def _wake_at(self, when: float) -> None:
        if self._next_wake is None or when < self._next_wake:
            self._next_wake = when

    # ---- bus input -----------------------------------------------------------------------
    def ensure_cluster(self, name: str) -> None:
        if name not in self.state.clusters:
            self.state.put_cluster(Cluster(clusterName=name))

    def node_refused(self, cluster: str, node_id: str) -> bool:
        n = self.state.nodes.get((cluster, node_id))
        return n is not None and n.refusedReason is not None

    def on_presence(self, cluster: str, node_id: str, p: Presence) -> Refusal | None:
        """Record a node's presence; a Refusal (for the agent) when its protocol is incompatible."""
        now = self.clock()
        self.ensure_cluster(cluster)
        n = self.state.nodes.get((cluster, node_id))
        if p.state == "offline":
            if n is not None and n.bootId == p.bootId and n.connected:
                n.connected = False
                n.disconnectedAt = now
                self.state.put_node(n)
                self.log.info("node offline", node=node_id, cluster=cluster)
                self.wake()
            return None
        if n is None:
            n = Node(cluster=cluster, nodeId=node_id)
            self.log.info("node registered", node=node_id, cluster=cluster)
        reason = compat.refusal(PROTOCOL_VERSION, p.protocolVersion)
        if reason is not None:
            return self._refuse(n, p, reason, now)
        if n.refusedReason is not None:
            self.log.info("node accepted", node=node_id, cluster=cluster, agentVersion=p.agentVersion,
                          protocolVersion=p.protocolVersion)
            n.refusedReason = None
        n.protocolVersion = p.protocolVersion
        rejoined = not n.connected or n.bootId != p.bootId
        n.connected = True
        n.bootId = p.bootId
        n.disconnectedAt = None
        n.lastSeenAt = now
        if p.resources is not None:
            n.resources = p.resources
        n.attributes = {**p.attributes, **n.customAttributes}  # PutAttributes' survive the agent's presence
        n.capacityProviders = list(p.capacityProviders)
        n.runtime = p.runtime
        n.agentVersion = p.agentVersion
        n.statusInterval = p.statusInterval
        n.heartbeatInterval = p.heartbeatInterval
        n.metricsEndpoint = p.metricsEndpoint
        if (n.address, n.loadBalancer) != (p.address, p.loadBalancer):
            n.address, n.loadBalancer = p.address, p.loadBalancer
            self.state.touch_load_balancers(cluster)
        n.sealKey = p.sealKey
        self.state.put_node(n)
        if n.loadBalancer:
            self.state.mark_node_dirty((cluster, node_id))
        if rejoined:
            # Republish so a returning agent sees the current document even if the retained one was lost.
            self._published.pop((cluster, node_id), None)
            self.state.mark_node_dirty((cluster, node_id))
        self.wake()
        return None

    def _refuse(self, n: Node, p: Presence, reason: str, now: float) -> Refusal:
        """Record the refusal on the node (it counts as disconnected: nothing is placed there and
        its tasks are lost as on any disconnect) and say why to the agent."""
        if n.refusedReason != reason or n.bootId != p.bootId:
            self.log.warning("agent refused", node=n.nodeId, cluster=n.cluster, reason=reason,
                             agentVersion=p.agentVersion, agentProtocol=p.protocolVersion,
                             orchestratorProtocol=PROTOCOL_VERSION)
        if n.connected:
            n.connected = False
            n.disconnectedAt = now
        n.refusedReason, n.bootId = reason, p.bootId
        n.agentVersion, n.protocolVersion = p.agentVersion, p.protocolVersion
        n.lastSeenAt = now
        self.state.put_node(n)
        self.wake()
        return Refusal(nodeId=n.nodeId, bootId=p.bootId, reason=reason, agentProtocol=p.protocolVersion,
                       orchestratorProtocol=PROTOCOL_VERSION, orchestratorVersion=__version__)

    def on_heartbeat(self, cluster: str, node_id: str, boot_id: str) -> None:
        """A light heartbeat (a few bytes, every heartbeatInterval): it only proves a connected
        node of this boot alive; from the first one, the node's silence is judged by its beats
        (core.nodes). Not stored: lastSeenAt is written with the node's next change."""
        n = self.state.nodes.get((cluster, node_id))
        if n is None or not n.connected or n.bootId != boot_id or not n.heartbeatInterval:
            return
        n.lastSeenAt = self.clock()
        self._beating[(cluster, node_id)] = boot_id

    def on_status_repeat(self, cluster: str, node_id: str) -> bool:
        """A snapshot identical to the last one handled for this connected node (seq and ts aside):
        it only proves the node alive. False: handle it in full (the node is unknown or offline)."""
        n = self.state.nodes.get((cluster, node_id))
        if n is None or not n.connected or (n.observedEpoch, n.observedGeneration) > (self.epoch, n.generation):
            return False  # (a version we did not publish: judged again in on_status)
        n.lastSeenAt = self.clock()
        return True

    def on_status(self, cluster: str, node_id: str, st: StatusDoc) -> None:
        now = self.clock()
        n = self.state.nodes.get((cluster, node_id))
        if n is None or n.refusedReason is not None:
            return  # presence comes first (the agent sends a snapshot again soon); a refused node is not managed
        n.lastSeenAt = now
        if not n.connected and n.bootId == st.bootId:
            n.connected = True
            n.disconnectedAt = None
            self.state.put_node(n)
        if (st.observedEpoch, st.observedGeneration) != (n.observedEpoch, n.observedGeneration):
            n.observedEpoch, n.observedGeneration = st.observedEpoch, st.observedGeneration
            self.state.put_node(n)
        if (st.observedEpoch, st.observedGeneration) > (self.epoch, n.generation):  # not ours (core.fencing)
            self.fence(n, (st.observedEpoch, st.observedGeneration), foreign=False, what="status")
        woke = False
        if st.loadBalancer is not None and n.loadBalancer:
            woke = self._on_lb_status(cluster, node_id, st, now)
        reported = set()
        tasks, applied = self.state.tasks, self._applied
        for r in st.tasks:
            task_id = r.taskId
            reported.add(task_id)
            t = tasks.get(task_id)
            if t is None or t.cluster != cluster or t.nodeId != node_id:
                continue
            prev = applied.get(task_id)
            # The fields compared directly: pydantic's __eq__ adds type, private and extra checks (2/3 more).
            if prev is not None and prev.__dict__ == r.__dict__:
                continue
            out = apply_report(t, r, now)
            if t.lastStatus == "STOPPED":
                applied.pop(task_id, None)
            else:
                applied[task_id] = r
            since = proof_clock(t.healthySince, is_healthy(t.lastStatus, *self._health(t)), now)
            if since != t.healthySince:
                t.healthySince = since
                out = Outcome(True, out.stopped_now, out.failure)
            if not out.changed:
                continue
            self.state.put_task(t, details_only=out.details_only)
            woke = True
            if out.stopped_now:
                self._on_task_stopped(t, out.failure, now)
        if st.kind == "snapshot" and st.observedEpoch == self.epoch:
            for t in missing_from_snapshot(self.state.node_active_tasks(cluster, node_id), reported,
                                           st.observedGeneration):
                unexpected = t.desiredStatus == "RUNNING"  # before mark_stopped changes it
                mark_stopped(t, TASK_FAILED_TO_START, f"Task not found on node {node_id}", now)
                self.state.put_task(t)
                self._on_task_stopped(t, unexpected, now)
                woke = True
        if woke:
            self.wake()

    # ---- fencing (core.fencing) ---------------------------------------------------------------
    def on_desired_seen(self, cluster: str, node_id: str, version: tuple[int, int], foreign: bool) -> None:
        """A desired document on a node's topic that this process did not publish in this session (the bus
        subscribes without its own messages): a retained one found on subscribing, or, ``foreign``, one another
        client published just now."""
        n = self.state.nodes.get((cluster, node_id))
        if n is None:
            if foreign:
                self.log.error("fencing: a desired document for an unknown node was published by another client",
                               node=node_id, cluster=cluster, epoch=version[0], generation=version[1])
                metrics.FENCING_ALERTS.labels(kind="foreign_desired").inc()
            return
        self.fence(n, version, foreign=foreign, what="desired")

    def fence_again(self) -> None:
        """Judge again the versions whose re-assertion waited for the node's cooldown."""
        for key, (seen, foreign, what) in list(self._fence_later.items()):
            n = self.state.nodes.get(key)
            if n is None:
                del self._fence_later[key]
            else:
                self.fence(n, seen, foreign, what)

    def fence(self, n: Node, seen: tuple[int, int], foreign: bool, what: str) -> None:
        """Apply core.fencing's verdict on a version ``seen`` for node ``n`` (from its status or its topic)."""
        key = (n.cluster, n.nodeId)
        now = self.clock()
        v = fencing.judge(seen, fencing.newest_ours(self.epoch, n.generation), foreign, now,
                          self._reasserted.get(key), self.epoch_window,
                          has_tasks=self.state.node_active_count(n.cluster, n.nodeId) > 0)
        if v.action == "later":
            self._fence_later[key] = (seen, foreign, what)
            self._wake_at(v.at)
            return
        self._fence_later.pop(key, None)
        if v.action == "ok":
            return
        log = self.log.bind(node=n.nodeId, cluster=n.cluster, seen_epoch=seen[0], seen_generation=seen[1], via=what)
        if v.action == "refuse":
            if self._refused.get(key) != seen:
                self._refused[key] = seen
                log.error("fencing: node fenced out by a newer epoch; not taking it back", reason=v.reason)
                metrics.FENCING_ALERTS.labels(kind="refused").inc()
            return
        if v.action == "reassert":
            store = self.state.store
            self.epoch = store.raise_epoch(v.epoch) if store is not None else max(self.epoch, v.epoch)
            self._reasserted[key] = now
            self._refused.pop(key, None)
            self.log = dlog.get("controller", epoch=self.epoch)
            log.error("fencing: re-asserting over a desired version this orchestrator did not publish",
                      reason=v.reason, epoch=self.epoch)
            metrics.FENCING_ALERTS.labels(kind="reassert").inc()
        else:
            log.warning("fencing: republishing over a desired document another client published", reason=v.reason)
            metrics.FENCING_ALERTS.labels(kind="foreign_desired").inc()
        self._published.pop(key, None)
        self.state.mark_node_dirty(key)
        self.wake()

    def _on_lb_status(self, cluster: str, node_id: str, st: StatusDoc, now: float) -> bool:
        """An LB node's target health and sessions: a task whose target state changed may now be
        proven (or no longer), or drained; its service is planned again."""
        assert st.loadBalancer is not None
        changed = self.targets.on_status(cluster, node_id, st.loadBalancer)
        for task_id in changed:
            t = self.state.tasks.get(task_id)
            if t is None or t.cluster != cluster:
                continue
            t.healthySince = proof_clock(t.healthySince, is_healthy(t.lastStatus, *self._health(t)), now)
            self.state.put_task(t)
        return bool(changed)

    def _on_task_stopped(self, t: Task, failure: bool, now: float) -> None:
        metrics.TASKS_STOPPED.labels(reason=(t.stopCode or "unknown")).inc()
        log = self.log.bind(cluster=t.cluster, task=t.short_id, service=t.serviceName, node=t.nodeId)
        log.info("task stopped", stopCode=t.stopCode, reason=t.stoppedReason)
        if not (failure and t.serviceName):
            return
        s = self.state.services.get((t.cluster, t.serviceName))
        if s is None:
            return
        for d in s.deployments:
            if d.id == t.deploymentId and d.status == "PRIMARY":
                svc_core.record_failure(d, now)
                self._wake_at(d.nextLaunchAt)
        exit_codes = ", ".join(f"{c.name} exit {c.exitCode}" for c in t.containers if c.exitCode is not None)
        add_event(s, f"(service {s.serviceName}) task {t.short_id} stopped: {t.stoppedReason}"
                     + (f" ({exit_codes})" if exit_codes else "") + ".", now)
        self.state.put_service(s)
