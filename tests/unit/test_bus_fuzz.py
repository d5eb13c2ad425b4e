"""Hostile MQTT payloads through the orchestrator's bus (orchestrator.bus.Bus.handle, with a real controller):
malformed, truncated, oversized, deeply nested and wrong-typed documents on status and presence topics,
replayed and out-of-order statuses, statuses from unknown nodes. Each is logged and dropped (never the
"error handling message" path, which means a bug), the managed node and its task are untouched, and nothing
is remembered for a node that never registered (memory stays bounded)."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_manifest_fuzz import paths, values
from test_usage_and_sd import C, World, _svc, _td

from dockyard.wire import Presence, StatusDoc, TaskReport, TaskUsage, node_topic
from orchestrator import bus as bus_module


class StrictLog:
    """The bus's log: warnings recorded, ``exception`` (the path of an unexpected error: a bug) fails the test."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, event: str, **_kw) -> None:  # noqa: ANN003
        self.warnings.append(event)

    def info(self, *_a, **_kw) -> None:  # noqa: ANN002, ANN003
        pass

    debug = info

    def exception(self, *a, **k) -> None:  # noqa: ANN002, ANN003
        raise AssertionError(f"the bus hit an unexpected error: {a} {k}")


def make_world() -> World:
    w = World()
    w.online("n1")
    w.apply(_td("web"), _svc("web", 1))
    for _ in range(3):
        w.reconcile()
    w.snapshot("n1", None)
    w.reconcile()
    w.bus.log = StrictLog()  # type: ignore[assignment]
    return w


@pytest.fixture
def world() -> World:
    return make_world()


def task(w: World):  # noqa: ANN201
    [t] = [t for t in w.state.tasks.values() if t.desiredStatus == "RUNNING"]
    return t


def valid_status(w: World, seq: int, health: str = "UNKNOWN") -> dict:
    t = task(w)
    n = w.state.nodes[(C, "n1")]
    return json.loads(StatusDoc(nodeId="n1", bootId="b-n1", seq=seq, kind="snapshot", observedEpoch=n.observedEpoch,
                                observedGeneration=n.observedGeneration,
                                tasks=[TaskReport(taskId=t.taskId, lastStatus="RUNNING", healthStatus=health)],
                                usage=[TaskUsage(taskId=t.taskId, cpu=1.0, memory=1)], ts=1.0).model_dump_json())


STATUS = json.loads(StatusDoc(nodeId="n1", bootId="b-n1", seq=10**6, kind="snapshot", observedEpoch=1,
                              observedGeneration=1, tasks=[TaskReport(taskId="t" * 32, lastStatus="RUNNING")],
                              usage=[TaskUsage(taskId="t" * 32, cpu=1.0, memory=1)], ts=1.0).model_dump_json())
PRESENCE = json.loads(Presence(nodeId="n1", bootId="b-n1", state="online", cluster=C, ts=1.0).model_dump_json())


@st.composite
def hostile(draw, base: dict):  # noqa: ANN001, ANN201
    """``base`` (a valid document) made invalid: values replaced by anything, cut short, nested deep, or bytes."""
    how = draw(st.integers(0, 4))
    if how == 0:
        return draw(st.binary(max_size=64))
    if how == 1:
        raw = json.dumps(base).encode()
        return raw[:draw(st.integers(1, len(raw) - 1))]
    if how == 2:
        n = draw(st.integers(50, 5000))
        return (b'{"nodeId": "n1", "bootId": "b-n1", "seq": 9, "kind": "snapshot", "tasks": ' + b"[" * n + b"]" * n
                + b"}")
    doc = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from([p for p in paths(doc) if p]))
        parent = doc
        for k in where[:-1]:
            parent = parent[k]
        parent[where[-1]] = draw(values)
    return json.dumps(doc).encode()


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_hostile_status_and_presence_payloads_are_dropped_and_change_nothing_they_should_not(world, data):
    w = world  # one world for every example: the bases below are constants, so the draws replay exactly
    registered = set(w.state.nodes)
    for _ in range(5):
        leaf = data.draw(st.sampled_from(["status", "presence"]))
        node = data.draw(st.sampled_from(["n1", "ghost", "x" * 200]))
        payload = data.draw(hostile(STATUS if leaf == "status" else PRESENCE))
        try:
            valid = (StatusDoc if leaf == "status" else Presence).model_validate_json(payload)
        except ValueError:
            valid = None
        w.bus.handle(node_topic(C, node, leaf), payload)
        if leaf == "presence" and valid is not None:
            registered.add((C, node))  # a well-formed presence registers its node: by design
    assert set(w.state.nodes) <= registered | {(C, n) for n in ("ghost", "x" * 200)}
    assert set(w.bus._last_snapshot) | set(w.bus._seq) | set(w.book.by_node) <= set(w.state.nodes)
    # (A mangled status may still be a valid one, e.g. with no tasks: what it then changes is the controller's
    # business, tested elsewhere; the invariants here are about what the bus lets through and keeps.)
    assert set(w.bus.log.warnings) <= {"dropping malformed message", "dropping a replayed or out-of-order status"}


def test_statuses_from_unknown_nodes_leave_nothing_behind(world):
    # Found: a snapshot from a node that never registered was remembered (the repeat check's copy and its usage
    # samples), so a flood of made-up node ids grew the orchestrator's memory without bound.
    for i in range(500):
        st_ = StatusDoc(nodeId=f"ghost{i}", bootId="b", seq=1, kind="snapshot",
                        usage=[TaskUsage(taskId="t", cpu=1.0, memory=1)])
        world.bus.handle(node_topic(C, f"ghost{i}", "status"), st_.model_dump_json().encode())
    assert set(world.bus._last_snapshot) == {(C, "n1")} and set(world.book.by_node) <= {(C, "n1")}
    assert set(world.bus._seq) == {(C, "n1")} and (C, "ghost1") not in world.state.nodes


def test_an_oversized_payload_is_dropped_unread(world, monkeypatch):
    class Unread:
        @staticmethod
        def model_validate_json(_raw):  # noqa: ANN001, ANN205
            raise AssertionError("an oversized payload was parsed")
    monkeypatch.setattr(bus_module, "StatusDoc", Unread)
    monkeypatch.setattr(bus_module, "Presence", Unread)
    big = b'{"nodeId": "n1", "pad": "' + b"x" * (10 << 20) + b'"}'
    for leaf in ("status", "presence"):
        world.bus.handle(node_topic(C, "n1", leaf), big)
    assert world.state.nodes[(C, "n1")].connected


def test_replayed_and_out_of_order_statuses_are_dropped(world):
    # Found: statuses were applied whatever their seq, so a replayed old snapshot could undo a newer one.
    t = task(world)
    world.bus.handle(node_topic(C, "n1", "status"), json.dumps(valid_status(world, 50, "HEALTHY")).encode())
    assert task(world).healthStatus == "HEALTHY"
    for seq in (50, 49, 3):  # a replay of the same message, then older ones
        world.bus.handle(node_topic(C, "n1", "status"), json.dumps(valid_status(world, seq, "UNHEALTHY")).encode())
    assert task(world).healthStatus == "HEALTHY" and task(world).taskId == t.taskId
    # A new boot of the agent starts its seq again.
    new_boot = {**valid_status(world, 1, "UNHEALTHY"), "bootId": "b-n1-2"}
    world.bus.handle(node_topic(C, "n1", "status"), json.dumps(new_boot).encode())
    assert task(world).healthStatus == "UNHEALTHY"


# ---- the agent's side: desired documents -------------------------------------------------------------------
def agent_with(doc):  # noqa: ANN001, ANN201
    """Just what agent.main.Agent.on_desired uses: its node state, config, log, reporter and wake event."""
    from types import SimpleNamespace

    from agent.state import NodeState
    from dockyard import log as dlog

    acks: list[set] = []

    async def ack(ids):  # noqa: ANN001, ANN202
        acks.append(ids)
    return SimpleNamespace(state=NodeState("n1", dlog.get("test"), doc=doc), node_id="n1",
                           cfg=SimpleNamespace(cluster=C), log=StrictLog(), lb=None, high_water=None,
                           _save_high_water=lambda _version: None,
                           reporter=SimpleNamespace(ack=ack), wake=__import__("asyncio").Event()), acks


APPLIED = json.loads(json.dumps({
    "cluster": C, "nodeId": "n1", "epoch": 1, "generation": 1, "publishedAt": 1.0, "tasks": [{
        "taskId": "t" * 32, "family": "web", "revision": 1, "taskDefinition": {
            "family": "web", "containerDefinitions": [{"name": "web", "image": "busybox", "memory": 16}]}}]}))
NEWER = {**APPLIED, "generation": 2, "tasks": [*APPLIED["tasks"], {**APPLIED["tasks"][0], "taskId": "u" * 32}]}


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(payload=hostile(NEWER))
async def test_an_agent_given_a_malformed_desired_document_keeps_the_one_it_applied(payload):
    from agent.main import Agent
    from dockyard.wire import DesiredDoc

    applied = DesiredDoc.model_validate(APPLIED)
    agent, acks = agent_with(applied)
    await Agent.on_desired(agent, payload)  # type: ignore[arg-type]
    try:
        DesiredDoc.model_validate_json(payload)
        valid = True
    except ValueError:
        valid = False
    if agent.state.doc is applied:  # kept: its tasks, so its containers, stay; nothing is acknowledged
        assert not acks
        return
    if valid:
        return
    # Not a valid document, yet applied: only as agent.session.parse_desired does by design, from a valid head
    # whose tasks already known keep the definitions validated before (their revisions are immutable).
    from dockyard.wire import DesiredDocHead
    head = DesiredDocHead.model_validate_json(payload)
    assert [t.taskId for t in agent.state.doc.tasks] == [t.taskId for t in head.tasks]
    before = {t.taskId: t.taskDefinition for t in applied.tasks}
    assert all(t.taskDefinition is before[t.taskId] for t in agent.state.doc.tasks if t.taskId in before)
