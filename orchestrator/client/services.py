"""``scale`` and ``rollout status|history|undo``."""
from __future__ import annotations

import sys

import click

from orchestrator import render
from orchestrator.client.api import unwrap
from orchestrator.client.decisions import rollout_verdict
from orchestrator.client.errors import CliError
from orchestrator.client.session import (
    Session,
    cluster_option,
    out,
    pass_session,
    print_objects,
)

POLL_SECONDS = 0.5


@click.command()
@click.argument("service")
@click.argument("count", type=click.IntRange(min=0), metavar="N")
@cluster_option
@pass_session
def scale(s: Session, service: str, count: int) -> None:
    """Set a service's desiredCount."""
    s.api.post(s.api.cpath("services", service, "scale"), {"desiredCount": count})
    out(f"service/{service} scaled to {count}")


@click.group()
def rollout() -> None:
    """Follow, list and undo service deployments."""


@rollout.command("status")
@click.argument("service")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Give up after this long (exit 1). Default: no limit.")
@cluster_option
@pass_session
def rollout_status(s: Session, service: str, timeout: float | None) -> int:
    """Wait for the service's deployment to finish: exit 0 when COMPLETED, 1 when it fails or is rolled back."""
    api, clock = s.api, s.clock
    tty = sys.stdout.isatty()
    deadline = clock.monotonic() + timeout if timeout else None
    initial: set[str] | None = None
    tracked: str | None = None
    shown = ""
    while True:
        svc = unwrap(api.get(api.cpath("services", service)), "service")
        if initial is None:
            initial = {str(d.get("id")) for d in svc.get("deployments") or [] if isinstance(d, dict)}
        verdict = rollout_verdict(svc, initial, tracked, now=clock.wallclock())
        tracked = verdict.tracked
        if verdict.state != "progress":
            if tty and shown:
                click.echo("\r\x1b[K", nl=False)
            if verdict.state == "complete":
                out(verdict.message)
                return 0
            raise CliError(verdict.message)
        if verdict.message != shown:
            if tty:
                click.echo("\r\x1b[K" + verdict.message, nl=False)
            else:
                out(verdict.message)
            shown = verdict.message
        if deadline is not None and clock.monotonic() >= deadline:
            if tty:
                click.echo("")
            raise CliError(f"timed out after {timeout:g} s waiting for service {service} to roll out: {verdict.message}")
        clock.sleep(POLL_SECONDS)


@rollout.command("history")
@click.argument("service")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
@cluster_option
@pass_session
def rollout_history(s: Session, service: str, output: str) -> None:
    """List the service's deployments, newest first."""
    deps = s.api.get(s.api.cpath("services", service, "deployments")).get("deployments") or []
    if output != "table":
        return print_objects(deps, output)
    if not deps:
        click.echo(f"No deployments of service {service}.", err=True)
        return None
    out(render.deployments_table(deps, s.clock.wallclock()))
    return None


@rollout.command("restart")
@click.argument("service")
@cluster_option
@pass_session
def rollout_restart(s: Session, service: str) -> None:
    """Start a new deployment of the service's current task definition (ECS's update-service
    --force-new-deployment): every task is replaced, and the new ones get the newest secret versions."""
    svc = unwrap(s.api.post(s.api.cpath("services", service, "force-new-deployment")), "service")
    td = render.service_taskdef(svc) if svc else None
    out(f"service/{service} restarting" + (f" ({td})" if td else "") + f"; follow it with: dockyard rollout status {service}")


@rollout.command("undo")
@click.argument("service")
@cluster_option
@pass_session
def rollout_undo(s: Session, service: str) -> None:
    """Roll the service back to the task definition of its previous deployment."""
    svc = unwrap(s.api.post(s.api.cpath("services", service, "rollback")), "service")
    td = render.service_taskdef(svc) if svc else None
    out(f"service/{service} rolled back" + (f" to {td}" if td else ""))
