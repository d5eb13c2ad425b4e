"""Service auto scaling, in Application Auto Scaling's names: a scalable target per service
(``minCapacity``, ``maxCapacity``, ``suspendedState``) with its target tracking and step scaling
policies and scheduled actions (the ``ScalingPolicy`` manifest's spec), and the record the
orchestrator keeps of it (current bounds, last activities, last metric values).

Unknown fields are rejected (a misspelt ``targetValue`` must not silently scale on a default).
"""
from __future__ import annotations

import re
import time
import uuid
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dockyard.ecs import NAME_RE

PredefinedMetric = Literal["ECSServiceAverageCPUUtilization", "ECSServiceAverageMemoryUtilization",
                           "ALBRequestCountPerTarget"]
AdjustmentType = Literal["ChangeInCapacity", "PercentChangeInCapacity", "ExactCapacity"]
DEFAULT_COOLDOWN = 300  # seconds: Application Auto Scaling's default scale-out and scale-in cooldowns
DEFAULT_STABILIZATION = 300  # seconds: the HPA's default scale-down stabilization window
POLICY_NAME_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,256}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomizedMetric(Strict):
    """A dockyard extension: the value of a PromQL query (an instant vector of one series, or a
    scalar) against a Prometheus server, e.g. queue length per task or p95 latency."""

    prometheusUrl: str = Field(pattern=r"^https?://")
    query: str = Field(min_length=1)


class _Metric(Strict):
    policyName: str = Field(pattern=POLICY_NAME_RE.pattern)
    predefinedMetricType: PredefinedMetric | None = None
    customizedMetric: CustomizedMetric | None = None
    # ALBRequestCountPerTarget: which target group's requests (default: the service's first).
    resourceLabel: str | None = None

    @model_validator(mode="after")
    def _one_metric(self):  # type: ignore[no-untyped-def]
        if (self.predefinedMetricType is None) == (self.customizedMetric is None):
            raise ValueError("give exactly one of predefinedMetricType and customizedMetric")
        return self

    @property
    def metric_name(self) -> str:
        return self.predefinedMetricType or f"prometheus: {self.customizedMetric.query}"  # type: ignore[union-attr]


class TargetTrackingPolicy(_Metric):
    targetValue: float = Field(gt=0)
    scaleOutCooldown: int = Field(default=DEFAULT_COOLDOWN, ge=0, le=86400)
    scaleInCooldown: int = Field(default=DEFAULT_COOLDOWN, ge=0, le=86400)
    disableScaleIn: bool = False


class StepAdjustment(Strict):
    """Bounds are relative to the policy's threshold, as in Application Auto Scaling (None: unbounded)."""

    metricIntervalLowerBound: float | None = None
    metricIntervalUpperBound: float | None = None
    scalingAdjustment: int

    @model_validator(mode="after")
    def _bounds(self):  # type: ignore[no-untyped-def]
        lo, hi = self.metricIntervalLowerBound, self.metricIntervalUpperBound
        if lo is None and hi is None:
            raise ValueError("give metricIntervalLowerBound, metricIntervalUpperBound or both")
        if lo is not None and hi is not None and lo >= hi:
            raise ValueError("metricIntervalLowerBound must be below metricIntervalUpperBound")
        return self


class StepScalingPolicy(_Metric):
    threshold: float  # the alarm threshold the steps' bounds are relative to
    adjustmentType: AdjustmentType = "ChangeInCapacity"
    stepAdjustments: list[StepAdjustment] = Field(min_length=1)
    cooldown: int = Field(default=DEFAULT_COOLDOWN, ge=0, le=86400)
    minAdjustmentMagnitude: int | None = Field(default=None, ge=1)


class ScalableTargetAction(Strict):
    minCapacity: int | None = Field(default=None, ge=0)
    maxCapacity: int | None = Field(default=None, ge=0)


class ScheduledAction(Strict):
    scheduledActionName: str = Field(pattern=POLICY_NAME_RE.pattern)
    schedule: str  # at(yyyy-mm-ddThh:mm:ss) or cron(min hour dom month dow [year])
    timezone: str = "UTC"
    scalableTargetAction: ScalableTargetAction

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as UTC or Europe/Paris") from None
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        from orchestrator.core.autoscaling import parse_schedule  # the one parser

        parse_schedule(v)
        return v


class SuspendedState(Strict):
    dynamicScalingInSuspended: bool = False
    dynamicScalingOutSuspended: bool = False
    scheduledScalingSuspended: bool = False


class ScalingSpec(Strict):
    """A ``kind: ScalingPolicy`` manifest's spec: the service's scalable target and all its policies."""

    serviceName: str
    minCapacity: int = Field(ge=0, le=10000)
    maxCapacity: int = Field(ge=0, le=10000)
    suspendedState: SuspendedState = Field(default_factory=SuspendedState)
    targetTrackingScalingPolicies: list[TargetTrackingPolicy] = Field(default_factory=list)
    stepScalingPolicies: list[StepScalingPolicy] = Field(default_factory=list)
    scheduledActions: list[ScheduledAction] = Field(default_factory=list)
    # dockyard: the HPA's scale-in stabilization window and tolerance
    scaleInStabilizationSeconds: int = Field(default=DEFAULT_STABILIZATION, ge=0, le=3600)
    tolerance: float = Field(default=0.1, ge=0, lt=1)

    @field_validator("serviceName")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-255 letters, digits, hyphens or underscores")
        return v

    @model_validator(mode="after")
    def _check(self):  # type: ignore[no-untyped-def]
        if self.minCapacity > self.maxCapacity:
            raise ValueError("@maxCapacity: must be at least minCapacity")
        names = [p.policyName for p in [*self.targetTrackingScalingPolicies, *self.stepScalingPolicies]]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"@targetTrackingScalingPolicies: policy names must be unique ({', '.join(sorted(dup))})")
        return self


class ScalingActivity(BaseModel):
    """One scaling activity, as DescribeScalingActivities shows it."""

    activityId: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    description: str
    cause: str
    statusCode: Literal["Successful", "Failed"] = "Successful"
    statusMessage: str = ""
    startTime: float = Field(default_factory=time.time)


class MetricValue(BaseModel):
    value: float | None  # None: no data
    at: float
    detail: str = ""  # e.g. "3 of 4 tasks sampled"


class ScalableTarget(BaseModel):
    """The orchestrator's record of a service's auto scaling (store kind ``scalabletarget``)."""

    model_config = ConfigDict(extra="ignore")
    cluster: str
    spec: ScalingSpec
    minCapacity: int  # the current bounds: the spec's, as changed by scheduled actions since
    maxCapacity: int
    createdAt: float
    updatedAt: float
    lastScaleOutAt: float | None = None
    lastScaleInAt: float | None = None
    policyLastAt: dict[str, float] = Field(default_factory=dict)  # step policies' own cooldowns
    scheduledCheckedAt: float = 0.0  # scheduled actions due up to here have run
    activities: list[ScalingActivity] = Field(default_factory=list)  # newest first, bounded
    lastMetrics: dict[str, MetricValue] = Field(default_factory=dict)  # per policy name

    @property
    def serviceName(self) -> str:
        return self.spec.serviceName

    @property
    def record_key(self) -> str:
        return f"{self.cluster}/{self.spec.serviceName}"
