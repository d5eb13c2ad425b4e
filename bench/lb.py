#!/usr/bin/env python3
"""Load balancing: failed requests during a rolling deployment, added latency, registration and drain times.

    .venv/bin/python bench/lb.py [--replicas 10] [--rate 50] [--latency-requests 1500]

One run, the same engine, image and fixed load (two clients, keep-alive and a new connection per
request, --rate requests/s each, all to 127.0.0.1):

* dockyard: a service of --replicas tasks behind a target group on the agent's HAProxy
  (`--load-balancer`), rolled to a new revision (200/100); failed requests counted.
* Docker Swarm: its routing mesh (`--publish`, `--update-order start-first`) needs IPVS in the
  kernel; the script checks it first. Without IPVS (this VM's kernel has no ip_vs), the peer is
  Swarm's host-mode publishing: one replica per node on the fixed port (a second one could not
  bind it), so the update is stop-first; failed requests counted under the same load.
* latency: p50/p99 of sequential requests through the LB and straight to one task's host port,
  with keep-alive and with a new connection per request (ratio LB/direct).
* registration: seconds from HAProxy reporting a new target healthy (orchestrator's view, polled
  every 50 ms) to the first response served by it; drain: seconds from `dockyard stop` of an idle
  target to its container's SIGTERM (docker events).

Figures: dockyard_failed, swarm_failed, swarm_mode, dockyard_requests, swarm_requests,
p50/p99 keep-alive and new-connection for lb and direct with ratios (target p99 keep-alive <= 1.5),
healthy_to_first_request_seconds (target <= 2), idle_stop_to_sigterm_seconds (target <= 1).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
from _common import IMAGE, Bench, CannotMeasure, docker, free_port, log, main, percentile
from loadgen import Load

APP = ("mkdir -p /www; hostname > /www/index.html; echo ok > /www/health; exec httpd -f -p 8080 -h /www")


def manifest(port: int, rev: int, n: int) -> str:
    return f"""
apiVersion: dockyard/v1
kind: TargetGroup
metadata: {{name: web}}
spec:
  deregistrationDelay: 30
  healthCheck: {{path: /health, intervalSeconds: 5, timeoutSeconds: 2, healthyThresholdCount: 2}}
---
apiVersion: dockyard/v1
kind: LoadBalancer
metadata: {{name: front}}
spec:
  listeners: [{{port: {port}, protocol: HTTP, defaultActions: [{{targetGroupName: web}}]}}]
---
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - name: web
      image: {IMAGE}
      memory: 32
      stopTimeout: 2
      environment: [{{name: REV, value: "{rev}"}}]
      command: ["sh", "-c", "{APP}"]
      portMappings: [{{containerPort: 8080}}]
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: web}}
spec:
  taskDefinition: web
  desiredCount: {n}
  loadBalancers: [{{targetGroupName: web, containerName: web, containerPort: 8080}}]
  deploymentConfiguration: {{maximumPercent: 200, minimumHealthyPercent: 100, minimumHealthyTimeSeconds: 5, bakeTimeSeconds: 0}}
"""


def latencies(url: str, n: int, keepalive: bool) -> list[float]:
    out = []
    limits = httpx.Limits(max_keepalive_connections=1 if keepalive else 0)
    with httpx.Client(limits=limits, timeout=10.0) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.get(url, headers={} if keepalive else {"Connection": "close"})
            out.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise CannotMeasure(f"latency probe got {r.status_code} from {url}")
    return out


def targets(env) -> list[dict]:  # noqa: ANN001
    return env.get(f"/v1/clusters/{env.cluster}/targetgroups/web")["targetGroup"]["targets"]


def healthy_ids(env) -> set[str]:  # noqa: ANN001
    return {t["taskId"] for t in targets(env) if t["health"] and all(h["state"] == "healthy" for h in t["health"].values())}


def wait(pred, timeout: float, what: str, interval: float = 0.2):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = pred()
        except (httpx.HTTPError, OSError):  # not up yet
            v = None
        if v:
            return v
        time.sleep(interval)
    raise CannotMeasure(f"timed out after {timeout:.0f}s waiting for {what}")


def mesh_works(bench: Bench, port: int) -> bool:
    """Whether Swarm's routing mesh answers on a published port here (it needs IPVS)."""
    if not Path("/proc/net/ip_vs").exists():
        log("no /proc/net/ip_vs: the kernel has no IPVS, Swarm's routing mesh cannot balance here")
        return False
    swarm = bench.use_swarm()
    name = f"{bench.env.cluster}-meshprobe"
    swarm.create(name, "--replicas", "1", "--publish", f"published={port},target=8080", IMAGE, "sh", "-c", APP)
    try:
        wait(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200, 60, "the mesh probe")
        return True
    except (CannotMeasure, httpx.HTTPError):
        return False
    finally:
        swarm.remove_services()


def swarm_failed(bench: Bench, n: int, rate: float, port: int, mesh: bool) -> tuple[int, int]:
    swarm = bench.use_swarm()
    name = f"{bench.env.cluster}-swarm"
    publish = f"published={port},target=8080" if mesh else f"mode=host,published={port},target=8080"
    replicas = n if mesh else 1
    order = "start-first" if mesh else "stop-first"  # host mode: the fixed port admits one task per node
    swarm.create(name, "--replicas", str(replicas), "--publish", publish, "--stop-grace-period", "2s",
                 "--health-cmd", "wget -q -O- http://127.0.0.1:8080/health", "--health-interval", "2s",
                 "--health-retries", "2", "--limit-memory", "32M", IMAGE, "sh", "-c", APP)
    wait(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200, 90, "the swarm service")
    time.sleep(3)
    with Load(f"http://127.0.0.1:{port}/", rate) as load:
        wait(lambda: load.total >= 40, 20, "traffic to swarm")
        docker("service", "update", "--detach", "--env-add", "REV=2", "--update-order", order,
               "--update-parallelism", "1", "--update-delay", "0s", "--no-resolve-image", name)
        def done() -> bool:
            st = json.loads(docker("service", "inspect", name).stdout)[0].get("UpdateStatus") or {}
            return st.get("State") in ("completed", "rollback_completed", "paused")
        wait(done, 300, "the swarm update", interval=0.5)
        time.sleep(3)
    swarm.remove_services()
    return len(load.failed), load.total


def sigterm_after_stop(env, task_id: str) -> float:  # noqa: ANN001
    """Seconds from `dockyard stop` of the task to the kill(15) of its container (docker events)."""
    cid = env.containers(all=False, task=task_id)[0]["ID"]
    ev = subprocess.Popen([*("docker", "events", "--format", "{{json .}}", "--filter", f"container={cid}",
                             "--filter", "event=kill")], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        t0 = time.time()
        env.cli("stop", task_id)
        line = ev.stdout.readline() if ev.stdout else ""
        e = json.loads(line)
        return e["timeNano"] / 1e9 - t0
    finally:
        ev.send_signal(signal.SIGTERM)
        ev.wait(timeout=10)


def run(bench: Bench) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--replicas", type=int, default=10)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--latency-requests", type=int, default=1500)
    args = ap.parse_args()
    n = args.replicas
    env = bench.env
    lb_dir = bench.tmp / "lb"
    bench.extra_cleanups.append(lambda: _kill_haproxy(lb_dir))
    port = free_port()
    env.start_orchestrator()
    env.start_agent(load_balancer=True, lb_dir=str(lb_dir), lb_bind="127.0.0.1")
    env.cli("apply", "-f", str(bench.manifest(manifest(port, 1, n), "rev1.yaml")))
    wait(lambda: len(healthy_ids(env)) == n, 120, f"{n} healthy targets")
    wait(lambda: env.service("web")["deployments"][0]["rolloutState"] == "COMPLETED", 120, "first deployment")
    log(f"dockyard: {n} targets healthy in HAProxy")

    # ---- latency: through the LB vs straight to one task's host port
    t = targets(env)[0]
    direct, via = f"http://127.0.0.1:{t['port']}/", f"http://127.0.0.1:{port}/"
    lat = {}
    for mode, keep in (("keepalive", True), ("newconn", False)):
        for where, url in (("lb", via), ("direct", direct)):
            xs = latencies(url, args.latency_requests, keep)
            lat[(where, mode)] = (percentile(xs, 50) * 1000, percentile(xs, 99) * 1000)
    # ---- rolling deployment under load
    with Load(via, args.rate) as load:
        wait(lambda: load.total >= 40, 20, "traffic to dockyard")
        env.cli("apply", "-f", str(bench.manifest(manifest(port, 2, n), "rev2.yaml")))
        wait(lambda: (d := env.service("web")["deployments"][0])["taskDefinition"] == "web:2"
             and d["rolloutState"] == "COMPLETED", 300, "the dockyard rollout")
        wait(lambda: len(healthy_ids(env)) == n, 60, "rev2 targets healthy")
        # ---- registration: a new target's first response after HAProxy reports it healthy
        before = healthy_ids(env)
        env.cli("scale", "web", str(n + 1))
        new = wait(lambda: healthy_ids(env) - before, 60, "the new target healthy", interval=0.05)
        t_healthy = time.monotonic()
        (new_id,) = new
        cid = env.containers(all=False, task=new_id)[0]["ID"]
        hostname = cid[:12]
        first = wait(lambda: load.first_seen.get(hostname), 20, "the new target's first response", interval=0.05)
        healthy_to_first = first - t_healthy
    dy_failed, dy_total = len(load.failed), load.total
    log(f"dockyard: {dy_total} requests during the rollout, {dy_failed} failed ({Counter(load.failed)})")
    # ---- drain of an idle target: stop -> SIGTERM
    idle_stop = sigterm_after_stop(env, new_id)
    bench.new_env()  # dockyard's processes and containers gone before Swarm runs
    _kill_haproxy(lb_dir)

    # ---- swarm
    sport = free_port()
    mesh = mesh_works(bench, sport)
    sw_failed, sw_total = swarm_failed(bench, n, args.rate, free_port(), mesh)
    log(f"swarm ({'routing mesh' if mesh else 'host-mode publishing'}): {sw_total} requests, {sw_failed} failed")

    bench.figure("dockyard_requests", dy_total)
    bench.figure("dockyard_failed", dy_failed)
    bench.figure("swarm_mode", "routing-mesh" if mesh else "host-mode (no IPVS)")
    bench.figure("swarm_requests", sw_total)
    bench.figure("swarm_failed", sw_failed)
    for mode in ("keepalive", "newconn"):
        (lb50, lb99), (d50, d99) = lat[("lb", mode)], lat[("direct", mode)]
        bench.figure(f"lb_{mode}_p50_ms", lb50)
        bench.figure(f"lb_{mode}_p99_ms", lb99)
        bench.figure(f"direct_{mode}_p50_ms", d50)
        bench.figure(f"direct_{mode}_p99_ms", d99)
        bench.figure(f"{mode}_p50_lb/direct", lb50 / d50)
        bench.figure(f"{mode}_p99_lb/direct", lb99 / d99)
    bench.figure("healthy_to_first_request_seconds", healthy_to_first)
    bench.figure("idle_stop_to_sigterm_seconds", idle_stop)


def _kill_haproxy(lb_dir: Path) -> None:
    try:
        os.kill(int((lb_dir / "haproxy.pid").read_text().split()[0]), signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass


if __name__ == "__main__":
    main(run, "lb")
