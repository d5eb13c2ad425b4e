"""dockyard's records as ECS's response shapes (pure): clusters, task definitions, services,
tasks, container instances, with ECS's long ARNs and epoch-second timestamps."""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from orchestrator import views
from orchestrator.core import services as svc_core
from orchestrator.models import Cluster, Node, Service, Task, TaskDefinition
from orchestrator.state import State

EVENTS_SHOWN = 100


@dataclass(frozen=True)
class Arns:
    region: str = "us-east-1"
    account: str = "123456789012"

    def _arn(self, resource: str) -> str:
        return f"arn:aws:ecs:{self.region}:{self.account}:{resource}"

    def cluster(self, name: str) -> str:
        return self._arn(f"cluster/{name}")

    def taskdef(self, ref: str) -> str:
        return self._arn(f"task-definition/{ref}")

    def service(self, cluster: str, name: str) -> str:
        return self._arn(f"service/{cluster}/{name}")

    def task(self, cluster: str, task_id: str) -> str:
        return self._arn(f"task/{cluster}/{task_id}")

    def instance(self, cluster: str, node_id: str) -> str:
        return self._arn(f"container-instance/{cluster}/{node_id}")

    def container(self, cluster: str, task_id: str, name: str) -> str:
        return self._arn(f"container/{cluster}/{task_id}/{name}")


def name_of(ref: str) -> str:
    """The last part of an ARN (``cluster/NAME``, ``task-definition/FAM:REV``), or the name itself."""
    if ref.startswith("arn:"):
        return ref.rsplit("/", 1)[-1]
    return ref


def cluster_of(ref: str | None) -> str:
    """A cluster name from a name or an ARN; ECS's default cluster is ``default``."""
    return name_of(ref) if ref else "default"


def cluster_statistics(state: State, cluster: str) -> list[dict[str, str]]:
    """DescribeClusters' ``include: [STATISTICS]``: tasks and services by launch type, as ECS names them."""
    counts = dict.fromkeys((f"{what}{lt}{kind}" for what, kind in (("running", "TasksCount"), ("pending", "TasksCount"),
                                                                      ("active", "ServiceCount"),
                                                                      ("draining", "ServiceCount"))
                           for lt in ("EC2", "Fargate")), 0)
    for t in state.tasks.values():
        if t.cluster == cluster and t.lastStatus in ("RUNNING", "PROVISIONING", "PENDING", "ACTIVATING"):
            lt = "Fargate" if t.launchType == "FARGATE" else "EC2"
            counts[f"{'running' if t.lastStatus == 'RUNNING' else 'pending'}{lt}TasksCount"] += 1
    for s in state.services.values():
        if s.cluster == cluster and s.status in ("ACTIVE", "DRAINING"):
            lt = "Fargate" if s.spec.launchType == "FARGATE" else "EC2"
            counts[f"{s.status.lower()}{lt}ServiceCount"] += 1
    return [{"name": k, "value": str(v)} for k, v in counts.items()]


def cluster_shape(state: State, c: Cluster, arns: Arns, include: Iterable[str] = ()) -> dict[str, Any]:
    v = views.cluster_view(state, c)
    stats = cluster_statistics(state, c.clusterName) if "STATISTICS" in include else []
    return {"clusterArn": arns.cluster(c.clusterName), "clusterName": c.clusterName, "status": "ACTIVE",
            "registeredContainerInstancesCount": v["registeredContainerInstancesCount"],
            "runningTasksCount": v["runningTasksCount"], "pendingTasksCount": v["pendingTasksCount"],
            "activeServicesCount": v["activeServicesCount"], "statistics": stats,
            "settings": [{"name": k, "value": val} for k, val in sorted(c.settings.items())],
            "capacityProviders": [], "defaultCapacityProviderStrategy": [],
            "tags": [{"key": k, "value": v} for k, v in sorted(c.tags.items())]}


def taskdef_shape(td: TaskDefinition, arns: Arns) -> dict[str, Any]:
    body = td.spec.model_dump(mode="json", exclude_none=True, by_alias=True)
    if td.spec.cpu is not None:
        body["cpu"] = str(td.spec.cpu)  # ECS returns the task-level sizes as strings
    if td.spec.memory is not None:
        body["memory"] = str(td.spec.memory)
    body.update(taskDefinitionArn=arns.taskdef(td.ref), family=td.family, revision=td.revision, status=td.status,
                compatibilities=["EC2", "FARGATE"] if td.spec.is_fargate else ["EC2"],
                registeredAt=td.registeredAt, requiresAttributes=[],
                networkMode=td.spec.networkMode or ("awsvpc" if td.spec.is_fargate else "bridge"))
    return body


def service_shape(state: State, s: Service, arns: Arns) -> dict[str, Any]:
    v = views.service_view(state, s)
    tasks = [t for t in state.service_active_tasks(s.cluster, s.serviceName) if t.active]
    deployments = []
    for d in s.deployments:
        if d.status == "INACTIVE":
            continue
        mine = [t for t in tasks if t.deploymentId == d.id]
        deployments.append({
            "id": d.id, "status": d.status, "taskDefinition": arns.taskdef(d.taskDefinition),
            "desiredCount": d.desiredCount, "runningCount": sum(t.lastStatus == "RUNNING" for t in mine),
            "pendingCount": sum(t.lastStatus != "RUNNING" for t in mine), "failedTasks": d.failedTasks,
            "createdAt": d.createdAt, "updatedAt": d.updatedAt, "launchType": s.spec.launchType,
            "rolloutState": d.rolloutState, "rolloutStateReason": d.rolloutStateReason or ""})
    dc = s.spec.deploymentConfiguration
    return {
        "serviceArn": arns.service(s.cluster, s.serviceName), "serviceName": s.serviceName,
        "clusterArn": arns.cluster(s.cluster), "status": s.status, "desiredCount": s.spec.desiredCount,
        "runningCount": v["runningCount"], "pendingCount": v["pendingCount"], "launchType": s.spec.launchType,
        "taskDefinition": arns.taskdef(v["taskDefinition"]),
        "deploymentConfiguration": {"maximumPercent": dc.maximumPercent, "minimumHealthyPercent": dc.minimumHealthyPercent,
                                    "deploymentCircuitBreaker": dc.deploymentCircuitBreaker.model_dump()},
        "deployments": deployments,
        "events": [{"id": e.id, "createdAt": e.createdAt, "message": e.message} for e in s.events[:EVENTS_SHOWN]],
        "loadBalancers": [lb.model_dump(exclude_none=True) for lb in s.spec.loadBalancers],
        "placementConstraints": [c.model_dump(exclude_none=True) for c in s.spec.placementConstraints],
        "placementStrategy": [p.model_dump(exclude_none=True) for p in s.spec.placementStrategy],
        "schedulingStrategy": s.spec.schedulingStrategy, "createdAt": s.createdAt,
        "healthCheckGracePeriodSeconds": s.spec.healthCheckGracePeriodSeconds,
        "tags": [{"key": k, "value": v} for k, v in sorted(s.tags.items())],
        "propagateTags": s.spec.propagateTags or "NONE", "enableECSManagedTags": s.spec.enableECSManagedTags,
        **({"networkConfiguration": s.spec.networkConfiguration} if s.spec.networkConfiguration else {}),
    }


def task_shape(t: Task, arns: Arns, images: dict[str, str] | None = None, with_tags: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "taskArn": arns.task(t.cluster, t.taskId), "clusterArn": arns.cluster(t.cluster),
        "taskDefinitionArn": arns.taskdef(t.taskDefinition), "lastStatus": t.lastStatus,
        "desiredStatus": t.desiredStatus, "healthStatus": t.healthStatus, "launchType": t.launchType,
        "group": t.group, "cpu": str(t.cpu), "memory": str(t.memory), "createdAt": t.createdAt, "version": 1,
        "containers": [{
            "containerArn": arns.container(t.cluster, t.taskId, c.name), "taskArn": arns.task(t.cluster, t.taskId),
            "name": c.name, "image": (images or {}).get(c.name, ""), "runtimeId": c.dockerId,
            "lastStatus": c.lastStatus, "exitCode": c.exitCode, "reason": c.reason, "healthStatus": c.healthStatus,
            "networkBindings": c.networkBindings,
        } for c in t.containers],
        "tags": [{"key": k, "value": v} for k, v in sorted((t.tags or {}).items())] if with_tags else [],
        "overrides": {"containerOverrides": [o.model_dump(mode="json", exclude_none=True) for o in
                                             (t.overrides.containerOverrides if t.overrides else [])]},
        "attachments": eni_attachments(t),
    }
    if t.ipAddress:
        for c in out["containers"]:
            c["networkInterfaces"] = [{"attachmentId": out["attachments"][0]["id"], "privateIpv4Address": t.ipAddress}]
    if t.nodeId:
        out["containerInstanceArn"] = arns.instance(t.cluster, t.nodeId)
    for k in ("startedAt", "stoppingAt", "stoppedAt", "startedBy", "stopCode", "stoppedReason"):
        v = getattr(t, k)
        if v is not None:
            out[k] = v
    for c in out["containers"]:
        for k in ("exitCode", "reason", "runtimeId"):
            if c[k] is None:
                del c[k]
    return out


def eni_attachments(t: Task) -> list[dict[str, Any]]:
    """An awsvpc task's network, as ECS shows its ENI: the task's own address on its per-task network
    (the agent reports it as ``ipAddress``; bridge and host tasks have none)."""
    if not t.ipAddress:
        return []
    ident = uuid.uuid5(uuid.NAMESPACE_URL, f"dockyard-eni:{t.taskId}")
    return [{"id": str(ident), "type": "ElasticNetworkInterface",
             "status": "DELETED" if t.lastStatus == "STOPPED" else "ATTACHED",
             "details": [{"name": "networkInterfaceId", "value": f"eni-{ident.hex[:17]}"},
                         {"name": "privateIPv4Address", "value": t.ipAddress}]}]


def instance_shape(state: State, n: Node, arns: Arns) -> dict[str, Any]:
    v = views.node_view(state, n)

    def resources(cpu: int, memory: int) -> list[dict[str, Any]]:
        return [{"name": "CPU", "type": "INTEGER", "integerValue": cpu, "doubleValue": 0.0, "longValue": 0},
                {"name": "MEMORY", "type": "INTEGER", "integerValue": memory, "doubleValue": 0.0, "longValue": 0},
                {"name": "PORTS", "type": "STRINGSET", "stringSetValue": []},
                {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []}]
    return {
        "containerInstanceArn": arns.instance(n.cluster, n.nodeId), "ec2InstanceId": n.nodeId,
        "status": n.status, "agentConnected": n.connected, "registeredAt": n.registeredAt,
        "registeredResources": resources(n.resources.cpu, n.resources.memory),
        "remainingResources": resources(v["remaining"]["cpu"], v["remaining"]["memory"]),
        "runningTasksCount": v["runningTasks"], "pendingTasksCount": v["pendingTasks"],
        "attributes": [{"name": k, "value": val} for k, val in sorted(n.attributes.items())],
        "versionInfo": {"agentVersion": n.agentVersion or "", "agentHash": "", "dockerVersion": ""},
        "capacityProviderName": "", "tags": [{"key": k, "value": v} for k, v in sorted(n.tags.items())],
    }


def primary_ref(s: Service) -> str:
    p = svc_core.primary_of(s)
    return p.taskDefinition if p else s.spec.taskDefinition
