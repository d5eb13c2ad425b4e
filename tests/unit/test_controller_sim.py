"""The controller (orchestrator.controller) driven without MQTT or Docker: presence and status
messages go straight into its handlers, ``reconcile(now)`` is called by the test with a fake
clock, and a fake agent obeys the desired documents it returns."""
from __future__ import annotations

from collections import Counter

import pytest

from dockyard.wire import ContainerReport, DesiredDoc, NodeResources, Presence, StatusDoc, TaskReport
from orchestrator.controller import Controller
from orchestrator.core.query import QueryError
from orchestrator.core.services import primary_of
from orchestrator.ops import Ops, UserError
from orchestrator.state import State
from orchestrator.store import open_store

CLUSTER = "default"
LOST = 10.0


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t


class Sim:
    """A controller, its Ops, a fake clock and fake agents that obey the published documents."""

    def __init__(self, monkeypatch, state: State | None = None, epoch: int = 1) -> None:
        self.clock = Clock()  # injected: the controller and Ops read time only through it
        self.published: list[DesiredDoc] = []

        async def publish(doc: DesiredDoc) -> None:  # never awaited: reconcile() returns the documents
            self.published.append(doc)

        self.state = state or State(None)
        self.ctl = Controller(self.state, epoch=epoch, publish=publish, node_lost_seconds=LOST, clock=self.clock)
        self.ops = Ops(self.state, self.ctl)
        self.boot: dict[str, str] = {}
        self.seq = 0
        self.docs: dict[str, DesiredDoc] = {}  # last document per node

    # ---- bus input ---------------------------------------------------------------------------
    def node_online(self, node_id: str, cpu: int = 2048, memory: int = 4096, boot: str | None = None, **kw) -> None:
        self.boot[node_id] = boot or f"boot-{node_id}"
        self.ctl.on_presence(CLUSTER, node_id, Presence(nodeId=node_id, bootId=self.boot[node_id], state="online",
                                                        cluster=CLUSTER, resources=NodeResources(cpu=cpu, memory=memory),
                                                        **kw))

    def node_offline(self, node_id: str) -> None:
        self.ctl.on_presence(CLUSTER, node_id, Presence(nodeId=node_id, bootId=self.boot[node_id], state="offline"))

    def status(self, node_id: str, reports: list[TaskReport], kind: str = "update") -> None:
        self.seq += 1
        doc = self.docs.get(node_id)
        self.ctl.on_status(CLUSTER, node_id, StatusDoc(
            nodeId=node_id, bootId=self.boot[node_id], seq=self.seq, kind=kind,
            observedEpoch=doc.epoch if doc else 0, observedGeneration=doc.generation if doc else 0, tasks=reports))

    def apply(self, *documents: dict) -> list[dict]:
        return self.ops.apply([{"source": f"doc{i}.yaml", "document": d} for i, d in enumerate(documents)], CLUSTER)

    def reconcile(self, dt: float = 0.0) -> list[DesiredDoc]:
        docs = self.ctl.reconcile(self.clock.advance(dt))
        for d in docs:
            self.docs[d.nodeId] = d
        self.state.flush()
        return docs

    # ---- fake agents ---------------------------------------------------------------------------
    def agent_report(self, node_id: str, kind: str = "snapshot", health: str = "HEALTHY") -> None:
        """The agent on ``node_id`` has done what its last document says: desired RUNNING tasks run
        (healthy), desired STOPPED tasks are stopped."""
        doc = self.docs.get(node_id)
        reports = []
        for dt in (doc.tasks if doc else []):
            if dt.desiredStatus == "RUNNING":
                reports.append(TaskReport(taskId=dt.taskId, lastStatus="RUNNING", healthStatus=health,
                                          startedAt=self.clock.t,
                                          containers=[ContainerReport(name=c.name, lastStatus="RUNNING",
                                                                      healthStatus=health)
                                                      for c in dt.taskDefinition.containerDefinitions]))
            else:
                reports.append(TaskReport(taskId=dt.taskId, lastStatus="STOPPED", stoppedAt=self.clock.t,
                                          containers=[ContainerReport(name=c.name, lastStatus="STOPPED", exitCode=0)
                                                      for c in dt.taskDefinition.containerDefinitions]))
        self.status(node_id, reports, kind)

    def agents(self, *nodes: str) -> None:
        for n in nodes or [n.nodeId for n in self.state.nodes.values() if n.connected]:
            self.agent_report(n)

    # ---- views ---------------------------------------------------------------------------------
    def tasks(self, service: str = "web", active: bool = True):
        ts = self.state.service_tasks(CLUSTER, service)
        return [t for t in ts if t.active] if active else ts

    def service(self, name: str = "web"):
        return self.state.services[(CLUSTER, name)]


def taskdef(name: str = "web", image: str = "busybox", cmem: int = 256, **spec) -> dict:
    return {"apiVersion": "dockyard/v1", "kind": "TaskDefinition", "metadata": {"name": name},
            "spec": {"containerDefinitions": [{"name": name, "image": image, "memory": cmem,
                                               "command": ["httpd", "-f"]}], **spec}}


def service(name: str = "web", td: str = "web", desired: int = 3, **spec) -> dict:
    """A service document; without proof time or bake unless ``deploymentConfiguration`` is given
    (tests of the proof rule pass their own)."""
    spec.setdefault("deploymentConfiguration", {"minimumHealthyTimeSeconds": 0, "bakeTimeSeconds": 0})
    return {"apiVersion": "dockyard/v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"taskDefinition": td, "desiredCount": desired, **spec}}


@pytest.fixture
def sim(monkeypatch) -> Sim:
    s = Sim(monkeypatch)
    for n in ("n1", "n2", "n3"):
        s.node_online(n)
    return s


def running_everywhere(sim: Sim, steps: int = 10) -> None:
    """Reconcile and let the agents report until nothing changes any more."""
    for _ in range(steps):
        docs = sim.reconcile(1.0)
        sim.agents()
        if not docs and sim.service().steadyState:
            return


# ---- registration, placement, documents ------------------------------------------------------------
def test_nodes_register_via_presence(sim):
    nodes = sim.state.cluster_nodes(CLUSTER)
    assert sorted(n.nodeId for n in nodes) == ["n1", "n2", "n3"]
    assert all(n.connected and n.resources.cpu == 2048 and n.resources.memory == 4096 for n in nodes)
    assert CLUSTER in sim.state.clusters


def test_apply_reconcile_places_three_tasks_one_per_node(sim):
    results = sim.apply(taskdef(), service())
    assert [r["action"] for r in results] == ["registered", "created"]
    docs = sim.reconcile()
    tasks = sim.tasks()
    assert len(tasks) == 3
    assert Counter(t.nodeId for t in tasks) == {"n1": 1, "n2": 1, "n3": 1}
    assert all(t.lastStatus == "PENDING" and t.desiredStatus == "RUNNING" and t.pendingReason is None for t in tasks)
    assert sorted(d.nodeId for d in docs) == ["n1", "n2", "n3"]
    for d in docs:
        assert d.epoch == 1 and d.generation == 1 and len(d.tasks) == 1
        (dt,) = d.tasks
        assert dt.family == "web" and dt.revision == 1 and dt.serviceName == "web"
        assert dt.taskDefinition.containerDefinitions[0].image == "busybox"
        assert sim.state.tasks[dt.taskId].nodeId == d.nodeId
        assert sim.state.tasks[dt.taskId].placedGeneration == 1
    assert sim.service().deployments[0].taskDefinition == "web:1"


def test_generations_increase_with_each_change(sim):
    sim.apply(taskdef(), service(desired=3))
    first = {d.nodeId: d.generation for d in sim.reconcile()}
    sim.ops.scale(CLUSTER, "web", 6)
    second = {d.nodeId: d.generation for d in sim.reconcile(1)}
    assert set(second) == {"n1", "n2", "n3"}
    assert all(second[n] > first[n] for n in second)
    assert all(len(sim.docs[n].tasks) == 2 for n in second)


def test_reconcile_without_change_publishes_nothing(sim):
    sim.apply(taskdef(), service())
    sim.reconcile()
    gens = {n.nodeId: n.generation for n in sim.state.nodes.values()}
    assert sim.reconcile(1) == []
    assert sim.reconcile(1) == []
    assert {n.nodeId: n.generation for n in sim.state.nodes.values()} == gens
    # re-applying identical documents changes nothing either
    assert [r["action"] for r in sim.apply(taskdef(), service())] == ["unchanged", "unchanged"]
    assert sim.reconcile(1) == []


def test_running_reports_make_tasks_running_and_the_service_steady(sim):
    sim.apply(taskdef(), service())
    sim.reconcile()
    sim.agents()
    tasks = sim.tasks()
    assert all(t.lastStatus == "RUNNING" and t.startedAt == sim.clock.t for t in tasks)
    assert all(t.containers and t.containers[0].lastStatus == "RUNNING" for t in tasks)
    assert sim.reconcile(1) == []
    s = sim.service()
    assert s.steadyState and primary_of(s).rolloutState == "COMPLETED" and primary_of(s).runningCount == 3
    assert any("steady state" in e.message for e in s.events)
    assert all(n.observedGeneration == 1 and n.observedEpoch == 1 for n in sim.state.nodes.values())


def test_reports_from_the_wrong_node_are_ignored(sim):
    sim.apply(taskdef(), service(desired=1))
    sim.reconcile()
    (t,) = sim.tasks()
    other = next(n for n in ("n1", "n2", "n3") if n != t.nodeId)
    sim.status(other, [TaskReport(taskId=t.taskId, lastStatus="STOPPED")])
    assert t.lastStatus == "PENDING" and t.active


def test_essential_container_exit_stops_the_task_and_a_replacement_follows(sim):
    sim.apply(taskdef(), service())
    sim.reconcile()
    sim.agents()
    sim.reconcile(1)
    victim = sim.tasks()[0]
    node = victim.nodeId
    sim.status(node, [TaskReport(taskId=victim.taskId, lastStatus="STOPPED", stoppedAt=sim.clock.t,
                                 containers=[ContainerReport(name="web", lastStatus="STOPPED", exitCode=137)])])
    assert victim.lastStatus == "STOPPED" and victim.desiredStatus == "STOPPED"
    assert victim.stopCode == "EssentialContainerExited"
    s = sim.service()
    assert primary_of(s).failedTasks == 1
    assert any(victim.short_id in e.message and "web exit 137" in e.message for e in s.events)
    # launch backoff: no replacement in the same second ...
    sim.reconcile(0)
    assert len(sim.tasks()) == 2
    # ... one after it
    docs = sim.reconcile(2)
    tasks = sim.tasks()
    assert len(tasks) == 3 and victim.taskId not in {t.taskId for t in tasks}
    assert all(t.nodeId for t in tasks)
    assert docs  # the replacement's node got a new document
    assert victim.taskId not in {dt.taskId for d in sim.docs.values() for dt in d.tasks}


def test_node_lost_stops_its_tasks_and_replaces_them_elsewhere(sim):
    sim.apply(taskdef(), service())
    running_everywhere(sim)
    on_n1 = [t for t in sim.tasks() if t.nodeId == "n1"]
    assert len(on_n1) == 1
    sim.node_offline("n1")
    assert not sim.state.nodes[(CLUSTER, "n1")].connected
    sim.reconcile(1)
    assert on_n1[0].active  # not yet: the node may come back
    sim.clock.advance(LOST)
    sim.agents("n2", "n3")  # the others keep reporting (heartbeats)
    sim.reconcile(0)
    lost = on_n1[0]
    assert lost.lastStatus == "STOPPED" and lost.stopCode == "ServiceSchedulerInitiated"
    assert "n1" in lost.stoppedReason and "lost" in lost.stoppedReason
    tasks = sim.tasks()
    assert len(tasks) == 3 and all(t.nodeId in ("n2", "n3") for t in tasks)
    assert Counter(t.nodeId for t in tasks) in ({"n2": 2, "n3": 1}, {"n2": 1, "n3": 2})
    assert sim.docs["n1"].tasks == []  # its document is emptied too
    assert sim.state.nodes[(CLUSTER, "n2")].connected and sim.state.nodes[(CLUSTER, "n3")].connected


def test_heartbeat_timeout_disconnects_a_silent_node(sim):
    sim.apply(taskdef(), service())
    running_everywhere(sim)
    sim.clock.advance(LOST + 1)
    sim.agents("n2", "n3")
    sim.reconcile(0)
    assert not sim.state.nodes[(CLUSTER, "n1")].connected
    sim.clock.advance(LOST)
    sim.agents("n2", "n3")
    sim.reconcile(0)
    assert all(t.nodeId != "n1" for t in sim.tasks()) and len(sim.tasks()) == 3


def test_heartbeat_timeout_follows_the_agents_announced_status_interval(sim):
    """An agent that snapshots every 5 s is declared disconnected after 3 missed (15 s), not 6 s."""
    sim.node_online("n1", statusInterval=5.0)
    sim.reconcile(0)
    sim.clock.advance(12)
    sim.reconcile(0)
    assert sim.state.nodes[(CLUSTER, "n1")].connected
    sim.clock.advance(4)
    sim.reconcile(0)
    assert not sim.state.nodes[(CLUSTER, "n1")].connected


def test_a_silent_node_that_beats_is_lost_three_seconds_after_its_last_beat(sim):
    """Issue 16: light heartbeats (every 1.25 s) make a silent host (link cut: no Will) lost ~3 s
    after its last beat, not after 3 missed 5 s snapshots; a beat of another boot proves nothing."""
    sim.ctl.node_lost_seconds = 3.0  # the orchestrator's default (this file's LOST is longer)
    for n in ("n1", "n2", "n3"):
        sim.node_online(n, statusInterval=5.0, heartbeatInterval=1.25)
    sim.apply(taskdef(), service(desired=3))
    sim.reconcile(0)
    sim.agents("n1", "n2", "n3")
    for _ in range(4):  # beats keep every node alive past the 3 s of one timeout
        sim.clock.advance(1.25)
        for n in ("n1", "n2", "n3"):
            sim.ctl.on_heartbeat(CLUSTER, n, sim.boot[n])
        sim.ctl.on_broker_heard(sim.clock())
        sim.reconcile(0)
    assert all(n.connected for n in sim.state.nodes.values())
    for _ in range(3):  # n1 falls silent (its beats from an old boot do not count)
        sim.clock.advance(1.0)
        sim.ctl.on_heartbeat(CLUSTER, "n1", "boot-old")
        for n in ("n2", "n3"):
            sim.ctl.on_heartbeat(CLUSTER, n, sim.boot[n])
        sim.ctl.on_broker_heard(sim.clock())
        sim.reconcile(0)
    assert sim.state.nodes[(CLUSTER, "n1")].connected  # 3.0 s of silence: not more than the timeout yet
    sim.clock.advance(0.2)
    sim.ctl.on_broker_heard(sim.clock())
    sim.reconcile(0)
    assert not sim.state.nodes[(CLUSTER, "n1")].connected
    assert all(t.nodeId != "n1" for t in sim.tasks()) and len(sim.tasks()) == 3


def test_a_stale_offline_will_is_ignored(sim):
    sim.node_online("n1", boot="boot-2")  # the agent restarted
    sim.ctl.on_presence(CLUSTER, "n1", Presence(nodeId="n1", bootId="boot-n1", state="offline"))  # old Will
    assert sim.state.nodes[(CLUSTER, "n1")].connected


def test_unplaceable_tasks_wait_with_a_reason_and_an_event(sim):
    sim.apply(taskdef(cmem=3000), service(desired=4))
    sim.reconcile()
    tasks = sim.tasks()
    placed = [t for t in tasks if t.nodeId]
    waiting = [t for t in tasks if not t.nodeId]
    assert len(placed) == 3 and len(waiting) == 1
    assert waiting[0].lastStatus == "PENDING" and "memory" in waiting[0].pendingReason
    assert any("unable to place a task" in e.message for e in sim.service().events)
    sim.node_online("n4")
    sim.reconcile(1)
    assert waiting[0].nodeId == "n4"


def test_rolling_deployment_through_the_controller(sim):
    sim.apply(taskdef(), service(desired=3))
    running_everywhere(sim)
    old = {t.taskId for t in sim.tasks()}
    sim.apply(taskdef(image="busybox:2"))  # the service follows the family
    max_seen = 0
    for _ in range(15):
        sim.reconcile(1)
        live = [t for t in sim.tasks() if t.desiredStatus == "RUNNING"]
        max_seen = max(max_seen, len(live))
        healthy = [t for t in live if t.lastStatus == "RUNNING"]
        assert len(healthy) >= 3  # minimumHealthyPercent 100
        sim.agents()
        if sim.service().steadyState and not sim.reconcile(0):
            break
    s = sim.service()
    p = primary_of(s)
    assert p.taskDefinition == "web:2" and p.rolloutState == "COMPLETED"
    tasks = sim.tasks()
    assert len(tasks) == 3 and all(t.taskDefinition == "web:2" for t in tasks) and not old & {t.taskId for t in tasks}
    assert max_seen <= 6  # maximumPercent 200
    assert all(d.status == "INACTIVE" for d in s.deployments if d is not p)


def test_scale_in_through_the_controller(sim):
    sim.apply(taskdef(), service(desired=6))
    running_everywhere(sim)
    sim.ops.scale(CLUSTER, "web", 3)
    sim.reconcile(1)
    stopping = [t for t in sim.state.service_tasks(CLUSTER, "web") if t.desiredStatus == "STOPPED"]
    assert len(stopping) == 3 and all("Scaling activity" in t.stoppedReason for t in stopping)
    sim.agents()
    sim.reconcile(1)
    tasks = sim.tasks()
    assert len(tasks) == 3 and Counter(t.nodeId for t in tasks) == {"n1": 1, "n2": 1, "n3": 1}
    assert all(t.lastStatus == "STOPPED" for t in stopping)


def test_drain_moves_tasks_off_the_node(sim):
    sim.apply(taskdef(), service(desired=3))
    running_everywhere(sim)
    sim.ops.set_node_status(CLUSTER, "n3", "DRAINING")
    running_everywhere(sim)
    tasks = sim.tasks()
    assert len(tasks) == 3 and all(t.nodeId in ("n1", "n2") for t in tasks)
    stopped = [t for t in sim.tasks(active=False) if t.nodeId == "n3"]
    assert stopped and all("drain" in t.stoppedReason for t in stopped)


def test_daemon_service_runs_one_task_per_node(sim):
    sim.apply(taskdef("agent"), service("agent", td="agent", schedulingStrategy="DAEMON",
                                       deploymentConfiguration={"maximumPercent": 100, "minimumHealthyPercent": 0}))
    sim.reconcile()
    tasks = sim.tasks("agent")
    assert Counter(t.nodeId for t in tasks) == {"n1": 1, "n2": 1, "n3": 1}
    sim.node_online("n4")
    sim.reconcile(1)
    assert Counter(t.nodeId for t in sim.tasks("agent"))["n4"] == 1


def test_fargate_service_lands_only_on_fargate_nodes(sim):
    sim.node_online("f1", capacityProviders=["FARGATE"])
    sim.apply(taskdef(requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512"),
              service(desired=2, launchType="FARGATE"))
    sim.reconcile()
    assert [t.nodeId for t in sim.tasks()] == ["f1", "f1"]


def test_apply_errors_change_nothing(sim):
    with pytest.raises(UserError) as exc:
        sim.apply(taskdef(), service(td="nope"))
    assert "does not exist" in exc.value.errors[0].message
    assert sim.state.services == {} and sim.state.taskdefs == {}


def test_restart_republishes_with_a_new_epoch_and_keeps_tasks(monkeypatch, store_at):
    store = open_store(store_at, exclusive=False)
    first = Sim(monkeypatch, State(store), epoch=store.next_epoch())
    for n in ("n1", "n2", "n3"):
        first.node_online(n)
    first.apply(taskdef(), service())
    running_everywhere(first)
    ids = {t.taskId for t in first.tasks()}
    store.close()

    store = open_store(store_at, exclusive=False)
    second = Sim(monkeypatch, State(store), epoch=store.next_epoch())
    second.clock.t = first.clock.t + 1
    second.ctl.started_at = second.clock.t
    docs = second.reconcile(0)
    assert sorted(d.nodeId for d in docs) == ["n1", "n2", "n3"] and all(d.epoch == 2 for d in docs)
    assert {dt.taskId for d in docs for dt in d.tasks} == ids
    assert {t.taskId for t in second.tasks()} == ids  # no duplicates started after the restart
    store.close()


def test_restart_grace_then_lost_nodes(monkeypatch, store_at):
    store = open_store(store_at, exclusive=False)
    first = Sim(monkeypatch, State(store), epoch=1)
    for n in ("n1", "n2"):
        first.node_online(n)
    first.apply(taskdef(), service(desired=2))
    running_everywhere(first)
    store.close()
    store = open_store(store_at, exclusive=False)
    second = Sim(monkeypatch, State(store), epoch=2)
    second.ctl.started_at = second.clock.t
    second.reconcile(LOST - 1)  # within the grace after start: nobody is lost yet
    assert len(second.tasks()) == 2
    second.boot = {"n2": "boot-n2"}
    second.node_online("n2")
    second.clock.advance(2)
    second.agents("n2")
    second.reconcile(0)  # n1 never came back
    tasks = second.tasks()
    assert len(tasks) == 2 and all(t.nodeId == "n2" for t in tasks)
    store.close()


# ---- bugs -------------------------------------------------------------------------------------------
def test_task_missing_from_a_snapshot_counts_as_a_failure(sim):
    sim.apply(taskdef(), service(desired=1))
    sim.reconcile()
    (t,) = sim.tasks()
    sim.status(t.nodeId, [], kind="snapshot")  # the agent applied the document but has no such task
    assert t.lastStatus == "STOPPED" and t.stopCode == "TaskFailedToStart"
    assert primary_of(sim.service()).failedTasks == 1


def test_bad_task_definition_expression_is_rejected_at_apply(sim):
    """Apply refuses it (nothing changes); what the planners do with one that reaches state anyway
    is tested directly in test_scheduler.py and test_daemon_planner.py."""
    sim.apply(taskdef(), service(desired=2))
    with pytest.raises(UserError) as exc:
        sim.apply(taskdef("bad", placementConstraints=[{"type": "memberOf", "expression": "attribute:zone =="}]),
                  service("bad", td="bad", desired=1))
    assert "placementConstraints" in exc.value.errors[0].field
    assert ("default", "bad") not in sim.state.services and "bad" not in sim.state.taskdefs
    sim.reconcile()
    assert len([t for t in sim.tasks("web") if t.nodeId]) == 2


def test_placement_change_moves_tasks(sim):
    sim.node_online("n1", **{"attributes": {"zone": "a"}})
    sim.node_online("n2", **{"attributes": {"zone": "b"}})
    sim.node_online("n3", **{"attributes": {"zone": "b"}})
    sim.apply(taskdef(), service(desired=3))
    running_everywhere(sim)
    sim.apply(taskdef(), service(desired=3, placementConstraints=[{"type": "memberOf",
                                                                   "expression": "attribute:zone == b"}]))
    running_everywhere(sim, steps=20)
    assert all(t.nodeId in ("n2", "n3") for t in sim.tasks())


# ---- proof time: the orchestrator's clock, kept across a restart ----------------------------------
PROOF = {"minimumHealthyTimeSeconds": 10, "bakeTimeSeconds": 5}


def test_proof_clock_is_the_orchestrators_and_survives_a_restart(monkeypatch, store_at):
    store = open_store(store_at, exclusive=False)
    first = Sim(monkeypatch, State(store), epoch=1)
    for n in ("n1", "n2", "n3"):
        first.node_online(n)
    first.apply(taskdef(), service(deploymentConfiguration=PROOF))
    first.reconcile()
    first.clock.advance(1)
    t_report = first.clock.t
    first.agents()
    assert all(t.healthySince == t_report for t in first.tasks())  # when the report arrived
    first.reconcile(9)  # healthy for 9 s: not yet proven
    s = first.service()
    assert primary_of(s).rolloutState == "IN_PROGRESS" and primary_of(s).provenCount == 0 and not s.steadyState
    store.close()

    store = open_store(store_at, exclusive=False)
    second = Sim(monkeypatch, State(store), epoch=2)
    second.clock.t = first.clock.t + 1  # 10 s after the first healthy report
    second.ctl.started_at = second.clock.t
    second.docs = first.docs
    second.boot = first.boot
    assert all(t.healthySince == t_report for t in second.tasks())  # stored: the restart neither resets nor skips it
    second.agents()  # the same healthy reports again
    assert all(t.healthySince == t_report for t in second.tasks())
    second.reconcile(0)
    p = primary_of(second.service())
    assert p.provenCount == 3 and p.bakeStartedAt == second.clock.t and p.rolloutState == "IN_PROGRESS"
    second.reconcile(5)
    s = second.service()
    assert primary_of(s).rolloutState == "COMPLETED" and s.steadyState
    assert s.events[0].message.endswith("has reached a steady state.")
    store.close()


def test_a_task_that_exits_resets_its_proof_and_counts_as_a_failure(sim):
    sim.apply(taskdef(), service(desired=1, deploymentConfiguration=PROOF))
    sim.reconcile()
    sim.agents()
    task = sim.tasks()[0]
    assert task.healthySince == sim.clock.t
    sim.clock.advance(3)  # exits 3 s after RUNNING
    sim.status(task.nodeId, [TaskReport(taskId=task.taskId, lastStatus="STOPPED", stoppedAt=sim.clock.t,
                                        containers=[ContainerReport(name="web", lastStatus="STOPPED", exitCode=1)])])
    stopped = sim.state.tasks[task.taskId]
    assert stopped.lastStatus == "STOPPED" and stopped.healthySince is None
    p = primary_of(sim.service())
    assert p.failedTasks == 1 and p.rolloutState == "IN_PROGRESS"


def test_delete_documents_is_all_or_nothing(sim):
    """A later document that cannot be deleted (a busy cluster: 409) leaves the earlier ones alone."""
    sim.apply(taskdef(), service())
    docs = [{"source": "a.yaml", "document": service()},
            {"source": "b.yaml", "document": {"apiVersion": "dockyard/v1", "kind": "Cluster",
                                              "metadata": {"name": CLUSTER}, "spec": {}}}]
    with pytest.raises(UserError) as exc:
        sim.ops.delete_documents(docs, CLUSTER)
    assert exc.value.status == 409
    assert sim.service().status == "ACTIVE" and all(t.desiredStatus == "RUNNING" for t in sim.tasks())
    out = sim.ops.delete_documents(docs[:1] + [{"source": "c.yaml", "document": service("nope")}], CLUSTER)
    assert [r["action"] for r in out] == ["deleted", "not found"] and sim.service().status == "DRAINING"


def test_the_full_pass_plans_from_the_kept_views_and_rebuilds_them_every_minute(monkeypatch):
    """Every 5 s a full pass plans every service; it rebuilds the task views (~8 us a task) only
    every FRESH_VIEWS_SECONDS (the backstop for the views kept per service)."""
    from orchestrator import controller as controller_mod

    sim = Sim(monkeypatch)
    sim.node_online("n1")
    sim.apply(taskdef(), service(desired=3))
    for _ in range(3):
        sim.reconcile(1.0)
        sim.agents()
    built: list[str] = []
    real = sim.ctl._view
    monkeypatch.setattr(sim.ctl, "_view", lambda t: (built.append(t.taskId), real(t))[1])
    planned: list[bool] = []
    real_plan = sim.ctl.reconcile_service
    monkeypatch.setattr(sim.ctl, "reconcile_service",
                        lambda s, now, fresh=False: (planned.append(fresh), real_plan(s, now, fresh))[1])
    for _ in range(int(controller_mod.FRESH_VIEWS_SECONDS) + 1):  # a minute, the node reporting every second
        sim.agents()
        sim.reconcile(1.0)
    assert len(planned) >= controller_mod.FRESH_VIEWS_SECONDS / controller_mod.FULL_PASS_SECONDS  # every 5 s
    assert planned.count(True) == 1 and len(built) == 3  # rebuilt once: the views were kept
    assert len(sim.tasks()) == 3
