#!/usr/bin/env python3
"""HA: two orchestrators on one PostgreSQL 15; the leader SIGKILLed; time until the standby leads.

    .venv/bin/python bench/ha.py [--nodes 100] [--rounds 3] [--lease-seconds 3] [--scale]

A PostgreSQL 15 the bench starts (fsync on, synchronous_commit off), a private Mosquitto, --nodes hollow nodes
(one process) running a service of 2 tasks per node, and two orchestrators on the same database. Each round
SIGKILLs the leader and times, from the kill:
  ready       the standby's /readyz says it leads;
  write       a write through it is accepted (POST .../scale, 2xx);
  republished every node has applied a desired document of the new epoch (observedEpoch in the node list).
failover_seconds is the later of write and republished (target <= 5). The killed one is restarted (it joins
as the standby) before the next round, so the roles alternate. The median of the rounds is reported.

--scale also runs bench/scale.py twice in this run, `--store sqlite` and `--store postgres` (1,000 hollow
nodes, 10,000 tasks, one round, no history), and reports both placement rates and their ratio (target >= 0.8,
and >= 2,000 placements/s on PostgreSQL).

Peers (stated in their docs, not measured here): Nomad's servers use hashicorp/raft with raft_multiplier 1
(HeartbeatTimeout and ElectionTimeout 1 s: a follower starts an election 1-2 s after the leader's last
contact); Docker Swarm's managers use ElectionTick 10 with 1 s ticks (about 10 s); Kubernetes' controller
leases default to 15 s. See docs/high-availability.md for the sources.

Figures: nodes, lease_seconds, ready_seconds, write_seconds, republished_seconds, failover_seconds,
failover_seconds_runs; with --scale: sqlite_placements_per_second, postgres_placements_per_second,
postgres_vs_sqlite_placements.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

import httpx

from _common import REPO, Bench, CannotMeasure, log, main, median
from harness import Harness

MANIFEST = """
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - {{name: web, image: busybox, memory: 8, command: ["sleep", "1d"]}}
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: web}}
spec: {{taskDefinition: web, desiredCount: {count}}}
"""


def ready(h: Harness) -> bool:
    try:
        return h.api.get("/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def scale_rate(store: str) -> float:
    cp = subprocess.run([sys.executable, str(REPO / "bench" / "scale.py"), "--sizes", "10000", "--repeat", "1",
                         "--history", "0", "--steady-seconds", "2", "--store", store],
                        capture_output=True, text=True, timeout=1200)
    m = re.search(r"^placements_per_second: ([0-9.]+)$", cp.stdout, re.M)
    if cp.returncode != 0 or m is None:
        raise CannotMeasure(f"bench/scale.py --store {store} failed ({cp.returncode}): {cp.stderr[-2000:]}")
    return float(m.group(1))


def run(bench: Bench) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lease-seconds", type=float, default=3.0)
    ap.add_argument("--scale", action="store_true", help="also compare bench/scale.py on both stores")
    args = ap.parse_args()
    from pgserver import PgServer

    pg = PgServer(durable=True)
    if pg.missing():
        raise CannotMeasure(pg.missing() or "")
    bench.extra_cleanups.append(pg.stop)
    a = bench.env
    a.store = pg.start().database()
    key = a.workdir / "secrets-key"
    flags = {"standby_ok": True, "secrets_key_file": key, "lease_seconds": args.lease_seconds, "log_level": "warning"}
    a.start_orchestrator(**flags)
    a.start_agent(node_id=f"{a.cluster}-h", wait=False, runtime="hollow", hollow_count=args.nodes, log_level="warning")
    a.wait_for(lambda: sum(1 for n in a.nodes() if n.get("connected")) >= args.nodes, timeout=120,
               message=f"{args.nodes} hollow nodes connected")
    a.cli("apply", "-f", str(a.write_manifest(MANIFEST.format(count=2 * args.nodes))))
    a.wait_for(lambda: len(a.running_tasks()) == 2 * args.nodes, timeout=120, message="all tasks RUNNING")
    b = Harness(a.workdir / "peer", cluster=a.cluster, mqtt_url=a.mqtt_url)
    b.store, b.token_file = a.store, a.token_file
    bench.extra_cleanups.append(b.cleanup)
    b.start_orchestrator(**flags)
    leader, standby = a, b
    ready_s, write_s, repub_s, failover = [], [], [], []
    for rnd in range(args.rounds):
        old_epoch = leader.get("/healthz")["epoch"]
        t0 = time.monotonic()
        leader.stop_orchestrator(kill=True)
        times: dict[str, float] = {}
        count = 2 * args.nodes + (1 if rnd % 2 == 0 else -1)
        while len(times) < 3:
            now = time.monotonic() - t0
            if now > 60:
                raise CannotMeasure(f"round {rnd}: the standby did not take over in 60 s ({sorted(times)})")
            if "ready" not in times and ready(standby):
                times["ready"] = now
            if "ready" in times and "write" not in times:
                try:
                    r = standby.api.post(f"/v1/clusters/{a.cluster}/services/web/scale", json={"desiredCount": count},
                                         timeout=5)
                    if r.status_code < 300:
                        times["write"] = time.monotonic() - t0
                except httpx.HTTPError:
                    pass
            if "ready" in times and "republished" not in times:
                try:
                    nodes = standby.nodes()
                    epoch = standby.get("/healthz")["epoch"]
                    if epoch > old_epoch and len(nodes) >= args.nodes and all(
                            n.get("observedEpoch") == epoch for n in nodes):
                        times["republished"] = time.monotonic() - t0
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        log(f"round {rnd}: ready {times['ready']:.2f}s, write {times['write']:.2f}s, "
            f"republished {times['republished']:.2f}s")
        ready_s.append(times["ready"])
        write_s.append(times["write"])
        repub_s.append(times["republished"])
        failover.append(max(times["write"], times["republished"]))
        leader.start_orchestrator(**flags)  # back as the standby
        if ready(leader):
            raise CannotMeasure("the restarted ex-leader leads: two leaders")
        leader, standby = standby, leader
    bench.figure("nodes", args.nodes)
    bench.figure("lease_seconds", args.lease_seconds)
    bench.figure("ready_seconds", median(ready_s))
    bench.figure("write_seconds", median(write_s))
    bench.figure("republished_seconds", median(repub_s))
    bench.figure("failover_seconds", median(failover))
    bench.figure("failover_seconds_runs", " ".join(f"{x:.2f}" for x in failover))
    if args.scale:
        a.cleanup()
        b.cleanup()
        sqlite, postgres = scale_rate("sqlite"), scale_rate("postgres")
        bench.figure("sqlite_placements_per_second", sqlite)
        bench.figure("postgres_placements_per_second", postgres)
        bench.figure("postgres_vs_sqlite_placements", postgres / sqlite)


if __name__ == "__main__":
    main(run, "ha")
