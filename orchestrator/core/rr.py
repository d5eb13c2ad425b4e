"""Logs and exec requests as the API decides them (pure): where a task's request goes, ``--since``, statuses.

No I/O: :mod:`orchestrator.logs_api` gathers the task and node records, calls these, and relays.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

# End.code (dockyard.wire_rr.ErrorCode) -> (HTTP status, hint)
STATUS: dict[str, tuple[int, str]] = {
    "TaskNotOnNode": (404, "a stopped task's containers are kept for the agent's --task-cleanup-wait "
                           "(docs/cli.md), then removed with their logs"),
    "ContainerNotFound": (404, "see the task's containers with: dockyard describe task TASK"),
    "ContainerRequired": (400, "pass --container NAME"),
    "ContainerNotRunning": (409, "exec needs a running container; read its logs with: dockyard logs TASK"),
    "ContainerGone": (410, "the container was removed meanwhile"),
    "Busy": (429, "retry in a moment"),
    "Timeout": (504, "give a longer --timeout"),
    "RequesterGone": (504, "retry"),
    "BadRequest": (400, ""),
    "EngineError": (502, "the node's container engine failed; see the agent's log"),
}

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(value: str, now: float) -> float:
    """``--since``: a duration before ``now`` (``10m``, ``1h30m``, ``45s``), an RFC 3339 time or epoch
    seconds -> epoch seconds. ValueError with what is accepted."""
    v = value.strip()
    if v and _DURATION.sub("", v) == "" and _DURATION.search(v):
        return now - sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(v))
    try:
        return float(v)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"since: {value!r} is not a duration (10m, 1h30m), an RFC 3339 time or epoch seconds") from None
    if dt.tzinfo is None:
        raise ValueError(f"since: {value!r} has no time zone; add Z or +00:00")
    return dt.timestamp()


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str
    hint: str = ""


def route(task_id: str, node_id: str | None, node_known: bool, node_connected: bool,
          last_status: str) -> str | Refusal:
    """The node a request about the task goes to, or why none. A STOPPED task's node still holds its
    stopped containers until the agent's cleanup time has passed."""
    if node_id is None:
        return Refusal(409, f"task {task_id} was never placed on a node (lastStatus {last_status})",
                       "a task has logs once it is placed and its containers are created")
    if not node_known:
        return Refusal(410, f"task {task_id} ran on node {node_id}, which was deleted")
    if not node_connected:
        return Refusal(503, f"node {node_id} of task {task_id} is disconnected",
                       "retry once it reconnects (dockyard get nodes)")
    return node_id
