"""The API's logs and exec routes, relayed to the task's agent over MQTT (orchestrator.relay).

    GET  /v1/clusters/{cluster}/tasks/{task}/logs?container=&tail=&since=&follow=&timestamps=
    POST /v1/clusters/{cluster}/tasks/{task}/exec   {"container", "command": [...], "timeout"}

Both answer ``application/x-ndjson``, streamed (chunked transfer): ``{"stream": "stdout"|"stderr",
"data": "..."}`` lines, then one ``{"end": true, "exitCode", "code", "error", "truncated"}``. An error
known before the first byte (task never placed, node disconnected, no such container, node silent)
is a 4xx/5xx JSON error instead. Exec needs a writing (admin) token (core.auth: it is a POST) and is
recorded as an event of the task's service and in the orchestrator's log.
"""
from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from dockyard import log as dlog
from dockyard.wire_rr import MAX_EXEC_SECONDS, Chunk, End, ExecRequest, LogsRequest
from orchestrator.controller import add_event
from orchestrator.core import rr
from orchestrator.ops import Ops, UserError
from orchestrator.relay import Relay, RelayError

NDJSON = "application/x-ndjson"


class ExecBody(BaseModel):
    container: str | None = None
    command: list[str] = Field(min_length=1, max_length=1024)
    timeout: float = Field(default=300.0, gt=0, le=MAX_EXEC_SECONDS)


def _line(msg: Chunk | End) -> bytes:
    if isinstance(msg, Chunk):
        return (json.dumps({"stream": msg.stream, "data": msg.data}) + "\n").encode()
    return (json.dumps({"end": True, "exitCode": msg.exitCode, "code": msg.code, "error": msg.error,
                        "truncated": msg.truncated}) + "\n").encode()


def router(ops: Ops, relay: Relay) -> APIRouter:
    st = ops.state
    r = APIRouter()
    log = dlog.get("api")

    def target(cluster: str, ref: str) -> tuple[Any, str]:
        ops.cluster(cluster)
        t = ops.task(cluster, ref)
        node = st.nodes.get((cluster, t.nodeId)) if t.nodeId else None
        got = rr.route(t.taskId, t.nodeId, node is not None, bool(node and node.connected), t.lastStatus)
        if isinstance(got, rr.Refusal):
            raise UserError(got.error, got.status, hint=got.hint)
        return t, got

    async def relayed(cluster: str, node_id: str, req: LogsRequest | ExecRequest) -> StreamingResponse:
        try:
            call = await relay.open(cluster, node_id, req)
        except RelayError as e:
            raise UserError(str(e), 503) from None
        gen = call.messages()
        try:
            first = await gen.__anext__()
        except RelayError as e:
            await gen.aclose()
            raise UserError(str(e), 504, hint="check the node with: dockyard get nodes") from None
        if isinstance(first, End) and first.code is not None and first.code not in ("Timeout",):
            await gen.aclose()
            status, hint = rr.STATUS.get(first.code, (502, ""))
            raise UserError(first.error or first.code, status, field="container" if "Container" in first.code else "",
                            hint=hint)

        async def body() -> AsyncIterator[bytes]:
            async with aclosing(gen):
                yield _line(first)
                if isinstance(first, End):
                    return
                try:
                    async for msg in gen:
                        yield _line(msg)
                except RelayError as e:
                    yield _line(End(seq=0, code="Timeout", error=str(e)))

        return StreamingResponse(body(), media_type=NDJSON)

    @r.get("/v1/clusters/{cluster}/tasks/{task_ref}/logs")
    async def task_logs(cluster: str, task_ref: str, container: str | None = None, tail: int | None = None,
                        since: str | None = None, follow: bool = False, timestamps: bool = False) -> StreamingResponse:
        t, node_id = target(cluster, task_ref)
        if tail is not None and tail < 0:
            raise UserError("tail: must be 0 or more", 400, field="tail")
        try:
            since_ts = rr.parse_since(since, time.time()) if since else None
        except ValueError as e:
            raise UserError(str(e), 400, field="since") from None
        req = LogsRequest(taskId=t.taskId, container=container or None, tail=tail, since=since_ts, follow=follow,
                          timestamps=timestamps)
        return await relayed(cluster, node_id, req)

    @r.post("/v1/clusters/{cluster}/tasks/{task_ref}/exec")
    async def task_exec(cluster: str, task_ref: str, spec: ExecBody, request: Request) -> StreamingResponse:
        t, node_id = target(cluster, task_ref)
        who = getattr(request.state, "token_id", None)
        log.info("exec", cluster=cluster, taskId=t.taskId, node=node_id, container=spec.container,
                 command=spec.command, token=who)
        svc = st.services.get((cluster, t.serviceName)) if t.serviceName else None
        if svc is not None:
            add_event(svc, f"(service {svc.serviceName}) exec in task {t.taskId[:8]}"
                           f"{' container ' + spec.container if spec.container else ''}: {' '.join(spec.command)[:200]}"
                           f"{' (token ' + who + ')' if who else ''}", time.time())
            st.put_service(svc)
            st.flush()
        req = ExecRequest(taskId=t.taskId, container=spec.container or None, command=spec.command,
                          timeout=spec.timeout)
        return await relayed(cluster, node_id, req)

    return r
