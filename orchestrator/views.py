"""API views: a record as the API shows it, with the counts derived from the state."""
from __future__ import annotations

from typing import Any

from orchestrator import autoscale_views
from orchestrator.core import services as svc_core
from orchestrator.models import Cluster, Node, Service
from orchestrator.state import State


def service_view(state: State, s: Service) -> dict[str, Any]:
    running, pending = state.service_counts(s.cluster, s.serviceName)  # O(1): kept by put_task
    primary = svc_core.primary_of(s)
    view = s.model_dump(mode="json")
    bake = s.spec.deploymentConfiguration.bake_seconds
    for d in view["deployments"]:  # when a bake in progress ends (the rule lives in the model)
        started = d.get("bakeStartedAt")
        d["bakeEndsAt"] = started + bake if started is not None and d.get("rolloutState") == "IN_PROGRESS" else None
    return {
        **view,
        "desiredCount": s.spec.desiredCount,
        "runningCount": running,
        "pendingCount": pending,
        "taskDefinition": primary.taskDefinition if primary else s.spec.taskDefinition,
        "autoScaling": autoscale_views.service_autoscaling(state, s.cluster, s.serviceName),
    }


def node_view(state: State, n: Node) -> dict[str, Any]:
    tasks = state.node_active_tasks(n.cluster, n.nodeId)
    used_cpu = sum(t.cpu for t in tasks)
    used_mem = sum(t.memory for t in tasks)
    return {
        **n.model_dump(mode="json"),
        "runningTasks": sum(t.lastStatus == "RUNNING" for t in tasks),
        "pendingTasks": sum(t.lastStatus != "RUNNING" for t in tasks),
        "remaining": {"cpu": n.resources.cpu - used_cpu, "memory": n.resources.memory - used_mem},
    }


def cluster_view(state: State, c: Cluster) -> dict[str, Any]:
    tasks = [t for t in state.tasks.values() if t.cluster == c.clusterName]
    nodes = state.cluster_nodes(c.clusterName)
    return {
        **c.model_dump(mode="json"),
        "activeServicesCount": len(state.cluster_services(c.clusterName)),
        "runningTasksCount": sum(t.lastStatus == "RUNNING" for t in tasks),
        "pendingTasksCount": sum(t.lastStatus in ("PROVISIONING", "PENDING") for t in tasks),
        "registeredContainerInstancesCount": len(nodes),
        "connectedNodesCount": sum(n.connected for n in nodes),
    }
