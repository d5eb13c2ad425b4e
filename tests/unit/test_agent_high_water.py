"""The agent's high-water desired version on disk: a restarted agent never applies an older retained document
(one a fenced ex-leader published) but applies the same one again."""
from __future__ import annotations

from agent import diff
from agent.hollow import HollowRuntime
from agent.main import HIGH_WATER_FILE, Agent, AgentConfig
from dockyard.wire import DesiredDocHead


def head(epoch: int, gen: int) -> DesiredDocHead:
    return DesiredDocHead(cluster="default", nodeId="n1", epoch=epoch, generation=gen)


def test_a_floor_rejects_older_versions_only():
    floor = (5, 10)
    assert diff.rejects(head(4, 99), "n1", "default", None, floor) == diff.STALE  # the ex-leader's epoch
    assert diff.rejects(head(5, 9), "n1", "default", None, floor) == diff.STALE
    assert diff.rejects(head(5, 10), "n1", "default", None, floor) is None  # the same document again
    assert diff.rejects(head(6, 0), "n1", "default", None, floor) is None
    assert diff.rejects(head(5, 10), "n1", "default", (5, 10), floor) == diff.STALE  # applied already


def test_the_high_water_survives_an_agent_restart_through_the_state_dir(tmp_path):
    def agent(runtime: str = "docker") -> Agent:
        rt = HollowRuntime()
        rt.name = runtime
        return Agent(AgentConfig(node_id="n1", state_dir=str(tmp_path / "st")), "n1", rt)

    a = agent()
    assert a.high_water is None
    a._save_high_water((3, 7))
    a._save_high_water((2, 50))  # never lowered
    assert agent().high_water == (3, 7)
    (tmp_path / "st" / HIGH_WATER_FILE).write_text("{")
    assert agent().high_water is None  # a damaged file is logged, not fatal
    h = agent("hollow")  # hollow agents (benchmarks) keep nothing on disk
    h._save_high_water((9, 9))
    assert agent().high_water is None


def test_a_restarted_agent_reports_its_high_water_so_a_fresh_store_re_asserts_above_it(tmp_path):
    """Without a document applied yet, the status carries the high-water kept on disk: an orchestrator on a fresh
    or restored store (epoch 1 again) sees the node ahead of it and re-asserts (core.fencing) instead of
    publishing documents the agent rejects as stale forever (found with scripts/demo.sh run twice)."""
    import asyncio
    import json

    from dockyard.wire import StatusDoc

    st = tmp_path / "st"
    rt = HollowRuntime()
    rt.name = "docker"
    Agent(AgentConfig(node_id="n1", state_dir=str(st)), "n1", rt)._save_high_water((1, 7))
    a = Agent(AgentConfig(node_id="n1", state_dir=str(st)), "n1", rt)
    sent: list[bytes] = []

    class Client:
        async def publish(self, _topic, payload, **_kw):  # noqa: ANN001, ANN202
            sent.append(payload)
    a.session.client = Client()  # type: ignore[assignment]
    asyncio.run(a.reporter.publish("snapshot"))
    doc = StatusDoc.model_validate(json.loads(sent[-1]))
    assert (doc.observedEpoch, doc.observedGeneration) == (1, 7)
