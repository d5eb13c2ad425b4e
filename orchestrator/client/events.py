"""``events [-f] [--service S]``: service events, oldest first; ``-f`` keeps printing new ones.

``-f`` follows the API's event stream (``GET .../events?follow=true``, orchestrator.events_api: a line
with a service's kept events whenever they change); against an orchestrator without it (404), it polls
the services' views (each keeps its latest 100 events) every POLL_SECONDS. Either way an event is new
when its id was not shown yet, or when its repeat count grew (the orchestrator collapses a repeated
message into one event with a count).
"""
from __future__ import annotations

from typing import Any

import click

from orchestrator import render
from orchestrator.client.api import unwrap
from orchestrator.client.errors import ApiError
from orchestrator.client.logs import ndjson
from orchestrator.client.session import Session, cluster_option, out, pass_session

POLL_SECONDS = 1.0


def fresh_events(services: list[dict[str, Any]], seen: dict[str, int]) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, int]]:
    """(the events not shown yet as (service, event), oldest first; ``seen`` updated with them).
    Pure: ``seen`` (event id -> count shown) is not changed."""
    new: list[tuple[str, dict[str, Any]]] = []
    after = dict(seen)
    for s in services:
        for e in s.get("events") or []:
            eid, count = str(e.get("id")), int(e.get("count") or 1)
            if after.get(eid) != count:
                after[eid] = count
                new.append((str(s.get("serviceName")), e))
    new.sort(key=lambda pair: (render.to_epoch(pair[1].get("createdAt")) or 0, str(pair[1].get("id"))))
    return new, after


def event_line(service: str, e: dict[str, Any]) -> str:
    msg = str(e.get("message"))
    if (e.get("count") or 1) > 1:
        msg = f"{msg} (x{e['count']})"
    return f"{render.timestamp(e.get('createdAt'))}  {service}  {msg}"


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events (Ctrl-C to stop).")
@click.option("--service", metavar="NAME", help="Only this service's events.")
@cluster_option
@pass_session
def events(s: Session, follow: bool, service: str | None) -> None:
    """Show service events (deployments, placement failures, stopped tasks, steady state)."""
    api, clock = s.api, s.clock

    def services() -> list[dict[str, Any]]:
        if service:
            return [unwrap(api.get(api.cpath("services", service)), "service")]
        return list(api.get(api.cpath("services")).get("services") or [])

    seen: dict[str, int] = {}

    def show(listed: list[dict[str, Any]]) -> None:
        nonlocal seen
        new, seen = fresh_events(listed, seen)
        for name, e in new:
            out(event_line(name, e))

    show(services())
    if not follow:
        return
    try:
        for item in ndjson(api, "GET", api.cpath("events"), {"service": service, "follow": True}, timeout=None):
            show([item])
        return
    except ApiError as e:
        if e.status != 404 or not stream_missing(e):
            raise
    while True:  # an orchestrator without the stream
        clock.sleep(POLL_SECONDS)
        show(services())


def stream_missing(e: ApiError) -> bool:
    """A 404 of the route itself (an older orchestrator: FastAPI's ``Not Found``), not of a service."""
    return e.lines == ["Not Found"]
