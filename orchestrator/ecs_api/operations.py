"""ECS operations as a thin translation onto :class:`orchestrator.ops.Ops`: the same validation
(ECS documents go through apply, so a RegisterTaskDefinition body is checked exactly as a
manifest is), the same records, the same store. Each handler takes the request body and
returns ECS's response body; errors are raised as :class:`EcsError` with ECS's exception name."""
from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any

from dockyard.ecs import TaskOverride
from orchestrator.core import query
from orchestrator.ecs_api.shapes import (
    Arns,
    cluster_of,
    cluster_shape,
    instance_shape,
    name_of,
    service_shape,
    task_shape,
    taskdef_shape,
)
from orchestrator.models import Cluster, Node, RunTaskSpec, Service, Task, TaskDefinition
from orchestrator.ops import Ops, UserError

# Operations ECS has that dockyard answers with UnsupportedFeatureException (docs/ecs-compat.md).
UNSUPPORTED = ("ExecuteCommand", "CreateCapacityProvider", "DeleteCapacityProvider", "DescribeCapacityProviders",
               "UpdateCapacityProvider", "PutClusterCapacityProviders", "CreateTaskSet", "DeleteTaskSet",
               "DescribeTaskSets", "UpdateTaskSet", "UpdateServicePrimaryTaskSet", "SubmitTaskStateChange",
               "SubmitContainerStateChange", "SubmitAttachmentStateChanges", "DiscoverPollEndpoint",
               "RegisterContainerInstance", "UpdateContainerAgent", "PutAccountSetting", "PutAccountSettingDefault",
               "DeleteAccountSetting", "ListAccountSettings", "GetTaskProtection", "UpdateTaskProtection",
               "ListServicesByNamespace")


class EcsError(Exception):
    def __init__(self, type_: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.type, self.message, self.status = type_, message, status


def from_user_error(e: UserError) -> EcsError:
    """dockyard's user errors as ECS's exceptions (the message keeps dockyard's field and hint)."""
    msg = e.message
    first = e.errors[0] if e.errors else None
    if first is not None:
        msg = f"{first.field}: {first.message}" if first.field else first.message
        if first.hint:
            msg += f" ({first.hint})"
    elif e.field:
        msg = f"{e.field}: {msg}"
    if e.status == 404:
        low = e.message.lower()
        if low.startswith("cluster"):
            return EcsError("ClusterNotFoundException", "Cluster not found.")
        if low.startswith("service"):
            return EcsError("ServiceNotFoundException", "Service not found.")
        if low.startswith("node"):
            return EcsError("InvalidParameterException", "Container instance not found.")
        if low.startswith("task definition"):
            return EcsError("ClientException", "Unable to describe task definition.")
        return EcsError("InvalidParameterException", msg)
    if e.status == 409 and "services and" in e.message:
        return EcsError("ClusterContainsServicesException" if "still has 0 services" not in e.message
                        else "ClusterContainsTasksException", e.message)
    return EcsError("InvalidParameterException" if e.errors or e.field else "ClientException", msg)


def _page(items: list[Any], body: dict[str, Any], default: int = 100, cap: int = 100) -> tuple[list[Any], str | None]:
    """ECS pagination: maxResults (1-100) and an opaque nextToken."""
    try:
        start = int(base64.urlsafe_b64decode(body["nextToken"]).decode()) if body.get("nextToken") else 0
    except (ValueError, UnicodeDecodeError):
        raise EcsError("InvalidParameterException", "Invalid nextToken.") from None
    n = body.get("maxResults") or default
    if not isinstance(n, int) or not 1 <= n <= cap:
        raise EcsError("InvalidParameterException", f"maxResults must be between 1 and {cap}.")
    chunk = items[start:start + n]
    token = base64.urlsafe_b64encode(str(start + n).encode()).decode() if start + n < len(items) else None
    return chunk, token


def _listed(key: str, items: list[Any], body: dict[str, Any]) -> dict[str, Any]:
    chunk, token = _page(items, body)
    return {key: chunk, **({"nextToken": token} if token else {})}


DELETED_KEPT = 1000  # deleted services still described (INACTIVE), as ECS does for a while


class Operations:
    def __init__(self, ops: Ops, arns: Arns, deleted: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.ops, self.arns, self.state = ops, arns, ops.state
        self.deleted = deleted if deleted is not None else {}  # (cluster, service) -> its last shape

    def handler(self, name: str) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        return getattr(self, _snake(name), None) if name not in UNSUPPORTED else None

    def _apply(self, document: dict[str, Any], cluster: str, source: str) -> dict[str, Any]:
        try:
            (result,) = self.ops.apply([{"source": source, "document": document}], cluster)
        except UserError as e:
            raise from_user_error(e) from None
        return result

    # ---- clusters --------------------------------------------------------------------------
    def create_cluster(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("clusterName") or "default"
        self._apply({"apiVersion": "dockyard/v1", "kind": "Cluster", "metadata": {"name": name}, "spec": {}}, name,
                    "CreateCluster")
        c = self.state.clusters[name]
        if body.get("tags") or body.get("settings"):
            c.tags = {**c.tags, **_tags_in(body.get("tags"))}
            c.settings = {**c.settings, **_settings_in(body.get("settings"))}
            self._put_tagged(c)
        return {"cluster": cluster_shape(self.state, c, self.arns)}

    def update_cluster(self, body: dict[str, Any]) -> dict[str, Any]:
        c = self.state.clusters.get(cluster_of(body.get("cluster")))
        if c is None:
            raise EcsError("ClusterNotFoundException", "Cluster not found.")
        if body.get("configuration") or body.get("serviceConnectDefaults"):
            raise EcsError("InvalidParameterException", "configuration and serviceConnectDefaults are not supported by dockyard.")
        c.settings = {**c.settings, **_settings_in(body.get("settings"))}
        self._put_tagged(c)
        return {"cluster": cluster_shape(self.state, c, self.arns)}

    def update_cluster_settings(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.update_cluster({"cluster": body.get("cluster"), "settings": body.get("settings")})

    def describe_clusters(self, body: dict[str, Any]) -> dict[str, Any]:
        out, failures = [], []
        for ref in body.get("clusters") or ["default"]:
            c = self.state.clusters.get(cluster_of(ref))
            if c is None:
                failures.append({"arn": ref if ref.startswith("arn:") else self.arns.cluster(ref), "reason": "MISSING"})
            else:
                out.append(cluster_shape(self.state, c, self.arns, body.get("include") or ()))
        return {"clusters": out, "failures": failures}

    def list_clusters(self, body: dict[str, Any]) -> dict[str, Any]:
        return _listed("clusterArns", [self.arns.cluster(n) for n in sorted(self.state.clusters)], body)

    def delete_cluster(self, body: dict[str, Any]) -> dict[str, Any]:
        name = cluster_of(body.get("cluster"))
        c = self.state.clusters.get(name)
        if c is None:
            raise EcsError("ClusterNotFoundException", "Cluster not found.")
        if self.state.cluster_services(name):
            raise EcsError("ClusterContainsServicesException",
                           "The Cluster cannot be deleted while Services are active.")
        if any(t.cluster == name and t.lastStatus != "STOPPED" for t in self.state.tasks.values()):
            raise EcsError("ClusterContainsTasksException", "The Cluster cannot be deleted while Tasks are active.")
        shape = cluster_shape(self.state, c, self.arns)
        try:
            self.ops.delete_cluster(name)
        except UserError as e:
            raise from_user_error(e) from None
        return {"cluster": {**shape, "status": "INACTIVE"}}

    # ---- task definitions ------------------------------------------------------------------
    def register_task_definition(self, body: dict[str, Any]) -> dict[str, Any]:
        doc = {k: v for k, v in body.items() if k != "tags"}
        if not doc.get("containerDefinitions"):
            raise EcsError("ClientException", "Container definitions are required.")
        result = self._apply(doc, "default", "RegisterTaskDefinition")
        td = self.state.taskdefs[doc.get("family", "")][int(result["revision"])]
        if body.get("tags"):
            td.tags = {**td.tags, **_tags_in(body["tags"])}
            self._put_tagged(td)
        return {"taskDefinition": taskdef_shape(td, self.arns), "tags": _tags_out(td.tags)}

    def describe_task_definition(self, body: dict[str, Any]) -> dict[str, Any]:
        ref = name_of(str(body.get("taskDefinition") or ""))
        try:
            td = self.ops.taskdef(ref)
        except UserError as e:
            raise from_user_error(e) from None
        return {"taskDefinition": taskdef_shape(td, self.arns), "tags": _tags_out(td.tags) if "TAGS" in (body.get("include") or []) else []}

    def list_task_definitions(self, body: dict[str, Any]) -> dict[str, Any]:
        prefix, status = body.get("familyPrefix") or "", body.get("status") or "ACTIVE"
        tds = [td for fam, revs in self.state.taskdefs.items() if fam.startswith(prefix) for td in revs.values()
               if status == "ALL" or td.status == status]
        tds.sort(key=lambda td: (td.family, td.revision), reverse=body.get("sort") == "DESC")
        return _listed("taskDefinitionArns", [self.arns.taskdef(td.ref) for td in tds], body)

    def list_task_definition_families(self, body: dict[str, Any]) -> dict[str, Any]:
        prefix, status = body.get("familyPrefix") or "", body.get("status") or "ACTIVE"
        fams = [f for f, revs in sorted(self.state.taskdefs.items()) if f.startswith(prefix)
                and (status == "ALL" or any(td.status == status for td in revs.values()))]
        return _listed("families", fams, body)

    def deregister_task_definition(self, body: dict[str, Any]) -> dict[str, Any]:
        ref = name_of(str(body.get("taskDefinition") or ""))
        if ":" not in ref:
            raise EcsError("ClientException", "Revision must be specified: family:revision.")
        try:
            td = self.ops.deregister_taskdef(ref)
        except UserError as e:
            raise from_user_error(e) from None
        return {"taskDefinition": taskdef_shape(td, self.arns)}

    def delete_task_definitions(self, body: dict[str, Any]) -> dict[str, Any]:
        """Deletes INACTIVE (deregistered) revisions no task still uses; the rest go to failures."""
        done, failures = [], []
        for ref in body.get("taskDefinitions") or []:
            td = self.state.resolve_taskdef(name_of(ref))
            if td is None:
                failures.append({"arn": ref, "reason": "MISSING"})
            elif td.status != "INACTIVE":
                failures.append({"arn": self.arns.taskdef(td.ref), "reason": "The specified task definition is still in ACTIVE status. "
                                 "Please deregister the target and try again."})
            elif any(t.taskDefinition == td.ref for t in self.state.tasks.values() if t.lastStatus != "STOPPED"):
                failures.append({"arn": self.arns.taskdef(td.ref), "reason": "The task definition is in use by tasks."})
            else:
                shape = {**taskdef_shape(td, self.arns), "status": "DELETE_IN_PROGRESS"}
                self.state.taskdefs[td.family].pop(td.revision, None)
                self.state.delete("taskdef", td.ref)
                done.append(shape)
        self.state.flush()
        return {"taskDefinitions": done, "failures": failures}

    # ---- services --------------------------------------------------------------------------
    def _service(self, cluster: str, ref: str):  # noqa: ANN202
        s = self.state.services.get((cluster, name_of(ref)))
        if s is None or s.status == "INACTIVE":
            raise EcsError("ServiceNotFoundException", "Service not found.")
        return s

    def create_service(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        if cluster not in self.state.clusters:
            raise EcsError("ClusterNotFoundException", "Cluster not found.")
        name = body.get("serviceName") or ""
        existing = self.state.services.get((cluster, name))
        if existing is not None and existing.status == "ACTIVE":
            if body.get("clientToken") and existing.clientToken == body["clientToken"]:
                return {"service": service_shape(self.state, existing, self.arns)}  # the same request again
            raise EcsError("InvalidParameterException", "Creation of service was not idempotent.")
        doc = {k: v for k, v in body.items() if k not in ("tags", "clientToken", "role")}
        doc["cluster"] = cluster
        doc["taskDefinition"] = name_of(str(body.get("taskDefinition") or ""))
        self._apply(doc, cluster, "CreateService")
        s = self.state.services[(cluster, name)]
        if body.get("tags") or body.get("clientToken"):
            s.tags, s.clientToken = _tags_in(body.get("tags")), body.get("clientToken")
            self._put_tagged(s)
        return {"service": service_shape(self.state, s, self.arns)}

    def update_service(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        s = self._service(cluster, str(body.get("service") or ""))
        if s.status != "ACTIVE":
            raise EcsError("ServiceNotActiveException", "Service was not ACTIVE.")
        doc = s.spec.model_dump(mode="json", exclude_none=True)
        for key in ("desiredCount", "deploymentConfiguration", "placementConstraints", "placementStrategy",
                    "healthCheckGracePeriodSeconds", "loadBalancers", "propagateTags", "enableECSManagedTags",
                    "networkConfiguration"):
            if body.get(key) is not None:
                doc[key] = body[key]
        if body.get("taskDefinition"):
            doc["taskDefinition"] = name_of(str(body["taskDefinition"]))
        doc["cluster"] = cluster
        self._apply(doc, cluster, "UpdateService")
        if body.get("desiredCount") is not None and (cluster, s.serviceName) in self.state.scalable_targets:
            # auto scaled: the apply kept the scaler's count; an explicit count is clamped to its bounds
            # (docs/autoscaling.md), as `dockyard scale`
            try:
                self.ops.scale(cluster, s.serviceName, int(body["desiredCount"]))
            except (UserError, ValueError, TypeError) as e:
                raise from_user_error(e if isinstance(e, UserError) else UserError(str(e))) from None
        if body.get("forceNewDeployment"):
            try:
                self.ops.force_new_deployment(cluster, s.serviceName)
            except UserError as e:
                raise from_user_error(e) from None
        return {"service": service_shape(self.state, self.state.services[(cluster, s.serviceName)], self.arns)}

    def describe_services(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        if cluster not in self.state.clusters:
            raise EcsError("ClusterNotFoundException", "Cluster not found.")
        out, failures = [], []
        for ref in body.get("services") or []:
            s = self.state.services.get((cluster, name_of(ref)))
            gone = self.deleted.get((cluster, name_of(ref)))
            if s is not None:
                out.append(service_shape(self.state, s, self.arns))
            elif gone is not None:  # deleted and forgotten: ECS still describes it as INACTIVE
                out.append({**gone, "status": "INACTIVE", "runningCount": 0, "pendingCount": 0, "deployments": []})
            else:
                failures.append({"arn": ref if ref.startswith("arn:") else self.arns.service(cluster, ref), "reason": "MISSING"})
        return {"services": out, "failures": failures}

    def list_services(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        if cluster not in self.state.clusters:
            raise EcsError("ClusterNotFoundException", "Cluster not found.")
        svcs = [s for s in self.state.cluster_services(cluster)
                if (not body.get("launchType") or s.spec.launchType == body["launchType"])
                and (not body.get("schedulingStrategy") or s.spec.schedulingStrategy == body["schedulingStrategy"])]
        return _listed("serviceArns", [self.arns.service(cluster, s.serviceName)
                                       for s in sorted(svcs, key=lambda s: s.serviceName)], body)

    def delete_service(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        s = self._service(cluster, str(body.get("service") or ""))
        if not body.get("force") and s.spec.desiredCount > 0 and s.spec.schedulingStrategy == "REPLICA":
            raise EcsError("InvalidParameterException", "The service cannot be stopped while it is scaled above 0.")
        try:
            s = self.ops.delete_service(cluster, s.serviceName)
        except UserError as e:
            raise from_user_error(e) from None
        shape = service_shape(self.state, s, self.arns)
        self.deleted[(cluster, s.serviceName)] = shape
        while len(self.deleted) > DELETED_KEPT:
            del self.deleted[next(iter(self.deleted))]
        return {"service": shape}

    # ---- tasks -----------------------------------------------------------------------------
    def run_task(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        if cluster not in self.state.clusters:
            raise EcsError("ClusterNotFoundException", "Cluster not found.")
        overrides = (body.get("overrides") or {})
        if any(overrides.get(k) for k in ("cpu", "memory", "taskRoleArn", "executionRoleArn", "ephemeralStorage",
                                          "inferenceAcceleratorOverrides")):
            raise EcsError("InvalidParameterException", "only overrides.containerOverrides (command, environment, cpu, "
                           "memory, memoryReservation) are supported by dockyard; register a revision for the rest.")
        for i, co in enumerate(overrides.get("containerOverrides") or []):
            extra = set(co) - {"name", "command", "environment", "cpu", "memory", "memoryReservation"}
            if extra:
                raise EcsError("InvalidParameterException", f"overrides.containerOverrides[{i}]: {', '.join(sorted(extra))} "
                               "not supported by dockyard yet.")
        if body.get("propagateTags") == "SERVICE":
            raise EcsError("InvalidParameterException", "propagateTags SERVICE is only valid for a service's tasks; "
                           "RunTask takes TASK_DEFINITION or NONE.")
        tags = _tags_in(body.get("tags"))
        if len(tags) > 50:
            raise EcsError("InvalidParameterException", "A resource can have at most 50 tags.")
        try:
            spec = RunTaskSpec(taskDefinition=name_of(str(body.get("taskDefinition") or "")), count=body.get("count") or 1,
                               tags=tags, propagateTags=body.get("propagateTags"),
                               enableECSManagedTags=bool(body.get("enableECSManagedTags")),
                               launchType=body.get("launchType") or "EC2", startedBy=body.get("startedBy"),
                               placementConstraints=body.get("placementConstraints") or [],
                               placementStrategy=body.get("placementStrategy") or [],
                               overrides=(TaskOverride.model_validate({"containerOverrides": overrides["containerOverrides"]})
                                          if overrides.get("containerOverrides") else None))
            tasks = self.ops.run_task(cluster, spec)
        except UserError as e:
            raise from_user_error(e) from None
        except ValueError as e:
            raise EcsError("InvalidParameterException", str(e).splitlines()[0]) from None
        return {"tasks": [self._task_shape(t) for t in tasks], "failures": []}

    def _task_shape(self, t, with_tags: bool = True) -> dict[str, Any]:  # noqa: ANN001
        td = self.state.resolve_taskdef(t.taskDefinition)
        images = {c.name: c.image for c in td.spec.containerDefinitions} if td else {}
        return task_shape(t, self.arns, images, with_tags)

    def describe_tasks(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        if cluster not in self.state.clusters:
            raise EcsError("ClusterNotFoundException", "Cluster not found.")
        out, failures = [], []
        for ref in body.get("tasks") or []:
            try:
                t = self.ops.task(cluster, name_of(ref))
                out.append(self._task_shape(t, "TAGS" in (body.get("include") or [])))
            except UserError:
                failures.append({"arn": ref if ref.startswith("arn:") else self.arns.task(cluster, ref), "reason": "MISSING"})
        return {"tasks": out, "failures": failures}

    def list_tasks(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        if cluster not in self.state.clusters:
            raise EcsError("ClusterNotFoundException", "Cluster not found.")
        desired = body.get("desiredStatus") or "RUNNING"
        node = name_of(body["containerInstance"]) if body.get("containerInstance") else None
        tasks: Iterable = self.state.iter_tasks(cluster, service=body.get("serviceName"), node=node, desired=desired,
                                                family=body.get("family"), stopped=desired == "STOPPED")
        tasks = [t for t in tasks if (not body.get("startedBy") or t.startedBy == body["startedBy"])
                 and (not body.get("launchType") or t.launchType == body["launchType"])]
        return _listed("taskArns", [self.arns.task(cluster, t.taskId) for t in tasks], body)

    def stop_task(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        try:
            t = self.ops.stop_task(cluster, name_of(str(body.get("task") or "")), body.get("reason"))
        except UserError as e:
            if e.status == 404:
                raise EcsError("InvalidParameterException", "The referenced task was not found.") from None
            raise from_user_error(e) from None
        return {"task": self._task_shape(t)}

    # ---- container instances (nodes) -----------------------------------------------------
    def list_container_instances(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        if cluster not in self.state.clusters:
            raise EcsError("ClusterNotFoundException", "Cluster not found.")
        match = None
        if body.get("filter"):  # ECS's cluster query language, as memberOf speaks it
            try:
                match = query.parse(str(body["filter"]))
            except query.QueryError as e:
                raise EcsError("InvalidParameterException", f"filter: {e}") from None
        nodes = [n for n in sorted(self.state.cluster_nodes(cluster), key=lambda n: n.nodeId)
                 if (not body.get("status") or n.status == body["status"])
                 and (match is None or query.evaluate(match, n.nodeId, n.attributes))]
        return _listed("containerInstanceArns", [self.arns.instance(cluster, n.nodeId) for n in nodes], body)

    def describe_container_instances(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        if cluster not in self.state.clusters:
            raise EcsError("ClusterNotFoundException", "Cluster not found.")
        out, failures = [], []
        for ref in body.get("containerInstances") or []:
            n = self.state.nodes.get((cluster, name_of(ref)))
            if n is None:
                failures.append({"arn": ref if ref.startswith("arn:") else self.arns.instance(cluster, ref), "reason": "MISSING"})
            else:
                out.append(instance_shape(self.state, n, self.arns))
        return {"containerInstances": out, "failures": failures}

    def deregister_container_instance(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        n = self.state.nodes.get((cluster, name_of(str(body.get("containerInstance") or ""))))
        if n is None:
            raise EcsError("InvalidParameterException", "Container instance not found.")
        if self.state.node_active_count(cluster, n.nodeId) and not body.get("force"):
            raise EcsError("InvalidParameterException", "Found running tasks on the instance; use force to deregister "
                           "it anyway (its tasks are then stopped as lost).")
        shape = instance_shape(self.state, n, self.arns)
        try:
            self.ops.delete_node(cluster, n.nodeId)
        except UserError as e:
            raise from_user_error(e) from None
        return {"containerInstance": {**shape, "status": "INACTIVE"}}

    def update_container_instances_state(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        status = body.get("status")
        if status not in ("ACTIVE", "DRAINING"):
            raise EcsError("InvalidParameterException", "status must be ACTIVE or DRAINING.")
        out, failures = [], []
        for ref in body.get("containerInstances") or []:
            try:
                n = self.ops.set_node_status(cluster, name_of(ref), status)
                out.append(instance_shape(self.state, n, self.arns))
            except UserError:
                failures.append({"arn": ref, "reason": "MISSING"})
        return {"containerInstances": out, "failures": failures}

    # ---- tags (clusters, task definitions, services, tasks, container instances) ---------
    def _tagged(self, arn: str, write: bool = False) -> Cluster | TaskDefinition | Service | Node | Task:
        """The record an ARN names (tags live on the records, written with them)."""
        m = arn.split(":", 5)
        if len(m) < 6 or not arn.startswith("arn:aws:ecs:"):
            raise EcsError("InvalidParameterException", "The ARN provided is invalid.")
        kind, _, rest = m[5].partition("/")
        parts = rest.split("/")
        obj: Cluster | TaskDefinition | Service | Node | Task | None = None
        if kind == "cluster":
            obj = self.state.clusters.get(parts[0])
        elif kind == "task-definition":
            obj = self.state.resolve_taskdef(parts[0]) if ":" in parts[0] else None
        elif kind == "service" and len(parts) == 2:
            obj = self.state.services.get((parts[0], parts[1]))
        elif kind == "container-instance" and len(parts) == 2:
            obj = self.state.nodes.get((parts[0], parts[1]))
        elif kind == "task" and len(parts) == 2:
            t = self.state.task(parts[1])  # a STOPPED one from the store
            obj = t if t is not None and t.cluster == parts[0] else None
            if obj is not None and write and parts[1] not in self.state.tasks:
                raise EcsError("InvalidParameterException", "The tags of a stopped task cannot be changed.")
        if obj is None:
            raise EcsError("InvalidParameterException", "The specified resource could not be found.")
        return obj

    def _put_tagged(self, obj: Cluster | TaskDefinition | Service | Node | Task) -> None:
        if isinstance(obj, Cluster):
            self.state.put_cluster(obj)
        elif isinstance(obj, TaskDefinition):
            self.state.put_taskdef(obj)
        elif isinstance(obj, Service):
            self.state.put_service(obj)
        elif isinstance(obj, Node):
            self.state.put_node(obj)
        elif isinstance(obj, Task):
            self.state.put_task(obj)
        self.state.flush()

    def tag_resource(self, body: dict[str, Any]) -> dict[str, Any]:
        obj = self._tagged(str(body.get("resourceArn") or ""), write=True)
        tags = {**(obj.tags or {}), **_tags_in(body.get("tags"))}
        if len(tags) > 50:
            raise EcsError("InvalidParameterException", "A resource can have at most 50 tags.")
        obj.tags = tags
        self._put_tagged(obj)
        return {}

    def untag_resource(self, body: dict[str, Any]) -> dict[str, Any]:
        obj = self._tagged(str(body.get("resourceArn") or ""), write=True)
        drop = set(body.get("tagKeys") or [])
        obj.tags = {k: v for k, v in (obj.tags or {}).items() if k not in drop}
        self._put_tagged(obj)
        return {}

    def list_tags_for_resource(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"tags": _tags_out(self._tagged(str(body.get("resourceArn") or "")).tags or {})}

    # ---- custom attributes of container instances (memberOf sees them) --------------------
    def put_attributes(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        done = []
        for a in body.get("attributes") or []:
            n = self.state.nodes.get((cluster, name_of(str(a.get("targetId") or ""))))
            if n is None or (a.get("targetType") or "container-instance") != "container-instance":
                raise EcsError("TargetNotFoundException", f"Could not find {a.get('targetId')}.")
            if str(a.get("name", "")).startswith("ecs."):
                raise EcsError("InvalidParameterException", "Attributes starting with ecs. are reserved.")
            n.customAttributes[a["name"]] = n.attributes[a["name"]] = str(a.get("value", ""))
            self.state.put_node(n)
            done.append(a)
        self.state.flush()
        return {"attributes": done}

    def delete_attributes(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        done = []
        for a in body.get("attributes") or []:
            n = self.state.nodes.get((cluster, name_of(str(a.get("targetId") or ""))))
            if n is None:
                raise EcsError("TargetNotFoundException", f"Could not find {a.get('targetId')}.")
            n.customAttributes.pop(a.get("name"), None)
            n.attributes.pop(a.get("name"), None)
            self.state.put_node(n)
            done.append(a)
        self.state.flush()
        return {"attributes": done}

    def list_attributes(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = cluster_of(body.get("cluster"))
        if body.get("targetType") != "container-instance":
            raise EcsError("InvalidParameterException", "targetType must be container-instance.")
        out = [{"name": k, "value": v, "targetType": "container-instance", "targetId": self.arns.instance(cluster, n.nodeId)}
               for n in sorted(self.state.cluster_nodes(cluster), key=lambda n: n.nodeId)
               for k, v in sorted(n.attributes.items())
               if (not body.get("attributeName") or k == body["attributeName"])
               and (not body.get("attributeValue") or v == body["attributeValue"])]
        return _listed("attributes", out, body)

    def start_task(self, body: dict[str, Any]) -> dict[str, Any]:
        """RunTask pinned to the named container instances (one task on each)."""
        nodes = [name_of(r) for r in body.get("containerInstances") or []]
        if not nodes:
            raise EcsError("InvalidParameterException", "containerInstances is required.")
        tasks, failures = [], []
        for node in nodes:
            expr = f"instanceId == {node}"
            one = {**body, "count": 1, "placementConstraints": [
                *(body.get("placementConstraints") or []), {"type": "memberOf", "expression": expr}]}
            if (cluster_of(body.get("cluster")), node) not in self.state.nodes:
                failures.append({"arn": self.arns.instance(cluster_of(body.get("cluster")), node), "reason": "MISSING"})
                continue
            tasks += self.run_task({k: v for k, v in one.items() if k != "containerInstances"})["tasks"]
        return {"tasks": tasks, "failures": failures}


def _tags_in(tags: list[dict[str, Any]] | None) -> dict[str, str]:
    return {str(t.get("key")): str(t.get("value", "")) for t in tags or [] if t.get("key")}


def _settings_in(settings: list[dict[str, Any]] | None) -> dict[str, str]:
    out = {}
    for x in settings or []:
        if x.get("name") != "containerInsights" or x.get("value") not in ("enabled", "disabled", "enhanced"):
            raise EcsError("InvalidParameterException", "settings: only containerInsights enabled|disabled|enhanced.")
        out[x["name"]] = x["value"]
    return out


def _tags_out(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
