"""The auto-scaling shell: every ``interval`` seconds, for each service with a scalable target,
run the due scheduled actions, gather each policy's metric, call the pure decision
(orchestrator.core.autoscaling) and apply a new desiredCount through the same operation as
``dockyard scale`` (Ops.scale: deployments, placement and load-balancer draining all apply).

Metrics come from what the control plane already has:

* ECSServiceAverageCPUUtilization / ECSServiceAverageMemoryUtilization: the average, over the
  service's ready tasks, of ECS's CPUUtilization / MemoryUtilization computed from the agents'
  status snapshots (orchestrator.usage, as ``dockyard top`` shows them). Ready = RUNNING, healthy
  and proven (healthy for the deployment's ``minimumHealthyTimeSeconds``): the samples of tasks
  still starting are set aside, as the HPA does; they and ready tasks without a fresh sample
  count as 0 toward a scale-out and veto a scale-in (core.autoscaling.average_reading).
* ALBRequestCountPerTarget: requests per target per minute, from the request counters the
  load-balancer nodes report (HAProxy's ``show stat``), over the last window.
* a customized metric: a PromQL instant query against the given Prometheus (httpx).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from dockyard import log as dlog
from orchestrator import autoscale_ops, metrics
from orchestrator.autoscaling_models import CustomizedMetric, MetricValue, ScalableTarget
from orchestrator.core import autoscaling as core
from orchestrator.lb_requests import RequestBook
from orchestrator.models import Service, Task
from orchestrator.ops import Ops, UserError
from orchestrator.usage import UsageBook

DEFAULT_INTERVAL = 5.0  # seconds between evaluations (the agents sample every status interval, 2 s)
REQUEST_WINDOW = 60.0  # seconds of request counts ALBRequestCountPerTarget is computed over
Query = Callable[[CustomizedMetric], Awaitable[float | None]]


async def prometheus_query(m: CustomizedMetric, timeout: float = 3.0) -> float | None:
    """The value of a PromQL instant query: a scalar, or a vector of exactly one series; None on
    any failure (no data never scales in)."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as c:
            r = await c.get(m.prometheusUrl.rstrip("/") + "/api/v1/query", params={"query": m.query})
            r.raise_for_status()
            data = r.json()["data"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    result = data.get("result")
    if data.get("resultType") == "scalar" and isinstance(result, list):
        return float(result[1])
    if data.get("resultType") == "vector" and isinstance(result, list) and len(result) == 1:
        return float(result[0]["value"][1])
    return None


class Autoscaler:
    def __init__(self, ops: Ops, usage: UsageBook, interval: float = DEFAULT_INTERVAL,
                 query: Query = prometheus_query, requests: RequestBook | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.ops, self.state, self.usage, self.interval = ops, ops.state, usage, interval
        self.wall = wall  # the clock the usage book's samples carry (the bus's)
        self.query = query
        self.requests = requests  # LB nodes' request counters (None: ALBRequestCountPerTarget has no data)
        self.log = dlog.get("autoscaler")
        self._recs: dict[tuple[str, str], list[tuple[float, int]]] = {}
        self._since: dict[tuple[str, str], float] = {}  # when the recommendations began to be kept

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
                return
            except TimeoutError:
                pass
            try:
                await self.evaluate(self.ops.ctl.clock())
            except Exception:  # one bad pass never stops auto scaling
                self.log.exception("auto-scaling pass failed")

    async def evaluate(self, now: float) -> dict[tuple[str, str], core.Decision]:
        """One pass over every scalable target; the decisions, by (cluster, service)."""
        out = {}
        for key in sorted(self.state.scalable_targets):
            t = self.state.scalable_targets.get(key)
            s = self.state.services.get(key)
            if t is None or s is None or s.status != "ACTIVE" or s.spec.schedulingStrategy != "REPLICA":
                continue
            self._scheduled(t, now)
            readings = await self.readings(t, s, now)
            t.lastMetrics = {name: MetricValue(value=r.value, at=now, detail=r.detail) for name, r in readings.items()}
            since = self._since.setdefault(key, now)
            deploying = any(dep.rolloutState == "IN_PROGRESS" for dep in s.deployments if dep.status != "INACTIVE")
            d = core.decide(t, readings, s.spec.desiredCount, now, self._recs.get(key, []), since, deploying)
            if d.recommendation is not None:
                window = t.spec.scaleInStabilizationSeconds
                self._recs[key] = [(at, n) for at, n in self._recs.get(key, []) if now - at <= window] \
                    + [(now, d.recommendation)]
            if d.desired is not None:
                self._apply(t, s, d, now)
            out[key] = d
        return out

    def _scheduled(self, t: ScalableTarget, now: float) -> None:
        b = core.scheduled_bounds(t, now)
        t.scheduledCheckedAt = now  # kept in memory; written with the target's next change
        if not b.fired:
            return
        t.minCapacity, t.maxCapacity = b.min_capacity, b.max_capacity
        for name, _ in b.fired:
            autoscale_ops.add_activity(
                t, f"Setting min capacity to {b.min_capacity} and max capacity to {b.max_capacity}",
                f"scheduled action name {name} was triggered", now,
                f"Successfully set min capacity to {b.min_capacity} and max capacity to {b.max_capacity}")
        self.state.put_scalable_target(t)
        self.ops._commit()

    def _apply(self, t: ScalableTarget, s: Service, d: core.Decision, now: float) -> None:
        count = d.desired
        assert count is not None
        description = f"Setting desired count to {count}."
        try:
            self.ops.scale(t.cluster, s.serviceName, count,
                           event=f"(service {s.serviceName}) {autoscale_ops.fulfilled(count)} Cause: {d.cause}.")
        except UserError as exc:
            autoscale_ops.add_activity(t, description, d.cause, now, f"Failed to set desired count to {count}: "
                                                                      f"{exc.message}", failed=True)
            self.state.put_scalable_target(t)
            self.ops._commit()
            return
        if d.direction == "out":
            t.lastScaleOutAt = now
        else:
            t.lastScaleInAt = now
        for name in d.policies:
            t.policyLastAt[name] = now
        autoscale_ops.add_activity(t, description, d.cause, now, autoscale_ops.fulfilled(count))
        self.state.put_scalable_target(t)
        self.ops._commit()
        metrics.AUTOSCALING_ACTIVITIES.labels(direction=d.direction or "bounds").inc()
        self.log.info("scaled", cluster=t.cluster, service=s.serviceName, desired=count, cause=d.cause)

    # ---- metrics ---------------------------------------------------------------------------
    def ready_tasks(self, s: Service, now: float) -> list[Task]:
        proof = s.spec.deploymentConfiguration.minimumHealthyTimeSeconds
        return [t for t in self.state.service_active_tasks(s.cluster, s.serviceName)
                if t.lastStatus == "RUNNING" and t.healthySince is not None and now - t.healthySince >= proof]

    async def readings(self, t: ScalableTarget, s: Service, now: float) -> dict[str, core.Reading]:
        ready = self.ready_tasks(s, now)
        starting = max(0, len(self.state.service_active_tasks(s.cluster, s.serviceName)) - len(ready))
        wall = self.wall()
        per_task: dict[str, tuple[float, float]] = {}
        for task in ready:
            u = self.usage.task(task, self.state.nodes.get((s.cluster, task.nodeId or "")), wall)
            if u is not None:
                per_task[task.taskId] = (u.cpu_percent, u.memory_percent)
        ids = [task.taskId for task in ready]
        out: dict[str, core.Reading] = {}
        for p in [*t.spec.targetTrackingScalingPolicies, *t.spec.stepScalingPolicies]:
            if p.customizedMetric is not None:
                v = await self.query(p.customizedMetric)
                out[p.policyName] = core.Reading(v, 0, "prometheus" if v is not None else "query failed or no series")
            elif p.predefinedMetricType == "ECSServiceAverageCPUUtilization":
                out[p.policyName] = core.average_reading({k: v[0] for k, v in per_task.items()}, ids, starting)
            elif p.predefinedMetricType == "ECSServiceAverageMemoryUtilization":
                out[p.policyName] = core.average_reading({k: v[1] for k, v in per_task.items()}, ids, starting)
            elif self.requests is not None:
                out[p.policyName] = self.requests.per_target(s, p.resourceLabel, ids, wall, starting)
            else:
                out[p.policyName] = core.Reading(None, len(ids) + starting, "no load-balancer request counts")
        return out
