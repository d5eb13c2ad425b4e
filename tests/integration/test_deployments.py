"""Issue 3 end to end: health checks, rolling deployments, circuit breaker with rollback, dependsOn."""
from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from harness import IMAGE, docker

pytestmark = pytest.mark.slow


def web(revision_marker: str, *, command: str | None = None, health: str | None = None, desired: int = 3,
        min_healthy: int = 100, max_percent: int = 200, interval: int = 5, retries: int = 2) -> str:
    cmd = command or f'echo {revision_marker} > /www/v.txt; exec httpd -f -p 8080 -h /www'
    check = health or "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"
    return f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - name: web
      image: {IMAGE}
      command: ["sh", "-c", "{cmd}"]
      memory: 16
      stopTimeout: 1
      environment: [{{name: MARK, value: "{revision_marker}"}}]
      healthCheck: {{command: ["CMD-SHELL", "{check}"], interval: {interval}, timeout: 2, retries: {retries}}}
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: web}}
spec:
  taskDefinition: web
  desiredCount: {desired}
  deploymentConfiguration:
    maximumPercent: {max_percent}
    minimumHealthyPercent: {min_healthy}
    deploymentCircuitBreaker: {{enable: true, rollback: true}}
"""


def service(env) -> dict:
    return env.service("web")


def completed(env, taskdef: str):
    return env.completed("web", taskdef)


def start(env, manifest: str) -> None:
    env.start_orchestrator()
    env.start_agent()
    env.cli("apply", "-f", env.write_manifest(manifest))
    env.wait_for(completed(env, "web:1"), timeout=60, message="web:1 COMPLETED")


def test_rolling_deploy_respects_min_healthy_and_max_percent(dockyard_env):
    env = dockyard_env
    start(env, web("v1", desired=4, min_healthy=50, max_percent=150, interval=5, retries=1))
    desired, min_healthy, max_total = 4, 2, 6
    samples: list[tuple[int, int, int]] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                tasks = env.tasks()
            except Exception:  # noqa: BLE001 - a failed poll is not a sample
                continue
            live = [t for t in tasks if t["lastStatus"] in ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING")]
            healthy = [t for t in tasks if t["lastStatus"] == "RUNNING" and t["healthStatus"] == "HEALTHY"]
            running = len(env.containers(all=False))
            samples.append((len(healthy), len(live), running))
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    env.cli("apply", "-f", env.write_manifest(web("v2", desired=4, min_healthy=50, max_percent=150, interval=5,
                                                  retries=1)))
    cp = env.cli("rollout", "status", "web", "--timeout", "120", check=False)
    env.wait_for(completed(env, "web:2"), timeout=60, message="web:2 COMPLETED")
    env.wait_for(lambda: len(env.containers(all=False)) == desired, timeout=30, message="old containers gone")
    time.sleep(0.5)
    stop.set()
    th.join(5)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert len(samples) > 20
    assert min(h for h, _, _ in samples) >= min_healthy, samples
    assert max(n for _, n, _ in samples) <= max_total, samples
    assert max(r for _, _, r in samples) <= max_total, samples
    running = env.running_tasks()
    assert len(running) == desired and {t["taskDefinition"] for t in running} == {"web:2"}
    s = service(env)
    assert [d["status"] for d in s["deployments"] if d["status"] != "INACTIVE"] == ["PRIMARY"]
    history = env.cli("rollout", "history", "web").stdout
    assert "web:1" in history and "web:2" in history


@pytest.mark.parametrize("case", ["exits-at-once", "always-unhealthy"])
def test_circuit_breaker_rolls_back(dockyard_env, case):
    env = dockyard_env
    start(env, web("v1", retries=1))
    good = {t["taskId"] for t in env.running_tasks()}
    if case == "exits-at-once":
        bad = web("v2", command="echo crash; exit 1", retries=1)
    else:
        bad = web("v2", health="exit 1", retries=1)
    env.cli("apply", "-f", env.write_manifest(bad))
    cp = env.cli("rollout", "status", "web", "--timeout", "120", check=False)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    s = env.wait_for(completed(env, "web:1"), timeout=90, message="rolled back to web:1")
    failed = next(d for d in s["deployments"] if d["taskDefinition"] == "web:2")
    assert failed["rolloutState"] == "FAILED" and failed["failedTasks"] >= 3
    assert s["deployments"][0]["isRollback"] is True
    messages = [e["message"] for e in s["events"]]
    assert any("deployment failed" in m for m in messages) and any("rolling back" in m for m in messages)
    env.wait_for(lambda: len(env.containers(all=False)) == 3, timeout=30, message="only 3 containers")
    running = env.running_tasks()
    assert {t["taskDefinition"] for t in running} == {"web:1"}
    # the healthy tasks of web:1 kept serving throughout: the rollback adopted them
    assert {t["taskId"] for t in running} == good
    stopped = [t for t in env.tasks() if t["taskDefinition"] == "web:2"]
    assert stopped and all(t["lastStatus"] == "STOPPED" and t["stoppedAt"] for t in stopped)
    if case == "always-unhealthy":
        assert any(t["stoppedReason"] == "Task failed container health checks" for t in stopped)


def test_unhealthy_task_is_replaced(dockyard_env):
    env = dockyard_env
    start(env, web("v1", desired=2, health="test ! -f /tmp/sick", interval=5, retries=1))
    tasks = env.running_tasks()
    victim = tasks[0]
    cid = env.containers(all=False, task=victim["taskId"])[0]["ID"]
    docker("exec", cid, "touch", "/tmp/sick")

    def replaced():
        t = env.get(f"/v1/clusters/{env.cluster}/tasks/{victim['taskId']}")["task"]
        return t if t["lastStatus"] == "STOPPED" else None

    t = env.wait_for(replaced, timeout=60, message="unhealthy task stopped")
    assert t["stopCode"] == "ServiceSchedulerInitiated"
    assert t["stoppedReason"] == "Task failed container health checks"
    env.wait_for(lambda: len([x for x in env.running_tasks() if x["healthStatus"] == "HEALTHY"]) == 2,
                 timeout=60, message="2 healthy tasks again")
    assert victim["taskId"] not in {x["taskId"] for x in env.running_tasks()}


def _ts(value: str) -> float:
    # Docker timestamps have nanoseconds; keep microseconds
    value = value.replace("Z", "+00:00")
    head, _, tail = value.partition(".")
    frac, _, tz = tail.partition("+")
    return datetime.fromisoformat(f"{head}.{frac[:6]}+{tz}").timestamp()


def test_depends_on_healthy_orders_container_start(dockyard_env):
    env = dockyard_env
    env.start_orchestrator()
    env.start_agent()
    env.cli("apply", "-f", env.write_manifest(f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: pair}}
spec:
  containerDefinitions:
    - name: cache
      image: {IMAGE}
      command: ["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 3600"]
      memory: 16
      stopTimeout: 1
      healthCheck: {{command: ["CMD-SHELL", "test -f /tmp/ready"], interval: 5, timeout: 2, retries: 3}}
    - name: app
      image: {IMAGE}
      command: ["sleep", "3600"]
      memory: 16
      stopTimeout: 1
      dependsOn: [{{containerName: cache, condition: HEALTHY}}]
"""))
    out = env.cli("run", "pair").stdout
    task_id = out.split()[0]
    env.wait_for(lambda: len(env.containers(all=False)) == 2, timeout=60, message="both containers running")
    cache = env.inspect(env.containers(all=False, container="cache")[0]["ID"])
    app = env.inspect(env.containers(all=False, container="app")[0]["ID"])
    healthy_at = min(_ts(e["End"]) for e in cache["State"]["Health"]["Log"] if e["ExitCode"] == 0)
    assert _ts(app["State"]["StartedAt"]) >= healthy_at - 0.05
    assert _ts(app["State"]["StartedAt"]) - _ts(cache["State"]["StartedAt"]) >= 2
    env.wait_for(lambda: env.get(f"/v1/clusters/{env.cluster}/tasks/{task_id}")["task"]["lastStatus"] == "RUNNING",
                 timeout=20, message="task RUNNING")
    env.cli("stop", task_id)
    env.wait_for(lambda: env.get(f"/v1/clusters/{env.cluster}/tasks/{task_id}")["task"]["lastStatus"] == "STOPPED",
                 timeout=30, message="task STOPPED")
    t = env.get(f"/v1/clusters/{env.cluster}/tasks/{task_id}")["task"]
    assert t["stopCode"] == "UserInitiated"
