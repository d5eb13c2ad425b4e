"""The MQTT wire contract between orchestrator and agent (imported by both sides).

Topics, all under ``dockyard/v1/<cluster>/nodes/<node-id>/`` so a broker ACL can confine
an agent to its own subtree:

* ``desired``  retained, QoS 1, orchestrator -> agent: the FULL task set of the node with
  ``(epoch, generation)``; the agent applies only documents newer than the last it applied.
* ``status``   QoS 1, agent -> orchestrator: snapshots (all tasks) on connect and
  periodically, updates (changed tasks) on change; ``bootId`` + ``seq`` order them.
* ``presence`` retained, QoS 1, agent -> orchestrator: ``online`` with resources and
  attributes; the Last Will publishes ``offline`` with the same ``bootId``.
* ``heartbeat`` QoS 0, agent -> orchestrator: the agent's ``bootId`` every ``heartbeatInterval``
  seconds (its presence says how often), a few bytes: the orchestrator notices a silent host
  (power or link lost: nothing closes its connection) within seconds, without the status
  snapshot's cost (orchestrator.core.nodes).
* ``refusal``  retained, QoS 1, orchestrator -> agent: why the orchestrator refused the agent's
  boot (an incompatible protocol version); empty once the node is accepted (protocol 2).
"""
from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dockyard.ecs import TaskDefinitionSpec
from dockyard.lb import LbDesired, LbStatus
from dockyard.sealing import Sealed

PROTOCOL = "dockyard/v1"  # the topic root; the documents' own version is PROTOCOL_VERSION
# The wire protocol's version (Presence.protocolVersion). Raise it when a change needs both sides
# to know of it; the orchestrator accepts agents of this version and the one before (so it can be
# upgraded first) and refuses others (orchestrator.core.compat). 1: agents before the field.
PROTOCOL_VERSION = 2
TaskStatus = Literal[
    "PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"
]
HealthStatus = Literal["HEALTHY", "UNHEALTHY", "UNKNOWN"]
# ECS's stop codes, and the reasons both sides write with them (one place for the words).
StopCode = Literal["TaskFailedToStart", "EssentialContainerExited", "UserInitiated", "ServiceSchedulerInitiated"]
TASK_FAILED_TO_START: StopCode = "TaskFailedToStart"
ESSENTIAL_CONTAINER_EXITED: StopCode = "EssentialContainerExited"
USER_INITIATED: StopCode = "UserInitiated"
SERVICE_SCHEDULER_INITIATED: StopCode = "ServiceSchedulerInitiated"
FAILURE_CODES: tuple[StopCode, ...] = (ESSENTIAL_CONTAINER_EXITED, TASK_FAILED_TO_START)  # it stopped on its own
ESSENTIAL_EXITED_REASON = "Essential container in task exited"
HEALTH_STOP_REASON = "Task failed container health checks"
REPLACED_REASON = "Task replaced by a newer deployment"
USER_STOP_REASON = "Task stopped by user"


# Node attribute the agent sets from its engine: "1" or "2" (linux.swappiness needs cgroup v1).
CGROUP_ATTRIBUTE = "dockyard.cgroup-version"


def node_topic(cluster: str, node_id: str, leaf: str) -> str:
    return f"{PROTOCOL}/{cluster}/nodes/{node_id}/{leaf}"


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """``dockyard/v1/<cluster>/nodes/<node>/<leaf>`` -> (cluster, node, leaf)."""
    parts = topic.split("/")
    if len(parts) != 6 or f"{parts[0]}/{parts[1]}" != PROTOCOL or parts[3] != "nodes":
        return None
    return parts[2], parts[4], parts[5]


class Wire(BaseModel):
    # Tolerate fields from newer peers: a rolling upgrade must not break the bus.
    model_config = ConfigDict(extra="ignore")


# ---- orchestrator -> agent ---------------------------------------------------------------
class DesiredTaskHead(Wire):
    """A desired task without its task definition: the agent parses heads first and the full
    definition only for tasks it has not seen (large documents stay cheap)."""

    taskId: str
    family: str
    revision: int
    desiredStatus: Literal["RUNNING", "STOPPED"] = "RUNNING"
    launchType: Literal["EC2", "FARGATE"] = "EC2"
    serviceName: str | None = None


class DesiredTask(DesiredTaskHead):
    taskDefinition: TaskDefinitionSpec
    # The task's secret values, sealed to this node's seal key for this task id (docs/secrets.md);
    # None when its definition names no secret.
    secrets: Sealed | None = None


class DesiredVersion(Wire):
    """Only the version of a desired document (what the orchestrator's fencing check reads)."""

    epoch: int
    generation: int

    def version(self) -> tuple[int, int]:
        return (self.epoch, self.generation)


class DesiredDocHead(Wire):
    cluster: str
    nodeId: str
    epoch: int
    generation: int
    tasks: list[DesiredTaskHead] = Field(default_factory=list)
    loadBalancer: LbDesired | None = None  # load-balancer nodes only: what their HAProxy serves
    publishedAt: float = 0.0

    def version(self) -> tuple[int, int]:
        return (self.epoch, self.generation)


class DesiredDoc(DesiredDocHead):
    tasks: list[DesiredTask] = Field(default_factory=list)  # type: ignore[assignment]
    publishedAt: float = Field(default_factory=time.time)


# ---- agent -> orchestrator ---------------------------------------------------------------
class NetworkBinding(Wire):
    containerPort: int
    hostPort: int
    protocol: str = "tcp"
    bindIP: str = "0.0.0.0"


class ContainerReport(Wire):
    name: str
    dockerId: str | None = None
    image: str | None = None
    lastStatus: Literal["PENDING", "RUNNING", "STOPPED"] = "PENDING"
    exitCode: int | None = None
    reason: str | None = None
    healthStatus: HealthStatus = "UNKNOWN"
    networkBindings: list[NetworkBinding] = Field(default_factory=list)
    startedAt: float | None = None
    finishedAt: float | None = None
    restartCount: int = 0  # in-place restarts by the container's restartPolicy (agents before it: 0)


class TaskReport(Wire):
    taskId: str
    lastStatus: TaskStatus
    healthStatus: HealthStatus = "UNKNOWN"
    containers: list[ContainerReport] = Field(default_factory=list)
    stopCode: str | None = None  # a StopCode; any string is accepted so a newer agent's report is not dropped
    stoppedReason: str | None = None
    pullError: str | None = None  # image pull failed; a local copy may still have been used
    startedAt: float | None = None
    stoppedAt: float | None = None
    ipAddress: str | None = None  # FARGATE-style own network


class NodeResources(Wire):
    cpu: int  # cpu units, 1024 per core
    memory: int  # MiB


class TaskUsage(Wire):
    """A task's resource usage over the agent's last sampling interval (flat: the orchestrator
    reads it out of a repeated snapshot without parsing the rest)."""

    taskId: str
    cpu: float  # cpu units used (1024 per core), averaged over the interval
    memory: int  # bytes, working set of its containers
    memoryLimit: int = 0  # bytes, the sum of its containers' hard limits (0: none)


class StatusDoc(Wire):
    nodeId: str
    bootId: str
    seq: int
    kind: Literal["snapshot", "update"]
    observedEpoch: int = 0
    observedGeneration: int = 0
    tasks: list[TaskReport] = Field(default_factory=list)
    loadBalancer: LbStatus | None = None  # load-balancer nodes: target health and sessions
    # Snapshots of agents that sample usage (older agents: None). Kept last but for ts: see orchestrator.bus.
    usage: list[TaskUsage] | None = None
    ts: float = Field(default_factory=time.time)


class Presence(Wire):
    nodeId: str
    bootId: str
    state: Literal["online", "offline"]
    cluster: str = "default"
    resources: NodeResources | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    capacityProviders: list[str] = Field(default_factory=lambda: ["EC2"])
    agentVersion: str = "0.1.0"
    protocolVersion: int = 1  # PROTOCOL_VERSION of the agent; agents before the field speak 1
    runtime: str = "docker"
    # Seconds between the agent's status snapshots (its heartbeat): the orchestrator declares the
    # node disconnected after 3 missed. Agents before this field snapshot every 2 s.
    statusInterval: float = Field(default=2.0, gt=0)
    # Seconds between the agent's heartbeats (the ``heartbeat`` topic); None: it sends none (an
    # older agent, or --heartbeat-interval 0), so only its snapshots prove it alive.
    heartbeatInterval: float | None = Field(default=None, gt=0)
    address: str | None = None  # where other nodes reach this node's host ports (load-balancer targets)
    loadBalancer: bool = False  # started with --load-balancer: runs HAProxy for the cluster's load balancers
    # The agent's X25519 public key (base64) that task secrets are sealed to; None: an agent
    # without secrets support (tasks with secrets are not started there).
    sealKey: str | None = None
    metricsEndpoint: str | None = None  # HOST:PORT of the agent's /metrics (--metrics-listen), for Prometheus SD
    ts: float = Field(default_factory=time.time)


class Refusal(Wire):
    """orchestrator -> agent (``refusal``, retained): the orchestrator does not manage this boot
    of the agent; ``reason`` names both protocol versions and what to upgrade."""

    nodeId: str
    bootId: str
    reason: str
    agentProtocol: int
    orchestratorProtocol: int
    orchestratorVersion: str
    ts: float = Field(default_factory=time.time)
