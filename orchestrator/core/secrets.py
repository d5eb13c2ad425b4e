"""Pure: which secrets a task needs, whether it can get them, and what is sealed to its node.

The controller calls these when it first publishes a task to a node (secrets resolve at task
start): :func:`refs` from the task definition, :func:`resolve` with the store's newest
versions and the node's seal key, then :func:`payload` with the values to seal. A task whose
secret is missing, or whose node cannot receive secrets, fails to start with the reason
:func:`resolve` gives; it is never started with an empty variable.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from dockyard.ecs import TaskDefinitionSpec, secret_name

MAX_VALUE_BYTES = 64 * 1024  # a secret value's limit (AWS Secrets Manager's)


@dataclass(frozen=True)
class Refs:
    env: tuple[tuple[str, str, str], ...] = ()  # (container, variable, secret name)
    registry: tuple[tuple[str, str], ...] = ()  # (container, secret name) of repositoryCredentials

    def __bool__(self) -> bool:
        return bool(self.env or self.registry)

    def names(self) -> set[str]:
        return {n for _, _, n in self.env} | {n for _, n in self.registry}


@dataclass(frozen=True)
class Resolution:
    versions: dict[str, int]  # secret name -> the version sealed (fixed for the task's life)
    failure: str | None = None  # set: the task fails to start with this stoppedReason


def refs(spec: TaskDefinitionSpec) -> Refs:
    env, registry = [], []
    for c in spec.containerDefinitions:
        env += [(c.name, s.name, s.secret) for s in c.secrets]
        if c.repositoryCredentials is not None:
            try:
                registry.append((c.name, secret_name(c.repositoryCredentials.credentialsParameter)))
            except ValueError:
                pass  # not a secret name: only the agent's local credentials can match it
    return Refs(tuple(env), tuple(registry))


def not_found_reason(name: str) -> str:
    return f"ResourceInitializationError: unable to retrieve secret '{name}' from dockyard: secret not found"


def resolve(r: Refs, latest: Mapping[str, int | None], pinned: Mapping[str, int] | None,
            node_id: str, node_can_unseal: bool) -> Resolution:
    """The versions to seal for a task with references ``r``: ``pinned`` (chosen at its first
    publication) or the newest (``latest``: name -> newest version, None when absent). A missing
    container secret, or a node without a seal key, fails the task; a ``credentialsParameter``
    that names no secret is left to the agent's local credentials."""
    versions: dict[str, int] = {}
    for _, _, name in r.env:
        v = (pinned or {}).get(name, latest.get(name))
        if v is None:
            return Resolution({}, not_found_reason(name))
        versions[name] = v
    for _, name in r.registry:
        v = (pinned or {}).get(name, latest.get(name))
        if v is not None:
            versions[name] = v
    if versions and not node_can_unseal:
        return Resolution({}, f"ResourceInitializationError: unable to deliver secrets to node {node_id}: its agent "
                              "publishes no seal key (an agent older than secrets support); upgrade the agent")
    return Resolution(versions)


def payload(r: Refs, values: Mapping[str, str | None]) -> tuple[bytes, str | None]:
    """The plaintext to seal (JSON: ``environment`` per container, ``registryAuth`` per container)
    from the values of the resolved secrets (None: gone since it was resolved), or a failure."""
    env: dict[str, dict[str, str]] = {}
    for container, var, name in r.env:
        value = values.get(name)
        if value is None:
            return b"", not_found_reason(name)
        env.setdefault(container, {})[var] = value
    auth: dict[str, dict[str, str]] = {}
    for container, name in r.registry:
        value = values.get(name)
        if value is None:
            continue
        try:
            creds = json.loads(value)
            creds = {"username": str(creds["username"]), "password": str(creds["password"])}
        except (ValueError, TypeError, KeyError):
            return b"", (f"ResourceInitializationError: secret '{name}' (repositoryCredentials of container "
                         f"'{container}') is not JSON with \"username\" and \"password\"")
        auth[container] = creds
    return json.dumps({"environment": env, "registryAuth": auth}).encode(), None
