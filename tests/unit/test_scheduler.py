"""The pure scheduler (orchestrator.core.scheduler): placement examples and hypothesis invariants."""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.scheduler import NodeView, TaskAsk, pick_scale_in, place, unplaced_reason

SETTINGS = settings(max_examples=150, deadline=None)


def nodes(n: int, cpu: int = 4096, memory: int = 8192, **kw) -> list[NodeView]:
    return [NodeView(f"n{i + 1}", cpu, memory, **kw) for i in range(n)]


def asks(n: int, group: str = "service:web", cpu: int = 256, memory: int = 512, prefix: str = "t", **kw) -> list[TaskAsk]:
    return [TaskAsk(f"{prefix}{i}", group, cpu, memory, **kw) for i in range(n)]


def per_node(p) -> Counter:
    return Counter(p.assigned.values())


# ---- strategies ---------------------------------------------------------------------------
def test_spread_puts_six_tasks_two_per_node_on_three_nodes():
    p = place(asks(6), nodes(3))
    assert not p.unplaced
    assert per_node(p) == {"n1": 2, "n2": 2, "n3": 2}


def test_spread_prefers_nodes_with_fewer_tasks_of_the_group_already():
    ns = nodes(3)
    for a in asks(2, prefix="old"):
        ns[0].add(a)
    p = place(asks(4), ns)
    # n1 already has 2: the 4 new ones go 2/2 to n2/n3 before n1 gets a third
    assert per_node(p) == {"n2": 2, "n3": 2}


def test_spread_counts_only_the_same_group():
    ns = nodes(2)
    for a in asks(3, group="service:other", prefix="o"):
        ns[0].add(a)
    p = place(asks(2), ns)
    assert per_node(p) == {"n1": 1, "n2": 1}


def test_binpack_memory_fills_one_node_before_the_next():
    ns = nodes(3, cpu=10_000, memory=2048)
    p = place(asks(6, memory=512, strategy=(("binpack", "memory"),)), ns)
    ns = p.nodes
    assert not p.unplaced
    counts = per_node(p)
    assert sorted(counts.values()) == [2, 4]  # 4 fill the first node (2048/512), the rest go to one more
    full = [n for n in ns if n.free_memory == 0]
    assert len(full) == 1


def test_binpack_memory_prefers_the_node_with_least_free_memory():
    ns = [NodeView("n1", 4096, 4096), NodeView("n2", 4096, 1024), NodeView("n3", 4096, 2048)]
    p = place(asks(1, memory=512, strategy=(("binpack", "memory"),)), ns)
    assert p.assigned == {"t0": "n2"}


def test_binpack_cpu_prefers_the_node_with_least_free_cpu():
    ns = [NodeView("n1", 4096, 4096), NodeView("n2", 1024, 4096), NodeView("n3", 2048, 4096)]
    p = place(asks(3, cpu=512, strategy=(("binpack", "cpu"),)), ns)
    assert per_node(p) == {"n2": 2, "n3": 1}


def test_random_strategy_places_everything_within_capacity_and_is_seeded():
    ns1, ns2 = nodes(4, memory=2048), nodes(4, memory=2048)
    a = asks(12, memory=512, strategy=(("random", None),))
    p1, p2 = place(a, ns1, seed=7), place(a, ns2, seed=7)
    assert not p1.unplaced
    assert p1.assigned == p2.assigned
    assert all(n.free_memory >= 0 for n in ns1)


def test_spread_attribute_zone_balances_across_zones():
    ns = [
        NodeView("a1", 8192, 8192, attributes={"zone": "a"}),
        NodeView("a2", 8192, 8192, attributes={"zone": "a"}),
        NodeView("a3", 8192, 8192, attributes={"zone": "a"}),
        NodeView("b1", 8192, 8192, attributes={"zone": "b"}),
    ]
    p = place(asks(6, strategy=(("spread", "attribute:zone"), ("spread", "instanceId"))), ns)
    assert not p.unplaced
    zones = Counter(p.assigned[t][0] for t in p.assigned)
    assert zones == {"a": 3, "b": 3}
    # within zone a, the second strategy spreads over the three nodes
    assert Counter(p.assigned.values()) == {"b1": 3, "a1": 1, "a2": 1, "a3": 1}


def test_spread_attribute_counts_existing_tasks_per_zone():
    ns = [
        NodeView("a1", 8192, 8192, attributes={"zone": "a"}),
        NodeView("b1", 8192, 8192, attributes={"zone": "b"}),
        NodeView("c1", 8192, 8192, attributes={"zone": "c"}),
    ]
    for a in asks(2, prefix="old"):
        ns[0].add(a)
    p = place(asks(4, strategy=(("spread", "attribute:zone"),)), ns)
    assert Counter(p.assigned.values()) == {"b1": 2, "c1": 2}


# ---- constraints ----------------------------------------------------------------------------
def test_distinct_instance_refuses_a_fourth_task_on_three_nodes():
    p = place(asks(4, distinct_instance=True), nodes(3))
    assert sorted(p.assigned.values()) == ["n1", "n2", "n3"]
    assert len(p.unplaced) == 1
    (reason,) = p.unplaced.values()
    assert "distinctInstance" in reason


def test_distinct_instance_is_per_group():
    ns = nodes(1)
    p = place(asks(1, group="service:a", distinct_instance=True, prefix="a")
              + asks(1, group="service:b", distinct_instance=True, prefix="b"), ns)
    assert not p.unplaced and set(p.assigned.values()) == {"n1"}


def test_member_of_filters_by_attribute():
    ns = [
        NodeView("n1", 4096, 4096, attributes={"zone": "a", "disk": "ssd"}),
        NodeView("n2", 4096, 4096, attributes={"zone": "b", "disk": "ssd"}),
        NodeView("n3", 4096, 4096, attributes={"zone": "a"}),
    ]
    p = place(asks(4, member_of=("attribute:disk == ssd",)), ns)
    assert set(p.assigned.values()) == {"n1", "n2"}
    p2 = place(asks(3, member_of=("attribute:zone == a", "attribute:disk exists")), nodes_copy(ns))
    assert set(p2.assigned.values()) == {"n1"}


def nodes_copy(ns: list[NodeView]) -> list[NodeView]:
    return [NodeView(n.node_id, n.cpu, n.memory, attributes=dict(n.attributes)) for n in ns]


def test_member_of_no_match_is_unplaced_with_the_expression_in_the_reason():
    p = place(asks(1, member_of=("attribute:zone == z",)), nodes(2, attributes={"zone": "a"}))
    assert not p.assigned
    assert "memberOf" in p.unplaced["t0"] and "attribute:zone == z" in p.unplaced["t0"]


def test_member_of_instance_id():
    p = place(asks(3, member_of=("instanceId in [n2, n3]",)), nodes(3))
    assert set(p.assigned.values()) == {"n2", "n3"}


# ---- ports --------------------------------------------------------------------------------
def test_static_host_port_conflict_moves_the_second_task_to_another_node():
    ns = nodes(2)
    p = place(asks(2, ports=((80, "tcp"),), strategy=(("binpack", "memory"),)), ns)
    # binpack would stack both on one node; the port forbids it
    assert not p.unplaced
    assert sorted(p.assigned.values()) == ["n1", "n2"]


def test_static_host_port_conflict_with_one_node_stays_unplaced():
    p = place(asks(2, ports=((80, "tcp"),)), nodes(1))
    assert len(p.assigned) == 1 and len(p.unplaced) == 1
    (reason,) = p.unplaced.values()
    assert "host port" in reason and "80" in reason


def test_host_port_conflict_across_groups():
    ns = nodes(1)
    p = place([TaskAsk("a", "service:a", 10, 10, ports=((80, "tcp"),)),
               TaskAsk("b", "service:b", 10, 10, ports=((80, "tcp"),))], ns)
    assert p.assigned == {"a": "n1"} and "host port" in p.unplaced["b"]


def test_same_port_different_protocol_does_not_conflict():
    p = place([TaskAsk("a", "g", 10, 10, ports=((53, "tcp"),)), TaskAsk("b", "g", 10, 10, ports=((53, "udp"),))],
              nodes(1))
    assert not p.unplaced


def test_preexisting_port_use_is_respected():
    ns = nodes(2)
    ns[0].used_ports.add((8080, "tcp"))
    p = place(asks(1, ports=((8080, "tcp"),)), ns)
    assert p.assigned == {"t0": "n2"}


# ---- resources and reasons ----------------------------------------------------------------
def test_insufficient_memory_reason_names_the_node_and_memory():
    ns = [NodeView("n1", 4096, 1024)]
    p = place(asks(1, memory=2048), ns)
    reason = p.unplaced["t0"]
    assert "n1" in reason and "memory" in reason and "2048" in reason


def test_insufficient_cpu_reason_names_cpu():
    p = place(asks(1, cpu=8192), nodes(1))
    assert "CPU" in p.unplaced["t0"]


def test_closest_node_is_the_one_with_fewest_shortfalls():
    ns = [
        NodeView("n1", 4096, 1024, attributes={"zone": "b"}),  # wrong zone AND too little memory
        NodeView("n2", 4096, 1024, attributes={"zone": "a"}),  # only too little memory
    ]
    reason = unplaced_reason(TaskAsk("t", "g", 10, 2048, member_of=("attribute:zone == a",)), ns)
    assert "n2" in reason and "memory" in reason and "memberOf" not in reason


def test_closest_node_for_memory_is_the_one_with_most_free_memory():
    ns = [NodeView("n1", 4096, 512), NodeView("n2", 4096, 3000)]
    reason = unplaced_reason(TaskAsk("t", "g", 10, 4096), ns)
    assert "container-instance n2" in reason


def test_no_nodes_reason():
    p = place(asks(1), [])
    assert "no container instances" in p.unplaced["t0"]


def test_fargate_asks_only_land_on_nodes_with_fargate_capacity():
    ns = [
        NodeView("ec2a", 8192, 8192),
        NodeView("far", 8192, 8192, capacity_providers=frozenset({"EC2", "FARGATE"})),
        NodeView("ec2b", 8192, 8192),
    ]
    p = place(asks(3, launch_type="FARGATE"), ns)
    assert set(p.assigned.values()) == {"far"}
    ec2 = place(asks(3, prefix="e"), ns)
    assert not ec2.unplaced  # FARGATE nodes still take EC2 asks when they offer EC2


def test_fargate_without_any_fargate_node_is_unplaced_naming_the_pool():
    p = place(asks(1, launch_type="FARGATE"), nodes(2))
    assert "FARGATE" in p.unplaced["t0"]


def test_placement_accounts_the_load_on_node_views():
    ns = place(asks(2, cpu=256, memory=300), nodes(1, cpu=1024, memory=1024)).nodes
    assert (ns[0].used_cpu, ns[0].used_memory, ns[0].tasks) == (512, 600, 2)
    assert ns[0].groups["service:web"] == 2


def test_memory_is_the_limit_and_the_rest_is_unplaced():
    ns = nodes(2, memory=1024)
    p = place(asks(5, memory=512), ns)
    assert len(p.assigned) == 4 and len(p.unplaced) == 1


# ---- scale-in --------------------------------------------------------------------------------
def test_pick_scale_in_picks_from_the_most_loaded_node():
    tasks = [("a1", "n1", {}), ("a2", "n1", {}), ("a3", "n1", {}), ("b1", "n2", {}), ("c1", "n3", {})]
    chosen = pick_scale_in(tasks, 2)
    assert len(chosen) == 2 and all(c.startswith("a") for c in chosen)


def test_pick_scale_in_rebalances_then_alternates():
    tasks = [("a1", "n1", {}), ("a2", "n1", {}), ("b1", "n2", {}), ("b2", "n2", {}), ("c1", "n3", {})]
    chosen = pick_scale_in(tasks, 2)
    nodes_hit = Counter(c[0] for c in chosen)
    assert nodes_hit == {"a": 1, "b": 1}


def test_pick_scale_in_on_attribute_picks_from_the_busiest_zone():
    tasks = [("x1", "n1", {"zone": "a"}), ("x2", "n2", {"zone": "a"}), ("x3", "n3", {"zone": "a"}),
             ("y1", "n4", {"zone": "b"})]
    chosen = pick_scale_in(tasks, 2, "attribute:zone")
    assert set(chosen) <= {"x1", "x2", "x3"} and len(chosen) == 2


def test_pick_scale_in_never_more_than_available():
    assert sorted(pick_scale_in([("a", "n1", {}), ("b", "n2", {})], 5)) == ["a", "b"]
    assert pick_scale_in([("a", "n1", {})], 0) == []


# ---- properties ------------------------------------------------------------------------------
node_st = st.builds(
    lambda i, cpu, mem, zone, far: NodeView(f"n{i}", cpu, mem, attributes={"zone": zone},
                                            capacity_providers=frozenset({"EC2", "FARGATE"} if far else {"EC2"})),
    st.integers(0, 10**6), st.sampled_from([512, 1024, 2048, 4096]), st.sampled_from([256, 1024, 2048, 4096]),
    st.sampled_from(["a", "b", "c"]), st.booleans(),
)
strategy_st = st.sampled_from([
    (("spread", "instanceId"),),
    (("binpack", "memory"),),
    (("binpack", "cpu"),),
    (("random", None),),
    (("spread", "attribute:zone"), ("spread", "instanceId")),
    (("spread", "attribute:zone"), ("binpack", "memory")),
])
ask_group_st = st.tuples(
    st.sampled_from(["service:a", "service:b", "family:c"]),
    st.integers(1, 12),  # how many
    st.sampled_from([0, 128, 256, 512, 1024]),
    st.sampled_from([64, 256, 512, 1024]),
    st.sampled_from([(), ((80, "tcp"),), ((80, "tcp"), (443, "tcp"))]),
    st.booleans(),  # distinctInstance
    st.sampled_from([(), ("attribute:zone != c",), ("attribute:zone in [a, b]",)]),
    strategy_st,
    st.sampled_from(["EC2", "EC2", "FARGATE"]),
)


def build(groups, node_list):
    seen = set()
    uniq = []
    for n in node_list:
        if n.node_id not in seen:
            seen.add(n.node_id)
            uniq.append(n)
    out, k = [], 0
    distinct_of: dict[str, bool] = {}
    for g, count, cpu, mem, ports, distinct, member_of, strat, lt in groups:
        distinct = distinct_of.setdefault(g, distinct)  # the tasks of one group share their constraints
        for _ in range(count):
            out.append(TaskAsk(f"t{k}", g, cpu, mem, ports, lt, distinct, member_of, strat))
            k += 1
    return out, uniq


@SETTINGS
@given(st.lists(ask_group_st, min_size=1, max_size=4), st.lists(node_st, min_size=0, max_size=6), st.integers(0, 99))
def test_property_invariants_of_any_placement(groups, node_list, seed):
    all_asks, ns = build(groups, node_list)
    capacity = {n.node_id: (n.cpu, n.memory) for n in ns}
    p = place(all_asks, ns, seed=seed)
    ns = p.nodes
    by_id = {a.task_id: a for a in all_asks}
    # every ask is either assigned or unplaced, exactly once
    assert set(p.assigned) | set(p.unplaced) == set(by_id)
    assert not set(p.assigned) & set(p.unplaced)
    # never over-commit cpu/memory; ports used at most once per node
    used: dict[str, list[int]] = {n: [0, 0] for n in capacity}
    ports: dict[str, Counter] = {n: Counter() for n in capacity}
    groups_on: dict[str, Counter] = {n: Counter() for n in capacity}
    view = {n.node_id: n for n in ns}
    for tid, nid in p.assigned.items():
        a = by_id[tid]
        used[nid][0] += a.cpu
        used[nid][1] += a.memory
        ports[nid].update(a.ports)
        groups_on[nid][a.group] += 1
        assert a.launch_type in view[nid].capacity_providers
        if "zone != c" in "".join(a.member_of):
            assert view[nid].attributes["zone"] != "c"
        if "in [a, b]" in "".join(a.member_of):
            assert view[nid].attributes["zone"] in ("a", "b")
    for nid, (cpu, mem) in capacity.items():
        assert used[nid][0] <= cpu and used[nid][1] <= mem
        assert all(c == 1 for c in ports[nid].values())
    # never two tasks of a group on one node under distinctInstance
    for tid, nid in p.assigned.items():
        a = by_id[tid]
        if a.distinct_instance:
            assert groups_on[nid][a.group] == 1
    # the node views' accounting matches the assignment
    for n in ns:
        assert (n.used_cpu, n.used_memory) == tuple(used[n.node_id])
    # every unplaced reason is a sentence naming a node or saying there are none
    for reason in p.unplaced.values():
        assert reason.startswith("no container instance")


@SETTINGS
@given(st.integers(1, 8), st.integers(0, 60))
def test_property_spread_on_equal_large_nodes_is_balanced(n_nodes, n_tasks):
    ns = nodes(n_nodes, cpu=10**6, memory=10**6)
    p = place(asks(n_tasks, cpu=256, memory=512), ns)
    assert not p.unplaced
    counts = [per_node(p).get(n.node_id, 0) for n in ns]
    assert max(counts) - min(counts) <= 1


@SETTINGS
@given(st.integers(1, 8), st.lists(st.integers(1, 10), min_size=1, max_size=5))
def test_property_spread_stays_balanced_over_successive_placements(n_nodes, batches):
    ns = nodes(n_nodes, cpu=10**6, memory=10**6)
    total = Counter()
    for b, count in enumerate(batches):
        p = place(asks(count, prefix=f"b{b}-"), ns)
        ns = p.nodes
        total.update(p.assigned.values())
        counts = [total.get(n.node_id, 0) for n in ns]
        assert max(counts) - min(counts) <= 1


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["n1", "n2", "n3", "n4"]), st.sampled_from(["a", "b"])), min_size=1,
                max_size=15), st.integers(0, 16))
def test_property_scale_in_takes_from_the_busiest_node_each_time(placed, count):
    tasks = [(f"t{i}", node, {"zone": z}) for i, (node, z) in enumerate(placed)]
    chosen = pick_scale_in(tasks, count)
    assert len(chosen) == min(count, len(tasks)) and len(set(chosen)) == len(chosen)
    remaining = list(tasks)
    by_id = {t[0]: t for t in tasks}
    for victim in chosen:
        load = Counter(t[1] for t in remaining)
        assert load[by_id[victim][1]] == max(load.values())
        remaining.remove(by_id[victim])


def test_an_invalid_member_of_expression_leaves_its_tasks_unplaced_and_places_the_others():
    """Apply rejects such an expression; one that reaches the scheduler anyway (old data) must not
    stop scheduling: its batch is unplaced with the reason, other tasks are placed."""
    bad = asks(2, group="service:bad", member_of=("attribute:zone ==",), prefix="b")
    good = asks(2, prefix="g")
    p = place(bad + good, nodes(2))
    assert set(p.assigned) == {"g0", "g1"}
    assert set(p.unplaced) == {"b0", "b1"} and all("memberOf constraint is invalid" in r for r in p.unplaced.values())
    assert "memberOf constraint is invalid" in unplaced_reason(bad[0], nodes(2))


def test_place_does_not_change_the_node_views_it_is_given():
    views = nodes(3)
    before = [(v.used_cpu, v.used_memory, set(v.used_ports), dict(v.groups), v.tasks) for v in views]
    p = place(asks(6, ports=((8080, "tcp"),)) [:3] + asks(3, prefix="x"), views)
    assert len(p.assigned) == 6
    assert [(v.used_cpu, v.used_memory, set(v.used_ports), dict(v.groups), v.tasks) for v in views] == before
