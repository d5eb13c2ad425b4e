"""The agent's shell parts without a broker or dockerd: the reporter's one publish path, the
executor over the hollow runtime, and the pure desired-document rules in agent.diff."""
from __future__ import annotations

import asyncio
import json

from agent import diff
from agent.executor import Executor
from agent.hollow import HollowRuntime
from agent.reporter import Reporter
from agent.runtime import L_NODE, L_TASK, ActualContainer
from agent.state import NodeState
from dockyard import log
from dockyard.ecs import TaskDefinitionSpec
from dockyard.wire import DesiredDoc, DesiredDocHead, DesiredTask

NODE, CLUSTER = "n1", "c1"


def task(tid: str, status: str = "RUNNING", launch: str = "EC2") -> DesiredTask:
    td = TaskDefinitionSpec.model_validate({"family": "fam", "containerDefinitions": [
        {"name": "app", "image": "img:1", "memory": 32}]})
    return DesiredTask(taskId=tid, family="fam", revision=1, desiredStatus=status, taskDefinition=td, launchType=launch)


class FakeClient:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.sent.append(json.loads(payload))


class FakeSession:
    t_status = "dockyard/v1/c1/nodes/n1/status"

    def __init__(self) -> None:
        self.client = FakeClient()


def make(doc: DesiredDoc | None = None) -> tuple[NodeState, Reporter, FakeClient]:
    st = NodeState(NODE, log.get("test"), doc=doc)
    s = FakeSession()
    return st, Reporter(st, s, "boot", log.get("test")), s.client  # type: ignore[arg-type]


def test_reporter_snapshot_update_and_ack_share_one_path():
    async def go() -> None:
        t1, t2 = task("t1"), task("t2")
        st, rep, client = make(DesiredDoc(cluster=CLUSTER, nodeId=NODE, epoch=1, generation=1, tasks=[t1, t2]))
        await rep.publish("snapshot")
        await rep.publish("update")  # nothing changed: nothing sent
        await rep.ack(set())  # an acknowledgement is sent even when empty
        st.doc = DesiredDoc(cluster=CLUSTER, nodeId=NODE, epoch=1, generation=2, tasks=[t1, task("t2", "STOPPED")])
        await rep.ack({"t2"})
        await rep.publish("update")  # t2's change was sent by the ack
        kinds = [(m["kind"], m["seq"], m["observedGeneration"], [t["taskId"] for t in m["tasks"]]) for m in client.sent]
        assert kinds == [("snapshot", 1, 1, ["t1", "t2"]), ("update", 2, 1, []), ("update", 3, 2, ["t2"])]
        assert client.sent[-1]["tasks"][0]["lastStatus"] == "STOPPED"

    asyncio.run(go())


def running(tid: str) -> ActualContainer:
    return ActualContainer(id=f"c-{tid}", task_id=tid, container_name="app", node=NODE, state="running",
                           started_at=1.0)


def test_reporter_leaves_a_new_tasks_initial_report_out_of_acks_and_updates():
    """The acknowledgement and updates leave out a new task's initial report (PENDING, no
    container yet): its first update is its first change (RUNNING); if nothing happens, the
    next snapshot carries it."""
    async def go() -> None:
        st, rep, client = make(DesiredDoc(cluster=CLUSTER, nodeId=NODE, epoch=1, generation=1, tasks=[]))
        await rep.publish("snapshot")
        st.doc = DesiredDoc(cluster=CLUSTER, nodeId=NODE, epoch=1, generation=2,
                            tasks=[task("t1"), task("t2", "STOPPED"), task("t3")])
        await rep.ack({"t1", "t2", "t3"})  # t2's report (STOPPED) is news; t1's and t3's (PENDING) are not
        await rep.publish("update")  # the pass that starts t1 and t3: still nothing new
        st.actual = [running("t1")]
        await rep.publish("update")  # t1 runs: sent at once
        await rep.publish("snapshot")  # t3 is still pulling, say: the snapshot has it
        await rep.publish("update")
        sent = [(m["kind"], m["observedGeneration"], [(t["taskId"], t["lastStatus"]) for t in m["tasks"]])
                for m in client.sent]
        assert sent == [("snapshot", 1, []), ("update", 2, [("t2", "STOPPED")]), ("update", 2, [("t1", "RUNNING")]),
                        ("snapshot", 2, [("t1", "RUNNING"), ("t2", "STOPPED"), ("t3", "PENDING")])]
        assert client.sent[-1]["tasks"][2]["containers"][0]["lastStatus"] == "PENDING"
        st.actual = [running("t1"), running("t3")]
        await rep.publish("update")
        assert [(t["taskId"], t["lastStatus"]) for t in client.sent[-1]["tasks"]] == [("t3", "RUNNING")]

    asyncio.run(go())


def test_reporter_reuses_unchanged_reports_and_forgets_gone_tasks():
    t1 = task("t1")
    st, rep, _ = make(DesiredDoc(cluster=CLUSTER, nodeId=NODE, epoch=1, generation=1, tasks=[t1]))
    first = rep.reports()["t1"]
    assert rep.reports()["t1"] is first  # same inputs (by identity): the cached report
    st.finish("t1", diff.Finish(diff.FAILED_TO_START, "boom", "app"))
    again = rep.reports()["t1"]
    assert again is not first and again.report.stopCode == diff.FAILED_TO_START
    st.doc = DesiredDoc(cluster=CLUSTER, nodeId=NODE, epoch=1, generation=2, tasks=[])
    assert rep.reports() == {} and rep.reports({"t1"}) == {}


def test_executor_applies_a_plan_through_the_hollow_runtime():
    async def go() -> None:
        rt = HollowRuntime()
        st = NodeState(NODE, log.get("test"))
        woken: list[int] = []
        ex = Executor(rt, st, CLUSTER, lambda: woken.append(1), log.get("test"))
        fg = task("f1", launch="FARGATE")
        ex.apply(diff.plan([task("t1"), fg], [], NODE))
        await asyncio.gather(*ex.inflight.values())
        cs = await rt.list(NODE)
        assert sorted((c.task_id, c.state) for c in cs) == [("f1", "running"), ("t1", "running")]
        assert await rt.list_networks(NODE) == {"f1": rt.task_network(fg)}
        assert all(c.labels[L_NODE] == NODE and c.labels[L_TASK] == c.task_id for c in cs)
        assert woken and not ex.inflight
        # a refused start (unknown container) finishes the task; it is not retried
        ex.apply(diff.Plan(actions=[diff.Start("t9", "app", "nope")]))
        await asyncio.gather(*ex.inflight.values())
        assert st.finished["t9"].stop_code == diff.FAILED_TO_START
        assert st.finished["t9"].reason.startswith("CannotStartContainerError: ")

    asyncio.run(go())


def test_desired_document_acceptance_and_changed_tasks():
    def head(node: str = NODE, cluster: str = CLUSTER, epoch: int = 1, gen: int = 2) -> DesiredDocHead:
        return DesiredDocHead(cluster=cluster, nodeId=node, epoch=epoch, generation=gen)

    assert diff.rejects(head(), NODE, CLUSTER, None) is None
    assert diff.rejects(head(), NODE, CLUSTER, (1, 1)) is None
    assert diff.rejects(head(epoch=2, gen=0), NODE, CLUSTER, (1, 7)) is None  # a newer orchestrator
    assert diff.rejects(head(gen=1), NODE, CLUSTER, (1, 1)) == diff.STALE
    assert diff.rejects(head(epoch=0, gen=99), NODE, CLUSTER, (1, 1)) == diff.STALE
    assert diff.rejects(head(node="n2"), NODE, CLUSTER, None) == diff.OTHER_NODE
    assert diff.rejects(head(cluster="x"), NODE, CLUSTER, (1, 1)) == diff.OTHER_NODE
    a, b = task("a"), task("b")
    old = DesiredDoc(cluster=CLUSTER, nodeId=NODE, epoch=1, generation=1, tasks=[a, b])
    new = DesiredDoc(cluster=CLUSTER, nodeId=NODE, epoch=1, generation=2, tasks=[a, task("c")])
    assert diff.changed_task_ids(old, new) == {"b", "c"}
    assert diff.changed_task_ids(None, old) == {"a", "b"}


def test_only_the_docker_runtime_imports_aiodocker():
    """Docker specifics live behind the Runtime: a hollow agent process never loads aiodocker."""
    import subprocess
    import sys

    code = ("import sys, agent.main, agent.hollow; agent.main.make_agents(agent.main.AgentConfig(node_id='h', runtime='hollow'));"
            "raise SystemExit('aiodocker' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


async def test_a_failed_reconcile_pass_retries_without_another_wake(monkeypatch):
    """Issue 16 (dockerd killed and restarted): a pass that failed on the engine retries on its
    own after its backoff; before, nothing woke it until the 30 s re-list."""
    import asyncio

    from agent.main import Agent, AgentConfig

    rt = HollowRuntime()
    agent = Agent(AgentConfig(node_id="n1"), "n1", rt)
    calls: list[int] = []

    async def flaky_pass() -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise ConnectionError("Cannot connect to the Docker daemon")

    monkeypatch.setattr(agent, "reconcile_once", flaky_pass)
    monkeypatch.setattr("agent.main.Backoff.next", lambda self: 0.01)
    loop = asyncio.create_task(agent.reconcile_loop())
    agent.wake.set()  # one wake only (the event stream's failure)
    for _ in range(200):
        if len(calls) >= 3:
            break
        await asyncio.sleep(0.01)
    loop.cancel()
    assert len(calls) == 3, "the failed pass was not retried until the engine answered"
