"""The auto-scaling shell (orchestrator.autoscaler) on the simulated controller: metrics from the
usage book, scaling through Ops.scale, who owns desiredCount, the API, the CLI and describe."""
from __future__ import annotations

import asyncio

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from test_controller_sim import CLUSTER, Sim, running_everywhere, service, taskdef

from dockyard.cli import cli
from dockyard.wire import TaskUsage
from orchestrator.api import create_app
from orchestrator.autoscaler import Autoscaler
from orchestrator.client.session import Session
from orchestrator.ops import UserError
from orchestrator.usage import UsageBook


def policy(lo: int = 1, hi: int = 6, target: float = 50.0, **spec) -> dict:
    spec.setdefault("scaleInStabilizationSeconds", 0)
    return {"apiVersion": "dockyard/v1", "kind": "ScalingPolicy", "metadata": {"name": "web"},
            "spec": {"minCapacity": lo, "maxCapacity": hi, "targetTrackingScalingPolicies": [
                {"policyName": "cpu", "predefinedMetricType": "ECSServiceAverageCPUUtilization", "targetValue": target,
                 "scaleOutCooldown": 0, "scaleInCooldown": 30}], **spec}}


class World:
    def __init__(self, monkeypatch) -> None:
        self.sim = Sim(monkeypatch)
        for n in ("n1", "n2", "n3"):
            self.sim.node_online(n)
        self.book = UsageBook()
        self.scaler = Autoscaler(self.sim.ops, self.book, wall=self.sim.clock)

    def load(self, total_percent: float, skip: int = 0) -> None:
        """A fixed total CPU load (percent of one vCPU) split evenly across the RUNNING tasks; the last
        ``skip`` tasks send no sample."""
        tasks = sorted((t for t in self.sim.tasks() if t.lastStatus == "RUNNING"), key=lambda t: t.taskId)
        each = total_percent / max(1, len(tasks)) * 1024 / 100
        by_node: dict[str, list[TaskUsage]] = {n.nodeId: [] for n in self.sim.state.nodes.values()}
        for t in tasks[:len(tasks) - skip]:
            by_node[t.nodeId or ""].append(TaskUsage(taskId=t.taskId, cpu=each, memory=1 << 20))
        for node, usage in by_node.items():
            self.book.record(CLUSTER, node, usage, self.sim.clock.t)

    def step(self, dt: float = 5.0):
        self.sim.clock.advance(dt)
        decisions = asyncio.run(self.scaler.evaluate(self.sim.clock.t))
        running_everywhere(self.sim)
        return decisions.get((CLUSTER, "web"))

    def desired(self) -> int:
        return self.sim.service().spec.desiredCount


@pytest.fixture
def w(monkeypatch) -> World:
    w = World(monkeypatch)
    w.sim.apply(taskdef(), service(desired=2), policy())
    running_everywhere(w.sim)
    return w


def test_scales_out_toward_the_target_then_in_after_the_cooldown(w):
    w.load(180.0)  # 90 % each on 2 tasks -> ceil(2 x 90 / 50) = 4
    d = w.step()
    assert d.desired == 4 and w.desired() == 4
    assert len([t for t in w.sim.tasks() if t.lastStatus == "RUNNING"]) == 4  # placed through the controller
    t = w.sim.state.scalable_targets[(CLUSTER, "web")]
    assert t.activities[0].statusMessage == "Successfully set desired count to 4. Change successfully fulfilled by ecs."
    assert "ECSServiceAverageCPUUtilization 90.0 above target 50 triggered policy cpu" in t.activities[0].cause
    assert any("Successfully set desired count to 4. Change successfully fulfilled by ecs. Cause: " in e.message
               for e in w.sim.service().events)
    w.load(180.0)  # 45 % each: within tolerance
    assert w.step().desired is None
    w.load(20.0)  # 5 % each: in, but only after scaleInCooldown (30 s) since the scale-out
    assert w.step().desired is None
    for _ in range(6):
        w.load(20.0)
        w.step()
    assert w.desired() == 1  # minCapacity
    assert t.activities[0].statusMessage.startswith("Successfully set desired count to 1.")


def test_never_above_max_and_no_scale_in_on_missing_samples(w):
    w.load(5000.0)
    w.step()
    assert w.desired() == 6
    w.load(10.0, skip=1)  # one ready task without a sample
    for _ in range(10):
        w.step()
    assert w.desired() == 6
    w.load(10.0, skip=1)
    assert "unsampled" in " ".join(w.step().reasons)


def test_tasks_not_yet_proven_are_left_out_of_the_average(monkeypatch):
    w = World(monkeypatch)
    svc = service(desired=2, deploymentConfiguration={"minimumHealthyTimeSeconds": 60, "bakeTimeSeconds": 0})
    w.sim.apply(taskdef(), svc, policy())
    running_everywhere(w.sim)
    w.load(400.0)
    d = w.step()
    assert d.desired is None and "no data" in d.reasons[0]


def test_reapplying_the_manifest_keeps_the_scaled_count_and_scale_is_clamped(w):
    w.load(180.0)
    w.step()
    assert w.desired() == 4
    res = w.sim.apply(taskdef(), service(desired=2), policy())
    assert [r["action"] for r in res] == ["unchanged", "unchanged", "unchanged"]
    assert w.desired() == 4
    w.sim.ops.scale(CLUSTER, "web", 50)
    assert w.desired() == 6 and "clamped from 50" in w.sim.service().events[0].message
    w.sim.ops.scale(CLUSTER, "web", 0)
    assert w.desired() == 1
    # bounds changed by a new apply: the next pass brings the count inside
    w.sim.apply(policy(lo=3, hi=5))
    w.step()
    assert w.desired() == 3


def test_a_scheduled_action_raises_min(w):
    at = w.sim.clock.t + 60
    from datetime import UTC, datetime
    when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    w.sim.apply(policy(scheduledActions=[{"scheduledActionName": "rush", "schedule": f"at({when})",
                                           "scalableTargetAction": {"minCapacity": 5}}]))
    w.load(100.0)  # on target
    w.step()
    assert w.desired() == 2
    for _ in range(13):
        w.load(100.0)
        w.step()
    t = w.sim.state.scalable_targets[(CLUSTER, "web")]
    assert (t.minCapacity, w.desired()) == (5, 5)
    assert any(a.cause == "scheduled action name rush was triggered" for a in t.activities)


def test_errors_in_the_manifest_have_field_paths(w):
    bad = policy()
    bad["spec"]["targetTrackingScalingPolicies"][0]["targetValu"] = 3
    with pytest.raises(UserError) as e:
        w.sim.apply(bad)
    assert e.value.errors[0].field == "spec.targetTrackingScalingPolicies[0].targetValu"
    orphan = policy()
    orphan["metadata"]["name"] = "nope"
    with pytest.raises(UserError) as e:
        w.sim.apply(orphan)
    assert "does not exist" in e.value.errors[0].message


def test_deleting_the_service_or_the_policy_removes_the_target(w):
    w.sim.ops.delete_documents([{"document": policy()}], CLUSTER)
    assert (CLUSTER, "web") not in w.sim.state.scalable_targets
    assert w.desired() == 2


def test_cli_autoscale_and_describe_through_the_api(w):
    w.load(180.0)
    w.step()
    transport: httpx.BaseTransport = TestClient(create_app(w.sim.ops))._transport

    def run(*args: str):
        return CliRunner().invoke(cli, ["--server", "http://testserver", *args], obj=Session(transport=transport))

    r = run("autoscale", "web", "--max", "8", "--memory", "70", "--scale-in-cooldown", "60")
    assert r.exit_code == 0, r.output
    assert "auto scaling configured: min 1, max 8, tracking cpu 50.0, memory 70.0" in r.output
    r = run("describe", "service", "web")
    assert r.exit_code == 0, r.output
    for text in ("Auto scaling:", "min 1, max 8", "ECSServiceAverageCPUUtilization", "90 (2 of 2 ready tasks sampled)",
                 "Successfully set desired count to 4. Change successfully fulfilled by ecs."):
        assert text in r.output, r.output
    r = run("autoscale", "web", "--min", "9")
    assert r.exit_code == 1 and "maxCapacity: must be at least minCapacity" in r.output
    r = run("autoscale", "web", "--off")
    assert r.exit_code == 0 and (CLUSTER, "web") not in w.sim.state.scalable_targets
    r = run("autoscale", "web", "--cpu", "50")
    assert r.exit_code == 1 and "needs --min and --max" in r.output


def test_a_customized_prometheus_metric_scales_and_a_failed_query_never_scales_in(w):
    asked = []

    async def query(m):
        asked.append(m.query)
        return values.pop(0)

    values: list[float | None] = [30.0, None]
    w.scaler.query = query
    w.sim.apply(policy(targetTrackingScalingPolicies=[{
        "policyName": "queue", "targetValue": 10, "scaleOutCooldown": 0, "scaleInCooldown": 0,
        "customizedMetric": {"prometheusUrl": "http://prom:9090", "query": "sum(queue_depth) / count(up)"}}]))
    assert w.step().desired == 6  # ceil(2 x 30 / 10)
    d = w.step()
    assert d.desired is None and "query failed" in d.reasons[0] and w.desired() == 6
    assert asked == ["sum(queue_depth) / count(up)"] * 2


def test_the_example_manifest_applies(monkeypatch):
    from pathlib import Path

    import yaml

    sim = Sim(monkeypatch)
    docs = list(yaml.safe_load_all((Path(__file__).parents[2] / "manifests/examples/autoscaling.yaml").read_text()))
    assert [r["action"] for r in sim.apply(*docs)] == ["registered", "created", "created"]
    t = sim.state.scalable_targets[(CLUSTER, "api")]
    assert (t.minCapacity, t.maxCapacity, len(t.spec.scheduledActions)) == (2, 10, 2)


def test_ecs_update_service_desired_count_is_clamped_and_a_plain_update_keeps_the_count(w):
    import json

    from orchestrator.ecs_api import TARGET_PREFIX

    api = TestClient(create_app(w.sim.ops))

    def update(**body):
        r = api.post("/", content=json.dumps({"cluster": CLUSTER, "service": "web", **body}),
                     headers={"X-Amz-Target": TARGET_PREFIX + "UpdateService",
                              "Content-Type": "application/x-amz-json-1.1"})
        assert r.status_code == 200, r.text
        return r.json()["service"]["desiredCount"]

    w.load(180.0)
    w.step()
    assert w.desired() == 4
    assert update(desiredCount=50) == 6
    assert update(healthCheckGracePeriodSeconds=5) == 6
