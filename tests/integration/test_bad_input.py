"""Bad input on the bus, on real components: a real orchestrator and agent (real dockerd) on a plain private
Mosquitto, and a client publishing what an attacker on that broker could: malformed, truncated, 10 MB, deeply
nested and wrong-typed payloads on the node's status and presence topics, a replayed status, statuses from 300
unknown nodes, malformed desired documents to the agent. The orchestrator logs and drops them, stays up with
its RSS bounded; the agent keeps its container; the task stays RUNNING.

A plain broker: on the secure one (DOCKYARD_TEST_SECURE_BROKER=1) the ACL confines each node's credential to
its own topics and only the orchestrator may publish desired documents, so these publications need a stolen
credential (docs/security.md)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from harness import IMAGE, private_broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MANIFEST = f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - {{name: web, image: {IMAGE}, command: [sleep, "3600"], memory: 16}}
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: web}}
spec: {{taskDefinition: web, desiredCount: 1}}
"""
BIG = 10 * 1024 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def count(log: Path, text: str) -> int:
    return log.read_text(errors="replace").count(text)


def test_hostile_bus_messages_are_dropped_and_nothing_running_is_touched(dockyard_env):
    env = dockyard_env
    with private_broker(env.workdir, secure=False) as url:
        env.mqtt_url = url
        env.start_orchestrator()
        node = "n1"
        env.start_agent(node, status_interval=1)
        orch, agent_log = env.orchestrator, env.agents[node].log
        # A genuine status update of the node (sent when its task starts), captured to be replayed later.
        c = env.mqtt_client("fuzz")
        root = f"dockyard/v1/{env.cluster}/nodes"
        captured: list[bytes] = []
        got = threading.Event()

        def on_message(_c, _u, msg):  # noqa: ANN001
            if b'"kind":"update"' in msg.payload and not got.is_set():
                captured.append(bytes(msg.payload))
                got.set()
        c.on_message = on_message
        c.subscribe(f"{root}/{node}/status", qos=1)
        c.loop_start()
        try:
            env.cli("apply", "-f", str(env.write_manifest(MANIFEST)))
            [task] = env.wait_running(1, timeout=90)
            [container] = env.containers(node_id=node)
            assert got.wait(30), "no status update from the agent"
            old_status = captured[0]
            env.wait_quiet_evidence(snapshots=1)  # newer statuses since: the captured one is a replay now
            rss_before = rss_kib(orch.popen.pid)
            t0 = time.monotonic()
            deep = b'{"nodeId":"n1","bootId":"x","seq":1,"kind":"snapshot","tasks":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            wrong = json.dumps({"nodeId": node, "bootId": 7, "seq": "one", "kind": "snapshot", "tasks": {"a": 1}})
            malformed = [b"\x00\xff\xfe garbage", old_status[: len(old_status) // 2], deep, wrong.encode(),
                         b'{"nodeId": "n1", "pad": "' + b"x" * BIG + b'"}', b"[" * BIG, b"null", b"123",
                         json.dumps({"nodeId": node, "bootId": "b", "state": "sideways"}).encode()]
            sent = 0
            for _ in range(3):
                for payload in malformed:
                    for leaf in ("status", "presence"):
                        c.publish(f"{root}/{node}/{leaf}", payload, qos=1).wait_for_publish(30)
                        sent += 1
            c.publish(f"{root}/{node}/status", old_status, qos=1).wait_for_publish(30)  # a replay
            for i in range(300):  # statuses from nodes that never registered
                ghost = json.dumps({"nodeId": f"ghost{i}", "bootId": "b", "seq": 1, "kind": "snapshot",
                                    "usage": [{"taskId": "t", "cpu": 1.0, "memory": 1}]})
                c.publish(f"{root}/ghost{i}/status", ghost, qos=1)
            # Malformed desired documents to the agent (not retained: the orchestrator's own stays).
            desired = [b"\x00garbage", b'{"cluster": "' + env.cluster.encode() + b'", "nodeId": "n1", "epoch": "x"}',
                       json.dumps({"cluster": env.cluster, "nodeId": node, "epoch": -1, "generation": None,
                                   "tasks": "all"}).encode(),
                       b'{"cluster": "x", "tasks": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"{" * BIG]
            for payload in desired:
                c.publish(f"{root}/{node}/desired", payload, qos=1).wait_for_publish(30)
            took = time.monotonic() - t0

            # Evidence that every message was handled: the orchestrator's and the agent's drop lines.
            env.wait_for(lambda: count(orch.log, "dropping malformed message") + count(orch.log, "dropping oversized")
                         >= sent, timeout=60, message="the orchestrator dropped the malformed messages")
            env.wait_for(lambda: count(agent_log, "ignoring invalid desired document") >= len(desired), timeout=60,
                         message="the agent ignored the malformed desired documents")
            env.wait_for(lambda: count(orch.log, "dropping a replayed or out-of-order status") >= 1, timeout=30,
                         message="the replayed status dropped")
            env.wait_quiet_evidence(snapshots=2)
        finally:
            c.loop_stop()
            c.disconnect()

        assert orch.popen.poll() is None and env.api.get("/healthz").status_code == 200
        assert "error handling message" not in orch.log.read_text(errors="replace")
        assert not any(n["nodeId"].startswith("ghost") for n in env.nodes())
        n = env.node(node)
        assert n and n["connected"], n
        [now] = env.running_tasks()
        assert now["taskId"] == task["taskId"] and now["lastStatus"] == "RUNNING"
        [still] = env.containers(node_id=node)
        assert still["ID"] == container["ID"] and env.inspect(still["ID"])["State"]["Running"]
        rss_after = rss_kib(orch.popen.pid)
        grew = (rss_after - rss_before) / 1024
        big = 2 * sum(len(p) >= BIG for p in malformed) * 3
        print(f"\nbad-input: {sent} malformed status/presence messages ({big} of 10 MB), 300 unknown-node statuses, "
              f"{len(desired)} malformed desired documents in {took:.1f} s; orchestrator RSS "
              f"{rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB (+{grew:.0f}); task and container untouched")
        assert grew < 120, f"orchestrator RSS grew {grew:.0f} MiB"

        # The HTTP side of the same process (uvicorn in front): bodies over 10 MB get 413 before they are read.
        big_body = b'{"documents": [' + b" " * BIG + b"]}"
        for path, headers in (("/v1/apply", {}), ("/", {"X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters"})):
            r = env.api.post(path, content=big_body, headers={"Content-Type": "application/json", **headers}, timeout=30)
            assert r.status_code == 413, (path, r.status_code, r.text[:200])
        r = env.api.post("/v1/apply", content=(b" " * (1 << 20) for _ in range(11)),
                         headers={"Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 413, r.text[:200]
        assert orch.popen.poll() is None and env.api.get("/healthz").status_code == 200
