"""ECS's container restartPolicy against a real dockerd: restart in place only after restartAttemptPeriod.

Both cases run at the same time in one test (the period's minimum is 60 s, so the test takes ~70 s)."""
from __future__ import annotations

import pytest
from harness import IMAGE, private_broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MANIFEST = f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: longrun}}
spec:
  containerDefinitions:
    - name: app
      image: {IMAGE}
      command: ["sh", "-c", "sleep 62; exit 1"]
      memory: 16
      stopTimeout: 1
      restartPolicy: {{enabled: true, restartAttemptPeriod: 60, ignoredExitCodes: [0]}}
---
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: early}}
spec:
  containerDefinitions:
    - name: app
      image: {IMAGE}
      command: ["sh", "-c", "sleep 3; exit 1"]
      memory: 16
      restartPolicy: {{enabled: true, restartAttemptPeriod: 60}}
"""


@pytest.fixture
def env(dockyard_env):
    """A broker of this test's own: on the shared one, another test's orchestrator may fence this
    test's node with an empty desired document during the minute this test waits."""
    with private_broker(dockyard_env.workdir) as url:
        dockyard_env.mqtt_url = url
        yield dockyard_env


def test_restart_policy_restarts_in_place_after_the_period_and_not_before(env):
    env.start_orchestrator()
    env.start_agent()
    env.cli("apply", "-f", str(env.write_manifest(MANIFEST)))
    env.cli("run", "longrun")
    env.cli("run", "early")

    def by_family() -> dict[str, dict]:
        return {t["family"]: t for t in env.tasks()}

    first = env.wait_for(lambda: (lambda ts: ts if len(ts) == 2 and all(
        t["lastStatus"] == "RUNNING" for t in ts.values()) else None)(by_family()),
        timeout=60, message="both tasks RUNNING")
    long_id, long_docker = first["longrun"]["taskId"], first["longrun"]["containers"][0]["dockerId"]
    started = env.inspect(long_docker)["State"]["StartedAt"]

    # Exits after 3 s, before the 60 s period: not restarted, the task stops as without a policy.
    early = env.wait_for(lambda: (lambda t: t if t["lastStatus"] == "STOPPED" else None)(by_family()["early"]),
                         timeout=60, message="the early task STOPPED")
    assert early["stopCode"] == "EssentialContainerExited"
    assert early["containers"][0]["exitCode"] == 1 and early["containers"][0]["restartCount"] == 0

    # Ran 62 s, past the period, and exited 1: restarted in place (same task, same container).
    def restarted() -> dict | None:
        t = by_family()["longrun"]
        c = t["containers"][0]
        return t if c["restartCount"] == 1 and c["lastStatus"] == "RUNNING" and t["lastStatus"] == "RUNNING" else None

    t = env.wait_for(restarted, timeout=120, interval=0.5, message="longrun's container restarted in place")
    assert t["taskId"] == long_id and t["containers"][0]["dockerId"] == long_docker and t["stopCode"] is None
    state = env.inspect(long_docker)["State"]
    assert state["Running"] and state["StartedAt"] > started
    tasks = env.tasks()
    assert len(tasks) == 2, tasks  # nothing was replaced: one task of each family
    assert len(env.containers(task=long_id)) == 1

    out = env.cli("describe", "task", long_id).stdout
    header = next(ln for ln in out.splitlines() if "RESTARTS" in ln)
    row = next(ln for ln in out.splitlines() if ln.strip().startswith("app"))
    col = header.index("RESTARTS")
    assert row[col:col + 8].strip() == "1", out
