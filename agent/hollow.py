"""The hollow runtime: in-memory containers for control-plane benchmarks. RUNS NO CONTAINERS.

Implements :class:`agent.runtime.Runtime` so the agent's MQTT and reconcile code is the real
thing while "containers" start instantly (after ``start_delay``), stay RUNNING and honour
stop. With ``--hollow-count N`` one process runs N such agents, so 1,000 agents fit in a
few processes (the kubemark idea).
"""
from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from agent.runtime import (
    L_CONTAINER,
    L_NODE,
    L_TASK,
    ActualContainer,
    CreateSpec,
    EngineInfo,
    VolumeSpec,
    container_labels,
    container_name,
    network_mode,
    task_network_name,
)
from dockyard.ecs import ContainerDefinition
from dockyard.wire import DesiredTask


class HollowRuntime:
    """The engine-neutral rules (names, labels, a network per awsvpc/FARGATE task) are the
    Docker runtime's; there is no Docker body, no registry and no engine error to classify."""

    name = "hollow"

    def __init__(self, cpu: int = 4096, memory: int = 16384, start_delay: float = 0.0) -> None:
        self._containers: dict[str, ActualContainer] = {}
        self._networks: dict[str, tuple[str, dict[str, str]]] = {}
        self._queues: list[asyncio.Queue[dict[str, Any]]] = []
        self._ids = itertools.count()
        self.cpu, self.memory, self.start_delay = cpu, memory, start_delay

    def task_network(self, task: DesiredTask) -> str | None:
        return task_network_name(task.taskId) if network_mode(task) == "awsvpc" else None

    def create_spec(self, task: DesiredTask, c: ContainerDefinition, node_id: str, cluster: str,
                    secrets: dict[str, str] | None = None) -> CreateSpec:
        return CreateSpec(name=container_name(task, c.name), image=c.image,
                          labels=container_labels(task, c, node_id, cluster), body={})

    def registry_auth(self, c: ContainerDefinition, stored: dict[str, str] | None = None) -> dict[str, str] | None:
        return None  # nothing is pulled

    def failure(self, e: Exception) -> str | None:
        """An unknown container id (KeyError) or a bad value fails the task, as Docker's answers do."""
        if isinstance(e, (KeyError, ValueError)):
            return str(e)
        return None

    async def info(self) -> EngineInfo:
        return EngineInfo(cpu=self.cpu, memory=self.memory, architecture="x86_64")

    async def list(self, node_id: str) -> list[ActualContainer]:
        return [c for c in self._containers.values() if c.node == node_id]

    async def list_networks(self, node_id: str) -> dict[str, str]:
        return {lab[L_TASK]: name for name, (_, lab) in self._networks.items() if lab.get(L_NODE) == node_id and L_TASK in lab}

    async def ensure_image(self, image: str, auth: dict[str, str] | None) -> str | None:
        return None

    async def ensure_network(self, name: str, labels: dict[str, str]) -> None:
        self._networks.setdefault(name, (name, dict(labels)))

    async def remove_network(self, name: str) -> None:
        self._networks.pop(name, None)

    async def list_volumes(self, node_id: str) -> dict[str, Sequence[str]]:
        return {}

    async def ensure_volume(self, spec: VolumeSpec) -> None:
        return None

    async def remove_volume(self, name: str) -> None:
        return None

    def _emit(self, c: ActualContainer, action: str) -> None:
        ev = {"Type": "container", "Action": action, "id": c.id, "Actor": {"Attributes": dict(c.labels)}}
        for q in self._queues:
            q.put_nowait(ev)

    async def create(self, spec: CreateSpec) -> str:
        cid = f"hollow{next(self._ids):06d}{uuid.uuid4().hex[:10]}"
        c = ActualContainer(
            id=cid, task_id=spec.labels.get(L_TASK, ""), container_name=spec.labels.get(L_CONTAINER, ""),
            node=spec.labels.get(L_NODE, ""), state="created", image=spec.image, docker_name=spec.name,
            labels=dict(spec.labels),
        )
        self._containers[cid] = c
        self._emit(c, "create")
        return cid

    async def start(self, container_id: str) -> None:
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        c = self._containers[container_id]
        if not c.running:  # created, or exited (as `docker start`: a restart in place)
            c = replace(c, state="running", started_at=time.time(), exit_code=None)
            self._containers[container_id] = c
            self._emit(c, "start")

    async def stop(self, container_id: str, timeout: int) -> None:
        c = self._containers.get(container_id)
        if c is not None and c.running:
            c = replace(c, state="exited", exit_code=0, finished_at=time.time())
            self._containers[container_id] = c
            self._emit(c, "die")

    async def exit(self, container_id: str, code: int) -> None:
        """Test hook: the process in a hollow container exits with ``code``."""
        c = self._containers[container_id]
        self._containers[container_id] = replace(c, state="exited", exit_code=code, finished_at=time.time())
        self._emit(c, "die")

    async def remove(self, container_id: str) -> None:
        c = self._containers.pop(container_id, None)
        if c is not None:
            self._emit(c, "destroy")

    async def events(self, node_id: str) -> AsyncIterator[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._queues.append(q)
        try:
            while True:
                ev = await q.get()
                if ev["Actor"]["Attributes"].get(L_NODE) == node_id:
                    yield ev
        finally:
            self._queues.remove(q)

    async def close(self) -> None:
        pass
