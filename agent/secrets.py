"""Opening a task's sealed secrets on the node (pure but for the decryption; see docs/secrets.md).

The orchestrator seals each task's secret values to this node's key (:mod:`dockyard.sealing`);
the executor opens them just before it creates a container, puts them in that container's
environment and drops them. A task whose definition names secrets but whose blob is absent
or does not open fails to start (``TaskFailedToStart``): never with an empty variable.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from dockyard.sealing import SealError, unseal
from dockyard.wire import DesiredTask

REASON = "ResourceInitializationError: unable to retrieve secrets for the task"


class SecretsUnavailable(Exception):
    """The task cannot get its secrets here; the message is its stoppedReason."""


@dataclass(frozen=True)
class TaskSecrets:
    environment: dict[str, dict[str, str]] = field(default_factory=dict)  # container -> {variable: value}
    registry_auth: dict[str, dict[str, str]] = field(default_factory=dict)  # container -> {username, password}


def open_secrets(private: bytes | None, task: DesiredTask) -> TaskSecrets:
    """The task's secrets, checked against what its definition names."""
    wanted = {c.name: {s.name for s in c.secrets} for c in task.taskDefinition.containerDefinitions if c.secrets}
    if task.secrets is None:
        if wanted:
            raise SecretsUnavailable(f"{REASON}: none arrived for this node (is the orchestrator older than the agent?)")
        return TaskSecrets()
    if private is None:
        raise SecretsUnavailable(f"{REASON}: this agent has no seal key")
    try:
        data = json.loads(unseal(private, task.taskId, task.secrets))
        out = TaskSecrets({str(k): dict(v) for k, v in (data.get("environment") or {}).items()},
                          {str(k): dict(v) for k, v in (data.get("registryAuth") or {}).items()})
    except SealError as e:
        raise SecretsUnavailable(f"{REASON}: {e}") from None
    except (ValueError, TypeError, AttributeError):
        raise SecretsUnavailable(f"{REASON}: the sealed secrets are malformed") from None
    for container, names in wanted.items():
        missing = names - set(out.environment.get(container, {}))
        if missing:
            raise SecretsUnavailable(f"{REASON}: {', '.join(sorted(missing))} missing for container '{container}'")
    return out
