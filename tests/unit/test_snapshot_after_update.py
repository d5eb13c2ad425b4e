"""A snapshot that carries just what the node's last update did is not parsed again
(orchestrator.bus: the update is kept, parsed, until the node's next status): the controller
still gets the snapshot (its kind, seq, ts and usage), with everything a snapshot decides."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_usage_and_sd import C, World, _svc, _td

from dockyard.wire import ContainerReport, StatusDoc, TaskReport, TaskUsage, node_topic
from orchestrator import bus as bus_module


@pytest.fixture
def world() -> World:
    w = World()
    w.online("n1")
    w.apply(_td("web"), _svc("web", 2))
    for _ in range(3):
        w.reconcile()
    return w


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kinds of the status messages StatusDoc.model_validate_json parsed."""
    seen: list[str] = []
    orig = StatusDoc.model_validate_json

    def counting(raw, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        doc = orig(raw, *a, **k)
        seen.append(doc.kind)
        return doc

    monkeypatch.setattr(StatusDoc, "model_validate_json", counting)
    return seen


def status(w: World, kind: str, task_ids: list[str], usage: list[TaskUsage] | None = None,
           status: str = "RUNNING") -> bytes:
    w.seq += 1
    doc = w.docs["n1"]
    reports = [TaskReport(taskId=tid, lastStatus=status, startedAt=1_700_000_000.0,  # type: ignore[arg-type]
                          containers=[ContainerReport(name="web", lastStatus=status, dockerId=f"d-{tid}")])  # type: ignore[arg-type]
               for tid in task_ids]
    st_ = StatusDoc(nodeId="n1", bootId="b-n1", seq=w.seq, kind=kind, observedEpoch=doc.epoch,  # type: ignore[arg-type]
                    observedGeneration=doc.generation, tasks=reports, usage=usage, ts=w.t + w.seq / 1000)
    raw = st_.model_dump_json().encode()
    w.bus.handle(node_topic(C, "n1", "status"), raw)
    return raw


def test_a_snapshot_repeating_the_update_is_not_parsed_and_still_decides_as_a_snapshot(world: World,
                                                                                      parses: list[str]):
    w = world
    first, second = sorted(w.docs["n1"].tasks, key=lambda t: t.taskId)
    status(w, "update", [first.taskId, second.taskId])
    assert all(w.state.tasks[t.taskId].lastStatus == "RUNNING" for t in (first, second))
    # The node then loses the second task behind the agent's back: its update shows the first only,
    # and the snapshot after it repeats that update (so it is not parsed).
    status(w, "update", [first.taskId])
    w.t += 1
    usage = [TaskUsage(taskId=first.taskId, cpu=12.5, memory=1 << 20)]
    status(w, "snapshot", [first.taskId], usage=usage)
    assert parses == ["update", "update"]
    # What only a snapshot decides: the task the node no longer shows is STOPPED ...
    gone = w.state.tasks.get(second.taskId) or w.state.store.task(second.taskId)
    assert gone is not None and gone.lastStatus == "STOPPED" and "Task not found on node n1" in (gone.stoppedReason or "")
    # ... the snapshot's own usage samples are recorded, and it is the node's last snapshot:
    # an identical one next takes the repeat path (seq and ts aside).
    assert w.book.by_node[(C, "n1")][1][first.taskId].cpu == 12.5
    assert w.state.nodes[(C, "n1")].lastSeenAt == w.t
    w.t += 1
    status(w, "snapshot", [first.taskId], usage=usage)
    assert parses == ["update", "update"] and w.state.nodes[(C, "n1")].lastSeenAt == w.t


def test_a_snapshot_that_differs_from_the_update_is_parsed(world: World, parses: list[str]):
    w = world
    ids = sorted(t.taskId for t in w.docs["n1"].tasks)
    status(w, "update", ids, status="PENDING")
    status(w, "snapshot", ids)  # RUNNING now: not what the update said
    assert parses == ["update", "snapshot"]
    assert all(w.state.tasks[i].lastStatus == "RUNNING" for i in ids)
    status(w, "snapshot", ids[:1])  # after a snapshot, nothing is kept: parsed
    assert parses == ["update", "snapshot", "snapshot"]


def test_a_replayed_snapshot_is_still_dropped(world: World, parses: list[str]):
    w = world
    ids = sorted(t.taskId for t in w.docs["n1"].tasks)
    status(w, "update", ids)
    w.seq -= 1  # the same seq as the update's: a replay, though its content matches
    status(w, "snapshot", ids)
    assert parses == ["update"]
    assert w.bus._seq[(C, "n1")][1] == w.seq  # the update's: the snapshot was not taken


reports_ = st.lists(st.builds(
    TaskReport, taskId=st.text("abcdef0123456789", min_size=1, max_size=8),
    lastStatus=st.sampled_from(["PENDING", "RUNNING", "STOPPED"]),
    startedAt=st.one_of(st.none(), st.floats(0, 2e9)),
    stoppedReason=st.one_of(st.none(), st.text(max_size=20)),
    containers=st.lists(st.builds(ContainerReport, name=st.text(min_size=1, max_size=6),
                                  exitCode=st.one_of(st.none(), st.integers(-1, 255))), max_size=2)), max_size=4)


@settings(max_examples=150, deadline=None)
@given(reports=reports_, seq=st.integers(1, 10**12), ts=st.floats(0, 2e9),
       usage=st.one_of(st.none(), st.lists(st.builds(TaskUsage, taskId=st.text("abc", min_size=1, max_size=3),
                                                     cpu=st.floats(0, 4096), memory=st.integers(0, 1 << 40)),
                                           max_size=3)))
def test_what_stands_in_for_the_parse_equals_the_parse(reports, seq, ts, usage):
    update = StatusDoc(nodeId="n/1", bootId="b\"1", seq=seq, kind="update", observedEpoch=2, observedGeneration=7,
                       tasks=reports, ts=ts)
    snap = update.model_copy(update={"kind": "snapshot", "seq": seq + 1, "ts": ts + 2.5, "usage": usage})
    raw_update, raw = update.model_dump_json().encode(), snap.model_dump_json().encode()
    key, samples = bus_module.snapshot_key(raw)
    assert key == bus_module.snapshot_key(raw_update)[0].replace(b'"kind":"update"', b'"kind":"snapshot"', 1)
    assert bus_module._as_snapshot(StatusDoc.model_validate_json(raw_update), raw, samples) == \
        StatusDoc.model_validate_json(raw)

