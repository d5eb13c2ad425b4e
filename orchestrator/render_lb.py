"""Text views of target groups and load balancers for `dockyard get|describe` (pure)."""
from __future__ import annotations

from typing import Any

from orchestrator.render import age, fields, section, table


def _health_cell(t: dict[str, Any]) -> str:
    states = {h.get("state") for h in (t.get("health") or {}).values()}
    if not states:
        return "unused"
    return "/".join(sorted(str(s) for s in states))


def targetgroups_table(items: list[dict[str, Any]], now: float, wide: bool = False) -> str:
    headers = ["NAME", "PROTOCOL", "HEALTH-CHECK", "DEREGISTRATION-DELAY", "SERVICES", "LB-NODES", "AGE"]
    rows = []
    for tg in items:
        hc = tg.get("healthCheck") or {}
        check = f"{hc.get('protocol') or tg.get('protocol')} {hc.get('path') if (hc.get('protocol') or tg.get('protocol')) == 'HTTP' else ''}".strip()
        rows.append([tg.get("name"), tg.get("protocol"), f"{check} every {hc.get('intervalSeconds')}s",
                     f"{tg.get('deregistrationDelay')}s", ",".join(tg.get("services") or []),
                     ",".join(tg.get("loadBalancerNodes") or []), age(tg.get("createdAt"), now)])
    return table(headers, rows)


def loadbalancers_table(items: list[dict[str, Any]], now: float, wide: bool = False) -> str:
    headers = ["NAME", "LISTENERS", "NODES", "AGE"]
    rows = []
    for lb in items:
        listeners = ",".join(f"{ls.get('port')}/{ls.get('protocol')}" for ls in lb.get("listeners") or [])
        nodes = ",".join(f"{n.get('nodeId')}({n.get('address') or '?'}{'' if n.get('haproxyRunning') else ', down'})"
                         for n in lb.get("nodes") or [])
        rows.append([lb.get("name"), listeners, nodes, age(lb.get("createdAt"), now)])
    return table(headers, rows)


def describe_targetgroup(tg: dict[str, Any], now: float) -> str:
    hc = tg.get("healthCheck") or {}
    head = fields([
        ("Name", tg.get("name")), ("Cluster", tg.get("cluster")), ("Protocol", tg.get("protocol")),
        ("Health check", f"{hc.get('protocol') or tg.get('protocol')} {hc.get('path')} port {hc.get('port')} every "
                         f"{hc.get('intervalSeconds')}s, timeout {hc.get('timeoutSeconds')}s, healthy after "
                         f"{hc.get('healthyThresholdCount')}, unhealthy after {hc.get('unhealthyThresholdCount')}, "
                         f"matcher {(hc.get('matcher') or {}).get('httpCode')}"),
        ("Deregistration delay", f"{tg.get('deregistrationDelay')}s"), ("Slow start", f"{tg.get('slowStart')}s"),
        ("Services", ", ".join(tg.get("services") or []) or None),
        ("Load balancer nodes", ", ".join(tg.get("loadBalancerNodes") or []) or None),
        ("Age", age(tg.get("createdAt"), now)),
    ])
    rows = []
    for t in tg.get("targets") or []:
        health = t.get("health") or {}
        if not health:
            rows.append([t.get("id"), t.get("taskId", "")[:12], t.get("nodeId"), f"{t.get('address')}:{t.get('port')}",
                         "-", "unused", "Target.NotInUse", 0])
        for lb_node, h in sorted(health.items()):
            rows.append([t.get("id"), t.get("taskId", "")[:12], t.get("nodeId"), f"{t.get('address')}:{t.get('port')}",
                         lb_node, h.get("state"), h.get("reason"), h.get("sessions")])
    targets = table(["TARGET", "TASK", "NODE", "ADDRESS", "LB-NODE", "HEALTH", "REASON", "SESSIONS"], rows) if rows else ""
    return head + "\n" + section("Targets", targets)
