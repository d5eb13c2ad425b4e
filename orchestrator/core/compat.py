"""Which agents the orchestrator manages, by wire-protocol version (pure).

Upgrades go orchestrator first, then agents one at a time (docs/install.md): so an orchestrator
speaking protocol N manages agents speaking N and N-1, and refuses agents two or more behind
(it may have dropped what they need) and agents newer than itself (it cannot know their
documents). The message names both versions and what to upgrade.
"""
from __future__ import annotations

BEHIND_ACCEPTED = 1  # protocol versions an agent may lag behind the orchestrator


def refusal(orchestrator: int, agent: int) -> str | None:
    """None when an agent speaking ``agent`` may join an orchestrator speaking ``orchestrator``,
    else why not (for the orchestrator's log, the node record and the agent's log)."""
    oldest = orchestrator - BEHIND_ACCEPTED
    if agent > orchestrator:
        return (f"agent speaks wire protocol {agent}, newer than the orchestrator's protocol {orchestrator}: "
                f"upgrade the orchestrator first (it accepts agents of protocol {oldest} to {orchestrator})")
    if agent < oldest:
        return (f"agent speaks wire protocol {agent}, {orchestrator - agent} versions behind the orchestrator's "
                f"protocol {orchestrator}: upgrade the agent (the orchestrator accepts protocol {oldest} to {orchestrator})")
    return None
