"""The HTTP API of a standby orchestrator: alive, not ready; reads served from the database, writes forwarded to
the leader.

boto3 and the AWS CLI do not follow a redirect of a POST, so a standby forwards instead of redirecting: the
request goes to the leader's API (from the lease row) as it came, Host header included (the ECS API's SigV4
signature covers it), and the leader's answer comes back as it is. Without a leader: 503 (retry later).

Reads (GET/HEAD, but logs, which only the leader relays, and the event stream) are the same API over a State loaded from the database
(:class:`Reads`), at most ``max_age`` seconds old, so a standby answers them while the leader is paused or gone;
they show what the leader has written (its last pass), marked ``X-Dockyard-Standby-Read: AGE``.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dockyard import __version__
from orchestrator.leader import Lease

_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade", "content-length"}


ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
READ_MAX_AGE = 1.0  # seconds a standby's read view is reused before it is loaded again


class Reads:
    """The API over a State loaded from the database by ``build`` (in a thread), reloaded when older than
    ``max_age`` and a read comes."""

    def __init__(self, build: Callable[[], tuple[ASGIApp, Callable[[], None]]], max_age: float = READ_MAX_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.build, self.max_age, self.clock = build, max_age, clock  # build: (app, close its store)
        self._app: ASGIApp | None = None
        self._close: Callable[[], None] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def app(self) -> tuple[ASGIApp, float]:
        """The current read app and its age in seconds."""
        if self._app is None or self.clock() - self._at > self.max_age:
            async with self._lock:
                if self._app is None or self.clock() - self._at > self.max_age:
                    t0 = self.clock()
                    app, close = await asyncio.to_thread(self.build)
                    old, self._app, self._close, self._at = self._close, app, close, t0
                    if old is not None:
                        old()  # the previous view's connection (a request still in it gets an error, then retries)
        return self._app, self.clock() - self._at


def served_here(scope: Any) -> bool:
    """A request a standby answers from its read view: a read, not a health probe, not logs (the leader relays:
    ``.../tasks/T/logs``, ``.../services/S/logs``, ``.../logs/NAME``), not the event stream (fed by the leader's
    state changes; a read view is a snapshot replaced every second)."""
    path = scope.get("path", "")
    return (scope.get("type") == "http" and scope.get("method") in ("GET", "HEAD")
            and path not in ("/healthz", "/readyz") and not path.endswith("/logs") and "/logs/" not in path
            and not path.endswith("/events"))


class Standby:
    """ASGI: reads from :class:`Reads`, everything else to the forwarding app."""

    def __init__(self, forwarding: ASGIApp, reads: Reads | None) -> None:
        self.forwarding, self.reads = forwarding, reads

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if self.reads is None or not served_here(scope):
            await self.forwarding(scope, receive, send)
            return
        try:
            app, age = await self.reads.app()
        except Exception:  # noqa: BLE001 - the database unreachable: the leader may still answer
            await self.forwarding(scope, receive, send)
            return

        async def marked(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-dockyard-standby-read", f"{age:.1f}".encode())]}
            await send(message)
        await app(scope, receive, marked)


class Switch:
    """An ASGI app that serves whichever app it is given now (the standby's, then the leader's)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


def standby_app(lease: Lease, reads: Reads | None = None) -> ASGIApp:
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
    return Standby(Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz),
                                     Route("/{path:path}", forward, methods=methods)]), reads)
