"""One agent per node id (issue 13; agent/claim.py): a second agent started with a live node's id is refused and
exits 1 naming the other's host, and the first keeps its containers; an agent restarted after a crash (its own
stale ``online`` presence) is not held up."""
from __future__ import annotations

import socket
import time

import pytest
from harness import IMAGE

pytestmark = pytest.mark.slow

WEB = f"""
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


def second(env, name: str, state_dir: str | None = None):
    """Another `dockyard agent` with node a's very arguments (its credential too), maybe another state dir."""
    argv = list(env.agents["a"].argv)
    if state_dir:
        argv[argv.index("--state-dir") + 1] = state_dir
    return env._spawn(name, argv)


def test_a_second_agent_with_a_live_node_id_is_refused_and_the_first_keeps_its_containers(dockyard_env):
    env = dockyard_env
    env.start_orchestrator(node_lost_seconds=30)
    env.start_agent("a", status_interval=1)
    env.cli("apply", "-f", env.write_manifest(WEB))
    env.wait_running(2)
    before = {c["ID"] for c in env.containers(all=False)}

    # The same state directory on this host: refused at once by its lock.
    p = second(env, "agent-a-same-dir")
    assert p.popen.wait(timeout=60) == 1
    assert "runs on this host" in env.tail(p.log)
    # Another state directory (as on another host): the node's presence is online from a boot it does not know;
    # it waits the keepalive window for a Will that does not come, then refuses, naming the other's host.
    t0 = time.monotonic()
    p = second(env, "agent-a-elsewhere", str(env.workdir / "elsewhere"))
    assert p.popen.wait(timeout=90) == 1
    waited = time.monotonic() - t0
    log = env.tail(p.log)
    assert f"already live on host {socket.gethostname()}" in log, log
    assert waited >= 15, waited  # 1.5 x the 10 s keepalive: a stale online is trusted only after that
    # The first never noticed: still connected, the same containers running.
    env.wait_quiet_evidence()
    assert env.node("a")["connected"] and env.agents["a"].popen.poll() is None
    assert {c["ID"] for c in env.containers(all=False)} == before
    assert "mqtt disconnected" not in env.tail(env.agents["a"].log, 5000)  # never knocked off the broker

    # Crashed and restarted with its state directory: its own stale online presence holds nothing up.
    env.stop_agent("a", kill=True)
    t0 = time.monotonic()
    env.start_agent("a", status_interval=1, timeout=60)
    assert time.monotonic() - t0 < 12, "the restarted agent waited for its own stale presence"
    env.wait_quiet_evidence()
    assert {c["ID"] for c in env.containers(all=False)} == before
