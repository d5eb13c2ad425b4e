"""The shell's appliers of the task decisions in orchestrator.core.tasks: set the fields a core
function returned on the Task record (the caller then puts it into the State)."""
from __future__ import annotations

from typing import Any

from dockyard.wire import StopCode, TaskReport
from orchestrator.core.tasks import Outcome, fold_report, stop_changes, stopped_changes
from orchestrator.models import Task


def apply_changes(task: Task, changes: dict[str, Any]) -> None:
    """The shell's side: set the fields a core function decided on."""
    for k, v in changes.items():
        setattr(task, k, v)


def apply_report(task: Task, r: TaskReport, now: float) -> Outcome:
    """:func:`fold_report` and apply it (for the shell and tests)."""
    changes, out = fold_report(task, r, now)
    apply_changes(task, changes)
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
