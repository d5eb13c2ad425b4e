#!/usr/bin/env python3
"""In-process profile of the orchestrator's per-placement work, without MQTT, Docker or agents:
the controller, its store (a SQLite file) and the bus's message handler, fed the messages 1,000
hollow nodes send (presence; for each desired document an acknowledgement without reports, as
agent.reporter.ack leaves a new task's initial report out, then an update with the tasks RUNNING
or STOPPED; a snapshot after them), as JSON bytes. Each pass's records are written after its
documents are built and before the reports arrive, as in Controller.run_pass: two task writes
per placement, as in bench/scale.py.

    .venv/bin/python bench/core_cpu.py [--nodes 1000] [--tasks 10000] [--rounds 3] [--profile OUT.prof]

It prints the process CPU seconds of each round (apply N tasks -> all RUNNING, then delete ->
all STOPPED, the second not counted). Not a benchmark of the whole path (bench/scale.py is): a
quick, low-noise A/B for changes to the controller, state, store and status handling."""
from __future__ import annotations

import argparse
import cProfile
import gc
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dockyard import gcpolicy  # noqa: E402
from dockyard.log import configure  # noqa: E402
from dockyard.wire import ContainerReport, NodeResources, Presence, StatusDoc, TaskReport  # noqa: E402
from orchestrator.bus import Bus  # noqa: E402
from orchestrator.controller import Controller  # noqa: E402
from orchestrator.ops import Ops  # noqa: E402
from orchestrator.state import State  # noqa: E402
from orchestrator.store import Store  # noqa: E402

CLUSTER = "bench"


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--services", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--gc", default=",".join(map(str, gcpolicy.THRESHOLDS)),
                    help="cyclic GC thresholds (the daemons' by default, set after the nodes joined; "
                         "the middle generation is also collected every gcpolicy.MIDDLE_SECONDS)")
    ap.add_argument("--no-snapshots", dest="snapshots", action="store_false",
                    help="no periodic snapshots (by default each node sends one after its updates)")
    a = ap.parse_args()
    configure("warning")
    tmp = tempfile.mkdtemp(prefix="dockyard-core-cpu-")
    try:
        run(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(a: argparse.Namespace, tmp: str) -> None:
    clock = Clock()

    async def publish(doc) -> None:  # never awaited: reconcile returns the documents
        pass

    state = State(Store(os.path.join(tmp, "state.db")))
    ctl = Controller(state, epoch=1, publish=publish, node_lost_seconds=15.0, clock=clock)
    ops = Ops(state, ctl)
    bus = Bus("mqtt://127.0.0.1:1", ctl)
    boots = {}
    seq = 0
    for i in range(a.nodes):
        nid = f"node-{i:04d}"
        boots[nid] = f"boot-{nid}"
        p = Presence(nodeId=nid, bootId=boots[nid], state="online", cluster=CLUSTER,
                     resources=NodeResources(cpu=4096, memory=16384))
        bus.handle(f"dockyard/v1/{CLUSTER}/nodes/{nid}/presence", p.model_dump_json().encode(), retain=True)
    docs: dict[str, object] = {}
    running: dict[str, dict[str, str]] = {nid: {} for nid in boots}
    held: dict[str, dict[str, TaskReport]] = {nid: {} for nid in boots}  # the node's last report of each task
    snapshot_due: list[str] = []

    def send(nid: str, kind: str, reports: list[TaskReport]) -> None:
        nonlocal seq
        seq += 1
        d = docs.get(nid)
        st = StatusDoc(nodeId=nid, bootId=boots[nid], seq=seq, kind=kind, observedEpoch=d.epoch if d else 0,
                       observedGeneration=d.generation if d else 0, tasks=reports, ts=clock.t)
        bus.handle(f"dockyard/v1/{CLUSTER}/nodes/{nid}/status", st.model_dump_json().encode())

    def report(t, status: str) -> TaskReport:
        return TaskReport(taskId=t.taskId, lastStatus=status, startedAt=clock.t if status == "RUNNING" else None,
                          stoppedAt=clock.t if status == "STOPPED" else None,
                          containers=[ContainerReport(name=c.name, lastStatus="STOPPED" if status == "STOPPED"
                                                      else status, dockerId=f"d{t.taskId}", image="busybox",
                                                      exitCode=0 if status == "STOPPED" else None)
                                      for c in t.taskDefinition.containerDefinitions])

    middle_at = [time.monotonic() + gcpolicy.MIDDLE_SECONDS]

    def step() -> int:
        clock.t += 0.2
        if time.monotonic() >= middle_at[0]:  # the daemons' gcpolicy.collect_middle
            middle_at[0] = time.monotonic() + gcpolicy.MIDDLE_SECONDS
            gc.collect(1)
        if a.snapshots:  # a node's periodic snapshot after its updates (1 per 2 updates, as in bench/scale.py)
            for nid in snapshot_due:
                send(nid, "snapshot", list(held[nid].values()))
            snapshot_due.clear()
        out = ctl.reconcile(clock.t)
        for d in out:
            d.model_dump_json()  # what Bus.publish sends
        state.flush(defer_details=True)  # Controller.run_pass: after publishing, before any report
        for d in out:
            docs[d.nodeId] = d
            before = running[d.nodeId]
            now = {t.taskId: t.desiredStatus for t in d.tasks}
            changed = [t for t in d.tasks if before.get(t.taskId) != t.desiredStatus]
            if changed:
                send(d.nodeId, "update", [])  # the acknowledgement (agent.reporter.ack)
                final = [report(t, "RUNNING" if t.desiredStatus == "RUNNING" else "STOPPED") for t in changed]
                send(d.nodeId, "update", final)
                h = held[d.nodeId]
                for r in final:
                    h[r.taskId] = r
                for tid in [tid for tid in h if tid not in now]:
                    del h[tid]
                snapshot_due.append(d.nodeId)
            running[d.nodeId] = {k: v for k, v in now.items() if v == "RUNNING"}
        return len(out)

    per = a.tasks // a.services
    td = {"apiVersion": "dockyard/v1", "kind": "TaskDefinition", "metadata": {"name": "bscale"},
          "spec": {"containerDefinitions": [{"name": "app", "image": "dockyard-demo/busybox:latest",
                                             "command": ["sleep", "3600"], "memory": 32, "stopTimeout": 1}]}}

    def apply(n: int) -> None:
        docs_ = [td] + [{"apiVersion": "dockyard/v1", "kind": "Service", "metadata": {"name": f"s-{i}"},
                         "spec": {"taskDefinition": "bscale", "desiredCount": n}} for i in range(a.services)]
        ops.apply([{"source": "b.yaml", "document": d} for d in docs_], CLUSTER)

    def settle(want_running: int) -> None:
        for _ in range(200):
            step()
            ts = list(state.tasks.values())
            if sum(t.lastStatus == "RUNNING" for t in ts) == want_running and \
                    not any(t.active and t.lastStatus != "RUNNING" for t in ts):
                step()  # the pass that writes the reported statuses (its flush)
                return
        raise SystemExit("did not settle")

    prof = cProfile.Profile() if a.profile else None
    results = []
    gcpolicy.tune(tuple(int(x) for x in a.gc.split(",")))  # type: ignore[arg-type]
    in_gc = gcpolicy.timer()
    for r in range(a.rounds):
        g0 = sum(in_gc.values())
        c0 = time.process_time()
        if prof:
            prof.enable()
        apply(per)
        settle(a.tasks)
        if prof:
            prof.disable()
        c1 = time.process_time()
        results.append(c1 - c0)
        print(f"round {r + 1}: {a.tasks} tasks RUNNING, cpu {c1 - c0:.2f} s (in the cyclic GC "
              f"{sum(in_gc.values()) - g0:.2f} s)", flush=True)
        apply(0)
        settle(0)
        for _ in range(3):
            step()
    if prof:
        prof.dump_stats(a.profile)
    results.sort()
    print(f"median cpu seconds: {results[len(results) // 2]:.3f}  min {results[0]:.3f}  runs: {' '.join(f'{x:.2f}' for x in results)}")


if __name__ == "__main__":
    main()
