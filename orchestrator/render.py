"""Text rendering for the `dockyard` CLI: tables, ages, describe pages.

Pure functions over the JSON objects the HTTP API returns (ECS field names); ``now`` is
always a parameter so output is deterministic in tests. Standard library only.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

NONE = "<none>"
COLUMN_GAP = "   "


# ---- primitives ---------------------------------------------------------------------------
def format_duration(seconds: float) -> str:
    """kubectl-style short duration: 45s, 3m20s, 42m, 5h12m, 20h, 3d4h, 12d, 2y45d."""
    s = int(max(0, seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 730:
        return f"{d}d"
    y = d // 365
    return f"{y}y{d % 365}d" if d % 365 else f"{y}y"


def to_epoch(ts: Any) -> float | None:
    """API timestamps are epoch seconds; ISO-8601 strings are accepted too."""
    if ts is None or ts == "" or isinstance(ts, bool):
        return None
    if isinstance(ts, (int, float)):
        return float(ts) if ts > 0 else None
    if isinstance(ts, str):
        try:
            return datetime.fromisoformat(ts).timestamp()
        except ValueError:
            return None
    return None


def age(ts: Any, now: float) -> str:
    t = to_epoch(ts)
    return NONE if t is None else format_duration(now - t)


def timestamp(ts: Any) -> str:
    """Local time with the offset, for describe pages: 2024-05-01 12:00:03 +0200."""
    t = to_epoch(ts)
    if t is None:
        return NONE
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def cell(v: Any) -> str:
    """A value as a table cell: None/empty -> <none>, booleans lowercase, no newlines."""
    if v is None or v == "" or v == []:
        return NONE
    if isinstance(v, bool):
        return "true" if v else "false"
    return " ".join(str(v).split())


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by three spaces, no trailing spaces (like kubectl)."""
    cells = [[cell(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in cells:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    lines = []
    for r in [list(headers)] + cells:
        line = COLUMN_GAP.join(c.ljust(widths[i]) for i, c in enumerate(r))
        lines.append(line.rstrip())
    return "\n".join(lines)


def short_id(task_id: Any) -> str:
    return str(task_id or "")[:12] or NONE


def truncate(text: Any, width: int = 60) -> str:
    s = cell(text)
    return s if len(s) <= width else s[: width - 3] + "..."


# ---- derived values -----------------------------------------------------------------------
def primary_deployment(service: dict[str, Any]) -> dict[str, Any] | None:
    deps = service.get("deployments") or []
    for d in deps:
        if d.get("status") == "PRIMARY":
            return d
    return deps[0] if deps else None


def service_taskdef(service: dict[str, Any]) -> str | None:
    primary = primary_deployment(service)
    return service.get("taskDefinition") or (primary or {}).get("taskDefinition") or (service.get("spec") or {}).get("taskDefinition")


def service_state(service: dict[str, Any]) -> str:
    """FAILING (tasks keep failing), STEADY, or DEPLOYING / BAKING while a deployment is in progress."""
    if service.get("failingReason"):
        return "FAILING"
    if service.get("steadyState"):
        return "STEADY"
    primary = primary_deployment(service) or {}
    if primary.get("rolloutState") == "IN_PROGRESS":
        return "BAKING" if primary.get("bakeStartedAt") is not None else "DEPLOYING"
    return "-"


def service_desired(service: dict[str, Any]) -> Any:
    spec = service.get("spec") or {}
    return spec.get("desiredCount", service.get("desiredCount"))


def taskdef_cpu_memory(td: dict[str, Any]) -> tuple[Any, Any]:
    """Reserved cpu units and MiB: task level if set, else the containers' sum (ECS rules)."""
    spec = td.get("spec") or td
    containers = spec.get("containerDefinitions") or []
    cpu = spec.get("cpu")
    if cpu is None:
        cpu = sum(int(c.get("cpu") or 0) for c in containers)
    mem = spec.get("memory")
    if mem is None:
        mem = sum(int(c.get("memoryReservation") or c.get("memory") or 0) for c in containers)
    return cpu, mem


def ports(bindings: Iterable[dict[str, Any]] | None) -> str:
    out = []
    for b in bindings or []:
        host = b.get("hostPort")
        ip = b.get("bindIP") or b.get("bindIp")
        prefix = f"{ip}:" if ip and ip not in ("0.0.0.0", "::") else ""
        out.append(f"{prefix}{host}->{b.get('containerPort')}/{b.get('protocol') or 'tcp'}")
    return ",".join(out)


def port_mappings(mappings: Iterable[dict[str, Any]] | None) -> str:
    """Task-definition ports: 8080->80/tcp, or 80/tcp when the host port is dynamic."""
    out = []
    for p in mappings or []:
        proto = p.get("protocol") or "tcp"
        host = p.get("hostPort")
        out.append(f"{host}->{p.get('containerPort')}/{proto}" if host else f"{p.get('containerPort')}/{proto}")
    return ",".join(out)


def task_ports(task: dict[str, Any]) -> str:
    return ",".join(p for p in (ports(c.get("networkBindings")) for c in task.get("containers") or []) if p)


def task_exit_codes(task: dict[str, Any]) -> str:
    cs = [c for c in task.get("containers") or [] if c.get("exitCode") is not None]
    if len(task.get("containers") or []) == 1 and cs:
        return str(cs[0]["exitCode"])
    return ",".join(f"{c.get('name')}={c['exitCode']}" for c in cs)


def task_reason(task: dict[str, Any]) -> str | None:
    return task.get("stoppedReason") or task.get("pendingReason")


def node_tasks(node: dict[str, Any]) -> Any:
    n = node.get("runningTasks", node.get("runningTasksCount"))
    return len(n) if isinstance(n, list) else n


def fraction(remaining: Any, total: Any) -> str:
    if remaining is None and total is None:
        return NONE
    return f"{cell(remaining)}/{cell(total)}"


# ---- get tables ---------------------------------------------------------------------------
KINDS = ("clusters", "taskdefinitions", "services", "tasks", "nodes")


def render_list(kind: str, items: list[dict[str, Any]], now: float, wide: bool = False) -> str:
    if not items:
        return ""
    return {
        "clusters": clusters_table,
        "taskdefinitions": taskdefinitions_table,
        "services": services_table,
        "tasks": tasks_table,
        "nodes": nodes_table,
        "deployments": deployments_table,
        "secrets": secrets_table,
    }[kind](items, now, wide)


def secrets_table(items: list[dict[str, Any]], now: float, wide: bool = False) -> str:
    """Names, versions and ages: the API never returns a value."""
    headers = ["NAME", "VERSION", "VERSIONS", "AGE", "UPDATED"]
    rows = [[s.get("name"), s.get("version"), len(s.get("versions") or []), age(s.get("createdAt"), now),
             age(s.get("updatedAt"), now)] for s in items]
    return table(headers, rows)


def clusters_table(items: list[dict[str, Any]], now: float, wide: bool = False) -> str:
    headers = ["NAME", "STATUS", "SERVICES", "TASKS", "NODES"] + (["AGE"] if wide else [])
    rows = []
    for c in items:
        row = [
            c.get("clusterName"),
            c.get("status"),
            c.get("activeServicesCount"),
            c.get("runningTasksCount"),
            c.get("registeredContainerInstancesCount"),
        ]
        if wide:
            row.append(age(c.get("createdAt"), now))
        rows.append(row)
    return table(headers, rows)


def taskdefinitions_table(items: list[dict[str, Any]], now: float, wide: bool = False) -> str:
    headers = ["FAMILY", "REVISION", "STATUS", "CONTAINERS", "CPU", "MEMORY", "AGE"]
    if wide:
        headers.append("IMAGES")
    rows = []
    for td in items:
        spec = td.get("spec") or {}
        containers = spec.get("containerDefinitions") or []
        cpu, mem = taskdef_cpu_memory(td)
        row = [
            td.get("family") or spec.get("family"),
            td.get("revision"),
            td.get("status"),
            ",".join(str(c.get("name")) for c in containers),
            cpu,
            mem,
            age(td.get("registeredAt"), now),
        ]
        if wide:
            row.append(",".join(str(c.get("image")) for c in containers))
        rows.append(row)
    return table(headers, rows)


def services_table(items: list[dict[str, Any]], now: float, wide: bool = False) -> str:
    headers = ["NAME", "TASKDEF", "DESIRED", "RUNNING", "PENDING", "ROLLOUT", "AGE", "STATE"]
    if wide:
        headers += ["LAUNCH", "STRATEGY", "STATUS"]
    rows = []
    for s in items:
        spec = s.get("spec") or {}
        primary = primary_deployment(s) or {}
        row = [
            s.get("serviceName"),
            service_taskdef(s),
            service_desired(s),
            s.get("runningCount"),
            s.get("pendingCount"),
            primary.get("rolloutState"),
            age(s.get("createdAt"), now),
            service_state(s),
        ]
        if wide:
            row += [spec.get("launchType"), spec.get("schedulingStrategy"), s.get("status")]
        rows.append(row)
    return table(headers, rows)


def tasks_table(items: list[dict[str, Any]], now: float, wide: bool = False) -> str:
    headers = ["TASK", "TASKDEF", "SERVICE", "NODE", "LAST", "DESIRED", "HEALTH", "AGE"]
    if wide:
        headers += ["STOPCODE", "REASON", "EXIT", "PORTS"]
    rows = []
    for t in items:
        row = [
            short_id(t.get("taskId")),
            t.get("taskDefinition"),
            t.get("serviceName"),
            t.get("nodeId"),
            t.get("lastStatus"),
            t.get("desiredStatus"),
            t.get("healthStatus"),
            age(t.get("createdAt"), now),
        ]
        if wide:
            row += [t.get("stopCode"), truncate(task_reason(t), 50), task_exit_codes(t), task_ports(t)]
        rows.append(row)
    return table(headers, rows)


def nodes_table(items: list[dict[str, Any]], now: float, wide: bool = False) -> str:
    headers = ["NODE", "STATUS", "CONNECTED", "CPU", "MEMORY", "TASKS", "AGE"]
    if wide:
        headers += ["LAST-SEEN", "AGENT", "ATTRIBUTES"]
    refused = any(n.get("refusedReason") for n in items)
    if refused:
        headers.append("REASON")
    rows = []
    for n in items:
        res = n.get("resources") or {}
        rem = n.get("remaining") or n.get("remainingResources") or {}
        row = [
            n.get("nodeId"),
            "REFUSED" if n.get("refusedReason") else n.get("status"),
            n.get("connected"),
            fraction(rem.get("cpu"), res.get("cpu")),
            fraction(rem.get("memory"), res.get("memory")),
            node_tasks(n),
            age(n.get("registeredAt"), now),
        ]
        if wide:
            attrs = n.get("attributes") or {}
            row += [
                age(n.get("lastSeenAt"), now),
                n.get("agentVersion"),
                ",".join(f"{k}={v}" for k, v in sorted(attrs.items())),
            ]
        if refused:
            row.append(n.get("refusedReason"))
        rows.append(row)
    return table(headers, rows)


def deployments_table(items: list[dict[str, Any]], now: float, wide: bool = True) -> str:
    headers = ["ID", "STATUS", "TASKDEF", "DESIRED", "PENDING", "RUNNING", "FAILED", "ROLLOUT", "AGE", "REASON"]
    rows = []
    for d in items:
        reason = d.get("rolloutStateReason")
        if d.get("isRollback"):
            reason = f"(rollback) {reason or ''}".strip()
        rows.append([
            d.get("id"),
            d.get("status"),
            d.get("taskDefinition"),
            d.get("desiredCount"),
            d.get("pendingCount"),
            d.get("runningCount"),
            d.get("failedTasks"),
            d.get("rolloutState"),
            age(d.get("createdAt"), now),
            truncate(reason, 70),
        ])
    return table(headers, rows)


def events_table(events: list[dict[str, Any]], now: float, limit: int = 20) -> str:
    """Service events, newest first."""
    ordered = sorted(events, key=lambda e: to_epoch(e.get("createdAt")) or 0, reverse=True)[:limit]
    rows = []
    for e in ordered:
        msg = e.get("message")
        if (e.get("count") or 1) > 1:
            msg = f"{msg} (x{e['count']})"
        rows.append([age(e.get("createdAt"), now), msg])
    return table(["AGE", "MESSAGE"], rows)


# ---- describe pages -----------------------------------------------------------------------
def fields(pairs: Sequence[tuple[str, Any]], indent: str = "") -> str:
    width = max((len(k) for k, _ in pairs), default=0) + 1
    return "\n".join(f"{indent}{(k + ':').ljust(width)}  {cell(v)}" for k, v in pairs)


def section(title: str, body: str) -> str:
    if not body:
        return f"{title}:\n  {NONE}"
    return f"{title}:\n" + "\n".join(("  " + line) if line else line for line in body.splitlines())


def bake_text(dc: dict[str, Any]) -> str:
    if dc.get("bakeTimeSeconds") is not None:
        return f"{dc['bakeTimeSeconds']}s"
    if dc.get("bakeTimeInMinutes") is not None:
        return f"{dc['bakeTimeInMinutes']}min"
    return f"{dc.get('minimumHealthyTimeSeconds', 10)}s (the proof time)"


def describe_service(service: dict[str, Any], tasks: list[dict[str, Any]] | None, now: float) -> str:
    spec = service.get("spec") or {}
    dc = spec.get("deploymentConfiguration") or {}
    cb = dc.get("deploymentCircuitBreaker") or {}
    constraints = ", ".join(
        c.get("type", "") + (f" {c['expression']}" if c.get("expression") else "") for c in spec.get("placementConstraints") or []
    )
    strategy = ", ".join(
        s.get("type", "") + (f"({s['field']})" if s.get("field") else "") for s in spec.get("placementStrategy") or []
    )
    head = fields([
        ("Name", service.get("serviceName")),
        ("Cluster", service.get("cluster")),
        ("Status", service.get("status")),
        ("Task definition", f"{spec.get('taskDefinition')} (running {service_taskdef(service)})"),
        ("Desired", service_desired(service)),
        ("Running", service.get("runningCount")),
        ("Pending", service.get("pendingCount")),
        ("Launch type", spec.get("launchType")),
        ("Scheduling", spec.get("schedulingStrategy")),
        ("Deployment", (f"maximumPercent {dc.get('maximumPercent', 200)}, minimumHealthyPercent {dc.get('minimumHealthyPercent', 100)}, "
         f"circuit breaker {'on' if cb.get('enable') else 'off'}{' with rollback' if cb.get('rollback') else ''}")),
        ("Proof", (f"healthy for {dc.get('minimumHealthyTimeSeconds', 10)}s, bake {bake_text(dc)}, "
         f"progress deadline {dc.get('progressDeadlineSeconds', 600) or 'none'}{'s' if dc.get('progressDeadlineSeconds', 600) else ''}")),
        ("State", service_state(service) + (f": {service['failingReason']}" if service.get("failingReason") else "")),
        ("Placement", "; ".join(p for p in (constraints, strategy) if p) or None),
        ("Health grace", f"{spec.get('healthCheckGracePeriodSeconds', 0)}s"),
        ("Generation", f"{service.get('generation')} (observed {service.get('observedGeneration')})"),
        ("Created", f"{timestamp(service.get('createdAt'))} ({age(service.get('createdAt'), now)} ago)"),
    ])
    parts = [head]
    if service.get("ignoredFields"):
        parts.append(fields([("Ignored fields", ", ".join(service["ignoredFields"]))]))
    parts.append(section("Deployments", deployments_table(service.get("deployments") or [], now)
                         if service.get("deployments") else ""))
    if service.get("autoScaling"):
        from orchestrator.render_autoscaling import describe as autoscaling

        parts.append(section("Auto scaling", autoscaling(service["autoScaling"], now)))
    if tasks is not None:
        parts.append(section("Tasks", tasks_table(tasks, now) if tasks else ""))
    parts.append(section("Events", events_table(service.get("events") or [], now) if service.get("events") else ""))
    return "\n\n".join(parts)


def describe_task(task: dict[str, Any], now: float) -> str:
    head = fields([
        ("Task", task.get("taskId")),
        ("Cluster", task.get("cluster")),
        ("Task definition", task.get("taskDefinition")),
        ("Service", task.get("serviceName")),
        ("Started by", task.get("startedBy")),
        ("Launch type", task.get("launchType")),
        ("Node", task.get("nodeId")),
        ("IP address", task.get("ipAddress")),
        ("Desired status", task.get("desiredStatus")),
        ("Last status", task.get("lastStatus")),
        ("Health", task.get("healthStatus")),
        ("Pending reason", task.get("pendingReason")),
        ("Stop code", task.get("stopCode")),
        ("Stopped reason", task.get("stoppedReason")),
        ("Pull error", task.get("pullError")),
        ("Created", timestamp(task.get("createdAt"))),
        ("Started", timestamp(task.get("startedAt"))),
        ("Stopped", timestamp(task.get("stoppedAt"))),
        ("Age", age(task.get("createdAt"), now)),
    ])
    rows = [
        [c.get("name"), c.get("image"), c.get("lastStatus"), c.get("healthStatus"), c.get("exitCode"),
         c.get("restartCount") or 0, truncate(c.get("reason"), 50), ports(c.get("networkBindings")),
         (c.get("dockerId") or "")[:12]]
        for c in task.get("containers") or []
    ]
    head_row = ["NAME", "IMAGE", "STATUS", "HEALTH", "EXIT", "RESTARTS", "REASON", "PORTS", "DOCKER-ID"]
    containers = table(head_row, rows) if rows else ""
    return head + "\n\n" + section("Containers", containers)


def describe_node(node: dict[str, Any], tasks: list[dict[str, Any]] | None, now: float) -> str:
    res = node.get("resources") or {}
    rem = node.get("remaining") or node.get("remainingResources") or {}
    attrs = node.get("attributes") or {}
    head = fields([
        ("Node", node.get("nodeId")),
        ("Cluster", node.get("cluster")),
        ("Status", node.get("status")),
        ("Connected", node.get("connected")),
        ("Agent version", node.get("agentVersion")),
        ("Wire protocol", node.get("protocolVersion")),
        *([("Refused", node["refusedReason"])] if node.get("refusedReason") else []),
        ("Runtime", node.get("runtime")),
        ("Launch types", ", ".join(node.get("capacityProviders") or []) or None),
        ("CPU", f"{cell(rem.get('cpu'))} of {cell(res.get('cpu'))} units free"),
        ("Memory", f"{cell(rem.get('memory'))} of {cell(res.get('memory'))} MiB free"),
        ("Running tasks", node_tasks(node)),
        ("Registered", timestamp(node.get("registeredAt"))),
        ("Last seen", f"{timestamp(node.get('lastSeenAt'))} ({age(node.get('lastSeenAt'), now)} ago)"),
        ("Generation", f"{node.get('generation')} (observed {node.get('observedGeneration')})"),
    ])
    parts = [head, section("Attributes", fields(sorted(attrs.items())) if attrs else "")]
    if tasks is not None:
        parts.append(section("Tasks", tasks_table(tasks, now) if tasks else ""))
    return "\n\n".join(parts)


def describe_taskdefinition(td: dict[str, Any], now: float) -> str:
    spec = td.get("spec") or {}
    cpu, mem = taskdef_cpu_memory(td)
    head = fields([
        ("Task definition", f"{td.get('family')}:{td.get('revision')}"),
        ("Status", td.get("status")),
        ("Registered", f"{timestamp(td.get('registeredAt'))} ({age(td.get('registeredAt'), now)} ago)"),
        ("CPU", f"{cpu} units" + (" (task level)" if spec.get("cpu") is not None else "")),
        ("Memory", f"{mem} MiB" + (" (task level)" if spec.get("memory") is not None else "")),
        ("Network mode", spec.get("networkMode")),
        ("Compatibilities", ", ".join(spec.get("requiresCompatibilities") or []) or None),
        ("Spec hash", td.get("specHash")),
        ("Ignored fields", ", ".join(td.get("ignoredFields") or []) or None),
    ])
    rows = []
    for c in spec.get("containerDefinitions") or []:
        hc = c.get("healthCheck") or {}
        rows.append([
            c.get("name"),
            c.get("image"),
            c.get("essential", True),
            c.get("cpu") or 0,
            "/".join(str(x) for x in (c.get("memoryReservation"), c.get("memory")) if x) or None,
            port_mappings(c.get("portMappings")),
            truncate(" ".join(hc.get("command") or []), 40) if hc else None,
            truncate(" ".join(c.get("command") or []), 40),
        ])
    containers = table(["NAME", "IMAGE", "ESSENTIAL", "CPU", "MEMORY", "PORTS", "HEALTHCHECK", "COMMAND"], rows) if rows else ""
    return head + "\n\n" + section("Containers", containers)


def describe_cluster(cluster: dict[str, Any], now: float) -> str:
    return fields([
        ("Cluster", cluster.get("clusterName")),
        ("Status", cluster.get("status")),
        ("Active services", cluster.get("activeServicesCount")),
        ("Running tasks", cluster.get("runningTasksCount")),
        ("Pending tasks", cluster.get("pendingTasksCount")),
        ("Nodes", cluster.get("registeredContainerInstancesCount")),
        ("Created", f"{timestamp(cluster.get('createdAt'))} ({age(cluster.get('createdAt'), now)} ago)"),
    ])


# ---- machine formats ----------------------------------------------------------------------
def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)


def to_yaml(obj: Any) -> str:
    import yaml  # the only non-stdlib import, deferred

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(obj, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip("\n")
