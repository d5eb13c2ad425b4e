"""Issue 13 as an attacker would try it, against a real Mosquitto and dockerd.

Fencing that cannot be poisoned: a forged retained desired document with a huge epoch and no tasks (the issue's
attack 2) no longer fences the orchestrator out for good: it re-asserts with a higher epoch, the node's tasks run
again, and an agent restarted afterwards finds the orchestrator's document, not the forged one."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from harness import IMAGE, private_broker

from dockyard.mqtt import parse_url

WEB = f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - name: web
      image: {IMAGE}
      command: ["sleep", "3600"]
      memory: 16
      stopTimeout: 1
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: web}}
spec:
  taskDefinition: web
  desiredCount: 2
"""


@pytest.fixture
def env(dockyard_env):
    """A broker of this test's own: the forged document must not meet another test's orchestrator."""
    with private_broker(dockyard_env.workdir) as url:
        dockyard_env.mqtt_url = url
        yield dockyard_env


def publish_raw(url: str, topic: str, payload: bytes, retain: bool = True, **auth: str) -> None:
    """Publish one message as a plain MQTT client would (paho, QoS 1)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    b = parse_url(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"attacker-{uuid.uuid4().hex[:8]}")
    if auth:
        c.username_pw_set(auth["username"], auth["password"])
    c.connect(b.host, b.port, keepalive=10)
    c.loop_start()
    try:
        c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=5)
    finally:
        c.loop_stop()
        c.disconnect()


def retained_desired(env, node: str) -> dict | None:
    from harness import retained_topics

    b = parse_url(env.mqtt_url)
    got = retained_topics(f"dockyard/v1/{env.cluster}/nodes/{node}", host=b.host, port=b.port)
    raw = got.get(f"dockyard/v1/{env.cluster}/nodes/{node}/desired")
    return json.loads(raw) if raw else None


def running_ids(env) -> set[str]:
    return {c["Labels"]["dockyard.task"] for c in env.containers(all=False)}


def test_a_forged_desired_document_with_a_huge_epoch_does_not_fence_the_orchestrator_out(env):
    env.start_orchestrator()
    env.start_agent()
    node = env.node_ids[0]
    env.cli("apply", "-f", env.write_manifest(WEB))
    tasks = {t["taskId"] for t in env.wait_running(2)}
    env.wait_for(lambda: running_ids(env) == tasks, timeout=60, message="both containers running")
    assert env.get("/healthz")["epoch"] == 1

    forged = {"cluster": env.cluster, "nodeId": node, "epoch": 5000, "generation": 1, "tasks": [],
              "publishedAt": time.time()}
    publish_raw(env.mqtt_url, f"dockyard/v1/{env.cluster}/nodes/{node}/desired", json.dumps(forged).encode())

    # The orchestrator takes the node back: a higher epoch of its own, its document retained, the same tasks.
    env.wait_for(lambda: env.get("/healthz")["epoch"] > 5000, timeout=30, message="the orchestrator re-asserting")
    epoch = env.get("/healthz")["epoch"]
    doc = env.wait_for(lambda: (d := retained_desired(env, node)) and d["epoch"] == epoch and d, timeout=30,
                       message="the orchestrator's document retained again")
    assert {t["taskId"] for t in doc["tasks"]} == tasks
    env.wait_for(lambda: env.node(node)["observedEpoch"] == epoch, timeout=30, message="the node applying the orchestrator's document")
    env.wait_for(lambda: running_ids(env) == tasks and {t["taskId"] for t in env.running_tasks()} == tasks,
                 timeout=60, message="the node's tasks running again")
    assert env.metric('dockyard_fencing_alerts_total{kind="reassert"}') >= 1

    # An agent restarted now applies the orchestrator's retained document, not the forged one.
    env.stop_agent(node)
    env.start_agent(node)
    env.wait_quiet_evidence()
    env.wait_for(lambda: running_ids(env) == tasks and {t["taskId"] for t in env.running_tasks()} == tasks,
                 timeout=60, message="the tasks running after the agent's restart")
    assert env.get("/healthz")["epoch"] == epoch  # nothing forged any more: no further re-assertion
    assert retained_desired(env, node)["epoch"] == epoch


def test_an_orchestrator_on_a_fresh_store_takes_its_nodes_back(env):
    env.start_orchestrator()
    env.start_agent()
    node = env.node_ids[0]
    env.cli("apply", "-f", env.write_manifest(WEB))
    env.wait_running(2)
    env.restart_orchestrator()  # epoch 2: the agent applies documents of epoch 2
    env.wait_for(lambda: env.node(node)["connected"] and env.node(node)["observedEpoch"] == 2, timeout=30,
                 message="the node on epoch 2")
    old = running_ids(env)
    env.stop_orchestrator()
    env.store.rename(env.store.with_suffix(".lost"))  # the store is lost: a fresh one starts at epoch 1
    env.start_orchestrator()
    env.wait_for(lambda: (n := env.node(node)) and n["connected"], timeout=30, message="the node registered again")
    env.cli("apply", "-f", env.write_manifest(WEB))
    tasks = {t["taskId"] for t in env.wait_running(2, timeout=90)}
    assert not tasks & old
    assert env.get("/healthz")["epoch"] > 2
    env.wait_for(lambda: running_ids(env) == tasks, timeout=60, message="only the new store's tasks on the node")
