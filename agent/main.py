"""The agent's imperative shell: MQTT session, reconcile loop, Docker events, status reports.

Entry points: :func:`run` (blocking, returns an exit code) and the click command
:data:`agent_command` that the main CLI adds as ``dockyard agent``.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import signal
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import click
from pydantic import ValidationError
from pydantic_core import from_json

from dockyard import log
from dockyard.mqtt import Backoff, Client, make_client, parse_url
from dockyard.wire import (DesiredDoc, DesiredDocHead, DesiredTask, NodeResources, Presence, StatusDoc, TaskReport,
                           node_topic)

from agent import diff
from agent.runtime import L_NODE, L_TASK, ActualContainer, EngineInfo, ImageUnavailable, Runtime

MAX_PARALLEL_TASKS = 12  # tasks whose actions execute at the same time (order kept within a task)
# Containers being stopped at the same time. A stop mostly waits (up to stopTimeout, for an app
# that ignores SIGTERM), so it gives back its task's slot meanwhile (see _Slot).
MAX_PARALLEL_STOPS = 64
MAX_FINISHED = 100_000  # finished task ids remembered (never restarted)
EVENT_SETTLE_SECONDS = 0.5  # a second pass after a container event, see Agent._on_event


@dataclass
class AgentConfig:
    node_id: str
    cluster: str = "default"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    docker_url: str = "unix:///var/run/docker.sock"
    attributes: dict[str, str] = field(default_factory=dict)
    runtime: str = "docker"  # "docker" | "hollow" (hollow: for control-plane benchmarks only)
    hollow_count: int = 1  # with runtime hollow: this many agents in one process, node ids f"{node_id}-{i}"
    capacity_providers: list[str] = field(default_factory=lambda: ["EC2"])
    # The agent's one timer ticks every status_interval: MQTT keepalive housekeeping, a full
    # snapshot (the heartbeat; the orchestrator declares the node lost after 3 missed), and a
    # re-list when relist_interval has passed. One wake-up per tick keeps an idle agent under
    # 1 % of a core on a VM where each wake-up costs milliseconds (docs/benchmarks.md, bus).
    status_interval: float = 5.0
    relist_interval: float = 30.0  # level-triggered re-list of containers (events are the edge)
    image_pull_behavior: str = "default"  # ECS_IMAGE_PULL_BEHAVIOR: default | always | once | prefer-cached
    log_level: str = "info"
    log_json: bool = False


class Agent:
    """One node's agent. Several can share an event loop (hollow runtime)."""

    def __init__(self, cfg: AgentConfig, node_id: str, runtime: Runtime) -> None:
        self.cfg, self.node_id, self.rt = cfg, node_id, runtime
        self.boot_id = uuid.uuid4().hex
        self.log = log.get("agent", node=node_id, cluster=cfg.cluster)
        self.t_desired = node_topic(cfg.cluster, node_id, "desired")
        self.t_status = node_topic(cfg.cluster, node_id, "status")
        self.t_presence = node_topic(cfg.cluster, node_id, "presence")
        self.doc: DesiredDoc | None = None
        self.finished: dict[str, diff.Finish] = {}
        self.pull_errors: dict[str, str] = {}
        self.actual: list[ActualContainer] = []
        self.networks: dict[str, str] = {}
        self.last_sent: dict[str, dict[str, Any]] = {}
        self._report_cache: dict[str, tuple] = {}  # see reports_and_dumps
        self.logged_status: dict[str, str] = {}
        self.seq = 0
        self.info: EngineInfo | None = None
        self.client: Client | None = None
        self.wake = asyncio.Event()
        self.connected = asyncio.Event()
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self.sem = asyncio.Semaphore(MAX_PARALLEL_TASKS)
        self.stop_sem = asyncio.Semaphore(MAX_PARALLEL_STOPS)
        self.publish_lock = asyncio.Lock()
        self.last_relist = 0.0  # loop time of the last reconcile pass (which re-lists)
        self._networks_listed = False
        self._settle: asyncio.TimerHandle | None = None  # see _on_event
        self._tasks: list[asyncio.Task[None]] = []

    # ---- presence / status -------------------------------------------------------------------
    def attributes(self) -> dict[str, str]:
        base = {
            "ecs.os-type": self.info.os_type if self.info else "linux",
            "ecs.cpu-architecture": self.info.architecture if self.info else "x86_64",
            "hostname": socket.gethostname(),
        }
        return {**base, **self.cfg.attributes}

    def presence(self, state: str) -> bytes:
        res = NodeResources(cpu=self.info.cpu, memory=self.info.memory) if self.info else None
        return Presence(
            nodeId=self.node_id, bootId=self.boot_id, state=state, cluster=self.cfg.cluster, resources=res,
            attributes=self.attributes(), capacityProviders=list(self.cfg.capacity_providers), runtime=self.rt.name,
            statusInterval=self.cfg.status_interval,
        ).model_dump_json().encode()

    def reports(self) -> dict[str, TaskReport]:
        return {tid: r for tid, (r, _) in self.reports_and_dumps().items()}

    def reports_and_dumps(self) -> dict[str, tuple[TaskReport, dict[str, Any]]]:
        """Every task's report and its JSON dump (for change detection). A report depends only on
        the desired entry, the task's containers, its finish and its pull error; entries and
        containers are immutable and replaced when they change, so an unchanged task reuses the
        report built last time (snapshots every 2 s would otherwise rebuild all of them)."""
        desired = {t.taskId: t for t in self.doc.tasks} if self.doc else {}
        by_task: dict[str, list[ActualContainer]] = {}
        for c in self.actual:
            if c.node == self.node_id and c.task_id:
                by_task.setdefault(c.task_id, []).append(c)
        out: dict[str, tuple[TaskReport, dict[str, Any]]] = {}
        cache = self._report_cache
        for tid in list(desired) + [tid for tid in by_task if tid not in desired]:
            t, cs = desired.get(tid), by_task.get(tid, [])
            fin, perr = self.finished.get(tid), self.pull_errors.get(tid)
            hit = cache.get(tid)
            if (hit is not None and hit[0] is t and hit[2] is fin and hit[3] == perr and len(hit[1]) == len(cs)
                    and all(a is b for a, b in zip(hit[1], cs))):
                out[tid] = hit[4]
                continue
            r = diff.task_report(tid, t, cs, fin, perr)
            out[tid] = (r, r.model_dump(mode="json"))
            cache[tid] = (t, tuple(cs), fin, perr, out[tid])
        for tid in [tid for tid in cache if tid not in out]:
            del cache[tid]
        return out

    async def publish_status(self, kind: str, force: bool = False) -> None:
        """``snapshot``: every task; ``update``: changed tasks only (sent even if empty when ``force``)."""
        async with self.publish_lock:
            both = self.reports_and_dumps()
            reports = {tid: r for tid, (r, _) in both.items()}
            dumps = {tid: d for tid, (_, d) in both.items()}
            if kind == "snapshot":
                send = list(reports.values())
            else:
                send = [reports[tid] for tid, d in dumps.items() if self.last_sent.get(tid) != d]
                if not send and not force:
                    return
            client = self.client
            if client is None:
                return
            self.seq += 1
            epoch, gen = self.doc.version() if self.doc else (0, 0)
            doc = StatusDoc(nodeId=self.node_id, bootId=self.boot_id, seq=self.seq, kind=kind,
                            observedEpoch=epoch, observedGeneration=gen, tasks=send)
            try:
                await client.publish(self.t_status, doc.model_dump_json().encode(), qos=1)
            except aiomqtt.MqttError as e:
                self.log.warning("status publish failed", error=str(e))
                return
            if kind == "snapshot":
                self.last_sent = dumps
            else:
                for r in send:
                    self.last_sent[r.taskId] = dumps[r.taskId]
            for r in send:
                if self.logged_status.get(r.taskId) != r.lastStatus:
                    self.logged_status[r.taskId] = r.lastStatus
                    self.log.info("task status", task=r.taskId, status=r.lastStatus, stopCode=r.stopCode,
                                  reason=r.stoppedReason, health=r.healthStatus)

    # ---- MQTT ---------------------------------------------------------------------------------
    async def mqtt_loop(self) -> None:
        backoff = Backoff()
        ident = f"dockyard-agent-{self.cfg.cluster}-{self.node_id}"[:128]
        while True:
            try:
                will = aiomqtt.Will(self.t_presence, self.presence("offline"), qos=1, retain=True)
                async with make_client(self.cfg.mqtt_url, ident, will=will, keepalive=self.keepalive(),
                                       misc_interval=None) as client:  # housekeeping: status_loop
                    self.client = client
                    backoff.reset()
                    await client.publish(self.t_presence, self.presence("online"), qos=1, retain=True)
                    await client.subscribe(self.t_desired, qos=1)
                    self.connected.set()
                    self.log.info("connected", broker=self.cfg.mqtt_url, bootId=self.boot_id)
                    await self.publish_status("snapshot")
                    async for msg in client.messages:
                        await self.on_desired(msg.payload)
            except aiomqtt.MqttError as e:
                self.client = None
                self.connected.clear()
                delay = backoff.next()
                self.log.warning("mqtt disconnected; reconnecting", error=str(e), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
            finally:
                self.client = None
                self.connected.clear()

    async def on_desired(self, payload: Any) -> None:
        try:
            head = DesiredDocHead.model_validate_json(payload)
            if head.nodeId == self.node_id and head.cluster == self.cfg.cluster and (
                    self.doc is None or (head.epoch, head.generation) > self.doc.version()):
                doc = parse_desired(payload, head, self.doc)
            else:
                doc = DesiredDoc.model_construct(cluster=head.cluster, nodeId=head.nodeId, epoch=head.epoch,
                                                 generation=head.generation)  # rejected below
        except ValidationError as e:
            self.log.warning("ignoring invalid desired document", error=str(e).splitlines()[0])
            return
        if doc.nodeId != self.node_id or doc.cluster != self.cfg.cluster:
            self.log.warning("ignoring desired document for another node", docNode=doc.nodeId, docCluster=doc.cluster)
            return
        if self.doc is not None and doc.version() <= self.doc.version():
            self.log.debug("ignoring stale desired document", version=doc.version(), applied=self.doc.version())
            return
        previous, self.doc = self.doc, doc
        # The acknowledgement first, with the reports of only the tasks this document changed
        # (new, desiredStatus changed, removed): building all 50 reports of a node costs ~0.7 ms
        # (bench/bus.py) and the reconcile pass woken here sends the rest.
        await self.ack(changed_task_ids(previous, doc))
        self.wake.set()
        self.log.info("desired document applied", epoch=doc.epoch, generation=doc.generation, tasks=len(doc.tasks))

    async def ack(self, task_ids: set[str]) -> None:
        """Publish a status ``update`` carrying the applied document's version and the changed
        reports of ``task_ids`` (from the known state, before any Docker work).

        Not under ``publish_lock``: numbering and queueing (paho queues synchronously in
        ``publish``) happen without an ``await`` in between, so ``seq`` order is send order."""
        client = self.client
        if client is None or self.doc is None:
            return
        send: list[TaskReport] = []
        dumps: dict[str, dict[str, Any]] = {}
        if task_ids:
            desired = {t.taskId: t for t in self.doc.tasks if t.taskId in task_ids}
            by_task: dict[str, list[ActualContainer]] = {}
            for c in self.actual:
                if c.node == self.node_id and c.task_id in task_ids:
                    by_task.setdefault(c.task_id, []).append(c)
            for tid in sorted(task_ids):
                if tid not in desired and tid not in by_task:
                    continue  # gone and no containers: nothing to report (as reports())
                r = diff.task_report(tid, desired.get(tid), by_task.get(tid, []), self.finished.get(tid),
                                     self.pull_errors.get(tid))
                d = r.model_dump(mode="json")
                if self.last_sent.get(tid) != d:
                    send.append(r)
                    dumps[tid] = d
        self.seq += 1
        epoch, gen = self.doc.version()
        doc = StatusDoc(nodeId=self.node_id, bootId=self.boot_id, seq=self.seq, kind="update",
                        observedEpoch=epoch, observedGeneration=gen, tasks=send)
        try:
            await client.publish(self.t_status, doc.model_dump_json().encode(), qos=1)
        except aiomqtt.MqttError as e:
            self.log.warning("status publish failed", error=str(e))
            return
        for r in send:
            self.last_sent[r.taskId] = dumps[r.taskId]
            if self.logged_status.get(r.taskId) != r.lastStatus:
                self.logged_status[r.taskId] = r.lastStatus
                self.log.info("task status", task=r.taskId, status=r.lastStatus, stopCode=r.stopCode,
                              reason=r.stoppedReason, health=r.healthStatus)

    # ---- reconcile ----------------------------------------------------------------------------
    async def reconcile_loop(self) -> None:
        """Runs when woken: by a desired document, a container event, a finished action, or the
        status tick when a re-list is due (no timer of its own)."""
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            await self.wake.wait()
            self.wake.clear()
            self.last_relist = asyncio.get_running_loop().time()
            try:
                await self.reconcile_once()
                backoff.reset()
            except Exception as e:  # noqa: BLE001 - engine errors must not kill the agent
                delay = backoff.next()
                self.log.error("reconcile failed; retrying", error=f"{type(e).__name__}: {e}", retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    async def reconcile_once(self) -> None:
        self.actual = await self.rt.list(self.node_id)
        if not self._networks_listed or self.networks or self._awsvpc_desired():
            # Task networks exist only for awsvpc/FARGATE tasks: list them on the first pass (to
            # remove leftovers) and while any are known or wanted; an idle bridge-only node skips
            # the request (each one is a wake-up, see status_loop).
            self.networks = await self.rt.list_networks(self.node_id)
            self._networks_listed = True
        if self.doc is not None:  # no document yet: adopt and report, never remove anything
            p = diff.plan(self.doc.tasks, self.actual, self.node_id, self.finished, self.networks)
            for tid, fin in p.finished.items():
                self._finish(tid, fin)
            for tid, acts in p.by_task().items():
                if tid not in self.inflight:
                    self.inflight[tid] = asyncio.create_task(self.execute(tid, acts))
        await self.publish_status("update")
        self._prune()

    def _awsvpc_desired(self) -> bool:
        from agent.docker_runtime import network_mode

        return self.doc is not None and any(network_mode(t) == "awsvpc" for t in self.doc.tasks)

    def _prune(self) -> None:
        """Forget per-task bookkeeping of tasks that are neither desired nor have containers."""
        live = {c.task_id for c in self.actual} | ({t.taskId for t in self.doc.tasks} if self.doc else set())
        for d in (self.pull_errors, self.last_sent, self.logged_status):
            for tid in [t for t in d if t not in live]:
                del d[tid]

    def _finish(self, tid: str, fin: diff.Finish) -> None:
        if tid in self.finished:
            return
        self.finished[tid] = fin
        self.log.info("task finished", task=tid, stopCode=fin.stop_code, reason=fin.reason,
                      container=fin.container, exitCode=fin.exit_code)
        while len(self.finished) > MAX_FINISHED:
            self.finished.pop(next(iter(self.finished)))

    async def execute(self, tid: str, actions: list[diff.Action]) -> None:
        from agent.docker_runtime import build_create_spec, network_mode, registry_auth, task_network_name

        lg = self.log.bind(task=tid)
        created: dict[str, str] = {}
        try:
            async with _Slot(self.sem) as slot:
                for a in actions:
                    if isinstance(a, diff.Create):
                        task, cdef = a.task, a.definition
                        if network_mode(task) == "awsvpc":
                            await self.rt.ensure_network(task_network_name(tid), {L_TASK: tid, L_NODE: self.node_id})
                        try:
                            perr = await self.rt.ensure_image(cdef.image, registry_auth(cdef))
                        except ImageUnavailable as e:
                            self.pull_errors[tid] = str(e)
                            self._finish(tid, diff.Finish(diff.FAILED_TO_START, f"CannotPullContainerError: {e}", a.container_name))
                            return
                        if perr:
                            self.pull_errors[tid] = perr
                        spec = build_create_spec(task, cdef, self.node_id, self.cfg.cluster)
                        try:
                            created[a.container_name] = await self.rt.create(spec)
                        except Exception as e:  # noqa: BLE001
                            if _transient(e):
                                raise
                            self._finish(tid, diff.Finish(diff.FAILED_TO_START, f"CannotCreateContainerError: {_msg(e)}", a.container_name))
                            return
                        lg.info("container created", container=a.container_name, id=created[a.container_name][:12])
                    elif isinstance(a, diff.Start):
                        cid = a.docker_id or created[a.container_name]
                        try:
                            await self.rt.start(cid)
                        except Exception as e:  # noqa: BLE001
                            if _transient(e):
                                raise
                            self._finish(tid, diff.Finish(diff.FAILED_TO_START, f"CannotStartContainerError: {_msg(e)}", a.container_name))
                            return
                        lg.info("container started", container=a.container_name, id=cid[:12])
                    elif isinstance(a, diff.Stop):
                        lg.info("stopping container", container=a.container_name, id=a.docker_id[:12], timeout=a.timeout)
                        async with slot.released(), self.stop_sem:
                            await self.rt.stop(a.docker_id, a.timeout)
                    elif isinstance(a, diff.Remove):
                        await self.rt.remove(a.docker_id)
                        lg.info("container removed", container=a.container_name, id=a.docker_id[:12])
                    elif isinstance(a, diff.RemoveNetwork):
                        await self.rt.remove_network(a.network)
                        lg.info("task network removed", network=a.network)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - retried on the next pass (level-triggered)
            lg.error("action failed; will retry", error=f"{type(e).__name__}: {e}")
            await asyncio.sleep(1.0)
        finally:
            self.inflight.pop(tid, None)
            self.wake.set()

    # ---- events / periodic ----------------------------------------------------------------------
    async def events_loop(self) -> None:
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            try:
                async for _ev in self.rt.events(self.node_id):
                    self._on_event()
                    backoff.reset()
                self.log.warning("container event stream ended; resubscribing")
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                self.log.warning("container event stream failed; resubscribing", error=f"{type(e).__name__}: {e}")
            self.wake.set()  # events may have been missed: re-list now, not at the next relist_interval
            await asyncio.sleep(backoff.next())

    def _on_event(self) -> None:
        """Wake a pass now, and once more EVENT_SETTLE_SECONDS later: Docker sends ``die``
        before the container's new state is visible to a list (a pass woken by the event alone
        still saw it running, and nothing else woke the agent until the next re-list)."""
        self.wake.set()
        if self._settle is None:
            self._settle = asyncio.get_running_loop().call_later(EVENT_SETTLE_SECONDS, self._settled)

    def _settled(self) -> None:
        self._settle = None
        self.wake.set()

    def keepalive(self) -> int:
        """MQTT keepalive, long enough for housekeeping once per status tick (paho pings when
        nothing was sent or received for keepalive s; the broker's Will fires after 1.5x)."""
        return max(10, math.ceil(3 * self.cfg.status_interval))

    async def status_loop(self) -> None:
        """The agent's only timer: MQTT housekeeping, a re-list when due, and a snapshot."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.cfg.status_interval)
            client = self.client
            if client is not None:
                client.housekeeping()
            if loop.time() - self.last_relist >= self.cfg.relist_interval - 0.05:
                self.wake.set()
            try:
                await self.publish_status("snapshot")
            except Exception as e:  # noqa: BLE001
                self.log.warning("snapshot failed", error=str(e))

    # ---- life cycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        backoff = Backoff(base=0.5, cap=10.0)
        while True:
            try:
                self.info = await self.rt.info()
                self.actual = await self.rt.list(self.node_id)  # adopt before the first desired doc
                break
            except Exception as e:  # noqa: BLE001
                delay = backoff.next()
                self.log.error("container engine unavailable; retrying", error=f"{type(e).__name__}: {e}", retry_in=round(delay, 2))
                await asyncio.sleep(delay)
        self.log.info("agent starting", bootId=self.boot_id, runtime=self.rt.name, cpu=self.info.cpu,
                      memory=self.info.memory, adopted=len(self.actual))
        self.wake.set()  # a first pass: report the adopted containers
        for coro in (self.mqtt_loop(), self.reconcile_loop(), self.events_loop(), self.status_loop()):
            self._tasks.append(asyncio.create_task(coro))

    async def shutdown(self) -> None:
        """Publish offline presence, disconnect; containers keep running (a restart adopts them)."""
        client = self.client
        if client is not None:
            try:
                await asyncio.wait_for(client.publish(self.t_presence, self.presence("offline"), qos=1, retain=True), 2.0)
            except Exception as e:  # noqa: BLE001
                self.log.warning("offline presence not published", error=str(e))
        for t in list(self._tasks) + list(self.inflight.values()):
            t.cancel()
        await asyncio.gather(*self._tasks, *self.inflight.values(), return_exceptions=True)
        await self.rt.close()
        self.log.info("agent stopped; containers left running")


def changed_task_ids(previous: DesiredDoc | None, doc: DesiredDoc) -> set[str]:
    """Tasks new in ``doc``, changed (desiredStatus) or gone since ``previous``. Entries that
    :func:`parse_desired` carried over unchanged are the same objects."""
    old = {t.taskId: t for t in previous.tasks} if previous is not None else {}
    ids = {t.taskId for t in doc.tasks if old.get(t.taskId) is not t}
    return ids | (old.keys() - {t.taskId for t in doc.tasks})


def parse_desired(payload: Any, head: DesiredDocHead, previous: DesiredDoc | None) -> DesiredDoc:
    """The DesiredDoc in ``payload``, validating only the tasks ``previous`` did not have.

    Documents are full task sets, so most tasks repeat from one generation to the next; a
    task's definition is fixed by its id and family:revision (revisions are immutable), so
    the already-validated entry is reused (with the new desiredStatus). Validating 50 task
    definitions costs ~0.7 ms, the head ~0.1 ms (bench/bus.py). ``head`` is the payload
    parsed as :class:`DesiredDocHead`."""
    known = {t.taskId: t for t in previous.tasks} if previous is not None else {}
    tasks: list[DesiredTask | None] = []
    for h in head.tasks:
        k = known.get(h.taskId)
        if k is None or (k.family, k.revision, k.launchType, k.serviceName) != (h.family, h.revision, h.launchType, h.serviceName):
            tasks.append(None)
        elif k.desiredStatus != h.desiredStatus:
            tasks.append(k.model_copy(update={"desiredStatus": h.desiredStatus}))
        else:
            tasks.append(k)
    if all(t is None for t in tasks):
        return DesiredDoc.model_validate_json(payload)
    if any(t is None for t in tasks):
        raw = from_json(payload)["tasks"]
        for i, t in enumerate(tasks):
            if t is None:
                tasks[i] = DesiredTask.model_validate(raw[i])
    return DesiredDoc.model_construct(cluster=head.cluster, nodeId=head.nodeId, epoch=head.epoch,
                                      generation=head.generation, tasks=tasks, publishedAt=head.publishedAt)


class _Slot:
    """One of the agent's MAX_PARALLEL_TASKS slots, held while a task's actions run (so the
    actions of a task run back to back and at most that many tasks load the engine at once),
    and given back while the task only waits for a container to stop: bench/rollout.py showed
    the stops of a rollout (50 old tasks, 2 s stopTimeout) queued 12 at a time behind the
    slots, ~6 s of a 20 s rollout; with the default 30 s stopTimeout and an app that ignores
    SIGTERM, 12 stops would keep every create on the node waiting for 30 s."""

    def __init__(self, sem: asyncio.Semaphore) -> None:
        self.sem, self.held = sem, False

    async def __aenter__(self) -> "_Slot":
        await self.sem.acquire()
        self.held = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.held:
            self.held = False
            self.sem.release()

    @contextlib.asynccontextmanager
    async def released(self):  # noqa: ANN201
        self.held = False
        self.sem.release()
        try:
            yield
        finally:
            await self.sem.acquire()
            self.held = True


def _transient(e: Exception) -> bool:
    """Connection-level failures (engine down) are retried; daemon answers fail the task."""
    try:
        from aiodocker.exceptions import DockerError
    except ImportError:  # pragma: no cover
        return True
    return not isinstance(e, (DockerError, KeyError, ValueError))


def _msg(e: Exception) -> str:
    return str(getattr(e, "message", None) or e)


def make_agents(cfg: AgentConfig) -> list[Agent]:
    if cfg.runtime == "hollow":
        from agent.hollow import HollowRuntime

        ids = [cfg.node_id] if cfg.hollow_count <= 1 else [f"{cfg.node_id}-{i}" for i in range(cfg.hollow_count)]
        return [Agent(cfg, nid, HollowRuntime()) for nid in ids]
    if cfg.runtime != "docker":
        raise ValueError(f"unknown runtime {cfg.runtime!r}; use docker or hollow")
    from agent.docker_runtime import DockerRuntime

    return [Agent(cfg, cfg.node_id, DockerRuntime(cfg.docker_url, cfg.image_pull_behavior))]


async def run_async(cfg: AgentConfig, stop: asyncio.Event | None = None) -> int:
    lg = log.get("agent", node=cfg.node_id, cluster=cfg.cluster)
    try:
        parse_url(cfg.mqtt_url)
        agents = make_agents(cfg)
    except ValueError as e:
        lg.error("invalid configuration", error=str(e))
        return 2
    if cfg.runtime == "hollow":
        lg.warning("!!! HOLLOW RUNTIME: NO CONTAINERS ARE RUN. For control-plane benchmarks only !!!",
                   agents=len(agents))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    starters = [asyncio.create_task(a.start()) for a in agents]
    await stop.wait()
    lg.info("shutting down", signal=True)
    for s in starters:
        s.cancel()
    await asyncio.gather(*starters, return_exceptions=True)
    await asyncio.gather(*(a.shutdown() for a in agents), return_exceptions=True)
    return 0


def run(cfg: AgentConfig) -> int:
    """Run the agent until SIGTERM/SIGINT. Blocking; returns the process exit code."""
    log.configure(cfg.log_level, json=cfg.log_json)
    # Cyclic GC thresholds as the orchestrator's (orchestrator/daemon.py): with the defaults a
    # hollow agent process (250 agents, bench/scale.py) spent 1-1.5 s in 12 full collections
    # of ~190k objects per 10,000-task run; with these, none.
    gc.freeze()
    gc.set_threshold(10_000, 10, 100)
    try:
        return asyncio.run(run_async(cfg))
    except KeyboardInterrupt:
        return 130


# ---- CLI -------------------------------------------------------------------------------------
def _parse_attributes(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {v!r}", ctx=ctx, param=param)
        out[key.strip()] = val.strip()
    return out


@click.command("agent")
@click.option("--node-id", required=True, help="This node's id (unique in the cluster).")
@click.option("--cluster", default="default", show_default=True, help="Cluster to join.")
@click.option("--mqtt", "mqtt_url", default=lambda: os.environ.get("DOCKYARD_MQTT", "mqtt://127.0.0.1:1883"),
              show_default="env DOCKYARD_MQTT or mqtt://127.0.0.1:1883", help="MQTT broker URL.")
@click.option("--docker", "docker_url", default="unix:///var/run/docker.sock", show_default=True, help="Docker engine URL.")
@click.option("--attribute", "attributes", multiple=True, callback=_parse_attributes, metavar="KEY=VALUE",
              help="Custom node attribute for placement constraints (repeatable).")
@click.option("--runtime", type=click.Choice(["docker", "hollow"]), default="docker", show_default=True,
              help="hollow runs NO containers (control-plane benchmarks only).")
@click.option("--hollow-count", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --runtime hollow: agents in this process (node ids <node-id>-<i>).")
@click.option("--fargate", is_flag=True, help="Also offer the FARGATE capacity pool.")
@click.option("--status-interval", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between full status snapshots (the heartbeat; the node is declared lost after 3 missed).")
@click.option("--relist-interval", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds between level-triggered container re-lists (at status ticks).")
@click.option("--image-pull-behavior", type=click.Choice(["default", "always", "once", "prefer-cached"]),
              default="default", show_default=True, help="As ECS_IMAGE_PULL_BEHAVIOR.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@click.option("--log-json", is_flag=True, help="JSON log lines.")
@click.pass_context
def agent_command(ctx: click.Context, node_id: str, cluster: str, mqtt_url: str, docker_url: str,
                  attributes: dict[str, str], runtime: str, hollow_count: int, fargate: bool, status_interval: float,
                  relist_interval: float, image_pull_behavior: str, log_level: str, log_json: bool) -> None:
    """Run the dockyard agent on this host: drive the local Docker engine as the orchestrator asks."""
    cfg = AgentConfig(
        node_id=node_id, cluster=cluster, mqtt_url=mqtt_url, docker_url=docker_url, attributes=attributes,
        runtime=runtime, hollow_count=hollow_count, capacity_providers=["EC2", "FARGATE"] if fargate else ["EC2"],
        status_interval=status_interval, relist_interval=relist_interval, image_pull_behavior=image_pull_behavior,
        log_level=log_level, log_json=log_json,
    )
    ctx.exit(run(cfg))


if __name__ == "__main__":  # pragma: no cover
    agent_command()
