"""HTTP JSON API under /v1 (FastAPI: typed with the same pydantic models, OpenAPI for free).

Every handler is `async def` so it runs on the event loop with the reconcile loop: the state
is single-threaded by construction, no locks.

User errors come back as 4xx ``{"error", "field", "hint"}`` (apply: ``errors`` per document);
nothing here ever returns a stack trace.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from dockyard import __version__, dynsec
from dockyard.wire import PROTOCOL_VERSION
from orchestrator import (
    autoscale_api,
    ecs_api,
    events_api,
    lb_views,
    logs_api,
    metrics,
    metrics_collector,
    observe_api,
    views,
)
from orchestrator.auth import Tokens
from orchestrator.broker_admin import BrokerAdmin, BrokerAdminError, BrokerAdmins
from orchestrator.core import auth as auth_core
from orchestrator.core import compat
from orchestrator.limits import MAX_DESIRED_COUNT, MAX_DOCUMENTS, BodyLimit
from orchestrator.models import RunTaskSpec
from orchestrator.ops import Ops, UserError
from orchestrator.store_errors import StoreUnavailable
from orchestrator.usage import UsageBook

LIST_PAGE = 500  # tasks per chunk of a streamed task list


async def task_list_body(tasks) -> AsyncIterator[bytes]:
    """``{"tasks": [...]}`` a chunk of LIST_PAGE tasks at a time, yielding to the event loop
    between chunks: the STOPPED tasks come from the store (100k of them are kept for 24 h in a
    busy cluster), and neither the whole list nor its JSON is ever held in memory at once."""
    yield b'{"tasks":['
    first = True
    chunk: list[str] = []
    for t in tasks:
        chunk.append(t.model_dump_json())
        if len(chunk) >= LIST_PAGE:
            yield (b"" if first else b",") + ",".join(chunk).encode()
            first, chunk = False, []
            await asyncio.sleep(0)
    if chunk:
        yield (b"" if first else b",") + ",".join(chunk).encode()
    yield b"]}"


class ApplyRequest(BaseModel):
    documents: list[Any] = Field(max_length=MAX_DOCUMENTS,
                                 description='[{"source": "file.yaml#1", "document": {...}}, ...]')
    dryRun: bool = False


class StopRequest(BaseModel):
    reason: str | None = None


class ScaleRequest(BaseModel):
    desiredCount: int = Field(ge=0, le=MAX_DESIRED_COUNT)


class SecretRequest(BaseModel):
    """CreateSecret / PutSecretValue: a new secret, or a new version of an existing one."""

    name: str
    secretString: str


class AccessKeyRequest(BaseModel):
    role: auth_core.Role = "admin"  # an ECS client deploys; a read-only key may Describe* and List* only


class TokenRequest(BaseModel):
    role: auth_core.Role = "read-only"
    name: str = Field(default="", max_length=200)


def create_app(ops: Ops, ready=lambda: True, loopback: bool = True, usage: UsageBook | None = None,
               self_target: str | None = None, broker_admin: BrokerAdmin | BrokerAdmins | None = None,
               tokens: Tokens | None = None,
               on_node_deleted: Callable[[str, str], Awaitable[None]] | None = None,
               relay: Any = None) -> FastAPI:
    """``loopback``: the listener is on a loopback address (the ECS API's development mode);
    ``usage``: the bus's book of task samples (``dockyard top``); ``self_target``: the
    orchestrator's HOST:PORT as Prometheus reaches it (its own SD target); ``tokens``: bearer
    tokens are required (core.auth); None: no authentication (--insecure-no-auth). The ECS API
    (``POST /`` with ``X-Amz-Target``) is authenticated by SigV4 instead (ecs_api.auth)."""
    app = FastAPI(title="dockyard", version=__version__, openapi_url="/v1/openapi.json", docs_url="/v1/docs",
                  redoc_url=None)
    st = ops.state
    usage = usage if usage is not None else UsageBook()
    registry = metrics_collector.registry_for(st, usage)
    app.include_router(observe_api.router(ops, usage, self_target))
    app.include_router(autoscale_api.router(ops))
    app.include_router(events_api.router(ops))
    if relay is not None:  # logs and exec, relayed to agents (orchestrator.relay)
        app.include_router(logs_api.router(ops, relay))

    @app.exception_handler(UserError)
    async def _user_error(_: Request, exc: UserError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if not loc:  # the body as a whole: missing, or not a JSON object
            return JSONResponse({"error": f"request body: {first['msg']}", "field": "body",
                                 "hint": "send a JSON object (Content-Type: application/json)"}, status_code=400)
        return JSONResponse({"error": f"{loc}: {first['msg']}", "field": loc}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own: an unknown route or method, and a body it cannot parse as JSON (400)."""
        body: dict[str, Any] = {"error": str(exc.detail)}
        if exc.status_code == 400:
            body.update(field="body", hint="send a JSON object, UTF-8 encoded (Content-Type: application/json)")
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(BrokerAdminError)
    async def _broker_error(_: Request, exc: BrokerAdminError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(_: Request, exc: StoreUnavailable) -> JSONResponse:
        ops.ctl.log.error("store unavailable; request refused", error=str(exc))
        return JSONResponse({"error": str(exc), "hint": "the request was not stored; retry later"},
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        ops.ctl.log.exception("API error")
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    app.add_middleware(BodyLimit)  # inside _count (counted) and so after authentication

    @app.middleware("http")
    async def _count(request: Request, call_next):
        t0 = time.perf_counter()
        if tokens is not None:  # core.auth decides (the ECS API on "/" checks SigV4 itself)
            d = auth_core.decide(request.method, request.url.path, request.headers.get("authorization"),
                                 tokens.by_id, tokens.anonymous_reads)
            if d.status != 200:
                metrics.API_REQUESTS.labels(method=request.method, status=str(d.status)).inc()
                headers = {"WWW-Authenticate": "Bearer"} if d.status == 401 else None
                return JSONResponse({"error": d.error, "hint": d.hint}, status_code=d.status, headers=headers)
            request.state.token_id = d.token_id  # who did it, for audit events (exec)
        response = await call_next(request)
        status = str(response.status_code)
        metrics.API_REQUESTS.labels(method=request.method, status=status).inc()
        metrics.API_REQUEST_SECONDS.labels(method=request.method, route=metrics_collector.route_of(request.scope),
                                           status=status).observe(time.perf_counter() - t0)
        return response

    ecs_api.mount(app, ops, loopback=loopback)

    @app.get("/v1/accesskeys")
    async def list_access_keys() -> dict:
        return {"accessKeys": ops.access_keys()}

    @app.post("/v1/accesskeys")
    async def create_access_key(body: AccessKeyRequest | None = None) -> dict:
        # the only time the secret is shown
        return {"accessKey": ops.create_access_key(body.role if body else "admin")}

    @app.delete("/v1/accesskeys/{key_id}")
    async def delete_access_key(key_id: str) -> dict:
        return {"accessKey": ops.delete_access_key(key_id)}

    # ---- API tokens (admin only: core.auth lets a read-only token GET them, so check the role here) ----------
    def _tokens_admin(request: Request) -> Tokens:
        if tokens is None:
            raise UserError("this orchestrator runs without authentication (--insecure-no-auth)", 409)
        got = auth_core.parse(request.headers.get("authorization"))
        rec = tokens.by_id.get(got[0]) if got else None
        if rec is None or rec.role != "admin":
            raise UserError("only an admin token may manage tokens", 403, hint="use a token with the admin role")
        return tokens

    @app.get("/v1/tokens")
    async def list_tokens(request: Request) -> dict:
        t = _tokens_admin(request)
        return {"tokens": [{"id": r.id, "role": r.role, "name": r.name, "createdAt": r.createdAt}
                           for r in sorted(t.by_id.values(), key=lambda r: r.createdAt)]}

    @app.post("/v1/tokens")
    async def create_token(request: Request, body: TokenRequest) -> dict:
        token, rec = _tokens_admin(request).create(body.role, body.name)
        ops.ctl.log.info("API token created", token_id=rec.id, role=rec.role, name=rec.name)
        return {"id": rec.id, "role": rec.role, "name": rec.name, "token": token}

    @app.delete("/v1/tokens/{token_id}")
    async def revoke_token(request: Request, token_id: str) -> dict:
        if not _tokens_admin(request).revoke(token_id):
            raise UserError(f"token {token_id!r} not found", 404, hint="see `dockyard token list`")
        ops.ctl.log.warning("API token revoked", token_id=token_id)
        return {"id": token_id, "revoked": True}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok = ready()
        return JSONResponse({"status": "ok" if ok else "starting"}, status_code=200 if ok else 503)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = ready()
        return JSONResponse({"status": "ok" if ok else "starting", "epoch": ops.ctl.epoch, "version": __version__,
                             "protocolVersion": PROTOCOL_VERSION}, status_code=200 if ok else 503)

    @app.get("/v1/version")
    async def version() -> dict:
        """The orchestrator's release and wire protocol, and the agents' protocols it accepts."""
        return {"version": __version__, "protocolVersion": PROTOCOL_VERSION,
                "acceptsAgentProtocols": list(range(PROTOCOL_VERSION - compat.BEHIND_ACCEPTED, PROTOCOL_VERSION + 1))}

    @app.get("/metrics")
    async def prom() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # ---- apply / delete ------------------------------------------------------------------
    @app.post("/v1/apply")
    async def apply(req: ApplyRequest, cluster: str = "default") -> dict:
        return {"results": ops.apply(req.documents, cluster, req.dryRun)}

    @app.post("/v1/delete")
    async def delete_docs(req: ApplyRequest, cluster: str = "default") -> dict:
        return {"results": ops.delete_documents(req.documents, cluster)}

    # ---- clusters ------------------------------------------------------------------------
    @app.get("/v1/clusters")
    async def list_clusters() -> dict:
        return {"clusters": [views.cluster_view(st, c) for c in sorted(st.clusters.values(), key=lambda c: c.clusterName)]}

    @app.get("/v1/clusters/{cluster}")
    async def get_cluster(cluster: str) -> dict:
        return {"cluster": views.cluster_view(st, ops.cluster(cluster))}

    @app.delete("/v1/clusters/{cluster}")
    async def delete_cluster(cluster: str) -> dict:
        return {"cluster": ops.delete_cluster(cluster).model_dump(mode="json")}

    # ---- task definitions ----------------------------------------------------------------
    @app.get("/v1/taskdefinitions")
    async def list_taskdefs(family: str | None = None, status: Literal["ACTIVE", "INACTIVE", "ALL"] = "ACTIVE") -> dict:
        out = [td for fam, revs in st.taskdefs.items() if family in (None, fam) for td in revs.values()
               if status == "ALL" or td.status == status]
        out.sort(key=lambda td: (td.family, td.revision))
        return {"taskDefinitions": [td.model_dump(mode="json") for td in out]}

    @app.get("/v1/taskdefinitions/{ref}")
    async def get_taskdef(ref: str) -> dict:
        return {"taskDefinition": ops.taskdef(ref).model_dump(mode="json")}

    @app.delete("/v1/taskdefinitions/{ref}")
    async def deregister_taskdef(ref: str) -> dict:
        return {"taskDefinition": ops.deregister_taskdef(ref).model_dump(mode="json")}

    # ---- load balancing ----------------------------------------------------------------
    @app.get("/v1/clusters/{cluster}/targetgroups")
    async def list_target_groups(cluster: str) -> dict:
        return {"targetGroups": [lb_views.target_group_view(ops.ctl, tg) for (c, _), tg in sorted(st.target_groups.items())
                                 if c == cluster]}

    @app.get("/v1/clusters/{cluster}/targetgroups/{name}")
    async def get_target_group(cluster: str, name: str) -> dict:
        tg = st.target_groups.get((cluster, name))
        if tg is None:
            raise UserError(f"target group {name} not found in cluster {cluster}", 404, field="name",
                            hint="list them with: dockyard get targetgroups")
        return {"targetGroup": lb_views.target_group_view(ops.ctl, tg, targets=True)}

    @app.delete("/v1/clusters/{cluster}/targetgroups/{name}")
    async def delete_target_group(cluster: str, name: str) -> dict:
        return {"targetGroup": lb_views.target_group_view(ops.ctl, ops.delete_target_group(cluster, name))}

    @app.get("/v1/clusters/{cluster}/loadbalancers")
    async def list_load_balancers(cluster: str) -> dict:
        return {"loadBalancers": [lb_views.load_balancer_view(ops.ctl, lb) for (c, _), lb in sorted(st.load_balancers.items())
                                  if c == cluster]}

    @app.delete("/v1/clusters/{cluster}/loadbalancers/{name}")
    async def delete_load_balancer(cluster: str, name: str) -> dict:
        return {"loadBalancer": lb_views.load_balancer_view(ops.ctl, ops.delete_load_balancer(cluster, name))}

    # ---- services ------------------------------------------------------------------------
    @app.get("/v1/clusters/{cluster}/services")
    async def list_services(cluster: str) -> dict:
        return {"services": [views.service_view(st, s) for s in sorted(st.cluster_services(cluster), key=lambda s: s.serviceName)]}

    @app.get("/v1/clusters/{cluster}/services/{name}")
    async def get_service(cluster: str, name: str) -> dict:
        return {"service": views.service_view(st, ops.service(cluster, name))}

    @app.delete("/v1/clusters/{cluster}/services/{name}")
    async def delete_service(cluster: str, name: str) -> dict:
        return {"service": views.service_view(st, ops.delete_service(cluster, name))}

    @app.post("/v1/clusters/{cluster}/services/{name}/scale")
    async def scale(cluster: str, name: str, req: ScaleRequest) -> dict:
        return {"service": views.service_view(st, ops.scale(cluster, name, req.desiredCount))}

    @app.get("/v1/clusters/{cluster}/services/{name}/deployments")
    async def deployments(cluster: str, name: str) -> dict:
        s = ops.service(cluster, name)
        return {"deployments": [d.model_dump(mode="json") for d in sorted(s.deployments, key=lambda d: -d.createdAt)]}

    @app.post("/v1/clusters/{cluster}/services/{name}/rollback")
    async def rollback(cluster: str, name: str) -> dict:
        return {"service": views.service_view(st, ops.rollback(cluster, name))}

    @app.post("/v1/clusters/{cluster}/services/{name}/force-new-deployment")
    async def force_new_deployment(cluster: str, name: str) -> dict:
        return {"service": views.service_view(st, ops.force_new_deployment(cluster, name))}

    # ---- secrets (names, versions and dates: a value is never returned) --------------------
    @app.get("/v1/secrets")
    async def list_secrets() -> dict:
        return {"secrets": [m.model_dump() for m in ops.secrets()]}

    @app.post("/v1/secrets")
    async def put_secret(req: SecretRequest) -> dict:
        return {"secret": ops.put_secret(req.name, req.secretString).model_dump()}

    @app.get("/v1/secrets/{name:path}")
    async def get_secret(name: str) -> dict:
        return {"secret": ops.secret(name).model_dump()}

    @app.delete("/v1/secrets/{name:path}")
    async def delete_secret(name: str) -> dict:
        return {"secret": ops.delete_secret(name).model_dump()}

    # ---- tasks ---------------------------------------------------------------------------
    @app.get("/v1/clusters/{cluster}/tasks")
    async def list_tasks(cluster: str, desiredStatus: Literal["RUNNING", "STOPPED"] | None = None,
                         service: str | None = None, family: str | None = None,
                         node: str | None = None, stopped: bool = True) -> StreamingResponse:
        """Every task of the cluster, the STOPPED ones kept included (``stopped=false``: only
        those not yet STOPPED, read from memory alone), oldest first; filtered by desiredStatus,
        service, node, family."""
        tasks = st.iter_tasks(cluster, service=service or None, node=None if service else node or None,
                              desired=desiredStatus, family=family, stopped=stopped)
        return StreamingResponse(task_list_body(tasks), media_type="application/json")

    @app.post("/v1/clusters/{cluster}/tasks")
    async def run_task(cluster: str, spec: RunTaskSpec) -> dict:
        return {"tasks": [t.model_dump(mode="json") for t in ops.run_task(cluster, spec)]}

    @app.get("/v1/clusters/{cluster}/tasks/{ref}")
    async def get_task(cluster: str, ref: str) -> dict:
        return {"task": ops.task(cluster, ref).model_dump(mode="json")}

    @app.post("/v1/clusters/{cluster}/tasks/{ref}/stop")
    async def stop_task(cluster: str, ref: str, req: StopRequest | None = None) -> dict:
        return {"task": ops.stop_task(cluster, ref, req.reason if req else None).model_dump(mode="json")}

    # ---- nodes ---------------------------------------------------------------------------
    @app.get("/v1/clusters/{cluster}/nodes")
    async def list_nodes(cluster: str) -> dict:
        return {"nodes": [views.node_view(st, n) for n in sorted(st.cluster_nodes(cluster), key=lambda n: n.nodeId)]}

    @app.get("/v1/clusters/{cluster}/nodes/{node_id}")
    async def get_node(cluster: str, node_id: str) -> dict:
        return {"node": views.node_view(st, ops.node(cluster, node_id))}

    @app.delete("/v1/clusters/{cluster}/nodes/{node_id}")
    async def delete_node(cluster: str, node_id: str, force: bool = False) -> dict:
        """``force``: a connected node too: its broker credential is revoked first (the broker disconnects it),
        its tasks stopped and replaced elsewhere, its retained topics cleared."""
        if force:
            ops.node(cluster, node_id)  # 404 before touching the broker
            if broker_admin is not None and dynsec.invalid_name(cluster) is None and dynsec.invalid_name(node_id) is None:
                await broker_admin.apply(dynsec.forget_plan(cluster, node_id))
        n = ops.delete_node(cluster, node_id, force=force)
        if force and on_node_deleted is not None:
            await on_node_deleted(cluster, node_id)
        return {"node": n.model_dump(mode="json")}

    @app.post("/v1/clusters/{cluster}/nodes/{node_id}/drain")
    async def drain(cluster: str, node_id: str) -> dict:
        return {"node": views.node_view(st, ops.set_node_status(cluster, node_id, "DRAINING"))}

    @app.post("/v1/clusters/{cluster}/nodes/{node_id}/activate")
    async def activate(cluster: str, node_id: str) -> dict:
        return {"node": views.node_view(st, ops.set_node_status(cluster, node_id, "ACTIVE"))}

    # ---- broker credentials of nodes (Mosquitto's dynamic-security plugin, docs/security.md) ----------------
    def _admin(cluster: str, node_id: str) -> BrokerAdmin | BrokerAdmins:
        for what, name in (("cluster", cluster), ("node", node_id)):
            why = dynsec.invalid_name(name)
            if why:
                raise UserError(f"{what} name {name!r} {why}", 400, field=what)
        if broker_admin is None:
            raise UserError("this orchestrator manages no broker clients", 409,
                            hint="start it with --mqtt-credentials (docs/security.md)")
        return broker_admin

    @app.post("/v1/clusters/{cluster}/nodes/{node_id}/credentials")
    async def join_node(cluster: str, node_id: str) -> dict:
        """(Re)create the node's broker client: its previous credential stops working."""
        admin = _admin(cluster, node_id)
        password = dynsec.new_password()
        await admin.apply(dynsec.join_plan(cluster, node_id, password))
        ops.ctl.log.info("node broker credential issued", node=node_id, cluster=cluster)
        return {"cluster": cluster, "nodeId": node_id, "username": dynsec.node_name(cluster, node_id),
                "password": password}

    @app.delete("/v1/clusters/{cluster}/nodes/{node_id}/credentials")
    async def revoke_node(cluster: str, node_id: str) -> dict:
        """Delete the node's broker client: the broker disconnects it and refuses it from now on."""
        await _admin(cluster, node_id).apply(dynsec.revoke_plan(cluster, node_id))
        ops.ctl.log.warning("node broker credential revoked", node=node_id, cluster=cluster)
        return {"cluster": cluster, "nodeId": node_id, "revoked": True}

    return app
