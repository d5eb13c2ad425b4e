"""ECS's task metadata endpoint v4, the HTTP shell (aiohttp, in the agent's event loop).

One listener on ``<bind>:<port>`` (default 0.0.0.0:51679; ``--metadata-port 0`` disables it).
Containers reach it at the Docker bridge gateway (``docker network inspect bridge``), a host
address that bridge, per-task (awsvpc) and host-mode containers can all reach without any
iptables rule. Who may read what is decided by :mod:`agent.metadata` (token + source address);
the documents are built there too, from the agent's state and a fresh ``docker inspect``.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError
from aiohttp import web

from agent import diff, metadata
from agent.runtime import ActualContainer
from agent.state import NodeState
from dockyard.mqtt import Backoff
from dockyard.wire import DesiredTask

SECRET_FILE = "metadata.key"
START_ATTEMPTS = 6  # bridge-gateway lookups before the first pass (Backoff: at most 0.25+0.5+1+2+2 s between)
RETRY_DELAY, RETRY_DELAY_MAX = 0.25, 2.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_secret(state_dir: Path) -> bytes:
    """The agent's token secret: read from ``state_dir``, created there (0600) on first start.
    It must outlive the agent process: the URI is baked into each container at create, and a
    restarted agent adopts its containers."""
    path = state_dir / SECRET_FILE
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = os.urandom(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    os.replace(tmp, path)
    return secret


async def bridge_gateway(docker: aiodocker.Docker) -> str | None:
    """The Docker bridge network's gateway address (e.g. 172.17.0.1), or None without one."""
    try:
        net = await docker._query_json("networks/bridge")
    except (DockerError, OSError, TimeoutError):  # aiohttp's connection errors are OSErrors
        return None
    return gateway_of(net)


def gateway_of(network: dict[str, Any]) -> str | None:
    """The IPv4 gateway of an inspected network: its IPAM ``Gateway``, else the subnet's first host
    address, which is what Docker's IPAM gives the bridge when none was configured (a dockerd that
    created ``docker0`` itself reports only the subnet)."""
    for cfg in (network.get("IPAM") or {}).get("Config") or []:
        if cfg.get("Gateway") and ":" not in cfg["Gateway"]:
            return str(cfg["Gateway"])
    for cfg in (network.get("IPAM") or {}).get("Config") or []:
        try:
            subnet = ipaddress.ip_network(cfg.get("Subnet") or "", strict=False)
        except ValueError:
            continue
        if subnet.version == 4 and subnet.num_addresses > 2:
            return str(subnet.network_address + 1)
    return None


class MetadataServer:
    def __init__(self, state: NodeState, docker: aiodocker.Docker, cluster: str, secret: bytes, port: int,
                 log: Any, bind: str = "0.0.0.0", attributes: dict[str, str] | None = None) -> None:
        self.state, self.docker, self.cluster, self.secret = state, docker, cluster, secret
        self.port, self.bind, self.log = port, bind, log
        self.zone = metadata.availability_zone(attributes or {})
        self.address: str | None = None  # what containers connect to
        self._runner: web.AppRunner | None = None
        self._index: dict[str, tuple[str, str]] = {}  # token -> (task id, container name)
        self._indexed_doc: object = None
        self._resolver: asyncio.Task[None] | None = None

    # ---- life cycle ------------------------------------------------------------------------------
    async def start(self) -> bool:
        """Listen; False (logged) when the endpoint cannot be served: containers then get no URI.

        The bridge gateway is looked up a few times first (an engine that is still starting, or
        restarting, answers without one); without it the endpoint still listens and keeps looking
        in the background, so only containers created until it is found go without a URI."""
        self.address = await self._find_gateway(attempts=START_ATTEMPTS)
        if self.address is None:
            self.log.warning("task metadata endpoint has no address yet: the Docker engine reports no bridge "
                             "network gateway; containers created until it does get no ECS_CONTAINER_METADATA_URI_V4",
                             hint="check `docker network inspect bridge` (dockerd --bridge=none disables it)")
            self._resolver = asyncio.create_task(self._gateway_later())
        app = web.Application()
        for suffix, handler in (("", self._container), ("/task", self._task), ("/stats", self._stats),
                                ("/task/stats", self._task_stats)):
            app.router.add_get(metadata.PATH_PREFIX + "{token}" + suffix, handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.bind, self.port).start()
        except OSError as e:
            await runner.cleanup()
            self._stop_resolver()
            self.log.error("task metadata endpoint disabled: cannot listen", listen=f"{self.bind}:{self.port}",
                           error=e.strerror or str(e), hint="choose another --metadata-port, or 0 to disable it")
            return False
        self._runner = runner
        uri = metadata.metadata_uri(self.address, self.port, "<token>") if self.address else None
        self.log.info("task metadata endpoint listening", listen=f"{self.bind}:{self.port}", uri=uri)
        return True

    async def _find_gateway(self, attempts: int | None) -> str | None:
        """Look up the bridge gateway, with backoff between misses; None after ``attempts`` misses
        (``None``: until the engine reports one)."""
        backoff, tries = Backoff(RETRY_DELAY, RETRY_DELAY_MAX), 0
        while True:
            address = await bridge_gateway(self.docker)
            tries += 1
            if address is not None or (attempts is not None and tries >= attempts):
                return address
            await asyncio.sleep(backoff.next())

    async def _gateway_later(self) -> None:
        self.address = await self._find_gateway(attempts=None)
        self.log.info("task metadata endpoint has its address",
                      uri=metadata.metadata_uri(self.address or "", self.port, "<token>"))

    def _stop_resolver(self) -> None:
        if self._resolver is not None:
            self._resolver.cancel()
            self._resolver = None

    async def close(self) -> None:
        self._stop_resolver()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def uri(self, task_id: str, container: str) -> str | None:
        """The ``ECS_CONTAINER_METADATA_URI_V4`` of a container (None while not serving)."""
        if self._runner is None or self.address is None:
            return None
        return metadata.metadata_uri(self.address, self.port, metadata.token(self.secret, task_id, container))

    # ---- resolving a request ----------------------------------------------------------------------
    def _lookup(self, tok: str) -> tuple[DesiredTask, str] | None:
        doc = self.state.doc
        if doc is None:
            return None
        if doc is not self._indexed_doc:  # tokens of the desired containers, recomputed per document
            known = {v: k for k, v in self._index.items()}
            pairs = [(t.taskId, c.name) for t in doc.tasks for c in t.taskDefinition.containerDefinitions]
            self._index = {known.get(p) or metadata.token(self.secret, *p): p for p in pairs}
            self._indexed_doc = doc
        hit = self._index.get(tok)
        if hit is None:
            return None
        task = next((t for t in doc.tasks if t.taskId == hit[0]), None)
        return (task, hit[1]) if task is not None else None

    def _containers(self, task_id: str) -> dict[str, ActualContainer]:
        by_name: dict[str, list[ActualContainer]] = {}
        for c in self.state.actual:
            if c.task_id == task_id:
                by_name.setdefault(c.container_name, []).append(c)
        return {n: diff._pick(cs)[0] for n, cs in by_name.items()}

    async def _facts(self, cid: str) -> metadata.ContainerFacts | None:
        try:
            return metadata.facts_from_inspect(await self.docker._query_json(f"containers/{cid}/json"))
        except DockerError:
            return None

    async def _authorize(self, request: web.Request) -> tuple[DesiredTask, str, dict[str, ActualContainer],
                                                              metadata.ContainerFacts]:
        """The token's task and container, or an HTTP error without any of its data."""
        found = self._lookup(request.match_info["token"])
        if found is None:
            raise web.HTTPNotFound(text="no such metadata endpoint\n")
        task, name = found
        actual = self._containers(task.taskId)
        own = actual.get(name)
        facts = await self._facts(own.id) if own is not None else None
        if facts is None:
            raise web.HTTPNotFound(text="no such metadata endpoint\n")
        if not metadata.source_allowed(request.remote, facts):
            self.log.warning("task metadata request refused: not from the token's container", task=task.taskId,
                             container=name, remote=request.remote)
            raise web.HTTPForbidden(text="this metadata endpoint is for its own container only\n")
        return task, name, actual, facts

    def _stopping(self, task: DesiredTask) -> bool:
        return task.desiredStatus == "STOPPED" or task.taskId in self.state.finished

    def _restarts(self, actual: dict[str, ActualContainer]) -> dict[str, int]:
        return {n: self.state.restarts.get(c.id, 0) for n, c in actual.items()}

    # ---- handlers ---------------------------------------------------------------------------------
    async def _container(self, request: web.Request) -> web.Response:
        task, name, actual, facts = await self._authorize(request)
        cdef = next(c for c in task.taskDefinition.containerDefinitions if c.name == name)
        doc = metadata.container_metadata(self.cluster, task, cdef, facts, self._stopping(task),
                                          self._restarts(actual).get(name, 0))
        return web.json_response(doc)

    async def _task(self, request: web.Request) -> web.Response:
        task, name, actual, facts = await self._authorize(request)
        others = [n for n in actual if n != name]
        got = await asyncio.gather(*(self._facts(actual[n].id) for n in others))
        by_name = {n: f for n, f in zip(others, got, strict=True) if f is not None}
        by_name[name] = facts
        st = self.state
        report = diff.task_report(task.taskId, task, list(actual.values()), st.finished.get(task.taskId))
        pulls = st.pulls.get(task.taskId)
        doc = metadata.task_metadata(self.cluster, task, by_name, report.lastStatus, self._stopping(task),
                                     self.zone, self._restarts(actual),
                                     metadata.rfc3339(pulls[0]) if pulls else None,
                                     metadata.rfc3339(pulls[1]) if pulls else None)
        return web.json_response(doc)

    async def _one_stats(self, cid: str) -> dict[str, Any]:
        try:
            got = await self.docker.containers.container(cid).stats(stream=False)
        except DockerError:
            return {}
        return got[0] if got else {}

    async def _stats(self, request: web.Request) -> web.Response:
        _task, _name, _actual, facts = await self._authorize(request)
        return web.json_response(await self._one_stats(facts.docker_id))

    async def _task_stats(self, request: web.Request) -> web.Response:
        _task, _name, actual, _facts = await self._authorize(request)
        ids = [c.id for c in actual.values()]
        got = await asyncio.gather(*(self._one_stats(cid) for cid in ids))
        return web.json_response(dict(zip(ids, got, strict=True)))
