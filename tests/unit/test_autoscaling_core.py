"""The pure auto-scaling decision (orchestrator.core.autoscaling): examples and properties."""
from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.autoscaling_models import (
    ScalableTarget,
    ScalingSpec,
    ScheduledAction,
    StepScalingPolicy,
    TargetTrackingPolicy,
)
from orchestrator.core.autoscaling import (
    Reading,
    average_reading,
    decide,
    last_fire,
    parse_schedule,
    scheduled_bounds,
)

NOW = 1_800_000_000.0
CPU = "ECSServiceAverageCPUUtilization"
MEM = "ECSServiceAverageMemoryUtilization"


def tt(name: str = "cpu", target: float = 50.0, out_cd: int = 0, in_cd: int = 0, metric: str = CPU,
       disable_in: bool = False) -> TargetTrackingPolicy:
    return TargetTrackingPolicy(policyName=name, predefinedMetricType=metric, targetValue=target,  # type: ignore[arg-type]
                                scaleOutCooldown=out_cd, scaleInCooldown=in_cd, disableScaleIn=disable_in)


def target(lo: int = 1, hi: int = 10, policies=None, steps=(), window: int = 0, actions=(), **kw) -> ScalableTarget:
    spec = ScalingSpec(serviceName="web", minCapacity=lo, maxCapacity=hi,
                       targetTrackingScalingPolicies=list([tt()] if policies is None else policies), stepScalingPolicies=list(steps),
                       scheduledActions=list(actions), scaleInStabilizationSeconds=window)
    return ScalableTarget(cluster="c", spec=spec, minCapacity=lo, maxCapacity=hi, createdAt=0.0, updatedAt=0.0, **kw)


def run(tg: ScalableTarget, value: float | None, current: int, missing: int = 0, now: float = NOW):
    return decide(tg, {p.policyName: Reading(value, missing) for p in tg.spec.targetTrackingScalingPolicies}
                  | {p.policyName: Reading(value, missing) for p in tg.spec.stepScalingPolicies},
                  current, now, history_since=0.0)


# ---- examples ---------------------------------------------------------------------------------
def test_target_tracking_is_proportional_as_the_hpa():
    assert run(target(), 90.0, 2).desired == 4  # ceil(2 x 90 / 50)
    assert run(target(), 20.0, 4).desired == 2  # ceil(4 x 20 / 50)
    d = run(target(), 54.0, 4)  # within 10 %
    assert d.desired is None and "within" in d.reasons[0]


def test_activity_cause_names_metric_value_and_target():
    d = run(target(), 90.0, 2)
    assert d.direction == "out" and d.cause == f"{CPU} 90.0 above target 50 triggered policy cpu"


def test_never_outside_bounds_and_brought_inside_without_metrics():
    assert run(target(hi=3), 500.0, 2).desired == 3
    assert run(target(lo=2), 1.0, 3).desired == 2
    assert run(target(lo=3), None, 1).desired == 3
    assert run(target(hi=3), None, 7).desired == 3
    d = run(target(hi=3), 500.0, 3)
    assert d.desired is None and "maxCapacity" in d.reasons[-1]


def test_missing_samples_block_scale_in_but_not_scale_out():
    assert run(target(), 10.0, 4, missing=1).desired is None
    assert run(target(), None, 4).desired is None
    assert run(target(), 100.0, 4, missing=1).desired == 8


def test_cooldowns():
    tg = target(policies=[tt(out_cd=60, in_cd=120)], lastScaleOutAt=NOW - 30)
    assert run(tg, 100.0, 2).desired is None  # scale-out cooldown
    assert run(tg, 100.0, 2, now=NOW + 31).desired == 4
    assert run(tg, 10.0, 4, now=NOW + 60).desired is None  # scale-in waits after a scale-out too
    assert run(tg, 10.0, 4, now=NOW + 91).desired == 1
    tg = target(policies=[tt(out_cd=60, in_cd=120)], lastScaleInAt=NOW - 10)
    assert run(tg, 100.0, 2).desired == 4  # a scale-in cooldown never holds back a scale-out


def test_no_scale_in_during_a_deployment_but_scale_out_goes_on():
    tg = target()
    d = decide(tg, {"cpu": Reading(10.0)}, 4, NOW, history_since=0.0, deploying=True)
    assert d.desired is None and "deployment" in d.reasons[-1]
    assert decide(tg, {"cpu": Reading(100.0)}, 4, NOW, history_since=0.0, deploying=True).desired == 8


def test_disable_scale_in():
    assert run(target(policies=[tt(disable_in=True)]), 10.0, 4).desired is None
    # it abstains: another policy may still scale in
    tg = target(policies=[tt(disable_in=True), tt("mem", metric=MEM)])
    assert decide(tg, {"cpu": Reading(10.0), "mem": Reading(10.0)}, 4, NOW, history_since=0.0).desired == 1
    assert run(target(policies=[tt(disable_in=True)]), 100.0, 4).desired == 8


def test_several_policies_out_if_any_in_only_if_all():
    tg = target(policies=[tt("cpu", 50.0), tt("mem", 50.0, metric=MEM)])
    out = decide(tg, {"cpu": Reading(100.0), "mem": Reading(10.0)}, 4, NOW, history_since=0.0)
    assert out.desired == 8 and out.policies == ("cpu",)
    hold = decide(tg, {"cpu": Reading(50.0), "mem": Reading(10.0)}, 4, NOW, history_since=0.0)
    assert hold.desired is None
    both = decide(tg, {"cpu": Reading(20.0), "mem": Reading(10.0)}, 4, NOW, history_since=0.0)
    assert both.desired == 2  # the larger of ceil(1.6) and ceil(0.8)
    nodata = decide(tg, {"cpu": Reading(20.0)}, 4, NOW, history_since=0.0)
    assert nodata.desired is None


def test_stabilization_window_takes_the_highest_recent_recommendation():
    tg = target(window=60)
    recs = [(NOW - 50, 6), (NOW - 20, 3)]
    assert decide(tg, {"cpu": Reading(10.0)}, 8, NOW, recs, history_since=NOW - 100).desired == 6
    # recommendations not yet spanning the window (e.g. just restarted): no scale-in
    d = decide(tg, {"cpu": Reading(10.0)}, 8, NOW, recs, history_since=NOW - 30)
    assert d.desired is None and "stabilizing" in d.reasons[-1]
    # older than the window: forgotten
    assert decide(tg, {"cpu": Reading(10.0)}, 8, NOW, [(NOW - 61, 8)], history_since=NOW - 100).desired == 2


def test_step_scaling_adjustment_types():
    def step(kind: str, adj: int, **kw) -> StepScalingPolicy:
        return StepScalingPolicy(policyName="s", predefinedMetricType=CPU, threshold=70.0, adjustmentType=kind,  # type: ignore[arg-type]
                                 cooldown=0, stepAdjustments=[
                                     {"metricIntervalLowerBound": 0, "metricIntervalUpperBound": 20, "scalingAdjustment": adj},
                                     {"metricIntervalLowerBound": 20, "scalingAdjustment": adj * 2}], **kw)

    def one(p: StepScalingPolicy, value: float, current: int):
        return decide(target(hi=50, policies=[], steps=[p]), {"s": Reading(value)}, current, NOW,
                      history_since=0.0).desired

    assert one(step("ChangeInCapacity", 1), 75.0, 4) == 5
    assert one(step("ChangeInCapacity", 1), 95.0, 4) == 6
    assert one(step("ChangeInCapacity", 1), 60.0, 4) is None  # below threshold: no step
    assert one(step("PercentChangeInCapacity", 50), 75.0, 4) == 6
    assert one(step("PercentChangeInCapacity", 10), 75.0, 4) == 5  # truncated 0.4, at least 1
    assert one(step("PercentChangeInCapacity", 10, minAdjustmentMagnitude=3), 75.0, 4) == 7
    assert one(step("ExactCapacity", 9), 75.0, 4) == 9


def test_step_scale_in_policy_and_its_cooldown():
    p = StepScalingPolicy(policyName="in", predefinedMetricType=CPU, threshold=20.0, cooldown=100,
                          stepAdjustments=[{"metricIntervalUpperBound": 0, "scalingAdjustment": -1}])
    tg = target(policies=[], steps=[p])
    assert decide(tg, {"in": Reading(5.0)}, 4, NOW, history_since=0.0).desired == 3
    tg = target(policies=[], steps=[p], policyLastAt={"in": NOW - 50})
    assert decide(tg, {"in": Reading(5.0)}, 4, NOW, history_since=0.0).desired is None


def test_average_leaves_out_tasks_not_ready_and_counts_unsampled_ones():
    r = average_reading({"a": 80.0, "b": 40.0, "starting": 500.0}, ["a", "b"])
    assert r.value == 60.0 and r.missing == 0
    r = average_reading({"a": 80.0}, ["a", "b"])  # b: no sample yet, counted as 0 (the HPA's scale-out rule)
    assert r.value == 40.0 and r.missing == 1
    assert average_reading({}, ["a"]).value is None
    r = average_reading({"a": 90.0, "b": 30.0, "new": 500.0}, ["a", "b"], starting=1)
    assert (r.value, r.missing) == (40.0, 1)  # the starting one's sample set aside, counted as 0


def test_spec_validation():
    with pytest.raises(ValidationError, match="at least minCapacity"):
        ScalingSpec(serviceName="web", minCapacity=5, maxCapacity=2)
    with pytest.raises(ValidationError, match="exactly one"):
        TargetTrackingPolicy(policyName="x", targetValue=5)
    with pytest.raises(ValidationError, match="Extra inputs"):
        ScalingSpec(serviceName="web", minCapacity=1, maxCapacity=2, targetValu=3)
    with pytest.raises(ValidationError, match="time zone"):
        ScheduledAction(scheduledActionName="a", schedule="at(2026-01-01T00:00:00)", timezone="Mars/Olympus",
                        scalableTargetAction={"minCapacity": 1})
    with pytest.raises(ValidationError, match="schedule must be"):
        ScheduledAction(scheduledActionName="a", schedule="every day", scalableTargetAction={"minCapacity": 1})


# ---- scheduled actions ------------------------------------------------------------------------
def test_schedules_at_and_cron_with_time_zone():
    assert parse_schedule("cron(0 9 ? * MON-FRI *)").cron == "0 9 * * MON-FRI"
    with pytest.raises(ValueError):
        parse_schedule("cron(0 9 * * * 2027)")
    paris = ZoneInfo("Europe/Paris")
    at = datetime(2027, 1, 4, 9, 0, tzinfo=paris).timestamp()  # a Monday
    a = ScheduledAction(scheduledActionName="morning", schedule="cron(0 9 ? * MON-FRI *)", timezone="Europe/Paris",
                        scalableTargetAction={"minCapacity": 4})
    assert last_fire(a, at - 60, at + 60) == at
    assert last_fire(a, at + 1, at + 3600) is None
    b = ScheduledAction(scheduledActionName="once", schedule="at(2027-01-04T09:00:00)", timezone="Europe/Paris",
                        scalableTargetAction={"minCapacity": 4})
    assert last_fire(b, at - 1, at) == at and last_fire(b, at, at + 10) is None


def test_scheduled_bounds_apply_in_order_and_keep_min_below_max():
    acts = [ScheduledAction(scheduledActionName="up", schedule="at(2027-01-01T10:00:00)",
                            scalableTargetAction={"minCapacity": 8}),
            ScheduledAction(scheduledActionName="cap", schedule="at(2027-01-01T11:00:00)",
                            scalableTargetAction={"maxCapacity": 5})]
    t10 = datetime(2027, 1, 1, 10, tzinfo=ZoneInfo("UTC")).timestamp()
    tg = target(lo=1, hi=6, actions=acts, scheduledCheckedAt=t10 - 1)
    b = scheduled_bounds(tg, t10 + 1)
    assert (b.min_capacity, b.max_capacity, [n for n, _ in b.fired]) == (8, 8, ["up"])
    b = scheduled_bounds(tg, t10 + 3601)
    assert (b.min_capacity, b.max_capacity, [n for n, _ in b.fired]) == (5, 5, ["up", "cap"])


# ---- properties -------------------------------------------------------------------------------
bounds = st.tuples(st.integers(0, 20), st.integers(0, 20)).map(sorted)
values = st.one_of(st.none(), st.floats(0, 1000, allow_nan=False))


@given(bounds, st.integers(0, 40), values, st.integers(0, 3), st.floats(1, 200))
def test_property_result_always_within_bounds(b, current, value, missing, goal):
    lo, hi = b
    d = run(target(lo, hi, policies=[tt(target=goal)]), value, current, missing)
    after = current if d.desired is None else d.desired
    if lo <= current <= hi:
        assert lo <= after <= hi
    else:
        assert after == max(lo, min(hi, current))


@given(st.integers(1, 20), st.floats(0, 1000, allow_nan=False), st.integers(1, 5))
def test_property_missing_data_never_scales_in(current, value, missing):
    for v in (value, None):
        d = run(target(0, 40), v, current, missing)
        assert d.desired is None or d.desired >= current


@given(st.integers(1, 20), st.floats(-0.1, 0.1))
def test_property_within_tolerance_nothing_changes(current, noise):
    d = run(target(0, 40), 50.0 * (1 + noise), current)
    assert d.desired is None


@given(st.lists(st.tuples(st.floats(0, 400), st.floats(0, 400)), min_size=1, max_size=4), st.integers(1, 10))
def test_property_multi_policy_out_if_any_in_only_if_all(pairs, current):
    pols = [tt(f"p{i}", target=50.0) for i in range(len(pairs))]
    readings = {f"p{i}": Reading(v) for i, (v, _) in enumerate(pairs)}
    d = decide(target(0, 100, policies=pols), readings, current, NOW, history_since=0.0)
    singles = [decide(target(0, 100, policies=[p]), {p.policyName: readings[p.policyName]}, current, NOW,
                      history_since=0.0) for p in pols]
    if any(s.direction == "out" for s in singles):
        assert d.direction == "out" and d.desired == max(s.desired or 0 for s in singles)
    elif all(s.direction == "in" for s in singles):
        assert d.direction == "in" and d.desired == max(s.desired or 0 for s in singles)
    else:
        assert d.desired is None


@settings(max_examples=60, deadline=None)
@given(st.floats(20, 300), st.lists(st.floats(-0.045, 0.045), min_size=60, max_size=60), st.integers(1, 4))
def test_property_no_flapping_under_noise(load, noise, start):
    """A fixed total load (in % of one task) split across the tasks, measured with noise, sampled every
    15 s: the count settles, a scale-in never follows a scale-out within the cooldown, and it never
    goes back and forth more than once.

    The noise bound is the rule's own: a count chosen on a reading low by d runs at up to
    target / (1 - d) per task, which a reading high by d keeps within the 10 % tolerance only while
    (1 + d) / (1 - d) <= 1.1, i.e. d <= 4.76 %. With +-8 % (the bound before) Hypothesis found load
    154 %, one task: out to 4, a 75 s run of -6.25 % readings scales in to 3 (51.3 % each), then
    +7.8 % reads 55.4 % and scales out again, as the HPA's formula would."""
    tg = target(1, 20, policies=[tt(target=50.0, out_cd=60, in_cd=120)], window=60)
    n, now, recs, dirs = start, NOW, [], []
    for eps in noise:
        d = decide(tg, {"cpu": Reading(load / n * (1 + eps))}, n, now, recs, history_since=NOW - 1000)
        if d.recommendation is not None:
            recs = [(t, r) for t, r in recs if now - t <= 60] + [(now, d.recommendation)]
        if d.desired is not None:
            if d.direction == "in" and tg.lastScaleOutAt is not None:
                assert now - tg.lastScaleOutAt >= 120
            tg = tg.model_copy(update={"lastScaleOutAt" if d.direction == "out" else "lastScaleInAt": now})
            dirs.append(d.direction)
            n = d.desired
        now += 15
    changes = sum(1 for a, b in zip(dirs, dirs[1:], strict=False) if a != b)
    assert changes <= 1
    ideal = math.ceil(load / 50.0 / 1.1)  # the settled count brings the average near the target
    assert abs(load / n - 50.0) <= 50.0 * 0.2 or n in (1, 20) or abs(n - ideal) <= 1
