"""Server-side reading of applied documents: which kind each is, and its validated spec.

Accepted shapes:

* ``apiVersion: dockyard/v1`` manifests: ``kind: Cluster|TaskDefinition|Service|Task|Secret|ScalingPolicy``
  (and the load balancer's kinds),
  ``metadata: {name, cluster, labels}``, ``spec:`` in ECS field names;
* a bare ECS task definition (``family`` + ``containerDefinitions``), as
  ``aws ecs register-task-definition --cli-input-json`` takes it;
* a bare CreateService body (``serviceName`` + ``taskDefinition``).

Every problem is returned as a :class:`DocError` with the document, the field path and a
hint; nothing is applied unless every document is valid.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from dockyard.ecs import TaskDefinitionSpec
from dockyard.ecs_compat import taskdef_errors
from dockyard.lb import LoadBalancerSpec, TargetGroupSpec
from orchestrator.autoscaling_models import ScalingSpec
from orchestrator.core import query
from orchestrator.models import ClusterSpec, RunTaskSpec, SecretSpec, ServiceSpec

API_VERSION = "dockyard/v1"
KINDS = ("Cluster", "TaskDefinition", "Service", "Task", "TargetGroup", "LoadBalancer", "Secret", "ScalingPolicy")


@dataclass
class DocError:
    source: str
    message: str
    field: str = ""
    kind: str = ""
    name: str = ""
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class _Doc:
    source: str
    name: str
    cluster: str  # the document's own, else the apply's default
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ClusterDoc(_Doc):
    spec: ClusterSpec = field(kw_only=True)
    kind: Literal["Cluster"] = "Cluster"


@dataclass
class TaskDefinitionDoc(_Doc):
    spec: TaskDefinitionSpec = field(kw_only=True)
    kind: Literal["TaskDefinition"] = "TaskDefinition"


@dataclass
class ServiceDoc(_Doc):
    spec: ServiceSpec = field(kw_only=True)
    kind: Literal["Service"] = "Service"


@dataclass
class TaskDoc(_Doc):
    spec: RunTaskSpec = field(kw_only=True)
    kind: Literal["Task"] = "Task"


@dataclass
class TargetGroupDoc(_Doc):
    spec: TargetGroupSpec = field(kw_only=True)
    kind: Literal["TargetGroup"] = "TargetGroup"


@dataclass
class LoadBalancerDoc(_Doc):
    spec: LoadBalancerSpec = field(kw_only=True)
    kind: Literal["LoadBalancer"] = "LoadBalancer"


@dataclass
class SecretDoc(_Doc):
    spec: SecretSpec = field(kw_only=True)
    kind: Literal["Secret"] = "Secret"


@dataclass
class ScalingPolicyDoc(_Doc):
    """A service's auto scaling (metadata.name = the service): orchestrator.autoscaling_models."""

    spec: ScalingSpec = field(kw_only=True)
    kind: Literal["ScalingPolicy"] = "ScalingPolicy"


# One applied document, told apart by ``kind`` (mypy narrows ``spec`` on it).
Doc = (ClusterDoc | TaskDefinitionDoc | ServiceDoc | TaskDoc | TargetGroupDoc | LoadBalancerDoc | SecretDoc
       | ScalingPolicyDoc)
_DOC_CLASSES: dict[str, type[_Doc]] = {"Cluster": ClusterDoc, "TaskDefinition": TaskDefinitionDoc,
                                        "Service": ServiceDoc, "Task": TaskDoc, "TargetGroup": TargetGroupDoc,
                                        "LoadBalancer": LoadBalancerDoc, "Secret": SecretDoc,
                                        "ScalingPolicy": ScalingPolicyDoc}


def _join(prefix: str, path: str) -> str:
    """An ECS path (``containerDefinitions[0].memory``) under a manifest prefix (``spec``)."""
    return f"{prefix}.{path}" if prefix and path else prefix or path


def _path(loc: tuple[Any, ...], prefix: str) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_HINTS = {
    "missing": "add this field",
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "bool_parsing": "use true or false",
    "list_type": "use a list",
    "dict_type": "use a mapping",
    "string_type": "use a string (quote it in YAML)",
    "literal_error": "",
    "too_short": "",
    "too_long": "",
    "extra_forbidden": "remove this field",
}


def _errors(exc: ValidationError, source: str, kind: str, name: str, prefix: str) -> list[DocError]:
    echo = kind != "Secret"  # never repeat a (part of a) secret value in an error
    out = []
    for e in exc.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"].removeprefix("Value error, ")
        if msg.startswith("@") and ": " in msg:  # a model rule that names its own field (dockyard/ecs.py)
            where, msg = msg[1:].split(": ", 1)
            loc = loc + tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", where) if p)
        if echo and e["type"] not in ("missing",) and "input" in e and not isinstance(e["input"], (dict, list)):
            msg += f" (got {e['input']!r})"
        out.append(DocError(source, msg, _path(loc, prefix), kind, name, _HINTS.get(e["type"], "")))
    return out


def _validate(model: type[BaseModel], data: Any, source: str, kind: str, name: str, prefix: str, errors: list[DocError]):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors.extend(_errors(exc, source, kind, name, prefix))
        return None


def _check_constraints(spec: Any, source: str, kind: str, name: str, prefix: str, errors: list[DocError]) -> None:
    for i, c in enumerate(getattr(spec, "placementConstraints", []) or []):
        path = _path(("placementConstraints", i, "expression"), prefix)
        if c.type == "memberOf":
            if not c.expression:
                errors.append(DocError(source, "memberOf needs an expression", path, kind, name,
                                       "e.g. attribute:zone in [a, b]"))
                continue
            try:
                query.parse(c.expression)
            except query.QueryError as exc:
                errors.append(DocError(source, str(exc), path, kind, name, "see docs/architecture.md#placement"))
        elif c.expression:
            errors.append(DocError(source, "distinctInstance takes no expression", path, kind, name, "remove expression"))


def parse_document(source: str, doc: Any, default_cluster: str) -> tuple[Doc | None, list[DocError]]:
    errors: list[DocError] = []
    if not isinstance(doc, dict):
        return None, [DocError(source, f"a document must be a mapping, got {type(doc).__name__}")]
    if "kind" in doc or "apiVersion" in doc:
        api = doc.get("apiVersion")
        kind = doc.get("kind")
        meta = doc.get("metadata") or {}
        spec = doc.get("spec")
        name = meta.get("name", "") if isinstance(meta, dict) else ""
        if api != API_VERSION:
            errors.append(DocError(source, f"unsupported apiVersion {api!r}", "apiVersion", str(kind or ""), name,
                                   f"use apiVersion: {API_VERSION}"))
        if kind not in KINDS:
            errors.append(DocError(source, f"unknown kind {kind!r}", "kind", "", name, f"use one of {', '.join(KINDS)}"))
        if not isinstance(meta, dict):
            errors.append(DocError(source, "metadata must be a mapping", "metadata", str(kind), "", "metadata: {name: web}"))
            meta = {}
        if not name or not isinstance(name, str):
            errors.append(DocError(source, "metadata.name is required", "metadata.name", str(kind or ""), "",
                                   "add metadata: {name: ...}"))
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            errors.append(DocError(source, "spec must be a mapping", "spec", str(kind), name, ""))
        if errors:
            return None, errors
        cluster = meta.get("cluster") or None
        labels = meta.get("labels") or {}
        spec = dict(spec)
        if kind == "Cluster":
            spec.setdefault("clusterName", name)
        elif kind == "TaskDefinition":
            spec.setdefault("family", name)
        elif kind in ("Service", "ScalingPolicy"):
            spec.setdefault("serviceName", name)
        elif kind in ("TargetGroup", "LoadBalancer", "Secret"):
            spec.setdefault("name", name)
        models: dict[str, type[BaseModel]] = {"Cluster": ClusterSpec, "TaskDefinition": TaskDefinitionSpec,
                                              "Service": ServiceSpec, "Task": RunTaskSpec,
                                              "TargetGroup": TargetGroupSpec, "LoadBalancer": LoadBalancerSpec,
                                              "Secret": SecretSpec, "ScalingPolicy": ScalingSpec}
        parsed = _validate(models[str(kind)], spec, source, str(kind), name, "spec", errors)
        prefix = "spec"
    elif "family" in doc or "containerDefinitions" in doc:
        kind, name, prefix, cluster, labels = "TaskDefinition", str(doc.get("family", "")), "", None, {}
        parsed = _validate(TaskDefinitionSpec, doc, source, kind, name, "", errors)
    elif "serviceName" in doc:
        kind, name, prefix, labels = "Service", str(doc.get("serviceName", "")), "", {}
        cluster = doc.get("cluster") if isinstance(doc.get("cluster"), str) else None
        parsed = _validate(ServiceSpec, doc, source, kind, name, "", errors)
    else:
        return None, [DocError(source, "cannot tell what this document is",
                               hint="use apiVersion: dockyard/v1 with kind and spec, a bare ECS task definition "
                                    "(family + containerDefinitions) or a CreateService body (serviceName + taskDefinition)")]
    if parsed is None:
        return None, errors
    if kind == "Service" and getattr(parsed, "cluster", None):
        cluster = cluster or parsed.cluster
    if kind in ("Service", "Task", "TaskDefinition"):
        _check_constraints(parsed, source, kind, name, prefix, errors)
    if kind == "Service":
        cfg = parsed.deploymentConfiguration
        if parsed.schedulingStrategy == "REPLICA" and cfg.maximumPercent == 100 and cfg.minimumHealthyPercent == 100:
            errors.append(DocError(source, "maximumPercent 100 with minimumHealthyPercent 100 leaves no room to replace tasks",
                                   _path(("deploymentConfiguration",), prefix), kind, name,
                                   "raise maximumPercent (e.g. 200) or lower minimumHealthyPercent"))
    if kind == "TaskDefinition" and isinstance(parsed, TaskDefinitionSpec):
        errors.extend(fargate_errors(parsed, source, name, prefix))
        errors.extend(DocError(source, msg, _join(prefix, path), kind, name, hint)
                      for path, msg, hint in taskdef_errors(parsed))
    if errors:
        return None, errors
    if not isinstance(labels, dict):
        labels = {}
    doc = _DOC_CLASSES[str(kind)](source, name, cluster or default_cluster,  # type: ignore[call-arg]
                                  {str(k): str(v) for k, v in labels.items()}, spec=parsed)
    return doc, []  # type: ignore[return-value]


# ECS Fargate task sizes: cpu units -> allowed memory MiB.
FARGATE_SIZES: dict[int, list[int]] = {
    256: [512, 1024, 2048],
    512: list(range(1024, 4097, 1024)),
    1024: list(range(2048, 8193, 1024)),
    2048: list(range(4096, 16385, 1024)),
    4096: list(range(8192, 30721, 1024)),
    8192: list(range(16384, 61441, 4096)),
    16384: list(range(32768, 122881, 8192)),
}


def fargate_errors(td: TaskDefinitionSpec, source: str = "", name: str = "", prefix: str = "") -> list[DocError]:
    """ECS's rules for a task definition that requires FARGATE compatibility."""
    if not td.is_fargate:
        return []
    errs: list[DocError] = []
    kind = "TaskDefinition"

    def err(path: str, msg: str, hint: str = "") -> None:
        errs.append(DocError(source, msg, _path(tuple(int(p) if p.isdigit() else p for p in path.split(".")), prefix) if path else prefix, kind, name, hint))

    sizes = ", ".join(f"{c}: {m[0]}-{m[-1]}" for c, m in FARGATE_SIZES.items())
    if td.cpu is None or td.memory is None:
        err("cpu" if td.cpu is None else "memory", "FARGATE requires task-level cpu and memory",
            f"valid cpu/memory combinations (units: MiB): {sizes}")
    elif td.cpu not in FARGATE_SIZES or td.memory not in FARGATE_SIZES[td.cpu]:
        err("memory" if td.cpu in FARGATE_SIZES else "cpu",
            f"cpu {td.cpu} with memory {td.memory} is not a valid FARGATE size",
            f"valid combinations (cpu: memory range MiB): {sizes}")
    if td.networkMode not in (None, "awsvpc"):
        err("networkMode", f"FARGATE requires networkMode awsvpc, got {td.networkMode}", "set networkMode: awsvpc")
    if td.placementConstraints:
        err("placementConstraints", "FARGATE tasks do not support placement constraints", "remove placementConstraints")
    for i, v in enumerate(td.volumes):
        if v.bind_path is not None or v.dockerVolumeConfiguration is not None:
            what = "host.sourcePath" if v.bind_path is not None else "dockerVolumeConfiguration"
            err(f"volumes.{i}.{what.split('.')[0]}", f"FARGATE tasks do not support {what} volumes (as in ECS)",
                "leave out host to get a task-scoped volume, or use EC2")
    for i, c in enumerate(td.containerDefinitions):
        base = f"containerDefinitions.{i}"
        if c.privileged:
            err(f"{base}.privileged", "FARGATE does not allow privileged containers", "remove privileged")
        for j, pm in enumerate(c.portMappings):
            if pm.hostPort not in (None, 0, pm.containerPort):
                err(f"{base}.portMappings.{j}.hostPort",
                    f"FARGATE requires hostPort to equal containerPort ({pm.containerPort}) or be omitted",
                    "remove hostPort")
    return errs
