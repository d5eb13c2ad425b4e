"""API views of target groups and load balancers: the specs plus what the LB nodes report."""
from __future__ import annotations

from typing import Any

from orchestrator.core import targets as core
from orchestrator.models import LoadBalancer, TargetGroup


def target_group_view(ctl: Any, tg: TargetGroup, targets: bool = False) -> dict[str, Any]:
    """``targets``: each registered target with its task, node, and per LB node health and sessions."""
    out: dict[str, Any] = {**tg.spec.model_dump(mode="json"), "cluster": tg.cluster, "createdAt": tg.createdAt}
    st = ctl.state
    lbs = [lb.spec for (c, _), lb in st.load_balancers.items() if c == tg.cluster]
    serving = core.serving_nodes(lbs, [n for (c, _), n in st.nodes.items() if c == tg.cluster]).get(tg.name, [])
    out["loadBalancerNodes"] = serving
    services = [s.serviceName for (c, _), s in sorted(st.services.items())
                if c == tg.cluster and any(x.target_group == tg.name for x in s.spec.loadBalancers)]
    out["services"] = services
    if not targets:
        return out
    rows = []
    for name in services:
        s = st.services[(tg.cluster, name)]
        lbs_of = [x for x in s.spec.loadBalancers if x.target_group == tg.name]
        for t in st.service_active_tasks(tg.cluster, name):
            node = st.nodes.get((t.cluster, t.nodeId or ""))
            td = st.resolve_taskdef(t.taskDefinition)
            refs = core.task_targets(t, lbs_of, node, td is not None and td.spec.networkMode == "host")
            for ref in refs:
                health = {}
                for lb_node in serving:
                    r = ctl.targets.reports.get((tg.cluster, lb_node), {}).get((tg.name, t.taskId))
                    health[lb_node] = ({"state": r.health, "reason": r.reason, "sessions": r.sessions} if r
                                       else {"state": "initial", "reason": "Elb.RegistrationInProgress", "sessions": 0})
                rows.append({"id": ref.target.id, "taskId": t.taskId, "nodeId": t.nodeId, "address": ref.target.address,
                             "port": ref.target.port, "lastStatus": t.lastStatus, "registration": ref.target.state,
                             "health": health})
    out["targets"] = rows
    return out


def load_balancer_view(ctl: Any, lb: LoadBalancer) -> dict[str, Any]:
    st = ctl.state
    nodes = [n for (c, _), n in sorted(st.nodes.items()) if c == lb.cluster and core.serves(lb.spec, n)]
    listeners: dict[str, list[dict[str, Any]]] = {}
    for n in nodes:
        status = ctl.targets.status.get((lb.cluster, n.nodeId))
        for ls in (status.listeners if status else []):
            listeners.setdefault(n.nodeId, []).append(ls.model_dump())
    return {**lb.spec.model_dump(mode="json"), "cluster": lb.cluster, "createdAt": lb.createdAt,
            "nodes": [{"nodeId": n.nodeId, "address": n.address, "connected": n.connected,
                       "haproxyRunning": bool((s := ctl.targets.status.get((lb.cluster, n.nodeId))) and s.running),
                       "listeners": listeners.get(n.nodeId, [])} for n in nodes]}
