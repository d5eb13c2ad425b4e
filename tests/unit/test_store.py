"""Persistence (orchestrator.store: SQLite; orchestrator.store_pg: PostgreSQL) and the in-memory state with
write-back (orchestrator.state). The tests taking ``db`` run on both backends (a real PostgreSQL 15: the
``pg_server`` fixture of tests/conftest.py)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dockyard.ecs import TaskDefinitionSpec
from dockyard.wire import NodeResources
from orchestrator.core.services import new_deployment
from orchestrator.models import (
    Cluster,
    Node,
    Service,
    ServiceEvent,
    ServiceSpec,
    Task,
    TaskContainer,
    TaskDefinition,
)
from orchestrator.state import State
from orchestrator.store import SCHEMA_VERSION, Store, StoreError, open_store
from orchestrator.store_errors import StoreUnavailable


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """A new store's --store value, on each backend."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return tmp_path / "sub" / "dockyard.db"


@pytest.fixture
def sqlite_db(tmp_path):
    return tmp_path / "sub" / "dockyard.db"


def opened(db):
    return open_store(db, exclusive=False)


def rows(path, kind: str | None = None) -> int:
    if str(path).startswith("postgresql://"):
        import psycopg

        with psycopg.connect(str(path)) as pg:
            if kind:
                return pg.execute("SELECT COUNT(*) FROM records WHERE kind=%s", (kind,)).fetchone()[0]
            return pg.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    con = sqlite3.connect(str(path))
    try:
        if kind:
            return con.execute("SELECT COUNT(*) FROM records WHERE kind=?", (kind,)).fetchone()[0]
        return con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    finally:
        con.close()


def spec() -> TaskDefinitionSpec:
    return TaskDefinitionSpec.model_validate({
        "family": "web", "cpu": "256", "memory": "512", "ulimits": [{"name": "nofile"}],
        "containerDefinitions": [{"name": "web", "image": "busybox", "healthCheck": {"command": ["CMD", "true"]},
                                  "portMappings": [{"containerPort": 80, "hostPort": 8080}]}],
    })


def records():
    td = TaskDefinition(family="web", revision=3, spec=spec(), specHash=spec().spec_hash(), registeredAt=1.0,
                        ignoredFields=["ulimits"])
    svc = Service(cluster="prod", serviceName="web",
                  spec=ServiceSpec(serviceName="web", taskDefinition="web", desiredCount=3,
                                   placementConstraints=[{"type": "memberOf", "expression": "attribute:zone == a"}],
                                   placementStrategy=[{"type": "spread", "field": "attribute:zone"}]),
                  generation=4, observedGeneration=4, steadyState=True,
                  events=[ServiceEvent(message="(service web) has reached a steady state.", count=3)])
    svc.deployments = new_deployment([], "web:2", 3, 10.0)
    svc.deployments[0].rolloutState = "COMPLETED"
    svc.deployments = new_deployment(svc.deployments, "web:3", 3, 20.0)
    svc.deployments[0].failedTasks = 2
    task = Task(cluster="prod", taskDefinition="web:3", family="web", revision=3, group="service:web",
                serviceName="web", deploymentId=svc.deployments[0].id, nodeId="n1", lastStatus="RUNNING",
                healthStatus="HEALTHY", cpu=256, memory=512, startedAt=30.0, placedGeneration=7,
                containers=[TaskContainer(name="web", lastStatus="RUNNING", healthStatus="HEALTHY", dockerId="abc",
                                          networkBindings=[{"containerPort": 80, "hostPort": 8080}])])
    node = Node(cluster="prod", nodeId="n1", connected=True, bootId="boot-1", status="DRAINING",
                resources=NodeResources(cpu=2048, memory=4096), attributes={"zone": "a"},
                capacityProviders=["EC2", "FARGATE"], generation=7, observedGeneration=6, observedEpoch=2)
    return Cluster(clusterName="prod", createdAt=5.0), td, svc, task, node


# ---- store -------------------------------------------------------------------------------------------
def test_round_trip_of_every_kind(db):
    cluster, td, svc, task, node = records()
    store = opened(db)
    store.write([("cluster", cluster), ("taskdef", td), ("service", svc), ("task", task), ("node", node)])
    store.close()

    store = opened(db)
    assert store.load("cluster") == [cluster]
    assert store.load("taskdef") == [td]
    assert store.load("service") == [svc]
    assert store.load("task") == [task]
    assert store.load("node") == [node]
    loaded_td = store.load("taskdef")[0]
    assert loaded_td.spec.spec_hash() == td.specHash and loaded_td.spec.model_extra == {"ulimits": [{"name": "nofile"}]}
    assert store.load("service")[0].deployments[1].rolloutState == "COMPLETED"
    store.close()


def test_write_replaces_by_key_and_deletes(db):
    store = opened(db)
    _cluster, _td, _svc, task, _node = records()
    store.write([("task", task)])
    task.lastStatus = "STOPPED"
    store.write([("task", task)])
    assert rows(db, "task") == 1 and store.load("task")[0].lastStatus == "STOPPED"
    store.write([], [("task", task.taskId)])
    assert rows(db, "task") == 0
    store.write([])  # nothing to do is fine
    store.close()


def test_schema_version_is_recorded(sqlite_db):
    store = opened(sqlite_db)
    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
    store.close()
    con = sqlite3.connect(str(sqlite_db))
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_newer_schema_version_refuses_to_open(db):
    s = opened(db)
    s.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    s.close()
    with pytest.raises(StoreError) as exc:
        opened(db)
    assert "newer" in str(exc.value) and str(SCHEMA_VERSION + 1) in str(exc.value)


def test_reopening_keeps_data_and_version(db):
    cluster, *_ = records()
    s = opened(db)
    s.write([("cluster", cluster)])
    s.close()
    s = opened(db)
    assert s.get_meta("schema_version") == str(SCHEMA_VERSION) and s.load("cluster") == [cluster]
    s.close()


def test_epoch_increments_and_persists(db):
    s = opened(db)
    assert s.get_meta("epoch") is None
    assert s.next_epoch() == 1
    assert s.next_epoch() == 2
    s.close()
    s = opened(db)
    assert s.next_epoch() == 3
    s.close()


def test_write_is_atomic(sqlite_db):
    store = opened(sqlite_db)
    cluster, _td, _svc, task, node = records()
    store.write([("cluster", cluster)])
    # make the second insert of the batch fail inside the transaction
    store.db.execute("CREATE TRIGGER no_nodes BEFORE INSERT ON records WHEN NEW.kind = 'node' "
                     "BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(sqlite3.DatabaseError):
        store.write([("task", task), ("node", node)], [("cluster", "prod")])
    assert rows(sqlite_db) == 1 and rows(sqlite_db, "cluster") == 1 and rows(sqlite_db, "task") == 0
    store.close()


@pytest.mark.parametrize("tasks", [1, 300])  # 300: the COPY path (store_pg.COPY_FROM)
def test_write_is_atomic_on_postgresql(pg_url, tasks):
    import psycopg

    store = opened(pg_url)
    cluster, _td, _svc, task, node = records()
    many = [task.model_copy(update={"taskId": f"{i:032x}", "createdAt": float(i)}) for i in range(tasks)]
    store.write([("cluster", cluster)])
    store.write([("task", t) for t in many])
    assert rows(pg_url, "task") == tasks and store.load_live_tasks() == many
    many[0].lastStatus = "STOPPED"
    store.write([("task", t) for t in many])  # upserts in place
    assert [t.taskId for t in store.stopped_tasks("prod")] == [many[0].taskId] and rows(pg_url, "task") == tasks
    store.db.execute("ALTER TABLE records ADD CONSTRAINT no_nodes CHECK (kind != 'node')")
    with pytest.raises(psycopg.errors.CheckViolation):
        store.write([*(("task", t) for t in many), ("node", node)], [("cluster", "prod")])
    assert rows(pg_url) == 1 + tasks and rows(pg_url, "cluster") == 1 and rows(pg_url, "node") == 0
    store.close()


def test_a_full_disk_is_store_unavailable_nothing_half_written_and_recovers(tmp_path):
    """Issue 16: SQLITE_FULL (here: max_page_count reached, as on a full file system) is
    StoreUnavailable (HTTP 503) with a clear message; the transaction left nothing; the dirty
    records are written once space returns. (SQLite's; PostgreSQL's outage: test_ha.py.)"""
    db = tmp_path / "dockyard.db"
    store = Store(db)
    state = State(store)
    cluster, td, svc, _task, node = records()
    state.put_cluster(cluster)
    state.flush()
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count={pages}")
    state.put_node(node)
    for i in range(300):
        state.put_task(Task(cluster="prod", taskDefinition="web:3", family="web", revision=3, group="service:web",
                            serviceName="web", nodeId="n1", stoppedReason="x" * 200 + str(i)))
    with pytest.raises(StoreUnavailable, match="disk is full.*nothing was written"):
        state.flush()
    assert rows(db) == 1 and rows(db, "task") == 0 and not store.db.in_transaction
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.db.execute(f"PRAGMA max_page_count={pages * 1000}")  # space again
    assert state.flush() == 301
    assert rows(db, "task") == 300 and rows(db, "node") == 1
    store.close()


def test_unknown_kind_is_refused(db):
    store = opened(db)
    with pytest.raises(TypeError):
        store.write([("thing", ServiceEvent(message="x"))])
    store.close()


# ---- state --------------------------------------------------------------------------------------------
def test_state_flush_writes_every_dirty_record_in_one_transaction(sqlite_db):
    store = opened(sqlite_db)
    state = State(store)
    cluster, td, svc, task, node = records()
    state.put_cluster(cluster)
    state.put_taskdef(td)
    state.put_service(svc)
    state.put_node(node)
    tasks = [task] + [Task(cluster="prod", taskDefinition="web:3", family="web", revision=3, group="service:web",
                           serviceName="web", nodeId=f"n{i % 3}") for i in range(50)]
    for t in tasks:
        state.put_task(t)
    state.put_task(task)  # a second change to the same record is still one row
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    assert state.flush() == 4 + 51
    store.db.set_trace_callback(None)
    assert [s for s in statements if s in ("BEGIN", "COMMIT", "ROLLBACK")] == ["BEGIN", "COMMIT"]
    assert rows(sqlite_db) == 55 and rows(sqlite_db, "task") == 51
    assert state.flush() == 0  # nothing dirty any more
    store.close()


def test_the_loops_flush_defers_a_change_of_only_the_containers_details(db):
    """flush(defer_details=True): a task put with a change of only its containers' details
    (put_task details_only, as the controller puts such a report) is written with its next
    other change, or by the next full flush; any other change is written at once."""
    store = opened(db)
    state = State(store)
    _cluster, _td, _svc, task, _node = records()
    task.lastStatus, task.containers = "PENDING", []
    state.put_task(task)
    assert state.flush(defer_details=True) == 1  # new: written
    stored = lambda: store.load("task")[0]  # noqa: E731
    task.containers = [TaskContainer(name="web")]  # the first report: containers PENDING
    state.put_task(task, details_only=True)
    assert state.flush(defer_details=True) == 0 and stored().containers == []
    task.lastStatus = "RUNNING"  # a change of the task's own: written, details included
    task.containers = [TaskContainer(name="web", lastStatus="RUNNING")]
    state.put_task(task)
    assert state.flush(defer_details=True) == 1
    assert stored().lastStatus == "RUNNING" and stored().containers[0].lastStatus == "RUNNING"
    task.containers = [TaskContainer(name="web", lastStatus="RUNNING", dockerId="other")]
    state.put_task(task, details_only=True)
    assert state.flush(defer_details=True) == 0 and stored().containers[0].dockerId is None
    assert state.flush() == 1 and stored().containers[0].dockerId == "other"  # the full flush writes it
    assert state.flush() == 0
    task.healthStatus = "UNHEALTHY"  # every field but the containers counts
    state.put_task(task)
    assert state.flush(defer_details=True) == 1 and stored().healthStatus == "UNHEALTHY"
    store.close()

    state = State(opened(db))  # loaded tasks count as written
    t = state.tasks[task.taskId]
    t.containers = []
    state.put_task(t, details_only=True)
    assert state.flush(defer_details=True) == 0
    t.lastStatus = "STOPPED"  # STOPPED is always written in full, and leaves memory
    state.put_task(t)
    assert state.flush(defer_details=True) == 1 and task.taskId not in state.tasks
    assert state.store.load("task")[0].containers == []


def test_state_reload_indexes_and_disconnects_nodes(db):
    store = opened(db)
    state = State(store)
    cluster, td, svc, task, node = records()
    for put, obj in ((state.put_cluster, cluster), (state.put_taskdef, td), (state.put_service, svc),
                     (state.put_node, node), (state.put_task, task)):
        put(obj)
    state.flush()
    store.close()

    store = opened(db)
    again = State(store)
    assert again.clusters == {"prod": cluster}
    assert again.taskdefs["web"][3] == td and again.resolve_taskdef("web:3") == td and again.latest_taskdef("web") == td
    assert again.services[("prod", "web")] == svc
    assert [t.taskId for t in again.service_tasks("prod", "web")] == [task.taskId]
    assert [t.taskId for t in again.node_tasks("prod", "n1")] == [task.taskId]
    n = again.nodes[("prod", "n1")]
    assert n.connected is False  # nobody is connected right after a restart
    assert n.generation == 7 and n.attributes == {"zone": "a"}
    assert again.dirty_nodes == {("prod", "n1")}  # every node's document is republished
    store.close()


def test_state_deletes_are_flushed(db):
    store = opened(db)
    state = State(store)
    _cluster, _td, svc, task, node = records()
    state.put_service(svc)
    state.put_task(task)
    state.put_node(node)
    state.flush()
    state.delete_service(svc)
    state.delete_task(task)
    state.delete_node(node)
    assert state.flush() == 3
    assert rows(db) == 0
    assert state.service_tasks("prod", "web") == [] and state.node_tasks("prod", "n1") == []
    store.close()


def test_delete_then_put_again_keeps_the_record(db):
    store = opened(db)
    state = State(store)
    cluster, *_ = records()
    state.put_cluster(cluster)
    state.flush()
    state.delete_cluster(cluster)
    state.put_cluster(cluster)
    state.flush()
    assert rows(db, "cluster") == 1
    store.close()


def test_state_without_a_store_writes_to_a_private_in_memory_one():
    state = State(None)
    cluster, *_ = records()
    state.put_cluster(cluster)
    assert state.flush() == 1 and state.flush() == 0
    assert state.store.path == Path(":memory:") and state.store.load("cluster") == [cluster]


def test_moving_a_task_between_nodes_reindexes_and_dirties_both():
    state = State(None)
    *_, task, _ = records()
    state.put_task(task)
    state.take_dirty_nodes()
    task.nodeId = "n2"
    state.put_task(task)
    assert state.node_tasks("prod", "n1") == [] and [t.taskId for t in state.node_tasks("prod", "n2")] == [task.taskId]
    assert state.dirty_nodes == {("prod", "n1"), ("prod", "n2")}


def test_replacing_a_task_object_reindexes():
    state = State(None)
    *_, task, _ = records()
    state.put_task(task)
    copy = task.model_copy(update={"nodeId": "n3"})
    state.put_task(copy)
    assert state.node_tasks("prod", "n1") == [] and state.node_tasks("prod", "n3") == [copy]
    assert state.service_tasks("prod", "web") == [copy]


def test_resolve_taskdef():
    state = State(None)
    for rev, status in ((1, "ACTIVE"), (2, "ACTIVE"), (3, "INACTIVE")):
        state.put_taskdef(TaskDefinition(family="web", revision=rev, status=status, spec=spec(), specHash="h"))
    assert state.resolve_taskdef("web").revision == 2  # latest ACTIVE
    assert state.resolve_taskdef("web:3").revision == 3  # pinned, even INACTIVE (as ECS)
    assert state.resolve_taskdef("web:9") is None and state.resolve_taskdef("api") is None
    assert state.resolve_taskdef("web:x") is None


def test_active_index_holds_the_not_stopped_tasks_of_each_node_through_every_change():
    """node_active_tasks == the node's tasks that are not STOPPED, after moves, in-place status
    changes, object replacement and deletion (the controller reads only the index)."""
    state = State(None)
    *_, task, _ = records()
    other = task.model_copy(update={"taskId": "t-other", "nodeId": None})

    def check() -> None:
        for node in ("n1", "n2", "n3"):
            want = {t.taskId for t in state.node_tasks("prod", node) if t.lastStatus != "STOPPED"}
            assert {t.taskId for t in state.node_active_tasks("prod", node)} == want, node
        want = {t.taskId for t in state.service_tasks("prod", "web") if t.lastStatus != "STOPPED"}
        assert {t.taskId for t in state.service_active_tasks("prod", "web")} == want
        active = [t for t in state.service_tasks("prod", "web") if t.active]
        assert state.service_counts("prod", "web") == (sum(t.lastStatus == "RUNNING" for t in active),
                                                       sum(t.lastStatus != "RUNNING" for t in active))

    state.put_task(task)
    state.put_task(other)
    check()
    assert [t.taskId for t in state.node_active_tasks("prod", "n1")] == [task.taskId]
    other.nodeId = "n1"  # placed, in place
    state.put_task(other)
    check()
    task.nodeId = "n2"  # moved, in place
    state.put_task(task)
    check()
    other.lastStatus = "RUNNING"
    state.put_task(other)
    check()
    assert state.service_counts("prod", "web") == (2, 0)
    other.desiredStatus = "STOPPED"  # asked to stop: no longer counts toward the service
    state.put_task(other)
    check()
    assert state.service_counts("prod", "web") == (1, 0)
    task.lastStatus = "STOPPED"  # stopped, in place: kept in node_tasks, gone from the index
    state.put_task(task)
    check()
    assert state.service_counts("prod", "web") == (0, 0)
    assert state.node_active_tasks("prod", "n2") == [] and state.node_tasks("prod", "n2") == [task]
    replaced = other.model_copy(update={"nodeId": "n3"})  # a new object for the same task
    state.put_task(replaced)
    check()
    assert state.node_active_tasks("prod", "n1") == [] and state.node_active_tasks("prod", "n3") == [replaced]
    state.delete_task(replaced)
    check()
    assert state.node_active_tasks("prod", "n3") == []
