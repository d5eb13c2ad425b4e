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
        # Node ids of this cluster's own: an agent owns containers by its node label only, so another test's
        # agent "a" would remove this one's containers.
        a, b = f"{env.cluster}-a", f"{env.cluster}-b"
        env.start_agent(a, status_interval=1)
        env.start_agent(b, status_interval=1)
        tid = running_task(env)
        node = next(t["nodeId"] for t in env.running_tasks() if t["taskId"] == tid)
        other = b if node == a else a
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


CHAT = f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: chat}}
spec:
  containerDefinitions:
    - name: chat
      image: {IMAGE}
      command: [sh, -c, "for i in 1 2 3; do echo hello$i; done; while :; do sleep 0.3; echo tick; done"]
      memory: 16
      stopTimeout: 1
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: chat}}
spec:
  taskDefinition: chat
  desiredCount: 2
  placementConstraints: [{{type: distinctInstance}}]
"""


def by_prefix(out: str) -> dict[str, list[str]]:
    """``PREFIX | line`` lines grouped by prefix (every line must have one)."""
    got: dict[str, list[str]] = {}
    for ln in out.splitlines():
        pre, sep, text = ln.partition(" | ")
        assert sep, f"a line without a prefix: {ln!r}"
        got.setdefault(pre.strip(), []).append(text)
    return got


@pytest.mark.slow
def test_logs_of_a_service_merge_its_tasks_lines_by_time_follow_them_and_survive_a_silent_node(env):
    env.start_orchestrator()
    # Node ids of this cluster's own (the agent owns containers by its node label only).
    for _ in range(2):
        env.start_agent(status_interval=1, relist_interval=1, task_cleanup_wait=300)
    a, b = env.node_ids
    env.cli("apply", "-f", str(env.write_manifest(CHAT)))
    tasks = {t["taskId"]: t["nodeId"] for t in env.wait_running(2)}
    assert sorted(tasks.values()) == [a, b], tasks
    want = {f"chat.{tid[:12]}@{node}" for tid, node in tasks.items()}
    env.wait_for(lambda: {p for p, lines in by_prefix(env.cli("logs", "chat").stdout).items() if "tick" in lines} == want,
                 timeout=30, message="ticks of both tasks")

    out = by_prefix(env.cli("logs", "chat").stdout)
    assert set(out) == want
    for lines in out.values():  # each task's lines in its order, no timestamps unless asked
        assert lines[:3] == ["hello1", "hello2", "hello3"] and set(lines[3:]) == {"tick"}, lines
    # Merged by time across the tasks: the stamps never go back.
    stamped = env.cli("logs", "chat", "--timestamps").stdout.splitlines()
    stamps = [ln.partition(" | ")[2].split()[0] for ln in stamped]
    assert all(s[:4].isdigit() and "T" in s for s in stamps) and stamps == sorted(stamps), stamped[:10]
    assert len({ln.partition(" | ")[0] for ln in stamped}) == 2
    tail = by_prefix(env.cli("logs", "chat", "--tail", "1").stdout)  # --tail is per task
    assert {p: len(v) for p, v in tail.items()} == {p: 1 for p in want}

    # A task id (prefix) still means the task: its lines unprefixed. Unknown names: one clear line.
    one = next(iter(tasks))
    assert env.cli("logs", one[:10], "--tail", "1").stdout == "tick\n"
    bad = env.cli("logs", "nosuch", check=False)
    assert bad.returncode == 1 and "task or service 'nosuch' not found" in bad.stderr and "Traceback" not in bad.stderr, bad

    # -f: new lines of both tasks arrive interleaved.
    def follow() -> subprocess.Popen:
        return subprocess.Popen([DOCKYARD, "--server", env.base_url, "-c", env.cluster, "logs", "chat", "-f", "--tail", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.cli_env())

    def read_until(p: subprocess.Popen, prefixes: set[str], limit: int = 200) -> set[str]:
        assert p.stdout is not None
        seen: set[str] = set()
        for _ in range(limit):
            ln = p.stdout.readline()
            pre, _, text = ln.partition(" | ")
            assert text == "tick\n", ln
            seen.add(pre.strip())
            if seen >= prefixes:
                break
        return seen

    f = follow()
    try:
        assert read_until(f, want) == want
    finally:
        f.send_signal(signal.SIGINT)
        f.wait(timeout=10)

    # A silent node (its agent frozen) holds up neither the merge (its source ends with a warning after the
    # relay's first-answer timeout) nor the others' -f lines.
    node_of = {node: f"chat.{tid[:12]}@{node}" for tid, node in tasks.items()}
    frozen = env.agents[b].popen
    frozen.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        cp = env.cli("logs", "chat", "--tail", "2", check=False, timeout=60)
        assert time.monotonic() - t0 < 40, "the merge waited on the frozen node too long"
        assert cp.returncode == 0 and by_prefix(cp.stdout) == {node_of[a]: ["tick", "tick"]}, cp
        assert "did not answer" in cp.stderr and node_of[b] in cp.stderr, cp.stderr
        f = follow()
        try:
            assert read_until(f, {node_of[a]}, limit=3) == {node_of[a]}
        finally:
            f.send_signal(signal.SIGINT)
            f.wait(timeout=10)
    finally:
        frozen.send_signal(signal.SIGCONT)

    # A STOPPED task's lines are still there while its container is kept, next to its replacement's.
    stopped = next(tid for tid, node in tasks.items() if node == a)
    env.cli("stop", stopped)
    env.wait_for(lambda: len(env.running_tasks()) == 2 and stopped not in {t["taskId"] for t in env.running_tasks()},
                 timeout=60, message="the stopped task replaced")
    # (the frozen node's task may have been replaced meanwhile too: it is STOPPED with its container kept as well)
    def prefixes() -> set[str] | None:
        got = set(by_prefix(env.cli("logs", "chat", "--tail", "1").stdout))
        running = {f"chat.{t['taskId'][:12]}@{t['nodeId']}" for t in env.running_tasks()}
        return got if len(running) == 2 and got >= running | {node_of[a]} else None
    env.wait_for(prefixes, timeout=30, message="the service's logs read the STOPPED task and both RUNNING ones")
