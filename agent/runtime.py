"""The container runtime seam: everything the agent needs from a container engine.

Two implementations: :mod:`agent.docker_runtime` (the real one, aiodocker) and
:mod:`agent.hollow` (in-memory, for control-plane benchmarks). Everything engine-specific
(the create spec, the task's network, registry credentials, which errors fail a task) is
behind :class:`Runtime`; the executor and the rest of the agent only call it. Nothing here
imports Docker or MQTT code, so :mod:`agent.diff` can use :class:`ActualContainer` and stay
pure. The engine-neutral rules both runtimes share (names, labels, which tasks get their own
network) are the functions below.
"""
from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dockyard.ecs import ContainerDefinition, container_hash
from dockyard.ecs_options import Volume
from dockyard.wire import DesiredTask

# Labels every container the agent creates carries. The agent owns only the containers that
# carry its node's label, and adopts them after a restart instead of recreating them.
L_CLUSTER = "dockyard.cluster"
L_TASK = "dockyard.task"
L_CONTAINER = "dockyard.container"
L_FAMILY = "dockyard.family"
L_REVISION = "dockyard.revision"
L_NODE = "dockyard.node"
L_SPEC_HASH = "dockyard.spec-hash"
L_STOP_TIMEOUT = "dockyard.stop-timeout"
L_ESSENTIAL = "dockyard.essential"

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_.-]")


def container_name(task: DesiredTask, name: str) -> str:
    """Readable and unique: ``dockyard-<family>-<revision>-<container>-<taskId[:8]>``."""
    return _NAME_BAD.sub("_", f"dockyard-{task.family}-{task.revision}-{name}-{task.taskId[:8]}")


def task_network_name(task_id: str) -> str:
    return _NAME_BAD.sub("_", f"dockyard-task-{task_id[:12]}")


def network_mode(task: DesiredTask) -> str:
    if task.launchType == "FARGATE":
        return "awsvpc"  # FARGATE tasks always get their own network (ECS: awsvpc is mandatory)
    return task.taskDefinition.networkMode or "bridge"


def container_labels(task: DesiredTask, c: ContainerDefinition, node_id: str, cluster: str) -> dict[str, str]:
    """The definition's ``dockerLabels`` plus (overriding them) the agent's own labels."""
    labels = dict(c.dockerLabels)
    labels.update({
        L_CLUSTER: cluster,
        L_TASK: task.taskId,
        L_CONTAINER: c.name,
        L_FAMILY: task.family,
        L_REVISION: str(task.revision),
        L_NODE: node_id,
        L_SPEC_HASH: container_hash(c),
        L_STOP_TIMEOUT: str(c.effective_stop_timeout),
        L_ESSENTIAL: "true" if c.essential else "false",
    })
    return labels


def task_volume_name(task_id: str, volume: str) -> str:
    return _NAME_BAD.sub("_", f"dockyard-{task_id[:12]}-{volume}")


@dataclass(frozen=True)
class VolumeSpec:
    """A Docker volume a task needs before its containers are created."""

    name: str
    task_scoped: bool  # removed with the task; shared volumes stay on the node
    create: bool  # create when missing (task scope, or shared with autoprovision)
    driver: str | None = None
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def docker_volume_name(task: DesiredTask, v: Volume) -> str | None:
    """The Docker volume behind ``v`` (None for a bind mount)."""
    if v.bind_path is not None:
        return None
    return v.name if v.shared else task_volume_name(task.taskId, v.name)


def task_volumes(task: DesiredTask, node_id: str, cluster: str) -> list[VolumeSpec]:
    """The Docker volumes the task's mountPoints use, in definition order."""
    used = {m.sourceVolume for c in task.taskDefinition.containerDefinitions for m in c.mountPoints or ()}
    out = []
    for v in task.taskDefinition.volumes:
        name = docker_volume_name(task, v)
        if name is None or v.name not in used:
            continue
        dvc = v.dockerVolumeConfiguration
        labels = dict(dvc.labels) if dvc else {}
        if v.shared:
            labels.setdefault(L_CLUSTER, cluster)
            out.append(VolumeSpec(name, False, bool(dvc and dvc.autoprovision), dvc.driver if dvc else None,
                                  dict(dvc.driverOpts) if dvc else {}, labels))
        else:
            labels.update({L_CLUSTER: cluster, L_NODE: node_id, L_TASK: task.taskId})
            out.append(VolumeSpec(name, True, True, dvc.driver if dvc else None,
                                  dict(dvc.driverOpts) if dvc else {}, labels))
    return out


# Docker container states (State.Status) grouped the way the diff needs them.
RUNNING_STATES = frozenset({"running", "paused", "restarting"})
EXITED_STATES = frozenset({"exited", "dead", "removing"})


@dataclass(frozen=True)
class PortBinding:
    containerPort: int
    hostPort: int
    protocol: str = "tcp"
    bindIP: str = "0.0.0.0"


@dataclass(frozen=True)
class ActualContainer:
    """One container as the engine reports it (list + inspect), reduced to what the agent uses."""

    id: str
    task_id: str
    container_name: str  # the name in the task definition (label dockyard.container)
    node: str
    state: str  # Docker State.Status: created | running | paused | restarting | removing | exited | dead
    exit_code: int | None = None
    health: str | None = None  # Docker State.Health.Status: starting | healthy | unhealthy, None without a check
    oom_killed: bool = False
    error: str = ""
    image: str = ""
    docker_name: str = ""
    started_at: float | None = None  # epoch seconds; None when never started
    finished_at: float | None = None
    ports: tuple[PortBinding, ...] = ()
    ip_address: str | None = None  # address on the per-task network (awsvpc / FARGATE)
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES

    @property
    def exited(self) -> bool:
        """Ran and stopped. A container that was created but never started is not exited."""
        return self.state in EXITED_STATES

    @property
    def essential(self) -> bool:
        return self.labels.get(L_ESSENTIAL, "true") == "true"

    @property
    def stop_timeout(self) -> int:
        try:
            return int(self.labels.get(L_STOP_TIMEOUT, "30"))
        except ValueError:
            return 30


@dataclass(frozen=True)
class EngineInfo:
    cpu: int  # cpu units, 1024 per core
    memory: int  # MiB
    architecture: str  # x86_64 | arm64 | ...
    os_type: str = "linux"
    cgroup_version: str = ""  # "1" | "2" | "" (unknown)


@dataclass
class CreateSpec:
    """A container to create: the engine-neutral part plus the Docker create body."""

    name: str
    image: str
    labels: dict[str, str]
    body: dict[str, Any]  # Docker Engine API ContainerCreate body
    network: str | None = None  # per-task network to attach (awsvpc), created beforehand
    network_alias: str | None = None


class ImageUnavailable(Exception):
    """The image could not be pulled and there is no usable local copy."""


class VolumeUnavailable(Exception):
    """A volume the task mounts cannot be provided (a shared volume without autoprovision is missing)."""


class Runtime(Protocol):
    name: str

    # -- engine-specific decisions (no I/O) ------------------------------------------------------
    def task_network(self, task: DesiredTask) -> str | None:
        """The network ``task`` gets of its own (created before its containers, removed with
        the task), or None when its containers use a shared network mode."""
        ...

    def create_spec(self, task: DesiredTask, c: ContainerDefinition, node_id: str, cluster: str,
                    secrets: dict[str, str] | None = None) -> CreateSpec:
        """What to create for container ``c`` of ``task`` (``secrets``: its secret variables)."""
        ...

    def registry_auth(self, c: ContainerDefinition, stored: dict[str, str] | None = None) -> dict[str, str] | None:
        """Credentials for pulling ``c``'s image: ``stored`` ({username, password} from the secret
        its ``repositoryCredentials`` names), else resolved locally, or None."""
        ...

    def failure(self, e: Exception) -> str | None:
        """The text of an engine's answer that fails the task (a bad spec, a start error);
        None when ``e`` is a connection-level failure, retried on the next pass."""
        ...

    # -- engine I/O -------------------------------------------------------------------------------
    async def info(self) -> EngineInfo: ...

    async def list(self, node_id: str) -> list[ActualContainer]:
        """All containers (running or not) that carry ``dockyard.node=<node_id>``."""
        ...

    async def list_networks(self, node_id: str) -> dict[str, str]:
        """Per-task networks of this node: task id -> network name."""
        ...

    async def ensure_image(self, image: str, auth: dict[str, str] | None) -> str | None:
        """Make ``image`` usable following the pull behaviour. Returns the pull error text when
        a pull failed but a local copy is used; raises :class:`ImageUnavailable` otherwise."""
        ...

    async def ensure_network(self, name: str, labels: dict[str, str]) -> None: ...

    async def remove_network(self, name: str) -> None: ...

    async def list_volumes(self, node_id: str) -> dict[str, Sequence[str]]:
        """Task-scoped volumes of this node: task id -> volume names."""
        ...

    async def ensure_volume(self, spec: VolumeSpec) -> None:
        """Create ``spec`` when missing (if ``spec.create``); raise :class:`VolumeUnavailable` when
        it must exist and does not, or exists with another driver."""
        ...

    async def remove_volume(self, name: str) -> None: ...

    async def create(self, spec: CreateSpec) -> str: ...

    async def start(self, container_id: str) -> None: ...

    async def stop(self, container_id: str, timeout: int) -> None: ...

    async def remove(self, container_id: str) -> None: ...

    def events(self, node_id: str) -> AsyncIterator[dict[str, Any]]:
        """Container events of this node's containers (wake-ups only; never trusted as state)."""
        ...

    async def close(self) -> None: ...
