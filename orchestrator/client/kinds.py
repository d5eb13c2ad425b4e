"""The object kinds client commands name (``get svc``, ``delete td web:3``) and how a name matches."""
from __future__ import annotations

from typing import Any

import click

KIND_ALIASES = {
    "service": "service", "services": "service", "svc": "service",
    "taskdefinition": "taskdefinition", "taskdefinitions": "taskdefinition", "td": "taskdefinition",
    "task-definition": "taskdefinition", "task-definitions": "taskdefinition", "taskdef": "taskdefinition",
    "task": "task", "tasks": "task",
    "node": "node", "nodes": "node",
    "cluster": "cluster", "clusters": "cluster",
    "targetgroup": "targetgroup", "targetgroups": "targetgroup", "tg": "targetgroup",
    "loadbalancer": "loadbalancer", "loadbalancers": "loadbalancer", "lb": "loadbalancer",
    "secret": "secret", "secrets": "secret",
}
PLURAL = {"service": "services", "taskdefinition": "taskdefinitions", "task": "tasks", "node": "nodes", "cluster": "clusters",
          "targetgroup": "targetgroups", "loadbalancer": "loadbalancers", "secret": "secrets"}


class KindType(click.ParamType):
    name = "KIND"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        kind = KIND_ALIASES.get(str(value).lower())
        if kind is None:
            self.fail(f"unknown kind {value!r}; use one of: clusters, taskdefinitions (td), services (svc), tasks, nodes, "
                      "targetgroups (tg), loadbalancers (lb), secrets", param, ctx)
        return kind


KIND = KindType()


def name_of(kind: str, obj: dict[str, Any]) -> str:
    if kind == "service":
        return str(obj.get("serviceName"))
    if kind == "taskdefinition":
        return f"{obj.get('family')}:{obj.get('revision')}"
    if kind == "task":
        return str(obj.get("taskId"))
    if kind == "node":
        return str(obj.get("nodeId"))
    if kind in ("targetgroup", "loadbalancer", "secret"):
        return str(obj.get("name"))
    return str(obj.get("clusterName"))


def matches(kind: str, obj: dict[str, Any], name: str) -> bool:
    if kind == "taskdefinition" and ":" not in name:
        return obj.get("family") == name
    if kind == "task":
        return str(obj.get("taskId", "")).startswith(name)
    return name_of(kind, obj) == name
