"""Prometheus HTTP service discovery: what to scrape in every cluster, always the full list.

Target groups (https://prometheus.io/docs/prometheus/latest/http_sd/), one per target:

* the orchestrator itself (``__meta_dockyard_job="orchestrator"``);
* every node's agent that serves /metrics (``--metrics-listen``, advertised in presence): ``agent``;
* every container of a RUNNING task whose definition sets the docker label
  ``PROMETHEUS_EXPORTER_PORT`` (the container port; optional ``PROMETHEUS_EXPORTER_PATH``, default
  /metrics, and ``PROMETHEUS_EXPORTER_SCHEME``, default http), as prometheus-ecs-discovery reads
  them: ``task``. The target is the node's address and the host port bound to that container port
  (the task's own address for awsvpc tasks).

Labels are ``__meta_dockyard_*`` (cluster, service, task, family, revision, container, node, job),
so they are dropped unless relabeled (deploy/prometheus.yml maps them), plus ``__metrics_path__``
and ``__scheme__``. Pure: reads the state, changes nothing.
"""
from __future__ import annotations

from typing import Any

from orchestrator.models import Node, Task
from orchestrator.state import State

PORT_LABEL = "PROMETHEUS_EXPORTER_PORT"
PATH_LABEL = "PROMETHEUS_EXPORTER_PATH"
SCHEME_LABEL = "PROMETHEUS_EXPORTER_SCHEME"
META = "__meta_dockyard_"


def _group(target: str, job: str, path: str = "/metrics", scheme: str = "http", **labels: str | None) -> dict[str, Any]:
    out = {META + "job": job, "__metrics_path__": path, "__scheme__": scheme}
    out.update({META + k: v for k, v in labels.items() if v is not None})
    return {"targets": [target], "labels": out}


def _host_port(t: Task, container: str, port: int, network_mode: str | None) -> int | None:
    if network_mode == "host":
        return port
    for c in t.containers:
        if c.name == container:
            for b in c.networkBindings:
                if b.get("containerPort") == port and b.get("hostPort"):
                    return int(b["hostPort"])
    return None


def task_targets(t: Task, node: Node | None, state: State) -> list[dict[str, Any]]:
    """The exporter targets of one RUNNING task (none when it declares no exporter, or its port is
    not reachable: no host port bound, or no address known for its node)."""
    if t.lastStatus != "RUNNING" or node is None:
        return []
    td = state.resolve_taskdef(t.taskDefinition)
    if td is None:
        return []
    out = []
    awsvpc = td.spec.networkMode == "awsvpc" or t.launchType == "FARGATE"
    for c in td.spec.containerDefinitions:
        raw = c.dockerLabels.get(PORT_LABEL)
        if raw is None or not str(raw).isdigit():
            continue
        port = int(raw)
        host_port: int | None
        if awsvpc:
            host, host_port = t.ipAddress, port
        else:
            host, host_port = node.address, _host_port(t, c.name, port, td.spec.networkMode)
        if not host or not host_port:
            continue
        out.append(_group(f"{host}:{host_port}", "task", c.dockerLabels.get(PATH_LABEL) or "/metrics",
                          c.dockerLabels.get(SCHEME_LABEL) or "http", cluster=t.cluster, service=t.serviceName,
                          task=t.taskId, family=t.family, revision=str(t.revision), container=c.name,
                          node=t.nodeId, task_definition=t.taskDefinition))
    return out


def targets(state: State, orchestrator: str | None) -> list[dict[str, Any]]:
    """Every target group, in a stable order (orchestrator, agents by node, tasks by id)."""
    out: list[dict[str, Any]] = []
    if orchestrator:
        out.append(_group(orchestrator, "orchestrator"))
    for key in sorted(state.nodes):
        n = state.nodes[key]
        if n.metricsEndpoint:
            out.append(_group(n.metricsEndpoint, "agent", cluster=n.cluster, node=n.nodeId,
                              connected="true" if n.connected else "false"))
    for task_id in sorted(state.tasks):
        t = state.tasks[task_id]
        if t.lastStatus == "RUNNING" and t.nodeId:
            out.extend(task_targets(t, state.nodes.get((t.cluster, t.nodeId)), state))
    return out
