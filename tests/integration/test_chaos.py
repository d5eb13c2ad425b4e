"""Issue 16: fault scenarios on the multi-host test bed, each under the invariant checker
(tests/integration/invariants.py) sampling the API and every host's dockerd twice a second.

Each scenario is as short as still shows its property and prints its figures (the checker's
report: samples, violations, peak live tasks, the partitioned-node transient, convergence).
docs/reliability.md lists what each shows and the bounds measured.

Host 1's agent is also a load balancer (HAProxy in its namespace, listener ``LB_URL``). The
scenarios that do not kill a serving task run their service behind it (``manifest(lb=True)``)
with the checker's request loop: 0 failed requests. Host 2's dockerd runs with live-restore.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness import IMAGE
from invariants import Checker
from test_load_balancing import _kill_haproxy
from testbed import Testbed

pytestmark = pytest.mark.slow

CONVERGE = 60.0  # seconds from the fault's end to the desired state (the bound each scenario asserts)
LB_HOST = 1  # its agent runs HAProxy too
LB_PORT = 18081
LB_URL = f"http://10.77.0.{10 + LB_HOST}:{LB_PORT}/"
LIVE_RESTORE = 2  # this host's dockerd runs with --live-restore


@pytest.fixture(scope="module")
def bed():
    with Testbed(3, live_restore={LIVE_RESTORE}) as tb:
        yield tb


def lb_dir(env) -> Path:
    return env.workdir / "lb"


def start_agent(env, bed, k: int):
    """Host k's agent (host LB_HOST's is a load balancer too)."""
    if k == LB_HOST:
        return bed.start_agent(env, k, load_balancer=True, lb_dir=str(lb_dir(env)))
    return bed.start_agent(env, k)


@pytest.fixture
def cluster(dockyard_env, bed):
    env = dockyard_env
    bed.heal()  # an earlier test may have cut a link or killed a dockerd
    bed.attach(env)
    env.start_orchestrator(node_lost_seconds=3)
    try:
        for k in bed.hosts:
            start_agent(env, bed, k)
        yield env
    finally:
        # An LB agent leaves HAProxy running on purpose (a restart adopts it), and a live one brings
        # a killed HAProxy back: stop the agent first. A leftover would keep LB_PORT for the next test.
        env.stop_agent(bed.node_id(env, LB_HOST))
        _kill_haproxy(lb_dir(env))


LB_DOCS = """
apiVersion: dockyard/v1
kind: TargetGroup
metadata: {{name: {name}}}
spec:
  protocol: HTTP
  deregistrationDelay: 3
  healthCheck: {{path: /health, intervalSeconds: 5, timeoutSeconds: 2, healthyThresholdCount: 2, unhealthyThresholdCount: 2}}
---
apiVersion: dockyard/v1
kind: LoadBalancer
metadata: {{name: {name}}}
spec:
  listeners: [{{port: {port}, protocol: HTTP, defaultActions: [{{type: forward, targetGroupName: {name}}}]}}]
---"""


def manifest(name: str, count: int, mark: str, max_percent: int = 150, min_healthy: int = 50,
             lb: bool = False) -> str:
    """The scenarios' service (also bench/soak.py's): busybox httpd answering ``mark``; with
    ``lb`` behind a target group and a listener on LB_PORT (the load balancer host's)."""
    extra = ""
    if lb:
        extra = """
      portMappings: [{containerPort: 8080}]"""
    return (LB_DOCS.format(name=name, port=LB_PORT) if lb else "") + f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: {name}}}
spec:
  containerDefinitions:
    - name: main
      image: {IMAGE}
      command: ["sh", "-c", "mkdir -p /www; echo {mark} > /www/index.html; echo ok > /www/health; exec httpd -f -p 8080 -h /www"]
      memory: 16
      stopTimeout: 1
      environment: [{{name: MARK, value: "{mark}"}}]{extra}
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: {name}}}
spec:
  taskDefinition: {name}
  desiredCount: {count}
""" + (f"""  loadBalancers: [{{targetGroupName: {name}, containerName: main, containerPort: 8080}}]
""" if lb else "") + f"""  deploymentConfiguration:
    maximumPercent: {max_percent}
    minimumHealthyPercent: {min_healthy}
    minimumHealthyTimeSeconds: 1
    bakeTimeSeconds: 0
"""


def hosts(bed) -> list[str]:
    return [h.docker_url for h in bed.hosts.values()]


def settled(env, bed, name: str, count: int, revision: int | None = None, lb: bool = False):
    """A wait_for predicate: ``count`` tasks RUNNING (of ``revision``), nothing else of the service
    active, the primary deployment COMPLETED, and exactly ``count`` containers running on the hosts;
    with ``lb``, exactly those tasks registered in its target group, all healthy."""
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
        if running != count:
            return False
        if lb:
            targets = env.get(f"/v1/clusters/{env.cluster}/targetgroups/{name}")["targetGroup"]["targets"]
            healthy = {t["taskId"] for t in targets
                       if t["health"] and all(h["state"] == "healthy" for h in t["health"].values())}
            if len(targets) != count or healthy != {t["taskId"] for t in active}:
                return False
        return True
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
    """Scale 3 -> 9 of a load-balanced service and SIGKILL host 1's agent (also the load balancer's)
    as the document arrives; restart it at once: it adopts what it had started (by label) and the
    HAProxy it runs, no task gets a second container, all 9 run, no request fails."""
    env = cluster
    env.cli("apply", "-f", env.write_manifest(manifest("web", 3, "v1", lb=True)))
    env.wait_for(settled(env, bed, "web", 3, 1, lb=True), timeout=90, message="3 RUNNING and healthy")
    node1 = bed.node_id(env, 1)
    with Checker(env, hosts(bed), load_url=LB_URL) as chk:
        before = {t["taskId"] for t in env.tasks()}
        # The API, not the CLI: a CLI process can take seconds to exit on a loaded machine, by
        # when host 1's agent has started its new tasks (then the kill comes too late to matter).
        r = env.api.post(f"/v1/clusters/{env.cluster}/services/web/scale", json={"desiredCount": 9},
                         headers=env.api_headers)
        assert r.status_code == 200, r.text
        chk.wrote("web desiredCount 9", ok_desired("web", 9))
        env.wait_for(lambda: any(t["nodeId"] == node1 and t["taskId"] not in before for t in env.tasks()),
                     timeout=20, interval=0.05, message="new tasks placed on host 1")
        env.stop_agent(node1, kill=True)
        start_agent(env, bed, 1)
        chk.fault_ended()
        chk.wait_converged(settled(env, bed, "web", 9, 1, lb=True), CONVERGE, "9 RUNNING and healthy")
    chk.assert_ok()


def test_orchestrator_sigkilled_mid_deployment_and_mid_apply(cluster, bed):
    """SIGKILL the orchestrator 1 s into a rolling deployment of a load-balanced service, restart
    it; then SIGKILL it right after a multi-document apply returned 2xx, restart it: both writes are
    there and the cluster converges to them without exceeding the surge bound, duplicating a task
    or failing a request."""
    env = cluster
    env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v1", lb=True)))
    env.wait_for(settled(env, bed, "web", 6, 1, lb=True), timeout=90, message="6 RUNNING and healthy")
    with Checker(env, hosts(bed), load_url=LB_URL) as chk:
        env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v2", lb=True)))
        chk.wrote("task definition web:2", lambda s: taskdef_exists(env, "web:2"))
        time.sleep(1.0)
        env.restart_orchestrator(kill=True, node_lost_seconds=3)
        env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v3", lb=True) + "---\n" + manifest("api", 3, "a1")))
        chk.wrote("web revision 3", lambda s: s.services["web"]["taskDefinition"] == "web:3")
        chk.wrote("service api", ok_desired("api", 3))
        env.restart_orchestrator(kill=True, node_lost_seconds=3)
        chk.fault_ended()
        web, api = settled(env, bed, "web", 6, 3, lb=True), settled(env, bed, "api", 3, 1)
        chk.wait_converged(lambda: web() and api(), CONVERGE, "web revision 3 (healthy) and api RUNNING")
    chk.assert_ok()


def test_broker_restarted_during_a_rolling_deployment(cluster, bed):
    """The bed's Mosquitto (persistence off: every retained document is gone) stopped 1 s into a
    rolling deployment of a load-balanced service for ~10 s, then started again: with every node
    disconnected no node is declared lost (nowhere to place, the view is broken), the orchestrator
    republishes every desired document, the deployment completes, nothing is duplicated, HAProxy
    keeps serving (0 failed requests)."""
    env = cluster
    env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v1", lb=True)))
    env.wait_for(settled(env, bed, "web", 6, 1, lb=True), timeout=90, message="6 RUNNING of revision 1, healthy")
    with Checker(env, hosts(bed), load_url=LB_URL) as chk:
        env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v2", lb=True)))
        chk.wrote("web revision 2", lambda s: s.services["web"]["taskDefinition"] == "web:2")
        time.sleep(1.0)
        bed.broker_stop()
        try:
            time.sleep(10)
        finally:
            bed.broker_start()
        chk.fault_ended()
        chk.wait_converged(settled(env, bed, "web", 6, 2, lb=True), CONVERGE,
                           "6 RUNNING of revision 2 (healthy), nothing else")
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
    node3 = bed.node_id(env, 3)
    on3 = {t["taskId"] for t in env.running_tasks() if t["nodeId"] == node3}
    kept = {t["taskId"] for t in env.running_tasks()} - on3
    others = {c["ID"] for k in (1, 2) for c in bed.containers(env, k, all=False)}
    assert on3 and others, "tasks on host 3 and on hosts 1-2 expected"
    with Checker(env, hosts(bed)) as chk:
        bed.kill_dockerd(3)
        time.sleep(5)
        bed.start_dockerd(3)
        chk.fault_ended()
        chk.wait_converged(settled(env, bed, "web", 6, 1), CONVERGE, "6 RUNNING")
    still = {c["ID"] for k in (1, 2) for c in bed.containers(env, k, all=False)}
    assert others <= still, "a container of hosts 1-2 was touched by host 3's engine failure"
    running = {t["taskId"] for t in env.running_tasks()}
    assert kept <= running, "a task of hosts 1-2 was replaced"
    assert not on3 & running, "host 3's tasks died with its dockerd and must be replaced"
    assert len(running - kept) == len(on3), f"{len(running - kept)} replacements for {len(on3)} tasks"
    chk.assert_ok()


# The agent retries a failed pass and resubscribes to the event stream with backoffs of 0.5, 1, 2, 4 s:
# within this long after a short outage ended it has listed the engine again (adopted or not).
ADOPT_WINDOW = 8.0


def held(env, predicate, seconds: float, what: str) -> None:
    """``predicate`` true now and at every check for ``seconds`` (fails at the first false)."""
    end = time.monotonic() + seconds
    env.wait_for(predicate, timeout=30, message=what)
    while time.monotonic() < end:
        assert predicate(), f"no longer: {what}"
        time.sleep(0.5)


def test_dockerd_restarted_and_killed_on_a_live_restore_host(cluster, bed):
    """Host 2's dockerd runs with --live-restore. Restarted (SIGTERM, start), then SIGKILLed and
    started 3 s later, while it runs tasks of a load-balanced service: its containers keep running
    and serving, the agent adopts them: no task replaced, the same container ids, 0 failed requests."""
    env = cluster
    k = LIVE_RESTORE
    env.cli("apply", "-f", env.write_manifest(manifest("web", 6, "v1", lb=True)))
    env.wait_for(settled(env, bed, "web", 6, 1, lb=True), timeout=90, message="6 RUNNING and healthy")
    assert bed.hosts[k].docker("info", "--format", "{{.LiveRestoreEnabled}}").stdout.strip() == "true"
    tasks = {t["taskId"] for t in env.running_tasks()}
    on_k = {c["ID"] for c in bed.containers(env, k, all=False)}
    assert on_k, f"no task on host {k}"
    with Checker(env, hosts(bed), load_url=LB_URL) as chk:
        bed.stop_dockerd(k)
        bed.start_dockerd(k)
        same = settled(env, bed, "web", 6, 1, lb=True)
        held(env, same, ADOPT_WINDOW, "the same 6 RUNNING after the restart")
        bed.kill_dockerd(k)
        time.sleep(3)
        bed.start_dockerd(k)
        chk.fault_ended()
        chk.wait_converged(same, CONVERGE, "the same 6 RUNNING and healthy")
        held(env, same, ADOPT_WINDOW, "the same 6 RUNNING after the kill")
    assert {c["ID"] for c in bed.containers(env, k, all=False)} == on_k, "host 2's containers did not survive"
    assert {t["taskId"] for t in env.running_tasks()} == tasks, "a task was replaced"
    assert len([t for t in env.tasks() if t.get("serviceName") == "web"]) == 6, "replacement tasks were created"
    chk.assert_ok()
