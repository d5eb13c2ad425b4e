#!/usr/bin/env python3
"""Failover: 3 hosts (the multi-host test bed), 12 replicas; a host dies; time until 12 RUNNING again.

    .venv/bin/python bench/failover.py [--replicas 12] [--node-lost-seconds S] [--rounds 1] [--silent]

Needs root: the test bed (scripts/testbed.sh via tests/integration/testbed.py) makes 3 hosts,
each a network namespace with its own dockerd, on a bridge with the bed's Mosquitto. The
orchestrator runs in the root namespace, one agent per host inside its namespace.

12 replicas of busybox httpd spread over the 3 hosts (4 each). Then host 3 dies: its agent
is SIGKILLed (the kernel closes its TCP connection, so the broker publishes its MQTT Will at
once) and its dockerd is SIGKILLed (`testbed.sh kill-dockerd 3`). Timed from the kill until
the API reports 12 tasks RUNNING, none on host 3, AND the engines of hosts 1 and 2 run 12
containers of the cluster. The orchestrator's --node-lost-seconds (how long a disconnected
node is tolerated before its tasks are replaced; its default unless given) is most of it.
With --rounds R, host 3 comes back between rounds (dockerd and agent restarted, the service
rebalanced by scaling) and the median is reported.

With --silent, host 3 is not killed but partitioned (`testbed.sh cut 3`: its link goes down):
nothing closes its connection, so no Will comes, as when a real host loses power or network.
The orchestrator notices the silence at the heartbeat timeout (2 missed light heartbeats, at
least --node-lost-seconds); host 3's containers keep running, unreachable, until the link heals.

Figures: node_lost_seconds, failover_seconds (target <= 5), replace_after_lost_seconds
(failover_seconds minus node_lost_seconds: detection, planning, placement, start).
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import time

import aiodocker
import httpx

from _common import IMAGE, Bench, CannotMeasure, log, main, median

TIMEOUT = 60.0


def manifest(n: int) -> str:
    return f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: bfail}}
spec:
  containerDefinitions:
    - {{name: web, image: {IMAGE}, command: [httpd, -f, -p, "8080", -h, /www], memory: 32, stopTimeout: 2}}
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: bfail}}
spec: {{taskDefinition: bfail, desiredCount: {n}}}
"""


async def wait_recovered(bench: Bench, tb, victim: str, n: int, t0: float, detected: list[float]) -> float:
    """Seconds from t0 until recovered; appends to ``detected`` when the API first showed the
    victim node disconnected."""
    env = bench.env
    label = f"dockyard.cluster={env.cluster}"
    engines = [aiodocker.Docker(url=tb.host(k).docker_url) for k in (1, 2)]
    last = None
    try:
        async with httpx.AsyncClient(base_url=env.base_url, timeout=10, headers=env.api_headers) as api:
            seen_down = False
            while time.monotonic() - t0 < TIMEOUT:
                if not seen_down:
                    node = (await api.get(f"/v1/clusters/{env.cluster}/nodes/{victim}")).json().get("node") or {}
                    if node.get("connected") is False:
                        seen_down = True
                        detected.append(time.monotonic() - t0)
                tasks = (await api.get(f"/v1/clusters/{env.cluster}/tasks", params={"desiredStatus": "RUNNING"})).json()["tasks"]
                running = [t for t in tasks if t["lastStatus"] == "RUNNING"]
                on_victim = sum(t["nodeId"] == victim for t in running)
                if len(running) == n and on_victim == 0:
                    counts = []
                    for d in engines:
                        rows = await d._query_json("containers/json", params={
                            "filters": json.dumps({"label": [label], "status": ["running"]})})
                        counts.append(len(rows))
                    last = (len(running), on_victim, counts)
                    if sum(counts) == n:
                        return time.monotonic() - t0
                else:
                    last = (len(running), on_victim, None)
                await asyncio.sleep(0.05)
    finally:
        for d in engines:
            await d.close()
    raise CannotMeasure(f"not recovered within {TIMEOUT:.0f}s (running, on the dead host, engines = {last})")


def run(bench: Bench) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--replicas", type=int, default=12)
    ap.add_argument("--node-lost-seconds", type=float, default=None,
                    help="the orchestrator's flag (default: the orchestrator's own default)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--silent", action="store_true", help="cut host 3's link instead of killing it (no Will)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise CannotMeasure("the test bed needs root (network namespaces, one dockerd per host)")
    from testbed import Testbed  # tests/integration (on sys.path via _common)

    n = args.replicas
    env = bench.env
    with Testbed(3) as tb:
        tb.attach(env)  # the bed's broker; cleanup removes the cluster's containers on every host
        flags = {} if args.node_lost_seconds is None else {"node_lost_seconds": args.node_lost_seconds}
        env.start_orchestrator(**flags)
        if args.node_lost_seconds is not None:
            lost_s = args.node_lost_seconds
        else:  # the orchestrator's default
            from orchestrator.daemon import run as daemon_run
            lost_s = inspect.signature(daemon_run).parameters["node_lost_seconds"].default
        for k in tb.hosts:
            tb.start_agent(env, k)
        env.cli("apply", "-f", str(bench.manifest(manifest(n))))
        victim = tb.node_id(env, 3)
        results: list[float] = []
        detected: list[float] = []
        for r in range(args.rounds):
            env.wait_for(lambda: (lambda c: c if len(c) == n else None)(env.running_tasks()), timeout=120,
                         message=f"{n} RUNNING")
            on = {k: sum(t["nodeId"] == tb.node_id(env, k) for t in env.running_tasks()) for k in tb.hosts}
            log(f"round {r + 1}: {n} RUNNING, per host {on}")
            if on[3] == 0:
                raise CannotMeasure(f"no task on host 3 to lose (placement {on})")
            time.sleep(1.0)
            t0 = time.monotonic()
            if args.silent:
                tb.cut(3)
                log(f"round {r + 1}: host 3's link cut in {time.monotonic() - t0:.2f}s")
            else:
                env.stop_agent(victim, kill=True)
                tb.kill_dockerd(3)
                log(f"round {r + 1}: host 3 killed (agent and dockerd) in {time.monotonic() - t0:.2f}s")
            took = asyncio.run(wait_recovered(bench, tb, victim, n, t0, detected))
            results.append(took)
            log(f"round {r + 1}: {n} RUNNING again on hosts 1 and 2 after {took:.2f}s "
                f"(node shown disconnected after {detected[-1] if detected else float('nan'):.2f}s)")
            if r + 1 < args.rounds:  # host 3 comes back; rebalance by scaling in and out
                if args.silent:
                    tb.restore(3)
                    env.wait_for(lambda: (env.node(victim) or {}).get("connected"), timeout=60, message="host 3 back")
                else:
                    tb.start_dockerd(3)
                    tb.start_agent(env, 3)
                env.cli("scale", "bfail", str(n - on[3]))
                env.wait_for(lambda: len(env.running_tasks()) == n - on[3], timeout=60, message="scaled in")
                env.cli("scale", "bfail", str(n))
        if args.silent:
            tb.restore(3)  # its agent hears the node was lost and stops the stale containers
        fo = median(results)
        bench.figure("node_lost_seconds", float(lost_s))
        bench.figure("silent_failover_seconds" if args.silent else "failover_seconds", fo)
        bench.figure("replace_after_lost_seconds", fo - float(lost_s))
        if detected:
            bench.figure("detected_seconds", median(detected))
        bench.figure("rounds", ", ".join(f"{x:.2f}" for x in results))
        bench.new_env()  # cleanup while the bed is still up (its broker and dockerds)


if __name__ == "__main__":
    main(run, "failover")
