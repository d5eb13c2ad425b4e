"""Requests per target for ALBRequestCountPerTarget: HAProxy's counters in the LB node's status
(agent.lb.plan) and their rate per minute (orchestrator.lb_requests)."""
from __future__ import annotations

from test_lb_plan import STAT

from agent.lb import plan
from dockyard.lb import TargetReport
from orchestrator.lb_requests import RequestBook
from orchestrator.models import Service, ServiceSpec

WITH_REQ = STAT.replace("check_status,check_code", "check_status,check_code,req_tot").replace(
    "L7OK,200", "L7OK,200,42").replace("L7STS,404", "L7STS,404,")


def test_parse_stat_reads_the_request_counter_else_sessions():
    assert plan.parse_stat(WITH_REQ)[("tg_web", "t1_80")].requests == 42
    assert plan.parse_stat(STAT)[("tg_web", "t1_80")].requests == 10  # stot


def _svc() -> Service:
    return Service(cluster="c", serviceName="web", spec=ServiceSpec.model_validate(
        {"serviceName": "web", "taskDefinition": "web", "loadBalancers": [
            {"targetGroupName": "web", "containerName": "web", "containerPort": 80}]}))


def _report(task: str, n: int, group: str = "web") -> TargetReport:
    return TargetReport(targetGroup=group, id=f"{task}_80", taskId=task, health="healthy", requests=n)


def test_rate_per_minute_over_the_window_summed_over_lb_nodes():
    book = RequestBook(window=10.0)
    for i in range(7):  # a: 5 requests/s on lb1 and 1/s on lb2; b: nothing
        book.record("c", "lb1", [_report("a", 5 * i), _report("b", 0)], 100.0 + 2 * i)
        book.record("c", "lb2", [_report("a", i)], 100.0 + 2 * i)
    assert round(book.rate("c", "web", "a", 112.0) or 0) == 5 * 60 / 2 + 60 / 2
    r = book.per_target(_svc(), None, ["a", "b"], 112.0)
    assert round(r.value or 0) == (150 + 30) / 2 and r.missing == 0
    r = book.per_target(_svc(), None, ["a", "b", "new"], 112.0)
    assert r.missing == 1 and round(r.value or 0) == 60  # a ready task the LB does not count yet: 0, no scale-in
    assert book.per_target(_svc(), "other", ["a"], 112.0).value is None


def test_a_counter_reset_counts_from_zero():
    book = RequestBook(window=10.0)
    book.record("c", "lb1", [_report("a", 1000)], 0.0)
    book.record("c", "lb1", [_report("a", 20)], 10.0)
    assert book.rate("c", None, "a", 10.0) == 20 / 10 * 60
