"""Control-plane records with ECS names: Cluster, TaskDefinition, Service, Deployment, Task, Node.

Specs (what a user applies) are validated pydantic models; records (what the orchestrator
keeps) are pydantic models too, serialised as JSON into the store.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dockyard.ecs import NAME_RE, SECRET_NAME_RE, EcsModel, PlacementConstraint, TaskDefinitionSpec, TaskOverride
from dockyard.lb import LoadBalancerSpec, ServiceLoadBalancer, TargetGroupSpec
from dockyard.wire import (
    ContainerReport,
    HealthStatus,
    NodeResources,
    TaskStatus,
)
from orchestrator.limits import MAX_DESIRED_COUNT

LaunchType = Literal["EC2", "FARGATE"]
PropagateTags = Literal["TASK_DEFINITION", "SERVICE", "NONE"]


def now() -> float:
    return time.time()


def new_task_id() -> str:
    """A random UUID (version 4) as 32 hex digits, as ECS's task ids: the bits uuid.uuid4() sets,
    set on the random bytes directly (a third of its cost: one per task created)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    return b.hex()


# ---- specs ------------------------------------------------------------------------------
class ClusterSpec(EcsModel):
    clusterName: str

    @field_validator("clusterName")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-255 letters, digits, hyphens or underscores")
        return v


class CircuitBreaker(EcsModel):
    enable: bool = False
    rollback: bool = False


class DeploymentConfiguration(EcsModel):
    """ECS's deploymentConfiguration, plus dockyard's proof and deadline settings.

    ECS clients (boto3, the AWS CLI) cannot send the dockyard keys, so their defaults are the
    safe behaviour: a task counts healthy only after it stayed healthy ``minimumHealthyTimeSeconds``
    (Nomad's min_healthy_time), a deployment completes only after a bake time without failures,
    and one that proves no new task for ``progressDeadlineSeconds`` fails (Kubernetes'
    progressDeadlineSeconds)."""

    maximumPercent: int = Field(default=200, ge=100, le=1000)
    minimumHealthyPercent: int = Field(default=100, ge=0, le=100)
    deploymentCircuitBreaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    bakeTimeInMinutes: int | None = Field(default=None, ge=0, le=1440)  # ECS's field
    # dockyard extensions
    minimumHealthyTimeSeconds: int = Field(default=10, ge=0, le=3600)
    bakeTimeSeconds: int | None = Field(default=None, ge=0, le=86400)
    progressDeadlineSeconds: int = Field(default=600, ge=0, le=86400)  # 0: no deadline

    @property
    def bake_seconds(self) -> float:
        """bakeTimeSeconds, else bakeTimeInMinutes, else the minimum healthy time."""
        if self.bakeTimeSeconds is not None:
            return float(self.bakeTimeSeconds)
        if self.bakeTimeInMinutes is not None:
            return 60.0 * self.bakeTimeInMinutes
        return float(self.minimumHealthyTimeSeconds)


class PlacementStrategy(EcsModel):
    type: Literal["spread", "binpack", "random"]
    field: str | None = None

    @model_validator(mode="after")
    def _field(self) -> PlacementStrategy:
        if self.type == "binpack" and self.field not in ("cpu", "memory"):
            raise ValueError('binpack needs field "cpu" or "memory"')
        if self.type == "spread":
            f = self.field or "instanceId"
            if f != "instanceId" and not f.startswith("attribute:"):
                raise ValueError('spread needs field "instanceId" or "attribute:NAME"')
            self.field = f
        return self


class ServiceSpec(EcsModel):
    """CreateService/UpdateService body (the fields dockyard supports; the rest reported ignored)."""

    serviceName: str
    cluster: str | None = None
    taskDefinition: str  # "family" (latest ACTIVE revision, followed) or "family:revision" (pinned)
    desiredCount: int = Field(default=1, ge=0, le=MAX_DESIRED_COUNT)
    launchType: LaunchType = "EC2"
    schedulingStrategy: Literal["REPLICA", "DAEMON"] = "REPLICA"
    deploymentConfiguration: DeploymentConfiguration = Field(default_factory=DeploymentConfiguration)
    placementConstraints: list[PlacementConstraint] = Field(default_factory=list)
    placementStrategy: list[PlacementStrategy] = Field(default_factory=list)
    healthCheckGracePeriodSeconds: int = Field(default=0, ge=0)
    loadBalancers: list[ServiceLoadBalancer] = Field(default_factory=list)
    # Tags its tasks get (core.tasks.task_tags): the service's or the task definition's, and ECS's managed ones.
    propagateTags: PropagateTags | None = None
    enableECSManagedTags: bool = False
    # awsvpc's subnets/security groups: kept and shown as given (dockyard's networking is the node's bridge).
    networkConfiguration: dict[str, Any] | None = None

    @field_validator("serviceName")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-255 letters, digits, hyphens or underscores")
        return v

    @field_validator("taskDefinition")
    @classmethod
    def _td(cls, v: str) -> str:
        ref = v.rsplit("/", 1)[-1]  # accept an ARN's last part: task-definition/web:3
        family, _, rev = ref.partition(":")
        if not NAME_RE.match(family) or (rev and not rev.isdigit()):
            raise ValueError('must be "family" or "family:revision"')
        return ref


class RunTaskSpec(EcsModel):
    """RunTask body: one-off (batch) tasks that are never replaced."""

    taskDefinition: str
    cluster: str | None = None
    count: int = Field(default=1, ge=1, le=10)
    launchType: LaunchType = "EC2"
    placementConstraints: list[PlacementConstraint] = Field(default_factory=list)
    placementStrategy: list[PlacementStrategy] = Field(default_factory=list)
    startedBy: str | None = None
    overrides: TaskOverride | None = None  # ECS RunTask overrides (containerOverrides)
    tags: dict[str, str] = Field(default_factory=dict)
    propagateTags: Literal["TASK_DEFINITION", "NONE"] | None = None  # SERVICE: only for a service's tasks
    enableECSManagedTags: bool = False


class SecretSpec(EcsModel):
    """A ``kind: Secret`` manifest's spec (AWS CreateSecret's SecretString, camelCase). Applying a
    different value adds a version; the same value changes nothing."""

    name: str
    secretString: str = Field(min_length=1, max_length=64 * 1024)

    @field_validator("secretString", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SECRET_NAME_RE.match(v):
            raise ValueError("must be 1-512 letters, digits or /_+=.@-")
        return v


# ---- records ----------------------------------------------------------------------------
class Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Cluster(Record):
    clusterName: str
    status: Literal["ACTIVE", "INACTIVE"] = "ACTIVE"
    createdAt: float = Field(default_factory=now)
    tags: dict[str, str] = Field(default_factory=dict)  # ECS resource tags (the ECS API's TagResource)
    settings: dict[str, str] = Field(default_factory=dict)  # ECS cluster settings (containerInsights), kept and shown


class TaskDefinition(Record):
    family: str
    revision: int
    status: Literal["ACTIVE", "INACTIVE"] = "ACTIVE"
    spec: TaskDefinitionSpec
    specHash: str
    registeredAt: float = Field(default_factory=now)
    ignoredFields: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.family}:{self.revision}"


class Deployment(Record):
    id: str = Field(default_factory=lambda: "ecs-svc/" + uuid.uuid4().hex[:16])
    status: Literal["PRIMARY", "ACTIVE", "INACTIVE"] = "PRIMARY"
    taskDefinition: str  # family:revision
    desiredCount: int = 0
    pendingCount: int = 0
    runningCount: int = 0
    failedTasks: int = 0
    rolloutState: Literal["IN_PROGRESS", "COMPLETED", "FAILED"] = "IN_PROGRESS"
    rolloutStateReason: str = "ECS deployment in progress."
    createdAt: float = Field(default_factory=now)
    updatedAt: float = Field(default_factory=now)
    # Relaunch throttling of tasks that fail before RUNNING (exponential, capped).
    launchFailures: int = 0
    nextLaunchAt: float = 0.0
    isRollback: bool = False
    # Proof and bake (dockyard): tasks of this deployment proven healthy, when the last one was
    # (progress, for the deadline), and when all of them were (the bake started).
    provenCount: int = 0
    lastProgressAt: float | None = None
    bakeStartedAt: float | None = None


class ServiceEvent(Record):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    createdAt: float = Field(default_factory=now)
    message: str
    count: int = 1


class Service(Record):
    cluster: str
    serviceName: str
    spec: ServiceSpec
    status: Literal["ACTIVE", "DRAINING", "INACTIVE"] = "ACTIVE"
    generation: int = 1
    observedGeneration: int = 0
    deployments: list[Deployment] = Field(default_factory=list)
    events: list[ServiceEvent] = Field(default_factory=list)
    createdAt: float = Field(default_factory=now)
    ignoredFields: list[str] = Field(default_factory=list)
    steadyState: bool = False
    failingReason: str | None = None  # tasks keep failing with no deployment to complete or roll back
    tags: dict[str, str] = Field(default_factory=dict)
    clientToken: str | None = None  # CreateService's idempotency token

    @property
    def desiredCount(self) -> int:
        return self.spec.desiredCount


class TaskContainer(Record):
    name: str
    lastStatus: str = "PENDING"
    exitCode: int | None = None
    reason: str | None = None
    healthStatus: HealthStatus = "UNKNOWN"
    dockerId: str | None = None
    image: str | None = None
    networkBindings: list[dict[str, Any]] = Field(default_factory=list)
    restartCount: int = 0  # in-place restarts by its restartPolicy, as the agent counts them

    def matches(self, r: ContainerReport) -> bool:
        """Whether :meth:`from_report` of ``r`` would equal this container (most reports repeat
        what the task already holds: comparing costs a fraction of building and comparing)."""
        return (self.name == r.name and self.lastStatus == r.lastStatus and self.exitCode == r.exitCode
                and self.reason == r.reason and self.healthStatus == r.healthStatus and self.dockerId == r.dockerId
                and self.image == r.image and self.restartCount == r.restartCount
                and len(self.networkBindings) == len(r.networkBindings)
                and (not r.networkBindings or self.networkBindings == [b.model_dump() for b in r.networkBindings]))

    @classmethod
    def from_report(cls, r: ContainerReport) -> TaskContainer:
        # Validated: with every field given, pydantic-core's __init__ (~2 us) is faster than
        # model_construct's Python loop over the fields (~3.6 us; pydantic 2.12).
        return cls(
            name=r.name,
            lastStatus=r.lastStatus,
            exitCode=r.exitCode,
            reason=r.reason,
            healthStatus=r.healthStatus,
            dockerId=r.dockerId,
            image=r.image,
            networkBindings=[b.model_dump() for b in r.networkBindings],
            restartCount=r.restartCount,
        )


class Task(Record):
    taskId: str = Field(default_factory=new_task_id)
    cluster: str
    taskDefinition: str  # family:revision
    family: str
    revision: int
    group: str  # "service:NAME" or "family:FAMILY" (ECS's task group)
    serviceName: str | None = None
    deploymentId: str | None = None
    startedBy: str | None = None
    launchType: LaunchType = "EC2"
    nodeId: str | None = None
    desiredStatus: Literal["RUNNING", "STOPPED"] = "RUNNING"
    lastStatus: TaskStatus = "PROVISIONING"
    healthStatus: HealthStatus = "UNKNOWN"
    # The orchestrator's clock when the task last became healthy (RUNNING, and HEALTHY if it has a
    # health check); None while it is not. Deployments count it only once proven (see core.services).
    healthySince: float | None = None
    drainingSince: float | None = None  # DEACTIVATING: out of rotation, waiting for its sessions to end
    overrides: TaskOverride | None = None  # RunTask's containerOverrides, applied to its definition
    containers: list[TaskContainer] = Field(default_factory=list)
    cpu: int = 0
    memory: int = 0
    placementConstraints: list[PlacementConstraint] = Field(default_factory=list)
    placementStrategy: list[PlacementStrategy] = Field(default_factory=list)
    pendingReason: str | None = None
    stopCode: str | None = None  # a dockyard.wire.StopCode (as reported; see TaskReport)
    stoppedReason: str | None = None
    pullError: str | None = None
    ipAddress: str | None = None
    createdAt: float = Field(default_factory=now)
    placedAt: float | None = None  # when the scheduler put it on a node (or it was created pinned to one)
    pullStartedAt: float | None = None
    startedAt: float | None = None
    stoppingAt: float | None = None
    stoppedAt: float | None = None
    # Generation of the node's desired document that first carried this task.
    placedGeneration: int | None = None
    # The versions of the secrets sealed to its node at its first publication (names and versions
    # only: never values); None when its definition names no secret.
    secretVersions: dict[str, int] | None = None
    tags: dict[str, str] | None = None  # ECS resource tags (RunTask's, propagated, TagResource); None: none

    @property
    def short_id(self) -> str:
        return self.taskId[:12]

    @property
    def active(self) -> bool:
        """Counts toward a service: wanted running and not yet stopped."""
        return self.desiredStatus == "RUNNING" and self.lastStatus != "STOPPED"


class TargetGroup(Record):
    cluster: str
    spec: TargetGroupSpec
    createdAt: float = Field(default_factory=now)

    @property
    def name(self) -> str:
        return self.spec.name


class LoadBalancer(Record):
    cluster: str
    spec: LoadBalancerSpec
    createdAt: float = Field(default_factory=now)

    @property
    def name(self) -> str:
        return self.spec.name


class Node(Record):
    cluster: str
    nodeId: str
    status: Literal["ACTIVE", "DRAINING"] = "ACTIVE"
    connected: bool = False
    bootId: str | None = None
    resources: NodeResources = Field(default_factory=lambda: NodeResources(cpu=0, memory=0))
    attributes: dict[str, str] = Field(default_factory=dict)
    capacityProviders: list[str] = Field(default_factory=lambda: ["EC2"])
    runtime: str = "docker"
    agentVersion: str | None = None
    protocolVersion: int | None = None  # the agent's wire protocol (Presence.protocolVersion)
    # Why the orchestrator refused the agent's current boot (core.compat: an incompatible protocol);
    # such a node counts as disconnected. None: accepted.
    refusedReason: str | None = None
    registeredAt: float = Field(default_factory=now)
    lastSeenAt: float = 0.0
    statusInterval: float = 2.0  # the agent's snapshot (heartbeat) period, from its presence
    heartbeatInterval: float | None = None  # the agent's light heartbeat period (None: it sends none)
    disconnectedAt: float | None = None
    generation: int = 0  # of the last desired document published for this node
    observedGeneration: int = 0
    observedEpoch: int = 0
    customAttributes: dict[str, str] = Field(default_factory=dict)  # ECS PutAttributes: kept over the agent's
    tags: dict[str, str] = Field(default_factory=dict)
    address: str | None = None  # advertised by the agent: where load balancers reach its host ports
    loadBalancer: bool = False  # a --load-balancer node (runs HAProxy)
    sealKey: str | None = None  # the agent's public seal key (Presence.sealKey)
    metricsEndpoint: str | None = None  # HOST:PORT of the agent's /metrics (advertised in presence), for Prometheus SD
