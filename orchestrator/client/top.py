"""``top tasks|services|nodes``: cpu and memory usage from the agents' samples, through the API.

CPU is in cpu units (1024 per core) and as ECS's CPUUtilization: percent of the task's reserved
units, or of one vCPU (1024) when it reserves none; memory is the working set and
MemoryUtilization (docs/metrics.md). ``<none>``: no fresh sample yet.
"""
from __future__ import annotations

from typing import Any

import click

from orchestrator import render
from orchestrator.client.session import Session, cluster_option, out, pass_session, print_objects

MIB = 1024 * 1024
OUTPUT = click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table",
                      show_default=True)


def mib(v: Any) -> str | None:
    return None if v is None else f"{v / MIB:.1f}Mi"


def pct(v: Any) -> str | None:
    return None if v is None else f"{v:.1f}%"


def units(v: Any) -> str | None:
    return None if v is None else f"{v:.0f}"


def tasks_table(rows: list[dict[str, Any]]) -> str:
    return render.table(["TASK", "SERVICE", "NODE", "CPU(units)", "CPU%", "MEMORY", "MEMORY%"],
                        [[render.short_id(r["taskId"]), r.get("serviceName"), r.get("nodeId"), units(r.get("cpuUnits")),
                          pct(r.get("CPUUtilization")), mib(r.get("memoryBytes")), pct(r.get("MemoryUtilization"))]
                         for r in rows])


def services_table(rows: list[dict[str, Any]]) -> str:
    return render.table(["SERVICE", "RUNNING", "SAMPLED", "CPU(units)", "CPU%", "MEMORY", "MEMORY%"],
                        [[r["serviceName"], r.get("runningCount"), r.get("sampledTasks"), units(r.get("cpuUnits")),
                          pct(r.get("CPUUtilization")), mib(r.get("memoryBytes")), pct(r.get("MemoryUtilization"))]
                         for r in rows])


def nodes_table(rows: list[dict[str, Any]]) -> str:
    return render.table(["NODE", "CONNECTED", "TASKS", "CPU(units)", "CPU%", "MEMORY", "MEMORY%"],
                        [[r["nodeId"], r.get("connected"), r.get("sampledTasks"), units(r.get("cpuUnits")),
                          pct(r.get("CPUUtilization")), mib(r.get("memoryBytes")), pct(r.get("MemoryUtilization"))]
                         for r in rows])


@click.group()
def top() -> None:
    """Show cpu and memory usage of tasks, services or nodes."""


def _show(rows: list[dict[str, Any]], output: str, table) -> None:
    if output in ("json", "yaml"):
        print_objects(rows, output)
    else:
        out(table(rows))


@top.command("tasks")
@click.option("--service", metavar="NAME", help="Only this service's tasks.")
@OUTPUT
@cluster_option
@pass_session
def top_tasks(s: Session, service: str | None, output: str) -> None:
    """RUNNING tasks: cpu units, CPUUtilization, working-set memory, MemoryUtilization."""
    params = {"service": service} if service else {}
    _show(s.api.get(s.api.cpath("top", "tasks"), **params)["tasks"], output, tasks_table)


@top.command("services")
@OUTPUT
@cluster_option
@pass_session
def top_services(s: Session, output: str) -> None:
    """Services: the averages of their sampled RUNNING tasks."""
    _show(s.api.get(s.api.cpath("top", "services"))["services"], output, services_table)


@top.command("nodes")
@OUTPUT
@cluster_option
@pass_session
def top_nodes(s: Session, output: str) -> None:
    """Nodes: their tasks' usage against the registered cpu and memory."""
    _show(s.api.get(s.api.cpath("top", "nodes"))["nodes"], output, nodes_table)
