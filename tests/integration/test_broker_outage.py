"""Issue 9 part 2 on the 3-host test bed: a broker restart, a long broker outage or the control
plane cut off from the broker restarts nothing; two of three hosts lost at once are replaced
one mass-loss interval apart (orchestrator/core/nodes.py, docs/architecture.md "Node liveness").

Faults are real: the bed's Mosquitto is SIGTERMed/SIGKILLed by pid (scripts/testbed.sh
broker-stop), hosts are cut by taking their veth down, and the orchestrator's own connection is
cut by :class:`Blackhole`, a TCP forwarder in the test process that stops delivering bytes while
keeping both sockets open (what a network partition does to a TCP connection), so the agents
keep their own connections to the broker. Properties are checked by polling the API during the
fault and, after it, waiting for observable recovery (the orchestrator's new broker session in
its log, then a fresh status snapshot from every node), never by a fixed sleep.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest
from harness import IMAGE
from testbed import BRIDGE_IP, Testbed

pytestmark = pytest.mark.slow

STATUS_INTERVAL = 5.0  # the agents' default: the heartbeat timeout is 15 s
SESSION_LOG = "broker session started"


@pytest.fixture(scope="module")
def bed():
    with Testbed(3) as tb:
        yield tb


@pytest.fixture
def env(dockyard_env, bed):
    bed.heal()  # links up, dockerds and the bed's broker running (an earlier test stops them)
    bed.attach(dockyard_env)
    yield dockyard_env
    bed.heal()  # the broker must be up for the fixture's cleanup of retained messages


def manifest(mark: str, desired: int = 3) -> str:
    return f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - name: web
      image: {IMAGE}
      command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
      memory: 16
      stopTimeout: 1
      environment: [{{name: MARK, value: "{mark}"}}]
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: web}}
spec:
  taskDefinition: web
  desiredCount: {desired}
  deploymentConfiguration:
    maximumPercent: 100
    minimumHealthyPercent: 66
    minimumHealthyTimeSeconds: 2
    bakeTimeSeconds: 0
"""


def start(env, bed, *, orchestrator_mqtt: str | None = None, agent_flags: dict | None = None, **flags) -> None:
    env.start_orchestrator(mqtt=orchestrator_mqtt, **{"node_lost_seconds": 3, **flags})
    for k in bed.hosts:
        bed.start_agent(env, k, **(agent_flags or {}))


def service(env) -> dict:
    return env.service("web")


def completed(env, ref: str):
    done = env.completed("web", ref)

    def check():
        s = done()
        return bool(s) and s["deployments"][0]["runningCount"] == 3
    return check


def apply_and_complete(env, mark: str, ref: str) -> None:
    env.cli("apply", "-f", env.write_manifest(manifest(mark)))
    env.wait_for(completed(env, ref), timeout=90, message=f"{ref} COMPLETED")


def running_containers(env, bed) -> dict[str, str]:
    """task id -> container id of every running container of the cluster, on every host."""
    out: dict[str, str] = {}
    for k in bed.hosts:
        for c in bed.containers(env, k, all=False):
            out[c["Labels"]["dockyard.task"]] = c["ID"]
    return out


def containers_per_task(env, bed) -> dict[str, int]:
    counts: dict[str, int] = {}
    for k in bed.hosts:
        for c in bed.containers(env, k, all=True):
            counts[c["Labels"]["dockyard.task"]] = counts.get(c["Labels"]["dockyard.task"], 0) + 1
    return counts


def lost(tasks: list[dict]) -> list[dict]:
    return [t for t in tasks if t["lastStatus"] == "STOPPED" and "lost" in (t.get("stoppedReason") or "")]


def sessions(env) -> int:
    """How many broker sessions the orchestrator has begun (its log line per session)."""
    return env.orchestrator.log.read_text(errors="replace").count(SESSION_LOG)


def hold_still(env, seconds: float, tasks_before: dict[str, str] | None) -> None:
    """Poll the API (it stays up without a broker) for the whole fault: no task is declared lost,
    and none stops or is added (``tasks_before``), or, while a deployment is in flight (None), at
    most desiredCount are alive (maximumPercent 100)."""
    deadline = time.monotonic() + seconds
    polls = 0
    while time.monotonic() < deadline:
        tasks = env.tasks()
        assert not lost(tasks), f"tasks declared lost during the outage: {lost(tasks)}"
        now = {t["taskId"]: t["lastStatus"] for t in tasks if t["lastStatus"] != "STOPPED"}
        if tasks_before is None:
            assert len(now) <= 3, f"more tasks than maximumPercent allows: {now}"
        else:
            assert set(now) == set(tasks_before), f"tasks changed during the outage: {now} vs {tasks_before}"
        polls += 1
        time.sleep(0.5)
    assert polls >= seconds  # the API answered throughout


def wait_recovered(env, sessions_before: int, timeout: float = 60) -> None:
    """The orchestrator began a new broker session, and then every node is connected and has sent
    a status snapshot (it arrives every STATUS_INTERVAL) after that: from then on no node can be
    declared lost for the outage."""
    env.wait_for(lambda: sessions(env) > sessions_before, timeout=timeout, message="a new broker session")
    after = time.time() + 0.5
    env.wait_for(lambda: all(n["connected"] and n["lastSeenAt"] > after + STATUS_INTERVAL for n in env.nodes()),
                 timeout=timeout, message="every node connected with a fresh snapshot")


def assert_unchanged(env, bed, before: dict[str, str]) -> None:
    """Every task running before the fault that is still alive kept its container (no restart),
    none was declared lost, and no task ever had a second container."""
    tasks = {t["taskId"]: t for t in env.tasks()}
    assert not lost(list(tasks.values())), lost(list(tasks.values()))
    now = running_containers(env, bed)
    for task_id, container in before.items():
        t = tasks[task_id]
        if t["lastStatus"] != "STOPPED" and t["desiredStatus"] != "STOPPED":  # else the deployment stops it
            assert now.get(task_id) == container, f"task {task_id} changed container: {container} -> {now.get(task_id)}"
        else:
            assert "lost" not in (t.get("stoppedReason") or ""), t
    assert all(n == 1 for n in containers_per_task(env, bed).values()), containers_per_task(env, bed)


def active(env) -> dict[str, str]:
    return {t["taskId"]: t["lastStatus"] for t in env.tasks() if t["lastStatus"] != "STOPPED"}


def test_broker_restarts_during_a_rolling_deployment_restart_nothing(env, bed):
    start(env, bed)
    apply_and_complete(env, "v1", "web:1")
    for mark, ref, kill in (("v2", "web:2", False), ("v3", "web:3", True)):
        env.cli("apply", "-f", env.write_manifest(manifest(mark)))
        env.wait_for(lambda ref=ref: any(t["taskDefinition"] == ref and t.get("nodeId") for t in env.tasks()),
                     timeout=30, message=f"the {ref} deployment in flight")
        before, n = running_containers(env, bed), sessions(env)
        bed.broker_stop(kill=kill)  # SIGTERM: Mosquitto publishes every Will; SIGKILL: nothing
        try:
            hold_still(env, 5, None)
        finally:
            bed.broker_start()
        wait_recovered(env, n)
        assert_unchanged(env, bed, before)
    env.wait_for(completed(env, "web:3"), timeout=90, message="web:3 COMPLETED after the outages")
    tasks = env.tasks()
    assert not lost(tasks)
    per_revision = {ref: sum(t["taskDefinition"] == ref for t in tasks) for ref in ("web:1", "web:2", "web:3")}
    assert all(n <= 3 for n in per_revision.values()), f"a task was replaced: {per_revision}"
    assert all(n == 1 for n in containers_per_task(env, bed).values())


def test_a_long_broker_outage_replaces_nothing(env, bed):
    start(env, bed)
    apply_and_complete(env, "v1", "web:1")
    before, n, tasks = running_containers(env, bed), sessions(env), active(env)
    assert len(before) == 3
    bed.broker_stop()
    try:
        hold_still(env, 60, tasks)
    finally:
        bed.broker_start()
    wait_recovered(env, n)
    assert_unchanged(env, bed, before)
    assert running_containers(env, bed) == before and active(env) == tasks


class Blackhole:
    """A TCP forwarder from 127.0.0.1:<port> to ``upstream`` that can partition whoever connects
    through it: ``cut()`` stops delivering bytes either way (both sockets stay open, new
    connections are accepted and go nowhere), ``heal()`` resets the connections of the partition
    (as the peer's RST would once packets flow again) and forwards again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _keep(self, s: socket.socket) -> socket.socket:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._socks.append(s)
        return s

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self._keep(client)
            if self._cut.is_set():
                continue  # the CONNECT never reaches the broker
            try:
                up = self._keep(socket.create_connection(self.upstream, timeout=5))
                up.settimeout(None)
            except OSError:
                self._reset(client)
                continue
            for a, b in ((client, up), (up, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                if not self._cut.is_set():
                    b.sendall(data)
        except OSError:
            return
        if not self._cut.is_set():  # a real close passes through; in a partition nobody learns of it
            self._reset(b)

    @staticmethod
    def _reset(s: socket.socket) -> None:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def cut(self) -> None:
        self._cut.set()

    def heal(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            self._reset(s)
        self._cut.clear()

    def close(self) -> None:
        self._closed = True
        self.server.close()
        self.heal()


def test_the_control_plane_cut_off_from_the_broker_replaces_nothing(env, bed):
    hole = Blackhole((BRIDGE_IP, 1883))
    try:
        start(env, bed, orchestrator_mqtt=hole.url)
        apply_and_complete(env, "v1", "web:1")
        before, n, tasks = running_containers(env, bed), sessions(env), active(env)
        hole.cut()  # the agents keep their own connections; the orchestrator hears nothing
        try:
            hold_still(env, 30, tasks)
        finally:
            hole.heal()
        wait_recovered(env, n)
        assert_unchanged(env, bed, before)
        assert running_containers(env, bed) == before and active(env) == tasks
    finally:
        env.cleanup()  # the orchestrator first, while the forwarder still runs
        hole.close()


def test_two_of_three_hosts_lost_at_once_are_replaced_one_interval_apart(env, bed):
    lost_s, interval = 2, 8
    start(env, bed, node_lost_seconds=lost_s, mass_loss_interval=interval,
          agent_flags={"status_interval": 1})  # heartbeat timeout max(2, 3 x 1) = 3 s
    apply_and_complete(env, "v1", "web:1")
    on = {t["nodeId"]: t["taskId"] for t in env.tasks() if t["lastStatus"] == "RUNNING"}
    assert len(on) == 3
    victims = [on[bed.node_id(env, k)] for k in (1, 2)]
    t_cut = time.time()
    try:
        bed.cut(1)
        bed.cut(2)
        def both_lost() -> list[dict] | None:
            ts = [t for t in lost(env.tasks()) if t["taskId"] in victims]
            return ts if len(ts) == 2 else None
        stopped = env.wait_for(both_lost, timeout=40, message="both cut hosts' tasks declared lost")
        first, second = sorted(t["stoppedAt"] for t in stopped)
        assert first - t_cut >= lost_s, f"the first node was lost {first - t_cut:.1f}s after the cut"
        assert second - first >= interval - 0.2, f"the second node was lost {second - first:.1f}s after the first"
        events = [e["message"] for e in service(env)["events"]]
        mass = [m for m in events if "mass-loss threshold" in m]
        assert mass and "2 of 3 nodes" in mass[-1] and f"every {interval}s" in mass[-1], events
        assert "mass-loss threshold" in env.cli("describe", "service", "web").stdout
        h3 = bed.node_id(env, 3)
        env.wait_for(lambda: sum(t["lastStatus"] == "RUNNING" and t["nodeId"] == h3 for t in env.tasks()) == 3,
                     timeout=30, message="the replacements RUNNING on host 3")
    finally:
        bed.restore(1)
        bed.restore(2)
