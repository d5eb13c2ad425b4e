"""The API's view of a service's auto scaling (also part of the service view)."""
from __future__ import annotations

from typing import Any

from orchestrator.autoscaling_models import ScalableTarget
from orchestrator.state import State


def target_view(t: ScalableTarget) -> dict[str, Any]:
    """The target as `describe service` shows it: bounds, each policy with its current metric
    value, the scheduled actions and the last activities (newest first)."""
    policies: list[dict[str, Any]] = []
    for p in t.spec.targetTrackingScalingPolicies:
        policies.append({"policyName": p.policyName, "policyType": "TargetTrackingScaling", "metric": p.metric_name,
                         "targetValue": p.targetValue, "scaleOutCooldown": p.scaleOutCooldown,
                         "scaleInCooldown": p.scaleInCooldown, "disableScaleIn": p.disableScaleIn})
    for sp in t.spec.stepScalingPolicies:
        policies.append({"policyName": sp.policyName, "policyType": "StepScaling", "metric": sp.metric_name,
                         "threshold": sp.threshold, "adjustmentType": sp.adjustmentType, "cooldown": sp.cooldown,
                         "stepAdjustments": [s.model_dump(exclude_none=True) for s in sp.stepAdjustments]})
    for pv in policies:
        m = t.lastMetrics.get(pv["policyName"])
        pv["currentValue"] = None if m is None or m.value is None else round(m.value, 2)
        pv["sampledAt"] = m.at if m else None
        pv["detail"] = m.detail if m else "not evaluated yet"
    return {"serviceName": t.serviceName, "cluster": t.cluster, "minCapacity": t.minCapacity,
            "maxCapacity": t.maxCapacity, "suspendedState": t.spec.suspendedState.model_dump(), "policies": policies,
            "scheduledActions": [a.model_dump() for a in t.spec.scheduledActions],
            "lastScaleOutAt": t.lastScaleOutAt, "lastScaleInAt": t.lastScaleInAt,
            "activities": [a.model_dump() for a in t.activities], "spec": t.spec.model_dump(exclude_defaults=True)}


def service_autoscaling(state: State, cluster: str, service: str) -> dict[str, Any] | None:
    t = state.scalable_targets.get((cluster, service))
    return target_view(t) if t is not None else None
