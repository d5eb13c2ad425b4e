"""Service auto scaling end to end on real dockerd (issue 17): target tracking on the agents'
measured CPUUtilization, with a fixed total load split across the tasks, so more tasks mean less
each; after the load stops, scale-in after the cooldown down to min; a scheduled action raises min.

The load: the test drops "tickets" into a host directory every task mounts, at a fixed rate; each
task claims tickets with an atomic rename and burns a fixed amount of CPU per ticket (md5 of 8 MB
of zeros, ~60 ms of one core), so the total stays ~0.2 core whatever the task count."""
from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness import IMAGE, free_port

WORKER = ("trap 'exit 0' TERM; while true; do for f in /work/t.*; do "
          "if mv \"$f\" \"/work/c.$HOSTNAME.${f##*/}\" 2>/dev/null; then head -c 8000000 /dev/zero | md5sum >/dev/null; "
          "rm -f \"/work/c.$HOSTNAME.${f##*/}\"; fi; done; sleep 0.1; done")
TICKETS_PER_SECOND = 3
TARGET = 6.0  # % of one vCPU per task; ~18 % in total -> about 3 tasks
MAX = 4


def _manifests(work: Path, scheduled: list[dict] | None = None) -> str:
    td = {"family": "burn", "volumes": [{"name": "work", "host": {"sourcePath": str(work)}}],
          "containerDefinitions": [{"name": "burn", "image": IMAGE, "memory": 32, "command": ["sh", "-c", WORKER],
                                    "mountPoints": [{"sourceVolume": "work", "containerPath": "/work"}]}]}
    svc = {"serviceName": "burn", "taskDefinition": "burn", "desiredCount": 1,
           "deploymentConfiguration": {"minimumHealthyTimeSeconds": 0, "bakeTimeSeconds": 0}}
    policy = {"apiVersion": "dockyard/v1", "kind": "ScalingPolicy", "metadata": {"name": "burn"},
              "spec": {"minCapacity": 1, "maxCapacity": MAX, "scaleInStabilizationSeconds": 10,
                       "targetTrackingScalingPolicies": [
                           {"policyName": "cpu", "predefinedMetricType": "ECSServiceAverageCPUUtilization",
                            "targetValue": TARGET, "scaleOutCooldown": 0, "scaleInCooldown": 10}],
                       "scheduledActions": scheduled or []}}
    return "\n---\n".join(json.dumps(d) for d in (td, svc, policy))


class Load:
    """Tickets at a fixed rate into ``work`` (a thread), until stopped."""

    def __init__(self, work: Path) -> None:
        self.work, self.stop, self.n = work, threading.Event(), 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(1.0 / TICKETS_PER_SECOND):
            self.n += 1
            tmp = self.work / f".n{self.n}"
            tmp.write_text("")
            tmp.rename(self.work / f"t.{self.n}")

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for f in self.work.glob("t.*"):
            f.unlink(missing_ok=True)


@pytest.mark.slow
def test_target_tracking_scales_out_under_load_and_in_after_it_and_on_schedule(dockyard_env, tmp_path):
    env = dockyard_env
    work = tmp_path / "work"
    work.mkdir()
    env.start_orchestrator()
    env.start_agent()
    env.cli("apply", "-f", str(env.write_manifest(_manifests(work))))
    env.wait_running(1)
    seen: list[int] = []

    def desired() -> int:
        s = env.service("burn")
        seen.append(s["desiredCount"])
        return s["desiredCount"]

    with Load(work):
        # Out: from 1 toward the count that brings the average near the target, never above max.
        env.wait_for(lambda: desired() >= 2, timeout=60, interval=0.5, message="a scale-out")
        env.wait_for(lambda: len(env.running_tasks()) == desired() >= 2, timeout=60, interval=0.5,
                     message="the scaled-out tasks RUNNING")
        view = env.service("burn")["autoScaling"]
        out = view["activities"][0]
        assert out["statusMessage"].startswith("Successfully set desired count to ")
        assert out["statusMessage"].endswith("Change successfully fulfilled by ecs.")
        assert "ECSServiceAverageCPUUtilization" in out["cause"] and "above target 6" in out["cause"]
        r = env.cli("describe", "service", "burn")
        assert "Auto scaling:" in r.stdout and "ECSServiceAverageCPUUtilization" in r.stdout
        env.wait_for(lambda: desired() >= 3 or None, timeout=45, interval=0.5, message="about 3 tasks for ~18 %")
        assert max(seen) <= MAX
    # In: the load is gone; after the cooldown and the stabilization window, down to min.
    env.wait_for(lambda: desired() == 1, timeout=90, interval=0.5, message="a scale-in to minCapacity")
    assert max(seen) <= MAX
    acts = env.service("burn")["autoScaling"]["activities"]
    assert "below target 6" in acts[0]["cause"]
    env.wait_running(1, timeout=60)
    # A scheduled action raises min at a given time (a few seconds from now, UTC).
    at = datetime.fromtimestamp(time.time() + 6, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    env.cli("apply", "-f", str(env.write_manifest(_manifests(work, [
        {"scheduledActionName": "rush", "schedule": f"at({at})", "timezone": "UTC",
         "scalableTargetAction": {"minCapacity": 2}}]))))
    assert desired() == 1  # not before its time
    env.wait_for(lambda: desired() == 2, timeout=40, interval=0.5, message="the scheduled min 2")
    view = env.service("burn")["autoScaling"]
    assert view["minCapacity"] == 2
    assert any(a["cause"] == "scheduled action name rush was triggered" for a in view["activities"])
    env.wait_running(2, timeout=60)


REQ_TARGET = 300.0  # requests per target per minute


@pytest.mark.slow
def test_request_count_per_target_through_the_load_balancer(dockyard_env, tmp_path):
    """ALBRequestCountPerTarget: ~10 requests/s through HAProxy = ~600 per minute on one target,
    target 300 -> two targets, both healthy in the load balancer."""
    from loadgen import Load as HttpLoad
    from test_load_balancing import _kill_haproxy, web_manifest

    env, lb_dir = dockyard_env, tmp_path / "lb"
    port = free_port()
    try:
        env.start_orchestrator()
        env.start_agent(load_balancer=True, lb_dir=str(lb_dir), lb_bind="127.0.0.1")
        policy = {"apiVersion": "dockyard/v1", "kind": "ScalingPolicy", "metadata": {"name": "web"},
                  "spec": {"minCapacity": 1, "maxCapacity": 3, "targetTrackingScalingPolicies": [
                      {"policyName": "requests", "predefinedMetricType": "ALBRequestCountPerTarget",
                       "targetValue": REQ_TARGET, "scaleOutCooldown": 0, "scaleInCooldown": 300}]}}
        env.cli("apply", "-f", str(env.write_manifest(web_manifest(port, "rev1", 1) + "\n---\n" + json.dumps(policy))))
        env.wait_for(_healthy_targets(env, 1), timeout=60, message="1 healthy target")
        with HttpLoad(f"http://127.0.0.1:{port}/", rate=5.0, limit=120):  # two clients: ~10/s
            env.wait_for(lambda: env.service("web")["desiredCount"] >= 2, timeout=60, interval=0.5,
                         message="a scale-out on requests per target")
            env.wait_for(lambda: _healthy_targets(env, env.service("web")["desiredCount"])(), timeout=60,
                         message="the new targets healthy in the load balancer")
            view = env.service("web")["autoScaling"]
        assert view["policies"][0]["metric"] == "ALBRequestCountPerTarget"
        assert "ALBRequestCountPerTarget" in view["activities"][0]["cause"]
        assert env.service("web")["desiredCount"] == 2  # ~600 per minute over 2 targets: on target
    finally:
        _kill_haproxy(lb_dir)


def _healthy_targets(env, count: int):
    def check():
        tg = env.get(f"/v1/clusters/{env.cluster}/targetgroups/web")["targetGroup"]
        healthy = [t for t in tg["targets"] if t["health"] and all(h["state"] == "healthy" for h in t["health"].values())]
        return tg if len(healthy) == count and len(tg["targets"]) == count else None
    return check
