"""``dockyard events``: which events are new (pure), and the command once and following, against a
mocked API whose services gain events between polls."""
from __future__ import annotations

import json

import httpx
from click.testing import CliRunner

from dockyard.cli import cli
from orchestrator.client.events import fresh_events
from orchestrator.client.session import Clock, Session


def ev(eid: str, at: float, msg: str, count: int = 1) -> dict:
    return {"id": eid, "createdAt": at, "message": msg, "count": count}


def test_new_events_are_unseen_ids_or_grown_counts_oldest_first():
    services = [{"serviceName": "web", "events": [ev("b", 20, "steady"), ev("a", 10, "started")]},
                {"serviceName": "db", "events": [ev("c", 15, "placed")]}]
    new, seen = fresh_events(services, {})
    assert [(s, e["id"]) for s, e in new] == [("web", "a"), ("db", "c"), ("web", "b")]
    again, seen2 = fresh_events(services, seen)
    assert again == [] and seen2 == seen
    services[0]["events"][0] = ev("b", 30, "steady", count=2)  # a repeat, collapsed into a count
    grown, _ = fresh_events(services, seen)
    assert [(s, e["id"], e["count"]) for s, e in grown] == [("web", "b", 2)]
    assert seen == {"a": 1, "b": 1, "c": 1}  # not changed by fresh_events


def test_events_follow_reads_the_stream_and_prints_each_event_once():
    first = [ev("a", 10, "(service web) started deployment d1.")]
    grown = [ev("b", 12, "(service web) has reached a steady state."), *first]
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/v1/clusters/default/events":
            assert request.url.params["follow"] == "true" and request.url.params["service"] == "web"
            lines = [{"serviceName": "web", "events": first}, {"serviceName": "web", "events": first},
                     {"serviceName": "web", "events": grown}]
            return httpx.Response(200, content="".join(json.dumps(x) + "\n" for x in lines) + "\n")
        return httpx.Response(200, json={"service": {"serviceName": "web", "events": first}})

    def sleep(_: float) -> None:
        raise AssertionError("polled although the stream answered")

    session = Session(transport=httpx.MockTransport(handler), clock=Clock(sleep=sleep))
    r = CliRunner().invoke(cli, ["events", "-f", "--service", "web"], obj=session)
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if "(service web)" in line]
    assert len(lines) == 2 and "started deployment" in lines[0] and "steady state" in lines[1]
    assert asked == ["/v1/clusters/default/services/web", "/v1/clusters/default/events"]


def test_events_follow_polls_an_orchestrator_without_the_stream_until_interrupted():
    polls = {"n": 0}
    snapshots = [
        [ev("a", 10, "(service web) started deployment d1.")],
        [ev("a", 10, "(service web) started deployment d1.")],
        [ev("b", 12, "(service web) has reached a steady state."), ev("a", 10, "(service web) started deployment d1.")],
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/clusters/default/events":  # an orchestrator without the stream: polled
            return httpx.Response(404, json={"detail": "Not Found"})
        assert request.url.path == "/v1/clusters/default/services/web"
        i = min(polls["n"], len(snapshots) - 1)
        polls["n"] += 1
        return httpx.Response(200, json={"service": {"serviceName": "web", "events": snapshots[i]}})

    def sleep(_: float) -> None:
        if polls["n"] >= 4:
            raise KeyboardInterrupt

    session = Session(transport=httpx.MockTransport(handler), clock=Clock(sleep=sleep))
    r = CliRunner().invoke(cli, ["events", "-f", "--service", "web"], obj=session)
    lines = [line for line in r.output.splitlines() if "(service web)" in line]
    assert len(lines) == 2 and "started deployment" in lines[0] and "steady state" in lines[1]
    assert all("  web  " in line for line in lines)


def test_events_of_a_missing_service_exit_1_without_a_trace():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": "service nope not found", "field": "name"})

    r = CliRunner().invoke(cli, ["events", "--service", "nope"], obj=Session(transport=httpx.MockTransport(handler)))
    assert r.exit_code == 1 and "not found" in r.output and "Traceback" not in r.output
