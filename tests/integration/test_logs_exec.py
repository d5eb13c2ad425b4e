"""Issue 14's logs and exec against a real agent, dockerd and Mosquitto: over MQTT 5 request/response
(response topic + correlation data) relayed by the orchestrator's API; a node's broker role reads only its
own requests."""
from __future__ import annotations

import signal
import subprocess
import time

import pytest
from harness import DOCKYARD, IMAGE, private_broker, secure_broker

TALK = f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: talk}}
spec:
  containerDefinitions:
    - name: talk
      image: {IMAGE}
      command: [sh, -c, "for i in 1 2 3 4 5 6 7 8; do echo line$i; done; echo oops >&2; while :; do sleep 0.5; echo tick; done"]
      memory: 16
      stopTimeout: 1
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: talk}}
spec: {{taskDefinition: talk, desiredCount: 1}}
"""


@pytest.fixture
def env(dockyard_env):
    """A broker of this test's own (another test's orchestrator on the shared one would adopt the node)."""
    with private_broker(dockyard_env.workdir) as url:
        dockyard_env.mqtt_url = url
        yield dockyard_env


def running_task(env) -> str:
    env.cli("apply", "-f", str(env.write_manifest(TALK)))
    tasks = env.wait_running(1)
    return tasks[0]["taskId"]


CLEANUP = 8  # the agent's --task-cleanup-wait here (seconds)


@pytest.mark.slow
def test_logs_of_a_running_task_tail_since_follow_and_exec_then_of_the_stopped_task_until_cleanup(env):
    env.start_orchestrator()
    env.start_agent(status_interval=1, relist_interval=1, task_cleanup_wait=CLEANUP)
    tid = running_task(env)
    env.wait_for(lambda: "tick" in env.cli("logs", tid).stdout, timeout=30, message="the task's first tick")

    everything = env.cli("logs", tid)
    lines = everything.stdout.splitlines()
    # stdout and stderr in one stream (Docker orders lines of the two pipes only roughly)
    assert [ln for ln in lines if ln.startswith("line")] == [f"line{i}" for i in range(1, 9)]
    assert "oops" in lines and lines[-1] == "tick"
    assert env.cli("logs", tid, "--tail", "3").stdout.splitlines() == ["tick"] * 3
    assert "line1" in env.cli("logs", tid, "--since", "1h").stdout
    late = env.cli("logs", tid, "--since", f"{time.time():.3f}", "--timestamps").stdout
    assert "line1" not in late
    stamped = env.cli("logs", tid, "--tail", "1", "--timestamps").stdout.strip()
    assert stamped.endswith("tick") and stamped[:4].isdigit() and "T" in stamped.split()[0]

    # -f: lines written after the request started arrive.
    follow = subprocess.Popen([DOCKYARD, "--server", env.base_url, "-c", env.cluster, "logs", tid, "-f", "--tail", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.cli_env())
    try:
        assert follow.stdout is not None
        got = [follow.stdout.readline() for _ in range(3)]
        assert got == ["tick\n"] * 3, got
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(timeout=10)

    # exec: output on stdout/stderr and the exit code.
    cp = env.cli("exec", tid, "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (cp.returncode, cp.stdout, cp.stderr) == (3, "out\n", "err\n"), cp
    assert env.cli("exec", tid, "--", "cat", "/proc/1/cmdline").stdout.startswith("sh")
    events = env.cli("events", "--service", "talk").stdout
    assert "exec in task" in events and "exit 3" in events

    # Errors: a line on stderr, exit 1, never a stack trace.
    bad = env.cli("logs", tid, "--container", "nope", check=False)
    assert bad.returncode == 1 and "no container 'nope'" in bad.stderr and "Traceback" not in bad.stderr, bad
    bad = env.cli("logs", "no-such-task", check=False)
    assert bad.returncode == 1 and "not found" in bad.stderr, bad
    bad = env.cli("logs", tid, "--since", "yesterday", check=False)
    assert bad.returncode == 1 and "since" in bad.stderr, bad

    # exec needs a writing role: a read-only token may read logs, not exec.
    token = env.cli("token", "create", "--role", "read-only").stdout.strip()
    ro_env = {**env.cli_env(), "DOCKYARD_TOKEN": token}
    base = [DOCKYARD, "--server", env.base_url, "-c", env.cluster]
    cp = subprocess.run([*base, "exec", tid, "--", "true"], capture_output=True, text=True, env=ro_env, timeout=60)
    assert cp.returncode == 1 and "may not POST" in cp.stderr, cp
    cp = subprocess.run([*base, "logs", tid, "--tail", "1"], capture_output=True, text=True, env=ro_env, timeout=60)
    assert cp.returncode == 0 and "tick" in cp.stdout, cp

    # A STOPPED task's logs: its stopped container is kept for the cleanup wait, then removed.
    env.cli("stop", tid)
    env.wait_for(lambda: env.get(f"/v1/clusters/{env.cluster}/tasks/{tid}")["task"]["lastStatus"] == "STOPPED", timeout=30,
                 message="the task STOPPED")
    stopped_at = time.monotonic()
    assert "line1" in env.cli("logs", tid).stdout
    assert env.containers(all=True, task=tid), "the stopped task's container was not kept"
    cp = env.cli("exec", tid, "--", "true", check=False)
    assert cp.returncode == 1 and "not running" in cp.stderr, cp
    env.wait_for(lambda: not env.containers(all=True, task=tid), timeout=CLEANUP + 30,
                 message="the stopped task's container removed after the cleanup wait")
    assert time.monotonic() - stopped_at >= CLEANUP - 2
    gone = env.cli("logs", tid, check=False)
    assert gone.returncode == 1 and "cleaned up" in gone.stderr, gone

    # The node's agent gone: a clear error, not a hang.
    node = env.node_ids[0]
    env.stop_agent(node)
    env.wait_for(lambda: not env.node(node)["connected"], timeout=30, message="node disconnected")
    cp = env.cli("logs", tid, check=False, timeout=60)
    assert cp.returncode == 1 and "disconnected" in cp.stderr, cp


@pytest.mark.slow
def test_a_node_reads_only_its_own_requests_and_answers_only_under_its_own_responses(dockyard_env):
    from harness import wait_for
    from test_security import Raw, creds

    env = dockyard_env
    with secure_broker(env.workdir) as broker:
        env.mqtt_url = broker.url
        env.start_orchestrator()
        env.start_agent("a", status_interval=1)
        env.start_agent("b", status_interval=1)
        tid = running_task(env)
        node = next(t["nodeId"] for t in env.running_tasks() if t["taskId"] == tid)
        other = "b" if node == "a" else "a"
        root = f"dockyard/v1/{env.cluster}/nodes"
        # The node's role lets its agent read its requests and answer them.
        env.wait_for(lambda: "line1" in env.cli("logs", tid).stdout, timeout=30, message="logs over the secure broker")
        assert env.cli("exec", tid, "--", "echo", "hi").stdout == "hi\n"

        spy = Raw(broker.url, broker.auth)  # the orchestrator's identity: sees whatever gets through
        intruder = Raw(broker.url, creds(env.node_credentials(other)))
        try:
            assert spy.subscribe(f"{root}/+/requests") and spy.subscribe(f"{root}/+/responses/#")
            assert intruder.subscribe(f"{root}/{other}/requests")  # its own: granted
            for topic in (f"{root}/{node}/requests", f"{root}/+/requests", f"{root}/{node}/responses/#",
                          f"{root}/+/responses/#", "dockyard/v1/#"):
                assert not intruder.subscribe(topic), f"node {other} may subscribe to {topic}"
            # Neither a request to another node (exec there!) nor a forged answer on its behalf gets through.
            intruder.publish(f"{root}/{node}/requests", b'{"kind": "exec", "taskId": "x", "command": ["forged"]}')
            intruder.publish(f"{root}/{node}/responses/whoever", b'{"kind": "end", "seq": 0, "error": "forged"}')
            intruder.publish(f"{root}/{other}/requests", b'{"kind": "cancel", "forged": 1}')
            intruder.publish(f"{root}/{other}/responses/marker", b"marker")  # its own responses: delivered
            wait_for(lambda: (f"{root}/{other}/responses/marker", b"marker") in spy.got, timeout=10,
                     message="the intruder's own response topic")
            assert [t for t, p in spy.got if b"forged" in p] == []
            env.cli("logs", tid, "--tail", "1")  # a request to the node: the other node's client hears none of it
            assert [t for t, _ in intruder.got if not t.startswith(f"{root}/{other}/")] == []
        finally:
            spy.close()
            intruder.close()
        env.cleanup()
