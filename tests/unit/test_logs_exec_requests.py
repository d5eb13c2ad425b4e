"""Logs and exec requests (pure parts and the agent's request server with a fake engine): which container, chunk
bounds, the send window, a gone requester, --since, where the API routes a request."""
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from agent.requests import RequestServer, Refused, clip, pick_container, response_topic_ok, split_text
from agent.runtime import ActualContainer
from dockyard import wire_rr
from dockyard.wire_rr import Cancel, Credit, ExecRequest, LogsRequest
from orchestrator.core import rr

NODE, CLUSTER = "n1", "c"
RESP = wire_rr.responses_topic(CLUSTER, NODE, "orch-1")


def ctr(task: str, name: str, state: str = "running", node: str = NODE) -> ActualContainer:
    return ActualContainer(id=f"id-{task}-{name}", task_id=task, container_name=name, node=node, state=state)


def test_pick_container_names_the_choices():
    cs = [ctr("t1", "web"), ctr("t1", "side"), ctr("t2", "web"), ctr("t3", "web", node="other")]
    assert pick_container(cs, NODE, "t2", None) == cs[2]
    assert pick_container(cs, NODE, "t1", "side") == cs[1]
    many = pick_container(cs, NODE, "t1", None)
    assert isinstance(many, Refused) and many.code == "ContainerRequired" and "side, web" in many.error
    missing = pick_container(cs, NODE, "t1", "db")
    assert isinstance(missing, Refused) and missing.code == "ContainerNotFound"
    assert pick_container(cs, NODE, "t3", None) == Refused("TaskNotOnNode", pick_container(cs, NODE, "t3", None).error)


def test_split_text_bounds_bytes_and_never_cuts_a_character():
    text = "é" * 10_000 + "abc"  # 2 bytes a character
    pieces = split_text(text, limit=1001)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= 1001 for p in pieces) and len(pieces) == 21
    assert split_text("") == [] and split_text("x") == ["x"]


def test_clip_at_the_limit():
    assert clip("hello", 10) == ("hello", False)
    assert clip("hello", 3) == ("hel", True)
    assert clip("ééé", 3) == ("é", True)


def test_responses_only_under_the_nodes_own_subtree():
    assert response_topic_ok(RESP, CLUSTER, NODE)
    for bad in (None, "", wire_rr.responses_topic(CLUSTER, "n2", "o"), wire_rr.responses_prefix(CLUSTER, NODE),
                RESP + "/#", wire_rr.requests_topic(CLUSTER, NODE)):
        assert not response_topic_ok(bad, CLUSTER, NODE), bad


def test_since_takes_durations_times_and_epochs():
    assert rr.parse_since("10m", 1000.0) == 400.0
    assert rr.parse_since("1h30m", 10_000.0) == 10_000.0 - 5400
    assert rr.parse_since("1700000000.5", 0) == 1700000000.5
    assert rr.parse_since("2023-11-14T22:13:20Z", 0) == 1700000000.0
    for bad in ("yesterday", "10", "2023-11-14T22:13:20"):
        if bad == "10":
            assert rr.parse_since(bad, 0) == 10.0  # bare numbers are epoch seconds
            continue
        with pytest.raises(ValueError, match="since"):
            rr.parse_since(bad, 0)


def test_route_a_request_to_the_tasks_node_even_once_stopped():
    assert rr.route("t", "n1", True, True, "STOPPED") == "n1"
    assert rr.route("t", None, False, False, "PROVISIONING").status == 409  # type: ignore[union-attr]
    assert rr.route("t", "n1", False, False, "RUNNING").status == 410  # type: ignore[union-attr]
    assert rr.route("t", "n1", True, False, "RUNNING").status == 503  # type: ignore[union-attr]
    assert set(rr.STATUS) == set(wire_rr.ErrorCode.__args__)  # every error code has a status


# ---- the agent's request server, with a fake engine ------------------------------------------------------------
class FakeExec:
    def __init__(self, out: list[tuple[str, str]], code: int) -> None:
        self.out, self.code = out, code

    async def output(self) -> AsyncIterator[tuple[str, str]]:
        for item in self.out:
            yield item

    async def exit_code(self) -> int | None:
        return self.code


class FakeEngine:
    def __init__(self, lines: list[str], follow_forever: bool = False) -> None:
        self.lines, self.forever = lines, follow_forever

    async def logs(self, container_id: str, req: LogsRequest) -> AsyncIterator[str]:
        for ln in self.lines:
            yield ln
        while self.forever:
            await asyncio.sleep(3600)

    def exec(self, container_id: str, command: list[str]) -> FakeExec:
        return FakeExec([("stdout", "out\n"), ("stderr", "err\n")], 3)


class Log:
    def __getattr__(self, _name: str):
        return lambda *a, **k: None


def server(engine, idle: float = 5.0) -> tuple[RequestServer, list[tuple[str, dict, bytes]]]:
    sent: list[tuple[str, dict, bytes]] = []

    async def publish(topic: str, payload: bytes, corr: bytes) -> None:
        sent.append((topic, json.loads(payload), corr))

    return RequestServer(CLUSTER, NODE, engine, publish, lambda: [ctr("t1", "web")], Log(), idle_seconds=idle), sent


async def settle(srv: RequestServer, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while srv.open:
            await asyncio.sleep(0.01)


def test_exec_answers_output_then_its_exit_code():
    async def go():
        srv, sent = server(FakeEngine([]))
        srv.handle(ExecRequest(taskId="t1", command=["sh"]).model_dump_json().encode(), RESP, b"k1")
        await settle(srv)
        return sent

    sent = asyncio.run(go())
    assert [m for _, m, _ in sent] == [
        {"kind": "chunk", "seq": 0, "stream": "stdout", "data": "out\n"},
        {"kind": "chunk", "seq": 1, "stream": "stderr", "data": "err\n"},
        {"kind": "end", "seq": 2, "exitCode": 3, "code": None, "error": None, "truncated": False}]
    assert {(t, c) for t, _, c in sent} == {(RESP, b"k1")}


def test_logs_wait_for_credit_beyond_the_window_and_end_when_the_requester_is_gone():
    async def go():
        srv, sent = server(FakeEngine([f"l{i}\n" for i in range(10)]), idle=0.3)
        srv.handle(LogsRequest(taskId="t1", window=2).model_dump_json().encode(), RESP, b"k")
        await asyncio.sleep(0.1)
        first = len(sent)  # seq 0 and 1: a window of 2 beyond the last ack (-1)
        srv.handle(Credit(ack=1).model_dump_json().encode(), None, b"k")
        await asyncio.sleep(0.1)
        second = len(sent)
        await settle(srv)  # no more credit: ended after idle_seconds, without an End (nobody listens)
        return first, second, sent

    first, second, sent = asyncio.run(go())
    assert (first, second) == (2, 4)
    assert len(sent) == 4 and all(m["kind"] == "chunk" for _, m, _ in sent)


def test_a_cancel_ends_a_follow_and_limits_truncate():
    async def go():
        srv, sent = server(FakeEngine(["a" * 100], follow_forever=True))
        srv.handle(LogsRequest(taskId="t1", follow=True).model_dump_json().encode(), RESP, b"f")
        await asyncio.sleep(0.05)
        assert srv.open
        srv.handle(Cancel().model_dump_json().encode(), None, b"f")
        await settle(srv)
        srv.handle(LogsRequest(taskId="t1", limitBytes=10).model_dump_json().encode(), RESP, b"g")
        await settle(srv)
        return sent

    sent = asyncio.run(go())
    assert [m["data"] for _, m, c in sent if c == b"f"] == ["a" * 100]  # no End after a cancel
    g = [m for _, m, c in sent if c == b"g"]
    assert g[0]["data"] == "a" * 10 and g[-1]["kind"] == "end" and g[-1]["truncated"]


def test_refusals_and_foreign_response_topics():
    async def go():
        srv, sent = server(FakeEngine([]))
        srv.handle(LogsRequest(taskId="nope").model_dump_json().encode(), RESP, b"a")
        srv.handle(ExecRequest(taskId="t1", container="db", command=["x"]).model_dump_json().encode(), RESP, b"b")
        srv.handle(b'{"kind": "logs"}', RESP, b"c")
        srv.handle(LogsRequest(taskId="t1").model_dump_json().encode(), wire_rr.responses_topic(CLUSTER, "n2", "o"), b"d")
        srv.handle(LogsRequest(taskId="t1").model_dump_json().encode(), RESP, None)
        await settle(srv)
        return sent

    ends = {c.decode(): m["code"] for _, m, c in asyncio.run(go())}
    assert ends == {"a": "TaskNotOnNode", "b": "ContainerNotFound", "c": "BadRequest"}
