"""The state metrics, generated at scrape time from the in-memory State (a custom collector).

One pass over the tasks in memory (the not-STOPPED ones, plus STOPPED ones not yet flushed)
adds them up per service and per node into small dicts keyed by name; nothing per task is
kept between scrapes. The catalogue is in docs/metrics.md.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterator, MutableMapping
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric

from orchestrator import usage as usage_mod
from orchestrator.state import State

MIB = 1024 * 1024
PENDING = frozenset({"PROVISIONING", "PENDING", "ACTIVATING"})
ROLLOUT_STATES = ("IN_PROGRESS", "COMPLETED", "FAILED")


class StateCollector:
    """Per service, per node and per cluster gauges read from ``state`` at each collect()."""

    def __init__(self, state: State, usage: Any = None) -> None:
        self.state = state
        self.usage = usage  # an orchestrator.usage.UsageBook, or None: no utilization gauges

    def describe(self) -> list[Metric]:
        return []  # unchecked: the families depend on the state

    def collect(self) -> Iterator[Metric]:
        st = self.state
        svc_running: Counter[tuple[str, str]] = Counter()
        svc_pending: Counter[tuple[str, str]] = Counter()
        node_tasks: Counter[tuple[str, str]] = Counter()
        node_cpu: Counter[tuple[str, str]] = Counter()
        node_mem: Counter[tuple[str, str]] = Counter()
        by_status: Counter[tuple[str, str]] = Counter()
        # Per service: [sampled tasks, sum of CPUUtilization, sum of MemoryUtilization] (the
        # averages as orchestrator.usage.average computes them, without an object per task).
        util: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
        book, now = self.usage, time.time()
        fresh: dict[tuple[str, str], Any] = {}
        for t in st.tasks.values():
            status = t.lastStatus
            if status == "STOPPED":
                continue
            by_status[(t.cluster, status)] += 1
            if t.serviceName is not None:
                skey = (t.cluster, t.serviceName)
                if status == "RUNNING":
                    svc_running[skey] += 1
                    if book is not None and t.nodeId is not None:
                        self._add_util(util[skey], t, fresh, now)
                elif status in PENDING:
                    svc_pending[skey] += 1
            if t.nodeId is not None:
                nkey = (t.cluster, t.nodeId)
                node_tasks[nkey] += 1
                node_cpu[nkey] += t.cpu
                node_mem[nkey] += t.memory
        yield from self._services(svc_running, svc_pending, util)
        yield from self._nodes(node_tasks, node_cpu, node_mem)
        tasks = GaugeMetricFamily("dockyard_tasks", "Tasks not yet STOPPED, by lastStatus",
                                  labels=["cluster", "last_status"])
        for (cluster, last), count in sorted(by_status.items()):
            tasks.add_metric([cluster, last], count)
        yield tasks

    def _add_util(self, acc: list[float], t: Any, fresh: dict[tuple[str, str], Any], now: float) -> None:
        nkey = (t.cluster, t.nodeId)
        if nkey not in fresh:
            node = self.state.nodes.get(nkey)
            fresh[nkey] = (self.usage.fresh(node, now), node.resources.memory if node and node.resources else 0)
        samples, node_mem = fresh[nkey]
        u = samples.get(t.taskId) if samples else None
        if u is None:
            return
        cpu_basis, mem_basis = usage_mod.bases(u, t.cpu, t.memory, node_mem)
        acc[0] += 1
        acc[1] += round(100.0 * u.cpu / cpu_basis, 1)
        acc[2] += round(100.0 * u.memory / mem_basis, 1) if mem_basis > 0 else 0.0

    def _services(self, running: Counter, pending: Counter, util: dict[tuple[str, str], list[float]]) -> Iterator[Metric]:
        labels = ["cluster", "service"]
        desired = GaugeMetricFamily("dockyard_service_desired_tasks", "The service's desiredCount", labels=labels)
        run = GaugeMetricFamily("dockyard_service_running_tasks", "The service's tasks in RUNNING", labels=labels)
        pend = GaugeMetricFamily("dockyard_service_pending_tasks",
                                 "The service's tasks in PROVISIONING, PENDING or ACTIVATING", labels=labels)
        failed = GaugeMetricFamily("dockyard_service_failed_tasks",
                                   "Tasks of the service's current deployments that failed (ECS failedTasks)",
                                   labels=labels)
        deps = GaugeMetricFamily("dockyard_service_deployments",
                                 "The service's deployments (PRIMARY and ACTIVE) by rolloutState",
                                 labels=[*labels, "rollout_state"])
        cpu = GaugeMetricFamily("dockyard_service_cpu_utilization_percent",
                                "Average CPUUtilization of the service's RUNNING tasks (docs/metrics.md)",
                                labels=labels)
        mem = GaugeMetricFamily("dockyard_service_memory_utilization_percent",
                                "Average MemoryUtilization of the service's RUNNING tasks (docs/metrics.md)",
                                labels=labels)
        for key in sorted(self.state.services):
            s = self.state.services[key]
            values = list(key)
            desired.add_metric(values, s.spec.desiredCount)
            run.add_metric(values, running.get(key, 0))
            pend.add_metric(values, pending.get(key, 0))
            current = [d for d in s.deployments if d.status != "INACTIVE"]
            failed.add_metric(values, sum(d.failedTasks for d in current))
            states: Counter[str] = Counter(d.rolloutState for d in current)
            for state in ROLLOUT_STATES:
                deps.add_metric([*values, state], states.get(state, 0))
            acc = util.get(key)
            if acc is not None and acc[0]:
                cpu.add_metric(values, round(acc[1] / acc[0], 1))
                mem.add_metric(values, round(acc[2] / acc[0], 1))
        yield from (desired, run, pend, failed, deps)
        if self.usage is not None:
            yield from (cpu, mem)

    def _nodes(self, tasks: Counter, cpu: Counter, mem: Counter) -> Iterator[Metric]:
        labels = ["cluster", "node"]
        fams = {
            "connected": GaugeMetricFamily("dockyard_node_connected", "1 if the node's agent is connected", labels=labels),
            "draining": GaugeMetricFamily("dockyard_node_draining", "1 if the node is DRAINING", labels=labels),
            "tasks": GaugeMetricFamily("dockyard_node_tasks", "Tasks placed on the node, not yet STOPPED", labels=labels),
            "rcpu": GaugeMetricFamily("dockyard_node_registered_cpu_units",
                                      "The node's registered cpu (1024 units per core)", labels=labels),
            "fcpu": GaugeMetricFamily("dockyard_node_remaining_cpu_units",
                                      "Registered cpu minus the reservations of its tasks", labels=labels),
            "rmem": GaugeMetricFamily("dockyard_node_registered_memory_bytes", "The node's registered memory",
                                      labels=labels),
            "fmem": GaugeMetricFamily("dockyard_node_remaining_memory_bytes",
                                      "Registered memory minus the reservations of its tasks", labels=labels),
        }
        connected: MutableMapping[str, int] = defaultdict(int)
        for key in sorted(self.state.nodes):
            n = self.state.nodes[key]
            values = list(key)
            connected[n.cluster] += n.connected
            reg_cpu, reg_mem = (n.resources.cpu, n.resources.memory) if n.resources else (0, 0)
            fams["connected"].add_metric(values, int(n.connected))
            fams["draining"].add_metric(values, int(n.status == "DRAINING"))
            fams["tasks"].add_metric(values, tasks.get(key, 0))
            fams["rcpu"].add_metric(values, reg_cpu)
            fams["fcpu"].add_metric(values, reg_cpu - cpu.get(key, 0))
            fams["rmem"].add_metric(values, reg_mem * MIB)
            fams["fmem"].add_metric(values, (reg_mem - mem.get(key, 0)) * MIB)
        yield from fams.values()
        total = GaugeMetricFamily("dockyard_nodes_connected", "Connected nodes, per cluster", labels=["cluster"])
        for cluster, count in sorted(connected.items()):
            total.add_metric([cluster], count)
        yield total


class _Combined:
    """The default registry's instruments followed by the state collector (not registered
    globally: each app, and each unit test, has its own State)."""

    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for c in self.collectors:
            yield from c.collect()


def registry_for(state: State, usage: Any = None) -> Any:
    """What /metrics exposes: every instrument of the process plus ``state``'s gauges."""
    return _Combined(REGISTRY, StateCollector(state, usage))


def route_of(scope: MutableMapping[str, Any]) -> str:
    """The route template a request matched (``/v1/clusters/{cluster}/tasks``), bounded: never the
    raw path, which carries ids."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
