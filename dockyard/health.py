"""The task-health rule (ECS's): a task's health follows its essential containers that have a
health check: UNHEALTHY if any of them is, HEALTHY when all of them are, UNKNOWN otherwise or
when none has a check. An essential sidecar without a check must not block a rollout forever.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any


def task_health(containers: Iterable[tuple[str, str]], checked: Collection[str]) -> str:
    """``containers``: (name, healthStatus) as reported; ``checked``: the names of the essential
    containers that have a health check."""
    if not checked:
        return "UNKNOWN"
    states = [h for name, h in containers if name in checked]
    if "UNHEALTHY" in states:
        return "UNHEALTHY"
    if len(states) == len(checked) and all(s == "HEALTHY" for s in states):
        return "HEALTHY"
    return "UNKNOWN"


def is_healthy(last_status: str, health: str, has_check: bool) -> bool:
    """Healthy for a service: RUNNING, and HEALTHY when it has a health check."""
    return last_status == "RUNNING" and (health == "HEALTHY" or not has_check)


def checked_containers(definitions: Iterable[Any]) -> frozenset[str]:
    """The names of the essential containers that have a health check (``task_health``'s
    ``checked``), from container definitions (``name``, ``essential``, ``healthCheck``)."""
    return frozenset(d.name for d in definitions if d.essential and d.healthCheck)


def with_targets(health: str, has_check: bool, targets: str | None) -> tuple[str, bool]:
    """A load-balancer target's health for a service (ECS: RUNNING *and* healthy in its target
    groups): ``targets`` is core.targets.target_health's answer, None for a task in no group.
    Unhealthy in a target group counts as UNHEALTHY (the task is replaced, after the grace period)."""
    if targets is None:
        return health, has_check
    if "UNHEALTHY" in (health, targets):
        return "UNHEALTHY", True
    if targets == "HEALTHY" and (health == "HEALTHY" or not has_check):
        return "HEALTHY", True
    return "UNKNOWN", True
