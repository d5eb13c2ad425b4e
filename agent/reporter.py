"""Status reports: snapshots and updates on the node's ``status`` topic, through one publish path.

* ``snapshot``: every task (those in the desired document plus any other task with labelled
  containers), on connect and at every status tick (the heartbeat);
* ``update``: only the tasks whose report changed since it was last sent;
* the acknowledgement of a desired document: an ``update`` sent even when empty, carrying
  the new ``observedGeneration`` and the changed reports of the tasks that document changed
  (less their initial reports, see below).

Every message carries ``bootId``, a ``seq`` increasing per message and the applied
``(observedEpoch, observedGeneration)``.

A new task's *initial* report (desired RUNNING, no container yet, nothing failed: PENDING with
its containers PENDING) tells the orchestrator nothing it does not know (it placed the task
PENDING), and a hollow or warm node replaces it within milliseconds (RUNNING): acknowledgements
and updates leave it out, so a task's first update is its first change (container created,
RUNNING, failed, STOPPED), and the next snapshot carries it if nothing happens before (e.g. an
image pull). Half the status reports of a start (bench/scale.py: the orchestrator parsed and
folded every task's PENDING report, then its RUNNING one). A hold with a deadline (0.25 s) was
tried: on the benchmark's loaded hollow processes a third of them expired anyway.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal

import aiomqtt

from agent import diff
from agent.runtime import ActualContainer
from agent.session import Session
from agent.state import NodeState
from dockyard.lb import LbStatus
from dockyard.wire import DesiredTask, StatusDoc, TaskReport, TaskUsage

Kind = Literal["snapshot", "update"]


@dataclass(frozen=True, slots=True, eq=False)
class CachedReport:
    """A task's report with the inputs it was built from (compared by identity) and its JSON
    dump (compared with what was last sent)."""

    task: DesiredTask | None
    containers: tuple[ActualContainer, ...]
    finish: diff.Finish | None
    pull_error: str | None
    restarts: dict[str, int]
    report: TaskReport
    dump: dict[str, Any]

    def built_from(self, task: DesiredTask | None, containers: list[ActualContainer], finish: diff.Finish | None,
                   pull_error: str | None, restarts: dict[str, int]) -> bool:
        return (self.task is task and self.finish is finish and self.pull_error == pull_error
                and self.restarts == restarts
                and len(self.containers) == len(containers) and all(a is b for a, b in zip(self.containers, containers, strict=True)))

    @property
    def initial(self) -> bool:
        """Desired RUNNING and nothing happened yet: no container, no finish, no pull error."""
        return (self.task is not None and self.task.desiredStatus == "RUNNING" and not self.containers
                and self.finish is None and self.pull_error is None)


class Reporter:
    def __init__(self, state: NodeState, session: Session, boot_id: str, log: Any) -> None:
        self.state, self.session, self.boot_id, self.log = state, session, boot_id, log
        self.seq = 0
        self.last_sent: dict[str, dict[str, Any]] = {}  # task id -> dump last published
        self.logged_status: dict[str, str] = {}  # task id -> lastStatus last logged
        self._cache: dict[str, CachedReport] = {}  # see reports()
        self._lock = asyncio.Lock()
        # A load-balancer node's target health and sessions (agent.lb), sent with every message.
        self.lb_status: Callable[[], LbStatus] | None = None
        self._lb_sent = ""
        # Per-task usage sent with snapshots (agent.observe), and a count of what was sent.
        self.usage: Callable[[], list[TaskUsage]] | None = None
        self.on_sent: Callable[[str, int], None] | None = None
        # The (epoch, generation) high-water kept on disk (agent.main), reported when above the applied document's.
        self.floor: Callable[[], tuple[int, int] | None] = lambda: None

    # ---- reports ------------------------------------------------------------------------------
    def reports(self, only: Collection[str] | None = None) -> dict[str, CachedReport]:
        """Every task's report (or only those of ``only``, in sorted order), built from the state.

        A report depends only on the desired entry, the task's containers, its finish and its
        pull error; entries and containers are immutable and replaced when they change, so an
        unchanged task reuses the report built last time (every status tick would otherwise
        rebuild all of them)."""
        st = self.state
        node_id = st.node_id
        desired = {t.taskId: t for t in st.doc.tasks} if st.doc else {}
        by_task: dict[str, list[ActualContainer]] = {}
        for c in st.actual:
            if c.node == node_id and c.task_id and (only is None or c.task_id in only):
                by_task.setdefault(c.task_id, []).append(c)
        # Not desired, nothing running: STOPPED in the orchestrator already, its containers only kept for the
        # cleanup wait (diff.cleanup_due): not reported (every snapshot would carry them for that long).
        kept = {tid for tid, cs in by_task.items() if tid not in desired and not any(c.running for c in cs)} \
            if st.doc is not None else set()
        if only is None:
            tids = list(desired) + [tid for tid in by_task if tid not in desired and tid not in kept]
        else:  # gone and without containers: nothing to report
            tids = [tid for tid in sorted(only) if tid in desired or (tid in by_task and tid not in kept)]
        out: dict[str, CachedReport] = {}
        cache = self._cache
        for tid in tids:
            t, cs = desired.get(tid), by_task.get(tid, [])
            fin, perr = st.finished.get(tid), st.pull_errors.get(tid)
            rc = {c.id: st.restarts[c.id] for c in cs if c.id in st.restarts} if st.restarts else {}
            hit = cache.get(tid)
            if hit is None or not hit.built_from(t, cs, fin, perr, rc):
                r = diff.task_report(tid, t, cs, fin, perr, rc)
                hit = cache[tid] = CachedReport(t, tuple(cs), fin, perr, rc, r, r.model_dump(mode="json"))
            out[tid] = hit
        if only is None:
            for tid in [tid for tid in cache if tid not in out]:
                del cache[tid]
        return out

    # ---- publishing ---------------------------------------------------------------------------
    async def publish(self, kind: Kind, force: bool = False) -> None:
        """``snapshot``: every task; ``update``: changed tasks only (sent even if empty when ``force``).
        Serialised, so each update is computed against what the previous one recorded as sent."""
        async with self._lock:
            await self._publish(kind, None, force)

    async def ack(self, task_ids: set[str]) -> None:
        """The acknowledgement of a just-applied desired document: an ``update`` with its version
        and the changed reports of ``task_ids`` only (from the known state, before any engine
        work; the pass it wakes sends the rest; initial reports left out, see the module).

        Not under the lock, so it never waits for another message's PUBACK: numbering and
        queueing (paho queues synchronously in ``publish``) happen without an ``await`` in
        between, so ``seq`` order is send order."""
        if self.state.doc is None:
            return
        await self._publish("update", task_ids, True)

    async def _publish(self, kind: Kind, only: Collection[str] | None, force: bool) -> None:
        """The one publish path: select, number, send, record what was sent, log status changes."""
        client = self.session.client
        if client is None:
            return
        entries = self.reports(only)
        lb = self.lb_status() if self.lb_status is not None else None
        lb_dump = lb.model_dump_json() if lb is not None else ""
        if kind == "snapshot":
            send = list(entries.values())
        else:
            send = self._changed(entries)
            if not send and not force and lb_dump == self._lb_sent:
                return
        self.seq += 1
        doc = self.state.doc
        # The version applied, or the high-water an earlier run of the agent kept, if higher: an orchestrator on a
        # fresh or restored store sees it is behind and re-asserts above it (core.fencing) instead of publishing
        # documents this agent rejects as stale forever.
        epoch, gen = max(doc.version() if doc else (0, 0), self.floor() or (0, 0))
        msg = StatusDoc(nodeId=self.state.node_id, bootId=self.boot_id, seq=self.seq, kind=kind,
                        observedEpoch=epoch, observedGeneration=gen, tasks=[ent.report for ent in send], loadBalancer=lb,
                        usage=self.usage() if self.usage is not None and kind == "snapshot" else None)
        body = msg.model_dump_json().encode()
        try:
            await client.publish(self.session.t_status, body, qos=1)
            if self.on_sent is not None:
                self.on_sent(kind, len(body))
        except aiomqtt.MqttError as e:
            self.log.warning("status publish failed", error=str(e))
            return
        self._lb_sent = lb_dump
        if kind == "snapshot":
            self.last_sent = {tid: ent.dump for tid, ent in entries.items()}
        else:
            for ent in send:
                self.last_sent[ent.report.taskId] = ent.dump
        for ent in send:
            r = ent.report
            if self.logged_status.get(r.taskId) != r.lastStatus:
                self.logged_status[r.taskId] = r.lastStatus
                self.log.info("task status", task=r.taskId, status=r.lastStatus, stopCode=r.stopCode,
                              reason=r.stoppedReason, health=r.healthStatus)

    def _changed(self, entries: dict[str, CachedReport]) -> list[CachedReport]:
        """The reports that differ from those last sent, less the initial reports of tasks not
        sent yet (see the module docstring)."""
        sent = self.last_sent
        return [ent for tid, ent in entries.items()
                if sent.get(tid) != ent.dump and (tid in sent or not ent.initial)]

    def prune(self, live: set[str]) -> None:
        """Forget tasks that are neither desired nor have containers."""
        for d in (self.last_sent, self.logged_status):
            for tid in [t for t in d if t not in live]:
                del d[tid]
