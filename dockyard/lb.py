"""Load-balancer models with ELB's names: TargetGroup, LoadBalancer (listeners, rules, actions),
a service's ``loadBalancers`` entries, and what an LB node receives and reports on the bus.

Shared by the orchestrator (validation, target lifecycle) and the agent of a load-balancer node
(which renders them into HAProxy's configuration and runtime commands, see agent/lb/).
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dockyard.ecs_base import EcsModel

TG_NAME_RE = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?$")  # ELB: 1-32, no leading/trailing '-'
Protocol = Literal["HTTP", "TCP"]
TargetHealthState = Literal["initial", "healthy", "unhealthy", "draining", "unused"]
# ELB's reason codes (TargetHealth.Reason).
REASON_REGISTRATION = "Elb.RegistrationInProgress"
REASON_INITIAL_FAILED = "Elb.InitialHealthChecking"
REASON_CODE_MISMATCH = "Target.ResponseCodeMismatch"
REASON_TIMEOUT = "Target.Timeout"
REASON_FAILED = "Target.FailedHealthChecks"
REASON_DRAINING = "Target.DeregistrationInProgress"
REASON_NOT_REGISTERED = "Target.NotRegistered"


def tg_name_of(ref: str) -> str:
    """``arn:aws:elasticloadbalancing:R:A:targetgroup/NAME/ID`` or ``NAME`` -> NAME."""
    if ref.startswith("arn:"):
        m = re.search(r":targetgroup/([^/]+)", ref)
        return m.group(1) if m else ref
    return ref


def _tg_name(v: str) -> str:
    if not TG_NAME_RE.match(v):
        raise ValueError("must be 1-32 letters, digits or hyphens, not starting or ending with a hyphen (as ELB)")
    return v


# ---- TargetGroup ------------------------------------------------------------------------------
class Matcher(EcsModel):
    httpCode: str = "200"  # "200", "200,204", "200-299" (ELB's matcher)

    @field_validator("httpCode")
    @classmethod
    def _codes(cls, v: str) -> str:
        if not re.fullmatch(r"\d{3}(-\d{3})?(,\d{3}(-\d{3})?)*", v.replace(" ", "")):
            raise ValueError('must be codes like "200", "200,204" or "200-299"')
        return v.replace(" ", "")

    def codes(self) -> list[tuple[int, int]]:
        out = []
        for part in self.httpCode.split(","):
            lo, _, hi = part.partition("-")
            out.append((int(lo), int(hi or lo)))
        return out


class TargetGroupHealthCheck(EcsModel):
    """ELB's health-check settings (ALB defaults for HTTP; TCP checks connect only)."""

    protocol: Protocol | None = None  # default: the target group's protocol
    path: str = "/"
    port: str = "traffic-port"
    intervalSeconds: int = Field(default=30, ge=5, le=300)
    timeoutSeconds: int = Field(default=5, ge=2, le=120)
    healthyThresholdCount: int = Field(default=5, ge=2, le=10)
    unhealthyThresholdCount: int = Field(default=2, ge=2, le=10)
    matcher: Matcher = Field(default_factory=Matcher)

    @field_validator("port")
    @classmethod
    def _port(cls, v: str | int) -> str:
        s = str(v)
        if s != "traffic-port" and not (s.isdigit() and 1 <= int(s) <= 65535):
            raise ValueError('must be "traffic-port" or a port number 1-65535')
        return s

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(ch.isspace() for ch in v):
            raise ValueError('must start with "/" and contain no spaces, e.g. "/healthz"')
        return v

    @model_validator(mode="after")
    def _timeout(self) -> TargetGroupHealthCheck:
        if self.timeoutSeconds >= self.intervalSeconds:
            raise ValueError("@timeoutSeconds: must be smaller than intervalSeconds (as ELB)")
        return self


class TargetGroupSpec(EcsModel):
    name: str
    protocol: Protocol = "HTTP"
    port: int | None = Field(default=None, ge=1, le=65535)  # ELB's default target port; targets come from tasks here
    healthCheck: TargetGroupHealthCheck = Field(default_factory=TargetGroupHealthCheck)
    deregistrationDelay: int = Field(default=300, ge=0, le=3600)  # deregistration_delay.timeout_seconds
    slowStart: int = Field(default=0, ge=0, le=900)  # slow_start.duration_seconds (0, or 30-900)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _tg_name(v)

    @model_validator(mode="after")
    def _slow(self) -> TargetGroupSpec:
        if 0 < self.slowStart < 30:
            raise ValueError("@slowStart: must be 0 or 30-900 seconds (as ELB)")
        return self

    @property
    def check_protocol(self) -> Protocol:
        return self.healthCheck.protocol or self.protocol


# ---- LoadBalancer -------------------------------------------------------------------------------
class WeightedTargetGroup(EcsModel):
    targetGroupName: str | None = None
    targetGroupArn: str | None = None
    weight: int = Field(default=1, ge=0, le=999)

    @property
    def name(self) -> str:
        return tg_name_of(self.targetGroupName or self.targetGroupArn or "")


class ForwardConfig(EcsModel):
    targetGroups: list[WeightedTargetGroup] = Field(min_length=1, max_length=5)


class Action(EcsModel):
    type: Literal["forward"] = "forward"
    targetGroupName: str | None = None
    targetGroupArn: str | None = None
    forwardConfig: ForwardConfig | None = None

    @model_validator(mode="after")
    def _one(self) -> Action:
        if not (self.targetGroupName or self.targetGroupArn or self.forwardConfig):
            raise ValueError("a forward action needs targetGroupName (or targetGroupArn, or forwardConfig.targetGroups)")
        return self

    def targets(self) -> list[tuple[str, int]]:
        """(target group name, weight) this action forwards to."""
        if self.forwardConfig is not None:
            return [(t.name, t.weight) for t in self.forwardConfig.targetGroups]
        return [(tg_name_of(self.targetGroupName or self.targetGroupArn or ""), 1)]


class RuleCondition(EcsModel):
    field: Literal["host-header", "path-pattern"]
    values: list[str] = Field(min_length=1, max_length=5)


class Rule(EcsModel):
    priority: int = Field(ge=1, le=50000)
    conditions: list[RuleCondition] = Field(min_length=1)
    actions: list[Action] = Field(min_length=1, max_length=1)


class Listener(EcsModel):
    port: int = Field(ge=1, le=65535)
    protocol: Protocol = "HTTP"
    defaultActions: list[Action] = Field(min_length=1, max_length=1)
    rules: list[Rule] = Field(default_factory=list)


class LoadBalancerSpec(EcsModel):
    name: str
    listeners: list[Listener] = Field(min_length=1)
    nodes: str | None = None  # memberOf expression narrowing the --load-balancer nodes that run it

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _tg_name(v)


# ---- a service's entry (CreateService's loadBalancers) ------------------------------------------
class ServiceLoadBalancer(EcsModel):
    targetGroupArn: str | None = None
    targetGroupName: str | None = None  # dockyard: the name instead of an ARN
    loadBalancerName: str | None = None  # classic ELB: not supported (refused at apply)
    containerName: str
    containerPort: int = Field(ge=1, le=65535)

    @property
    def target_group(self) -> str:
        return tg_name_of(self.targetGroupName or self.targetGroupArn or "")


# ---- the bus: what an LB node serves, and what it reports ---------------------------------------
class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class LbTarget(Wire):
    """One target as the LB node must serve it. ``id`` is the HAProxy server name."""

    id: str
    taskId: str
    address: str
    port: int
    state: Literal["active", "draining"] = "active"


class LbTargetGroup(Wire):
    name: str
    protocol: Protocol
    healthCheck: TargetGroupHealthCheck
    slowStart: int = 0
    targets: list[LbTarget] = Field(default_factory=list)


class LbRoute(Wire):
    """A listener rule, rendered: conditions and weighted target groups."""

    priority: int
    hosts: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    forward: list[tuple[str, int]]


class LbListener(Wire):
    loadBalancer: str
    port: int
    protocol: Protocol
    routes: list[LbRoute] = Field(default_factory=list)  # by priority
    default: list[tuple[str, int]]


class LbDesired(Wire):
    """The full set of listeners and target groups an LB node serves (in its desired document)."""

    listeners: list[LbListener] = Field(default_factory=list)
    targetGroups: list[LbTargetGroup] = Field(default_factory=list)


class TargetReport(Wire):
    targetGroup: str
    id: str
    taskId: str
    health: TargetHealthState
    reason: str | None = None
    sessions: int = 0
    requests: int = 0  # cumulative requests HAProxy counted for it (auto scaling's ALBRequestCountPerTarget)


class ListenerReport(Wire):
    port: int
    ok: bool
    error: str | None = None


class LbStatus(Wire):
    """An LB node's view, sent with every status document of that node."""

    targets: list[TargetReport] = Field(default_factory=list)
    listeners: list[ListenerReport] = Field(default_factory=list)
    running: bool = False  # HAProxy is up
