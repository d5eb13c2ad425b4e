"""The orchestrator's in-memory state: the live records, indexed, with write-back to the store.

All mutation goes through :class:`State` so indexes (tasks by service, by node) and the set
of dirty records stay right; :meth:`State.flush` writes the dirty records in one transaction.

Memory holds every record except STOPPED tasks: a task that reaches STOPPED leaves
``State.tasks`` and every index once :meth:`flush` has written it, and lives on in the store
only (kept listable for STOPPED_TASK_RETENTION; bench/scale.py: ~13 KB each in memory, so a
cluster churning 10k tasks an hour needed gigabytes). The reads that include stopped tasks
(:meth:`task`, :meth:`task_ids`, :meth:`iter_tasks`, :meth:`service_tasks`,
:meth:`node_tasks`, :meth:`started_by_exists`) merge memory with the store's STOPPED rows; the
reconcile loop's reads (``tasks.get``, the active indexes, ``unplaced_tasks``) never see a
flushed STOPPED task, so a late report for one finds nothing and changes nothing.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from orchestrator.autoscaling_models import ScalableTarget
from orchestrator.metrics import STORE_TRANSACTION_SECONDS as STORE_SECONDS
from orchestrator.models import Cluster, LoadBalancer, Node, Service, TargetGroup, Task, TaskDefinition
from orchestrator.store import Store, record_key

STOPPED_TASK_RETENTION = 24 * 3600  # ECS keeps stopped tasks 1 hour; users ask for more.


def _node_signature(n: Node) -> tuple:
    """What service planning reads from a node (not lastSeenAt, generation, observed...)."""
    return (n.connected, n.status, tuple(sorted(n.attributes.items())), tuple(n.capacityProviders),
            n.resources.cpu if n.resources else None, n.resources.memory if n.resources else None)


def _order(t: Task) -> tuple[float, str]:
    return (t.createdAt, t.taskId)


class State:
    def __init__(self, store: Store | None = None) -> None:
        # Without a store (unit tests): a private in-memory SQLite one, so STOPPED tasks leave
        # memory the same way.
        self.store = store if store is not None else Store(":memory:")
        self.clusters: dict[str, Cluster] = {}
        self.taskdefs: dict[str, dict[int, TaskDefinition]] = {}
        self.services: dict[tuple[str, str], Service] = {}
        # Called with (cluster, name) on every put_service: the change feed a streaming reader waits on
        # (orchestrator.events_api). In the event loop's thread, as every write; a watcher must not block.
        self.service_watchers: set[Callable[[tuple[str, str]], None]] = set()
        self.tasks: dict[str, Task] = {}
        self.nodes: dict[tuple[str, str], Node] = {}
        self.target_groups: dict[tuple[str, str], TargetGroup] = {}
        self.load_balancers: dict[tuple[str, str], LoadBalancer] = {}
        self.scalable_targets: dict[tuple[str, str], ScalableTarget] = {}  # by (cluster, service)
        self.tasks_by_service: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.tasks_by_node: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._indexed_node: dict[str, str | None] = {}
        # The not-STOPPED tasks of each node: what placement, desired documents and status
        # reports read. tasks_by_node also holds the STOPPED ones not yet flushed.
        self.active_by_node: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._active_node: dict[str, str] = {}
        self.active_by_service: dict[tuple[str, str], set[str]] = defaultdict(set)  # likewise, for views
        # Per service, [RUNNING, other] counts of its tasks that count toward it (Task.active:
        # desired RUNNING, not STOPPED), kept by put_task: the service view's runningCount and
        # pendingCount without a scan of its tasks per API call. _counted: task id -> its slot.
        self._svc_counts: dict[tuple[str, str], list[int]] = {}
        self._counted: dict[str, tuple[tuple[str, str], int]] = {}
        self._dirty: dict[tuple[str, str], tuple[str, object]] = {}
        # The tasks in memory written at least once; those put with a change beyond their
        # containers' details since (put_task's details_only); and those whose only change since
        # was in those details (written later, see flush).
        self._written: set[str] = set()
        self._durable_dirty: set[str] = set()
        self._deferred: dict[str, Task] = {}
        self._deleted: set[tuple[str, str]] = set()
        # Nodes whose desired document may have changed since it was last published.
        self.dirty_nodes: set[tuple[str, str]] = set()
        # Services whose plan may have changed since the controller last planned them: one of
        # their tasks changed, the service did, or a node of their cluster changed in a way
        # planning sees (see _node_signature). The controller plans only these (plus a periodic
        # full pass), so a status report costs O(its service), not O(all tasks).
        self.dirty_services: set[tuple[str, str]] = set()
        self._node_sig: dict[tuple[str, str], tuple] = {}
        # Tasks put since the controller last took them, per service, and a count of node changes
        # planning sees: the controller updates its planner views of only those tasks.
        self.changed_tasks: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.nodes_version = 0
        # Tasks not yet placed and not STOPPED (the scheduler's input), kept by put_task; a dict
        # for its insertion order (the order of self.tasks).
        self.unplaced: dict[str, None] = {}
        # Task ids DEACTIVATING (draining from load balancers), so releasing drains visits only them.
        self.deactivating: dict[str, None] = {}
        # Bumped when capacity may have appeared (a node changed as planning sees it, a placed
        # task stopped): the controller retries tasks that fit nowhere only then, or periodically.
        self.capacity_version = 0
        self._stopped_placed: set[str] = set()
        if store is not None:
            self._load(store)
        self.tasks_evicted = 0  # STOPPED tasks dropped from memory after their flush (a counter)

    def _load(self, store: Store) -> None:
        for c in store.load("cluster"):
            self.clusters[c.clusterName] = c
        for td in store.load("taskdef"):
            self.taskdefs.setdefault(td.family, {})[td.revision] = td
        for s in store.load("service"):
            self.services[(s.cluster, s.serviceName)] = s
        for n in store.load("node"):
            n.connected = False
            self.nodes[(n.cluster, n.nodeId)] = n
        for tg in store.load("targetgroup"):
            self.target_groups[(tg.cluster, tg.name)] = tg
        for lb in store.load("loadbalancer"):
            self.load_balancers[(lb.cluster, lb.name)] = lb
        for st in store.load("scalabletarget"):
            self.scalable_targets[(st.cluster, st.serviceName)] = st
        for t in store.load_live_tasks():  # not the STOPPED ones: they stay in the store
            self._index(t)
            self._written.add(t.taskId)
        self.dirty_nodes = set(self.nodes)
        self.dirty_services = set(self.services)

    # ---- writes ------------------------------------------------------------------------------
    def _mark(self, kind: str, key: str, obj: object) -> None:
        self._dirty[(kind, key)] = (kind, obj)
        self._deleted.discard((kind, key))

    def put_cluster(self, c: Cluster) -> None:
        self.clusters[c.clusterName] = c
        self._mark("cluster", record_key("cluster", c), c)

    def put_taskdef(self, td: TaskDefinition) -> None:
        self.taskdefs.setdefault(td.family, {})[td.revision] = td
        self._mark("taskdef", record_key("taskdef", td), td)

    def put_service(self, s: Service) -> None:
        key = (s.cluster, s.serviceName)
        self.services[key] = s
        self.dirty_services.add(key)
        self._mark("service", record_key("service", s), s)
        for w in tuple(self.service_watchers):
            w(key)

    def put_node(self, n: Node) -> None:
        key = (n.cluster, n.nodeId)
        self.nodes[key] = n
        sig = _node_signature(n)
        if self._node_sig.get(key) != sig:
            self._node_sig[key] = sig
            self.capacity_version += 1
            self.nodes_version += 1
            self.touch_cluster_services(n.cluster)
        self._mark("node", record_key("node", n), n)

    def put_target_group(self, tg: TargetGroup) -> None:
        self.target_groups[(tg.cluster, tg.name)] = tg
        self._mark("targetgroup", record_key("targetgroup", tg), tg)
        self.touch_load_balancers(tg.cluster)

    def put_load_balancer(self, lb: LoadBalancer) -> None:
        self.load_balancers[(lb.cluster, lb.name)] = lb
        self._mark("loadbalancer", record_key("loadbalancer", lb), lb)
        self.touch_load_balancers(lb.cluster)

    def put_scalable_target(self, st: ScalableTarget) -> None:
        self.scalable_targets[(st.cluster, st.serviceName)] = st
        self._mark("scalabletarget", st.record_key, st)

    def delete_scalable_target(self, st: ScalableTarget) -> None:
        self.scalable_targets.pop((st.cluster, st.serviceName), None)
        self.delete("scalabletarget", st.record_key)

    def delete_target_group(self, tg: TargetGroup) -> None:
        self.target_groups.pop((tg.cluster, tg.name), None)
        self.delete("targetgroup", record_key("targetgroup", tg))
        self.touch_load_balancers(tg.cluster)

    def delete_load_balancer(self, lb: LoadBalancer) -> None:
        self.load_balancers.pop((lb.cluster, lb.name), None)
        self.delete("loadbalancer", record_key("loadbalancer", lb))
        self.touch_load_balancers(lb.cluster)

    def touch_load_balancers(self, cluster: str) -> None:
        """The LB nodes' documents of ``cluster`` must be rebuilt (a target, group or listener changed)."""
        self.dirty_nodes.update(k for k, n in self.nodes.items() if k[0] == cluster and n.loadBalancer)

    def touch_cluster_services(self, cluster: str) -> None:
        """Mark every service of ``cluster`` for planning (a node joined, left, drained, changed)."""
        self.dirty_services.update(k for k in self.services if k[0] == cluster)

    def take_changed_tasks(self, key: tuple[str, str]) -> set[str]:
        return self.changed_tasks.pop(key, set())

    def mark_node_dirty(self, key: tuple[str, str]) -> None:
        """The node's desired document must be rebuilt (and republished if it changed)."""
        self.dirty_nodes.add(key)

    def take_dirty_nodes(self) -> set[tuple[str, str]]:
        dirty, self.dirty_nodes = self.dirty_nodes, set()
        return dirty

    def node_active_count(self, cluster: str, node_id: str) -> int:
        return len(self.active_by_node.get((cluster, node_id), ()))

    def take_dirty_services(self) -> set[tuple[str, str]]:
        dirty, self.dirty_services = self.dirty_services, set()
        return dirty

    def put_task(self, t: Task, details_only: bool = False) -> None:
        """Insert or update a task; call after every change to a task (placement, status).
        ``details_only``: the change is in its containers' details only (see flush)."""
        old = self.tasks.get(t.taskId)
        if old is t:  # the same object changed in place: its node may have changed
            self._reindex_node(t)
            self._track_unplaced(t)
            self._track_active(t)
        else:
            if old is not None:
                self._unindex(old)
            self._index(t)  # tracks it as unplaced and active too
        if t.nodeId:
            self.dirty_nodes.add((t.cluster, t.nodeId))
        if t.serviceName:
            skey = (t.cluster, t.serviceName)
            self.dirty_services.add(skey)
            self.changed_tasks[skey].add(t.taskId)
            if self.load_balancers and (s := self.services.get(skey)) and s.spec.loadBalancers:
                self.touch_load_balancers(t.cluster)  # it may have become a target, or stopped being one
        if t.lastStatus == "STOPPED" and t.nodeId and t.taskId not in self._stopped_placed:
            self._stopped_placed.add(t.taskId)
            self.capacity_version += 1
        key = ("task", t.taskId)  # record_key of a task
        self._dirty[key] = ("task", t)
        if self._deleted:
            self._deleted.discard(key)
        if not details_only:
            self._durable_dirty.add(t.taskId)

    def put_task_record(self, t: Task) -> None:
        """Write a change of an indexed task that no index, count or planner reads (its
        placedGeneration): the store only, without put_task's re-indexing."""
        assert self.tasks.get(t.taskId) is t, "put_task_record is for tasks put before"
        self._mark("task", record_key("task", t), t)
        self._durable_dirty.add(t.taskId)

    def delete(self, kind: str, key: str) -> None:
        self._dirty.pop((kind, key), None)
        self._deleted.add((kind, key))
        if kind == "task":
            self._deferred.pop(key, None)
            self._durable_dirty.discard(key)

    def delete_service(self, s: Service) -> None:
        self.services.pop((s.cluster, s.serviceName), None)
        self.changed_tasks.pop((s.cluster, s.serviceName), None)
        self.delete("service", record_key("service", s))

    def delete_node(self, n: Node) -> None:
        self.nodes.pop((n.cluster, n.nodeId), None)
        self._node_sig.pop((n.cluster, n.nodeId), None)
        self.capacity_version += 1
        self.nodes_version += 1
        self.touch_cluster_services(n.cluster)
        self.delete("node", record_key("node", n))

    def delete_cluster(self, c: Cluster) -> None:
        self.clusters.pop(c.clusterName, None)
        self.delete("cluster", record_key("cluster", c))

    def delete_task(self, t: Task) -> None:
        self._forget(t)
        self.delete("task", record_key("task", t))

    def _forget(self, t: Task) -> None:
        self._stopped_placed.discard(t.taskId)
        self._written.discard(t.taskId)
        self._durable_dirty.discard(t.taskId)
        self._deferred.pop(t.taskId, None)
        if self.tasks.get(t.taskId) is t:
            self._unindex(t)
            del self.tasks[t.taskId]

    def collect_stopped(self, stopped_before: float) -> int:
        """Delete the STOPPED tasks that stopped before ``stopped_before`` (one SQL DELETE, plus
        any not yet flushed); returns how many the store deleted."""
        for t in [t for kind, t in self._dirty.values() if kind == "task"]:
            if t.lastStatus == "STOPPED" and t.stoppedAt and t.stoppedAt < stopped_before:  # type: ignore[attr-defined]
                self.delete_task(t)  # type: ignore[arg-type]
        return self.store.delete_stopped_tasks(stopped_before)

    def flush(self, defer_details: bool = False) -> int:
        """Write dirty records in one transaction; returns how many rows were written. The
        STOPPED tasks written leave memory (the store keeps them).

        ``defer_details`` (the reconcile loop's flush, once per pass): a task whose only change
        since it was last written is in its containers' details (the first report of a PENDING
        task lists its containers PENDING; health and status changes are the task's own fields)
        is written later: with its next other change (RUNNING, STOPPED, ...) or the next flush
        without ``defer_details`` (an API call's, the one at shutdown). A crash loses at most
        those details, which the node's next status snapshot reports again (level-triggered);
        a STOPPED task is always written in full. Saves a third of the task writes of a start."""
        if not self._dirty and not self._deleted and (defer_details or not self._deferred):
            return 0
        puts: list[tuple[str, object]] = []
        written, durable, deferred = self._written, self._durable_dirty, self._deferred
        later: list[tuple[str, Task]] = []
        for (kind, key), (_, obj) in self._dirty.items():
            if kind == "task" and defer_details and key not in durable and key in written:
                later.append((key, obj))  # type: ignore[arg-type]
                continue
            puts.append((kind, obj))
        if not defer_details:
            puts.extend(("task", t) for key, t in deferred.items() if ("task", key) not in self._dirty)
        dels = list(self._deleted)
        with STORE_SECONDS.time():
            self.store.write(puts, dels)  # type: ignore[arg-type]
        # Written: only now is it known to be in the store (a failed write is retried in full).
        for kind, obj in puts:
            if kind == "task":
                written.add(obj.taskId)  # type: ignore[attr-defined]
                durable.discard(obj.taskId)  # type: ignore[attr-defined]
                deferred.pop(obj.taskId, None)  # type: ignore[attr-defined]
        deferred.update(later)
        self._dirty.clear()
        self._deleted.clear()
        for kind, obj in puts:
            if kind == "task" and obj.lastStatus == "STOPPED" and self.tasks.get(obj.taskId) is obj:  # type: ignore[attr-defined]
                self._forget(obj)  # type: ignore[arg-type]
                self.tasks_evicted += 1
        return len(puts) + len(dels)

    # ---- indexes -----------------------------------------------------------------------------
    def _index(self, t: Task) -> None:
        self.tasks[t.taskId] = t
        if t.serviceName:
            self.tasks_by_service[(t.cluster, t.serviceName)].add(t.taskId)
        if t.nodeId:
            self.tasks_by_node[(t.cluster, t.nodeId)].add(t.taskId)
        self._indexed_node[t.taskId] = t.nodeId
        self._track_unplaced(t)
        self._track_active(t)

    def _count(self, t: Task, gone: bool = False) -> None:
        counted = self._counted
        want = None if gone or not t.serviceName or t.desiredStatus != "RUNNING" or t.lastStatus == "STOPPED" \
            else ((t.cluster, t.serviceName), 0 if t.lastStatus == "RUNNING" else 1)
        prev = counted.get(t.taskId)
        if prev == want:  # most puts: counted where it was
            return
        if prev is not None:
            del counted[t.taskId]
            counts = self._svc_counts[prev[0]]
            counts[prev[1]] -= 1
            if counts == [0, 0]:
                del self._svc_counts[prev[0]]
        if want is not None:
            self._svc_counts.setdefault(want[0], [0, 0])[want[1]] += 1
            counted[t.taskId] = want

    def _track_active(self, t: Task) -> None:
        self._count(t)
        if t.serviceName:
            if t.lastStatus == "STOPPED":
                self._service_inactive(t)
            else:
                self.active_by_service[(t.cluster, t.serviceName)].add(t.taskId)
        want = t.nodeId if t.nodeId and t.lastStatus != "STOPPED" else None
        prev = self._active_node.get(t.taskId)
        if prev == want:
            return
        if prev:
            self.active_by_node[(t.cluster, prev)].discard(t.taskId)
            del self._active_node[t.taskId]
        if want:
            self.active_by_node[(t.cluster, want)].add(t.taskId)
            self._active_node[t.taskId] = want

    def _service_inactive(self, t: Task) -> None:
        key = (t.cluster, t.serviceName)
        members = self.active_by_service.get(key)  # type: ignore[arg-type]
        if members is not None:
            members.discard(t.taskId)
            if not members:
                del self.active_by_service[key]  # type: ignore[arg-type]

    def _track_unplaced(self, t: Task) -> None:
        if t.nodeId is None and t.lastStatus != "STOPPED":
            self.unplaced.setdefault(t.taskId)
        else:
            self.unplaced.pop(t.taskId, None)
        if t.lastStatus == "DEACTIVATING":
            self.deactivating.setdefault(t.taskId)
        else:
            self.deactivating.pop(t.taskId, None)

    def _unindex(self, t: Task) -> None:
        self.unplaced.pop(t.taskId, None)
        self.deactivating.pop(t.taskId, None)
        self._count(t, gone=True)
        if t.serviceName:
            self.tasks_by_service[(t.cluster, t.serviceName)].discard(t.taskId)
        node = self._indexed_node.pop(t.taskId, t.nodeId)
        if node:
            self.tasks_by_node[(t.cluster, node)].discard(t.taskId)
        if t.serviceName:
            self._service_inactive(t)
        active = self._active_node.pop(t.taskId, None)
        if active:
            self.active_by_node[(t.cluster, active)].discard(t.taskId)

    def _reindex_node(self, t: Task) -> None:
        prev = self._indexed_node.get(t.taskId)
        if prev != t.nodeId:
            if prev:
                self.tasks_by_node[(t.cluster, prev)].discard(t.taskId)
                self.dirty_nodes.add((t.cluster, prev))
            if t.nodeId:
                self.tasks_by_node[(t.cluster, t.nodeId)].add(t.taskId)
            self._indexed_node[t.taskId] = t.nodeId

    # ---- reads -------------------------------------------------------------------------------
    def _stored(self, t: Task, held: set[str]) -> bool:
        """A STOPPED task read from the store that memory does not supersede (held, or deleted
        but not yet flushed)."""
        return t.taskId not in held and ("task", t.taskId) not in self._deleted

    def task(self, task_id: str) -> Task | None:
        """The task with this id, from memory, else (STOPPED) from the store."""
        t = self.tasks.get(task_id)
        if t is not None or ("task", task_id) in self._deleted:
            return t
        t = self.store.task(task_id)
        return t if t is not None and t.lastStatus == "STOPPED" else None

    def task_ids(self, cluster: str, prefix: str, limit: int | None = None) -> list[str]:
        """Ids of the cluster's tasks (STOPPED included) that start with ``prefix``, sorted; at
        most ``limit`` of those in the store."""
        ids = {i for i, t in self.tasks.items() if t.cluster == cluster and i.startswith(prefix)}
        ids.update(i for i in self.store.stopped_task_ids(cluster, prefix, limit) if ("task", i) not in self._deleted)
        return sorted(ids)

    def started_by_exists(self, cluster: str, started_by: str) -> bool:
        """Whether a task of the cluster (STOPPED included) was started by ``started_by``."""
        if any(t.startedBy == started_by and t.cluster == cluster for t in self.tasks.values()):
            return True
        return self.store.stopped_started_by(cluster, started_by)

    def iter_tasks(self, cluster: str, service: str | None = None, node: str | None = None,
                   desired: str | None = None, family: str | None = None, page: int = 500,
                   stopped: bool = True) -> Iterator[Task]:
        """The cluster's tasks, STOPPED included (unless ``stopped`` is False), oldest first
        (createdAt, taskId), filtered as the task list API is. Lazy: the store's STOPPED ones are
        read a page at a time (no cursor is held between pages, so the caller may yield to the
        event loop meanwhile); the tasks in memory when it starts come from memory."""
        ids: Iterable[str]
        if service is not None:
            ids = self.tasks_by_service.get((cluster, service), ())
        elif node is not None:
            ids = self.tasks_by_node.get((cluster, node), ())
        else:
            ids = self.tasks.keys()
        mem = sorted((t for i in ids if (t := self.tasks.get(i)) is not None and t.cluster == cluster
                      and (service is None or t.serviceName == service) and (node is None or t.nodeId == node)
                      and (desired is None or t.desiredStatus == desired) and (family is None or t.family == family)),
                     key=_order)
        if not stopped:
            return iter([t for t in mem if t.lastStatus != "STOPPED"])
        held = set(self.tasks)  # what memory supersedes in the store, as it starts

        def stored() -> Iterator[Task]:
            after = None
            while True:
                rows = self.store.stopped_tasks(cluster, service=service, node=node, desired=desired,
                                                family=family, after=after, limit=page)
                for t in rows:
                    if self._stored(t, held):
                        yield t
                if len(rows) < page:
                    return
                after = _order(rows[-1])

        return heapq.merge(mem, stored(), key=_order)

    def service_tasks(self, cluster: str, name: str) -> list[Task]:
        """Every task of the service, the STOPPED ones in the store included (oldest first)."""
        return list(self.iter_tasks(cluster, service=name))

    def node_tasks(self, cluster: str, node_id: str) -> list[Task]:
        """Every task placed on the node, the STOPPED ones in the store included (oldest first)."""
        return list(self.iter_tasks(cluster, node=node_id))

    def service_active_tasks(self, cluster: str, name: str) -> list[Task]:
        """The service's tasks that are not STOPPED (O(them), whatever the history)."""
        return [self.tasks[i] for i in self.active_by_service.get((cluster, name), ())]

    def service_counts(self, cluster: str, name: str) -> tuple[int, int]:
        """(running, pending): the service's tasks that count toward it (Task.active) that are
        RUNNING, and the others. O(1)."""
        running, pending = self._svc_counts.get((cluster, name), (0, 0))
        return running, pending

    def node_active_tasks(self, cluster: str, node_id: str) -> list[Task]:
        """The node's tasks that are not STOPPED (O(them), whatever the history)."""
        return [self.tasks[i] for i in self.active_by_node.get((cluster, node_id), ())]

    def unplaced_tasks(self) -> list[Task]:
        """Tasks waiting for a node (not STOPPED), in the order of ``self.tasks``."""
        return [t for i in self.unplaced if (t := self.tasks.get(i)) is not None and t.nodeId is None
                and t.lastStatus != "STOPPED"]

    def cluster_nodes(self, cluster: str) -> list[Node]:
        return [n for (c, _), n in self.nodes.items() if c == cluster]

    def cluster_services(self, cluster: str) -> list[Service]:
        return [s for (c, _), s in self.services.items() if c == cluster]

    def latest_taskdef(self, family: str) -> TaskDefinition | None:
        revs = [td for td in self.taskdefs.get(family, {}).values() if td.status == "ACTIVE"]
        return max(revs, key=lambda td: td.revision) if revs else None

    def resolve_taskdef(self, ref: str) -> TaskDefinition | None:
        """"family" -> latest ACTIVE revision; "family:N" -> that revision (even INACTIVE, as ECS)."""
        family, _, rev = ref.partition(":")
        if rev:
            return self.taskdefs.get(family, {}).get(int(rev)) if rev.isdigit() else None
        return self.latest_taskdef(family)
