"""A deployment counts a task healthy only once proven (issue: a crashing revision that rolled out
"successfully"). Plain ECS task definitions without a health check, real broker and dockerd."""
from __future__ import annotations

import threading
import time

import pytest

from harness import IMAGE

pytestmark = pytest.mark.slow


def plain(command: str, *, deployment: str = "") -> str:
    """Revision of family ``heldout-web`` with no health check (as most real task definitions) and
    service ``w``: 3 tasks, 100/200, circuit breaker with rollback; ``deployment``: extra keys."""
    return f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: heldout-web}}
spec:
  containerDefinitions:
    - name: web
      image: {IMAGE}
      command: ["sh", "-c", "{command}"]
      memory: 16
      stopTimeout: 1
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: w}}
spec:
  taskDefinition: heldout-web
  desiredCount: 3
  deploymentConfiguration:
    maximumPercent: 200
    minimumHealthyPercent: 100
    deploymentCircuitBreaker: {{enable: true, rollback: true}}
    {deployment}
"""


SERVE = "exec httpd -f -p 8080 -h /www"


def service(env, name: str = "w") -> dict:
    return env.service(name)


def completed(env, taskdef: str):
    return env.completed("w", taskdef)


class Watch:
    """Samples the API every 100 ms: which revision-1 tasks are RUNNING and not asked to stop."""

    def __init__(self, env) -> None:
        self.env, self.samples, self._stop = env, [], threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                tasks = self.env.tasks()
            except Exception:  # noqa: BLE001 - a failed poll is not a sample
                continue
            self.samples.append({t["taskId"] for t in tasks if t["taskDefinition"] == "heldout-web:1"
                                 and t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING"})
            time.sleep(0.1)

    def stop(self) -> list[set[str]]:
        self._stop.set()
        self._th.join(5)
        return self.samples


def start(env, manifest: str) -> set[str]:
    env.start_orchestrator()
    env.start_agent()
    env.cli("apply", "-f", env.write_manifest(manifest))
    env.wait_for(completed(env, "heldout-web:1"), timeout=90, message="revision 1 COMPLETED")
    return {t["taskId"] for t in env.running_tasks()}


@pytest.mark.parametrize("crash", ["exit 1", "sleep 3; exit 1"], ids=["exits-at-once", "exits-after-3s"])
def test_crashing_revision_without_health_check_rolls_back_and_old_tasks_keep_serving(dockyard_env, crash):
    """The issue's scenario at dockyard's defaults (proof 10 s, bake 10 s): revision 2 exits at once,
    or 3 s after RUNNING. rollout status exits 1, revision 2 FAILED, the three revision-1 tasks are
    never stopped and the rollback deployment COMPLETES with exactly them."""
    env = dockyard_env
    good = start(env, plain(SERVE))
    assert len(good) == 3
    watch = Watch(env)
    env.cli("apply", "-f", env.write_manifest(plain(crash)))
    cp = env.cli("rollout", "status", "w", "--timeout", "150", check=False)
    s = env.wait_for(completed(env, "heldout-web:1"), timeout=60, message="rollback COMPLETED")
    samples = watch.stop()
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "(heldout-web:2) failed" in cp.stderr or "rolled back to heldout-web:1" in cp.stderr, cp.stderr
    failed = next(d for d in s["deployments"] if d["taskDefinition"] == "heldout-web:2")
    assert failed["rolloutState"] == "FAILED" and failed["failedTasks"] >= 3
    assert s["deployments"][0]["isRollback"] is True
    assert len(samples) > 50 and all(x == good for x in samples), "a revision-1 task was stopped"
    assert {t["taskId"] for t in env.running_tasks()} == good
    assert s["steadyState"] is True
    messages = [e["message"] for e in s["events"]]
    assert messages[0].endswith("has reached a steady state.")
    assert not any("successfully" in line for line in cp.stdout.splitlines())


def test_good_revision_completes_and_rollout_status_shows_proof_and_bake(dockyard_env):
    env = dockyard_env
    start(env, plain(SERVE, deployment=f"minimumHealthyTimeSeconds: 4\n    bakeTimeSeconds: 4"))
    t0 = time.monotonic()
    env.cli("apply", "-f", env.write_manifest(plain("echo v2 >/www/v.txt; " + SERVE,
                                                    deployment="minimumHealthyTimeSeconds: 4\n    bakeTimeSeconds: 4")))
    cp = env.cli("rollout", "status", "w", "--timeout", "90", check=False)
    took = time.monotonic() - t0
    assert cp.returncode == 0, cp.stdout + cp.stderr
    lines = cp.stdout.splitlines()
    assert any("proven healthy (4s each)" in line for line in lines), lines
    assert any("baking: all 3 tasks proven healthy" in line for line in lines), lines
    assert "successfully rolled out heldout-web:2" in lines[-1]
    assert took >= 8  # 4 s proof + 4 s bake at least
    s = service(env)
    assert [d["status"] for d in s["deployments"] if d["status"] != "INACTIVE"] == ["PRIMARY"]
    assert {t["taskDefinition"] for t in env.running_tasks()} == {"heldout-web:2"}


def test_a_service_that_keeps_failing_says_so(dockyard_env):
    """A new service whose only revision crashes: nothing to roll back to. get services and
    describe service say FAILING, and no steady state is claimed."""
    env = dockyard_env
    env.start_orchestrator()
    env.start_agent()
    env.cli("apply", "-f", env.write_manifest(plain("exit 1").replace("enable: true, rollback: true",
                                                                      "enable: false, rollback: false")))

    def failing():
        s = service(env)
        return s if s.get("failingReason") else None

    s = env.wait_for(failing, timeout=60, message="service failing")
    assert s["steadyState"] is False and "failed in a row" in s["failingReason"]
    table = env.cli("get", "services").stdout
    assert "FAILING" in table.splitlines()[1], table
    page = env.cli("describe", "service", "w").stdout
    assert "State:" in page and "FAILING" in page and "is failing" in page
    assert "steady state" not in page
