"""Issue 4 on the multi-host test bed: 3 hosts (network namespaces, each its own dockerd and agent).

Placement strategies and constraints, host failure and partition with fencing, drain, DAEMON and
FARGATE, all against real dockerds and a real broker.
"""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from harness import IMAGE
from testbed import Testbed

pytestmark = pytest.mark.slow

ATTRS = {1: {"zone": "a", "disk": "ssd"}, 2: {"zone": "b", "disk": "ssd"}, 3: {"zone": "c", "disk": "hdd"}}


@pytest.fixture(scope="module")
def bed():
    with Testbed(3) as tb:
        yield tb


@pytest.fixture
def cluster(dockyard_env, bed):
    """An orchestrator plus one agent per host, on this test's own cluster."""
    env = dockyard_env
    bed.attach(env)
    for k, h in bed.hosts.items():  # an earlier test may have killed a host's dockerd
        if not bed._reachable(h.docker_url):
            bed.start_dockerd(k)
    # The failover test loses host 3, then cuts host 2: 2 of 3 nodes down is a mass loss, whose
    # throttle (test_broker_outage.py covers it) would hold host 2 back 30 s by default.
    env.start_orchestrator(node_lost_seconds=2, mass_loss_interval=5)
    for k in bed.hosts:
        bed.start_agent(env, k, attributes=ATTRS[k], fargate=(k == 1))
    return env


def taskdef(name: str, *, memory: int | None = 32, host_port: int | None = None, extra: str = "") -> str:
    port = ""
    if host_port is not None:
        port = f"portMappings: [{{containerPort: 8080, hostPort: {host_port}}}]"
    return f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: {name}}}
spec:
  {extra}
  containerDefinitions:
    - name: main
      image: {IMAGE}
      command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
      {f"memory: {memory}" if memory else ""}
      stopTimeout: 1
      {port}
"""


def service(name: str, count: int, spec_extra: str = "") -> str:
    return f"""
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: {name}}}
spec:
  taskDefinition: {name}
  desiredCount: {count}
  {spec_extra}
"""


def placement(env, service_name: str) -> Counter:
    return Counter(t["nodeId"] for t in env.tasks()
                   if t.get("serviceName") == service_name and t["lastStatus"] == "RUNNING")


def wait_placement(env, service_name: str, total: int, timeout: float = 60) -> Counter:
    return env.wait_for(lambda: (lambda c: c if sum(c.values()) == total else None)(placement(env, service_name)),
                        timeout=timeout, message=f"{total} RUNNING tasks of {service_name}")


def host_of(bed, env, node_id: str) -> int:
    return next(k for k in bed.hosts if bed.node_id(env, k) == node_id)


def test_spread_binpack_constraints_and_ports(cluster, bed):
    env = cluster
    n = {k: bed.node_id(env, k) for k in bed.hosts}
    env.cli("apply", "-f", env.write_manifest(
        taskdef("spread") + service("spread", 6)
        + "---\n" + taskdef("packed") + service("packed", 3, "placementStrategy: [{type: binpack, field: memory}]")
        + "---\n" + taskdef("ssd") + service("ssd", 4, 'placementConstraints: [{type: memberOf, expression: "attribute:disk == ssd"}]')
        + "---\n" + taskdef("one", memory=16) + service("one", 4, "placementConstraints: [{type: distinctInstance}]")
        + "---\n" + taskdef("port", host_port=18080) + service("port", 4, "placementStrategy: [{type: binpack, field: memory}]")
    ))
    assert sorted(wait_placement(env, "spread", 6).values()) == [2, 2, 2]
    packed = wait_placement(env, "packed", 3)
    assert len(packed) == 1, f"binpack should fill one host first: {packed}"
    ssd = wait_placement(env, "ssd", 4)
    assert set(ssd) <= {n[1], n[2]}
    one = wait_placement(env, "one", 3)
    assert sorted(one.values()) == [1, 1, 1]
    ports = wait_placement(env, "port", 3)
    assert sorted(ports.values()) == [1, 1, 1], f"static host ports must not collide: {ports}"
    env.wait_quiet_evidence(snapshots=3)  # every host reported and a pass planned after that
    pending = {t["serviceName"]: t for t in env.tasks() if t["lastStatus"] in ("PENDING", "PROVISIONING")}
    assert set(pending) == {"one", "port"}
    assert "distinctInstance" in pending["one"]["pendingReason"]
    assert "host port 18080" in pending["port"]["pendingReason"]
    events = env.get(f"/v1/clusters/{env.cluster}/services/one")["service"]["events"]
    assert any("was unable to place a task" in e["message"] and "closest matching container-instance" in e["message"]
               for e in events)
    # the containers really are where the API says
    for k in bed.hosts:
        on_host = [c for c in bed.containers(env, k, all=False)]
        assert len(on_host) == sum(c[n[k]] for c in (placement(env, s) for s in ("spread", "packed", "ssd", "one", "port")))


def test_host_failure_replaced_elsewhere_and_partition_fenced(cluster, bed):
    env = cluster
    env.cli("apply", "-f", env.write_manifest(taskdef("web") + service("web", 6)))
    wait_placement(env, "web", 6)
    # --- host 3 dies: agent and dockerd killed
    victim = bed.node_id(env, 3)
    t0 = time.monotonic()
    env.stop_agent(victim, kill=True)
    bed.kill_dockerd(3)
    after = env.wait_for(lambda: (lambda c: c if sum(c.values()) == 6 and victim not in c else None)(
        placement(env, "web")), timeout=30, message="replacements RUNNING on hosts 1 and 2")
    elapsed = time.monotonic() - t0
    assert sorted(after.values()) == [3, 3]
    assert elapsed < 20, f"host failure to replacements RUNNING took {elapsed:.1f}s"
    lost = [t for t in env.tasks() if t["nodeId"] == victim and t["lastStatus"] == "STOPPED"]
    assert len(lost) == 2 and all(victim in t["stoppedReason"] for t in lost)
    # --- host 2 is cut off: its tasks are replaced, but its agent keeps its containers running
    cut = bed.node_id(env, 2)
    bed.cut(2)
    try:
        env.wait_for(lambda: (lambda c: c if sum(c.values()) == 6 and cut not in c else None)(placement(env, "web")),
                     timeout=40, message="tasks of the cut-off host replaced on host 1")
        assert len(bed.containers(env, 2, all=False)) == 3, "a cut-off agent keeps its containers running"
    finally:
        bed.restore(2)
    # --- the partition heals: the returning agent stops the tasks that were replaced (fencing)
    env.wait_for(lambda: len(bed.containers(env, 2, all=False)) == 0, timeout=40,
                 message="duplicates on the healed host stopped")
    env.wait_for(lambda: (env.node(cut) or {}).get("connected"), timeout=20, message="host 2 reconnected")
    assert sum(placement(env, "web").values()) == 6
    running_containers = sum(len(bed.containers(env, k, all=False)) for k in (1, 2))
    assert running_containers == 6


def test_drain_and_daemon(cluster, bed):
    env = cluster
    n = {k: bed.node_id(env, k) for k in bed.hosts}
    env.cli("apply", "-f", env.write_manifest(
        taskdef("web") + service("web", 3)
        + "---\n" + taskdef("daemon", memory=16) + service("daemon", 0, "schedulingStrategy: DAEMON")
        + "---\n" + taskdef("batch", memory=16)))
    assert sorted(wait_placement(env, "web", 3).values()) == [1, 1, 1]
    assert set(wait_placement(env, "daemon", 3)) == set(n.values())
    # a standalone task pinned on host 1 by a constraint: drain leaves it alone
    env.get("/healthz")
    r = env.api.post(f"/v1/clusters/{env.cluster}/tasks", json={
        "taskDefinition": "batch", "placementConstraints": [{"type": "memberOf", "expression": f"instanceId == {n[1]}"}]})
    assert r.status_code == 200, r.text
    standalone = r.json()["tasks"][0]["taskId"]
    env.wait_for(lambda: env.get(f"/v1/clusters/{env.cluster}/tasks/{standalone}")["task"]["lastStatus"] == "RUNNING",
                 timeout=30, message="standalone task RUNNING")
    env.cli("node", "drain", n[1])
    web = env.wait_for(lambda: (lambda c: c if sum(c.values()) == 3 and n[1] not in c else None)(placement(env, "web")),
                       timeout=60, message="web moved off the draining node")
    assert sorted(web.values()) == [1, 2]
    daemon = env.wait_for(lambda: (lambda c: c if n[1] not in c and sum(c.values()) == 2 else None)(
        placement(env, "daemon")), timeout=30, message="daemon task left the draining node")
    assert set(daemon) == {n[2], n[3]}
    assert env.get(f"/v1/clusters/{env.cluster}/tasks/{standalone}")["task"]["lastStatus"] == "RUNNING"
    nodes = {x["nodeId"]: x for x in env.cli_json("get", "nodes")}
    assert nodes[n[1]]["status"] == "DRAINING" and nodes[n[1]]["runningTasks"] == 1  # only the standalone task
    env.cli("node", "activate", n[1])
    env.wait_for(lambda: n[1] in placement(env, "daemon"), timeout=30, message="daemon task back on activated node")
    # a node that joins later gets a daemon task
    env.stop_agent(n[3])
    env.wait_for(lambda: n[3] not in placement(env, "daemon"), timeout=30, message="daemon task of departed node gone")
    bed.start_agent(env, 3, attributes=ATTRS[3], node_id=f"{env.cluster}-late")
    env.wait_for(lambda: f"{env.cluster}-late" in placement(env, "daemon"), timeout=30,
                 message="daemon task on the node that joined")


def test_fargate_validation_and_isolation(cluster, bed):
    env = cluster
    fargate = "requiresCompatibilities: [FARGATE]\n  networkMode: awsvpc\n  cpu: \"256\"\n  memory: \"{mem}\""
    bad = env.write_manifest(taskdef("tiny", memory=None, extra=fargate.format(mem=4096)))
    cp = env.cli("apply", "-f", bad, check=False)
    assert cp.returncode == 1 and "not a valid FARGATE size" in cp.stderr and "spec.memory" in cp.stderr
    bad_port = env.write_manifest(taskdef("tiny", memory=None, host_port=9999, extra=fargate.format(mem=512)))
    cp = env.cli("apply", "-f", bad_port, check=False)
    assert cp.returncode == 1 and "hostPort" in cp.stderr
    env.cli("apply", "-f", env.write_manifest(taskdef("tiny", memory=None, extra=fargate.format(mem=512))
                                              + service("tiny", 2, "launchType: FARGATE")))
    placed = wait_placement(env, "tiny", 2)
    assert set(placed) == {bed.node_id(env, 1)}, "FARGATE tasks only on nodes offering the FARGATE pool"
    tasks = [t for t in env.tasks() if t.get("serviceName") == "tiny" and t["lastStatus"] == "RUNNING"]
    ips = {t["ipAddress"] for t in tasks}
    assert len(ips) == 2 and None not in ips, "each FARGATE task gets its own network and IP"
    for c in bed.containers(env, 1, all=False):
        d = json.loads(bed.host(1).docker("inspect", c["ID"]).stdout)[0]
        assert d["HostConfig"]["NanoCpus"] == 250_000_000
        assert d["HostConfig"]["Memory"] == 512 * 1024 * 1024
        assert not any(d["HostConfig"].get("PortBindings") or {})
        assert d["HostConfig"]["NetworkMode"].startswith("dockyard-task-")
