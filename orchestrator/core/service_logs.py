"""``logs NAME`` for a task or a service, as the API decides it (pure): what a name means, which task
containers a service's logs read, their prefixes, cutting a stream into lines and ordering lines by time.

Resolution follows ``docker service logs``: a full task id, else a service name, else a unique task id
prefix. So a service whose name looks like hex still means the service, and a full id always reaches
the task. No I/O: :mod:`orchestrator.logs_api` gathers the records and relays.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from orchestrator.core.rr import Refusal

MAX_SOURCES = 32  # task containers one service-logs request reads (the newest first); an agent serves 32 requests
STOPPED_LOOKBACK = 24 * 3600.0  # STOPPED tasks older than this are not asked for (their containers are long gone)
LINE_BYTES = 16 * 1024  # a line longer than this is passed on in pieces (bounded buffers)


def resolve(cluster: str, ref: str, exact_task: bool, service_exists: bool,
            prefix_matches: int) -> Literal["task", "service"] | Refusal:
    """What ``logs REF`` reads: a task (its full id, or a unique id prefix when no service has the name)
    or a service (by name), or why neither."""
    if exact_task:
        return "task"
    if service_exists:
        return "service"
    if prefix_matches == 1:
        return "task"
    if prefix_matches > 1:
        return Refusal(409, f"task id prefix {ref!r} is ambiguous ({prefix_matches} tasks) and no service is named so",
                       "give more characters of the task id (dockyard get tasks --all)")
    return Refusal(404, f"task or service {ref!r} not found in cluster {cluster}",
                   f"list them with: dockyard -c {cluster} get services, or get tasks --all")


class _TaskLike(Protocol):
    @property
    def taskId(self) -> str: ...
    @property
    def nodeId(self) -> str | None: ...
    @property
    def lastStatus(self) -> str: ...
    @property
    def createdAt(self) -> float: ...
    @property
    def stoppedAt(self) -> float | None: ...
    @property
    def containers(self) -> Sequence[object]: ...


@dataclass(frozen=True)
class Source:
    """One task container whose logs a service's logs read."""
    task_id: str
    node_id: str
    container: str | None  # None: the task's only container (its record names none yet)
    prefix: str
    stopped: bool  # a STOPPED task: its containers may be cleaned up already (that is no error)


@dataclass(frozen=True)
class Skipped:
    task_id: str
    node_id: str | None
    error: str


def prefix(service: str, task_id: str, node_id: str, container: str | None) -> str:
    """``SERVICE.TASK@NODE`` as ``docker service logs`` prefixes lines (``SERVICE.TASK.CONTAINER@NODE``
    when the task has several containers)."""
    return f"{service}.{task_id[:12]}{'.' + container if container else ''}@{node_id}"


def sources(service: str, tasks: Iterable[_TaskLike], nodes: Mapping[str, bool], container: str | None, now: float,
            limit: int = MAX_SOURCES) -> tuple[list[Source], list[Skipped]]:
    """The task containers to read: placed tasks that are not STOPPED (oldest first), then STOPPED ones
    of the last :data:`STOPPED_LOOKBACK` (newest first), at most ``limit`` containers. ``nodes``: node
    id -> connected (a missing node was deleted). ``container``: only that container of each task.
    Tasks on a deleted or disconnected node are skipped, with a word for those not STOPPED."""
    live: list[_TaskLike] = []
    stopped: list[_TaskLike] = []
    for t in tasks:
        if t.nodeId is None:
            continue
        if t.lastStatus != "STOPPED":
            live.append(t)
        elif (t.stoppedAt or t.createdAt) >= now - STOPPED_LOOKBACK:
            stopped.append(t)
    live.sort(key=lambda t: (t.createdAt, t.taskId))
    stopped.sort(key=lambda t: (-(t.stoppedAt or t.createdAt), t.taskId))
    out: list[Source] = []
    skipped: list[Skipped] = []
    for t in [*live, *stopped]:
        node = t.nodeId
        assert node is not None
        is_stopped = t.lastStatus == "STOPPED"
        if node not in nodes or not nodes[node]:
            if not is_stopped:
                why = "was deleted" if node not in nodes else "is disconnected"
                skipped.append(Skipped(t.taskId, node, f"node {node} of task {t.taskId[:12]} {why}"))
            continue
        names = [str(getattr(c, "name", "")) for c in t.containers]
        if container is not None:
            if names and container not in names:
                continue
            picked: list[str | None] = [container]
        else:
            picked = list(names) if names else [None]
        for name in picked:
            if len(out) >= limit:
                skipped.append(Skipped(t.taskId, node, f"more than {limit} task containers: the oldest STOPPED "
                                                       "ones are left out (read one with: dockyard logs TASK)"))
                return out, skipped
            shown = name if len(picked) > 1 else None
            out.append(Source(t.taskId, node, name, prefix(service, t.taskId, node, shown), is_stopped))
    return out, skipped


class Lines:
    """Text of one stream cut into lines (each with its ``\\n``); a line longer than ``limit`` bytes comes
    out in pieces, so the buffer stays bounded."""

    def __init__(self, limit: int = LINE_BYTES) -> None:
        self.limit = limit
        self.rest = ""

    def feed(self, text: str) -> list[str]:
        data = self.rest + text
        parts = data.split("\n")
        self.rest = parts.pop()
        out = [p + "\n" for p in parts]
        while len(self.rest.encode()) > self.limit:
            cut = len(self.rest.encode()[:self.limit].decode(errors="ignore"))
            out.append(self.rest[:cut])
            self.rest = self.rest[cut:]
        return out

    def flush(self) -> list[str]:
        rest, self.rest = self.rest, ""
        return [rest] if rest else []


_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ")


def stamp(line: str) -> tuple[str, str] | None:
    """(sortable time key, the line without its Docker timestamp) for a line Docker stamped
    (``2026-12-02T03:04:05.123456789Z text``; Docker may drop trailing zeros of the fraction), else None.
    Docker stamps in UTC, so the key compares as text."""
    m = _STAMP.match(line)
    if m is None:
        return None
    return f"{m.group(1)}.{(m.group(2) or '').ljust(9, '0')}{m.group(3)}", line[m.end():]
