"""`describe service`'s auto-scaling section: bounds, each policy with its current metric value,
scheduled actions and the last activities (pure: a view in, text out)."""
from __future__ import annotations

from typing import Any

from orchestrator.render import age, fields, table


def _goal(p: dict[str, Any]) -> str:
    if p.get("policyType") == "StepScaling":
        return f"threshold {p.get('threshold'):g}, {p.get('adjustmentType')}, cooldown {p.get('cooldown')}s"
    text = f"target {p.get('targetValue'):g}, cooldown out {p.get('scaleOutCooldown')}s / in {p.get('scaleInCooldown')}s"
    return text + (", scale-in disabled" if p.get("disableScaleIn") else "")


def _value(p: dict[str, Any]) -> str:
    v = p.get("currentValue")
    return (f"{v:g}" if isinstance(v, (int, float)) else "no data") + (f" ({p['detail']})" if p.get("detail") else "")


def describe(view: dict[str, Any], now: float, limit: int = 10) -> str:
    suspended = [k for k, v in (view.get("suspendedState") or {}).items() if v]
    parts = [fields([("Capacity", f"min {view.get('minCapacity')}, max {view.get('maxCapacity')}"),
                     ("Suspended", ", ".join(suspended) or "none")])]
    policies = view.get("policies") or []
    if policies:
        parts.append(table(["POLICY", "METRIC", "GOAL", "CURRENT"],
                           [[p.get("policyName"), p.get("metric"), _goal(p), _value(p)] for p in policies]))
    actions = view.get("scheduledActions") or []
    if actions:
        parts.append(table(["SCHEDULED ACTION", "SCHEDULE", "TIME ZONE", "SETS"],
                           [[a.get("scheduledActionName"), a.get("schedule"), a.get("timezone"),
                             ", ".join(f"{k} {v}" for k, v in (a.get("scalableTargetAction") or {}).items()
                                       if v is not None)] for a in actions]))
    acts = (view.get("activities") or [])[:limit]
    if acts:
        parts.append(table(["AGE", "STATUS", "ACTIVITY", "CAUSE"],
                           [[age(a.get("startTime"), now), a.get("statusCode"), a.get("statusMessage") or a.get("description"),
                             a.get("cause")] for a in acts]))
    return "\n".join(parts)
