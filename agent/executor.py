"""Applies the diff's actions through a :class:`~agent.runtime.Runtime`.

Actions of one task run in order, tasks in parallel (at most ``MAX_PARALLEL_TASKS`` at once;
a task whose previous actions still run is skipped until they finish, the pass they wake
plans again). An engine answer that rules a container out (image unavailable, create or
start refused) finishes the task with ``TaskFailedToStart``; any other failure is logged and
retried on the next pass (level-triggered): it never stops the agent.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Self

from agent import diff
from agent.runtime import L_NODE, L_TASK, ImageUnavailable, Runtime, VolumeUnavailable, task_volumes
from agent.secrets import SecretsUnavailable, open_secrets
from agent.state import NodeState

MAX_PARALLEL_TASKS = 12  # tasks whose actions execute at the same time (order kept within a task)
# Containers being stopped at the same time. A stop mostly waits (up to stopTimeout, for an app
# that ignores SIGTERM), so it gives back its task's slot meanwhile (see _Slot).
MAX_PARALLEL_STOPS = 64


class Executor:
    def __init__(self, rt: Runtime, state: NodeState, cluster: str, wake: Callable[[], None], log: Any,
                 seal_key: bytes | None = None) -> None:
        self.rt, self.state, self.cluster, self.wake, self.log = rt, state, cluster, wake, log
        self.seal_key = seal_key  # this node's private key: opens the tasks' sealed secrets
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self.sem = asyncio.Semaphore(MAX_PARALLEL_TASKS)
        self.stop_sem = asyncio.Semaphore(MAX_PARALLEL_STOPS)
        self.on_restart: Callable[[], None] | None = None  # after a restart is counted (the agent saves counts)

    def apply(self, p: diff.Plan) -> None:
        """Record the plan's finished tasks and start its actions (per task, unless still busy)."""
        for tid, fin in p.finished.items():
            self.state.finish(tid, fin)
        for tid, acts in p.by_task().items():
            if tid not in self.inflight:
                self.inflight[tid] = asyncio.create_task(self.execute(tid, acts))

    async def close(self) -> None:
        for t in list(self.inflight.values()):
            t.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)

    def _fail(self, tid: str, why: str, container: str) -> None:
        self.state.finish(tid, diff.Finish(diff.FAILED_TO_START, why, container))

    async def execute(self, tid: str, actions: list[diff.Action]) -> None:
        rt, node_id = self.rt, self.state.node_id
        lg = self.log.bind(task=tid)
        created: dict[str, str] = {}
        try:
            async with _Slot(self.sem) as slot:
                for a in actions:
                    if isinstance(a, diff.Create):
                        task, cdef = a.task, a.definition
                        try:  # opened per container and dropped after its create: never kept
                            secrets = open_secrets(self.seal_key, task)
                        except SecretsUnavailable as e:
                            self._fail(tid, str(e), a.container_name)
                            return
                        net = rt.task_network(task)
                        if net is not None:
                            await rt.ensure_network(net, {L_TASK: tid, L_NODE: node_id})
                        pull_started = time.time()
                        try:
                            for vol in task_volumes(task, node_id, self.cluster):
                                await rt.ensure_volume(vol)
                        except VolumeUnavailable as e:
                            self._fail(tid, f"CannotCreateContainerError: {e}", a.container_name)
                            return
                        try:
                            auth = rt.registry_auth(cdef, secrets.registry_auth.get(cdef.name))
                            perr = await rt.ensure_image(cdef.image, auth)
                        except ImageUnavailable as e:
                            self.state.pull_errors[tid] = str(e)
                            self._fail(tid, f"CannotPullContainerError: {e}", a.container_name)
                            return
                        if perr:
                            self.state.pull_errors[tid] = perr
                        self.state.pulled(tid, pull_started, time.time())
                        spec = rt.create_spec(task, cdef, node_id, self.cluster, secrets.environment.get(cdef.name))
                        del secrets
                        try:
                            created[a.container_name] = await rt.create(spec)
                        except Exception as e:
                            if (why := rt.failure(e)) is None:
                                raise
                            self._fail(tid, f"CannotCreateContainerError: {why}", a.container_name)
                            return
                        lg.info("container created", container=a.container_name, id=created[a.container_name][:12])
                    elif isinstance(a, diff.Start):
                        cid = a.docker_id or created[a.container_name]
                        try:
                            await rt.start(cid)
                        except Exception as e:
                            if (why := rt.failure(e)) is None:
                                raise
                            self._fail(tid, f"CannotStartContainerError: {why}", a.container_name)
                            return
                        lg.info("container started", container=a.container_name, id=cid[:12])
                    elif isinstance(a, diff.Restart):
                        try:
                            await rt.start(a.docker_id)
                        except Exception as e:
                            if (why := rt.failure(e)) is None:
                                raise
                            self._fail(tid, f"CannotStartContainerError: {why}", a.container_name)
                            return
                        n = self.state.restarted(a.docker_id)
                        if self.on_restart is not None:
                            self.on_restart()
                        lg.info("container restarted in place (restartPolicy)", container=a.container_name,
                                id=a.docker_id[:12], restartCount=n)
                    elif isinstance(a, diff.Stop):
                        lg.info("stopping container", container=a.container_name, id=a.docker_id[:12], timeout=a.timeout)
                        async with slot.released(), self.stop_sem:
                            await rt.stop(a.docker_id, a.timeout)
                    elif isinstance(a, diff.Remove):
                        await rt.remove(a.docker_id)
                        lg.info("container removed", container=a.container_name, id=a.docker_id[:12])
                    elif isinstance(a, diff.RemoveNetwork):
                        await rt.remove_network(a.network)
                        lg.info("task network removed", network=a.network)
                    elif isinstance(a, diff.RemoveVolume):
                        await rt.remove_volume(a.volume)
                        lg.info("task volume removed", volume=a.volume)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - retried on the next pass (level-triggered)
            lg.error("action failed; will retry", error=f"{type(e).__name__}: {e}")
            await asyncio.sleep(1.0)
        finally:
            self.inflight.pop(tid, None)
            self.wake()


class _Slot:
    """One of the executor's MAX_PARALLEL_TASKS slots, held while a task's actions run (so the
    actions of a task run back to back and at most that many tasks load the engine at once),
    and given back while the task only waits for a container to stop: otherwise the stops of
    a rollout queue behind the slots, and with the default 30 s stopTimeout and apps that
    ignore SIGTERM, a dozen stops would keep every create on the node waiting for 30 s."""

    def __init__(self, sem: asyncio.Semaphore) -> None:
        self.sem, self.held = sem, False

    async def __aenter__(self) -> Self:
        await self.sem.acquire()
        self.held = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.held:
            self.held = False
            self.sem.release()

    @contextlib.asynccontextmanager
    async def released(self) -> AsyncIterator[None]:
        self.held = False
        self.sem.release()
        try:
            yield
        finally:
            await self.sem.acquire()
            self.held = True
