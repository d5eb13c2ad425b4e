"""Fencing that cannot be poisoned (orchestrator.core.fencing), and the controller applying it: a node showing a
desired version the orchestrator did not publish is taken back with a higher epoch, kept in the store."""
from __future__ import annotations

from dockyard.wire import StatusDoc
from orchestrator.core.fencing import judge
from orchestrator.state import State
from orchestrator.store import open_store
from test_controller_sim import CLUSTER, Sim, service, taskdef


# ---- the pure verdict -----------------------------------------------------------------------------
def test_own_or_older_versions_are_fine():
    assert judge((3, 7), (3, 7), foreign=False, now=0, last_reassert_at=None).action == "ok"
    assert judge((2, 90), (3, 7), foreign=False, now=0, last_reassert_at=None).action == "ok"
    assert judge((3, 6), (3, 7), foreign=False, now=0, last_reassert_at=None).action == "ok"


def test_a_foreign_older_document_is_overwritten_without_raising_the_epoch():
    v = judge((1, 1), (3, 7), foreign=True, now=0, last_reassert_at=None)
    assert (v.action, v.epoch) == ("republish", 0)


def test_a_newer_version_raises_the_epoch_above_it():
    assert (judge((5000, 1), (1, 4), False, 0, None).action, judge((5000, 1), (1, 4), False, 0, None).epoch) \
        == ("reassert", 5001)
    # A generation of our own epoch that we never published: one above our epoch.
    v = judge((3, 9), (3, 7), foreign=True, now=0, last_reassert_at=None)
    assert (v.action, v.epoch) == ("reassert", 4)


def test_a_node_without_tasks_of_ours_is_not_taken_back():
    # Two orchestrators on one broker: the one with nothing for the node leaves it alone.
    assert judge((9, 3), (1, 1), foreign=True, now=0, last_reassert_at=None, has_tasks=False).action == "ok"
    assert judge((1, 0), (1, 1), foreign=True, now=0, last_reassert_at=None, has_tasks=False).action == "republish"


def test_a_fresh_store_takes_a_node_back_once_it_places_tasks_there(monkeypatch):
    sim = Sim(monkeypatch)
    sim.node_online("a")
    sim.reconcile()
    _forged_status(sim, 7, 30)  # the agent holds a document of an older store's epoch 7
    assert [d.epoch for d in sim.reconcile()] == []
    sim.apply(taskdef(), service(desired=1))
    (doc,) = sim.reconcile()
    assert doc.epoch == 1  # published, and ignored by the agent (older)
    assert not sim.ctl.on_status_repeat(CLUSTER, "a")  # the bus must hand the repeated snapshot over in full
    _forged_status(sim, 7, 30)  # the same snapshot again
    (doc,) = sim.reconcile()
    assert doc.epoch == 8 and len(doc.tasks) == 1


def test_beyond_the_window_is_refused_unless_the_window_is_larger():
    v = judge((10**12, 1), (2, 4), False, 0, None)
    assert v.action == "refuse" and "--epoch-window" in v.reason
    assert judge((10**12, 1), (2, 4), False, 0, None, window=10**13).action == "reassert"


def test_one_reassertion_per_cooldown():
    v = judge((50, 1), (40, 4), False, now=10.2, last_reassert_at=10.0, cooldown=1.0)
    assert (v.action, v.at) == ("later", 11.0)
    assert judge((50, 1), (40, 4), False, now=11.0, last_reassert_at=10.0, cooldown=1.0).action == "reassert"


# ---- the controller ---------------------------------------------------------------------------------
def _running(monkeypatch, state: State | None = None) -> Sim:
    sim = Sim(monkeypatch, state=state)
    sim.node_online("a")
    sim.apply(taskdef(), service(desired=2))
    sim.reconcile()
    sim.agents()
    sim.reconcile()
    assert len(sim.docs["a"].tasks) == 2
    return sim


def _forged_status(sim: Sim, epoch: int, generation: int) -> None:
    """Node a applied a forged document with no tasks: its snapshot shows that version and nothing running."""
    sim.seq += 1
    sim.ctl.on_status(CLUSTER, "a", StatusDoc(nodeId="a", bootId=sim.boot["a"], seq=sim.seq, kind="snapshot",
                                              observedEpoch=epoch, observedGeneration=generation, tasks=[]))


def test_a_node_fenced_by_a_forged_epoch_is_taken_back(monkeypatch, store_at):
    store = open_store(store_at, exclusive=False)  # SQLite and PostgreSQL
    sim = _running(monkeypatch, State(store))
    tasks = {t.taskId for t in sim.docs["a"].tasks}
    _forged_status(sim, 5000, 1)
    docs = sim.reconcile()
    assert [(d.nodeId, d.epoch) for d in docs] == [("a", 5001)]
    assert {t.taskId for t in docs[0].tasks} == tasks  # the same tasks again, nothing replaced
    assert sim.ctl.epoch == 5001
    # In the store, where epochs are made: the next incarnation starts above it.
    assert store.next_epoch() == 5002


def test_a_foreign_desired_document_is_overwritten_and_a_newer_one_reasserted(monkeypatch):
    sim = _running(monkeypatch)
    ours = sim.docs["a"]
    sim.ctl.on_desired_seen(CLUSTER, "a", (ours.epoch, ours.generation - 1), foreign=True)
    (doc,) = sim.reconcile()
    assert doc.epoch == ours.epoch and doc.generation > ours.generation
    sim.ctl.on_desired_seen(CLUSTER, "a", (ours.epoch, ours.generation), foreign=False)  # our own, retained
    assert sim.reconcile() == []
    sim.clock.advance(5)
    sim.ctl.on_desired_seen(CLUSTER, "a", (77, 1), foreign=False)  # a retained newer one found on subscribing
    (doc,) = sim.reconcile()
    assert doc.epoch == 78


def test_beyond_the_window_the_node_stays_fenced(monkeypatch):
    sim = _running(monkeypatch)
    _forged_status(sim, 10**9, 1)
    assert sim.reconcile() == []
    assert sim.ctl.epoch == 1


def test_a_second_forgery_within_the_cooldown_is_taken_back_after_it(monkeypatch):
    sim = _running(monkeypatch)
    _forged_status(sim, 100, 1)
    (doc,) = sim.reconcile()
    assert doc.epoch == 101
    _forged_status(sim, 200, 1)  # at once again: waits for the node's cooldown
    assert sim.reconcile() == []
    (doc,) = sim.reconcile(1.0)
    assert doc.epoch == 201
