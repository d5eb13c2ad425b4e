"""A standby's reads (orchestrator.standby): which requests it answers from its read view, how long a view is
reused, and that a view it cannot build falls back to forwarding. Pure ASGI, no I/O."""
from __future__ import annotations

import asyncio

from orchestrator.standby import Reads, Standby, served_here


def http(method: str, path: str) -> dict:
    return {"type": "http", "method": method, "path": path, "headers": []}


def test_reads_are_served_here_writes_health_and_logs_are_not():
    assert served_here(http("GET", "/v1/clusters/c/services"))
    assert served_here(http("HEAD", "/metrics"))
    assert not served_here(http("POST", "/v1/apply"))
    assert not served_here(http("POST", "/"))  # the ECS API: the leader answers (Describe* too)
    assert not served_here(http("GET", "/healthz")) and not served_here(http("GET", "/readyz"))
    assert not served_here(http("GET", "/v1/clusters/c/tasks/t/logs"))  # relayed by the leader only
    assert not served_here(http("GET", "/v1/clusters/c/services/web/logs"))
    assert not served_here(http("GET", "/v1/clusters/c/logs/web"))
    assert not served_here(http("GET", "/v1/clusters/c/events"))  # a stream of the leader's changes
    assert not served_here({"type": "websocket", "path": "/x"})


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def app_named(name: str):  # noqa: ANN201
    async def app(scope, receive, send):  # noqa: ANN001
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": name.encode()})
    return app


def test_a_view_is_reused_within_its_age_then_rebuilt_and_the_old_one_closed():
    clock, built, closed = Clock(), [], []

    def build():  # noqa: ANN202
        n = f"v{len(built)}"
        built.append(n)
        return app_named(n), lambda: closed.append(n)
    reads = Reads(build, max_age=1.0, clock=clock)

    async def go() -> None:
        await reads.app()
        clock.t += 0.5
        _, age = await reads.app()
        assert built == ["v0"] and age == 0.5
        clock.t += 0.6
        await reads.app()
        assert built == ["v0", "v1"] and closed == ["v0"]
    asyncio.run(go())


def call(app, scope) -> tuple[int, dict, bytes]:  # noqa: ANN001
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(m: dict) -> None:
        sent.append(m)
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_reads_come_from_the_view_marked_with_its_age_and_the_rest_is_forwarded():
    clock = Clock()
    standby = Standby(app_named("forwarded"), Reads(lambda: (app_named("view"), lambda: None), clock=clock))
    status, headers, body = call(standby, http("GET", "/v1/clusters"))
    assert (status, body) == (200, b"view") and headers[b"x-dockyard-standby-read"] == b"0.0"
    assert call(standby, http("POST", "/v1/apply"))[2] == b"forwarded"
    assert call(standby, http("GET", "/healthz"))[2] == b"forwarded"


def test_a_view_that_cannot_be_built_falls_back_to_the_leader():
    def broken():  # noqa: ANN202
        raise OSError("database unreachable")
    standby = Standby(app_named("forwarded"), Reads(broken))
    assert call(standby, http("GET", "/v1/clusters"))[2] == b"forwarded"
    assert call(Standby(app_named("forwarded"), None), http("GET", "/v1/clusters"))[2] == b"forwarded"
