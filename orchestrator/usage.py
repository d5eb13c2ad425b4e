"""Task, service and node usage as ECS defines it, from the per-task samples agents send in their
status snapshots (dockyard.wire.TaskUsage).

The bus records each node's latest samples as they arrive (:meth:`UsageBook.record`: a dict
per node, replaced wholesale, so tasks that stopped drop out with the next snapshot); the
percentages are computed when read, from the task records' reservations (docs/metrics.md):

* CPUUtilization = cpu units used / the task's reserved cpu units x 100; a task that reserves
  no cpu (most plain task definitions) is measured against one vCPU, 1024 units: a task
  burning one core is at 100 %, two cores 200 %.
* MemoryUtilization = working-set memory / the task's reserved memory x 100; without a
  reservation, against its containers' hard limits, and without those against the node's
  registered memory.
"""
from __future__ import annotations

from dataclasses import dataclass

from dockyard.wire import TaskUsage
from orchestrator.models import Node, Task
from orchestrator.state import State

ONE_VCPU = 1024
MIB = 1024 * 1024
STALE_AFTER = 3.0  # status intervals without a snapshot after which a node's samples are not shown


@dataclass(frozen=True, slots=True)
class Utilization:
    cpu_units: float
    memory_bytes: int
    cpu_percent: float
    memory_percent: float
    cpu_basis: int  # the units cpu_percent is of
    memory_basis: int  # the bytes memory_percent is of
    sampled_at: float


def bases(u: TaskUsage, reserved_cpu: int, reserved_memory_mib: int, node_memory_mib: int) -> tuple[int, int]:
    """What a sample's cpu units and memory bytes are percentages of (the rules in the module doc)."""
    cpu_basis = reserved_cpu if reserved_cpu > 0 else ONE_VCPU
    if reserved_memory_mib > 0:
        return cpu_basis, reserved_memory_mib * MIB
    return cpu_basis, u.memoryLimit if u.memoryLimit > 0 else node_memory_mib * MIB


def utilization(u: TaskUsage, reserved_cpu: int, reserved_memory_mib: int, node_memory_mib: int,
                at: float) -> Utilization:
    """ECS's CPUUtilization and MemoryUtilization of one task sample."""
    cpu_basis, mem_basis = bases(u, reserved_cpu, reserved_memory_mib, node_memory_mib)
    return Utilization(u.cpu, u.memory, round(100.0 * u.cpu / cpu_basis, 1),
                       round(100.0 * u.memory / mem_basis, 1) if mem_basis > 0 else 0.0, cpu_basis, mem_basis, at)


class UsageBook:
    """The latest task samples of every node, as received."""

    def __init__(self) -> None:
        self.by_node: dict[tuple[str, str], tuple[float, dict[str, TaskUsage]]] = {}

    def record(self, cluster: str, node_id: str, usage: list[TaskUsage] | None, now: float) -> None:
        """A snapshot's samples replace the node's; a snapshot without any (an old agent, or a
        runtime that does not sample) leaves nothing for the node."""
        if usage is None:
            self.by_node.pop((cluster, node_id), None)
            return
        self.by_node[(cluster, node_id)] = (now, {u.taskId: u for u in usage})

    def forget_node(self, cluster: str, node_id: str) -> None:
        self.by_node.pop((cluster, node_id), None)

    def fresh(self, node: Node | None, now: float) -> dict[str, TaskUsage] | None:
        if node is None:
            return None
        entry = self.by_node.get((node.cluster, node.nodeId))
        if entry is None or not node.connected or now - entry[0] > STALE_AFTER * node.statusInterval + 1.0:
            return None
        return entry[1]

    def task(self, t: Task, node: Node | None, now: float) -> Utilization | None:
        """The task's utilization from its node's latest snapshot (None: no fresh sample)."""
        if t.lastStatus == "STOPPED" or node is None or t.nodeId != node.nodeId:
            return None
        samples = self.fresh(node, now)
        u = samples.get(t.taskId) if samples else None
        if u is None:
            return None
        at = self.by_node[(node.cluster, node.nodeId)][0]
        return utilization(u, t.cpu, t.memory, node.resources.memory if node.resources else 0, at)


def average(utils: list[Utilization]) -> tuple[float, float] | None:
    """A service's CPUUtilization and MemoryUtilization: the average over its sampled tasks."""
    if not utils:
        return None
    return (round(sum(u.cpu_percent for u in utils) / len(utils), 1),
            round(sum(u.memory_percent for u in utils) / len(utils), 1))


def service_utilizations(book: UsageBook, state: State, cluster: str, service: str, now: float) -> list[Utilization]:
    """The utilization of each RUNNING task of the service that has a fresh sample."""
    out = []
    for t in state.service_active_tasks(cluster, service):
        if t.lastStatus == "RUNNING" and t.nodeId:
            u = book.task(t, state.nodes.get((cluster, t.nodeId)), now)
            if u is not None:
                out.append(u)
    return out

