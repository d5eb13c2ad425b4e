"""``get`` (tables, or the API's objects as JSON/YAML) and ``describe`` (one page per object)."""
from __future__ import annotations

from typing import Any

import click

from orchestrator import render, render_lb
from orchestrator.client.api import ApiClient, seg, unwrap
from orchestrator.client.errors import CliError
from orchestrator.client.kinds import KIND, PLURAL, matches
from orchestrator.client.session import (
    Session,
    cluster_option,
    out,
    pass_session,
    print_objects,
)


def fetch_tasks(api: ApiClient, service: str | None = None, include_stopped: bool = False) -> list[dict[str, Any]]:
    """Tasks not yet STOPPED (or all with include_stopped), oldest first.

    Asks for desiredStatus RUNNING and STOPPED separately, so tasks on their way down
    (desired STOPPED, last status not yet STOPPED) are listed too, whatever the server's
    default filter is. Without include_stopped it asks the server to leave out the tasks that
    reached STOPPED (``stopped=false``): the 24 h history can be 100,000 of them.
    """
    seen: dict[str, dict[str, Any]] = {}
    for desired in ("RUNNING", "STOPPED"):
        data = api.get(api.cpath("tasks"), desiredStatus=desired, service=service,
                       stopped=None if include_stopped else "false")
        for t in data.get("tasks") or []:
            seen.setdefault(str(t.get("taskId")), t)
    tasks = [t for t in seen.values() if include_stopped or t.get("lastStatus") != "STOPPED"]
    return sorted(tasks, key=lambda t: (render.to_epoch(t.get("createdAt")) or 0, str(t.get("taskId"))))


def fetch_list(api: ApiClient, kind: str, service: str | None = None, include_stopped: bool = False) -> list[dict[str, Any]]:
    if kind == "cluster":
        items = api.get("/v1/clusters").get("clusters") or []
        return sorted(items, key=lambda c: str(c.get("clusterName")))
    if kind == "taskdefinition":
        items = api.get("/v1/taskdefinitions").get("taskDefinitions") or []
        return sorted(items, key=lambda t: (str(t.get("family")), int(t.get("revision") or 0)))
    if kind == "service":
        items = api.get(api.cpath("services")).get("services") or []
        return sorted(items, key=lambda s: str(s.get("serviceName")))
    if kind == "node":
        items = api.get(api.cpath("nodes")).get("nodes") or []
        return sorted(items, key=lambda n: str(n.get("nodeId")))
    if kind == "targetgroup":
        return api.get(api.cpath("targetgroups")).get("targetGroups") or []
    if kind == "loadbalancer":
        return api.get(api.cpath("loadbalancers")).get("loadBalancers") or []
    if kind == "secret":
        items = api.get("/v1/secrets").get("secrets") or []
        return sorted(items, key=lambda n: str(n.get("name")))
    return fetch_tasks(api, service, include_stopped)


@click.command()
@click.argument("kind", type=KIND)
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["table", "wide", "json", "yaml"]), default="table", show_default=True)
@click.option("--all", "-a", "include_stopped", is_flag=True, help="tasks: include STOPPED tasks.")
@click.option("--service", metavar="NAME", help="tasks: only the tasks of this service.")
@cluster_option
@pass_session
def get(s: Session, kind: str, name: str | None, output: str, include_stopped: bool, service: str | None) -> None:
    """List objects: clusters, taskdefinitions (td), services (svc), tasks, nodes, targetgroups (tg), loadbalancers (lb),
    secrets (names and versions only).

    NAME filters the list (a task id prefix for tasks, a family or family:revision for
    task definitions).
    """
    if (include_stopped or service) and kind != "task":
        raise click.UsageError("--all and --service apply to tasks only")
    items = fetch_list(s.api, kind, service, include_stopped)
    where = "" if kind in ("cluster", "taskdefinition", "secret") else f" in cluster {s.api.cluster}"
    if name:
        items = [o for o in items if matches(kind, o, name)]
        if not items:
            raise CliError(f"{kind} {name} not found{where}")
    if output in ("json", "yaml"):
        print_objects(items, output)
        return
    if not items:
        click.echo(f"No {PLURAL[kind]} found{where}.", err=True)
        return
    if kind == "targetgroup":
        out(render_lb.targetgroups_table(items, s.clock.wallclock()))
    elif kind == "loadbalancer":
        out(render_lb.loadbalancers_table(items, s.clock.wallclock()))
    else:
        out(render.render_list(PLURAL[kind], items, s.clock.wallclock(), wide=output == "wide"))


@click.command()
@click.argument("kind", type=KIND)
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text", show_default=True)
@cluster_option
@pass_session
def describe(s: Session, kind: str, name: str | None, output: str) -> None:
    """Show one object in detail: service, task (id or unique prefix), node, td (family[:revision]), cluster."""
    api = s.api
    if not name:
        if kind != "cluster":
            raise click.UsageError(f"give the {kind} name: dockyard describe {kind} NAME")
        name = api.cluster
    now = s.clock.wallclock()
    if kind == "secret":
        return print_objects(unwrap(api.get(f"/v1/secrets/{seg(name)}"), "secret"), "yaml" if output == "text" else output)
    if kind == "service":
        obj = unwrap(api.get(api.cpath("services", name)), "service")
        if output != "text":
            return print_objects(obj, output)
        out(render.describe_service(obj, fetch_tasks(api, service=name), now))
    elif kind == "task":
        obj = unwrap(api.get(api.cpath("tasks", name)), "task")
        if output != "text":
            return print_objects(obj, output)
        out(render.describe_task(obj, now))
    elif kind == "node":
        obj = unwrap(api.get(api.cpath("nodes", name)), "node")
        if output != "text":
            return print_objects(obj, output)
        tasks = [t for t in fetch_tasks(api) if t.get("nodeId") == obj.get("nodeId", name)]
        out(render.describe_node(obj, tasks, now))
    elif kind == "targetgroup":
        obj = unwrap(api.get(api.cpath("targetgroups", name)), "targetGroup")
        if output != "text":
            return print_objects(obj, output)
        out(render_lb.describe_targetgroup(obj, now))
    elif kind == "loadbalancer":
        found = [lb for lb in fetch_list(api, "loadbalancer") if lb.get("name") == name]
        if not found:
            raise CliError(f"loadbalancer {name} not found in cluster {api.cluster}")
        obj = found[0]
        if output != "text":
            return print_objects(obj, output)
        out(render_lb.loadbalancers_table([obj], now))
    elif kind == "taskdefinition":
        obj = unwrap(api.get(f"/v1/taskdefinitions/{seg(name)}"), "taskDefinition")
        if output != "text":
            return print_objects(obj, output)
        out(render.describe_taskdefinition(obj, now))
    else:
        obj = unwrap(api.get(f"/v1/clusters/{seg(name)}"), "cluster")
        if output != "text":
            return print_objects(obj, output)
        out(render.describe_cluster(obj, now))
    return None
