"""Usage in the control plane (orchestrator.usage, the bus's reading of snapshot samples, the top
API and ``dockyard top``) and Prometheus HTTP SD (orchestrator.sd), driven through the controller,
the bus's message handler and the API in process."""
from __future__ import annotations

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from dockyard.cli import cli
from dockyard.wire import (
    ContainerReport,
    NetworkBinding,
    NodeResources,
    Presence,
    StatusDoc,
    TaskReport,
    TaskUsage,
    node_topic,
)
from orchestrator.api import create_app
from orchestrator.bus import Bus
from orchestrator.client.session import Session
from orchestrator.controller import Controller
from orchestrator.ops import Ops
from orchestrator.state import State
from orchestrator.usage import MIB, ONE_VCPU, UsageBook, utilization

C = "default"


def test_cpu_utilization_is_of_the_reservation_or_of_one_vcpu():
    u = TaskUsage(taskId="t", cpu=1024.0, memory=32 * MIB, memoryLimit=0)
    assert utilization(u, 512, 64, 4096, 0).cpu_percent == 200.0
    zero = utilization(u, 0, 0, 4096, 0)
    assert zero.cpu_basis == ONE_VCPU and zero.cpu_percent == 100.0
    assert utilization(u, 0, 64, 4096, 0).memory_percent == 50.0  # of the reservation
    limited = utilization(TaskUsage(taskId="t", cpu=0, memory=32 * MIB, memoryLimit=128 * MIB), 0, 0, 4096, 0)
    assert limited.memory_percent == 25.0  # no reservation: of the containers' hard limits
    assert zero.memory_percent == round(100 * 32 / 4096, 1)  # neither: of the node's memory


class World:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0
        self.state = State()
        self.ctl = Controller(self.state, epoch=1, publish=self._publish, node_lost_seconds=10, clock=lambda: self.t)
        self.book = UsageBook()
        self.bus = Bus("mqtt://127.0.0.1:1", self.ctl, usage=self.book)
        self.ops = Ops(self.state, self.ctl)
        self.app = create_app(self.ops, usage=self.book, self_target="127.0.0.1:8080")
        self.api = TestClient(self.app)
        self.docs: dict = {}
        self.seq = 0

    async def _publish(self, doc) -> None:  # never awaited (reconcile() returns the documents)
        pass

    def online(self, node: str, metrics: str | None = None) -> None:
        p = Presence(nodeId=node, bootId=f"b-{node}", state="online", cluster=C, address="10.0.0.7",
                     resources=NodeResources(cpu=2048, memory=1024), metricsEndpoint=metrics)
        self.bus.handle(node_topic(C, node, "presence"), p.model_dump_json().encode())

    def reconcile(self) -> None:
        self.t += 1
        for d in self.ctl.reconcile(self.t):
            self.docs[d.nodeId] = d
            self.bus.last_docs[(d.cluster, d.nodeId)] = d  # what Bus.publish records (no broker here)
        self.state.flush()

    def snapshot(self, node: str, usage: list[TaskUsage] | None) -> bytes:
        self.seq += 1
        doc = self.docs[node]
        reports = [TaskReport(taskId=dt.taskId, lastStatus="RUNNING", startedAt=self.t,
                              containers=[ContainerReport(name=c.name, lastStatus="RUNNING",
                                                          networkBindings=[NetworkBinding(containerPort=9100,
                                                                                          hostPort=32768 + i)])
                                          for c in dt.taskDefinition.containerDefinitions])
                   for i, dt in enumerate(doc.tasks)]
        st = StatusDoc(nodeId=node, bootId=f"b-{node}", seq=self.seq, kind="snapshot", observedEpoch=doc.epoch,
                       observedGeneration=doc.generation, tasks=reports, usage=usage, ts=self.t)
        raw = st.model_dump_json().encode()
        self.bus.handle(node_topic(C, node, "status"), raw)
        return raw

    def apply(self, *docs: dict) -> None:
        res = self.ops.apply([{"source": f"d{i}.yaml", "document": d} for i, d in enumerate(docs)], C)
        assert all(not r.get("errors") for r in res), res


def _td(name: str, labels: dict | None = None, cpu: int | None = None) -> dict:
    c = {"name": name, "image": "busybox", "memory": 64, "portMappings": [{"containerPort": 9100}]}
    if labels:
        c["dockerLabels"] = labels
    spec: dict = {"containerDefinitions": [c]}
    if cpu is not None:
        spec["cpu"] = str(cpu)
    return {"apiVersion": "dockyard/v1", "kind": "TaskDefinition", "metadata": {"name": name}, "spec": spec}


def _svc(name: str, n: int) -> dict:
    return {"apiVersion": "dockyard/v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"taskDefinition": name, "desiredCount": n}}


@pytest.fixture
def world() -> World:
    w = World()
    w.online("n1", metrics="10.0.0.7:9780")
    w.apply(_td("web", {"PROMETHEUS_EXPORTER_PORT": "9100", "PROMETHEUS_EXPORTER_PATH": "/m"}), _svc("web", 2))
    for _ in range(3):
        w.reconcile()
    w.snapshot("n1", None)
    w.reconcile()
    return w


def _ids(w: World) -> list[str]:
    return sorted(t.taskId for t in w.state.tasks.values() if t.lastStatus == "RUNNING")


def test_snapshot_samples_become_task_and_service_utilization(world):
    a, b = _ids(world)
    world.snapshot("n1", [TaskUsage(taskId=a, cpu=1024.0, memory=32 * MIB), TaskUsage(taskId=b, cpu=0.0, memory=16 * MIB)])
    tasks = {r["taskId"]: r for r in world.api.get(f"/v1/clusters/{C}/top/tasks").json()["tasks"]}
    assert tasks[a]["CPUUtilization"] == 100.0 and tasks[b]["CPUUtilization"] == 0.0
    assert tasks[a]["MemoryUtilization"] == 50.0  # of the 64 MiB reserved
    svc = world.api.get(f"/v1/clusters/{C}/top/services").json()["services"][0]
    assert (svc["serviceName"], svc["sampledTasks"], svc["CPUUtilization"], svc["MemoryUtilization"]) == ("web", 2, 50.0, 37.5)
    node = world.api.get(f"/v1/clusters/{C}/top/nodes").json()["nodes"][0]
    assert node["cpuUnits"] == 1024.0 and node["CPUUtilization"] == 50.0  # of the node's 2048 units
    body = world.api.get("/metrics").text
    assert 'dockyard_service_cpu_utilization_percent{cluster="default",service="web"} 50.0' in body


def test_a_repeated_snapshot_is_not_parsed_again_but_its_new_samples_are_read(world, monkeypatch):
    a, b = _ids(world)
    world.snapshot("n1", [TaskUsage(taskId=a, cpu=100.0, memory=MIB)])
    calls = []
    monkeypatch.setattr(world.ctl, "on_status", lambda *args: calls.append(args))
    world.snapshot("n1", [TaskUsage(taskId=a, cpu=2048.0, memory=MIB), TaskUsage(taskId=b, cpu=512.0, memory=MIB)])
    assert calls == []  # the repeat only refreshed the heartbeat
    tasks = {r["taskId"]: r for r in world.api.get(f"/v1/clusters/{C}/top/tasks").json()["tasks"]}
    assert tasks[a]["CPUUtilization"] == 200.0 and tasks[b]["CPUUtilization"] == 50.0


def test_an_old_agent_without_samples_shows_none(world):
    world.snapshot("n1", None)
    rows = world.api.get(f"/v1/clusters/{C}/top/tasks").json()["tasks"]
    assert len(rows) == 2 and all(r["CPUUtilization"] is None for r in rows)
    assert "dockyard_service_cpu_utilization_percent{" not in world.api.get("/metrics").text


def test_samples_of_a_disconnected_node_are_not_shown(world):
    a, _ = _ids(world)
    world.snapshot("n1", [TaskUsage(taskId=a, cpu=100.0, memory=MIB)])
    world.state.nodes[(C, "n1")].connected = False
    rows = world.api.get(f"/v1/clusters/{C}/top/tasks").json()["tasks"]
    assert all(r["CPUUtilization"] is None for r in rows)


def test_sd_lists_the_orchestrator_the_agent_and_each_exporter_container(world):
    groups = world.api.get("/v1/prometheus/sd").json()
    jobs = [g["labels"]["__meta_dockyard_job"] for g in groups]
    assert jobs == ["orchestrator", "agent", "task", "task"]
    assert groups[0]["targets"] == ["127.0.0.1:8080"]
    assert groups[1]["targets"] == ["10.0.0.7:9780"] and groups[1]["labels"]["__meta_dockyard_node"] == "n1"
    tasks = {g["labels"]["__meta_dockyard_task"]: g for g in groups[2:]}
    assert set(tasks) == set(_ids(world))
    for g in tasks.values():
        assert g["targets"][0].startswith("10.0.0.7:3276")  # the node address and the bound host port
        assert g["labels"]["__metrics_path__"] == "/m" and g["labels"]["__scheme__"] == "http"
        assert {k: g["labels"][f"__meta_dockyard_{k}"] for k in ("cluster", "service", "family", "revision",
                                                                  "container")} == \
            {"cluster": C, "service": "web", "family": "web", "revision": "1", "container": "web"}
    assert all(isinstance(v, str) for g in groups for v in g["labels"].values())


def test_sd_is_an_empty_list_without_targets_and_skips_tasks_without_the_label():
    w = World()
    w.app = create_app(w.ops, usage=w.book)
    assert TestClient(w.app).get("/v1/prometheus/sd").json() == []
    w.online("n1")
    w.apply(_td("plain"), _svc("plain", 1))
    for _ in range(3):
        w.reconcile()
    w.snapshot("n1", None)
    assert TestClient(w.app).get("/v1/prometheus/sd").json() == []


def test_dockyard_top_prints_the_api_views(world):
    a, b = _ids(world)
    world.snapshot("n1", [TaskUsage(taskId=a, cpu=1024.0, memory=32 * MIB), TaskUsage(taskId=b, cpu=0.0, memory=16 * MIB)])
    transport: httpx.BaseTransport = world.api._transport  # the ASGI app behind httpx
    for args, expect in ((["top", "tasks"], ["CPU%", a[:12], "100.0%", "32.0Mi"]),
                         (["top", "services"], ["web", "50.0%", "37.5%"]),
                         (["top", "nodes"], ["n1", "50.0%"]),
                         (["top", "tasks", "--service", "web", "-o", "json"], ['"CPUUtilization": 100.0'])):
        r = CliRunner().invoke(cli, ["--server", "http://testserver", *args], obj=Session(transport=transport))
        assert r.exit_code == 0, r.output
        for text in expect:
            assert text in r.output, (args, r.output)
    r = CliRunner().invoke(cli, ["--server", "http://testserver", "-c", "nope", "top", "tasks"],
                           obj=Session(transport=transport))
    assert r.exit_code == 1 and "Traceback" not in r.output


def _count(metric, **labels) -> float:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value(metric, labels) or 0.0


def test_the_lifecycle_instruments_count_a_service_coming_up():
    running, placed = _count("dockyard_task_transitions_total", last_status="RUNNING", stop_code=""), \
        _count("dockyard_task_placed_to_running_seconds_count")
    acks, created = _count("dockyard_desired_ack_seconds_count"), _count("dockyard_task_created_to_placed_seconds_count")
    w = World()
    w.online("n1")
    w.apply(_td("web"), _svc("web", 2))
    for _ in range(3):
        w.reconcile()
    assert _count("dockyard_task_created_to_placed_seconds_count") == created + 2
    w.snapshot("n1", None)
    w.snapshot("n1", None)  # a repeat: the same generation is timed once
    assert _count("dockyard_task_transitions_total", last_status="RUNNING", stop_code="") == running + 2
    assert _count("dockyard_task_placed_to_running_seconds_count") == placed + 2
    assert _count("dockyard_desired_ack_seconds_count") == acks + 1
    assert _count("dockyard_mqtt_received_messages_total", topic="status") >= 2
