"""The controller's side of load balancing: gathers the views orchestrator.core.targets decides
on (services' target groups, tasks' bindings, the LB nodes' reports) and keeps the reports.

Holds no decision of its own: which tasks are targets, their health, when a drain is over and
what an LB node serves are all core.targets' answers.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from dockyard.lb import LbDesired, LbStatus, TargetReport
from orchestrator.core import nodes as nodes_core
from orchestrator.core import targets as core
from orchestrator.models import Node, Task
from orchestrator.state import State


class Targets:
    def __init__(self, state: State, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock  # the controller's
        # (cluster, LB node) -> (target group, task id) -> its last report; and the whole status.
        self.reports: dict[tuple[str, str], dict[tuple[str, str], TargetReport]] = {}
        self.status: dict[tuple[str, str], LbStatus] = {}
        self.session_since: float | None = None  # the broker session's start (the controller sets it)
        self._pending: dict[str, tuple[float, bool]] = {}  # cluster -> (when, pending): asked per task

    # ---- views -------------------------------------------------------------------------------
    def groups_of(self, t: Task) -> list[str]:
        """The target groups ``t``'s service registers its tasks in (empty for most tasks)."""
        if not t.serviceName:
            return []
        s = self.state.services.get((t.cluster, t.serviceName))
        return [lb.target_group for lb in s.spec.loadBalancers] if s is not None else []

    def _cluster_reports(self, cluster: str) -> dict[str, dict[tuple[str, str], TargetReport]]:
        return {node: r for (c, node), r in self.reports.items() if c == cluster}

    def _serving(self, cluster: str) -> dict[str, list[str]]:
        lbs = [lb.spec for (c, _), lb in self.state.load_balancers.items() if c == cluster]
        return core.serving_nodes(lbs, [n for (c, _), n in self.state.nodes.items() if c == cluster])

    def pending(self, cluster: str, now: float) -> bool:
        """core.targets.view_pending for ``cluster``'s LB nodes (memoised for a second: it is asked
        for every target task of a pass; a report clears it)."""
        memo = self._pending.get(cluster)
        if memo is not None and 0 <= now - memo[0] < 1.0:
            return memo[1]
        lb_nodes = [(n.nodeId, n.connected) for (c, _), n in self.state.nodes.items() if c == cluster and n.loadBalancer]
        reported = [node for (c, node) in self.reports if c == cluster]
        pending = core.view_pending(lb_nodes, reported, now, self.session_since, nodes_core.RECONNECT_WINDOW_MIN)
        self._pending[cluster] = (now, pending)
        return pending

    def health_of(self, t: Task) -> str | None:
        """core.targets.target_health for a target task (its last known health while the view is
        pending); None for a task in no target group."""
        groups = self.groups_of(t)
        if not groups:
            return None
        if self.pending(t.cluster, self.clock()):
            return core.last_known_health(t)
        return core.target_health(t.taskId, groups, self._serving(t.cluster), self._cluster_reports(t.cluster))

    # ---- LB node reports -----------------------------------------------------------------------
    def on_status(self, cluster: str, node_id: str, st: LbStatus) -> set[str]:
        """Keep an LB node's report; returns the ids of the tasks whose target state changed."""
        new = {(r.targetGroup, r.taskId): r for r in st.targets}
        old = self.reports.get((cluster, node_id), {})
        self.reports[(cluster, node_id)] = new
        self._pending.pop(cluster, None)
        self.status[(cluster, node_id)] = st
        changed = {k[1] for k in set(new) | set(old) if new.get(k) != old.get(k)}
        return changed

    def forget_node(self, cluster: str, node_id: str) -> None:
        self.reports.pop((cluster, node_id), None)
        self.status.pop((cluster, node_id), None)

    # ---- drains ------------------------------------------------------------------------------
    def released(self, now: float) -> tuple[list[Task], float | None]:
        """The DEACTIVATING tasks whose drain is over, and the earliest deadline of the others."""
        out, wake = [], None
        serving: dict[str, dict[str, list[str]]] = {}
        pending: dict[str, bool] = {}
        for task_id in list(self.state.deactivating):
            t = self.state.tasks[task_id]
            groups = self.groups_of(t)
            tgs = {k[1]: tg.spec for k, tg in self.state.target_groups.items() if k[0] == t.cluster}
            if t.cluster not in serving:
                serving[t.cluster] = self._serving(t.cluster)
                pending[t.cluster] = self.pending(t.cluster, now)
            if core.drain_released(t, groups, tgs, serving[t.cluster], self._cluster_reports(t.cluster), now,
                                   pending[t.cluster]):
                out.append(t)
            else:
                deadline = core.drain_deadline(t, groups, tgs)
                if deadline is not None and (wake is None or deadline < wake):
                    wake = deadline
        return out, wake

    # ---- documents ---------------------------------------------------------------------------
    def document(self, node: Node) -> LbDesired:
        cluster = node.cluster
        lbs = [lb.spec for (c, _), lb in self.state.load_balancers.items() if c == cluster]
        tgs = {k[1]: tg.spec for k, tg in self.state.target_groups.items() if k[0] == cluster}
        targets: dict[str, list] = defaultdict(list)
        for (c, name), s in self.state.services.items():
            if c != cluster or not s.spec.loadBalancers:
                continue
            for t in self.state.service_active_tasks(c, name):
                if core.is_target_state(t) is None:
                    continue
                td = self.state.resolve_taskdef(t.taskDefinition)
                host = td is not None and td.spec.networkMode == "host"
                for ref in core.task_targets(t, s.spec.loadBalancers, self.state.nodes.get((c, t.nodeId or "")), host):
                    targets[ref.target_group].append(ref.target)
        return core.lb_document(node, lbs, tgs, targets)
