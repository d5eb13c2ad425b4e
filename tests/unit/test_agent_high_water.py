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
