"""What one agent knows about its node between passes: the applied desired document, the
containers as last listed, the task networks, finished tasks and pull errors.

Held in memory only (the desired document is retained on the broker, the containers carry
labels), shared by the reconcile pass (writes ``doc``, ``actual``, ``networks``, ``volumes``), the
executor (records finishes and pull errors) and the reporter (reads all of it).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.diff import Finish
from agent.runtime import ActualContainer
from dockyard.wire import DesiredDoc

MAX_FINISHED = 100_000  # finished task ids remembered (never restarted)


@dataclass(eq=False)
class NodeState:
    node_id: str
    log: Any
    doc: DesiredDoc | None = None
    actual: list[ActualContainer] = field(default_factory=list)
    networks: dict[str, str] = field(default_factory=dict)  # task id -> its own network
    volumes: dict[str, Sequence[str]] = field(default_factory=dict)  # task id -> its task-scoped volumes
    finished: dict[str, Finish] = field(default_factory=dict)  # oldest first
    pull_errors: dict[str, str] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)  # docker id -> in-place restarts (restartPolicy)
    pulls: dict[str, tuple[float, float]] = field(default_factory=dict)  # task id -> its image pulls' start, end

    def pulled(self, tid: str, started: float, stopped: float) -> None:
        """Record a pull for ``tid``'s containers: the task's pulls span from the first start to the last end."""
        first = self.pulls.get(tid)
        self.pulls[tid] = (first[0] if first else started, stopped)

    def finish(self, tid: str, fin: Finish) -> None:
        """Remember that ``tid`` reached STOPPED on its own (first reason wins)."""
        if tid in self.finished:
            return
        self.finished[tid] = fin
        self.log.info("task finished", task=tid, stopCode=fin.stop_code, reason=fin.reason,
                      container=fin.container, exitCode=fin.exit_code)
        while len(self.finished) > MAX_FINISHED:
            self.finished.pop(next(iter(self.finished)))

    def restarted(self, docker_id: str) -> int:
        """Count an in-place restart of ``docker_id`` (Docker's RestartCount moves only for its own
        restart policy, not for a start by the agent); returns the new count."""
        self.restarts[docker_id] = n = self.restarts.get(docker_id, 0) + 1
        return n

    def live_task_ids(self) -> set[str]:
        """Tasks that are desired or still have containers."""
        return {c.task_id for c in self.actual} | ({t.taskId for t in self.doc.tasks} if self.doc else set())

    def prune(self, live: set[str]) -> None:
        for tid in [t for t in self.pull_errors if t not in live]:
            del self.pull_errors[tid]
        for tid in [t for t in self.pulls if t not in live]:
            del self.pulls[tid]
        if self.restarts:
            ids = {c.id for c in self.actual}
            for cid in [c for c in self.restarts if c not in ids]:
                del self.restarts[cid]
