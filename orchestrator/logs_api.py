"""The API's logs and exec routes, relayed to the task's agent over MQTT (orchestrator.relay).

    GET  /v1/clusters/{cluster}/tasks/{task}/logs?container=&tail=&since=&follow=&timestamps=
    GET  /v1/clusters/{cluster}/services/{service}/logs?...   (the same query)
    GET  /v1/clusters/{cluster}/logs/{name}?...               (a task or a service: core.service_logs.resolve)
    POST /v1/clusters/{cluster}/tasks/{task}/exec   {"container", "command": [...], "timeout"}

Both answer ``application/x-ndjson``, streamed (chunked transfer): ``{"stream": "stdout"|"stderr",
"data": "..."}`` lines, then one ``{"end": true, "exitCode", "code", "error", "truncated"}``. An error
known before the first byte (task never placed, node disconnected, no such container, node silent)
is a 4xx/5xx JSON error instead. A service's logs start with ``{"sources": [{"task", "container", "node",
"prefix"}], "skipped": [...]}`` and carry ``{"source": i, "stream", "data"}`` lines (one log line each),
``{"source": i, "error", "code"}`` for a task container that could not be read, then the end
(orchestrator.service_logs: merged by time, interleaved as they arrive with ``follow``). Exec needs a writing (admin) token (core.auth: it is a POST) and is
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
from orchestrator.core import service_logs as sl
from orchestrator.ops import Ops, UserError
from orchestrator.relay import Relay, RelayError
from orchestrator.service_logs import Item, close_all, interleaved, merged, source_items

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


def _item_line(item: Item) -> bytes:
    if item.kind == "line":
        return (json.dumps({"source": item.index, "stream": item.stream, "data": item.data}) + "\n").encode()
    return (json.dumps({"source": item.index, "error": item.data, "code": item.code}) + "\n").encode()


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

    def logs_request(task_id: str, container: str | None, tail: int | None, since: str | None, follow: bool,
                     timestamps: bool) -> LogsRequest:
        if tail is not None and tail < 0:
            raise UserError("tail: must be 0 or more", 400, field="tail")
        try:
            since_ts = rr.parse_since(since, time.time()) if since else None
        except ValueError as e:
            raise UserError(str(e), 400, field="since") from None
        return LogsRequest(taskId=task_id, container=container or None, tail=tail, since=since_ts, follow=follow,
                           timestamps=timestamps)

    async def logs_of_task(cluster: str, task_ref: str, container: str | None, tail: int | None, since: str | None,
                           follow: bool, timestamps: bool) -> StreamingResponse:
        t, node_id = target(cluster, task_ref)
        return await relayed(cluster, node_id, logs_request(t.taskId, container, tail, since, follow, timestamps))

    async def logs_of_service(cluster: str, name: str, container: str | None, tail: int | None, since: str | None,
                              follow: bool, timestamps: bool) -> StreamingResponse:
        ops.cluster(cluster)
        svc = ops.service(cluster, name)
        base = logs_request("-", container, tail, since, follow, timestamps or not follow)
        nodes = {n.nodeId: n.connected for n in st.cluster_nodes(cluster)}
        srcs, skipped = sl.sources(svc.serviceName, st.iter_tasks(cluster, service=name), nodes, container or None,
                                   time.time())
        if not srcs:
            raise UserError(f"service {name} has no task containers to read logs from"
                            f"{': ' + skipped[0].error if skipped else ''}", 409,
                            hint="a task has logs once it is placed; see: dockyard describe service " + name)
        gens = [source_items(relay, cluster, i, s, base.model_copy(update={"taskId": s.task_id,
                                                                             "container": s.container}),
                             strip=not timestamps) for i, s in enumerate(srcs)]
        head = {"sources": [{"task": s.task_id, "container": s.container, "node": s.node_id, "prefix": s.prefix}
                            for s in srcs],
                "skipped": [{"task": k.task_id, "node": k.node_id, "error": k.error} for k in skipped]}

        async def body() -> AsyncIterator[bytes]:
            truncated = False
            try:
                yield (json.dumps(head) + "\n").encode()
                async with aclosing((interleaved if follow else merged)(gens)) as items:
                    async for item in items:
                        if item.kind == "end":
                            truncated = truncated or item.truncated
                        else:
                            yield _item_line(item)
                yield (json.dumps({"end": True, "exitCode": None, "code": None, "error": None,
                                   "truncated": truncated}) + "\n").encode()
            finally:
                await close_all(gens)

        return StreamingResponse(body(), media_type=NDJSON)

    @r.get("/v1/clusters/{cluster}/tasks/{task_ref}/logs")
    async def task_logs(cluster: str, task_ref: str, container: str | None = None, tail: int | None = None,
                        since: str | None = None, follow: bool = False, timestamps: bool = False) -> StreamingResponse:
        return await logs_of_task(cluster, task_ref, container, tail, since, follow, timestamps)

    @r.get("/v1/clusters/{cluster}/services/{name}/logs")
    async def service_logs(cluster: str, name: str, container: str | None = None, tail: int | None = None,
                           since: str | None = None, follow: bool = False,
                           timestamps: bool = False) -> StreamingResponse:
        return await logs_of_service(cluster, name, container, tail, since, follow, timestamps)

    @r.get("/v1/clusters/{cluster}/logs/{ref}")
    async def logs(cluster: str, ref: str, container: str | None = None, tail: int | None = None,
                   since: str | None = None, follow: bool = False, timestamps: bool = False) -> StreamingResponse:
        """A task's or a service's logs, by name (core.service_logs.resolve)."""
        ops.cluster(cluster)
        t = st.task(ref)
        exact = t is not None and t.cluster == cluster
        has_service = not exact and (cluster, ref) in st.services
        matches = 0 if exact or has_service else len(st.task_ids(cluster, ref, limit=2))
        got = sl.resolve(cluster, ref, exact, has_service, matches)
        if isinstance(got, rr.Refusal):
            raise UserError(got.error, got.status, hint=got.hint)
        of = logs_of_task if got == "task" else logs_of_service
        return await of(cluster, ref, container, tail, since, follow, timestamps)

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
