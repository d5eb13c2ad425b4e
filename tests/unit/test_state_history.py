"""Stopped tasks leave memory once flushed and live on in the store (orchestrator.state,
orchestrator.store): still listable, gettable by id and prefix, counted by Task documents'
idempotency, deleted by the 24 h GC in one statement, never loaded at a restart, and a late
report for one changes nothing. Driven through the controller, Ops and the API in process,
with a temporary SQLite file."""
from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient

from dockyard.wire import (
    ContainerReport,
    NodeResources,
    Presence,
    StatusDoc,
    TaskReport,
)
from orchestrator.api import create_app
from orchestrator.controller import Controller
from orchestrator.models import Task
from orchestrator.ops import Ops, UserError
from orchestrator.state import STOPPED_TASK_RETENTION, State
from orchestrator.store import Store

C = "default"


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


class World:
    """A controller and its Ops on a State over ``store``; one node, whose agent does as told."""

    def __init__(self, store: Store | None, epoch: int = 1) -> None:
        self.clock = Clock()
        self.state = State(store)
        self.ctl = Controller(self.state, epoch=epoch, publish=self._publish, node_lost_seconds=10, clock=self.clock)
        self.ops = Ops(self.state, self.ctl)
        self.docs: dict = {}
        self.seq = 0

    async def _publish(self, doc) -> None:  # never awaited: reconcile() returns the documents
        pass

    def online(self, node: str = "n1") -> None:
        self.ctl.on_presence(C, node, Presence(nodeId=node, bootId=f"b-{node}", state="online", cluster=C,
                                               resources=NodeResources(cpu=4096, memory=8192)))

    def reconcile(self, dt: float = 1.0) -> list:
        self.clock.t += dt
        docs = self.ctl.reconcile(self.clock.t)
        for d in docs:
            self.docs[d.nodeId] = d
        self.state.flush()
        return docs

    def report(self, node: str, reports: list[TaskReport], kind: str = "update") -> None:
        self.seq += 1
        doc = self.docs.get(node)
        self.ctl.on_status(C, node, StatusDoc(nodeId=node, bootId=f"b-{node}", seq=self.seq, kind=kind,
                                              observedEpoch=doc.epoch if doc else 0,
                                              observedGeneration=doc.generation if doc else 0, tasks=reports))

    def obey(self, node: str = "n1") -> None:
        """The agent did what its last document says."""
        doc = self.docs.get(node)
        reports = []
        for dt in doc.tasks if doc else []:
            status = "RUNNING" if dt.desiredStatus == "RUNNING" else "STOPPED"
            reports.append(TaskReport(taskId=dt.taskId, lastStatus=status, startedAt=self.clock.t,
                                      stoppedAt=self.clock.t if status == "STOPPED" else None,
                                      containers=[ContainerReport(name="web", lastStatus=status,
                                                                  exitCode=0 if status == "STOPPED" else None)]))
        self.report(node, reports, "snapshot")

    def settle(self, steps: int = 6) -> None:
        for _ in range(steps):
            self.reconcile()
            self.obey()
        self.reconcile()

    def apply(self, *docs: dict) -> list[dict]:
        return self.ops.apply([{"source": f"d{i}.yaml", "document": d} for i, d in enumerate(docs)], C)


TD = {"apiVersion": "dockyard/v1", "kind": "TaskDefinition", "metadata": {"name": "web"},
      "spec": {"containerDefinitions": [{"name": "web", "image": "busybox", "memory": 64}]}}


def svc(desired: int) -> dict:
    return {"apiVersion": "dockyard/v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"taskDefinition": "web", "desiredCount": desired,
                     "deploymentConfiguration": {"minimumHealthyTimeSeconds": 0, "bakeTimeSeconds": 0}}}


ONCE = {"apiVersion": "dockyard/v1", "kind": "Task", "metadata": {"name": "once"},
        "spec": {"taskDefinition": "web", "count": 1}}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """A store on each backend (PostgreSQL: a fresh database on the session's server)."""
    if request.param == "postgresql":
        from orchestrator.store_pg import PgStore

        s = PgStore(request.getfixturevalue("pg_url"))
    else:
        s = Store(tmp_path / "d.db")
    yield s
    s.close()


def churned(store: Store) -> tuple[World, list[Task], list[Task]]:
    """4 service tasks started, scaled to 1 and stopped: 3 STOPPED (flushed), 1 RUNNING."""
    w = World(store)
    w.online()
    w.apply(TD, svc(4))
    w.settle()
    w.ops.scale(C, "web", 1)
    w.settle()
    tasks = w.state.service_tasks(C, "web")
    stopped = [t for t in tasks if t.lastStatus == "STOPPED"]
    running = [t for t in tasks if t.lastStatus == "RUNNING"]
    assert len(stopped) == 3 and len(running) == 1
    return w, stopped, running


def test_a_stopped_task_leaves_memory_and_every_index_once_flushed(store):
    w, stopped, running = churned(store)
    st = w.state
    assert set(st.tasks) == {running[0].taskId}
    for t in stopped:
        i = t.taskId
        assert i not in st.unplaced and i not in st._indexed_node and i not in st._active_node
        assert i not in st._stopped_placed
        assert all(i not in ids for ids in (*st.tasks_by_service.values(), *st.tasks_by_node.values(),
                                            *st.active_by_service.values(), *st.active_by_node.values()))
    assert st.tasks_evicted == 3 and store.count_stopped_tasks() == 3
    assert [t.taskId for t in st.service_active_tasks(C, "web")] == [running[0].taskId]
    assert [t.taskId for t in st.node_active_tasks(C, "n1")] == [running[0].taskId]


def test_a_stopped_task_stays_in_memory_until_its_flush():
    st = State(None)
    t = Task(cluster=C, taskDefinition="web:1", family="web", revision=1, group="service:web", serviceName="web",
             nodeId="n1", lastStatus="RUNNING")
    st.put_task(t)
    st.flush()
    t.lastStatus = t.desiredStatus = "STOPPED"
    t.stoppedAt = 5.0
    st.put_task(t)
    assert st.tasks[t.taskId] is t and st.node_tasks(C, "n1") == [t]  # still the object the pass holds
    st.flush()
    assert t.taskId not in st.tasks
    assert [x.taskId for x in st.node_tasks(C, "n1")] == [t.taskId]  # from the (in-memory) store


def test_stopped_tasks_are_gettable_by_id_and_prefix(store):
    w, stopped, running = churned(store)
    for t in stopped:
        got = w.ops.task(C, t.taskId)
        assert got.taskId == t.taskId and got.lastStatus == "STOPPED" and got.stoppedReason == t.stoppedReason
        assert w.ops.task(C, t.taskId[:12]).taskId == t.taskId
    assert w.ops.task(C, running[0].taskId[:12]) is running[0]
    with pytest.raises(UserError) as exc:
        w.ops.task("other", stopped[0].taskId)
    assert exc.value.status == 404
    with pytest.raises(UserError) as exc:
        w.ops.task(C, "zzz")
    assert exc.value.status == 404


def test_an_id_prefix_is_ambiguous_across_memory_and_store(store):
    w = World(store)

    def task(task_id: str, status: str) -> Task:
        return Task(taskId=task_id, cluster=C, taskDefinition="web:1", family="web", revision=1,
                    group="family:web", nodeId="n1", lastStatus=status,
                    desiredStatus="STOPPED" if status == "STOPPED" else "RUNNING", stoppedAt=1.0)
    for t in (task("abc1", "STOPPED"), task("abd1", "STOPPED"), task("abc2", "RUNNING")):
        w.state.put_task(t)
    w.state.flush()
    assert set(w.state.tasks) == {"abc2"}
    assert w.state.task_ids(C, "ab") == ["abc1", "abc2", "abd1"]
    with pytest.raises(UserError) as exc:
        w.ops.task(C, "abc")  # one stopped (store), one running (memory)
    assert exc.value.status == 409 and "2 tasks" in exc.value.message
    assert w.ops.task(C, "abd").taskId == "abd1"
    w.state.delete_task(w.ops.task(C, "abd1"))  # deleted, not yet flushed: gone already
    with pytest.raises(UserError):
        w.ops.task(C, "abd")


def test_stopping_a_stopped_task_changes_nothing(store):
    w, stopped, _ = churned(store)
    before = store.task(stopped[0].taskId)
    t = w.ops.stop_task(C, stopped[0].taskId[:12], "again")
    assert t.lastStatus == "STOPPED" and stopped[0].taskId not in w.state.tasks
    assert store.task(stopped[0].taskId) == before


def test_the_task_list_api_streams_every_task_oldest_first_with_its_filters(store):
    w, stopped, running = churned(store)
    w.online("n2")
    w.ops.run_task(C, __import__("orchestrator.models", fromlist=["RunTaskSpec"]).RunTaskSpec(taskDefinition="web"))
    with TestClient(create_app(w.ops)) as api:
        def ids(**params) -> list[str]:
            r = api.get(f"/v1/clusters/{C}/tasks", params=params)
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            return [t["taskId"] for t in r.json()["tasks"]]

        everything = [t for t in [*stopped, *running, *w.state.tasks.values()]]
        by_age = [t.taskId for t in sorted({t.taskId: t for t in everything}.values(),
                                           key=lambda t: (t.createdAt, t.taskId))]
        assert ids() == by_age and len(by_age) == 5
        assert set(ids(desiredStatus="STOPPED")) == {t.taskId for t in stopped}
        assert set(ids(desiredStatus="RUNNING")) == set(w.state.tasks)
        assert set(ids(service="web")) == {t.taskId for t in [*stopped, *running]}
        assert set(ids(node="n1")) >= {t.taskId for t in [*stopped, *running]}
        assert ids(family="nope") == [] and ids(service="nope") == []
        assert set(ids(stopped="false")) == {t.taskId for t in w.state.tasks.values() if t.lastStatus != "STOPPED"}
        assert not set(ids(stopped="false")) & {t.taskId for t in stopped}
        assert api.get("/v1/clusters/other/tasks").json() == {"tasks": []}
        assert api.get(f"/v1/clusters/{C}/tasks/{stopped[0].taskId[:10]}").json()["task"]["lastStatus"] == "STOPPED"


def test_the_list_pages_through_the_store_without_duplicates(store, monkeypatch):
    st = State(store)
    made = []
    for i in range(23):
        t = Task(cluster=C, taskDefinition="web:1", family="web", revision=1, group="service:web",
                 serviceName="web", nodeId="n1", createdAt=float(i % 7), lastStatus="STOPPED",
                 desiredStatus="STOPPED", stoppedAt=100.0)
        st.put_task(t)
        made.append(t)
    st.flush()
    live = Task(cluster=C, taskDefinition="web:1", family="web", revision=1, group="service:web",
                serviceName="web", nodeId="n1", createdAt=3.5)
    st.put_task(live)
    assert st.tasks.keys() == {live.taskId}
    got = list(st.iter_tasks(C, page=4))
    want = sorted([*made, live], key=lambda t: (t.createdAt, t.taskId))
    assert [t.taskId for t in got] == [t.taskId for t in want]


def test_task_documents_stay_idempotent_after_their_task_stopped(store):
    w = World(store)
    w.online()
    w.apply(TD)
    assert w.apply(ONCE)[0]["action"] == "created"
    w.settle()
    (t,) = [t for t in w.state.tasks.values() if t.startedBy == "manifest/once"]
    w.report("n1", [TaskReport(taskId=t.taskId, lastStatus="STOPPED", stoppedAt=w.clock.t,
                               containers=[ContainerReport(name="web", lastStatus="STOPPED", exitCode=0)])])
    w.reconcile()
    assert t.taskId not in w.state.tasks and w.state.task(t.taskId).lastStatus == "STOPPED"
    assert w.apply(ONCE)[0]["action"] == "unchanged"  # run once, even after it ended
    assert not any(x.startedBy == "manifest/once" for x in w.state.tasks.values())
    res = w.ops.delete_documents([{"source": "once.yaml", "document": ONCE}], C)
    assert res[0]["action"] == "deleted"
    other = {**ONCE, "metadata": {"name": "other"}}
    assert w.ops.delete_documents([{"source": "o.yaml", "document": other}], C)[0]["action"] == "not found"


def test_gc_deletes_the_stopped_tasks_older_than_the_retention_in_one_statement(store):
    w, stopped, running = churned(store)
    w.clock.t += STOPPED_TASK_RETENTION - 10
    w.ctl.passes = 100  # collect_garbage runs every 100 passes
    statements: list[str] = []
    if store.backend == "sqlite":
        store.db.set_trace_callback(statements.append)
    w.ctl.collect_garbage(w.clock.t)
    if store.backend == "sqlite":
        store.db.set_trace_callback(None)
        assert [s for s in statements if s.startswith("DELETE")] == [
            f"DELETE FROM records WHERE status = 'STOPPED' AND stopped_at < {w.clock.t - STOPPED_TASK_RETENTION!r}"]
    assert store.count_stopped_tasks() == 3  # not old enough yet
    w.clock.t += 20
    w.ctl.collect_garbage(w.clock.t)
    assert store.count_stopped_tasks() == 0
    assert all(w.state.task(t.taskId) is None for t in stopped)
    assert [t.taskId for t in w.state.service_tasks(C, "web")] == [running[0].taskId]


def test_gc_also_drops_an_old_stopped_task_not_yet_flushed():
    st = State(None)
    t = Task(cluster=C, taskDefinition="web:1", family="web", revision=1, group="family:web", nodeId="n1",
             lastStatus="STOPPED", desiredStatus="STOPPED", stoppedAt=10.0)
    st.put_task(t)
    st.collect_stopped(11.0)
    st.flush()
    assert st.task(t.taskId) is None and st.store.count_stopped_tasks() == 0


def test_a_restart_loads_no_stopped_task_body(tmp_path, monkeypatch):
    path = tmp_path / "d.db"
    w, stopped, running = churned(Store(path))
    w.state.store.close()
    parsed: list[str] = []
    real = Task.model_validate_json.__func__  # type: ignore[attr-defined]

    def counting(cls, data, *a, **kw):
        t = real(cls, data, *a, **kw)
        parsed.append(t.lastStatus)
        return t
    monkeypatch.setattr(Task, "model_validate_json", classmethod(counting))
    store = Store(path)
    again = State(store)
    assert parsed == ["RUNNING"]  # only the live task's body was read
    assert set(again.tasks) == {running[0].taskId}
    assert {t.taskId for t in again.service_tasks(C, "web")} == {t.taskId for t in [*stopped, *running]}
    store.close()


def test_a_late_report_for_a_stopped_task_changes_nothing(store):
    w, stopped, running = churned(store)
    victim = stopped[0]
    before = store.task(victim.taskId)
    w.state.take_dirty_nodes()
    w.state.take_dirty_services()
    for status in ("RUNNING", "STOPPED"):  # a duplicate, or the agent's stale view
        w.report("n1", [TaskReport(taskId=victim.taskId, lastStatus=status, startedAt=w.clock.t,
                                   containers=[ContainerReport(name="web", lastStatus=status)])])
        assert victim.taskId not in w.state.tasks and not w.state._dirty
        assert not w.state.dirty_nodes and not w.state.dirty_services
        assert w.state.flush() == 0
    w.obey()  # a snapshot of what runs...
    w.docs["n1"].tasks.append(w.docs["n1"].tasks[0].model_copy(update={"taskId": victim.taskId,
                                                                      "desiredStatus": "RUNNING"}))
    w.obey()  # ... and one where the stopped task runs again
    w.reconcile()
    assert store.task(victim.taskId) == before and victim.taskId not in w.state.tasks
    assert [t.taskId for t in w.state.node_active_tasks(C, "n1")] == [running[0].taskId]


def test_v1_store_is_upgraded_in_place(tmp_path):
    """A store written by schema version 1 (records without the task columns) opens: the task
    columns are filled from the bodies and the STOPPED tasks are found by them."""
    path = tmp_path / "old.db"
    live = Task(cluster=C, taskDefinition="web:1", family="web", revision=1, group="service:web",
                serviceName="web", nodeId="n1", lastStatus="RUNNING", createdAt=1.0)
    gone = Task(cluster=C, taskDefinition="web:1", family="web", revision=1, group="service:web",
                serviceName="web", nodeId="n1", lastStatus="STOPPED", desiredStatus="STOPPED", createdAt=0.5,
                stoppedAt=2.0, startedBy="manifest/x")
    con = sqlite3.connect(str(path))
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE records (kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, key));
        INSERT INTO meta VALUES ('schema_version', '1');
        INSERT INTO meta VALUES ('epoch', '7');
    """)
    con.executemany("INSERT INTO records VALUES (?, ?, ?)",
                    [("task", t.taskId, t.model_dump_json()) for t in (live, gone)]
                    + [("cluster", C, '{"clusterName": "default"}')])
    con.commit()
    con.close()

    store = Store(path)
    assert store.get_meta("schema_version") == "3" and store.get_meta("epoch") == "7"
    assert store.secret_versions() == []  # v3: the secrets table
    st = State(store)
    assert set(st.tasks) == {live.taskId} and C in st.clusters
    assert st.task(gone.taskId) == gone and st.task_ids(C, gone.taskId[:6]) == [gone.taskId]
    assert st.started_by_exists(C, "manifest/x")
    assert [t.taskId for t in st.service_tasks(C, "web")] == [gone.taskId, live.taskId]
    assert st.collect_stopped(3.0) == 1 and st.task(gone.taskId) is None
    store.close()
    Store(path).close()  # and opens again as version 2


def test_deactivating_tasks_are_indexed_so_drain_release_visits_only_them():
    state = State()
    t = Task(cluster=C, taskDefinition="web:1", family="web", revision=1, group="service:web", serviceName="web",
             nodeId="n1", lastStatus="RUNNING")
    state.put_task(t)
    assert state.deactivating == {}
    t.lastStatus, t.drainingSince = "DEACTIVATING", 1.0
    state.put_task(t)  # mutated in place, as the shell does
    assert list(state.deactivating) == [t.taskId]
    replaced = t.model_copy(update={"lastStatus": "STOPPING"})
    state.put_task(replaced)  # a new object for the same id
    assert state.deactivating == {}
    state.put_task(replaced.model_copy(update={"lastStatus": "DEACTIVATING"}))
    state._forget(state.tasks[t.taskId])
    assert state.deactivating == {}
