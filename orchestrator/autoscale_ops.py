"""What the API may ask of auto scaling: register (apply) a service's scalable target and
policies, remove it; and the two rules it imposes on the other operations.

Who owns desiredCount (docs/autoscaling.md): while a service has a scalable target, its
desiredCount belongs to the auto scaler. Applying the service's manifest again keeps the
current count (a manifest's desiredCount is only the count a new service starts with, clamped
to the bounds); an explicit ``dockyard scale`` is clamped to [minCapacity, maxCapacity]. This
avoids Kubernetes' known pitfall of re-applying a Deployment resetting the HPA's replicas.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.autoscaling_models import ScalableTarget, ScalingActivity, ScalingSpec
from orchestrator.models import Service, ServiceSpec
from orchestrator.state import State

if TYPE_CHECKING:
    from orchestrator.manifests import DocError, ScalingPolicyDoc

ACTIVITIES_KEPT = 20


def fulfilled(count: int) -> str:
    """Application Auto Scaling's status message of a successful ECS scaling activity."""
    return f"Successfully set desired count to {count}. Change successfully fulfilled by ecs."


def add_activity(t: ScalableTarget, description: str, cause: str, now: float, message: str = "",
                 failed: bool = False) -> ScalingActivity:
    act = ScalingActivity(description=description, cause=cause, startTime=now, statusMessage=message,
                          statusCode="Failed" if failed else "Successful")
    t.activities.insert(0, act)
    del t.activities[ACTIVITIES_KEPT:]
    return act


def check(state: State, cluster: str, spec: ScalingSpec, applied_services: dict[tuple[str, str], ServiceSpec],
          source: str = "") -> list[DocError]:
    """The references a scalable target makes: a REPLICA service (existing or in the same apply)."""
    from orchestrator.manifests import DocError

    key = (cluster, spec.serviceName)
    svc = applied_services.get(key) or (s.spec if (s := state.services.get(key)) and s.status == "ACTIVE" else None)
    if svc is None:
        return [DocError(source, f"service {spec.serviceName!r} does not exist in cluster {cluster!r}", "metadata.name",
                         "ScalingPolicy", spec.serviceName, "apply the Service first or in the same apply")]
    if svc.schedulingStrategy == "DAEMON":
        return [DocError(source, "a DAEMON service runs one task per node and cannot be auto scaled", "metadata.name",
                         "ScalingPolicy", spec.serviceName, "auto scale a REPLICA service")]
    errs = []
    for i, p in enumerate([*spec.targetTrackingScalingPolicies, *spec.stepScalingPolicies]):
        if p.predefinedMetricType == "ALBRequestCountPerTarget" and not svc.loadBalancers:
            errs.append(DocError(source, "ALBRequestCountPerTarget needs a service with loadBalancers",
                                 f"spec.policies[{i}].predefinedMetricType", "ScalingPolicy", spec.serviceName,
                                 "add loadBalancers to the service, or scale on CPU or memory"))
    return errs


def put(state: State, cluster: str, spec: ScalingSpec, now: float) -> tuple[str, ScalableTarget]:
    """Register or update the service's scalable target (as RegisterScalableTarget + PutScalingPolicy +
    PutScheduledAction at once); the bounds take the spec's, and the service's count is brought inside
    them by the next auto-scaling pass. Returns (action, target)."""
    existing = state.scalable_targets.get((cluster, spec.serviceName))
    if existing is not None and existing.spec == spec:
        return "unchanged", existing
    t = ScalableTarget(cluster=cluster, spec=spec, minCapacity=spec.minCapacity, maxCapacity=spec.maxCapacity,
                       createdAt=existing.createdAt if existing else now, updatedAt=now,
                       scheduledCheckedAt=now)
    if existing is not None:  # keep the history and the cooldowns
        t.activities, t.lastScaleInAt, t.lastScaleOutAt = existing.activities, existing.lastScaleInAt, existing.lastScaleOutAt
        t.policyLastAt, t.lastMetrics = dict(existing.policyLastAt), dict(existing.lastMetrics)
        t.scheduledCheckedAt = max(existing.scheduledCheckedAt, 0.0) or now
    state.put_scalable_target(t)
    return ("configured" if existing else "created"), t


def apply_doc(state: State, d: ScalingPolicyDoc, now: float, dry_run: bool) -> dict[str, Any]:
    detail = f"scalingpolicy/{d.name}"
    existing = state.scalable_targets.get((d.cluster, d.name))
    if dry_run:
        action = "unchanged" if existing and existing.spec == d.spec else "configured" if existing else "created"
        return {"action": action, "detail": detail}
    action, _ = put(state, d.cluster, d.spec, now)
    return {"action": action, "detail": detail}


def remove(state: State, cluster: str, service: str) -> ScalableTarget | None:
    t = state.scalable_targets.get((cluster, service))
    if t is not None:
        state.delete_scalable_target(t)
    return t


def clamp(state: State, cluster: str, service: str, count: int) -> tuple[int, str]:
    """An explicit desired count within the service's auto-scaling bounds; (count, note)."""
    t = state.scalable_targets.get((cluster, service))
    if t is None or t.minCapacity <= count <= t.maxCapacity:
        return count, ""
    new = max(t.minCapacity, min(t.maxCapacity, count))
    return new, f" (clamped from {count} to auto scaling's [{t.minCapacity}, {t.maxCapacity}])"


def owned_count(state: State, existing: Service | None, spec: ServiceSpec) -> ServiceSpec:
    """The applied service spec with desiredCount as auto scaling owns it (the module doc)."""
    t = state.scalable_targets.get((spec.cluster or "", spec.serviceName))
    if t is None:
        return spec
    count = existing.spec.desiredCount if existing is not None and existing.status == "ACTIVE" else spec.desiredCount
    count = max(t.minCapacity, min(t.maxCapacity, count))
    return spec if count == spec.desiredCount else spec.model_copy(update={"desiredCount": count})
