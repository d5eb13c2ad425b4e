"""The container runtime seam: what the reconcile loop needs from a container engine.

Two implementations: :mod:`agent.docker_runtime` (the real one, aiodocker) and
:mod:`agent.hollow` (in-memory, for control-plane benchmarks). Nothing here imports
Docker or MQTT code, so :mod:`agent.diff` can use :class:`ActualContainer` and stay pure.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Protocol

# Labels every container the agent creates carries (see DESIGN.md, "Containers").
L_CLUSTER = "dockyard.cluster"
L_TASK = "dockyard.task"
L_CONTAINER = "dockyard.container"
L_FAMILY = "dockyard.family"
L_REVISION = "dockyard.revision"
L_NODE = "dockyard.node"
L_SPEC_HASH = "dockyard.spec-hash"
L_STOP_TIMEOUT = "dockyard.stop-timeout"
L_ESSENTIAL = "dockyard.essential"

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


class Runtime(Protocol):
    name: str

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

    async def create(self, spec: CreateSpec) -> str: ...

    async def start(self, container_id: str) -> None: ...

    async def stop(self, container_id: str, timeout: int) -> None: ...

    async def remove(self, container_id: str) -> None: ...

    def events(self, node_id: str) -> AsyncIterator[dict[str, Any]]:
        """Container events of this node's containers (wake-ups only; never trusted as state)."""
        ...

    async def close(self) -> None: ...
