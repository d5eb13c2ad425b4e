"""Auto-scaling decisions: a pure function from a scalable target, its metric readings, the
current desired count, the last activity times and ``now`` to a new desired count (or none),
with the reasons. No I/O; nothing given is mutated.

Rules (Application Auto Scaling's, with the HPA's formula and damping):

* Target tracking: ``ceil(current x value / target)`` when ``|value / target - 1| > tolerance``
  (10 % by default), as the HPA computes it.
* Step scaling: the step whose bounds (relative to ``threshold``) hold ``value - threshold``
  gives a ChangeInCapacity, PercentChangeInCapacity (truncated toward zero, at least
  ``minAdjustmentMagnitude``, at least 1) or ExactCapacity.
* Several policies: scale out if any says out (to the largest count proposed); scale in only if
  every policy says in (to the largest of their counts), as Application Auto Scaling does. A
  policy without data (no task sampled yet, a lost node, Prometheus down) never says in, so
  missing metrics never cause a scale-in. A step policy none of whose steps applies (its alarm
  is not in ALARM) and a target tracking policy with ``disableScaleIn`` abstain: they neither
  say in nor hold a scale-in back.
* Cooldowns: after a scale-out, no further scale-out for ``scaleOutCooldown``; a scale-in waits
  ``scaleInCooldown`` after any scaling activity, in or out (a step policy: its ``cooldown``
  since its own last activity). A scale-out is never held back by a scale-in cooldown.
* Scale-in stabilization (the HPA's downscale window): a scale-in goes only to the highest count
  recommended over the last ``scaleInStabilizationSeconds``, and not at all until the
  recommendations seen span that window (so a restart, which forgets them, cannot scale in).
* No scale-in while a deployment is in progress (as Application Auto Scaling does for ECS);
  scale-out goes on.
* The result is always within the current [minCapacity, maxCapacity]; a desired count outside
  them is brought inside even without any metric.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from croniter import croniter

from orchestrator.autoscaling_models import (
    ScalableTarget,
    ScheduledAction,
    StepScalingPolicy,
    TargetTrackingPolicy,
)

Direction = Literal["out", "in"]
_AT = re.compile(r"^at\((\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d)?)\)$")
_CRON = re.compile(r"^cron\((.+)\)$")


# ---- metric readings --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reading:
    """A policy's metric now: ``value`` None means no data; ``missing`` ready tasks had no sample."""

    value: float | None
    missing: int = 0
    detail: str = ""


def average_reading(per_task: Mapping[str, float | None], ready: Sequence[str], starting: int = 0) -> Reading:
    """The service's metric per task, the HPA's way. Only ready tasks (RUNNING and proven healthy)
    are measured: the samples of ``starting`` tasks (not yet ready) are set aside. A ready task
    without a sample yet and a starting task count as 0 in the average (so a scale-out does not
    overshoot while new tasks come up) and veto any scale-in (``missing``)."""
    values = [v for t in ready if (v := per_task.get(t)) is not None]
    missing = len(ready) - len(values) + starting
    detail = f"{len(values)} of {len(ready)} ready tasks sampled" + (f", {starting} starting" if starting else "")
    if not values:
        return Reading(None, missing, detail)
    return Reading(sum(values) / (len(ready) + starting), missing, detail)


# ---- per-policy proposals ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Proposal:
    policy: str
    desired: int | None  # None: no opinion (no data, within tolerance, cooling down)
    reason: str
    cause: str = ""  # what would be the activity's cause, in AAS's words
    abstain: bool = False  # no vote on a scale-in (a step policy whose alarm is not in ALARM, disableScaleIn)

    def direction(self, current: int) -> Direction | None:
        if self.desired is None or self.desired == current:
            return None
        return "out" if self.desired > current else "in"


def target_tracking(p: TargetTrackingPolicy, r: Reading, current: int, tolerance: float) -> Proposal:
    metric = p.metric_name
    if r.value is None:
        return Proposal(p.policyName, None, f"{metric}: no data ({r.detail or 'no sample'})")
    ratio = r.value / p.targetValue
    side = "above" if ratio > 1 else "below"
    cause = f"{metric} {r.value:.1f} {side} target {p.targetValue:g} triggered policy {p.policyName}"
    if abs(ratio - 1.0) <= tolerance + 1e-9:
        return Proposal(p.policyName, current, f"{metric} {r.value:.1f} within {tolerance:.0%} of target "
                                               f"{p.targetValue:g}", cause)
    if current == 0:
        return Proposal(p.policyName, None, f"{metric}: no running task to scale from")
    want = math.ceil(current * ratio - 1e-9)
    if want < current and r.missing:
        return Proposal(p.policyName, None, f"{metric} {r.value:.1f} below target but {r.missing} task(s) "
                                            "unsampled: no scale-in on missing data")
    if want < current and p.disableScaleIn:
        return Proposal(p.policyName, None, f"{metric} {r.value:.1f} below target; scale-in disabled", abstain=True)
    return Proposal(p.policyName, want, f"{metric} {r.value:.1f} vs target {p.targetValue:g}: {want} tasks", cause)


def step_scaling(p: StepScalingPolicy, r: Reading, current: int) -> Proposal:
    metric = p.metric_name
    if r.value is None:
        return Proposal(p.policyName, None, f"{metric}: no data ({r.detail or 'no sample'})")
    d = r.value - p.threshold
    step = next((s for s in p.stepAdjustments
                 if (s.metricIntervalLowerBound is None or d >= s.metricIntervalLowerBound)
                 and (s.metricIntervalUpperBound is None or d < s.metricIntervalUpperBound)), None)
    if step is None:
        return Proposal(p.policyName, None, f"{metric} {r.value:.1f}: no step applies", abstain=True)
    adj = step.scalingAdjustment
    if p.adjustmentType == "ExactCapacity":
        want = adj
    elif p.adjustmentType == "ChangeInCapacity":
        want = current + adj
    else:
        delta = math.trunc(current * adj / 100.0)
        if adj and abs(delta) < (p.minAdjustmentMagnitude or 1):
            delta = int(math.copysign(p.minAdjustmentMagnitude or 1, adj))
        want = current + delta
    want = max(want, 0)
    side = "above" if d >= 0 else "below"
    cause = f"{metric} {r.value:.1f} {side} threshold {p.threshold:g} triggered policy {p.policyName}"
    if want < current and r.missing:
        return Proposal(p.policyName, None, f"{metric}: {r.missing} task(s) unsampled: no scale-in on missing data")
    return Proposal(p.policyName, want, f"{metric} {r.value:.1f}, step {adj:+d} ({p.adjustmentType}): {want}", cause)


# ---- the decision -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Decision:
    desired: int | None  # the new desired count, None: leave it
    direction: Direction | None
    reasons: tuple[str, ...]
    cause: str = ""
    policies: tuple[str, ...] = ()  # the policies that acted (their cooldowns restart)
    recommendation: int | None = None  # the unstabilized count, for the stabilization window


def _clamp(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, n))


def decide(target: ScalableTarget, readings: Mapping[str, Reading], current: int, now: float,
           recommendations: Sequence[tuple[float, int]] = (), history_since: float | None = None,
           deploying: bool = False) -> Decision:
    """The new desired count of the target's service (see the module doc). ``readings`` per
    policy name; ``recommendations`` = (time, count) of earlier decisions' recommendations, kept
    since ``history_since`` (None: none kept yet); ``deploying``: a deployment is in progress (no
    scale-in then, as Application Auto Scaling does for ECS)."""
    spec, lo, hi = target.spec, target.minCapacity, target.maxCapacity
    reasons: list[str] = []
    if current < lo or current > hi:
        new = _clamp(current, lo, hi)
        why = f"desired count {current} {'below minCapacity' if current < lo else 'above maxCapacity'} {lo if current < lo else hi}"
        return Decision(new, "out" if new > current else "in", (why,), why)
    proposals: list[tuple[Proposal, float]] = []  # (proposal, its cooldown in its direction)
    for tp in spec.targetTrackingScalingPolicies:
        pr = target_tracking(tp, readings.get(tp.policyName, Reading(None)), current, spec.tolerance)
        proposals.append((pr, float(tp.scaleOutCooldown if pr.direction(current) == "out" else tp.scaleInCooldown)))
    for sp in spec.stepScalingPolicies:
        pr = step_scaling(sp, readings.get(sp.policyName, Reading(None)), current)
        proposals.append((pr, float(sp.cooldown)))
    if not proposals:
        return Decision(None, None, ("no scaling policy",))
    reasons += [p.reason for p, _ in proposals]
    outs = [(p, cd) for p, cd in proposals if p.direction(current) == "out"]
    suspended = spec.suspendedState
    if outs:
        ready = []
        for p, cd in outs:
            last = _last(target, p.policy, "out")
            if last is not None and now - last < cd:
                reasons.append(f"{p.policy}: scale-out cooldown ({cd:g} s) until {last + cd:.0f}")
            else:
                ready.append(p)
        if suspended.dynamicScalingOutSuspended:
            return Decision(None, None, (*reasons, "dynamic scale-out suspended"))
        if not ready:
            return Decision(None, None, tuple(reasons))
        best = max(ready, key=lambda p: p.desired or 0)
        new = _clamp(best.desired or current, lo, hi)
        if new <= current:
            return Decision(None, None, (*reasons, f"already at maxCapacity {hi}"))
        return Decision(new, "out", tuple(reasons), best.cause, tuple(p.policy for p in ready), best.desired)
    proposals = [(p, cd) for p, cd in proposals if not p.abstain]
    if not proposals or not all(p.direction(current) == "in" for p, _ in proposals):
        return Decision(None, None, tuple(reasons), recommendation=current)
    rec = max(p.desired or 0 for p, _ in proposals)
    window = spec.scaleInStabilizationSeconds
    seen = [(t, n) for t, n in recommendations if now - t <= window]
    if window and (history_since is None or now - history_since < window):
        return Decision(None, None, (*reasons, f"stabilizing: recommendations span less than {window} s"),
                        recommendation=rec)
    stable = max([rec, *(n for _, n in seen)])
    new = _clamp(stable, lo, hi)
    if new >= current:
        return Decision(None, None, (*reasons, f"stabilization window ({window} s) holds {stable}"),
                        recommendation=rec)
    for p, cd in proposals:
        last = max(_last(target, p.policy, "in") or -math.inf, target.lastScaleOutAt or -math.inf)
        if now - last < cd:
            return Decision(None, None, (*reasons, f"{p.policy}: scale-in cooldown ({cd:g} s) until {last + cd:.0f}"),
                            recommendation=rec)
    if suspended.dynamicScalingInSuspended:
        return Decision(None, None, (*reasons, "dynamic scale-in suspended"), recommendation=rec)
    if deploying:
        return Decision(None, None, (*reasons, "a deployment is in progress: scale-in waits"), recommendation=rec)
    best = max((p for p, _ in proposals), key=lambda p: p.desired or 0)
    return Decision(new, "in", tuple(reasons), best.cause, tuple(p.policy for p, _ in proposals), rec)


def _last(target: ScalableTarget, policy: str, direction: Direction) -> float | None:
    """The activity time a policy's cooldown runs from: a step policy's own last activity, else
    the target's last activity in that direction (scale-in: also after the last scale-out)."""
    if policy in target.policyLastAt and any(s.policyName == policy for s in target.spec.stepScalingPolicies):
        return target.policyLastAt[policy]
    if direction == "out":
        return target.lastScaleOutAt
    ins = [t for t in (target.lastScaleInAt, target.lastScaleOutAt) if t is not None]
    return max(ins) if ins else None


# ---- scheduled actions ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Schedule:
    at: datetime | None = None  # naive, in the action's time zone
    cron: str | None = None  # five fields


def parse_schedule(text: str) -> Schedule:
    """``at(2026-12-02T09:00:00)`` or ``cron(0 9 * * MON-FRI)``; AWS's six-field form
    ``cron(0 9 ? * MON-FRI *)`` is accepted (``?`` read as ``*``; the year must be ``*``).
    Raises ValueError with a hint."""
    text = text.strip()
    m = _AT.match(text)
    if m:
        return Schedule(at=datetime.fromisoformat(m.group(1)))
    m = _CRON.match(text)
    if m:
        fields = m.group(1).replace("?", "*").split()
        if len(fields) == 6:
            if fields[5] != "*":
                raise ValueError("cron(...): only * is supported as the year")
            fields = fields[:5]
        expr = " ".join(fields)
        if len(fields) != 5 or not croniter.is_valid(expr):
            raise ValueError(f"cron({m.group(1)}) is not a valid cron expression (minute hour day month weekday)")
        return Schedule(cron=expr)
    raise ValueError("schedule must be at(yyyy-mm-ddThh:mm:ss) or cron(minute hour day month weekday)")


def last_fire(action: ScheduledAction, after: float, upto: float) -> float | None:
    """The latest time in (after, upto] the action is scheduled at, or None."""
    sched, tz = parse_schedule(action.schedule), ZoneInfo(action.timezone)
    if sched.at is not None:
        t = sched.at.replace(tzinfo=tz).timestamp()
        return t if after < t <= upto else None
    # croniter's get_prev is exclusive of its start: start a millisecond past ``upto``
    prev = croniter(sched.cron or "", datetime.fromtimestamp(upto + 0.001, tz)).get_prev(float)
    return prev if after < prev <= upto else None


@dataclass(frozen=True, slots=True)
class Bounds:
    min_capacity: int
    max_capacity: int
    fired: tuple[tuple[str, float], ...] = field(default=())  # (action name, scheduled time), in order


def scheduled_bounds(target: ScalableTarget, now: float) -> Bounds:
    """The target's bounds after the scheduled actions due in (scheduledCheckedAt, now], applied
    in time order. An action that sets only one bound moves the other if needed to keep
    min <= max."""
    lo, hi = target.minCapacity, target.maxCapacity
    if target.spec.suspendedState.scheduledScalingSuspended:
        return Bounds(lo, hi)
    due = []
    for a in target.spec.scheduledActions:
        t = last_fire(a, target.scheduledCheckedAt, now)
        if t is not None:
            due.append((t, a))
    fired = []
    for t, a in sorted(due, key=lambda x: x[0]):
        act = a.scalableTargetAction
        if act.minCapacity is not None:
            lo = act.minCapacity
            hi = max(hi, lo)
        if act.maxCapacity is not None:
            hi = act.maxCapacity
            lo = min(lo, hi)
        fired.append((a.scheduledActionName, t))
    return Bounds(lo, hi, tuple(fired))
