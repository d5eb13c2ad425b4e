"""The invariant checker's pure parts (tests/integration/invariants.py): it must catch what it claims to."""
from __future__ import annotations

import pytest
from invariants import Container, Sample, Tracker, check_final, check_requests, duplicates, local_url, surge_bound


def task(tid: str, node: str = "n1", svc: str = "web", desired: str = "RUNNING", last: str = "RUNNING",
         **kw: object) -> dict:
    return {"taskId": tid, "nodeId": node, "serviceName": svc, "desiredStatus": desired, "lastStatus": last, **kw}


def sample(t: float, tasks: list[dict], desired: int, running: list[tuple[str, str]], pct: int = 200,
           connected: dict[str, bool] | None = None) -> Sample:
    svc = {"serviceName": "web", "desiredCount": desired, "spec": {"deploymentConfiguration": {"maximumPercent": pct}}}
    return Sample(t, {x["taskId"]: x for x in tasks}, {"web": svc}, connected or {"n1": True, "n2": True},
                  tuple(Container(h, tid, "main", True) for tid, h in running))


def test_surge_bound_is_the_floor_of_the_larger_desired_count():
    assert surge_bound(3, 3, 150) == 4
    assert surge_bound(2, 5, 100) == 5
    assert surge_bound(5, 2, 200) == 10


def test_more_live_tasks_than_the_bound_is_a_violation_and_stopping_ones_do_not_count():
    tr = Tracker()
    ts = [task(f"t{i}") for i in range(3)]
    assert not tr.add(sample(0, ts, 2, [("t0", "h1"), ("t1", "h1"), ("t2", "h2")], pct=150))  # bound 3
    ts.append(task("t3"))
    found = tr.add(sample(1, ts, 2, [(f"t{i}", "h1") for i in range(4)], pct=150))
    assert [v.kind for v in found] == ["surge"] and "4 live tasks > bound 3" in found[0].detail
    ts[3] = task("t3", desired="STOPPED")  # being stopped: excluded
    assert not tr.add(sample(2, ts, 2, [(f"t{i}", "h1") for i in range(4)], pct=150))
    ts[2] = task("t2", drainingSince=1.0)
    ts.append(task("t4"))
    assert not tr.add(sample(3, ts, 2, [(f"t{i}", "h1") for i in range(5)], pct=150))


def test_the_bound_uses_the_desired_count_before_a_scale_in_within_the_window():
    tr = Tracker(desired_window=5.0)
    ts = [task(f"t{i}") for i in range(4)]
    run = [(f"t{i}", "h1") for i in range(4)]
    assert not tr.add(sample(0, ts, 4, run, pct=100))
    assert not tr.add(sample(1, ts, 2, run, pct=100))  # the pass has not marked them yet
    assert tr.add(sample(7, ts, 2, run, pct=100))  # later: still 4 live, bound 2


def test_excess_from_a_disconnected_node_is_a_transient_not_a_violation():
    tr = Tracker()
    ts = [task("a", node="n2", desired="STOPPED", last="STOPPED", stoppedReason="Node n2 lost"), task("b"), task("c")]
    conn = {"n1": True, "n2": False}
    assert not tr.add(sample(0, ts, 2, [("a", "h2"), ("b", "h1"), ("c", "h1")], pct=100, connected=conn))
    assert not tr.add(sample(2, ts, 2, [("a", "h2"), ("b", "h1"), ("c", "h1")], pct=100, connected=conn))
    assert tr.transients["web"].peak == 1 and tr.transients["web"].seconds == 2
    assert tr.cut["web"].episodes == 1
    ts.append(task("d"))  # one more on a connected node: the cut node explains only one
    found = tr.add(sample(3, ts, 2, [("a", "h2"), ("b", "h1"), ("c", "h1"), ("d", "h1")], pct=100, connected=conn))
    assert [v.kind for v in found] == ["surge"]
    tr.add(sample(4, ts[1:3], 2, [("b", "h1"), ("c", "h1")], pct=100, connected=conn))  # healed
    tr.add(sample(9, ts, 2, [("a", "h2"), ("b", "h1")], pct=100, connected=conn))  # a second episode
    assert tr.cut["web"].episodes == 2 and tr.cut["web"].seconds == 3  # 0-3, then 9 alone: not 0-9


def test_two_running_containers_of_one_task_are_a_duplicate():
    cs = [Container("h1", "t1", "main", True), Container("h2", "t1", "main", True),
          Container("h1", "t1", "side", True), Container("h2", "t2", "main", False), Container("h1", "t2", "main", True)]
    assert duplicates(cs) == {("t1", "main"): ["h1", "h2"]}
    tr = Tracker()
    assert [v.kind for v in tr.add(sample(0, [task("t1")], 1, [("t1", "h1"), ("t1", "h2")]))] == ["duplicate"]


def test_final_checks_lost_tasks_writes_and_orphans():
    ts = [task("ok"), task("gone", desired="STOPPED", last="STOPPED", stoppedReason="Scaled in"),
          task("silent", desired="STOPPED", last="STOPPED"), task("stuck", last="PENDING"),
          task("zombie", desired="STOPPED", last="RUNNING")]
    s = sample(9, ts, 1, [("ok", "h1"), ("gone", "h2")])
    s = Sample(s.t, s.tasks, s.services, s.connected, (*s.containers, Container("h1", "nobody", "main", False)))
    writes = [("desiredCount 1", lambda x: x.services["web"]["desiredCount"] == 1),
              ("desiredCount 5", lambda x: x.services["web"]["desiredCount"] == 5)]
    nets = [("h1", "net-ok", "ok"), ("h2", "net-gone", "gone"), ("h1", "net-x", "unknown"),
            ("h1", "net-silent", "silent")]
    found = check_final(s, ["ok", "gone", "silent", "stuck", "zombie", "vanished"], writes, nets)
    text = "\n".join(map(str, found))
    assert "task vanished is no longer listed" in text
    assert "task silent STOPPED without a reason" in text
    assert "stuck never ran" in text and "zombie still RUNNING though stopped" in text
    assert "desiredCount 5" in text and "desiredCount 1" not in text
    assert "container main of unknown task nobody" in text
    assert "container main of STOPPED task gone runs on h2" in text
    assert "network net-x of unknown task" in text and "network net-silent of STOPPED task silent" in text
    assert "net-ok" not in text and "net-gone" not in text  # its container is kept for cleanup
    assert len(found) == 9


def test_a_failed_request_a_loop_that_did_not_run_or_a_stall_are_request_violations():
    assert check_requests(30, 2400, [], longest_gap=0.6) == []
    found = check_requests(30, 2400, [(12.5, 503, "no server"), (13.0, "error", "ReadTimeout: ")], longest_gap=0.6)
    assert [(v.kind, v.t) for v in found] == [("request", 12.5), ("request", 13.0)]
    assert "503 no server" in found[0].detail
    assert [v.detail for v in check_requests(30, 5, [], longest_gap=0.6)] == [
        "only 5 requests answered (< 20): the loop did not run"]
    (stall,) = check_requests(30, 2400, [], longest_gap=7.25)
    assert "7.2s without a successful answer" in stall.detail


def test_the_request_loop_targets_only_loopback_or_the_bed():
    assert local_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/"
    assert local_url("http://10.77.0.11:18081/x")
    for bad in ("http://example.com/", "http://10.78.0.1/", "http://8.8.8.8/", "http://localhost:80/"):
        with pytest.raises(ValueError):
            local_url(bad)
