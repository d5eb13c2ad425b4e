"""The load-balancer target lifecycle (ECS's, tightened), pure:

    task RUNNING ------------------> target "active" on every LB node serving its target groups
    healthy for a deployment only when every such LB node reports it healthy (target_health)
    stop asked (any reason) -------> DEACTIVATING: target "draining"; the task's node keeps it running
    every serving LB node reports it draining with 0 sessions, or deregistrationDelay passed
                    ---------------> released (drain_released): STOPPING, SIGTERM; target removed
    container died / node lost ----> not RUNNING: removed from every LB document at once

Inputs are records and the LB nodes' reports; outputs are documents and decisions. The
controller gathers the inputs and applies the results.

The reports live in the orchestrator's memory: a restarted orchestrator knows none until the LB
nodes report again. Meanwhile the view is *pending* (view_pending) and nothing is decided on the
missing reports: a target keeps its last known health (its persisted healthySince) and a drain
lasts its deregistrationDelay, so a deployment in flight cannot stop every serving target at once.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dockyard.lb import (
    LbDesired,
    LbListener,
    LbRoute,
    LbTarget,
    LbTargetGroup,
    LoadBalancerSpec,
    ServiceLoadBalancer,
    TargetGroupSpec,
    TargetReport,
)
from orchestrator.core import query
from orchestrator.models import Node, Task

NodeKey = tuple[str, str]  # (cluster, node id)


@dataclass(frozen=True)
class TargetRef:
    target_group: str
    target: LbTarget


def target_id(task_id: str, container_port: int) -> str:
    """The HAProxy server name of a task's target (unique per target group)."""
    return f"{task_id}_{container_port}"


def is_target_state(t: Task) -> str | None:
    """"active" for a RUNNING task, "draining" while DEACTIVATING, None otherwise (not a target)."""
    if t.lastStatus == "RUNNING" and t.desiredStatus == "RUNNING":
        return "active"
    if t.lastStatus == "DEACTIVATING":
        return "draining"
    return None


def task_targets(t: Task, lbs: Sequence[ServiceLoadBalancer], node: Node | None, host_network: bool) -> list[TargetRef]:
    """The targets ``t`` registers: the node's address and the task's host port for each entry."""
    state = is_target_state(t)
    if state is None or node is None or not node.address:
        return []
    out = []
    for lb in lbs:
        c = next((c for c in t.containers if c.name == lb.containerName), None)
        if c is None:
            continue
        port = next((b.get("hostPort") for b in c.networkBindings
                     if b.get("containerPort") == lb.containerPort and b.get("protocol", "tcp") == "tcp"),
                    lb.containerPort if host_network else None)
        if not port:
            continue
        out.append(TargetRef(lb.target_group, LbTarget(id=target_id(t.taskId, lb.containerPort), taskId=t.taskId,
                                                        address=node.address, port=port, state=state)))  # type: ignore[arg-type]
    return out


def serves(lb: LoadBalancerSpec, node: Node) -> bool:
    """Whether ``node`` runs ``lb``: a --load-balancer node, narrowed by the LB's nodes expression."""
    if not node.loadBalancer:
        return False
    if not lb.nodes:
        return True
    try:
        return query.evaluate(query.parse(lb.nodes), node.nodeId, node.attributes)
    except query.QueryError:
        return False


def lb_document(node: Node, lbs: Iterable[LoadBalancerSpec], tgs: Mapping[str, TargetGroupSpec],
                targets: Mapping[str, Sequence[LbTarget]]) -> LbDesired:
    """What LB node ``node`` must serve: the listeners of the load balancers it runs and their
    target groups with their targets (``targets``: target group -> targets)."""
    listeners: list[LbListener] = []
    used: set[str] = set()
    for lb in sorted((x for x in lbs if serves(x, node)), key=lambda x: x.name):
        for ls in lb.listeners:
            routes = []
            for rule in sorted(ls.rules, key=lambda r: r.priority):
                hosts = [v for c in rule.conditions if c.field == "host-header" for v in c.values]
                paths = [v for c in rule.conditions if c.field == "path-pattern" for v in c.values]
                routes.append(LbRoute(priority=rule.priority, hosts=hosts, paths=paths, forward=rule.actions[0].targets()))
            default = ls.defaultActions[0].targets()
            listeners.append(LbListener(loadBalancer=lb.name, port=ls.port, protocol=ls.protocol, routes=routes, default=default))
            used.update(name for r in routes for name, _ in r.forward)
            used.update(name for name, _ in default)
    groups = [LbTargetGroup(name=name, protocol=tgs[name].protocol, healthCheck=tgs[name].healthCheck,
                            slowStart=tgs[name].slowStart, targets=sorted(targets.get(name, ()), key=lambda x: x.id))
              for name in sorted(used) if name in tgs]
    return LbDesired(listeners=sorted(listeners, key=lambda x: x.port), targetGroups=groups)


def serving_nodes(lbs: Iterable[LoadBalancerSpec], nodes: Iterable[Node]) -> dict[str, list[str]]:
    """Target group -> the connected LB nodes that serve it (through any listener)."""
    out: dict[str, list[str]] = {}
    nodes = [n for n in nodes if n.loadBalancer and n.connected]
    for lb in lbs:
        names = {name for ls in lb.listeners for a in [*ls.defaultActions, *(r.actions[0] for r in ls.rules)]
                 for name, _ in a.targets()}
        for n in nodes:
            if serves(lb, n):
                for name in names:
                    if n.nodeId not in out.setdefault(name, []):
                        out[name].append(n.nodeId)
    return out


Reports = Mapping[str, Mapping[tuple[str, str], TargetReport]]  # LB node id -> (target group, task id) -> report


def target_health(task_id: str, groups: Iterable[str], serving: Mapping[str, Sequence[str]], reports: Reports) -> str:
    """HEALTHY when every serving LB node reports the task healthy in every one of its target
    groups; UNHEALTHY when any reports it unhealthy; UNKNOWN otherwise (initial, not yet added,
    or no LB node serves a group: nothing has confirmed it takes traffic)."""
    states = []
    for tg in groups:
        nodes = serving.get(tg, ())
        if not nodes:
            return "UNKNOWN"
        for n in nodes:
            r = reports.get(n, {}).get((tg, task_id))
            states.append(r.health if r else "initial")
    if "unhealthy" in states:
        return "UNHEALTHY"
    return "HEALTHY" if states and all(s == "healthy" for s in states) else "UNKNOWN"


def view_pending(lb_nodes: Iterable[tuple[str, bool]], reported: Iterable[str], now: float,
                 session_since: float | None, window: float) -> bool:
    """True while an LB node's report may still come: one of ``lb_nodes`` ((node id, connected))
    has not reported since the orchestrator started (``reported``), and it is connected, or the
    broker session (``session_since``; None: none yet) is younger than the reconnect ``window``."""
    have = set(reported)
    return any(node_id not in have and (connected or session_since is None or now - session_since < window)
               for node_id, connected in lb_nodes)


def last_known_health(t: Task) -> str:
    """A target's health while the view is pending: what the orchestrator last saw (persisted)."""
    return "HEALTHY" if t.lastStatus == "RUNNING" and t.healthySince is not None else "UNKNOWN"


def drain_released(t: Task, groups: Iterable[str], tgs: Mapping[str, TargetGroupSpec],
                   serving: Mapping[str, Sequence[str]], reports: Reports, now: float,
                   pending: bool = False) -> bool:
    """A DEACTIVATING task may get its SIGTERM: every serving LB node shows it draining with no
    sessions (or does not have it at all), or the longest deregistrationDelay of its groups passed.
    While the view is ``pending`` (view_pending) only the delay counts."""
    groups = list(groups)
    since = t.drainingSince if t.drainingSince is not None else now
    delay = max((tgs[g].deregistrationDelay for g in groups if g in tgs), default=0)
    if now - since >= delay:
        return True
    if pending:
        return False
    for tg in groups:
        for n in serving.get(tg, ()):
            r = reports.get(n, {}).get((tg, t.taskId))
            if r is not None and (r.health != "draining" or r.sessions > 0):
                return False
    return True


def drain_deadline(t: Task, groups: Iterable[str], tgs: Mapping[str, TargetGroupSpec]) -> float | None:
    if t.drainingSince is None:
        return None
    return t.drainingSince + max((tgs[g].deregistrationDelay for g in groups if g in tgs), default=0)
