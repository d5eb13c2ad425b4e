#!/usr/bin/env python3
"""Auto-scaling reaction time: from a load step to the new tasks RUNNING (and, with the load
balancer, healthy in it), with cooldown 0 and the default sampling (agent status every 2 s,
auto-scaling pass every 5 s).

    .venv/bin/python bench/autoscale.py [--rounds 3] [--no-lb]

CPU rounds (ECSServiceAverageCPUUtilization, target 6 % of a vCPU): one task of a service whose
tasks take "tickets" from a shared host directory and burn ~60 ms of CPU each (the test's load:
tests/integration/test_autoscaling.py); at t0 the bench starts dropping 3 tickets per second
(~18 % of a core in total, so about 3 tasks are needed). Measured: t0 -> the desired count raised
(decision_s), t0 -> that many tasks RUNNING (running_s).

LB round (ALBRequestCountPerTarget, target 300 per minute): one httpd task behind the agent's
HAProxy; at t0 ~10 requests per second start through it. Measured: t0 -> desired count raised,
-> new task RUNNING, -> every target healthy in HAProxy (healthy_in_lb_s; the target group's
health check: every 5 s, ELB's minimum, 2 to be healthy).

There is no live peer: Swarm has no auto scaling. docs/benchmarks.md states what the anchors
need by their documented defaults (HPA, metrics-server, ECS target tracking's CloudWatch alarms).

Figures: cpu_decision_s, cpu_running_s (medians over --rounds), cpu_running_s_runs,
lb_decision_s, lb_running_s, lb_healthy_in_lb_s; target: running (and healthy) <= 30 s.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import IMAGE, Bench, CannotMeasure, free_port, log, main, median  # noqa: E402

WORKER = ("trap 'exit 0' TERM; while true; do for f in /work/t.*; do "
          "if mv \"$f\" \"/work/c.$HOSTNAME.${f##*/}\" 2>/dev/null; then head -c 8000000 /dev/zero | md5sum >/dev/null; "
          "rm -f \"/work/c.$HOSTNAME.${f##*/}\"; fi; done; sleep 0.1; done")


def _policy(name: str, metric: str, target: float, hi: int) -> dict:
    return {"apiVersion": "dockyard/v1", "kind": "ScalingPolicy", "metadata": {"name": name},
            "spec": {"minCapacity": 1, "maxCapacity": hi, "scaleInStabilizationSeconds": 300,
                     "targetTrackingScalingPolicies": [
                         {"policyName": "p", "predefinedMetricType": metric, "targetValue": target,
                          "scaleOutCooldown": 0, "scaleInCooldown": 0}]}}


def _until(b: Bench, pred, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        time.sleep(0.1)
    raise CannotMeasure(f"{what} not within {timeout:.0f} s")


def _evaluated(b: Bench, name: str) -> bool:
    view = b.env.service(name).get("autoScaling") or {}
    return any(p.get("currentValue") is not None for p in view.get("policies") or [])


def cpu_round(b: Bench) -> tuple[float, float]:
    env = b.env
    work = b.tmp / f"work-{env.cluster}"
    work.mkdir()
    env.start_orchestrator()
    env.start_agent()
    td = {"family": "burn", "volumes": [{"name": "work", "host": {"sourcePath": str(work)}}],
          "containerDefinitions": [{"name": "burn", "image": IMAGE, "memory": 32, "command": ["sh", "-c", WORKER],
                                    "mountPoints": [{"sourceVolume": "work", "containerPath": "/work"}]}]}
    svc = {"serviceName": "burn", "taskDefinition": "burn", "desiredCount": 1,
           "deploymentConfiguration": {"minimumHealthyTimeSeconds": 0, "bakeTimeSeconds": 0}}
    b.apply(b.manifest("\n---\n".join(json.dumps(d) for d in (td, svc, _policy(
        "burn", "ECSServiceAverageCPUUtilization", 6.0, 4)))))
    _until(b, lambda: b.running_count() == 1 and _evaluated(b, "burn"), 90, "1 task RUNNING and sampled")
    stop = threading.Event()

    def produce() -> None:
        n = 0
        while not stop.wait(1 / 3):
            n += 1
            (work / f".n{n}").write_text("")
            (work / f".n{n}").rename(work / f"t.{n}")

    t0 = time.monotonic()
    threading.Thread(target=produce, daemon=True).start()
    try:
        t_dec = _until(b, lambda: env.service("burn")["desiredCount"] >= 2, 120, "a scale-out")
        want = env.service("burn")["desiredCount"]
        t_run = _until(b, lambda: b.running_count() >= want, 120, f"{want} tasks RUNNING")
    finally:
        stop.set()
    return t_dec - t0, t_run - t0


def lb_round(b: Bench) -> tuple[float, float, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
    from loadgen import Load
    from test_load_balancing import _kill_haproxy, web_manifest

    env = b.env
    lb_dir = b.tmp / "lb"
    b.extra_cleanups.append(lambda: _kill_haproxy(lb_dir))
    port = free_port()
    env.start_orchestrator()
    env.start_agent(load_balancer=True, lb_dir=str(lb_dir), lb_bind="127.0.0.1")
    text = web_manifest(port, "rev1", 1)
    b.apply(b.manifest(text + "\n---\n" + json.dumps(_policy("web", "ALBRequestCountPerTarget", 300.0, 3))))

    def healthy(n: int) -> bool:
        tg = env.get(f"/v1/clusters/{env.cluster}/targetgroups/web")["targetGroup"]
        ok = [t for t in tg["targets"] if t["health"] and all(h["state"] == "healthy" for h in t["health"].values())]
        return len(ok) == n == len(tg["targets"])

    _until(b, lambda: healthy(1), 90, "1 healthy target")
    t0 = time.monotonic()
    with Load(f"http://127.0.0.1:{port}/", rate=5.0, limit=120):
        t_dec = _until(b, lambda: env.service("web")["desiredCount"] >= 2, 120, "a scale-out")
        want = env.service("web")["desiredCount"]
        t_run = _until(b, lambda: b.running_count() >= want, 120, f"{want} tasks RUNNING")
        t_ok = _until(b, lambda: healthy(env.service("web")["desiredCount"]), 120, "the new targets healthy")
    return t_dec - t0, t_run - t0, t_ok - t0


def run(b: Bench) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3, help="CPU rounds (0: only the LB round)")
    ap.add_argument("--no-lb", action="store_true")
    args = ap.parse_args()
    decs, runs = [], []
    for i in range(args.rounds):
        if i:
            b.new_env()
            b.env.mqtt_url = b.broker.url if b.broker else b.env.mqtt_url
        d, r = cpu_round(b)
        log(f"cpu round {i + 1}: decision {d:.1f} s, RUNNING {r:.1f} s")
        decs.append(d)
        runs.append(r)
    if runs:
        b.figure("cpu_decision_s", median(decs))
        b.figure("cpu_running_s", median(runs))
        b.figure("cpu_running_s_runs", " ".join(f"{r:.1f}" for r in runs))
    if not args.no_lb:
        if args.rounds:
            b.new_env()
        d, r, h = lb_round(b)
        b.figure("lb_decision_s", d)
        b.figure("lb_running_s", r)
        b.figure("lb_healthy_in_lb_s", h)


if __name__ == "__main__":
    main(run, "autoscale")
