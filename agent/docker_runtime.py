"""The Docker runtime (aiodocker): container specs from ECS definitions, pulls, list/inspect."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from agent import docker_options
from agent.runtime import (
    L_CONTAINER,
    L_NODE,
    L_TASK,
    ActualContainer,
    CreateSpec,
    EngineInfo,
    ImageUnavailable,
    PortBinding,
    VolumeSpec,
    VolumeUnavailable,
    container_labels,
    container_name,
    network_mode,
    task_network_name,
)
from dockyard import log
from dockyard.ecs import ContainerDefinition
from dockyard.wire import DesiredTask

__all__ = ["DockerRuntime", "build_create_spec", "container_name", "network_mode", "registry_auth", "task_network_name"]

MiB = 1024 * 1024
PULL_FAILURE_TTL = 60.0  # a failed pull is not retried for this long (per image)
PULL_BEHAVIORS = ("default", "always", "once", "prefer-cached")
# Container events that can change a report (each wakes a reconcile pass: list + inspect).
# Not exec_create/exec_start/exec_die: a health check runs one exec per interval per container,
# so health-checked containers would wake the agent many times a second (bench/bus.py
# --health-check measures it). "health_status" (sent when the status changes) is matched by
# prefix ("health_status: healthy"). The periodic re-list is the backstop.
WATCHED_EVENTS = ("create", "start", "die", "destroy", "oom", "pause", "unpause", "health_status")


# ---- container spec (pure) -------------------------------------------------------------------
def health_config(c: ContainerDefinition) -> dict[str, Any] | None:
    hc = c.healthCheck
    if hc is None:
        return None
    ns = 1_000_000_000
    out: dict[str, Any] = {"Test": list(hc.command)}
    if hc.command[0] != "NONE":
        out.update(Interval=hc.interval * ns, Timeout=hc.timeout * ns, Retries=hc.retries)
        if hc.startPeriod:
            out["StartPeriod"] = hc.startPeriod * ns
    return out


def build_create_spec(task: DesiredTask, c: ContainerDefinition, node_id: str, cluster: str,
                      secrets: Mapping[str, str] | None = None, metadata_uri: str | None = None) -> CreateSpec:
    """The Docker ContainerCreate body for container ``c`` of ``task`` (see docs/agent.md);
    ``secrets``: the container's secret variables (after ``environment``, so they win);
    ``metadata_uri``: its task metadata endpoint (ECS_CONTAINER_METADATA_URI_V4), if served."""
    td = task.taskDefinition
    labels = container_labels(task, c, node_id, cluster)
    mode = network_mode(task)
    fargate = task.launchType == "FARGATE"
    host: dict[str, Any] = {"RestartPolicy": {"Name": "no"}}
    body: dict[str, Any] = {"Image": c.image, "Labels": labels, "StopTimeout": c.effective_stop_timeout, "HostConfig": host}
    if c.command is not None:
        body["Cmd"] = list(c.command)
    if c.entryPoint is not None:
        body["Entrypoint"] = list(c.entryPoint)
    if c.environment:
        body["Env"] = [f"{kv.name}={kv.value}" for kv in c.environment]
    if secrets:
        body["Env"] = body.get("Env", []) + [f"{k}={v}" for k, v in secrets.items()]
    if metadata_uri:  # last, so it wins over a definition's own value (ECS sets it too)
        body.setdefault("Env", []).append(f"ECS_CONTAINER_METADATA_URI_V4={metadata_uri}")
    if c.workingDirectory:
        body["WorkingDir"] = c.workingDirectory
    if c.user:
        body["User"] = c.user
    hc = health_config(c)
    if hc is not None:
        body["Healthcheck"] = hc
    if c.portMappings:
        body["ExposedPorts"] = {f"{p.containerPort}/{p.protocol}": {} for p in c.portMappings}
        if mode == "bridge" and not fargate:
            bindings: dict[str, list[dict[str, str]]] = {}
            for p in c.portMappings:
                bindings.setdefault(f"{p.containerPort}/{p.protocol}", []).append({"HostPort": str(p.hostPort) if p.hostPort else ""})
            host["PortBindings"] = bindings
    network = None
    if mode == "awsvpc":
        network = task_network_name(task.taskId)
        host["NetworkMode"] = network
        body["NetworkingConfig"] = {"EndpointsConfig": {network: {"Aliases": [c.name]}}}
    else:
        host["NetworkMode"] = mode
    if c.cpu > 0:
        host["CpuShares"] = max(2, c.cpu)
    memory = c.memory
    if c.memoryReservation:
        host["MemoryReservation"] = c.memoryReservation * MiB
    if c.privileged:
        host["Privileged"] = True
    if fargate:
        if td.cpu:
            host["NanoCpus"] = int(td.cpu / 1024 * 1e9)
        if td.memory:
            memory = min(memory, td.memory) if memory else td.memory
    if memory:
        host["Memory"] = memory * MiB
    host.update(docker_options.host_config(task, c, memory))
    body.update(docker_options.config_options(c))
    return CreateSpec(
        name=container_name(task, c.name), image=c.image, labels=labels, body=body, network=network, network_alias=c.name
    )


# ---- image references and credentials ----------------------------------------------------------
def normalize_image(image: str) -> str:
    """Add ``:latest`` when the reference has neither tag nor digest (as `docker pull`)."""
    if "@" in image:
        return image
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last else f"{image}:latest"


def registry_of(image: str) -> str:
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "https://index.docker.io/v1/"


def credentials_env(parameter: str) -> str:
    return "DOCKYARD_REGISTRY_AUTH_" + re.sub(r"[^A-Z0-9]", "_", parameter.upper())


def registry_auth(c: ContainerDefinition, environ: Mapping[str, str] | None = None,
                  stored: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """``stored`` (the dockyard secret ``repositoryCredentials.credentialsParameter`` names, opened),
    else that NAME -> env DOCKYARD_REGISTRY_AUTH_<NAME>="user:password"."""
    if c.repositoryCredentials is None:
        return None
    if stored:
        return {"username": stored["username"], "password": stored["password"], "serveraddress": registry_of(c.image)}
    env: Mapping[str, str] = os.environ if environ is None else environ
    raw = env.get(credentials_env(c.repositoryCredentials.credentialsParameter))
    if not raw or ":" not in raw:
        return None
    user, _, password = raw.partition(":")
    return {"username": user, "password": password, "serveraddress": registry_of(c.image)}


def _ts(s: str | None) -> float | None:
    if not s or s.startswith("0001-"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", s)
    if not m:
        return None
    frac = (m.group(2) or ".0")[:7]
    tz = m.group(3) or "Z"
    tz = "+00:00" if tz == "Z" else tz
    return datetime.fromisoformat(f"{m.group(1)}{frac}{tz}").timestamp()


def from_inspect(d: dict[str, Any]) -> ActualContainer:
    cfg = d.get("Config") or {}
    labels = cfg.get("Labels") or {}
    st = d.get("State") or {}
    health = (st.get("Health") or {}).get("Status")
    ns = d.get("NetworkSettings") or {}
    ports: list[PortBinding] = []
    seen: set[tuple[int, int, str]] = set()
    for key, binds in (ns.get("Ports") or {}).items():
        cport, _, proto = key.partition("/")
        for b in binds or []:
            try:
                k = (int(cport), int(b.get("HostPort") or 0), proto or "tcp")
            except ValueError:
                continue
            if k[1] and k not in seen:
                seen.add(k)
                ports.append(PortBinding(k[0], k[1], k[2], b.get("HostIp") or "0.0.0.0"))
    ip = None
    for net, ep in (ns.get("Networks") or {}).items():
        if net.startswith("dockyard-task-") and ep and ep.get("IPAddress"):
            ip = ep["IPAddress"]
    state = st.get("Status") or "created"
    exited = state in ("exited", "dead")
    return ActualContainer(
        id=d["Id"],
        task_id=labels.get(L_TASK, ""),
        container_name=labels.get(L_CONTAINER, ""),
        node=labels.get(L_NODE, ""),
        state=state,
        exit_code=st.get("ExitCode") if exited else None,
        health=health,
        oom_killed=bool(st.get("OOMKilled")),
        error=st.get("Error") or "",
        image=cfg.get("Image") or "",
        docker_name=(d.get("Name") or "").lstrip("/"),
        started_at=_ts(st.get("StartedAt")),
        finished_at=_ts(st.get("FinishedAt")),
        ports=tuple(ports),
        ip_address=ip,
        labels=dict(labels),
    )


# ---- the runtime -------------------------------------------------------------------------------
DYNAMIC_PORTS = (49153, 65535)


class DockerRuntime:
    name = "docker"

    def __init__(self, url: str = "unix:///var/run/docker.sock", pull_behavior: str = "default") -> None:
        if pull_behavior not in PULL_BEHAVIORS:
            raise ValueError(f"image pull behavior must be one of {', '.join(PULL_BEHAVIORS)}, got {pull_behavior!r}")
        self.url = url
        self.pull_behavior = pull_behavior
        self._docker: aiodocker.Docker | None = None
        self._inspect_cache: dict[str, tuple[tuple, ActualContainer]] = {}
        self._pulls: dict[str, asyncio.Future[str | None]] = {}
        self._pull_failed: dict[str, tuple[float, str]] = {}
        self._pulled: set[str] = set()
        self._port_reserved: dict[tuple[int, str], float] = {}
        # (task id, container name) -> its task metadata URI; set by the agent while it serves one.
        self.metadata_uri: Callable[[str, str], str | None] | None = None
        self.log = log.get("agent.docker")

    # -- engine-specific decisions (Runtime) -------------------------------------------------------
    def task_network(self, task: DesiredTask) -> str | None:
        return task_network_name(task.taskId) if network_mode(task) == "awsvpc" else None

    def create_spec(self, task: DesiredTask, c: ContainerDefinition, node_id: str, cluster: str,
                    secrets: Mapping[str, str] | None = None) -> CreateSpec:
        uri = self.metadata_uri(task.taskId, c.name) if self.metadata_uri is not None else None
        return build_create_spec(task, c, node_id, cluster, secrets=secrets, metadata_uri=uri)

    def registry_auth(self, c: ContainerDefinition, stored: Mapping[str, str] | None = None) -> dict[str, str] | None:
        return registry_auth(c, stored=stored)

    def failure(self, e: Exception) -> str | None:
        """Docker's answers (and a spec it cannot take) fail the task; connection errors are retried."""
        if isinstance(e, (DockerError, KeyError, ValueError)):
            return str(getattr(e, "message", None) or e)
        return None

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self.url)
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    async def info(self) -> EngineInfo:
        i = await self.docker.system.info()
        arch = i.get("Architecture") or "x86_64"
        arch = {"aarch64": "arm64", "amd64": "x86_64"}.get(arch, arch)
        return EngineInfo(cpu=int(i.get("NCPU") or 1) * 1024, memory=int(i.get("MemTotal") or 0) // MiB,
                          architecture=arch, os_type=i.get("OSType") or "linux",
                          cgroup_version=str(i.get("CgroupVersion") or ""))

    # -- state ---------------------------------------------------------------------------------
    async def list(self, node_id: str) -> list[ActualContainer]:
        params = {"all": "1", "filters": json.dumps({"label": [f"{L_NODE}={node_id}"]})}
        rows = await self.docker._query_json("containers/json", params=params)
        out: list[ActualContainer] = []
        live: set[str] = set()

        async def one(row: dict[str, Any]) -> None:
            cid = row["Id"]
            live.add(cid)
            status = row.get("Status") or ""
            # Inspect again only when something the reports use can have changed.
            exited = re.match(r"^Exited \((-?\d+)\)", status)
            key = (row.get("State"), exited.group(1) if exited else None,
                   "(healthy)" in status, "(unhealthy)" in status, "starting" in status)
            cached = self._inspect_cache.get(cid)
            if cached is not None and cached[0] == key:
                out.append(cached[1])
                return
            try:
                d = await self.docker._query_json(f"containers/{cid}/json")
            except DockerError as e:
                if e.status == 404:
                    return
                raise
            c = from_inspect(d)
            if c.node != node_id:  # never act on containers of another node
                return
            self._inspect_cache[cid] = (key, c)
            out.append(c)

        await asyncio.gather(*(one(r) for r in rows))
        for cid in list(self._inspect_cache):
            if cid not in live:
                del self._inspect_cache[cid]
        return out

    async def list_networks(self, node_id: str) -> dict[str, str]:
        params = {"filters": json.dumps({"label": [f"{L_NODE}={node_id}"]})}
        nets = await self.docker._query_json("networks", params=params)
        return {n["Labels"][L_TASK]: n["Name"] for n in nets if (n.get("Labels") or {}).get(L_TASK)}

    async def events(self, node_id: str) -> AsyncIterator[dict[str, Any]]:
        params = {"filters": json.dumps({"type": ["container"], "label": [f"{L_NODE}={node_id}"],
                                         "event": list(WATCHED_EVENTS)})}
        timeout = self.docker._resolve_long_running_timeout(None)
        async with self.docker._query("events", method="GET", params=params, timeout=timeout) as resp:
            async for line in resp.content:
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        continue

    # -- images --------------------------------------------------------------------------------
    async def _exists(self, ref: str) -> bool:
        try:
            await self.docker._query_json(f"images/{ref}/json")
            return True
        except DockerError as e:
            if e.status == 404:
                return False
            raise

    async def ensure_image(self, image: str, auth: dict[str, str] | None) -> str | None:
        ref = normalize_image(image)
        local = await self._exists(ref)
        if local and (self.pull_behavior == "prefer-cached" or (self.pull_behavior == "once" and ref in self._pulled)):
            return None
        err = await self._pull(ref, auth)
        if err is None:
            self._pulled.add(ref)
            return None
        if self.pull_behavior != "always" and (local or await self._exists(ref)):
            return err
        raise ImageUnavailable(err)

    async def _pull(self, ref: str, auth: dict[str, str] | None) -> str | None:
        failed = self._pull_failed.get(ref)
        if failed is not None and time.monotonic() - failed[0] < PULL_FAILURE_TTL:
            return failed[1]
        fut = self._pulls.get(ref)
        if fut is not None:  # single flight: join the pull already running
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._pulls[ref] = fut
        t0 = time.monotonic()
        try:
            err = await self._do_pull(ref, auth)
        except Exception as e:  # noqa: BLE001 - any failure is a pull failure
            err = str(e) or type(e).__name__
        finally:
            self._pulls.pop(ref, None)
        if err is not None:
            self._pull_failed[ref] = (time.monotonic(), err)
            self.log.warning("image pull failed", image=ref, error=err, seconds=round(time.monotonic() - t0, 3))
        else:
            self._pull_failed.pop(ref, None)
            self.log.info("image pulled", image=ref, seconds=round(time.monotonic() - t0, 3))
        fut.set_result(err)
        return err

    async def _do_pull(self, ref: str, auth: dict[str, str] | None) -> str | None:
        headers = {}
        if auth:
            headers["X-Registry-Auth"] = base64.urlsafe_b64encode(json.dumps(auth).encode()).decode()
        if "@" in ref:
            params = {"fromImage": ref}
        else:
            repo, _, tag = ref.rpartition(":")
            params = {"fromImage": repo, "tag": tag}
        timeout = self.docker._resolve_long_running_timeout(None)
        try:
            async with self.docker._query("images/create", "POST", params=params, headers=headers, timeout=timeout) as resp:
                async for line in resp.content:
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue
                    if item.get("error"):
                        return str(item["error"])
        except DockerError as e:
            return str(e.message)
        return None

    # -- containers ----------------------------------------------------------------------------
    async def ensure_network(self, name: str, labels: dict[str, str]) -> None:
        try:
            await self.docker._query_json(f"networks/{name}")
            return
        except DockerError as e:
            if e.status != 404:
                raise
        try:
            await self.docker._query_json(
                "networks/create", "POST", data=json.dumps({"Name": name, "Driver": "bridge", "Labels": labels, "CheckDuplicate": True})
            )
        except DockerError as e:
            if e.status != 409:
                raise

    async def remove_network(self, name: str) -> None:
        try:
            async with self.docker._query(f"networks/{name}", "DELETE"):
                pass
        except DockerError as e:
            if e.status != 404:
                raise

    async def list_volumes(self, node_id: str) -> dict[str, Sequence[str]]:
        params = {"filters": json.dumps({"label": [f"{L_NODE}={node_id}", L_TASK]})}
        r = await self.docker._query_json("volumes", params=params)
        out: dict[str, Sequence[str]] = {}
        for v in r.get("Volumes") or []:
            out[v["Labels"][L_TASK]] = [*out.get(v["Labels"][L_TASK], ()), v["Name"]]
        return out

    async def ensure_volume(self, spec: VolumeSpec) -> None:
        try:
            v = await self.docker._query_json(f"volumes/{spec.name}")
        except DockerError as e:
            if e.status != 404:
                raise
            if not spec.create:
                raise VolumeUnavailable(f"volume {spec.name!r} does not exist on this node and autoprovision is false; "
                                        f"create it (docker volume create {spec.name}) or set autoprovision: true") from None
            body = {"Name": spec.name, "Driver": spec.driver or "local", "DriverOpts": spec.driver_opts, "Labels": spec.labels}
            await self.docker._query_json("volumes/create", "POST", data=json.dumps(body))
            return
        if spec.driver and v.get("Driver") != spec.driver:
            raise VolumeUnavailable(f"volume {spec.name!r} exists with driver {v.get('Driver')!r}, "
                                    f"the task definition asks for {spec.driver!r}")

    async def remove_volume(self, name: str) -> None:
        try:
            async with self.docker._query(f"volumes/{name}", "DELETE"):
                pass
        except DockerError as e:
            if e.status != 404:
                raise

    def _dynamic_port(self, proto: str) -> str:
        """A free host port from ECS's dynamic range 49153-65535 (Docker's own pick would come from
        the kernel's ephemeral range). Recently handed-out ports are not reused for a minute."""
        now = time.monotonic()
        self._port_reserved = {k: t for k, t in self._port_reserved.items() if now - t < 60}
        for _ in range(200):
            port = random.randint(DYNAMIC_PORTS[0], DYNAMIC_PORTS[1])
            if (port, proto) in self._port_reserved:
                continue
            kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind(("0.0.0.0", port))
                except OSError:
                    continue
            self._port_reserved[(port, proto)] = now
            return str(port)
        return ""  # let Docker choose

    async def create(self, spec: CreateSpec) -> str:
        bindings = spec.body.get("HostConfig", {}).get("PortBindings") or {}
        for key, entries in bindings.items():
            for b in entries:
                if not b.get("HostPort"):
                    b["HostPort"] = self._dynamic_port(key.rsplit("/", 1)[-1])
        try:
            r = await self.docker._query_json(
                "containers/create", "POST", params={"name": spec.name}, data=json.dumps(spec.body)
            )
            return r["Id"]
        except DockerError as e:
            if e.status != 409:
                raise
            # Name taken: ours from an earlier attempt (adopt it) or someone else's (fail).
            d = await self.docker._query_json(f"containers/{spec.name}/json")
            lab = (d.get("Config") or {}).get("Labels") or {}
            if lab.get(L_NODE) == spec.labels[L_NODE] and lab.get(L_TASK) == spec.labels[L_TASK]:
                return d["Id"]
            raise

    async def start(self, container_id: str) -> None:
        # A restarted container may exit again before the next list, with the same list row
        # ("Exited (1)"): inspect it afresh then, for its new StartedAt (see agent.diff.restart_due).
        self._inspect_cache.pop(container_id, None)
        try:
            async with self.docker._query(f"containers/{container_id}/start", "POST"):
                pass
        except DockerError as e:
            if e.status != 304:  # already started
                raise

    async def stop(self, container_id: str, timeout: int) -> None:
        try:
            async with self.docker._query(
                f"containers/{container_id}/stop", "POST", params={"t": str(timeout)},
                timeout=self.docker._resolve_long_running_timeout(float(timeout + 30)),
            ):
                pass
        except DockerError as e:
            if e.status not in (304, 404):
                raise

    async def remove(self, container_id: str) -> None:
        try:
            async with self.docker._query(f"containers/{container_id}", "DELETE", params={"force": "1", "v": "1"}):
                pass
        except DockerError as e:
            if e.status != 404:
                raise
