"""The orchestrator's in-memory state: every record, indexed, with write-back to the store.

All mutation goes through :class:`State` so indexes (tasks by service, by node) and the set
of dirty records stay right; :meth:`State.flush` writes the dirty records in one transaction.
"""
from __future__ import annotations

from collections import defaultdict

from orchestrator.models import Cluster, Node, Service, Task, TaskDefinition
from orchestrator.store import Store

STOPPED_TASK_RETENTION = 24 * 3600  # ECS keeps stopped tasks 1 hour; users ask for more.


def _node_signature(n: Node) -> tuple:
    """What service planning reads from a node (not lastSeenAt, generation, observed...)."""
    return (n.connected, n.status, tuple(sorted(n.attributes.items())), tuple(n.capacityProviders),
            n.resources.cpu if n.resources else None, n.resources.memory if n.resources else None)


class State:
    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        self.clusters: dict[str, Cluster] = {}
        self.taskdefs: dict[str, dict[int, TaskDefinition]] = {}
        self.services: dict[tuple[str, str], Service] = {}
        self.tasks: dict[str, Task] = {}
        self.nodes: dict[tuple[str, str], Node] = {}
        self.tasks_by_service: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.tasks_by_node: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._indexed_node: dict[str, str | None] = {}
        # The not-STOPPED tasks of each node: what placement, desired documents and status
        # reports read. tasks_by_node also holds the STOPPED ones kept for 24 h, which would make
        # those reads grow with the cluster's history (bench/scale.py: +30 % CPU per 10k kept).
        self.active_by_node: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._active_node: dict[str, str] = {}
        self.active_by_service: dict[tuple[str, str], set[str]] = defaultdict(set)  # likewise, for views
        self._dirty: dict[tuple[str, str], tuple[str, object]] = {}
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
        # Bumped when capacity may have appeared (a node changed as planning sees it, a placed
        # task stopped): the controller retries tasks that fit nowhere only then, or periodically.
        self.capacity_version = 0
        self._stopped_placed: set[str] = set()
        if store is not None:
            self._load(store)

    def _load(self, store: Store) -> None:
        for c in store.load("cluster"):
            self.clusters[c.clusterName] = c  # type: ignore[attr-defined]
        for td in store.load("taskdef"):
            self.taskdefs.setdefault(td.family, {})[td.revision] = td  # type: ignore[attr-defined]
        for s in store.load("service"):
            self.services[(s.cluster, s.serviceName)] = s  # type: ignore[attr-defined]
        for n in store.load("node"):
            n.connected = False  # type: ignore[attr-defined]
            self.nodes[(n.cluster, n.nodeId)] = n  # type: ignore[attr-defined]
        for t in store.load("task"):
            self._index(t)  # type: ignore[arg-type]
        self.dirty_nodes = set(self.nodes)
        self.dirty_services = set(self.services)

    # ---- writes ------------------------------------------------------------------------------
    def _mark(self, kind: str, key: str, obj: object) -> None:
        self._dirty[(kind, key)] = (kind, obj)
        self._deleted.discard((kind, key))

    def put_cluster(self, c: Cluster) -> None:
        self.clusters[c.clusterName] = c
        self._mark("cluster", c.clusterName, c)

    def put_taskdef(self, td: TaskDefinition) -> None:
        self.taskdefs.setdefault(td.family, {})[td.revision] = td
        self._mark("taskdef", td.ref, td)

    def put_service(self, s: Service) -> None:
        self.services[(s.cluster, s.serviceName)] = s
        self.dirty_services.add((s.cluster, s.serviceName))
        self._mark("service", f"{s.cluster}/{s.serviceName}", s)

    def put_node(self, n: Node) -> None:
        key = (n.cluster, n.nodeId)
        self.nodes[key] = n
        sig = _node_signature(n)
        if self._node_sig.get(key) != sig:
            self._node_sig[key] = sig
            self.capacity_version += 1
            self.nodes_version += 1
            self.touch_cluster_services(n.cluster)
        self._mark("node", f"{n.cluster}/{n.nodeId}", n)

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

    def put_task(self, t: Task) -> None:
        """Insert or update a task; call after every change to a task (placement, status)."""
        old = self.tasks.get(t.taskId)
        if old is not None and old is not t:
            self._unindex(old)
        if old is not t or old is None:
            self._index(t)
        else:
            # Same object mutated in place: node may have changed.
            self._reindex_node(t)
        if t.nodeId:
            self.dirty_nodes.add((t.cluster, t.nodeId))
        if t.serviceName:
            self.dirty_services.add((t.cluster, t.serviceName))
        self._track_unplaced(t)
        self._track_active(t)
        if t.serviceName:
            self.changed_tasks[(t.cluster, t.serviceName)].add(t.taskId)
        if t.lastStatus == "STOPPED" and t.nodeId and t.taskId not in self._stopped_placed:
            self._stopped_placed.add(t.taskId)
            self.capacity_version += 1
        self._mark("task", t.taskId, t)

    def delete(self, kind: str, key: str) -> None:
        self._dirty.pop((kind, key), None)
        self._deleted.add((kind, key))

    def delete_service(self, s: Service) -> None:
        self.services.pop((s.cluster, s.serviceName), None)
        self.changed_tasks.pop((s.cluster, s.serviceName), None)
        self.delete("service", f"{s.cluster}/{s.serviceName}")

    def delete_node(self, n: Node) -> None:
        self.nodes.pop((n.cluster, n.nodeId), None)
        self._node_sig.pop((n.cluster, n.nodeId), None)
        self.capacity_version += 1
        self.nodes_version += 1
        self.touch_cluster_services(n.cluster)
        self.delete("node", f"{n.cluster}/{n.nodeId}")

    def delete_cluster(self, c: Cluster) -> None:
        self.clusters.pop(c.clusterName, None)
        self.delete("cluster", c.clusterName)

    def delete_task(self, t: Task) -> None:
        self._stopped_placed.discard(t.taskId)
        self._unindex(t)
        self.tasks.pop(t.taskId, None)
        self.delete("task", t.taskId)

    def flush(self) -> int:
        """Write dirty records in one transaction; returns how many rows were written."""
        if not self._dirty and not self._deleted:
            return 0
        puts = [(kind, obj) for kind, obj in self._dirty.values()]
        dels = list(self._deleted)
        if self.store is not None:
            self.store.write(puts, dels)  # type: ignore[arg-type]
        self._dirty.clear()
        self._deleted.clear()
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

    def _track_active(self, t: Task) -> None:
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

    def _unindex(self, t: Task) -> None:
        self.unplaced.pop(t.taskId, None)
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
    def service_tasks(self, cluster: str, name: str) -> list[Task]:
        return [self.tasks[i] for i in self.tasks_by_service.get((cluster, name), ())]

    def node_tasks(self, cluster: str, node_id: str) -> list[Task]:
        """Every task placed on the node, the STOPPED ones still kept included."""
        return [self.tasks[i] for i in self.tasks_by_node.get((cluster, node_id), ())]

    def service_active_tasks(self, cluster: str, name: str) -> list[Task]:
        """The service's tasks that are not STOPPED (O(them), whatever the history)."""
        return [self.tasks[i] for i in self.active_by_service.get((cluster, name), ())]

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
