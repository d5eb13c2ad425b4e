"""What the API can ask of the control plane: apply, delete, run, stop, scale, drain, rollback.

Each operation validates everything first (apply and delete: every document) and only then
changes the in-memory state; the changes are written to the store together, in one flush at
the end of the operation. User errors raise :class:`UserError` (-> HTTP 4xx) with the field
and a hint. The reconcile loop is woken afterwards to act on the change.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel

from dockyard.ecs import TaskDefinitionSpec, apply_overrides, ignored_fields
from dockyard.ecs_compat import taskdef_warnings
from dockyard.wire import (
    CGROUP_ATTRIBUTE,
    SERVICE_SCHEDULER_INITIATED,
    TASK_FAILED_TO_START,
    USER_INITIATED,
    USER_STOP_REASON,
)
from orchestrator import autoscale_ops
from orchestrator.controller import Controller, add_event
from orchestrator.core import secrets as secrets_core
from orchestrator.core import services as svc_core
from orchestrator.core.auth import ROLES, Role
from orchestrator.lb_ops import lb_errors
from orchestrator.manifests import (
    Doc,
    DocError,
    LoadBalancerDoc,
    ScalingPolicyDoc,
    ServiceDoc,
    TargetGroupDoc,
    TaskDefinitionDoc,
    fargate_errors,
    parse_document,
)
from orchestrator.models import (
    Cluster,
    LoadBalancer,
    Node,
    RunTaskSpec,
    Service,
    ServiceSpec,
    TargetGroup,
    Task,
    TaskDefinition,
)
from orchestrator.secrets import SecretMeta, check_name
from orchestrator.state import State
from orchestrator.task_apply import mark_stopped, request_stop


def resource_tags(spec: BaseModel) -> dict[str, str]:
    """The ECS ``tags`` ([{key, value}]) of a bare ECS body (RegisterTaskDefinition, CreateService) in a manifest."""
    tags = (spec.model_extra or {}).get("tags")
    if not isinstance(tags, list):
        return {}
    return {str(t["key"]): str(t.get("value", "")) for t in tags if isinstance(t, dict) and t.get("key")}


ACCESS_KEY_PREFIX = "accesskey!"  # a name no user secret can have ("!" is not allowed in one)


class UserError(Exception):
    def __init__(self, message: str, status: int = 400, field: str = "", hint: str = "",
                 errors: list[DocError] | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.field, self.hint, self.errors = message, status, field, hint, errors or []

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.field:
            out["field"] = self.field
        if self.hint:
            out["hint"] = self.hint
        if self.errors:
            out["errors"] = [e.as_dict() for e in self.errors]
        return out


def not_found(what: str, name: str, hint: str = "") -> UserError:
    return UserError(f"{what} {name!r} not found", 404, hint=hint)


def _item(i: int, item: Any) -> tuple[str, Any]:
    """An applied item's source and document: ``{"source", "document"}`` or a bare document (any JSON value:
    parse_document names what is wrong with it)."""
    if not isinstance(item, dict):
        return f"document {i + 1}", item
    return str(item.get("source") or f"document {i + 1}"), item.get("document") if "document" in item else item


class Ops:
    def __init__(self, state: State, controller: Controller) -> None:
        self.state = state
        self.ctl = controller

    def _commit(self) -> None:
        self.state.flush()
        self.ctl.wake()

    # ---- lookups --------------------------------------------------------------------------
    def cluster(self, name: str) -> Cluster:
        c = self.state.clusters.get(name)
        if c is None:
            raise not_found("cluster", name, "list clusters with: dockyard get clusters")
        return c

    def service(self, cluster: str, name: str) -> Service:
        s = self.state.services.get((cluster, name))
        if s is None:
            raise not_found("service", name, f"list services with: dockyard -c {cluster} get services")
        return s

    def task(self, cluster: str, ref: str) -> Task:
        """The task with id ``ref``, or the only one whose id starts with it (STOPPED ones too:
        those are read from the store)."""
        t = self.state.task(ref)
        if t is not None and t.cluster == cluster:
            return t
        matches = self.state.task_ids(cluster, ref) if ref else []
        if not matches:
            raise not_found("task", ref, f"list tasks with: dockyard -c {cluster} get tasks --all")
        if len(matches) > 1:
            raise UserError(f"task id prefix {ref!r} is ambiguous ({len(matches)} tasks)", 409, hint="give more characters")
        t = self.state.task(matches[0])
        if t is None:
            raise not_found("task", ref, f"list tasks with: dockyard -c {cluster} get tasks --all")
        return t

    def node(self, cluster: str, node_id: str):
        n = self.state.nodes.get((cluster, node_id))
        if n is None:
            raise not_found("node", node_id, f"list nodes with: dockyard -c {cluster} get nodes")
        return n

    def taskdef(self, ref: str) -> TaskDefinition:
        td = self.state.resolve_taskdef(ref)
        if td is None:
            raise not_found("task definition", ref, "list them with: dockyard get taskdefinitions")
        return td

    # ---- apply ----------------------------------------------------------------------------
    def apply(self, documents: list[dict[str, Any]], default_cluster: str, dry_run: bool = False) -> list[dict[str, Any]]:
        docs: list[Doc] = []
        errors: list[DocError] = []
        for i, item in enumerate(documents):
            source, body = _item(i, item)
            doc, errs = parse_document(source, body, default_cluster)
            errors += errs
            if doc is not None:
                docs.append(doc)
        order = {"Secret": 0, "Cluster": 0, "TaskDefinition": 1, "TargetGroup": 2, "LoadBalancer": 3, "Service": 4,
                 "Task": 5, "ScalingPolicy": 5}
        docs.sort(key=lambda d: order[d.kind])
        # References: services and tasks must name a task definition that exists or is in this apply.
        families = {d.spec.family for d in docs if d.kind == "TaskDefinition"}
        for d in docs:
            if d.kind == "Service" or d.kind == "Task":
                ref = d.spec.taskDefinition
                family, _, rev = ref.partition(":")
                known = self.state.resolve_taskdef(ref) is not None or (family in families and not rev)
                if family in families and rev:
                    known = known or int(rev) == self._next_revision(family)
                if not known:
                    errors.append(DocError(d.source, f"task definition {ref!r} does not exist",
                                           "spec.taskDefinition", d.kind, d.name,
                                           "apply the TaskDefinition first or in the same apply"))
                else:
                    td_spec = self._td_spec_for(ref, docs)
                    launch = d.spec.launchType
                    if td_spec is not None and launch == "FARGATE" and not td_spec.is_fargate:
                        errors.append(DocError(d.source, f"task definition {ref!r} is not FARGATE-compatible",
                                               "spec.launchType", d.kind, d.name,
                                               "add requiresCompatibilities: [FARGATE] with task cpu/memory"))
            if d.kind == "Service":
                existing = self.state.services.get((d.cluster, d.name))
                if existing is not None and existing.spec.launchType != d.spec.launchType:
                    errors.append(DocError(d.source, "launchType cannot change on an existing service",
                                           "spec.launchType", d.kind, d.name, "delete and re-create the service"))
        errors += lb_errors(
            docs,
            lambda c: {k[1]: tg.spec for k, tg in self.state.target_groups.items() if k[0] == c},
            lambda c: {k[1]: lb.spec for k, lb in self.state.load_balancers.items() if k[0] == c},
            self._td_spec_for)
        applied_services = {(d.cluster, d.name): d.spec for d in docs if isinstance(d, ServiceDoc)}
        for d in docs:
            if isinstance(d, ScalingPolicyDoc):
                errors += autoscale_ops.check(self.state, d.cluster, d.spec, applied_services, d.source)
        if errors:
            raise UserError(f"{len(errors)} error(s) in the applied documents; nothing was changed", 400, errors=errors)
        now = self.ctl.clock()
        applied_secrets = {d.name for d in docs if d.kind == "Secret"}
        results = [self._apply_one(d, now, dry_run) for d in docs]
        for d, res in zip(docs, results, strict=True):
            if d.kind == "TaskDefinition":
                res.setdefault("warnings", []).extend(self._missing_secret_warnings(d.spec, applied_secrets))
        if not dry_run:
            self._commit()
        return results

    def _missing_secret_warnings(self, spec: TaskDefinitionSpec, applied: set[str]) -> list[str]:
        """A secret a task definition names that does not exist is a warning, not an error (ECS
        registers it too): its tasks fail to start until the secret is created."""
        out = []
        for i, c in enumerate(spec.containerDefinitions):
            for j, sec in enumerate(c.secrets):
                if sec.secret not in applied and self.ctl.secrets.meta(sec.secret) is None:
                    out.append(f"containerDefinitions[{i}].secrets[{j}].valueFrom: secret {sec.secret!r} does not "
                               f"exist; its tasks fail to start until it does (dockyard secret create {sec.secret} ...)")
        return out

    def _next_revision(self, family: str) -> int:
        revs = self.state.taskdefs.get(family, {})
        return (max(revs) if revs else 0) + 1

    def _td_spec_for(self, ref: str, docs: Sequence[Doc]) -> TaskDefinitionSpec | None:
        td = self.state.resolve_taskdef(ref)
        if td is not None:
            return td.spec
        family = ref.partition(":")[0]
        return next((d.spec for d in docs if isinstance(d, TaskDefinitionDoc) and d.spec.family == family), None)

    def _apply_one(self, d: Doc, now: float, dry_run: bool) -> dict[str, Any]:
        # "tags" of a bare ECS body: kept as the record's resource tags (resource_tags), not ignored.
        ignored = [f for f in ignored_fields(d.spec) if f != "tags" or d.kind not in ("TaskDefinition", "Service")]
        res: dict[str, Any] = {"source": d.source, "kind": d.kind, "name": d.name, "ignoredFields": ignored}
        if isinstance(d.spec, TaskDefinitionSpec):
            cgroups = {n.attributes.get(CGROUP_ATTRIBUTE, "") for n in self.state.nodes.values()}
            res["warnings"] = taskdef_warnings(d.spec, cgroups)
        if d.kind == "Cluster":
            if d.name in self.state.clusters:
                return {**res, "action": "unchanged", "detail": f"cluster/{d.name}"}
            if not dry_run:
                self.state.put_cluster(Cluster(clusterName=d.name, createdAt=now))
            return {**res, "action": "created", "detail": f"cluster/{d.name}"}
        if d.kind == "TaskDefinition":
            return {**res, **self.register_taskdef(d.spec, now, dry_run, ignored)}
        if d.kind == "Secret":
            return {**res, **self._apply_secret(d.name, d.spec.secretString, now, dry_run)}
        self._ensure_cluster(d.cluster, dry_run)
        if isinstance(d, (TargetGroupDoc, LoadBalancerDoc)):
            return {**res, **self._apply_lb_record(d, now, dry_run)}
        if d.kind == "Service":
            return {**res, **self._apply_service(d, now, dry_run, ignored)}
        if isinstance(d, ScalingPolicyDoc):
            return {**res, **autoscale_ops.apply_doc(self.state, d, now, dry_run)}
        # Task: a one-off run, idempotent per manifest name.
        spec = d.spec
        started_by = f"manifest/{d.name}"
        if self.state.started_by_exists(d.cluster, started_by):  # STOPPED ones count: run once
            return {**res, "action": "unchanged", "detail": f"task/{d.name}"}
        if not dry_run:
            self._run(d.cluster, spec, started_by, now)
        return {**res, "action": "created", "detail": f"task/{d.name} ({spec.count} started)"}

    def _apply_secret(self, name: str, value: str, now: float, dry_run: bool) -> dict[str, Any]:
        existing = self.ctl.secrets.meta(name)
        if existing is not None and self.ctl.secrets.matches(name, value):
            return {"action": "unchanged", "detail": f"secret/{name} (version {existing.version})"}
        action = "created" if existing is None else "configured"
        if dry_run:
            return {"action": action, "detail": f"secret/{name}"}
        meta = self.ctl.secrets.put(name, value, now)
        return {"action": action, "detail": f"secret/{name} (version {meta.version})"}

    def _apply_lb_record(self, d: TargetGroupDoc | LoadBalancerDoc, now: float, dry_run: bool) -> dict[str, Any]:
        """A TargetGroup or LoadBalancer document: created, replaced (keeping createdAt) or unchanged."""
        existing: TargetGroup | LoadBalancer | None
        if isinstance(d, TargetGroupDoc):
            existing = self.state.target_groups.get((d.cluster, d.name))
        else:
            existing = self.state.load_balancers.get((d.cluster, d.name))
        detail = f"{d.kind.lower()}/{d.name}"
        if existing is not None and existing.spec == d.spec:
            return {"action": "unchanged", "detail": detail}
        if not dry_run:
            created = existing.createdAt if existing else now
            if isinstance(d, TargetGroupDoc):
                self.state.put_target_group(TargetGroup(cluster=d.cluster, spec=d.spec, createdAt=created))
            else:
                self.state.put_load_balancer(LoadBalancer(cluster=d.cluster, spec=d.spec, createdAt=created))
        return {"action": "configured" if existing else "created", "detail": detail}

    def _ensure_cluster(self, name: str, dry_run: bool) -> None:
        if not dry_run and name not in self.state.clusters:
            self.state.put_cluster(Cluster(clusterName=name))

    def register_taskdef(self, spec: TaskDefinitionSpec, now: float, dry_run: bool, ignored: list[str]) -> dict[str, Any]:
        family = spec.family
        revs = self.state.taskdefs.get(family, {})
        h = spec.spec_hash()
        latest = max(revs.values(), key=lambda t: t.revision) if revs else None
        if latest is not None and latest.specHash == h and latest.status == "ACTIVE":
            return {"action": "unchanged", "detail": f"taskdefinition/{latest.ref}", "revision": latest.revision}
        rev = (max(revs) if revs else 0) + 1
        if not dry_run:
            self.state.put_taskdef(TaskDefinition(family=family, revision=rev, spec=spec, specHash=h, registeredAt=now,
                                                  ignoredFields=ignored, tags=resource_tags(spec)))
        return {"action": "registered", "detail": f"taskdefinition/{family}:{rev}", "revision": rev}

    def _apply_service(self, d: ServiceDoc, now: float, dry_run: bool, ignored: list[str]) -> dict[str, Any]:
        spec = d.spec.model_copy(update={"cluster": d.cluster})
        existing = self.state.services.get((d.cluster, d.name))
        spec = autoscale_ops.owned_count(self.state, existing, spec)  # auto scaling owns desiredCount
        if existing is not None and existing.status == "ACTIVE":
            if existing.spec.model_dump() == spec.model_dump():
                return {"action": "unchanged", "detail": f"service/{d.name}"}
            if dry_run:
                return {"action": "configured", "detail": f"service/{d.name}"}
            self._update_service(existing, spec, now)
            existing.ignoredFields = ignored
            if "tags" in (d.spec.model_extra or {}):
                existing.tags = resource_tags(d.spec)
            self.state.put_service(existing)
            return {"action": "configured", "detail": f"service/{d.name}"}
        if dry_run:
            return {"action": "created", "detail": f"service/{d.name}"}
        s = Service(cluster=d.cluster, serviceName=d.name, spec=spec, createdAt=now, ignoredFields=ignored,
                    tags=resource_tags(d.spec))
        td = self.state.resolve_taskdef(spec.taskDefinition)
        assert td is not None  # checked in apply()
        s.deployments = svc_core.new_deployment([], td.ref, spec.desiredCount, now)
        add_event(s, f"(service {s.serviceName}) created with task definition {td.ref}.", now)
        self.state.put_service(s)
        return {"action": "created", "detail": f"service/{d.name}"}

    def _update_service(self, s: Service, spec: ServiceSpec, now: float) -> None:
        old = s.spec
        s.spec = spec
        s.generation += 1
        td = self.state.resolve_taskdef(spec.taskDefinition)
        primary = svc_core.primary_of(s)
        if td is None:
            return
        changed_td = primary is None or primary.taskDefinition != td.ref
        changed_placement = (old.placementConstraints != spec.placementConstraints
                             or old.placementStrategy != spec.placementStrategy)
        if changed_td or changed_placement or (primary and primary.rolloutState == "FAILED"):
            self.ctl.start_deployment(s, td.ref, now)
        elif primary is not None:
            primary.desiredCount = spec.desiredCount
            # Updating the service resets launch throttling (as ECS).
            primary.launchFailures, primary.nextLaunchAt = 0, 0.0

    # ---- delete ---------------------------------------------------------------------------
    def delete_documents(self, documents: list[dict[str, Any]], default_cluster: str) -> list[dict[str, Any]]:
        """Delete what the documents name, all or nothing: every document is parsed and every
        deletion checked (a name that does not exist is reported "not found", not an error)
        before anything changes."""
        parsed: list[tuple[str, Doc]] = []
        errors: list[DocError] = []
        for i, item in enumerate(documents):
            source, body = _item(i, item)
            doc, errs = parse_document(source, body, default_cluster)
            if doc is None:
                errors += errs
            else:
                parsed.append((source, doc))
        if errors:
            raise UserError(f"{len(errors)} invalid document(s) in delete; nothing was deleted", 400, errors=errors)
        plan = [(source, doc, self._deletable(doc)) for source, doc in parsed]  # raises before any change
        results = []
        for source, doc, found in plan:
            if found:
                self._delete(doc)
            results.append({"source": source, "kind": doc.kind, "name": doc.name,
                            "action": "deleted" if found else "not found"})
        self._commit()
        return results

    def _deletable(self, doc: Doc) -> bool:
        """Whether ``doc`` names something that exists; raise if it cannot be deleted."""
        try:
            if doc.kind == "Service":
                self.service(doc.cluster, doc.name)
            elif doc.kind == "TaskDefinition":
                return bool(self.state.taskdefs.get(doc.spec.family))
            elif doc.kind == "Cluster":
                self._check_cluster_empty(self.cluster(doc.name))
            elif doc.kind == "Task":
                return self.state.started_by_exists(doc.cluster, f"manifest/{doc.name}")
            elif doc.kind == "TargetGroup":
                self._check_target_group_unused(doc.cluster, doc.name)
                return (doc.cluster, doc.name) in self.state.target_groups
            elif doc.kind == "LoadBalancer":
                return (doc.cluster, doc.name) in self.state.load_balancers
            elif doc.kind == "Secret":
                return self.ctl.secrets.meta(doc.name) is not None
            elif doc.kind == "ScalingPolicy":
                return (doc.cluster, doc.name) in self.state.scalable_targets
        except UserError as exc:
            if exc.status != 404:
                raise
            return False
        return True

    def _delete(self, doc: Doc) -> None:
        if doc.kind == "Service":
            self._delete_service(self.service(doc.cluster, doc.name))
        elif doc.kind == "TaskDefinition":
            for td in list(self.state.taskdefs.get(doc.spec.family, {}).values()):
                td.status = "INACTIVE"
                self.state.put_taskdef(td)
        elif doc.kind == "Cluster":
            self._delete_cluster(self.cluster(doc.name))
        elif doc.kind == "Secret":
            self.ctl.secrets.delete(doc.name)
        elif doc.kind == "Task":  # the STOPPED ones (in the store only) have nothing to stop
            for t in list(self.state.tasks.values()):
                if t.startedBy == f"manifest/{doc.name}" and t.cluster == doc.cluster:
                    self._stop(t, "Deleted by user")
        elif doc.kind == "TargetGroup":
            self.state.delete_target_group(self.state.target_groups[(doc.cluster, doc.name)])
        elif doc.kind == "LoadBalancer":
            self.state.delete_load_balancer(self.state.load_balancers[(doc.cluster, doc.name)])
        elif doc.kind == "ScalingPolicy":
            autoscale_ops.remove(self.state, doc.cluster, doc.name)

    def _check_target_group_unused(self, cluster: str, name: str) -> None:
        users = [f"service {s.serviceName}" for (c, _), s in sorted(self.state.services.items())
                 if c == cluster and s.status == "ACTIVE" and any(lb.target_group == name for lb in s.spec.loadBalancers)]
        users += [f"load balancer {lb.name}" for (c, _), lb in sorted(self.state.load_balancers.items())
                  if c == cluster and any(name in [n for n, _ in a.targets()]
                                          for ls in lb.spec.listeners
                                          for a in [*ls.defaultActions, *(r.actions[0] for r in ls.rules)])]
        if users:
            raise UserError(f"target group {name} is in use by {', '.join(users)}", 409, field="name",
                            hint="remove it from those first (ELB's ResourceInUse)")

    def delete_target_group(self, cluster: str, name: str) -> TargetGroup:
        tg = self.state.target_groups.get((cluster, name))
        if tg is None:
            raise not_found("target group", name, "list them with: dockyard get targetgroups")
        self._check_target_group_unused(cluster, name)
        self.state.delete_target_group(tg)
        self._commit()
        return tg

    def delete_load_balancer(self, cluster: str, name: str) -> LoadBalancer:
        lb = self.state.load_balancers.get((cluster, name))
        if lb is None:
            raise not_found("load balancer", name, "list them with: dockyard get loadbalancers")
        self.state.delete_load_balancer(lb)
        self._commit()
        return lb

    def delete_service(self, cluster: str, name: str) -> Service:
        """As `aws ecs delete-service --force`: scale to zero, stop tasks, then forget the service."""
        s = self.service(cluster, name)
        self._delete_service(s)
        self._commit()
        return s

    def _delete_service(self, s: Service) -> None:
        now = self.ctl.clock()
        s.status = "DRAINING"
        for t in self.state.service_active_tasks(s.cluster, s.serviceName):  # STOPPED ones: nothing to stop
            if request_stop(t, SERVICE_SCHEDULER_INITIATED, f"Service {s.serviceName} deleted", now,
                            drain=bool(self.ctl.targets.groups_of(t))):
                self.state.put_task(t)
        autoscale_ops.remove(self.state, s.cluster, s.serviceName)
        add_event(s, f"(service {s.serviceName}) deleted; stopping its tasks.", now)
        self.state.put_service(s)

    def deregister_taskdef(self, ref: str) -> TaskDefinition:
        if ":" not in ref:
            raise UserError(f"give the revision to deregister, e.g. {ref}:1", 400, field="taskDefinition")
        td = self.taskdef(ref)
        td.status = "INACTIVE"
        self.state.put_taskdef(td)
        self._commit()
        return td

    def delete_cluster(self, name: str) -> Cluster:
        c = self.cluster(name)
        self._check_cluster_empty(c)
        self._delete_cluster(c)
        self._commit()
        return c

    def _check_cluster_empty(self, c: Cluster) -> None:
        name = c.clusterName
        busy = [s.serviceName for s in self.state.cluster_services(name)]
        running = [t for t in self.state.tasks.values() if t.cluster == name and t.lastStatus != "STOPPED"]
        if busy or running:
            raise UserError(f"cluster {name!r} still has {len(busy)} services and {len(running)} tasks", 409,
                            hint="delete its services and stop its tasks first")

    def _delete_cluster(self, c: Cluster) -> None:
        for n in self.state.cluster_nodes(c.clusterName):
            self.state.delete_node(n)
        self.state.delete_cluster(c)

    def delete_node(self, cluster: str, node_id: str, force: bool = False):
        """Deregister a node. ``force``: even a connected one; its tasks are stopped (service tasks are replaced
        elsewhere). The API revokes its broker credential first, which disconnects it (docs/security.md)."""
        n = self.node(cluster, node_id)
        if n.connected and not force:
            raise UserError(f"node {node_id!r} is connected", 409,
                            hint="stop its agent first, drain it, or delete it with --force (revokes its broker "
                                 "credential and replaces its tasks)")
        now = self.ctl.clock()
        for t in self.state.node_active_tasks(cluster, node_id):
            mark_stopped(t, SERVICE_SCHEDULER_INITIATED if t.serviceName else TASK_FAILED_TO_START,
                         f"Node {node_id} deleted", now)
            self.state.put_task(t)
        self.state.delete_node(n)
        self._commit()
        return n

    # ---- run / stop / scale / drain / rollback ---------------------------------------------
    def run_task(self, cluster: str, spec: RunTaskSpec) -> list[Task]:
        td = self.taskdef(spec.taskDefinition)
        if spec.overrides:
            try:
                apply_overrides(td.spec, spec.overrides)
            except ValueError as e:
                path, _, msg = str(e).removeprefix("@").partition(": ")
                raise UserError(msg, 400, field=path) from None
        if spec.launchType == "FARGATE":
            if not td.spec.is_fargate:
                raise UserError(f"task definition {td.ref} is not FARGATE-compatible", 400, field="launchType",
                                hint="add requiresCompatibilities: [FARGATE] with task cpu/memory")
            errs = fargate_errors(td.spec)
            if errs:
                raise UserError(errs[0].message, 400, field=errs[0].field, hint=errs[0].hint)
        self._ensure_cluster(cluster, False)
        tasks = self._run(cluster, spec, spec.startedBy, self.ctl.clock())
        self._commit()
        return tasks

    def _run(self, cluster: str, spec: RunTaskSpec, started_by: str | None, now: float) -> list[Task]:
        td = self.taskdef(spec.taskDefinition)
        return [self.ctl.create_task(cluster, td, now, started_by=started_by, launch_type=spec.launchType,
                                     constraints=spec.placementConstraints, strategy=spec.placementStrategy,
                                     overrides=spec.overrides, tags=spec.tags, propagate=spec.propagateTags,
                                     managed_tags=spec.enableECSManagedTags)
                for _ in range(spec.count)]

    def stop_task(self, cluster: str, ref: str, reason: str | None) -> Task:
        t = self.task(cluster, ref)
        if self._stop(t, reason or USER_STOP_REASON):
            self._commit()
        return t

    def _stop(self, t: Task, reason: str) -> bool:
        if request_stop(t, USER_INITIATED, reason, self.ctl.clock(), drain=bool(self.ctl.targets.groups_of(t))):
            self.state.put_task(t)
            return True
        return False

    def scale(self, cluster: str, name: str, count: int, event: str | None = None) -> Service:
        """Set desiredCount: `dockyard scale` (clamped to auto scaling's bounds) and the auto scaler
        (``event``: its message) alike, so deployments, placement and draining all apply."""
        if count < 0:
            raise UserError("desiredCount must be >= 0", 400, field="desiredCount")
        s = self.service(cluster, name)
        if s.spec.schedulingStrategy == "DAEMON":
            raise UserError("a DAEMON service runs one task per node and cannot be scaled", 400, field="desiredCount")
        count, note = autoscale_ops.clamp(self.state, cluster, name, count)
        self._update_service(s, s.spec.model_copy(update={"desiredCount": count}), self.ctl.clock())
        add_event(s, event or f"(service {name}) desiredCount set to {count}{note}.", self.ctl.clock())
        self.state.put_service(s)
        self._commit()
        return s

    def force_new_deployment(self, cluster: str, name: str) -> Service:
        """ECS's UpdateService forceNewDeployment: a new deployment of the same task definition,
        which replaces every task (and so resolves their secrets again: the newest versions)."""
        s = self.service(cluster, name)
        if s.status != "ACTIVE":
            raise UserError(f"service {name!r} is {s.status}", 409)
        primary = svc_core.primary_of(s)
        td = self.state.resolve_taskdef(primary.taskDefinition if primary else s.spec.taskDefinition)
        if td is None:
            raise not_found("task definition", s.spec.taskDefinition)
        now = self.ctl.clock()
        self.ctl.start_deployment(s, td.ref, now)
        add_event(s, f"(service {name}) forced a new deployment of task definition {td.ref}.", now)
        self.state.put_service(s)
        self._commit()
        return s

    # ---- secrets (values go in, never out) -------------------------------------------------
    def secrets(self) -> list[SecretMeta]:
        return [m for m in self.ctl.secrets.all_meta() if not m.name.startswith(ACCESS_KEY_PREFIX)]

    # ---- ECS API access keys (SigV4; their secrets kept encrypted in the secret store) -----
    def access_keys(self) -> list[dict[str, Any]]:
        out = []
        for m in self.ctl.secrets.all_meta():
            if m.name.startswith(ACCESS_KEY_PREFIX):
                key_id = m.name[len(ACCESS_KEY_PREFIX):]
                found = self.access_key(key_id)
                out.append({"accessKeyId": key_id, "role": found[1] if found else "admin", "createdAt": m.createdAt})
        return out

    def create_access_key(self, role: Role = "admin") -> dict[str, Any]:
        from orchestrator.ecs_api.auth import new_key

        if role not in ROLES:
            raise UserError(f"unknown role {role!r}", 400, field="role", hint=f"one of: {', '.join(ROLES)}")
        key_id, secret = new_key()
        self.ctl.secrets.put(ACCESS_KEY_PREFIX + key_id, json.dumps({"secret": secret, "role": role}), self.ctl.clock())
        return {"accessKeyId": key_id, "secretAccessKey": secret, "role": role}

    def delete_access_key(self, key_id: str) -> dict[str, Any]:
        if self.ctl.secrets.delete(ACCESS_KEY_PREFIX + key_id) is None:
            raise not_found("access key", key_id, "list them with: dockyard accesskey list")
        return {"accessKeyId": key_id}

    def access_key(self, key_id: str) -> tuple[str, Role] | None:
        """(secret, role) of an access key; a key kept as its bare secret (made before roles) is an admin's."""
        found = self.ctl.secrets.value(ACCESS_KEY_PREFIX + key_id)
        if not found:
            return None
        value = found[1]
        if value.startswith("{"):
            rec = json.loads(value)
            return str(rec["secret"]), "read-only" if rec.get("role") == "read-only" else "admin"
        return value, "admin"

    def access_key_secret(self, key_id: str) -> str | None:
        found = self.access_key(key_id)
        return found[0] if found else None

    def secret(self, name: str) -> SecretMeta:
        meta = self.ctl.secrets.meta(name)
        if meta is None:
            raise not_found("secret", name, "list secrets with: dockyard get secrets")
        return meta

    def put_secret(self, name: str, value: str) -> SecretMeta:
        """Create ``name``, or add a version (as put-secret-value); running tasks keep theirs."""
        if (why := check_name(name)) is not None:
            raise UserError(why, 400, field="name")
        if not value:
            raise UserError("a secret value must not be empty", 400, field="secretString")
        if len(value.encode()) > secrets_core.MAX_VALUE_BYTES:
            raise UserError(f"a secret value is at most {secrets_core.MAX_VALUE_BYTES} bytes", 400, field="secretString")
        return self.ctl.secrets.put(name, value, self.ctl.clock())

    def delete_secret(self, name: str) -> SecretMeta:
        meta = self.ctl.secrets.delete(name)
        if meta is None:
            raise not_found("secret", name, "list secrets with: dockyard get secrets")
        return meta

    def rollback(self, cluster: str, name: str) -> Service:
        """`rollout undo`: redeploy the task definition of the last completed deployment before the primary."""
        s = self.service(cluster, name)
        primary = svc_core.primary_of(s)
        target = svc_core.rollback_target(s.deployments, primary)
        if target is None:
            raise UserError(f"service {name!r} has no earlier completed deployment to roll back to", 409)
        now = self.ctl.clock()
        # Pin the service to that revision so following the family does not undo the undo.
        s.spec = s.spec.model_copy(update={"taskDefinition": target.taskDefinition})
        s.generation += 1
        self.ctl.start_deployment(s, target.taskDefinition, now, rollback=True)
        add_event(s, f"(service {name}) rolling back to task definition {target.taskDefinition}.", now)
        self.state.put_service(s)
        self._commit()
        return s

    def set_node_status(self, cluster: str, node_id: str, status: Literal["ACTIVE", "DRAINING"]) -> Node:
        n = self.node(cluster, node_id)
        n.status = status
        self.state.put_node(n)
        self.state.mark_node_dirty((cluster, node_id))
        self._commit()
        return n
