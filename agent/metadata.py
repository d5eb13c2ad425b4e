"""ECS's task metadata endpoint v4, the pure part: tokens, access rule and the JSON documents.

Every container the agent creates gets ``ECS_CONTAINER_METADATA_URI_V4 =
http://<docker bridge gateway>:<port>/v4/<token>``; the agent answers ``${URI}`` (this
container), ``${URI}/task``, ``${URI}/stats`` and ``${URI}/task/stats`` with ECS's JSON shapes
(:mod:`agent.metadata_server` is the HTTP shell). The token is HMAC-SHA256 of ``<taskId>/<name>``
under a secret the agent keeps in its state directory: unguessable, stable across agent
restarts (the URI is baked into the container at create), and different per container, as
ECS's per-container URI. A request is answered only with its token's task, and, when that
container has addresses of its own (bridge, awsvpc), only from one of them
(:func:`source_allowed`); a container in host network mode has the host's addresses, so
for it the token alone decides (docs/agent.md).
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.runtime import EXITED_STATES, RUNNING_STATES, network_mode
from dockyard.arn import container_arn, task_arn
from dockyard.ecs import ContainerDefinition
from dockyard.wire import DesiredTask

ENV_URI = "ECS_CONTAINER_METADATA_URI_V4"
DEFAULT_PORT = 51679  # the ECS agent's introspection/metadata port
PATH_PREFIX = "/v4/"


# ---- tokens ------------------------------------------------------------------------------------
def token(secret: bytes, task_id: str, container: str) -> str:
    """The per-container secret part of the URI (64 hex digits)."""
    return hmac.new(secret, f"{task_id}/{container}".encode(), hashlib.sha256).hexdigest()


def token_index(secret: bytes, containers: Iterable[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """token -> (task id, container name) for the (task id, container name) pairs given."""
    return {token(secret, tid, name): (tid, name) for tid, name in containers}


def metadata_uri(address: str, port: int, tok: str) -> str:
    return f"http://{address}:{port}{PATH_PREFIX}{tok}"


# ---- what docker inspect says ---------------------------------------------------------------------
@dataclass(frozen=True)
class ContainerFacts:
    """One container's docker inspect, reduced to what the metadata documents show."""

    docker_id: str
    docker_name: str
    image: str
    image_id: str
    state: str
    exit_code: int | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    health: str | None = None
    ips: tuple[str, ...] = ()
    log_driver: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    log_options: dict[str, str] = field(default_factory=dict)


def rfc3339(t: float | None) -> str | None:
    """Epoch seconds as ECS writes times (UTC, ``Z``)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _time(s: str | None) -> str | None:
    return None if not s or s.startswith("0001-") else s


def facts_from_inspect(d: Mapping[str, Any]) -> ContainerFacts:
    cfg, st = d.get("Config") or {}, d.get("State") or {}
    nets = ((d.get("NetworkSettings") or {}).get("Networks") or {}).values()
    log_cfg = (d.get("HostConfig") or {}).get("LogConfig") or {}
    state = st.get("Status") or "created"
    return ContainerFacts(
        docker_id=d.get("Id", ""),
        docker_name=(d.get("Name") or "").lstrip("/"),
        image=cfg.get("Image") or "",
        image_id=d.get("Image") or "",
        state=state,
        exit_code=st.get("ExitCode") if state in EXITED_STATES else None,
        created_at=_time(d.get("Created")),
        started_at=_time(st.get("StartedAt")),
        finished_at=_time(st.get("FinishedAt")) if state in EXITED_STATES else None,
        health=(st.get("Health") or {}).get("Status"),
        ips=tuple(ip for ep in nets if ep and (ip := ep.get("IPAddress"))),
        log_driver=log_cfg.get("Type") or None,
        labels=dict(cfg.get("Labels") or {}),
        log_options=dict(log_cfg.get("Config") or {}),
    )


def source_allowed(remote: str | None, facts: ContainerFacts) -> bool:
    """May a request from ``remote`` read ``facts``' task? From the container's own addresses
    when it has any (bridge, awsvpc); a host-mode container has none of its own: the token decides."""
    if not facts.ips:
        return True
    return remote is not None and remote in facts.ips


# ---- the documents ---------------------------------------------------------------------------------
def known_status(facts: ContainerFacts | None) -> str:
    if facts is None:
        return "NONE"
    if facts.state in RUNNING_STATES:
        return "RUNNING"
    if facts.state in EXITED_STATES:
        return "STOPPED"
    return "CREATED"


_HEALTH = {"healthy": "HEALTHY", "unhealthy": "UNHEALTHY", "starting": "UNKNOWN"}


def container_metadata(cluster: str, task: DesiredTask, c: ContainerDefinition, facts: ContainerFacts | None,
                       stopping: bool, restart_count: int = 0) -> dict[str, Any]:
    """The ``${ECS_CONTAINER_METADATA_URI_V4}`` document of container ``c`` of ``task``."""
    arn = task_arn(cluster, task.taskId)
    out: dict[str, Any] = {"Name": c.name}
    if facts is not None:
        out.update(DockerId=facts.docker_id, DockerName=facts.docker_name)
    out["Image"] = facts.image if facts is not None and facts.image else c.image
    if facts is not None:
        out["ImageID"] = facts.image_id
    labels = dict(facts.labels) if facts is not None else {}
    labels.update({  # the labels ECS puts on its containers, which tools look for
        "com.amazonaws.ecs.cluster": cluster,
        "com.amazonaws.ecs.container-name": c.name,
        "com.amazonaws.ecs.task-arn": arn,
        "com.amazonaws.ecs.task-definition-family": task.family,
        "com.amazonaws.ecs.task-definition-version": str(task.revision),
    })
    out["Labels"] = labels
    out["DesiredStatus"] = "STOPPED" if stopping else "RUNNING"
    out["KnownStatus"] = known_status(facts)
    if facts is not None and facts.exit_code is not None:
        out["ExitCode"] = facts.exit_code
    out["Limits"] = {"CPU": c.cpu, "Memory": c.memory or 0}
    if facts is not None:
        for key, val in (("CreatedAt", facts.created_at), ("StartedAt", facts.started_at),
                         ("FinishedAt", facts.finished_at)):
            if val:
                out[key] = val
    out["Type"] = "NORMAL"
    if facts is not None and facts.log_driver:
        out["LogDriver"] = facts.log_driver
        out["LogOptions"] = dict(facts.log_options)
    out["ContainerARN"] = container_arn(cluster, task.taskId, c.name)
    if facts is not None and facts.health:
        out["Health"] = {"status": _HEALTH.get(facts.health, "UNKNOWN")}
    mode = network_mode(task)
    out["Networks"] = [{"NetworkMode": mode, "IPv4Addresses": list(facts.ips) if facts is not None else []}]
    if c.restartPolicy is not None and c.restartPolicy.enabled:
        out["RestartCount"] = restart_count
    return out


def task_metadata(cluster: str, task: DesiredTask, facts: Mapping[str, ContainerFacts], known: str, stopping: bool,
                  availability_zone: str | None = None, restarts: Mapping[str, int] | None = None,
                  pull_started: str | None = None, pull_stopped: str | None = None) -> dict[str, Any]:
    """The ``${URI}/task`` document: the task and all its containers (``facts`` by container name;
    ``known``: the task's lastStatus as the agent reports it)."""
    td = task.taskDefinition
    restarts = restarts or {}
    out: dict[str, Any] = {
        "Cluster": cluster,
        "TaskARN": task_arn(cluster, task.taskId),
        "Family": task.family,
        "Revision": str(task.revision),
        "DesiredStatus": "STOPPED" if stopping else "RUNNING",
        "KnownStatus": known,
    }
    if task.serviceName:
        out["ServiceName"] = task.serviceName
    if td.cpu is not None or td.memory is not None:
        limits: dict[str, Any] = {}
        if td.cpu is not None:
            limits["CPU"] = td.cpu / 1024  # vCPUs, as ECS
        if td.memory is not None:
            limits["Memory"] = td.memory
        out["Limits"] = limits
    if pull_started:
        out["PullStartedAt"] = pull_started
    if pull_stopped:
        out["PullStoppedAt"] = pull_stopped
    if availability_zone:
        out["AvailabilityZone"] = availability_zone
    out["LaunchType"] = task.launchType
    out["Containers"] = [container_metadata(cluster, task, c, facts.get(c.name), stopping, restarts.get(c.name, 0))
                         for c in td.containerDefinitions]
    return out


def availability_zone(attributes: Mapping[str, str]) -> str | None:
    """The node's zone from its attributes (ECS's ``ecs.availability-zone``, or ``zone``)."""
    for key in ("ecs.availability-zone", "availability-zone", "zone"):
        if attributes.get(key):
            return attributes[key]
    return None
