"""Issue 18: a broker pair. Broker 1 killed: the agent moves to broker 2, the orchestrator (on both) keeps the node,
nothing restarts, and a change made after converges through broker 2 (real Mosquittos and dockerd)."""
from __future__ import annotations

import subprocess

import pytest

from harness import BROKER_HOST, IMAGE, free_port, kill_pid, port_open, wait_for

pytestmark = pytest.mark.slow


def broker(workdir, name: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    conf = workdir / f"{name}.conf"
    conf.write_text(f"listener {port} {BROKER_HOST}\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: proc.poll() is None and port_open(BROKER_HOST, port), timeout=10, message=name)
    return proc, f"mqtt://{BROKER_HOST}:{port}"


MANIFEST = f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - {{name: web, image: {IMAGE}, command: ["sleep", "3600"], memory: 16, stopTimeout: 1}}
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: web}}
spec: {{taskDefinition: web, desiredCount: 2}}
"""


@pytest.mark.anonymous_broker("a pair of plain brokers of its own: failover, not credentials (the dynamic-security "
                               "clients on each broker of a pair are orchestrator.broker_admin.BrokerAdmins' unit tests)")
def test_broker_one_killed_everything_moves_to_broker_two(dockyard_env):
    env = dockyard_env
    b1, url1 = broker(env.workdir, "broker1")
    b2, url2 = broker(env.workdir, "broker2")
    try:
        env.mqtt_url = url2  # what cleanup clears (broker 1 is gone by then)
        pair = f"{url1},{url2}"
        env.start_orchestrator(mqtt=pair)
        agent = env.start_agent(mqtt=pair)
        env.cli("apply", "-f", env.write_manifest(MANIFEST))
        running = {t["taskId"] for t in env.wait_running(2)}
        before = {c["ID"]: env.inspect(c["ID"])["State"]["StartedAt"] for c in env.containers(all=False)}
        assert len(before) == 2 and f"broker={url1}" in env.tail(agent.log, 50)
        kill_pid(b1, kill=True)
        env.wait_for(lambda: f"broker={url2}" in env.tail(agent.log, 50), timeout=30, message="the agent on broker 2")
        env.wait_quiet_evidence(snapshots=3, timeout=60)
        node = env.node(env.node_ids[0])
        assert node and node["connected"], node
        assert {t["taskId"] for t in env.running_tasks()} == running  # not declared lost, nothing replaced
        assert {c["ID"]: env.inspect(c["ID"])["State"]["StartedAt"] for c in env.containers(all=False)} == before
        env.cli("scale", "web", "3")
        assert running < {t["taskId"] for t in env.wait_running(3)}
        assert before.keys() < {c["ID"] for c in env.containers(all=False)}
    finally:
        env.cleanup()
        kill_pid(b1, kill=True)
        kill_pid(b2)
