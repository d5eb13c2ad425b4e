"""One-time join tokens (the shell around orchestrator.core.join): kept in the store, redeemed over the API.

``POST /v1/clusters/{cluster}/join-tokens`` (admin) makes one; ``POST /v1/join`` (open: the join token is the
credential, so core.auth lets it through without a bearer token) exchanges it once for the node's broker
credential, which the orchestrator creates in the broker's dynamic-security plugin as ``dockyard node join`` does.
The record is marked used before the broker is asked, with no await in between: two agents racing with one token
cannot both win. Records live in the store's meta table as the API tokens do (``join-token:<id>``).
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable

import structlog
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from dockyard import dynsec
from orchestrator.broker_admin import BrokerAdmin, BrokerAdmins
from orchestrator.core import join as core
from orchestrator.ops import UserError
from orchestrator.store import Store

KEY = "join-token:"
log = structlog.get_logger("orchestrator.join")


class JoinTokens:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store, self.clock = store, clock

    def create(self, cluster: str, node_id: str | None, ttl: float) -> tuple[str, core.JoinToken]:
        token, rec = core.new_join_token(cluster, node_id, ttl, self.clock())
        self._put(rec)
        return token, rec

    def get(self, token_id: str) -> core.JoinToken | None:
        raw = self.store.get_meta(KEY + token_id)
        return core.JoinToken(**json.loads(raw)) if raw else None

    def redeem(self, token: str, cluster: str, node_id: str) -> core.JoinToken | core.Refusal:
        got = core.parse(token)
        if got is None:
            return core.Refusal(401, "malformed join token (expected dyj_<id>_<secret>)")
        out = core.redeem(self.get(got[0]), got[1], cluster, node_id, self.clock())
        if isinstance(out, core.JoinToken):
            self._put(out)
        return out

    def _put(self, rec: core.JoinToken) -> None:
        self.store.set_meta(KEY + rec.id, json.dumps(dataclasses.asdict(rec)))


class CreateJoinToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttlSeconds: float = Field(default=3600.0, gt=0, le=core.MAX_TTL)
    nodeId: str | None = None


class Join(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1)
    cluster: str = Field(min_length=1)
    nodeId: str = Field(min_length=1)


def router(tokens: JoinTokens, broker_admin: BrokerAdmin | BrokerAdmins | None, fingerprint: str | None) -> APIRouter:
    """``fingerprint``: the API certificate's (``sha256:...``), printed with each token for the agent to pin."""
    r = APIRouter()

    def _names(cluster: str, node_id: str | None) -> None:
        for what, name in (("cluster", cluster), ("nodeId", node_id)):
            why = dynsec.invalid_name(name) if name is not None else None
            if why:
                raise UserError(f"{what} {name!r} {why}", 400, field=what)
        if broker_admin is None:
            raise UserError("this orchestrator manages no broker clients", 409,
                            hint="start it with --mqtt-credentials (docs/security.md)")

    @r.post("/v1/clusters/{cluster}/join-tokens")
    async def create_join_token(cluster: str, req: CreateJoinToken | None = None) -> dict:
        req = req or CreateJoinToken()
        _names(cluster, req.nodeId)
        token, rec = tokens.create(cluster, req.nodeId, req.ttlSeconds)
        log.info("join token created", id=rec.id, cluster=cluster, node=req.nodeId, expires_at=rec.expiresAt)
        return {"token": token, "id": rec.id, "cluster": cluster, "nodeId": rec.nodeId, "expiresAt": rec.expiresAt,
                "fingerprint": fingerprint}

    @r.post("/v1/join")
    async def join(req: Join) -> dict:
        _names(req.cluster, req.nodeId)
        assert broker_admin is not None
        out = tokens.redeem(req.token, req.cluster, req.nodeId)  # marked used here, before any await
        if isinstance(out, core.Refusal):
            log.warning("join refused", cluster=req.cluster, node=req.nodeId, error=out.error)
            raise UserError(out.error, out.status, field="token", hint=out.hint)
        password = dynsec.new_password()
        await broker_admin.apply(dynsec.join_plan(req.cluster, req.nodeId, password))
        log.info("node joined with a join token", id=out.id, cluster=req.cluster, node=req.nodeId)
        return {"cluster": req.cluster, "nodeId": req.nodeId, "username": dynsec.node_name(req.cluster, req.nodeId),
                "password": password}

    return r
