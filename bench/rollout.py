#!/usr/bin/env python3
"""Rollout: 50 health-checked replicas rolled to a new revision, dockyard vs Docker Swarm.

    .venv/bin/python bench/rollout.py [--replicas 50]

Both run busybox httpd with the same Docker health check (wget of the page; interval 5 s
(ECS's minimum), timeout 2 s, 3 retries), a 32 MiB limit and a 2 s stop grace (busybox
httpd as PID 1 ignores SIGTERM, so every stop takes the grace period). Each first reaches
50 healthy replicas (not timed), then rolls to a new revision that only adds REV=2 to the
environment:

* dockyard: orchestrator + one agent on the local engine; the service follows the family
  with deploymentConfiguration maximumPercent 200 / minimumHealthyPercent 100, a task counted
  healthy once it stayed healthy 5 s (minimumHealthyTimeSeconds 5, like Swarm's 5 s
  --update-monitor) and no bake. Timed from spawning `dockyard apply` (task definition
  revision 2) until the new deployment is COMPLETED and the engine runs 50 containers of
  revision 2 and none of revision 1. Then a second rollout (revision 3) at dockyard's defaults
  (proof 10 s, bake 10 s), timed the same way.
* swarm: `docker service update --detach --env-add REV=2 --update-parallelism 10
  --update-order start-first --update-monitor 5s` (the same health check from `service
  create`). Timed until UpdateStatus is "completed" and the engine runs 50 containers of the
  new spec and none of the old one.

Where dockyard's time goes is logged per phase: every new task RUNNING, HEALTHY, proven, COMPLETED.
The engine floor (floor_seconds) is the same rollout with no orchestrator: aiodocker starts 50
new containers beside 50 running ones until all are healthy, plus the 5 s proof and the 2 s stop
grace that no orchestrator can skip; floor/swarm is the best ratio this machine allows.

Figures: dockyard_seconds, swarm_seconds, dockyard/swarm (target <= 0.5), floor_seconds,
floor/swarm, dockyard/floor, and dockyard_defaults_seconds, dockyard_defaults/swarm.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time

import aiodocker
import httpx

from _common import DOCKYARD, IMAGE, Bench, CannotMeasure, docker, log, main

CMD = ["httpd", "-f", "-p", "8080", "-h", "/www"]
HEALTH = "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"
TIMEOUT = 300.0


LIKE_SWARM = "minimumHealthyTimeSeconds: 5, bakeTimeSeconds: 0"


def manifest(n: int, rev: int, proof: str = LIKE_SWARM) -> str:
    """``proof``: extra deploymentConfiguration keys (empty: dockyard's defaults)."""
    env = "" if rev == 1 else f"\n      environment: [{{name: REV, value: '{rev}'}}]"
    extra = f", {proof}" if proof else ""
    return f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: broll}}
spec:
  containerDefinitions:
    - name: web
      image: {IMAGE}
      command: {json.dumps(CMD)}
      memory: 32
      stopTimeout: 2{env}
      healthCheck:
        command: ["CMD-SHELL", {json.dumps(HEALTH)}]
        interval: 5
        timeout: 2
        retries: 3
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: broll}}
spec:
  taskDefinition: broll
  desiredCount: {n}
  deploymentConfiguration: {{maximumPercent: 200, minimumHealthyPercent: 100{extra}}}
"""


async def running_by(d: aiodocker.Docker, label: str, key: str) -> dict[str, int]:
    """Running containers with ``label``, counted by the value of label ``key``."""
    rows = await d._query_json("containers/json", params={"filters": json.dumps({"label": [label], "status": ["running"]})})
    out: dict[str, int] = {}
    for r in rows:
        v = (r.get("Labels") or {}).get(key, "")
        out[v] = out.get(v, 0) + 1
    return out


async def wait_dockyard(bench: Bench, n: int, rev: int, t0: float) -> float:
    env = bench.env
    label = f"dockyard.cluster={env.cluster}"
    d = aiodocker.Docker()
    last = None
    phases: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(base_url=env.base_url, timeout=10, headers=env.api_headers) as api:
            while time.monotonic() - t0 < TIMEOUT:
                deps = (await api.get(f"/v1/clusters/{env.cluster}/services/broll/deployments")).json()["deployments"]
                primary = next((x for x in deps if x["status"] == "PRIMARY"), None)
                if primary and primary["taskDefinition"] == f"broll:{rev}":
                    tasks = (await api.get(f"/v1/clusters/{env.cluster}/tasks")).json()["tasks"]
                    mine = [t for t in tasks if t.get("deploymentId") == primary["id"] and t["desiredStatus"] == "RUNNING"]
                    for phase, ok in (("running", sum(t["lastStatus"] == "RUNNING" for t in mine) >= n),
                                      ("healthy", sum(t["healthStatus"] == "HEALTHY" for t in mine) >= n),
                                      ("proven", primary.get("provenCount", 0) >= n)):
                        if ok and phase not in phases:
                            phases[phase] = time.monotonic() - t0
                done = bool(primary and primary["taskDefinition"] == f"broll:{rev}" and primary["rolloutState"] == "COMPLETED")
                if primary and primary["rolloutState"] == "FAILED":
                    raise CannotMeasure(f"dockyard deployment failed: {primary['rolloutStateReason']}")
                if done:
                    counts = await running_by(d, label, "dockyard.revision")
                    last = counts
                    if counts.get(str(rev), 0) == n and sum(counts.values()) == n:
                        took = time.monotonic() - t0
                        log(f"dockyard revision {rev}: all {n} new tasks " + ", ".join(
                            f"{k} at {v:.1f}s" for k, v in phases.items()) + f", COMPLETED and old gone at {took:.1f}s")
                        return took
                await asyncio.sleep(0.1)
    finally:
        await d.close()
    raise CannotMeasure(f"dockyard revision {rev} not completed within {TIMEOUT:.0f}s (containers by revision: {last})")


async def wait_swarm(name: str, n: int, t0: float, update: bool) -> float:
    """Until the service has n healthy running tasks of its current spec (and, after an update,
    UpdateStatus completed and no container of an older spec still running)."""
    d = aiodocker.Docker()
    label = f"com.docker.swarm.service.name={name}"
    last = None
    try:
        while time.monotonic() - t0 < TIMEOUT:
            svc = await d._query_json(f"services/{name}")
            state = (svc.get("UpdateStatus") or {}).get("State")
            if state in ("paused", "rollback_completed", "rollback_paused"):
                raise CannotMeasure(f"swarm update {state}: {(svc.get('UpdateStatus') or {}).get('Message')}")
            version = svc["Version"]["Index"]
            tasks = await d._query_json("tasks", params={"filters": json.dumps({"service": [name], "desired-state": ["running"]})})
            current = [t for t in tasks if (t.get("Status") or {}).get("State") == "running"
                       and t.get("Spec", {}).get("ContainerSpec", {}).get("Env") == svc["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env")]
            containers = await d._query_json("containers/json", params={"filters": json.dumps({"label": [label], "status": ["running"]})})
            healthy = [c for c in containers if "(healthy)" in (c.get("Status") or "")]
            last = (state, len(current), len(containers), len(healthy), version)
            if len(current) == n and len(containers) == n and len(healthy) == n and (not update or state == "completed"):
                return time.monotonic() - t0
            await asyncio.sleep(0.1)
    finally:
        await d.close()
    raise CannotMeasure(f"swarm service {name} not done within {TIMEOUT:.0f}s (state, current, running, healthy, version = {last})")


async def engine_floor(n: int, label: str, proof: float, grace: float) -> float:
    """The engine's floor for the like-for-like rollout, measured with aiodocker alone: create and
    start n more httpd containers (12 at a time, as the agent) beside n running ones, until all
    the new ones are healthy; plus the proof time and one stop grace an orchestrator cannot skip."""
    d = aiodocker.Docker()
    sem = asyncio.Semaphore(12)
    spec = {"Image": IMAGE, "Cmd": CMD, "Labels": {label: "1"}, "HostConfig": {"Memory": 32 * 1024 * 1024},
            "Healthcheck": {"Test": ["CMD-SHELL", HEALTH], "Interval": 5 * 10**9, "Timeout": 2 * 10**9, "Retries": 3}}

    async def one() -> aiodocker.containers.DockerContainer:
        async with sem:
            c = await d.containers.create(spec)
            await c.start()
            return c
    try:
        await asyncio.gather(*(one() for _ in range(n)))
        t0 = time.monotonic()
        new = await asyncio.gather(*(one() for _ in range(n)))
        while time.monotonic() - t0 < TIMEOUT:
            states = [((await c.show())["State"].get("Health") or {}).get("Status") for c in new]
            if all(s == "healthy" for s in states):
                return time.monotonic() - t0 + proof + grace
            await asyncio.sleep(0.1)
        raise CannotMeasure("the raw engine's containers did not all turn healthy")
    finally:
        for c in await d.containers.list(all=True, filters={"label": [f"{label}=1"]}):
            await c.delete(force=True)
        await d.close()


def run(bench: Bench) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--replicas", type=int, default=50)
    args = ap.parse_args()
    n = args.replicas
    env = bench.env
    swarm = bench.use_swarm()

    # ---- dockyard
    env.start_orchestrator()
    env.start_agent()
    t0 = time.monotonic()
    env.cli("apply", "-f", str(bench.manifest(manifest(n, 1), "rev1.yaml")))
    took = asyncio.run(wait_dockyard(bench, n, 1, t0))
    log(f"dockyard: {n} healthy replicas of revision 1 after {took:.1f}s; rolling to revision 2")
    time.sleep(2.0)
    path = bench.manifest(manifest(n, 2), "rev2.yaml")
    t0 = time.monotonic()
    subprocess.run([DOCKYARD, "--server", env.base_url, "-c", env.cluster, "apply", "-f", str(path)],
                   check=True, capture_output=True, env=env.cli_env())
    dy = asyncio.run(wait_dockyard(bench, n, 2, t0))
    log(f"dockyard: rollout to revision 2 (proof 5 s, no bake) completed in {dy:.2f}s")
    time.sleep(2.0)
    path = bench.manifest(manifest(n, 3, proof=""), "rev3.yaml")
    t0 = time.monotonic()
    subprocess.run([DOCKYARD, "--server", env.base_url, "-c", env.cluster, "apply", "-f", str(path)],
                   check=True, capture_output=True, env=env.cli_env())
    dy_defaults = asyncio.run(wait_dockyard(bench, n, 3, t0))
    log(f"dockyard: rollout to revision 3 at the defaults (proof 10 s, bake 10 s) completed in {dy_defaults:.2f}s")
    bench.new_env()  # stop dockyard's processes and remove its containers before Swarm runs

    # ---- the raw engine's floor for the same rollout (no orchestrator at all)
    floor = asyncio.run(engine_floor(n, f"dockyard-bench-floor-{env.cluster}", proof=5.0, grace=2.0))
    log(f"engine floor: {n} new containers healthy beside {n} running + 5 s proof + 2 s stop grace = {floor:.2f}s")

    # ---- swarm
    name = f"{env.cluster}-swarm"
    t0 = time.monotonic()
    swarm.create(name, "--replicas", str(n), "--limit-memory", "32M", "--stop-grace-period", "2s",
                 "--restart-condition", "none", "--health-cmd", HEALTH, "--health-interval", "5s",
                 "--health-timeout", "2s", "--health-retries", "3", IMAGE, *CMD)
    took = asyncio.run(wait_swarm(name, n, t0, update=False))
    log(f"swarm: {n} healthy replicas after {took:.1f}s; updating")
    time.sleep(2.0)
    t0 = time.monotonic()
    docker("service", "update", "--detach", "--env-add", "REV=2", "--update-parallelism", "10",
           "--update-order", "start-first", "--update-monitor", "5s", "--no-resolve-image", name)
    sw = asyncio.run(wait_swarm(name, n, t0, update=True))
    log(f"swarm: update completed in {sw:.2f}s")
    swarm.remove_services()

    bench.figure("dockyard_seconds", dy)
    bench.figure("swarm_seconds", sw)
    bench.figure("dockyard/swarm", dy / sw)
    bench.figure("floor_seconds", floor)
    bench.figure("floor/swarm", floor / sw)
    bench.figure("dockyard/floor", dy / floor)
    bench.figure("dockyard_defaults_seconds", dy_defaults)
    bench.figure("dockyard_defaults/swarm", dy_defaults / sw)


if __name__ == "__main__":
    main(run, "rollout")
