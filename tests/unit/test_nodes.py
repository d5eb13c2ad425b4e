"""orchestrator.core.nodes: node liveness under broker outages and mass loss (pure, no I/O)."""
from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.nodes import (
    RECONNECT_WINDOW_MIN,
    BrokerView,
    MassLossPolicy,
    NodeLiveness,
    heartbeat_timeout,
    plan_nodes,
)

T0 = 1_700_000_000.0
LOST = 3.0
POLICY = MassLossPolicy(fraction=0.55, interval=30.0)
UP = BrokerView(connected=True, connected_since=T0)


def node(node_id: str, *, connected: bool = True, seen: float = T0 + 100, down_at: float | None = None,
         interval: float = 5.0, tasks: int = 1, cluster: str = "c") -> NodeLiveness:
    return NodeLiveness(cluster=cluster, node_id=node_id, connected=connected, last_seen_at=seen,
                        disconnected_at=down_at, status_interval=interval, active_tasks=tasks)


def offline(node_id: str, at: float, **kw) -> NodeLiveness:
    return node(node_id, connected=False, seen=at, down_at=at, **kw)


def lost_ids(plan) -> list[str]:
    return [x.node_id for x in plan.lost]


# ---- one node in trouble, the orchestrator connected: as before ---------------------------------
def test_a_node_offline_alone_is_lost_after_node_lost_seconds():
    nodes = [offline("n1", T0 + 100), node("n2", seen=T0 + 104), node("n3", seen=T0 + 104)]
    early = plan_nodes(nodes, T0 + 102.9, UP, LOST, POLICY)
    assert early.lost == () and early.wake_at == T0 + 103
    assert lost_ids(plan_nodes(nodes, T0 + 103, UP, LOST, POLICY)) == ["n1"]


def test_a_silent_node_times_out_after_three_missed_heartbeats_and_is_lost():
    nodes = [node("n1", seen=T0 + 100), node("n2", seen=T0 + 114), node("n3", seen=T0 + 114)]
    assert plan_nodes(nodes, T0 + 115, UP, LOST, POLICY).timed_out == ()
    plan = plan_nodes(nodes, T0 + 115.1, UP, LOST, POLICY)
    assert [(x.node_id, x.disconnected_at) for x in plan.timed_out] == [("n1", T0 + 100)]
    assert lost_ids(plan) == ["n1"]  # silent for 15 s > node_lost_seconds


def test_a_node_without_tasks_is_never_reported_lost():
    plan = plan_nodes([offline("n1", T0 + 100, tasks=0), node("n2", seen=T0 + 199)], T0 + 200, UP, LOST, POLICY)
    assert plan.lost == () and plan.holds == ()


def test_a_single_node_cluster_loses_its_node():
    assert lost_ids(plan_nodes([offline("n1", T0 + 100)], T0 + 103, UP, LOST, POLICY)) == ["n1"]


# ---- broker outage ------------------------------------------------------------------------------
def test_nothing_is_judged_while_the_orchestrator_is_disconnected():
    nodes = [offline("n1", T0 + 100), node("n2", seen=T0 + 100)]
    plan = plan_nodes(nodes, T0 + 1000, BrokerView(False, T0), LOST, POLICY, {"c": T0})
    assert plan.lost == () and plan.timed_out == () and plan.wake_at is None
    assert plan.last_release == {"c": T0}


def test_after_a_reconnect_every_node_gets_its_window():
    """The broker shut down at T0+100 (every Will published), came back; the orchestrator
    reconnected at R. Nobody is lost before R + the reconnect window."""
    r = T0 + 160
    session = BrokerView(True, r)
    nodes = [offline("n1", T0 + 100), node("n2", seen=T0 + 99), node("n3", seen=T0 + 99, tasks=2)]
    window = max(heartbeat_timeout(nodes[1], LOST), RECONNECT_WINDOW_MIN)
    before = plan_nodes(nodes, r + window - 0.1, session, LOST, MassLossPolicy(fraction=1.0))
    assert before.lost == () and before.timed_out == ()
    # n1 shows itself (its agent reconnected): no loss for anyone
    back = [replace(nodes[0], connected=True, last_seen_at=r + 9, disconnected_at=None), *nodes[1:]]
    assert plan_nodes(back, r + 9.5, session, LOST, POLICY).lost == ()
    # nobody showed up: silent nodes time out at R + heartbeat timeout, and only then are lost
    late = plan_nodes(nodes, r + window + 0.1, session, LOST, MassLossPolicy(fraction=1.0))
    assert {x.node_id for x in late.timed_out} == {"n2", "n3"}
    assert all(x.disconnected_at == r for x in late.timed_out)


def test_a_half_open_session_times_nobody_out():
    """Cut off without noticing: the session stopped delivering the probe at T0+110."""
    nodes = [node("n1", seen=T0 + 100), node("n2", seen=T0 + 104), node("n3", seen=T0 + 108)]
    deaf = BrokerView(True, T0, heard_at=T0 + 110)
    assert plan_nodes(nodes, T0 + 130, deaf, LOST, POLICY).timed_out == ()
    working = BrokerView(True, T0, heard_at=T0 + 115.2)  # proven after n1's deadline only
    assert [x.node_id for x in plan_nodes(nodes, T0 + 115.3, working, LOST, POLICY).timed_out] == ["n1"]


def test_a_node_seen_in_the_new_session_that_goes_offline_is_lost_on_time():
    r = T0 + 160
    nodes = [offline("n1", r + 5), node("n2", seen=r + 6), node("n3", seen=r + 6)]
    assert lost_ids(plan_nodes(nodes, r + 5 + LOST, BrokerView(True, r), LOST, POLICY)) == ["n1"]


def test_a_retained_offline_delivered_after_reconnect_still_gets_the_window():
    """Persistence on: the Will is retained, delivered on subscribe (disconnected at R+0.1), but
    the node was not seen in this session, so its agent gets the window to reconnect."""
    r = T0 + 160
    nodes = [node("n1", connected=False, seen=T0 + 99, down_at=r + 0.1), node("n2", seen=r + 1), node("n3", seen=r + 1)]
    assert plan_nodes(nodes, r + 10, BrokerView(True, r), LOST, POLICY).lost == ()
    assert lost_ids(plan_nodes(nodes, r + RECONNECT_WINDOW_MIN, BrokerView(True, r), LOST, POLICY)) == ["n1"]


def test_the_window_covers_the_agents_backoff_even_with_a_short_status_interval():
    r = T0 + 160
    nodes = [offline("n1", T0 + 100, interval=0.5), node("n2", seen=r + 1), node("n3", seen=r + 1)]
    assert plan_nodes(nodes, r + 10.5, BrokerView(True, r), LOST, POLICY).lost == ()  # backoff cap 10 s


# ---- mass loss ----------------------------------------------------------------------------------
def test_every_node_disconnected_means_none_is_lost_with_a_hold():
    nodes = [offline("n1", T0 + 100), offline("n2", T0 + 100), offline("n3", T0 + 101)]
    plan = plan_nodes(nodes, T0 + 500, UP, LOST, POLICY)
    assert plan.lost == ()
    (hold,) = plan.holds
    assert hold.mode == "all_disconnected" and hold.held == ("n1", "n2", "n3") and "3 of 3" in hold.message


def test_two_of_three_lost_at_once_are_released_one_interval_apart():
    nodes = [offline("n2", T0 + 100), offline("n1", T0 + 100), node("n3", seen=T0 + 200)]
    first = plan_nodes(nodes, T0 + 103, UP, LOST, POLICY)
    assert lost_ids(first) == ["n1"]  # oldest first; ties by node id
    (hold,) = first.holds
    assert hold.mode == "throttled" and hold.held == ("n2",) and hold.next_release_at == T0 + 133
    assert "2 of 3" in hold.message and "67%" in hold.message and "55%" in hold.message and "30s" in hold.message
    assert first.wake_at == T0 + 133 and first.last_release == {"c": T0 + 103}
    rest = [nodes[0], replace(nodes[1], active_tasks=0), nodes[2]]  # n1's tasks were stopped
    mid = plan_nodes(rest, T0 + 132.9, UP, LOST, POLICY, first.last_release)
    assert mid.lost == () and mid.holds[0].signature == hold.signature  # same hold: no new event
    assert lost_ids(plan_nodes(rest, T0 + 133, UP, LOST, POLICY, first.last_release)) == ["n2"]


def test_a_release_just_before_the_mass_loss_counts_toward_the_interval():
    """Heartbeat timeouts come up to one status interval apart: the first node lost alone still
    delays the second once the cluster is in mass loss."""
    nodes = [offline("n1", T0 + 100), node("n2", seen=T0 + 200), node("n3", seen=T0 + 200)]
    first = plan_nodes(nodes, T0 + 103, UP, LOST, POLICY)
    assert lost_ids(first) == ["n1"]
    nodes = [replace(nodes[0], active_tasks=0), offline("n2", T0 + 101), nodes[2]]
    assert plan_nodes(nodes, T0 + 104, UP, LOST, POLICY, first.last_release).lost == ()
    assert lost_ids(plan_nodes(nodes, T0 + 133, UP, LOST, POLICY, first.last_release)) == ["n2"]


def test_interval_zero_pauses_replacements():
    nodes = [offline("n1", T0 + 100), offline("n2", T0 + 100), node("n3", seen=T0 + 900)]
    plan = plan_nodes(nodes, T0 + 900, UP, LOST, MassLossPolicy(interval=0))
    assert plan.lost == () and plan.holds[0].mode == "paused"


def test_half_of_a_cluster_is_not_a_mass_loss():
    nodes = [offline("n1", T0 + 100), offline("n2", T0 + 100), node("n3"), node("n4")]
    assert lost_ids(plan_nodes(nodes, T0 + 103, UP, LOST, POLICY)) == ["n1", "n2"]


def test_clusters_are_judged_separately():
    nodes = [offline("a1", T0 + 100, cluster="a"), offline("a2", T0 + 100, cluster="a"),
             offline("b1", T0 + 100, cluster="b"), node("b2", cluster="b"), node("b3", cluster="b")]
    plan = plan_nodes(nodes, T0 + 103, UP, LOST, POLICY)
    assert lost_ids(plan) == ["b1"] and [h.cluster for h in plan.holds] == ["a"]


# ---- invariants ---------------------------------------------------------------------------------
@st.composite
def clusters(draw):
    n = draw(st.integers(1, 8))
    out = []
    for i in range(n):
        connected = draw(st.booleans())
        seen = T0 + draw(st.floats(0, 200))
        down_at = None if connected else seen + draw(st.floats(0, 20))
        out.append(node(f"n{i}", connected=connected, seen=seen, down_at=down_at,
                        interval=draw(st.sampled_from([0.5, 2.0, 5.0])), tasks=draw(st.integers(0, 3))))
    return out


@settings(max_examples=300, deadline=None)
@given(clusters(), st.floats(0, 1000), st.floats(0, 300))
def test_while_disconnected_nothing_is_ever_lost(nodes, dt, since):
    plan = plan_nodes(nodes, T0 + dt, BrokerView(False, T0 + since), LOST, POLICY)
    assert plan.lost == () and plan.timed_out == ()


@settings(max_examples=300, deadline=None)
@given(clusters(), st.floats(0, 1000))
def test_all_nodes_down_means_none_lost(nodes, dt):
    nodes = [replace(n, connected=False, disconnected_at=n.disconnected_at or n.last_seen_at) for n in nodes]
    plan = plan_nodes(nodes, T0 + 250 + dt, UP, LOST, POLICY)
    if len(nodes) > 1:
        assert plan.lost == ()


@settings(max_examples=300, deadline=None)
@given(clusters(), st.floats(0, 30), st.lists(st.floats(0.1, 20), min_size=1, max_size=30))
def test_nobody_is_lost_before_its_fair_chance_after_a_reconnect(nodes, r, steps):
    session = BrokerView(True, T0 + 200 + r)
    now = session.connected_since
    for dt in steps:
        now += dt
        plan = plan_nodes(nodes, now, session, LOST, POLICY)
        for x in plan.lost:
            n = next(n for n in nodes if n.node_id == x.node_id)
            assert now >= session.connected_since + max(heartbeat_timeout(n, LOST), RECONNECT_WINDOW_MIN)


@settings(max_examples=200, deadline=None)
@given(st.integers(3, 12), st.floats(5, 60), st.lists(st.floats(0.1, 15), min_size=5, max_size=60))
def test_the_throttle_releases_at_most_one_node_per_interval(n, interval, steps):
    """All but one node go offline together; the controller applies each plan (lost nodes have no
    tasks left) and passes the release memory on."""
    policy = MassLossPolicy(fraction=0.55, interval=interval)
    nodes = [offline(f"n{i:02}", T0 + 100) for i in range(n - 1)] + [node("up", seen=T0 + 10_000)]
    memory: dict[str, float] = {}
    released: list[float] = []
    now = T0 + 100
    for dt in steps:
        now += dt
        plan = plan_nodes(nodes, now, UP, LOST, policy, memory)
        memory = dict(plan.last_release)
        gone = set(lost_ids(plan))
        assert len(gone) <= 1
        released += [now] * len(gone)
        nodes = [replace(x, active_tasks=0) if x.node_id in gone else x for x in nodes]
        if gone:
            assert plan.wake_at is None or plan.wake_at >= now
    assert all(b - a >= interval - 1e-6 for a, b in itertools.pairwise(released))
    if released:
        assert released[0] >= T0 + 100 + LOST


# ---- silent host loss: light heartbeats (issue 16) ----------------------------------------------
def test_a_node_whose_beats_stop_is_lost_within_five_seconds_of_its_last_beat():
    beating = replace(node("n1", seen=T0 + 100), heartbeat_interval=1.5)
    peer = node("n2", seen=T0 + 103.5)
    assert heartbeat_timeout(beating, LOST) == 3.0
    assert not plan_nodes([beating, peer], T0 + 102.9, UP, LOST, POLICY).lost
    plan = plan_nodes([beating, peer], T0 + 103.1, BrokerView(True, T0, heard_at=T0 + 103.05), LOST, POLICY)
    assert lost_ids(plan) == ["n1"] and plan.timed_out[0].disconnected_at == T0 + 100
    # Without beats heard (an older agent, or beats the broker's ACL drops) the snapshots rule: 15 s.
    assert heartbeat_timeout(node("n1"), LOST) == 15.0
    assert not plan_nodes([node("n1", seen=T0 + 100), peer], T0 + 103.1, UP, LOST, POLICY).lost


def test_a_late_beat_is_no_loss_while_the_orchestrator_has_not_caught_up():
    """A busy orchestrator handles its inbound messages late: its own probe, published after the
    node's deadline, must have come back first (heard_at is the probe's publication time)."""
    beating = replace(node("n1", seen=T0 + 100), heartbeat_interval=1.5)
    peer = node("n2", seen=T0 + 104)
    behind = BrokerView(True, T0, heard_at=T0 + 102.5)  # the queue not yet read past T0+102.5
    assert not plan_nodes([beating, peer], T0 + 106, behind, LOST, POLICY).timed_out
    assert plan_nodes([beating, peer], T0 + 106, BrokerView(True, T0, heard_at=T0 + 103.2), LOST, POLICY).timed_out


def test_node_lost_seconds_stays_the_floor_for_beating_nodes():
    beating = replace(node("n1"), heartbeat_interval=0.5)
    assert heartbeat_timeout(beating, LOST) == LOST
    assert heartbeat_timeout(beating, 10.0) == 10.0
