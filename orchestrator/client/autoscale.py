"""``autoscale SERVICE``: register, change or remove a service's auto scaling (target tracking on
CPU, memory or requests per target) without writing a ScalingPolicy manifest."""
from __future__ import annotations

from typing import Any

import click

from orchestrator.client.errors import ApiError, CliError
from orchestrator.client.session import Session, cluster_option, out, pass_session

# The predefined metric each flag tracks, and the policy name the flag manages.
METRICS = {"cpu": "ECSServiceAverageCPUUtilization", "memory": "ECSServiceAverageMemoryUtilization",
           "requests": "ALBRequestCountPerTarget"}


def merge(existing: dict[str, Any] | None, lo: int | None, hi: int | None, goals: dict[str, float],
          out_cd: int | None, in_cd: int | None, disable_in: bool) -> dict[str, Any]:
    """The spec to PUT: the existing one with the given bounds and the flags' policies replaced
    (other policies and scheduled actions kept). Pure."""
    spec = dict(existing or {})
    spec.pop("serviceName", None)
    if lo is not None:
        spec["minCapacity"] = lo
    if hi is not None:
        spec["maxCapacity"] = hi
    if "minCapacity" not in spec or "maxCapacity" not in spec:
        raise CliError("a new auto scaling needs --min and --max", "e.g. dockyard autoscale web --min 2 --max 10 --cpu 60")
    policies = [p for p in spec.get("targetTrackingScalingPolicies") or [] if p.get("policyName") not in goals]
    for name, value in goals.items():
        p: dict[str, Any] = {"policyName": name, "predefinedMetricType": METRICS[name], "targetValue": value}
        if out_cd is not None:
            p["scaleOutCooldown"] = out_cd
        if in_cd is not None:
            p["scaleInCooldown"] = in_cd
        if disable_in:
            p["disableScaleIn"] = True
        policies.append(p)
    spec["targetTrackingScalingPolicies"] = policies
    if not policies and not spec.get("stepScalingPolicies") and not spec.get("scheduledActions"):
        raise CliError("give a metric to track", "--cpu PERCENT, --memory PERCENT or --requests PER_TARGET_PER_MINUTE")
    return spec


@click.command()
@click.argument("service")
@click.option("--min", "lo", type=click.IntRange(min=0), help="minCapacity: never fewer tasks.")
@click.option("--max", "hi", type=click.IntRange(min=0), help="maxCapacity: never more tasks.")
@click.option("--cpu", type=click.FloatRange(min=0, min_open=True), metavar="PERCENT",
              help="Track the average CPUUtilization at this target.")
@click.option("--memory", type=click.FloatRange(min=0, min_open=True), metavar="PERCENT",
              help="Track the average MemoryUtilization at this target.")
@click.option("--requests", type=click.FloatRange(min=0, min_open=True), metavar="N",
              help="Track requests per target per minute through the load balancer (ALBRequestCountPerTarget).")
@click.option("--scale-out-cooldown", type=click.IntRange(min=0), metavar="SECONDS", help="Default 300.")
@click.option("--scale-in-cooldown", type=click.IntRange(min=0), metavar="SECONDS", help="Default 300.")
@click.option("--disable-scale-in", is_flag=True, help="These policies only ever add tasks.")
@click.option("--off", is_flag=True, help="Stop auto scaling the service (its current count stays).")
@cluster_option
@pass_session
def autoscale(s: Session, service: str, lo: int | None, hi: int | None, cpu: float | None, memory: float | None,
              requests: float | None, scale_out_cooldown: int | None, scale_in_cooldown: int | None,
              disable_scale_in: bool, off: bool) -> None:
    """Auto scale SERVICE between --min and --max tasks, tracking --cpu, --memory or --requests.

    Run again to change it (the given flags replace, the rest is kept); --off removes it. While a service
    is auto scaled its desiredCount belongs to the auto scaler: re-applying its manifest keeps the count
    and `dockyard scale` is clamped to [min, max]. Full policies: a ScalingPolicy manifest
    (docs/autoscaling.md)."""
    path = s.api.cpath("services", service, "autoscaling")
    if off:
        s.api.delete(path)
        out(f"service/{service} auto scaling removed")
        return
    try:
        existing = s.api.get(path).get("scalableTarget", {}).get("spec")
    except ApiError as exc:
        if exc.status != 404 or "scalable target" not in str(exc):
            raise
        existing = None
    goals = {k: v for k, v in (("cpu", cpu), ("memory", memory), ("requests", requests)) if v is not None}
    spec = merge(existing, lo, hi, goals, scale_out_cooldown, scale_in_cooldown, disable_scale_in)
    res = s.api.request("PUT", path, body=spec)
    t = res.get("scalableTarget") or {}
    tracked = ", ".join(f"{p['policyName']} {p.get('targetValue', p.get('threshold'))}" for p in t.get("policies") or [])
    out(f"service/{service} auto scaling {res.get('action')}: min {t.get('minCapacity')}, max {t.get('maxCapacity')}"
        + (f", tracking {tracked}" if tracked else ""))
