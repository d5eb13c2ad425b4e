"""The shell's appliers of the task decisions in orchestrator.core.tasks: set the fields a core
function returned on the Task record (the caller then puts it into the State)."""
from __future__ import annotations

from typing import Any

from dockyard.wire import StopCode, TaskReport
from orchestrator import metrics
from orchestrator.core.tasks import Outcome, fold_report, stop_changes, stopped_changes
from orchestrator.models import Task


def apply_changes(task: Task, changes: dict[str, Any], now: float | None = None) -> None:
    """The shell's side: set the fields a core function decided on (and count a lastStatus
    change in the metrics; with ``now``, time its first RUNNING from placement)."""
    status = changes.get("lastStatus")
    if status is not None and status != task.lastStatus:
        metrics.transition(status, changes.get("stopCode", task.stopCode))
        if status == "RUNNING" and now is not None and task.startedAt is None:
            metrics.PLACED_TO_RUNNING.observe(max(0.0, now - (task.placedAt or task.createdAt)))
    set_fields(task, changes)


def set_fields(task: Task, changes: dict[str, Any]) -> None:
    """Set Task fields as pydantic's ``__setattr__`` does for a model without assignment
    validation (the value into ``__dict__``, the name into the fields set), without its
    per-attribute dispatch: ~1 us a field, a few fields for each of a placement's reports.
    ``changes`` names fields only (the core functions' results)."""
    task.__dict__.update(changes)
    task.__pydantic_fields_set__.update(changes)


def apply_report(task: Task, r: TaskReport, now: float) -> Outcome:
    """:func:`fold_report` and apply it (for the shell and tests)."""
    changes, out = fold_report(task, r, now)
    apply_changes(task, changes, now)
    return out


def mark_stopped(task: Task, stop_code: StopCode, reason: str, now: float) -> None:
    """Apply :func:`stopped_changes` (for the shell and tests)."""
    apply_changes(task, stopped_changes(task, stop_code, reason, now))


def request_stop(task: Task, stop_code: StopCode, reason: str, now: float, drain: bool = False) -> bool:
    """Apply :func:`stop_changes`; False if the task was already asked to stop."""
    changes = stop_changes(task, stop_code, reason, now, drain)
    if changes is None:
        return False
    apply_changes(task, changes)
    return True
