"""The orchestrator's state metrics (orchestrator.metrics_collector) from a State built in memory,
the exposition of /metrics through the app, and the instruments' bounded labels."""
from __future__ import annotations

import time

from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dockyard.wire import NodeResources
from orchestrator import metrics
from orchestrator.api import create_app
from orchestrator.controller import Controller
from orchestrator.metrics_collector import StateCollector, registry_for, route_of
from orchestrator.models import Deployment, Node, Service, ServiceSpec, Task
from orchestrator.ops import Ops
from orchestrator.state import State


def _task(i: int, status: str, service: str | None = "web", node: str | None = "n1", cpu: int = 256,
          memory: int = 128) -> Task:
    return Task(taskId=f"t{i:04d}", cluster="c1", taskDefinition="web:1", family="web", revision=1,
                group="service:web", serviceName=service, nodeId=node, lastStatus=status, cpu=cpu, memory=memory)


def build_state() -> State:
    st = State()
    st.put_node(Node(cluster="c1", nodeId="n1", connected=True, resources=NodeResources(cpu=2048, memory=4096)))
    st.put_node(Node(cluster="c1", nodeId="n2", connected=False, status="DRAINING",
                     resources=NodeResources(cpu=1024, memory=1024)))
    svc = Service(cluster="c1", serviceName="web", spec=ServiceSpec(serviceName="web", taskDefinition="web", desiredCount=4),
                  deployments=[Deployment(taskDefinition="web:2", failedTasks=2),
                               Deployment(status="ACTIVE", taskDefinition="web:1", rolloutState="COMPLETED"),
                               Deployment(status="INACTIVE", taskDefinition="web:0", rolloutState="FAILED",
                                          failedTasks=7)])
    st.put_service(svc)
    st.put_service(Service(cluster="c1", serviceName="idle", spec=ServiceSpec(serviceName="idle", taskDefinition="idle",
                                                                              desiredCount=0)))
    for i, status in enumerate(["RUNNING", "RUNNING", "PENDING", "PROVISIONING", "STOPPED"]):
        st.put_task(_task(i, status, node=None if status == "PROVISIONING" else "n1"))
    st.put_task(_task(10, "RUNNING", service=None, node="n2", cpu=0, memory=512))  # a run-task task
    return st


def samples(collector) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in collector.collect():
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_service_gauges_count_tasks_by_status_and_deployments_by_rollout_state():
    got = samples(StateCollector(build_state()))
    web = (("cluster", "c1"), ("service", "web"))
    assert got[("dockyard_service_desired_tasks", web)] == 4
    assert got[("dockyard_service_running_tasks", web)] == 2
    assert got[("dockyard_service_pending_tasks", web)] == 2  # PENDING and PROVISIONING; STOPPED not counted
    assert got[("dockyard_service_failed_tasks", web)] == 2  # the INACTIVE deployment's 7 are history
    assert got[("dockyard_service_deployments", (("cluster", "c1"), ("rollout_state", "IN_PROGRESS"), ("service", "web")))] == 1
    assert got[("dockyard_service_deployments", (("cluster", "c1"), ("rollout_state", "COMPLETED"), ("service", "web")))] == 1
    assert got[("dockyard_service_deployments", (("cluster", "c1"), ("rollout_state", "FAILED"), ("service", "web")))] == 0
    idle = (("cluster", "c1"), ("service", "idle"))
    assert got[("dockyard_service_running_tasks", idle)] == 0
    assert got[("dockyard_tasks", (("cluster", "c1"), ("last_status", "RUNNING")))] == 3
    assert ("dockyard_tasks", (("cluster", "c1"), ("last_status", "STOPPED"))) not in got


def test_node_gauges_subtract_the_reservations_of_placed_tasks():
    got = samples(StateCollector(build_state()))
    n1, n2 = (("cluster", "c1"), ("node", "n1")), (("cluster", "c1"), ("node", "n2"))
    assert got[("dockyard_node_connected", n1)] == 1 and got[("dockyard_node_connected", n2)] == 0
    assert got[("dockyard_node_draining", n2)] == 1
    assert got[("dockyard_node_tasks", n1)] == 3  # 2 RUNNING + 1 PENDING (the STOPPED one is not counted)
    assert got[("dockyard_node_registered_cpu_units", n1)] == 2048
    assert got[("dockyard_node_remaining_cpu_units", n1)] == 2048 - 3 * 256
    assert got[("dockyard_node_registered_memory_bytes", n1)] == 4096 * 2**20
    assert got[("dockyard_node_remaining_memory_bytes", n2)] == (1024 - 512) * 2**20
    assert got[("dockyard_nodes_connected", (("cluster", "c1"),))] == 1


def test_the_collector_keeps_nothing_between_scrapes_and_follows_the_state():
    st = build_state()
    col = StateCollector(st)
    samples(col)
    assert vars(col).keys() == {"state", "usage"}
    t = st.tasks["t0002"]
    t.lastStatus = "RUNNING"
    st.put_task(t)
    got = samples(col)
    assert got[("dockyard_service_running_tasks", (("cluster", "c1"), ("service", "web")))] == 3


def test_metrics_endpoint_exposes_instruments_and_state_and_times_requests_by_route():
    st = build_state()
    ctl = Controller(st, epoch=1, publish=lambda doc: None)  # type: ignore[arg-type,return-value]
    client = TestClient(create_app(Ops(st, ctl)))
    assert client.get("/v1/clusters/c1/services/web").status_code == 200
    assert client.get("/v1/clusters/c1/services/nope").status_code == 404
    body = client.get("/metrics").text
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    for name in ("dockyard_build_info", "dockyard_service_running_tasks", "dockyard_node_remaining_cpu_units",
                 "dockyard_task_transitions", "dockyard_api_request_duration_seconds", "dockyard_reconcile_pass_seconds",
                 "dockyard_store_transaction_seconds", "dockyard_mqtt_received_bytes"):
        assert name in fams, name
    routes = {(s.labels["route"], s.labels["status"]) for s in fams["dockyard_api_request_duration_seconds"].samples
              if s.name.endswith("_count")}
    assert ("/v1/clusters/{cluster}/services/{name}", "200") in routes
    assert ("/v1/clusters/{cluster}/services/{name}", "404") in routes
    assert all("web" not in r and "nope" not in r for r, _ in routes)  # templates, never raw paths


def test_transitions_bound_their_stop_code_label():
    before = metrics.TASK_TRANSITIONS.labels(last_status="STOPPED", stop_code="other")._value.get()
    metrics.transition("STOPPED", "SomethingANewerAgentSays")
    metrics.transition("STOPPED", "UserInitiated")
    assert metrics.TASK_TRANSITIONS.labels(last_status="STOPPED", stop_code="other")._value.get() == before + 1
    assert metrics.leaf("x/y") == "other" and metrics.leaf("status") == "status"
    assert route_of({}) == "unmatched"


def test_scrape_at_ten_thousand_tasks_on_a_thousand_nodes_is_cheap():
    st = State()
    for n in range(1000):
        st.put_node(Node(cluster="c1", nodeId=f"n{n}", connected=True, resources=NodeResources(cpu=4096, memory=8192)))
    for s in range(100):
        st.put_service(Service(cluster="c1", serviceName=f"s{s}",
                               spec=ServiceSpec(serviceName=f"s{s}", taskDefinition="web", desiredCount=100)))
    for i in range(10_000):
        st.put_task(Task(taskId=f"t{i}", cluster="c1", taskDefinition="web:1", family="web", revision=1,
                         group="g", serviceName=f"s{i % 100}", nodeId=f"n{i % 1000}", lastStatus="RUNNING", cpu=10))
    reg = registry_for(st)
    generate_latest(reg)
    t0 = time.perf_counter()
    body = generate_latest(reg)
    seconds = time.perf_counter() - t0
    print(f"/metrics at 10k tasks, 1,000 nodes: {seconds:.3f} s, {len(body)} bytes")
    assert b'dockyard_node_tasks{cluster="c1",node="n999"} 10.0' in body
    assert seconds < 1.0  # target 0.2 s on an idle machine; generous on a shared one
