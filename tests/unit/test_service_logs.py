"""``logs SERVICE``: what a name means, which task containers are read, prefixes, lines, the time merge and the
interleaving that a silent source does not hold up (fake relay calls, no I/O)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from dockyard.wire_rr import Chunk, End, LogsRequest
from orchestrator.core import service_logs as sl
from orchestrator.core.rr import Refusal
from orchestrator.relay import RelayError
from orchestrator.service_logs import Item, interleaved, merged, source_items

NOW = 1_000_000.0


@dataclass
class C:
    name: str


@dataclass
class T:
    taskId: str
    nodeId: str | None
    lastStatus: str = "RUNNING"
    createdAt: float = 0.0
    stoppedAt: float | None = None
    containers: list[C] = field(default_factory=lambda: [C("web")])


def test_resolve_full_task_id_then_service_name_then_unique_prefix():
    assert sl.resolve("c", "ab" * 16, exact_task=True, service_exists=True, prefix_matches=1) == "task"
    assert sl.resolve("c", "db", exact_task=False, service_exists=True, prefix_matches=3) == "service"
    assert sl.resolve("c", "ab12", exact_task=False, service_exists=False, prefix_matches=1) == "task"
    many = sl.resolve("c", "ab", exact_task=False, service_exists=False, prefix_matches=2)
    assert isinstance(many, Refusal) and many.status == 409 and "ambiguous" in many.error and "more characters" in many.hint
    none = sl.resolve("c", "nope", exact_task=False, service_exists=False, prefix_matches=0)
    assert isinstance(none, Refusal) and none.status == 404 and "task or service 'nope' not found" in none.error
    assert "get services" in none.hint


def test_sources_live_first_then_recent_stopped_newest_first_skipping_unplaced_old_and_unreachable():
    tasks = [
        T("s-old", "n1", "STOPPED", createdAt=1, stoppedAt=NOW - sl.STOPPED_LOOKBACK - 1),
        T("s-1", "n1", "STOPPED", createdAt=2, stoppedAt=NOW - 100),
        T("s-2", "n2", "STOPPED", createdAt=3, stoppedAt=NOW - 10),
        T("r-2", "n2", createdAt=20),
        T("r-1", "n1", createdAt=10),
        T("pending", None, "PENDING", createdAt=5),
        T("r-off", "n3", createdAt=30),
        T("r-gone", "n9", createdAt=31),
        T("s-off", "n3", "STOPPED", createdAt=4, stoppedAt=NOW - 5),
    ]
    srcs, skipped = sl.sources("web", tasks, {"n1": True, "n2": True, "n3": False}, None, NOW)
    assert [s.task_id for s in srcs] == ["r-1", "r-2", "s-2", "s-1"]
    assert [s.stopped for s in srcs] == [False, False, True, True]
    assert srcs[0].prefix == "web.r-1@n1" and srcs[0].container == "web"
    assert [(k.task_id, k.error.split()[-1]) for k in skipped] == [("r-off", "disconnected"), ("r-gone", "deleted")]


def test_sources_per_container_and_bounded():
    two = T("0123456789abcdef", "n1", containers=[C("app"), C("side")])
    srcs, _ = sl.sources("web", [two], {"n1": True}, None, NOW)
    assert [(s.container, s.prefix) for s in srcs] == [("app", "web.0123456789ab.app@n1"),
                                                       ("side", "web.0123456789ab.side@n1")]
    only, _ = sl.sources("web", [two, T("t2", "n1", createdAt=1)], {"n1": True}, "side", NOW)
    assert [(s.task_id, s.container, s.prefix) for s in only] == [("0123456789abcdef", "side", "web.0123456789ab@n1")]
    fresh, _ = sl.sources("web", [T("t3", "n1", containers=[])], {"n1": True}, None, NOW)
    assert fresh[0].container is None
    many = [T(f"t{i:02}", "n1", createdAt=i) for i in range(5)]
    capped, skipped = sl.sources("web", many, {"n1": True}, None, NOW, limit=3)
    assert [s.task_id for s in capped] == ["t00", "t01", "t02"] and "more than 3" in skipped[-1].error


def test_lines_reassembles_chunks_and_bounds_long_lines():
    lines = sl.Lines(limit=8)
    assert lines.feed("ab\ncd") == ["ab\n"]
    assert lines.feed("e\n\nf") == ["cde\n", "\n"]
    assert lines.feed("0123456789é") == ["f0123456"] and lines.rest == "789é"
    lines = sl.Lines(limit=4)
    assert lines.feed("abcdefghij") == ["abcd", "efgh"] and lines.rest == "ij"
    assert lines.feed("éé") == ["ijé"] and lines.rest == "é"  # never inside a character
    assert lines.flush() == ["é"] and lines.flush() == []


def test_stamp_keys_sort_by_time_even_with_trimmed_fractions():
    a = sl.stamp("2026-12-02T03:04:05.1Z later\n")
    b = sl.stamp("2026-12-02T03:04:05.12Z")  # no text after: not a stamped line
    c = sl.stamp("2026-12-02T03:04:05.099999999Z earlier\n")
    assert a is not None and c is not None and b is None
    assert c[0] < a[0] and a[1] == "later\n" and c[1] == "earlier\n"
    assert sl.stamp("2026-12-02T03:04:05Z whole\n") == ("2026-12-02T03:04:05.000000000Z", "whole\n")
    assert sl.stamp("plain line\n") is None


# ---- the shell, with fake relay calls --------------------------------------------------------
class FakeCall:
    def __init__(self, msgs: list, delay: float = 0.0, hang: bool = False) -> None:
        self.msgs, self.delay, self.hang, self.closed = msgs, delay, hang, False

    async def messages(self) -> AsyncIterator:
        try:
            for m in self.msgs:
                await asyncio.sleep(self.delay)
                if isinstance(m, Exception):
                    raise m
                yield m
            if self.hang:
                await asyncio.sleep(3600)
        finally:
            self.closed = True


class FakeRelay:
    def __init__(self, calls: dict[str, FakeCall | Exception]) -> None:
        self.calls, self.opened = calls, []

    async def open(self, cluster, node_id, req):
        self.opened.append(req)
        got = self.calls[req.taskId]
        if isinstance(got, Exception):
            raise got
        return got


def src(task: str, stopped: bool = False) -> sl.Source:
    return sl.Source(task, "n1", "web", f"web.{task}@n1", stopped)


def req(task: str) -> LogsRequest:
    return LogsRequest(taskId=task, container="web", timestamps=True)


def chunks(*texts: str) -> list:
    return [*(Chunk(seq=i, data=t) for i, t in enumerate(texts)), End(seq=len(texts))]


async def collect(gen) -> list[Item]:
    return [i async for i in gen]


def test_source_items_cut_lines_strip_stamps_and_keep_quiet_about_a_cleaned_up_stopped_task():
    relay = FakeRelay({
        "a": FakeCall(chunks("2026-12-02T00:00:01.5Z one\n2026-12-02T00:00:0", "2.5Z two\npartial")),
        "gone": FakeCall([End(seq=0, code="TaskNotOnNode", error="cleaned up")]),
        "live": FakeCall([End(seq=0, code="ContainerGone", error="removed")]),
        "down": RelayError("no broker"),
    })

    async def run(task: str, stopped: bool = False) -> list[Item]:
        return await collect(source_items(relay, "c", 0, src(task, stopped), req(task), strip=True))  # type: ignore[arg-type]

    items = asyncio.run(run("a"))
    assert [(i.kind, i.data, i.key[:19]) for i in items] == [
        ("line", "one\n", "2026-12-02T00:00:01"), ("line", "two\n", "2026-12-02T00:00:02"),
        ("line", "partial", "2026-12-02T00:00:02"), ("end", "", "")]
    assert [i.kind for i in asyncio.run(run("gone", stopped=True))] == ["end"]
    err = asyncio.run(run("live"))
    assert [(i.kind, i.code) for i in err] == [("error", "ContainerGone"), ("end", None)]
    down = asyncio.run(run("down"))
    assert [(i.kind, i.code) for i in down] == [("error", "Unavailable"), ("end", None)]


def test_merged_orders_by_time_across_sources_and_passes_errors():
    relay = FakeRelay({
        "a": FakeCall(chunks("2026-12-02T00:00:01Z a1\n2026-12-02T00:00:03Z a3\n"), delay=0.01),
        "b": FakeCall(chunks("2026-12-02T00:00:02Z b2\n", "2026-12-02T00:00:04Z b4\n")),
        "x": FakeCall([Chunk(seq=0, data="2026-12-02T00:00:00Z x0\n"), RelayError("node x went silent")]),
    })
    gens = [source_items(relay, "c", i, src(t), req(t), strip=False) for i, t in enumerate("abx")]  # type: ignore[arg-type]
    items = asyncio.run(collect(merged(gens)))
    lines = [i.data.split()[-1] for i in items if i.kind == "line"]
    assert lines == ["x0", "a1", "b2", "a3", "b4"]
    assert [(i.index, i.code) for i in items if i.kind == "error"] == [(2, "Timeout")]
    assert sum(i.kind == "end" for i in items) == 3


def test_interleaved_is_not_held_up_by_a_silent_source_and_closing_cancels_every_call():
    silent = FakeCall([], hang=True)
    busy = FakeCall([Chunk(seq=i, data=f"tick{i}\n") for i in range(5)], delay=0.01, hang=True)
    relay = FakeRelay({"s": silent, "b": busy})

    async def run() -> list[str]:
        gens = [source_items(relay, "c", i, src(t), req(t), strip=True) for i, t in enumerate("sb")]  # type: ignore[arg-type]
        got: list[str] = []
        agen = interleaved(gens, maxsize=2)
        async for item in agen:
            got.append(item.data)
            if len(got) == 5:
                break
        await agen.aclose()
        return got

    assert asyncio.run(asyncio.wait_for(run(), 10)) == [f"tick{i}\n" for i in range(5)]
    assert silent.closed and busy.closed


# ---- the API routes, with a fake relay ----------------------------------------------------------
def api_setup():
    import json as _json

    from orchestrator.controller import Controller
    from orchestrator.logs_api import router
    from orchestrator.models import Node, Task, TaskContainer
    from orchestrator.ops import Ops
    from orchestrator.state import State

    state = State()
    ops = Ops(state, Controller(state, epoch=1, publish=None, clock=lambda: NOW))  # type: ignore[arg-type]
    ops.apply([{"source": "m#0", "document": {
        "apiVersion": "dockyard/v1", "kind": "TaskDefinition", "metadata": {"name": "db"},
        "spec": {"containerDefinitions": [{"name": "db", "image": "busybox", "memory": 32}]}}},
        {"source": "m#1", "document": {"apiVersion": "dockyard/v1", "kind": "Service", "metadata": {"name": "db"},
                                       "spec": {"taskDefinition": "db", "desiredCount": 0}}}], "default")
    for n in ("n1", "n2"):
        state.put_node(Node(cluster="default", nodeId=n, connected=True))
    tids = ["db" + "1" * 30, "ab" + "2" * 30]  # the first starts like the service's name
    for tid, n in zip(tids, ("n1", "n2"), strict=True):
        state.put_task(Task(taskId=tid, cluster="default", taskDefinition="db:1", family="db", revision=1,
                            group="service:db", serviceName="db", nodeId=n, lastStatus="RUNNING", createdAt=NOW,
                            containers=[TaskContainer(name="db")]))
    relay = FakeRelay({
        tids[0]: FakeCall(chunks("2026-12-02T00:00:01Z first\n")),
        tids[1]: FakeCall(chunks("2026-12-02T00:00:02Z second\n")),
    })
    routes = {getattr(r, "path", ""): r.endpoint for r in router(ops, relay).routes}  # type: ignore[arg-type]

    async def call(ref: str, **q) -> list[dict]:
        args = {"container": None, "tail": None, "since": None, "follow": False, "timestamps": False, **q}
        resp = await routes["/v1/clusters/{cluster}/logs/{ref}"](cluster="default", ref=ref, **args)
        return [_json.loads(ln) for b in [x async for x in resp.body_iterator] for ln in b.decode().splitlines()]

    return state, relay, tids, call


def test_the_logs_route_reads_a_service_merged_with_prefixes_and_a_full_task_id_as_the_task():
    from orchestrator.ops import UserError

    state, relay, tids, call = api_setup()
    out = asyncio.run(call("db"))  # the service, though a task id starts with "db" too
    head, lines, end = out[0], out[1:-1], out[-1]
    assert [s["prefix"] for s in head["sources"]] == [f"db.{tids[1][:12]}@n2", f"db.{tids[0][:12]}@n1"]
    assert [(x["source"], x["data"]) for x in lines] == [(1, "first\n"), (0, "second\n")]  # by time, stamps gone
    assert end["end"] is True and end["code"] is None
    assert all(r.timestamps and r.container == "db" for r in relay.opened)  # the merge asks for the stamps
    relay.calls[tids[0]] = FakeCall(chunks("plain\n"))
    task = asyncio.run(call(tids[0]))  # a full id: the task, unprefixed
    assert task[0] == {"stream": "stdout", "data": "plain\n"} and task[-1]["end"] is True
    with pytest.raises(UserError) as e:
        asyncio.run(call("zz"))
    assert e.value.status == 404 and "task or service 'zz' not found" in e.value.message
    state.services.pop(("default", "db"))
    relay.calls[tids[0]] = FakeCall(chunks("again\n"))
    assert asyncio.run(call("db"))[0]["data"] == "again\n"  # no such service: a unique task prefix
