"""The agent against a real dockerd and a private Mosquitto (agent run as a subprocess).

dockerd, mosquitto and the test image are guaranteed by the ``infra`` fixture (tests/conftest.py),
which fails the test when they are missing. "Nothing changed" assertions wait for an observable
event (N status snapshots, an acknowledged observedGeneration), never a fixed time."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiodocker
import aiomqtt
import pytest

from dockyard.ecs import TaskDefinitionSpec
from dockyard.wire import DesiredDoc, DesiredTask, node_topic

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
IMAGE = "dockyard-test/busybox:latest"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A private Mosquitto on a free port; restartable on the same port (reconnect tests)."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not start")
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def mosquitto(tmp_path):
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture
def broker(mosquitto):
    return mosquitto.url


@pytest.fixture
def ident():
    node = f"it-{uuid.uuid4().hex[:10]}"
    yield node, f"c{uuid.uuid4().hex[:8]}"
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=dockyard.node={node}"], capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    nets = subprocess.run(["docker", "network", "ls", "-q", "--filter", f"label=dockyard.node={node}"], capture_output=True, text=True).stdout.split()
    if nets:
        subprocess.run(["docker", "network", "rm", *nets], capture_output=True)


class Agents:
    """Agent subprocesses, stopped (by pid) in the finalizer."""

    def __init__(self, tmp: Path) -> None:
        self.procs: list[subprocess.Popen] = []
        self.tmp = tmp

    def start(self, node: str, cluster: str, url: str, **kw: Any) -> subprocess.Popen:
        kw.setdefault("state_dir", str(self.tmp / f"agent-state-{node}"))  # not the machine's /var/lib
        kw.setdefault("metadata_port", 0)  # several agents share the host: served only where a test asks
        kw.setdefault("task_cleanup_wait", 0.0)  # removed tasks' containers go at once (the tests count them)
        args = dict(node_id=node, cluster=cluster, mqtt_url=url, status_interval=0.5, relist_interval=1.0, log_level="debug", **kw)
        code = f"from agent.main import run, AgentConfig; raise SystemExit(run(AgentConfig(**{args!r})))"
        logf = open(self.tmp / f"agent-{len(self.procs)}.log", "w")
        p = subprocess.Popen([PY, "-c", code], cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
        if p.poll() is None:
            os.kill(p.pid, sig)
        return p.wait(timeout=15)

    def logs(self) -> str:
        return "\n".join(f.read_text() for f in sorted(self.tmp.glob("agent-*.log")))


@pytest.fixture
def agents(tmp_path):
    a = Agents(tmp_path)
    yield a
    for p in a.procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    sys.stderr.write(a.logs()[-20000:])  # captured by pytest: shown only when the test fails


class Bus:
    """Collects status and presence messages of one node."""

    def __init__(self, client, cluster: str, node: str) -> None:
        self.client, self.cluster, self.node = client, cluster, node
        self.status: list[dict] = []
        self.presence: list[dict] = []
        self._new = asyncio.Event()

    async def pump(self) -> None:
        async for m in self.client.messages:
            leaf = str(m.topic).rsplit("/", 1)[-1]
            (self.status if leaf == "status" else self.presence).append(json.loads(m.payload))
            self._new.set()

    async def wait(self, pred: Callable[[dict], Any], timeout: float = 15.0, what: str = "status", since: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.status if what == "status" else self.presence
            for d in msgs[since:]:
                if pred(d):
                    return d
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; last: {msgs[-3:]}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), left)
            except TimeoutError:
                pass

    async def snapshots(self, n: int, since: int, boot: str | None = None, timeout: float = 15.0) -> list[dict]:
        """Wait for ``n`` snapshots after ``bus.status[since]`` (of ``boot`` if given): with the
        agents' 0.5 s status interval and 1 s re-list, 4 snapshots span at least one re-list pass."""
        def enough(_d: dict) -> bool:
            return len(snaps()) >= n

        def snaps() -> list[dict]:
            return [d for d in self.status[since:] if d["kind"] == "snapshot" and (boot is None or d["bootId"] == boot)]

        await self.wait(enough, timeout=timeout, since=since)
        return snaps()

    async def desired(self, doc: DesiredDoc, retain: bool = True) -> None:
        await self.client.publish(node_topic(self.cluster, self.node, "desired"), doc.model_dump_json(), qos=1, retain=retain)


async def _bus(url: str, cluster: str, node: str):
    host, port = url.removeprefix("mqtt://").split(":")
    client = aiomqtt.Client(host, int(port), identifier=f"test-{uuid.uuid4().hex[:8]}")
    await client.__aenter__()
    await client.subscribe(node_topic(cluster, node, "status"), qos=1)
    await client.subscribe(node_topic(cluster, node, "presence"), qos=1)
    bus = Bus(client, cluster, node)
    pump = asyncio.create_task(bus.pump())
    return bus, client, pump


def two_container_task(tid: str) -> DesiredTask:
    td = TaskDefinitionSpec.model_validate({"family": "itweb", "containerDefinitions": [
        {"name": "web", "image": IMAGE, "memory": 64, "stopTimeout": 2,
         "command": ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"],
         "portMappings": [{"containerPort": 8080}], "dockerLabels": {"team": "it"},
         "healthCheck": {"command": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"], "interval": 5, "timeout": 2, "retries": 2}},
        {"name": "side", "image": IMAGE, "memory": 32, "stopTimeout": 1, "command": ["sleep", "3600"],
         "dependsOn": [{"containerName": "web", "condition": "START"}]},
    ]})
    return DesiredTask(taskId=tid, family="itweb", revision=1, taskDefinition=td)


def task_of(d: dict, tid: str) -> dict | None:
    return next((t for t in d["tasks"] if t["taskId"] == tid), None)


async def docker_containers(docker, node: str) -> list[dict]:
    return await docker.containers.list(all=True, filters=json.dumps({"label": [f"dockyard.node={node}"]}))


async def test_agent_runs_adopts_reports_and_removes(broker, ident, agents):
    node, cluster = ident
    bus, client, pump = await _bus(broker, cluster, node)
    docker = aiodocker.Docker()
    try:
        p1 = agents.start(node, cluster, broker)
        online = await bus.wait(lambda d: d["state"] == "online", what="presence")
        assert online["resources"]["cpu"] % 1024 == 0 and online["resources"]["memory"] > 0
        assert online["attributes"]["ecs.os-type"] == "linux" and "ecs.cpu-architecture" in online["attributes"]
        boot1 = online["bootId"]

        tid = uuid.uuid4().hex
        await bus.desired(DesiredDoc(cluster=cluster, nodeId=node, epoch=1, generation=1, tasks=[two_container_task(tid)]))
        t0 = time.monotonic()
        ack = await bus.wait(lambda d: d["kind"] == "update" and d["observedGeneration"] == 1)
        ack_s = time.monotonic() - t0
        assert ack["observedEpoch"] == 1 and ack["bootId"] == boot1
        running = await bus.wait(lambda d: (t := task_of(d, tid)) is not None and t["lastStatus"] == "RUNNING"
                                 and all(c["lastStatus"] == "RUNNING" for c in t["containers"]))
        print(f"ack after {ack_s * 1000:.1f} ms; RUNNING after {time.monotonic() - t0:.2f} s")
        t = task_of(running, tid)
        web = next(c for c in t["containers"] if c["name"] == "web")
        assert web["networkBindings"] and web["networkBindings"][0]["containerPort"] == 8080 and web["networkBindings"][0]["hostPort"] > 0

        cs = await docker_containers(docker, node)
        assert len(cs) == 2
        ids1 = {}
        for c in cs:
            info = await c.show()
            lab = info["Config"]["Labels"]
            assert lab["dockyard.task"] == tid and lab["dockyard.cluster"] == cluster and lab["dockyard.family"] == "itweb"
            assert lab["dockyard.revision"] == "1" and lab["dockyard.essential"] == "true" and lab["dockyard.spec-hash"]
            assert info["Name"] == f"/dockyard-itweb-1-{lab['dockyard.container']}-{tid[:8]}"
            assert info["HostConfig"]["RestartPolicy"]["Name"] in ("no", "")
            ids1[lab["dockyard.container"]] = info["Id"]
        assert (await docker.containers.container(ids1["web"]).show())["Config"]["Labels"]["team"] == "it"
        assert {c["name"]: c["dockerId"] for c in t["containers"]} == ids1

        healthy = await bus.wait(lambda d: (t := task_of(d, tid)) is not None
                                 and next(c for c in t["containers"] if c["name"] == "web")["healthStatus"] == "HEALTHY", timeout=20)
        # ECS's rule: the essential containers with a health check decide ("side" has none).
        assert task_of(healthy, tid)["healthStatus"] == "HEALTHY"

        # Restart the agent: graceful stop leaves containers, publishes offline; the new boot adopts them.
        n_presence = len(bus.presence)
        assert agents.stop(p1) == 0
        off = await bus.wait(lambda d: d["state"] == "offline" and d["bootId"] == boot1, what="presence", since=n_presence)
        assert off["nodeId"] == node
        assert len(await docker_containers(docker, node)) == 2
        agents.start(node, cluster, broker)
        online2 = await bus.wait(lambda d: d["state"] == "online" and d["bootId"] != boot1, what="presence", since=n_presence)
        boot2 = online2["bootId"]
        snap = await bus.wait(lambda d: d["bootId"] == boot2 and (t := task_of(d, tid)) is not None and t["lastStatus"] == "RUNNING")
        assert {c["name"]: c["dockerId"] for c in task_of(snap, tid)["containers"]} == ids1
        await bus.snapshots(4, since=bus.status.index(snap), boot=boot2)  # a re-list pass or more
        assert sorted(c.id for c in await docker_containers(docker, node)) == sorted(ids1.values())

        # An older (epoch, generation) document is ignored (not retained, so the retained doc stays
        # valid). The agent handles its documents in order, so once it acknowledges a newer one
        # (generation 2, the same task) it has seen the older ones: every status before says 1/1.
        n = len(bus.status)
        await bus.desired(DesiredDoc(cluster=cluster, nodeId=node, epoch=1, generation=0, tasks=[]), retain=False)
        await bus.desired(DesiredDoc(cluster=cluster, nodeId=node, epoch=0, generation=99, tasks=[]), retain=False)
        await bus.desired(DesiredDoc(cluster=cluster, nodeId=node, epoch=1, generation=2, tasks=[two_container_task(tid)]))
        ack2 = await bus.wait(lambda d: d["observedGeneration"] == 2, since=n)
        assert ack2["kind"] == "update" and ack2["observedEpoch"] == 1 and ack2["tasks"] == []  # nothing changed
        before = bus.status[n:bus.status.index(ack2)]
        assert all(d["observedGeneration"] == 1 and d["observedEpoch"] == 1 for d in before), before
        assert sorted(c.id for c in await docker_containers(docker, node)) == sorted(ids1.values())

        # Kill the essential web container: the task stops with EssentialContainerExited, never restarted.
        await docker.containers.container(ids1["web"]).kill(signal="SIGKILL")
        stopped = await bus.wait(lambda d: (t := task_of(d, tid)) is not None and t["lastStatus"] == "STOPPED", timeout=20)
        t = task_of(stopped, tid)
        assert t["stopCode"] == "EssentialContainerExited" and t["stoppedReason"] == "Essential container in task exited"
        web = next(c for c in t["containers"] if c["name"] == "web")
        assert web["exitCode"] == 137 and web["lastStatus"] == "STOPPED"
        assert all(c["lastStatus"] == "STOPPED" for c in t["containers"])
        await bus.snapshots(4, since=bus.status.index(stopped))  # a re-list pass or more
        cs = await docker_containers(docker, node)
        assert sorted(c.id for c in cs) == sorted(ids1.values())  # kept (inspectable), not restarted
        assert all(c._container["State"] == "exited" for c in cs)

        # A document without the task removes its containers.
        await bus.desired(DesiredDoc(cluster=cluster, nodeId=node, epoch=1, generation=3, tasks=[]))
        await bus.wait(lambda d: d["observedGeneration"] == 3)
        deadline = time.monotonic() + 10
        while await docker_containers(docker, node):
            assert time.monotonic() < deadline, "containers of a removed task were not removed"
            await asyncio.sleep(0.2)
        await bus.wait(lambda d: d["kind"] == "snapshot" and d["observedGeneration"] == 3 and not d["tasks"])
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        await client.__aexit__(None, None, None)
        await docker.close()


async def test_unpullable_image_fails_fast_and_fargate_gets_own_network(broker, ident, agents):
    node, cluster = ident
    bus, client, pump = await _bus(broker, cluster, node)
    docker = aiodocker.Docker()
    try:
        agents.start(node, cluster, broker)
        await bus.wait(lambda d: d["state"] == "online", what="presence")
        bad = [DesiredTask(taskId=uuid.uuid4().hex, family="bad", revision=1, taskDefinition=TaskDefinitionSpec.model_validate(
            {"family": "bad", "containerDefinitions": [{"name": "x", "image": "dockyard-test/absent:nope", "memory": 16}]}))
            for _ in range(5)]
        fg = DesiredTask(taskId=uuid.uuid4().hex, family="fg", revision=1, launchType="FARGATE",
                         taskDefinition=TaskDefinitionSpec.model_validate({
                             "family": "fg", "cpu": "256", "memory": "128", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
                             "containerDefinitions": [{"name": "app", "image": IMAGE, "command": ["sleep", "3600"], "stopTimeout": 1,
                                                       "portMappings": [{"containerPort": 80}]}]}))
        t0 = time.monotonic()
        await bus.desired(DesiredDoc(cluster=cluster, nodeId=node, epoch=3, generation=1, tasks=[*bad, fg]))
        for b in bad:
            d = await bus.wait(lambda d: (t := task_of(d, b.taskId)) is not None and t["lastStatus"] == "STOPPED")
            t = task_of(d, b.taskId)
            assert t["stopCode"] == "TaskFailedToStart"
            assert t["stoppedReason"].startswith("CannotPullContainerError: ")
        print(f"5 tasks with an unpullable image STOPPED after {time.monotonic() - t0:.3f} s")
        assert time.monotonic() - t0 < 10
        logs = agents.logs()
        assert logs.count("image pull failed") == 1, "failed pulls of one image must be single-flight and cached"

        d = await bus.wait(lambda d: (t := task_of(d, fg.taskId)) is not None and t["lastStatus"] == "RUNNING" and t["ipAddress"])
        t = task_of(d, fg.taskId)
        assert t["containers"][0]["networkBindings"] == []
        info = await docker.containers.container(t["containers"][0]["dockerId"]).show()
        net = f"dockyard-task-{fg.taskId[:12]}"
        assert info["HostConfig"]["NetworkMode"] == net
        assert info["HostConfig"]["NanoCpus"] == 250_000_000 and info["HostConfig"]["Memory"] == 128 << 20
        assert t["ipAddress"] == info["NetworkSettings"]["Networks"][net]["IPAddress"]
        # the local image is used although its pull fails: pullError recorded
        assert t["pullError"]

        await bus.desired(DesiredDoc(cluster=cluster, nodeId=node, epoch=3, generation=2, tasks=[]))
        deadline = time.monotonic() + 10
        while await docker_containers(docker, node) or await docker.networks.list(filters={"label": [f"dockyard.node={node}"]}):
            assert time.monotonic() < deadline, "FARGATE task's container/network not removed"
            await asyncio.sleep(0.2)
    finally:
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        await client.__aexit__(None, None, None)
        await docker.close()


async def test_hollow_agents_many_in_one_process_and_reconnect(mosquitto, ident, agents):
    node, cluster = ident
    broker = mosquitto.url
    bus0, c0, pump0 = await _bus(broker, cluster, f"{node}-0")
    bus2, c2, pump2 = await _bus(broker, cluster, f"{node}-2")
    try:
        agents.start(node, cluster, broker, runtime="hollow", hollow_count=3)
        for b in (bus0, bus2):
            d = await b.wait(lambda d: d["state"] == "online", what="presence")
            assert d["runtime"] == "hollow"
        tid = uuid.uuid4().hex
        await bus2.desired(DesiredDoc(cluster=cluster, nodeId=f"{node}-2", epoch=1, generation=1, tasks=[two_container_task(tid)]))
        await bus2.wait(lambda d: (t := task_of(d, tid)) is not None and t["lastStatus"] == "RUNNING")
        assert not any(task_of(d, tid) for d in bus0.status)
        assert "HOLLOW RUNTIME" in agents.logs()
        boot = bus2.presence[-1]["bootId"]
    finally:
        for p, c in ((pump0, c0), (pump2, c2)):
            p.cancel()
            await asyncio.gather(p, return_exceptions=True)
            try:
                await c.__aexit__(None, None, None)
            except Exception:
                pass
    # Broker restart (state lost, nothing retained): the agents reconnect with backoff,
    # re-publish presence (same bootId) and a snapshot that still holds the running task.
    mosquitto.kill()
    await asyncio.sleep(0.5)
    mosquitto.start()
    bus2, c2, pump2 = await _bus(broker, cluster, f"{node}-2")
    try:
        d = await bus2.wait(lambda d: d["state"] == "online", what="presence", timeout=15)
        assert d["bootId"] == boot
        d = await bus2.wait(lambda d: d["kind"] == "snapshot" and (t := task_of(d, tid)) is not None and t["lastStatus"] == "RUNNING")
        assert d["observedGeneration"] == 1
    finally:
        pump2.cancel()
        await asyncio.gather(pump2, return_exceptions=True)
        await c2.__aexit__(None, None, None)
