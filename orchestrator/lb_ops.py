"""Checks across load-balancer documents at apply: a service's loadBalancers name a target group
that exists and a container port its task definition has; a listener forwards to target groups
of its own protocol; listener ports are unique among the cluster's load balancers.

Pure over the documents and lookups into current state; every problem comes back at once as a
DocError with the field path, so an apply either changes nothing or passes all of them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from dockyard.ecs import TaskDefinitionSpec
from dockyard.lb import LoadBalancerSpec, TargetGroupSpec
from orchestrator.core.query import QueryError, parse
from orchestrator.manifests import Doc, DocError


def lb_errors(docs: Sequence[Doc], target_groups: Callable[[str], dict[str, TargetGroupSpec]],
              load_balancers: Callable[[str], dict[str, LoadBalancerSpec]],
              td_spec: Callable[[str, Sequence[Doc]], TaskDefinitionSpec | None]) -> list[DocError]:
    """``target_groups(cluster)`` / ``load_balancers(cluster)``: the stored ones by name;
    ``td_spec(ref, docs)``: a task definition by reference, from state or this apply."""
    errors: list[DocError] = []
    applied_tgs: dict[str, dict[str, TargetGroupSpec]] = {}
    applied_lbs: dict[str, dict[str, LoadBalancerSpec]] = {}
    for d in docs:
        if d.kind == "TargetGroup":
            applied_tgs.setdefault(d.cluster, {})[d.name] = d.spec
        elif d.kind == "LoadBalancer":
            applied_lbs.setdefault(d.cluster, {})[d.name] = d.spec

    def tgs(cluster: str) -> dict[str, TargetGroupSpec]:
        return {**target_groups(cluster), **applied_tgs.get(cluster, {})}

    for d in docs:
        if d.kind == "LoadBalancer":
            errors += _listener_errors(d, tgs(d.cluster), {**load_balancers(d.cluster), **applied_lbs.get(d.cluster, {})})
        elif d.kind == "Service" and d.spec.loadBalancers:
            td = td_spec(d.spec.taskDefinition, docs)
            for i, lb in enumerate(d.spec.loadBalancers):
                errors += _service_lb_errors(d, i, lb, tgs(d.cluster), td)
    return errors


def _listener_errors(d: Doc, tgs: dict[str, TargetGroupSpec], lbs: dict[str, LoadBalancerSpec]) -> list[DocError]:
    assert d.kind == "LoadBalancer"
    errors: list[DocError] = []

    def err(path: str, msg: str, hint: str = "") -> None:
        errors.append(DocError(d.source, msg, f"spec.{path}", d.kind, d.name, hint))

    spec = d.spec
    if spec.nodes:
        try:
            parse(spec.nodes)
        except QueryError as e:
            err("nodes", f"not a memberOf expression: {e}", 'e.g. "attribute:zone == a"')
    seen: dict[int, int] = {}
    for i, ls in enumerate(spec.listeners):
        if ls.port in seen:
            err(f"listeners[{i}].port", f"port {ls.port} is used by listeners[{seen[ls.port]}] too", "one listener per port")
        seen.setdefault(ls.port, i)
        for other, ospec in sorted(lbs.items()):
            if other != d.name and any(o.port == ls.port for o in ospec.listeners):
                err(f"listeners[{i}].port", f"port {ls.port} is already a listener of load balancer {other!r} "
                    "in this cluster", "choose another port, or narrow the two with nodes: expressions on distinct nodes")
        priorities: dict[int, int] = {}
        actions = [(f"listeners[{i}].defaultActions[0]", ls.defaultActions[0])]
        for j, rule in enumerate(ls.rules):
            if rule.priority in priorities:
                err(f"listeners[{i}].rules[{j}].priority", f"priority {rule.priority} is used by rules[{priorities[rule.priority]}]")
            priorities.setdefault(rule.priority, j)
            actions.append((f"listeners[{i}].rules[{j}].actions[0]", rule.actions[0]))
            if ls.protocol == "TCP":
                err(f"listeners[{i}].rules[{j}]", "rules need an HTTP listener (TCP listeners forward only)",
                    "remove the rules or use protocol: HTTP")
        for path, action in actions:
            targets = action.targets()
            if sum(w for _, w in targets) == 0:
                err(path, "the weights of a forward action must not all be 0")
            for k, (name, _) in enumerate(targets):
                tg = tgs.get(name)
                where = path + (f".forwardConfig.targetGroups[{k}]" if action.forwardConfig else ".targetGroupName")
                if tg is None:
                    known = ", ".join(sorted(tgs)) or "none exist"
                    err(where, f"unknown target group {name!r} (target groups: {known})",
                        "apply the TargetGroup first or in the same apply")
                elif tg.protocol != ls.protocol:
                    err(where, f"target group {name!r} is {tg.protocol} but listener port {ls.port} is {ls.protocol}",
                        "a listener forwards only to target groups of its own protocol")
    return errors


def _service_lb_errors(d: Doc, i: int, lb, tgs: dict[str, TargetGroupSpec], td: TaskDefinitionSpec | None) -> list[DocError]:
    assert d.kind == "Service"
    errors: list[DocError] = []
    base = f"spec.loadBalancers[{i}]"

    def err(path: str, msg: str, hint: str = "") -> None:
        errors.append(DocError(d.source, msg, f"{base}{path}", d.kind, d.name, hint))

    if lb.loadBalancerName:
        err(".loadBalancerName", "classic load balancers are not supported", "use targetGroupName (or targetGroupArn)")
        return errors
    if not lb.target_group:
        err(".targetGroupName", "name the target group: targetGroupName or targetGroupArn", "")
    elif lb.target_group not in tgs:
        err(".targetGroupName" if lb.targetGroupName else ".targetGroupArn",
            f"unknown target group {lb.target_group!r} (target groups: {', '.join(sorted(tgs)) or 'none exist'})",
            "apply the TargetGroup first or in the same apply")
    if d.spec.launchType == "FARGATE" or (td is not None and (td.networkMode == "awsvpc" or td.is_fargate)):
        err("", "tasks with their own network (FARGATE / awsvpc) are reachable only on their node, not from "
            "load-balancer nodes", "use networkMode bridge or host with launchType EC2 for a service behind a target group")
    if td is not None:
        c = next((c for c in td.containerDefinitions if c.name == lb.containerName), None)
        if c is None:
            err(".containerName", f"task definition {td.family} has no container {lb.containerName!r} "
                f"(containers: {', '.join(x.name for x in td.containerDefinitions)})")
        elif not any(pm.containerPort == lb.containerPort and pm.protocol == "tcp" for pm in c.portMappings):
            ports = ", ".join(str(pm.containerPort) for pm in c.portMappings) or "none"
            err(".containerPort", f"container {c.name!r} has no tcp portMapping for containerPort {lb.containerPort} "
                f"(its ports: {ports})", "add it to the container's portMappings")
    return errors
