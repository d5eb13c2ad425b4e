"""Issue 16: fault scenarios on the multi-host test bed, each under the invariant checker
(tests/integration/invariants.py) sampling the API and every host's dockerd twice a second.

Each scenario is as short as still shows its property and prints its figures (the checker's
report: samples, violations, peak live tasks, the partitioned-node transient, convergence).
docs/reliability.md lists what each shows and the bounds measured.
"""
from __future__ import annotations

import time

import pytest
from harness import IMAGE
from invariants import Checker
from testbed import Testbed

pytestmark = pytest.mark.slow

CONVERGE = 60.0  # seconds from the fault's end to the desired state (the bound each scenario asserts)


@pytest.fixture(scope="module")
def bed():
    with Testbed(3) as tb:
        yield tb


@pytest.fixture
def cluster(dockyard_env, bed):
    env = dockyard_env
    bed.heal()  # an earlier test may have cut a link or killed a dockerd
    bed.attach(env)
    env.start_orchestrator(node_lost_seconds=3)
    for k in bed.hosts:
        bed.start_agent(env, k)
    return env


def manifest(name: str, count: int, mark: str, max_percent: int = 150, min_healthy: int = 50) -> str:
    return f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: {name}}}
spec:
  containerDefinitions:
    - name: main
      image: {IMAGE}
      command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
      memory: 16
      stopTimeout: 1
      environment: [{{name: MARK, value: "{mark}"}}]
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: {name}}}
spec:
  taskDefinition: {name}
  desiredCount: {count}
  deploymentConfiguration:
    maximumPercent: {max_percent}
    minimumHealthyPercent: {min_healthy}
    minimumHealthyTimeSeconds: 1
    bakeTimeSeconds: 0
"""


def hosts(bed) -> list[str]:
    return [h.docker_url for h in bed.hosts.values()]


def settled(env, bed, name: str, count: int, revision: int | None = None):
    """A wait_for predicate: ``count`` tasks RUNNING (of ``revision``), nothing else of the service
    active, the primary deployment COMPLETED, and exactly ``count`` containers running on the hosts."""
    def check() -> bool:
        active = [t for t in env.tasks() if t.get("serviceName") == name and t["lastStatus"] != "STOPPED"]
        if len(active) != count or any(t["lastStatus"] != "RUNNING" or t["desiredStatus"] != "RUNNING" for t in active):
            return False
        if revision is not None and any(t["revision"] != revision for t in active):
            return False
        primary = env.service(name)["deployments"][0]
        if primary["rolloutState"] != "COMPLETED":
            return False
        running = sum(c["Labels"].get("dockyard.family") == name for k in bed.hosts
                      for c in bed.containers(env, k, all=False))
        return running == count
    return check


def taskdef_exists(env, ref: str) -> bool:
    return env.api.get(f"/v1/taskdefinitions/{ref}", headers=env.api_headers).status_code == 200


def ok_desired(name: str, count: int):
    return lambda s: s.services.get(name, {}).get("desiredCount") == count


def test_partition_under_a_deployment_then_heal(cluster, bed):
    """Host 3 cut off for ~15 s during a rolling deployment: its tasks are replaced after the
    heartbeat timeout while its containers keep running unreachable (the measured transient);
    once healed, its agent stops them; the deployment completes; no duplicates, no orphans."""
    env = cluster
    env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v1")))
    env.wait_for(settled(env, bed, "web", 6, 1), timeout=90, message="6 RUNNING of revision 1")
    with Checker(env, hosts(bed)) as chk:
        env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v2")))
        chk.wrote("web revision 2", lambda s: s.services["web"]["taskDefinition"] == "web:2")
        time.sleep(0.5)
        bed.cut(3)
        try:
            env.wait_for(lambda: not (env.node(bed.node_id(env, 3)) or {}).get("connected"), timeout=20,
                         message="host 3 seen disconnected")
            time.sleep(12)
        finally:
            bed.restore(3)
        chk.fault_ended()
        chk.wait_converged(settled(env, bed, "web", 6, 2), CONVERGE, "6 RUNNING of revision 2, nothing else")
    chk.assert_ok()


def test_flapping_host_churn_is_bounded(cluster, bed):
    """Host 3 connects and disconnects every 2-5 s for ~25 s. Churn is bounded: a link down for
    less than the heartbeat timeout (~3 s) loses nothing; a longer one loses host 3's tasks once
    (they are replaced on hosts 1-2, and nothing moves back: no rebalancing), so at most the tasks
    host 3 ran at the start are replaced, however often it flaps."""
    env = cluster
    env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v1")))
    env.wait_for(settled(env, bed, "web", 6, 1), timeout=90, message="6 RUNNING")
    victim = bed.node_id(env, 3)
    on_victim = sum(t["nodeId"] == victim for t in env.running_tasks())
    created_before = len([t for t in env.tasks() if t.get("serviceName") == "web"])
    with Checker(env, hosts(bed)) as chk:
        downs = [2.0, 4.5, 2.5, 5.0]
        for i, down in enumerate(downs):
            bed.cut(3)
            time.sleep(down)
            bed.restore(3)
            time.sleep(2.0 + (i % 3))
        chk.fault_ended()
        chk.wait_converged(settled(env, bed, "web", 6, 1), CONVERGE, "6 RUNNING, nothing else")
    created = len([t for t in env.tasks() if t.get("serviceName") == "web"]) - created_before
    print(f"flapping: {len(downs)} disconnections of 2-5 s; {on_victim} tasks on host 3 at the start; "
          f"{created} replacement tasks created")
    assert created <= on_victim, f"{created} replacements for {on_victim} tasks on the flapping host"
    chk.assert_ok()


def test_agent_sigkilled_while_applying_a_new_document(cluster, bed):
    """Scale 3 -> 9 and SIGKILL host 1's agent as the document arrives; restart it at once: it
    adopts what it had started (by label), no task gets a second container, all 9 run."""
    env = cluster
    env.cli("apply", "-f", env.write_manifest(manifest("web", 3, "v1")))
    env.wait_for(settled(env, bed, "web", 3, 1), timeout=90, message="3 RUNNING")
    node1 = bed.node_id(env, 1)
    with Checker(env, hosts(bed)) as chk:
        env.cli("scale", "web", "9")
        chk.wrote("web desiredCount 9", ok_desired("web", 9))
        env.wait_for(lambda: any(t["nodeId"] == node1 and t["lastStatus"] != "RUNNING" for t in env.tasks()),
                     timeout=20, interval=0.05, message="new tasks placed on host 1")
        env.stop_agent(node1, kill=True)
        bed.start_agent(env, 1)
        chk.fault_ended()
        chk.wait_converged(settled(env, bed, "web", 9, 1), CONVERGE, "9 RUNNING")
    chk.assert_ok()


def test_orchestrator_sigkilled_mid_deployment_and_mid_apply(cluster, bed):
    """SIGKILL the orchestrator 1 s into a rolling deployment, restart it; then SIGKILL it right
    after a multi-document apply returned 2xx, restart it: both writes are there and the cluster
    converges to them without exceeding the surge bound or duplicating a task."""
    env = cluster
    env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v1")))
    env.wait_for(settled(env, bed, "web", 6, 1), timeout=90, message="6 RUNNING")
    with Checker(env, hosts(bed)) as chk:
        env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v2")))
        chk.wrote("task definition web:2", lambda s: taskdef_exists(env, "web:2"))
        time.sleep(1.0)
        env.restart_orchestrator(kill=True, node_lost_seconds=3)
        env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v3") + "---\n" + manifest("api", 3, "a1")))
        chk.wrote("web revision 3", lambda s: s.services["web"]["taskDefinition"] == "web:3")
        chk.wrote("service api", ok_desired("api", 3))
        env.restart_orchestrator(kill=True, node_lost_seconds=3)
        chk.fault_ended()
        web, api = settled(env, bed, "web", 6, 3), settled(env, bed, "api", 3, 1)
        chk.wait_converged(lambda: web() and api(), CONVERGE, "web revision 3 and api RUNNING")
    chk.assert_ok()


def test_broker_restarted_during_a_rolling_deployment(cluster, bed):
    """The bed's Mosquitto (persistence off: every retained document is gone) stopped 1 s into a
    rolling deployment for ~10 s, then started again: with every node disconnected no node is
    declared lost (nowhere to place, the view is broken), the orchestrator republishes every
    desired document, the deployment completes, nothing is duplicated."""
    env = cluster
    env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v1")))
    env.wait_for(settled(env, bed, "web", 6, 1), timeout=90, message="6 RUNNING of revision 1")
    with Checker(env, hosts(bed)) as chk:
        env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v2")))
        chk.wrote("web revision 2", lambda s: s.services["web"]["taskDefinition"] == "web:2")
        time.sleep(1.0)
        bed.broker_stop()
        try:
            time.sleep(10)
        finally:
            bed.broker_start()
        chk.fault_ended()
        chk.wait_converged(settled(env, bed, "web", 6, 2), CONVERGE, "6 RUNNING of revision 2, nothing else")
    lost = [t for t in env.tasks() if "lost" in (t.get("stoppedReason") or "")]
    assert not lost, f"tasks declared lost during a broker outage: {[t['stoppedReason'] for t in lost]}"
    chk.assert_ok()


def test_dockerd_killed_on_one_host(cluster, bed):
    """Host 3's dockerd SIGKILLed (no live-restore, Debian's default: its containers die with it),
    restarted 5 s later: host 3's tasks are replaced, the tasks of hosts 1-2 are untouched (same
    task ids, same containers), and nothing is left behind on host 3."""
    env = cluster
    env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v1")))
    env.wait_for(settled(env, bed, "web", 6, 1), timeout=90, message="6 RUNNING")
    others = {c["ID"] for k in (1, 2) for c in bed.containers(env, k, all=False)}
    assert others, "no task on hosts 1-2"
    with Checker(env, hosts(bed)) as chk:
        bed.kill_dockerd(3)
        time.sleep(5)
        bed.start_dockerd(3)
        chk.fault_ended()
        chk.wait_converged(settled(env, bed, "web", 6, 1), CONVERGE, "6 RUNNING")
    still = {c["ID"] for k in (1, 2) for c in bed.containers(env, k, all=False)}
    assert others <= still, "a container of hosts 1-2 was touched by host 3's engine failure"
    chk.assert_ok()
