"""Service events as a stream: ``GET /v1/clusters/{cluster}/events?service=&follow=``.

NDJSON, one ``{"serviceName", "events": [...]}`` line per service (its kept events, newest first, as the
service view has them), then, with ``follow``, another such line whenever a service's events change, until
the client goes away. Fed by the state's change feed (``State.service_watchers``, called on every
``put_service``), with a poll of the in-memory services every :data:`POLL_SECONDS` as the fallback for a
write that bypassed it; changes within :data:`COALESCE_SECONDS` go out together. A line is sent only when
the service's newest event or its count changed (:func:`signature`), so a busy service costs a comparison
per wake-up. The client (``dockyard events -f``) picks the new events out of the lines as it did out of
polled views.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from orchestrator.models import Service
from orchestrator.ops import Ops

NDJSON = "application/x-ndjson"
POLL_SECONDS = 2.0
COALESCE_SECONDS = 0.1
KEEPALIVE_SECONDS = 30.0  # an empty line now and then: a gone client is noticed, idle proxies keep the stream


def signature(s: Service) -> tuple[Any, ...]:
    """What changes when a service's events do (events are added newest first; a repeat bumps the count)."""
    e = s.events[0] if s.events else None
    return (len(s.events), e.id if e else None, e.count if e else 0)


def _line(s: Service) -> bytes:
    return (json.dumps({"serviceName": s.serviceName,
                        "events": [e.model_dump(mode="json") for e in s.events]}) + "\n").encode()


def router(ops: Ops) -> APIRouter:
    st = ops.state
    r = APIRouter()

    @r.get("/v1/clusters/{cluster}/events")
    async def events(cluster: str, service: str | None = None, follow: bool = False) -> StreamingResponse:
        ops.cluster(cluster)
        if service:
            ops.service(cluster, service)

        def matching() -> list[Service]:
            if service:
                s = st.services.get((cluster, service))
                return [s] if s is not None else []
            return sorted(st.cluster_services(cluster), key=lambda s: s.serviceName)

        async def body() -> AsyncIterator[bytes]:
            wake = asyncio.Event()

            def changed(key: tuple[str, str]) -> None:
                if key[0] == cluster and (service is None or key[1] == service):
                    wake.set()

            if follow:  # before the first lines: a change meanwhile wakes the loop below
                st.service_watchers.add(changed)
            sent: dict[str, tuple[Any, ...]] = {}
            try:
                for s in matching():
                    sent[s.serviceName] = signature(s)
                    yield _line(s)
                if not follow:
                    return
                loop = asyncio.get_running_loop()
                quiet_since = loop.time()
                while True:
                    try:
                        await asyncio.wait_for(wake.wait(), POLL_SECONDS)
                        await asyncio.sleep(COALESCE_SECONDS)
                    except TimeoutError:
                        pass
                    wake.clear()
                    out = []
                    for s in matching():
                        sig = signature(s)
                        if sent.get(s.serviceName) != sig:
                            sent[s.serviceName] = sig
                            out.append(_line(s))
                    if out:
                        quiet_since = loop.time()
                        yield b"".join(out)
                    elif loop.time() - quiet_since >= KEEPALIVE_SECONDS:
                        quiet_since = loop.time()
                        yield b"\n"
            finally:
                st.service_watchers.discard(changed)

        return StreamingResponse(body(), media_type=NDJSON)

    return r
