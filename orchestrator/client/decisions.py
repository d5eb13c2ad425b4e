"""Pure decisions of the client, from the API's JSON: ``run --wait`` exit codes, ``rollout status`` verdicts.

No I/O; the time is passed in (``now``), so they are unit tested without a server or a clock.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from orchestrator import render


def task_exit_status(task: dict[str, Any], essential: set[str] | None) -> tuple[int, str]:
    """Exit code and one-line summary of a STOPPED task, as ``docker run`` would report it.

    The code is that of the first essential container (task-definition order) that has an
    exit code; ``essential=None`` (task definition unknown) treats every container as
    essential. A task that stopped without any exit code (TaskFailedToStart, lost node...)
    exits 1 and the summary carries the stoppedReason.
    """
    tid = render.short_id(task.get("taskId"))
    why = ": ".join(str(x) for x in (task.get("stopCode"), task.get("stoppedReason")) if x)
    for c in task.get("containers") or []:
        if essential is not None and c.get("name") not in essential:
            continue
        code = c.get("exitCode")
        if code is None:
            continue
        try:
            code = int(code)
        except (TypeError, ValueError):
            continue
        text = f"task {tid} stopped: container {c.get('name')} exited with code {code}"
        if c.get("reason"):
            text += f" ({c['reason']})"
        if why:
            text += f" [{why}]"
        return (code if 0 <= code <= 255 else 1), text
    return 1, f"task {tid} stopped without an exit code: {why or 'no reason given'}"


def run_exit_code(tasks: list[dict[str, Any]], essential: set[str] | None) -> tuple[int, list[str]]:
    """Exit code of ``run --wait``: the first non-zero task exit code (task order), else 0."""
    code, lines = 0, []
    for t in tasks:
        c, line = task_exit_status(t, essential)
        lines.append(line)
        if code == 0 and c != 0:
            code = c
    return code, lines


def essential_containers(taskdef: dict[str, Any]) -> set[str] | None:
    spec = taskdef.get("spec") or taskdef
    defs = spec.get("containerDefinitions")
    if not defs:
        return None
    return {str(c.get("name")) for c in defs if c.get("essential", True)}


@dataclass
class RolloutVerdict:
    state: str  # "progress" | "complete" | "failed"
    tracked: str | None  # id of the deployment being followed
    message: str


def rollout_verdict(service: dict[str, Any], initial_ids: set[str], tracked: str | None,
                    now: float | None = None) -> RolloutVerdict:
    """Decide ``rollout status`` from one snapshot of the service.

    ``initial_ids``: ids of the deployments that existed when the command started;
    ``tracked``: the deployment followed so far (None on the first call). Failed when the
    followed deployment turned FAILED, or when a rollback deployment appeared that was not
    there at the start (the circuit breaker rolled back: the PRIMARY is then the rollback), or
    was there at the start next to the FAILED deployment it replaced (the same outcome, seen late).
    A new non-rollback PRIMARY (someone applied again) is followed instead.
    """
    name = service.get("serviceName")
    now = time.time() if now is None else now
    deps = [d for d in service.get("deployments") or [] if isinstance(d, dict)]
    by_id = {d.get("id"): d for d in deps}
    if service.get("status") in ("DRAINING", "INACTIVE"):
        return RolloutVerdict("failed", tracked, f"service {name} is being deleted (status {service.get('status')})")
    if tracked and tracked in by_id and by_id[tracked].get("rolloutState") == "FAILED":
        d = by_id[tracked]
        return RolloutVerdict("failed", tracked, f"deployment {tracked} ({d.get('taskDefinition')}) failed: {d.get('rolloutStateReason') or 'no reason given'}")
    # Only the circuit breaker makes rollbacks: one found at the start (the bad revision failed
    # before the command's first look, as a task that exits at once does) is the same failure.
    replaced = next((d for d in deps if d.get("rolloutState") == "FAILED" and not d.get("isRollback")), None)
    for d in deps:
        if d.get("isRollback") and (d.get("id") not in initial_ids or (tracked is None and replaced is not None)):
            old = by_id.get(tracked) or replaced or {}
            reason = old.get("rolloutStateReason") or d.get("rolloutStateReason") or "circuit breaker triggered"
            what = f"deployment {old.get('id')} ({old.get('taskDefinition')})" if old else "the deployment"
            return RolloutVerdict("failed", tracked, f"{what} failed and was rolled back to {d.get('taskDefinition')}: {reason}")
    primary = next((d for d in deps if d.get("status") == "PRIMARY"), None)
    gen, observed = service.get("generation"), service.get("observedGeneration")
    if isinstance(gen, int) and isinstance(observed, int) and observed < gen:
        return RolloutVerdict("progress", tracked, f"waiting for the service controller to observe generation {gen} (observed {observed})")
    if primary is None:
        return RolloutVerdict("progress", tracked, f"waiting for a deployment of service {name}")
    tracked = primary.get("id")
    state = primary.get("rolloutState")
    counts = (
        f"{primary.get('runningCount', 0)}/{primary.get('desiredCount', 0)} running, "
        f"{primary.get('pendingCount', 0)} pending, {primary.get('failedTasks', 0)} failed"
    )
    if state == "FAILED":
        return RolloutVerdict("failed", tracked, f"deployment {tracked} ({primary.get('taskDefinition')}) failed: {primary.get('rolloutStateReason') or 'no reason given'}")
    if state == "COMPLETED":
        return RolloutVerdict("complete", tracked, f"service {name} successfully rolled out {primary.get('taskDefinition')} ({counts})")
    others = [d for d in deps if d is not primary and d.get("status") != "INACTIVE" and (d.get("runningCount") or 0) > 0]
    old_running = f"; {sum(d.get('runningCount') or 0 for d in others)} old task(s) running" if others else ""
    head = f"deployment {tracked} ({primary.get('taskDefinition')})"
    bake_ends = primary.get("bakeEndsAt")
    if isinstance(bake_ends, (int, float)):  # every task proven: the bake decides COMPLETED or rollback
        left = max(0, math.ceil(bake_ends - now))
        return RolloutVerdict("progress", tracked, f"{head} baking: all {primary.get('provenCount', 0)} tasks proven "
                              f"healthy, completes in {left}s unless a task fails ({primary.get('failedTasks', 0)} failed){old_running}")
    dc = (service.get("spec") or {}).get("deploymentConfiguration") or {}
    proof = dc.get("minimumHealthyTimeSeconds")
    proven = (f", {primary.get('provenCount', 0)}/{primary.get('desiredCount', 0)} proven healthy ({proof}s each)"
              if proof is not None else "")
    return RolloutVerdict("progress", tracked, f"{head} {state or 'IN_PROGRESS'}: {counts}{proven}{old_running}")
