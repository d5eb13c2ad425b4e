"""Versions (issue 19): the orchestrator reports its release and wire protocol, accepts an agent
one protocol version behind and refuses one two behind or one ahead, saying so on the node, in
its log and in the agent's log. The agent's protocol is played with DOCKYARD_TEST_PROTOCOL_VERSION
(agent.session.TEST_PROTOCOL_ENV, for tests only)."""
from __future__ import annotations

from dockyard import __version__
from dockyard.wire import PROTOCOL_VERSION

ENV = "DOCKYARD_TEST_PROTOCOL_VERSION"


def test_agent_one_behind_joins_two_behind_and_one_ahead_are_refused(dockyard_env):
    env = dockyard_env
    env.start_orchestrator()
    assert env.get("/v1/version") == {"version": __version__, "protocolVersion": PROTOCOL_VERSION,
                                      "acceptsAgentProtocols": [PROTOCOL_VERSION - 1, PROTOCOL_VERSION]}
    assert env.get("/healthz")["version"] == __version__

    behind, old, new = (f"{env.cluster}-{n}" for n in ("behind", "old", "new"))
    env.start_agent(old, env={ENV: str(PROTOCOL_VERSION - 2)}, wait=False)
    env.start_agent(new, env={ENV: str(PROTOCOL_VERSION + 1)}, wait=False)
    env.start_agent(behind, env={ENV: str(PROTOCOL_VERSION - 1)})  # waits until connected
    joined = env.node(behind)
    assert joined["protocolVersion"] == PROTOCOL_VERSION - 1 and joined["refusedReason"] is None
    assert joined["agentVersion"] == __version__

    def refused(node_id):
        return lambda: (n := env.node(node_id)) is not None and n.get("refusedReason") and n

    n_old = env.wait_for(refused(old), timeout=30, message="the agent two versions behind refused")
    n_new = env.wait_for(refused(new), timeout=30, message="the agent one version ahead refused")
    assert not n_old["connected"] and not n_new["connected"]
    assert f"protocol {PROTOCOL_VERSION - 2}" in n_old["refusedReason"]
    assert f"protocol {PROTOCOL_VERSION}" in n_old["refusedReason"] and "upgrade the agent" in n_old["refusedReason"]
    assert f"protocol {PROTOCOL_VERSION + 1}" in n_new["refusedReason"]
    assert "upgrade the orchestrator first" in n_new["refusedReason"]

    table = env.cli("get", "nodes").stdout
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert "REASON" in table.splitlines()[0]
    assert "REFUSED" in rows[old] and "REFUSED" in rows[new] and "ACTIVE" in rows[behind]

    for node_id, reason in ((old, n_old["refusedReason"]), (new, n_new["refusedReason"])):
        log = env.agents[node_id].log
        env.wait_for(lambda log=log, reason=reason: "refused by the orchestrator" in (text := log.read_text())
                     and reason in text, timeout=15, message=f"agent {node_id} logs its refusal")
    orch_log = env.orchestrator.log.read_text()
    assert orch_log.count("agent refused") >= 2 and n_new["refusedReason"] in orch_log
