"""The metadata endpoint waits for the Docker bridge gateway instead of disabling itself for the agent's life.

An engine that is starting (or restarting after another test) can answer ``networks/bridge`` with
an error or without a gateway; the endpoint must still come up and hand out URIs once it has one."""
from __future__ import annotations

import asyncio
from typing import Any

from aiodocker.exceptions import DockerError

from agent import metadata_server as ms
from agent.state import NodeState

GATEWAY = {"IPAM": {"Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]}}


class Engine:
    """Answers ``networks/bridge`` from a script: an exception to raise or a body to return, then the last forever."""

    def __init__(self, *answers: Any) -> None:
        self.answers, self.calls = list(answers), 0

    async def _query_json(self, path: str) -> dict:
        assert path == "networks/bridge"
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, level: str):
        return lambda event, **kw: self.lines.append((level, event))


def server(engine: Engine, log: Log) -> ms.MetadataServer:
    return ms.MetadataServer(NodeState("n1", log), engine, "default", b"k" * 32, 0, log, bind="127.0.0.1")  # type: ignore[arg-type]


def test_a_gateway_that_appears_during_start_is_used(monkeypatch):
    monkeypatch.setattr(ms, "RETRY_DELAY", 0.001)
    engine, log = Engine(DockerError(500, {"message": "starting"}), {"IPAM": {"Config": []}}, GATEWAY), Log()

    async def run() -> str | None:
        srv = server(engine, log)
        try:
            assert await srv.start()
            return srv.uri("t" * 32, "app")
        finally:
            await srv.close()

    uri = asyncio.run(run())
    assert engine.calls == 3
    assert uri is not None and uri.startswith("http://172.17.0.1:")
    assert not [line for line in log.lines if line[0] in ("warning", "error")]


def test_without_a_gateway_the_endpoint_listens_and_keeps_looking(monkeypatch):
    monkeypatch.setattr(ms, "RETRY_DELAY", 0.001)
    monkeypatch.setattr(ms, "RETRY_DELAY_MAX", 0.001)
    no_gateway = {"IPAM": {"Config": [{"Subnet": "fd00::/64", "Gateway": "fd00::1"}]}}  # IPv6 only: not usable
    engine, log = Engine(*[no_gateway] * (ms.START_ATTEMPTS + 3), GATEWAY), Log()

    async def run() -> tuple[str | None, str | None]:
        srv = server(engine, log)
        try:
            assert await srv.start()
            before = srv.uri("t" * 32, "app")
            for _ in range(2000):  # until the background lookup finds it (bounded: ~2 s)
                if srv.address is not None:
                    break
                await asyncio.sleep(0.001)
            return before, srv.uri("t" * 32, "app")
        finally:
            await srv.close()

    before, after = asyncio.run(run())
    assert before is None
    assert after is not None and after.startswith("http://172.17.0.1:")
    assert any(lvl == "warning" and "no address yet" in e for lvl, e in log.lines)
    assert any(lvl == "info" and "has its address" in e for lvl, e in log.lines)


def test_the_gateway_of_a_bridge_that_reports_only_its_subnet_is_its_first_host_address():
    assert ms.gateway_of({"IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]}}) == "172.17.0.1"
    assert ms.gateway_of({"IPAM": {"Config": [{"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.254"}]}}) == "10.9.0.254"
    assert ms.gateway_of({"IPAM": {"Config": [{"Subnet": "fd00::/64"}]}}) is None
    assert ms.gateway_of({"IPAM": {"Config": [{"Subnet": "bogus"}]}}) is None
    assert ms.gateway_of({"IPAM": {"Config": None}}) is None
