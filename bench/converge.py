#!/usr/bin/env python3
"""Converge: 50 replicas of the local busybox httpd image, dockyard vs the raw Docker API vs Swarm.

    .venv/bin/python bench/converge.py [--replicas 50] [--concurrency 8] [--rounds 1]

* raw:      the same containers created and started directly with aiodocker, at bounded
            concurrency (the engine's limit on this machine);
* dockyard: orchestrator + one agent on the local engine; timed from spawning
            `dockyard apply -f svc.yaml` until the API reports N tasks RUNNING AND the engine
            lists N running containers labelled dockyard.cluster=<cluster>;
* swarm:    `docker service create --detach --replicas N --no-resolve-image ...` until N tasks
            are running and the engine lists N running containers of the service.

Same image, command, memory limit (32 MiB) and cpu shares (32) everywhere; no ports. Each
contestant starts on an engine without the others' containers. With --rounds R the medians
are reported. Figures (last lines): dockyard_seconds, raw_seconds, swarm_seconds,
dockyard/raw (target <= 1.3), dockyard/swarm.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time

import aiodocker
import httpx

from _common import DOCKYARD, IMAGE, Bench, CannotMeasure, log, main, median, remove_by_label

CMD = ["httpd", "-f", "-p", "8080", "-h", "/www"]
MEM_MIB = 32
CPU = 32
TIMEOUT = 180.0


def manifest(n: int) -> str:
    return f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: bweb}}
spec:
  containerDefinitions:
    - name: web
      image: {IMAGE}
      command: {json.dumps(CMD)}
      cpu: {CPU}
      memory: {MEM_MIB}
      stopTimeout: 2
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: bweb}}
spec: {{taskDefinition: bweb, desiredCount: {n}}}
"""


async def count_running(d: aiodocker.Docker, label: str) -> int:
    rows = await d._query_json("containers/json", params={"filters": json.dumps({"label": [label], "status": ["running"]})})
    return len(rows)


async def raw_run(n: int, concurrency: int, label: str) -> float:
    key, _, value = label.partition("=")
    d = aiodocker.Docker()
    sem = asyncio.Semaphore(concurrency)
    body = {"Image": IMAGE, "Cmd": CMD, "Labels": {key: value}, "StopTimeout": 2,
            "HostConfig": {"Memory": MEM_MIB * 1024 * 1024, "CpuShares": CPU, "RestartPolicy": {"Name": "no"}}}

    async def one(i: int) -> None:
        async with sem:
            r = await d._query_json("containers/create", "POST", params={"name": f"{value}-raw-{i}"},
                                    data=json.dumps(body))
            async with d._query(f"containers/{r['Id']}/start", "POST"):
                pass
    try:
        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.monotonic() - t0
        got = await count_running(d, label)
        if got != n:
            raise CannotMeasure(f"raw: {got} of {n} containers running after start")
        return elapsed
    finally:
        await d.close()


async def wait_dockyard(bench: Bench, n: int, t0: float) -> float:
    d = aiodocker.Docker()
    url = f"/v1/clusters/{bench.env.cluster}/tasks"
    label = f"dockyard.cluster={bench.env.cluster}"
    api_done = docker_done = None
    try:
        async with httpx.AsyncClient(base_url=bench.env.base_url, timeout=10, headers=bench.env.api_headers) as api:
            while time.monotonic() - t0 < TIMEOUT:
                if api_done is None:
                    tasks = (await api.get(url)).json()["tasks"]
                    if sum(t["lastStatus"] == "RUNNING" for t in tasks) == n:
                        api_done = time.monotonic()
                if docker_done is None and await count_running(d, label) == n:
                    docker_done = time.monotonic()
                if api_done and docker_done:
                    log(f"dockyard: docker shows {n} running at {docker_done - t0:.2f}s, API at {api_done - t0:.2f}s")
                    return max(api_done, docker_done) - t0
                await asyncio.sleep(0.05)
    finally:
        await d.close()
    raise CannotMeasure(f"dockyard did not converge to {n} RUNNING within {TIMEOUT:.0f}s "
                        f"(api_done={api_done}, docker_done={docker_done})")


async def wait_swarm(name: str, n: int, t0: float) -> float:
    d = aiodocker.Docker()
    label = f"com.docker.swarm.service.name={name}"
    try:
        while time.monotonic() - t0 < TIMEOUT:
            tasks = await d._query_json("tasks", params={"filters": json.dumps({"service": [name], "desired-state": ["running"]})})
            running = sum((t.get("Status") or {}).get("State") == "running" for t in tasks)
            if running == n and await count_running(d, label) == n:
                return time.monotonic() - t0
            await asyncio.sleep(0.05)
    finally:
        await d.close()
    raise CannotMeasure(f"swarm service {name} did not reach {n} running tasks within {TIMEOUT:.0f}s")


def run(bench: Bench) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--replicas", type=int, default=50)
    ap.add_argument("--concurrency", type=int, default=8, help="raw API: containers created/started at once")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    n = args.replicas
    raw_label = f"dockyard-bench.raw={bench.env.cluster}"
    bench.raw_labels.append(raw_label)
    swarm = bench.use_swarm()
    raws, dys, sws = [], [], []
    for r in range(args.rounds):
        # ---- raw
        raws.append(asyncio.run(raw_run(n, args.concurrency, raw_label)))
        log(f"round {r + 1}: raw {raws[-1]:.2f}s")
        remove_by_label([raw_label])

        # ---- dockyard
        env = bench.env
        path = bench.manifest(manifest(n))
        env.start_orchestrator()
        env.start_agent()
        t0 = time.monotonic()
        subprocess.run([DOCKYARD, "--server", env.base_url, "-c", env.cluster, "apply", "-f", str(path)],
                       check=True, capture_output=True, env=env.cli_env())
        dys.append(asyncio.run(wait_dockyard(bench, n, t0)))
        log(f"round {r + 1}: dockyard {dys[-1]:.2f}s")
        bench.new_env()  # stops the processes, removes the containers

        # ---- swarm
        name = f"{raw_label.partition('=')[2]}-swarm{r}"
        t0 = time.monotonic()
        swarm.create(name, "--replicas", str(n), "--limit-memory", f"{MEM_MIB}M", "--restart-condition", "none",
                     "--stop-grace-period", "2s", IMAGE, *CMD)
        sws.append(asyncio.run(wait_swarm(name, n, t0)))
        log(f"round {r + 1}: swarm {sws[-1]:.2f}s")
        swarm.remove_services()

    dy, raw, sw = median(dys), median(raws), median(sws)
    bench.figure("dockyard_seconds", dy)
    bench.figure("raw_seconds", raw)
    bench.figure("swarm_seconds", sw)
    bench.figure("dockyard/raw", dy / raw)
    bench.figure("dockyard/swarm", dy / sw)


if __name__ == "__main__":
    main(run, "converge")
