"""Wire-protocol compatibility: the pure rule (orchestrator.core.compat), the controller's
handling of a refused agent, and how a refused node is shown."""
from __future__ import annotations

import pytest

from dockyard.wire import PROTOCOL_VERSION, Presence
from orchestrator import render
from orchestrator.core.compat import refusal
from test_controller_sim import CLUSTER, Sim, service, taskdef


@pytest.mark.parametrize("agent", [9, 10])
def test_same_version_and_one_behind_are_accepted(agent):
    assert refusal(10, agent) is None


def test_two_behind_is_refused_naming_both_versions_and_the_fix():
    why = refusal(10, 8)
    assert why is not None
    assert "protocol 8" in why and "protocol 10" in why and "upgrade the agent" in why and "9 to 10" in why


def test_newer_agent_is_refused_naming_both_versions_and_the_fix():
    why = refusal(10, 11)
    assert why is not None
    assert "protocol 11" in why and "protocol 10" in why and "upgrade the orchestrator first" in why


def test_agents_before_the_field_count_as_one_behind_the_current_protocol():
    assert Presence(nodeId="n", bootId="b", state="online").protocolVersion == PROTOCOL_VERSION - 1
    assert refusal(PROTOCOL_VERSION, PROTOCOL_VERSION - 1) is None


@pytest.fixture
def sim(monkeypatch) -> Sim:
    return Sim(monkeypatch)


def test_a_refused_node_gets_no_tasks_and_is_accepted_after_its_upgrade(sim):
    sim.node_online("old", protocolVersion=PROTOCOL_VERSION - 2, agentVersion="0.0.1")
    sim.node_online("new", protocolVersion=PROTOCOL_VERSION + 1)
    sim.node_online("ok", protocolVersion=PROTOCOL_VERSION)
    old, new = sim.state.nodes[(CLUSTER, "old")], sim.state.nodes[(CLUSTER, "new")]
    assert not old.connected and not new.connected
    assert old.refusedReason and f"protocol {PROTOCOL_VERSION - 2}" in old.refusedReason
    assert new.refusedReason and "upgrade the orchestrator" in new.refusedReason
    assert old.agentVersion == "0.0.1" and old.protocolVersion == PROTOCOL_VERSION - 2
    sim.apply(taskdef(), service(desired=3))
    docs = sim.reconcile()
    assert {d.nodeId for d in docs} == {"ok"}
    assert {t.nodeId for t in sim.tasks()} == {"ok"}

    # The agent is upgraded (a new boot): accepted, and placed on again.
    refused = sim.ctl.on_presence(CLUSTER, "old", Presence(nodeId="old", bootId="boot-2", state="online",
                                                           cluster=CLUSTER, protocolVersion=PROTOCOL_VERSION))
    assert refused is None
    old = sim.state.nodes[(CLUSTER, "old")]
    assert old.connected and old.refusedReason is None and old.protocolVersion == PROTOCOL_VERSION


def test_on_presence_returns_the_refusal_for_the_agent(sim):
    r = sim.ctl.on_presence(CLUSTER, "n1", Presence(nodeId="n1", bootId="b1", state="online", cluster=CLUSTER,
                                                    protocolVersion=PROTOCOL_VERSION + 1))
    assert r is not None
    assert (r.nodeId, r.bootId, r.agentProtocol, r.orchestratorProtocol) == ("n1", "b1", PROTOCOL_VERSION + 1,
                                                                              PROTOCOL_VERSION)
    assert r.reason == sim.state.nodes[(CLUSTER, "n1")].refusedReason


def test_a_connected_node_whose_agent_restarts_too_new_is_disconnected_and_ignores_its_status(sim):
    sim.node_online("n1")
    sim.apply(taskdef(), service(desired=1))
    sim.reconcile()
    sim.agents("n1")
    assert sim.state.nodes[(CLUSTER, "n1")].connected
    sim.node_online("n1", boot="boot-new", protocolVersion=PROTOCOL_VERSION + 1)
    n = sim.state.nodes[(CLUSTER, "n1")]
    assert not n.connected and n.disconnectedAt == sim.clock.t
    sim.agent_report("n1")  # its snapshot does not reconnect it
    assert not sim.state.nodes[(CLUSTER, "n1")].connected


def test_get_nodes_shows_refused_and_the_reason_only_when_a_node_is_refused():
    ok = {"nodeId": "a", "status": "ACTIVE", "connected": True}
    assert "REASON" not in render.nodes_table([ok], 0.0)
    out = render.nodes_table([ok, {"nodeId": "b", "status": "ACTIVE", "connected": False,
                                   "refusedReason": "agent speaks wire protocol 4, newer"}], 0.0)
    header, _, row_b = out.splitlines()
    assert "REASON" in header and "REFUSED" in row_b and "agent speaks wire protocol 4, newer" in row_b
    assert "Refused:" in render.describe_node({"nodeId": "b", "refusedReason": "why"}, None, 0.0)


# ---- the agent's side ----------------------------------------------------------------------
class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict]] = []

    def __getattr__(self, level: str):
        return lambda event, **kw: self.lines.append((level, event, kw))


def _session(monkeypatch, claimed: str | None = None):
    from agent.session import TEST_PROTOCOL_ENV, Session

    if claimed is None:
        monkeypatch.delenv(TEST_PROTOCOL_ENV, raising=False)
    else:
        monkeypatch.setenv(TEST_PROTOCOL_ENV, claimed)

    async def nothing(*_a) -> None:
        return None

    rec = RecordingLog()
    s = Session(node_id="n1", cluster="c", mqtt_url="mqtt://127.0.0.1:1", boot_id="boot-1", status_interval=5.0,
                attributes={}, capacity_providers=["EC2"], runtime_name="docker", log=rec, on_connect=nothing,
                on_message=nothing)
    return s, rec


def test_agent_presence_carries_its_release_and_protocol(monkeypatch):
    from dockyard import __version__

    s, _ = _session(monkeypatch)
    p = Presence.model_validate_json(s.presence("online"))
    assert (p.agentVersion, p.protocolVersion) == (__version__, PROTOCOL_VERSION)
    s, _ = _session(monkeypatch, claimed=str(PROTOCOL_VERSION - 1))
    assert Presence.model_validate_json(s.presence("online")).protocolVersion == PROTOCOL_VERSION - 1


def test_agent_logs_its_refusal_once_ignores_another_boots_and_logs_the_acceptance(monkeypatch):
    from dockyard.wire import Refusal

    s, rec = _session(monkeypatch)

    def refusal(boot: str) -> bytes:
        return Refusal(nodeId="n1", bootId=boot, reason="agent speaks wire protocol 3, newer", agentProtocol=3,
                       orchestratorProtocol=2, orchestratorVersion="0.1.0").model_dump_json().encode()

    s.on_refusal(b"")  # the usual empty retained message: nothing to say
    s.on_refusal(refusal("boot-0"))  # a previous boot's, not yet cleared
    assert rec.lines == []
    s.on_refusal(refusal("boot-1"))
    s.on_refusal(refusal("boot-1"))
    assert [(lvl, kw["reason"], kw["orchestratorProtocol"]) for lvl, _, kw in rec.lines] == \
        [("error", "agent speaks wire protocol 3, newer", 2)]
    assert "refused by the orchestrator" in rec.lines[0][1] and s.refused
    s.on_refusal(b"")
    assert rec.lines[-1][:2] == ("info", "accepted by the orchestrator") and s.refused is None
