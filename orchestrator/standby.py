"""The HTTP API of a standby orchestrator: alive, not ready, and every other request forwarded to the leader.

boto3 and the AWS CLI do not follow a redirect of a POST, so a standby forwards instead of redirecting: the
request goes to the leader's API (from the lease row) as it came, Host header included (the ECS API's SigV4
signature covers it), and the leader's answer comes back as it is. Without a leader: 503 (retry later).
"""
from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dockyard import __version__
from orchestrator.leader import Lease

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade", "content-length"}


class Switch:
    """An ASGI app that serves whichever app it is given now (the standby's, then the leader's)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


def standby_app(lease: Lease) -> Starlette:
    client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))

    async def leader() -> str | None:
        return await asyncio.to_thread(lease.leader_url)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "role": "standby", "leader": await leader(), "version": __version__})

    async def readyz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "standby", "leader": await leader()}, status_code=503)

    async def forward(request: Request) -> Response:
        url = await leader()
        if url is None:
            return JSONResponse({"error": "no orchestrator leads yet", "hint": "retry in a few seconds"},
                                status_code=503, headers={"Retry-After": "1"})
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP]
        try:
            r = await client.request(request.method, url + request.url.path, params=request.url.query,
                                     headers=headers, content=await request.body())
        except httpx.HTTPError as exc:
            return JSONResponse({"error": f"the leader {url} cannot be reached: {exc}", "hint": "retry in a few seconds"},
                                status_code=503, headers={"Retry-After": "1"})
        out = {k: v for k, v in r.headers.items() if k.lower() not in _HOP and k.lower() != "content-encoding"}
        out["X-Dockyard-Forwarded-To"] = url
        return Response(r.content, status_code=r.status_code, headers=out)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz),
                             Route("/{path:path}", forward, methods=methods)])
