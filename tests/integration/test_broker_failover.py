"""Issue 18: a broker pair. Broker 1 killed: the agent moves to broker 2, the orchestrator (on both) keeps the node,
nothing restarts, and a change made after converges through broker 2 (real Mosquittos and dockerd). On a pair of
secure brokers as well: the orchestrator makes each node's client in the dynamic-security plugin of both brokers,
so the agent's credential works on broker 2 when broker 1 is gone."""
from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from dockyard.mqtt import parse_url
from harness import BROKER_HOST, IMAGE, free_port, kill_pid, port_open, secure_broker, wait_for

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


@pytest.mark.anonymous_broker("a pair of plain brokers of its own: failover, not credentials (a secure pair: "
                               "test_a_secure_broker_pair_the_node_clients_on_both_and_an_agent_fails_over)")
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


def logs_in(url: str, credentials) -> bool:
    """Does the broker at ``url`` accept this credential file's login (a CONNACK without failure)?"""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    d = json.loads(credentials.read_text())
    b = parse_url(url)
    got: list = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}")
    c.username_pw_set(d["username"], d["password"])
    c.on_connect = lambda _c, _u, _f, rc, _p: got.append(rc)
    c.connect(b.host, b.port, keepalive=10)
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        c.loop(0.2)
    c.disconnect()
    assert got, f"no CONNACK from {url}"
    return not got[0].is_failure


def test_a_secure_broker_pair_the_node_clients_on_both_and_an_agent_fails_over(dockyard_env):
    env = dockyard_env
    with secure_broker(env.workdir) as b1, secure_broker(env.workdir, login_of=b1) as b2:
        try:
            env.mqtt_url = b2.url  # the orchestrator's login (the same on both) and what cleanup clears
            pair = f"{b1.url},{b2.url}"
            env.start_orchestrator(mqtt=pair)
            agent = env.start_agent(mqtt=pair)  # its credential issued through the API: a client on each broker
            creds = env.node_credentials(env.node_ids[0])
            assert logs_in(b1.url, creds) and logs_in(b2.url, creds)
            assert f"broker={b1.url}" in env.tail(agent.log, 50)
            env.cli("apply", "-f", env.write_manifest(MANIFEST))
            running = {t["taskId"] for t in env.wait_running(2)}
            before = {c["ID"]: env.inspect(c["ID"])["State"]["StartedAt"] for c in env.containers(all=False)}
            assert b1.proc is not None
            kill_pid(b1.proc, kill=True)
            env.wait_for(lambda: f"broker={b2.url}" in env.tail(agent.log, 50), timeout=30,
                         message="the agent on broker 2")
            env.wait_quiet_evidence(snapshots=3, timeout=60)
            node = env.node(env.node_ids[0])
            assert node and node["connected"], node
            assert {t["taskId"] for t in env.running_tasks()} == running  # not lost, nothing replaced
            assert {c["ID"]: env.inspect(c["ID"])["State"]["StartedAt"] for c in env.containers(all=False)} == before
            # A node joining while broker 1 is down: its client is made on broker 2 (a change that reaches one
            # broker of the pair succeeds), and it works there.
            second = env.start_agent(mqtt=pair)
            assert logs_in(b2.url, env.node_credentials(env.node_ids[1]))
            assert f"broker={b2.url}" in env.tail(second.log, 50)
            env.cli("scale", "web", "4")
            assert running < {t["taskId"] for t in env.wait_running(4)}
            assert {t["nodeId"] for t in env.running_tasks()} == set(env.node_ids)
            # A wrong password is refused on broker 2: the plugin there is enforcing, not open.
            bad = env.workdir / "bad.credentials.json"
            bad.write_text(json.dumps({**json.loads(creds.read_text()), "password": "not-it"}))
            assert not logs_in(b2.url, bad)
        finally:
            env.cleanup()
