"""``GET .../events?follow=true``: the current events, then a line when a service's events change, woken by the
state's change feed (put_service), with the poll as the fallback; the watcher goes with the stream."""
from __future__ import annotations

import asyncio
import json

import pytest

from orchestrator import events_api
from orchestrator.controller import Controller, add_event
from orchestrator.ops import Ops, UserError
from orchestrator.state import State

MANIFEST = [
    {"apiVersion": "dockyard/v1", "kind": "TaskDefinition", "metadata": {"name": "web"},
     "spec": {"containerDefinitions": [{"name": "web", "image": "busybox", "memory": 32}]}},
    {"apiVersion": "dockyard/v1", "kind": "Service", "metadata": {"name": "web"},
     "spec": {"taskDefinition": "web", "desiredCount": 0}},
    {"apiVersion": "dockyard/v1", "kind": "Service", "metadata": {"name": "db"},
     "spec": {"taskDefinition": "web", "desiredCount": 0}},
]


def setup() -> tuple[Ops, object]:
    state = State()
    ctl = Controller(state, epoch=1, publish=None, clock=lambda: 1000.0)  # type: ignore[arg-type]
    ops = Ops(state, ctl)
    ops.apply([{"source": f"m#{i}", "document": d} for i, d in enumerate(MANIFEST)], "default")
    endpoint = next(r for r in events_api.router(ops).routes if getattr(r, "path", "").endswith("/events")).endpoint
    return ops, endpoint


async def next_line(it) -> dict:
    while True:
        raw = await asyncio.wait_for(it.__anext__(), 10)
        for ln in raw.decode().splitlines():
            if ln.strip():
                return json.loads(ln)


def test_the_stream_sends_the_events_then_each_change_woken_by_put_service(monkeypatch):
    monkeypatch.setattr(events_api, "POLL_SECONDS", 3600.0)  # only the change feed can wake it
    ops, endpoint = setup()
    st = ops.state

    async def run() -> None:
        resp = await endpoint(cluster="default", service="web", follow=True)
        it = resp.body_iterator
        first = await next_line(it)
        assert first["serviceName"] == "web" and "created" in first["events"][0]["message"]
        svc = st.services[("default", "db")]
        add_event(svc, "(service db) elsewhere.", 1001.0)
        st.put_service(svc)  # another service: no line
        svc = st.services[("default", "web")]
        add_event(svc, "(service web) has reached a steady state.", 1002.0)
        st.put_service(svc)
        got = await next_line(it)
        assert got["serviceName"] == "web" and got["events"][0]["message"].endswith("steady state.")
        assert len(st.service_watchers) == 1
        await it.aclose()
        assert st.service_watchers == set()

    asyncio.run(run())


def test_a_change_without_put_service_is_found_by_the_poll(monkeypatch):
    monkeypatch.setattr(events_api, "POLL_SECONDS", 0.05)
    ops, endpoint = setup()

    async def run() -> None:
        resp = await endpoint(cluster="default", service=None, follow=True)
        it = resp.body_iterator
        assert {(await next_line(it))["serviceName"] for _ in range(2)} == {"db", "web"}
        add_event(ops.state.services[("default", "db")], "(service db) quietly.", 1003.0)  # no put_service
        got = await next_line(it)
        assert got["serviceName"] == "db" and got["events"][0]["message"] == "(service db) quietly."
        await it.aclose()

    asyncio.run(run())


def test_without_follow_the_stream_ends_and_an_unknown_service_is_404():
    ops, endpoint = setup()

    async def run() -> list[bytes]:
        resp = await endpoint(cluster="default", service=None, follow=False)
        return [b async for b in resp.body_iterator]

    assert [json.loads(b)["serviceName"] for b in asyncio.run(run())] == ["db", "web"]
    with pytest.raises(UserError) as e:
        asyncio.run(endpoint(cluster="default", service="nope", follow=False))
    assert e.value.status == 404
