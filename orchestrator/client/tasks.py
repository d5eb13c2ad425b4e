"""``run`` (one-off tasks; ``--wait`` exits like ``docker run``) and ``stop``."""
from __future__ import annotations

from typing import Any

import click

from orchestrator import render
from orchestrator.client.api import ApiClient, seg, unwrap
from orchestrator.client.decisions import essential_containers, run_exit_code
from orchestrator.client.errors import CliError, UnreachableError
from orchestrator.client.session import (
    Clock,
    Session,
    cluster_option,
    out,
    pass_session,
    warn,
)

POLL_SECONDS = 0.2


def wait_for_tasks(api: ApiClient, clock: Clock, task_ids: list[str], timeout: float | None) -> list[dict[str, Any]]:
    """Poll each task until it is STOPPED; status changes go to stderr. Returns the final records."""
    deadline = clock.monotonic() + timeout if timeout else None
    final: dict[str, dict[str, Any]] = {}
    last: dict[str, str] = {}
    warned = False
    while True:
        for tid in task_ids:
            if tid in final:
                continue
            try:
                task = unwrap(api.get(api.cpath("tasks", tid)), "task")
            except UnreachableError as e:
                if not warned:
                    warn(f"{e.lines[0]}; retrying")
                    warned = True
                break
            status = str(task.get("lastStatus"))
            if last.get(tid) != status:
                last[tid] = status
                where = f" on {task['nodeId']}" if task.get("nodeId") else ""
                reason = f" ({task['pendingReason']})" if task.get("pendingReason") and status != "STOPPED" else ""
                click.echo(f"task {render.short_id(tid)} {status}{where}{reason}", err=True)
            if status == "STOPPED":
                final[tid] = task
        if len(final) == len(task_ids):
            return [final[t] for t in task_ids]
        if deadline is not None and clock.monotonic() >= deadline:
            waiting = [f"{render.short_id(t)} ({last.get(t, 'unknown')})" for t in task_ids if t not in final]
            raise CliError(
                f"timed out after {timeout:g} s waiting for task(s) to stop: {', '.join(waiting)}; "
                f"they keep running (stop them with: dockyard stop TASK)"
            )
        clock.sleep(POLL_SECONDS)


@click.command()
@click.argument("taskdef", metavar="TASKDEF")
@click.option("--count", type=click.IntRange(1, 10), default=1, show_default=True, help="Number of tasks (1-10, as ECS).")
@click.option("--launch-type", type=click.Choice(["EC2", "FARGATE"], case_sensitive=False), default="EC2", show_default=True)
@click.option("--wait", is_flag=True, help="Wait until the tasks stop; exit with the essential container's exit code.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="With --wait: give up after this long (exit 1). Default: no limit.")
@cluster_option
@pass_session
def run(s: Session, taskdef: str, count: int, launch_type: str, wait: bool, timeout: float | None) -> int:
    """Run one-off tasks of TASKDEF (family or family:revision); prints the task ids."""
    api = s.api
    # The API starts all `count` tasks or answers an error; tasks it cannot place yet stay
    # PENDING with a pendingReason (shown by --wait).
    data = api.post(api.cpath("tasks"), {"taskDefinition": taskdef, "count": count, "launchType": launch_type.upper()})
    tasks = data.get("tasks") or []
    for t in tasks:
        out(str(t.get("taskId")))
    if not tasks:
        raise CliError("no task was started")
    if not wait:
        return 0
    ids = [str(t.get("taskId")) for t in tasks]
    stopped = wait_for_tasks(api, s.clock, ids, timeout)
    essential: set[str] | None = None
    ref = stopped[0].get("taskDefinition") or taskdef
    try:
        essential = essential_containers(unwrap(api.get(f"/v1/taskdefinitions/{seg(ref)}"), "taskDefinition"))
    except CliError:
        essential = None  # unknown: every container counts
    code, lines = run_exit_code(stopped, essential)
    for line in lines:
        out(line)
    return code


@click.command()
@click.argument("task")
@click.option("--reason", metavar="TEXT", help="Recorded as the task's stoppedReason.")
@cluster_option
@pass_session
def stop(s: Session, task: str, reason: str | None) -> None:
    """Stop a task (id or unique id prefix)."""
    data = s.api.post(s.api.cpath("tasks", task, "stop"), {"reason": reason})
    tid = unwrap(data, "task").get("taskId") or task
    out(f"task/{tid} stopping")
