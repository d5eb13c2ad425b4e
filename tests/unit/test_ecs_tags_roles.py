"""The ECS API's task tags (RunTask tags, propagateTags, ECS managed tags, TagResource on tasks),
DescribeClusters statistics and the roles of access keys, in-process (no I/O but the app's own)."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from orchestrator.api import create_app
from orchestrator.controller import Controller
from orchestrator.core.auth import ecs_allows
from orchestrator.ecs_api import TARGET_PREFIX
from orchestrator.ops import Ops
from orchestrator.state import State

TD = {"family": "web", "containerDefinitions": [{"name": "web", "image": "busybox", "memory": 64, "essential": True,
                                                  "command": ["sleep", "1000"]}],
      "tags": [{"key": "team", "value": "td"}, {"key": "tier", "value": "td"}]}


@pytest.fixture()
def ecs():
    state = State()

    async def publish(_doc):  # noqa: ANN001
        return None
    ops = Ops(state, Controller(state, epoch=1, publish=publish))
    client = TestClient(create_app(ops))

    def call(op: str, body: dict | None = None, status: int = 200) -> dict:
        r = client.post("/", content=json.dumps(body or {}), headers={"X-Amz-Target": TARGET_PREFIX + op,
                                                                       "Content-Type": "application/x-amz-json-1.1"})
        assert r.status_code == status, r.text
        return r.json()
    call.ops = ops  # type: ignore[attr-defined]
    call("CreateCluster", {"clusterName": "default"})
    call("RegisterTaskDefinition", TD)
    return call


def tags(items: list[dict]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in items}


def test_run_task_tags_propagated_from_the_task_definition_and_managed_given_ones_win(ecs):
    out = ecs("RunTask", {"taskDefinition": "web", "count": 2, "tags": [{"key": "tier", "value": "mine"}],
                          "propagateTags": "TASK_DEFINITION", "enableECSManagedTags": True})
    assert len(out["tasks"]) == 2
    want = {"team": "td", "tier": "mine", "aws:ecs:clusterName": "default"}
    assert all(tags(t["tags"]) == want for t in out["tasks"])
    arn = out["tasks"][0]["taskArn"]
    assert tags(ecs("ListTagsForResource", {"resourceArn": arn})["tags"]) == want
    # DescribeTasks shows tags only when asked, as ECS does.
    assert ecs("DescribeTasks", {"tasks": [arn]})["tasks"][0]["tags"] == []
    assert tags(ecs("DescribeTasks", {"tasks": [arn], "include": ["TAGS"]})["tasks"][0]["tags"]) == want


def test_run_task_without_propagation_has_only_its_own_tags_and_service_propagation_is_refused(ecs):
    out = ecs("RunTask", {"taskDefinition": "web"})
    assert out["tasks"][0]["tags"] == []
    err = ecs("RunTask", {"taskDefinition": "web", "propagateTags": "SERVICE"}, status=400)
    assert err["__type"] == "InvalidParameterException" and "SERVICE" in err["message"]
    err = ecs("RunTask", {"taskDefinition": "web", "tags": [{"key": f"k{i}", "value": "v"} for i in range(51)]},
              status=400)
    assert "50 tags" in err["message"]


def test_tag_and_untag_a_task(ecs):
    arn = ecs("RunTask", {"taskDefinition": "web"})["tasks"][0]["taskArn"]
    ecs("TagResource", {"resourceArn": arn, "tags": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]})
    ecs("UntagResource", {"resourceArn": arn, "tagKeys": ["a"]})
    assert tags(ecs("ListTagsForResource", {"resourceArn": arn})["tags"]) == {"b": "2"}
    wrong_cluster = arn.replace("task/default/", "task/other/")
    assert ecs("ListTagsForResource", {"resourceArn": wrong_cluster}, status=400)["__type"] == "InvalidParameterException"


def test_a_service_propagates_its_tags_to_its_tasks_and_keeps_network_configuration(ecs):
    net = {"awsvpcConfiguration": {"subnets": ["subnet-1"], "assignPublicIp": "DISABLED"}}
    svc = ecs("CreateService", {"serviceName": "api", "taskDefinition": "web", "desiredCount": 2,
                                "tags": [{"key": "owner", "value": "svc"}], "propagateTags": "SERVICE",
                                "enableECSManagedTags": True, "networkConfiguration": net})["service"]
    assert svc["propagateTags"] == "SERVICE" and svc["enableECSManagedTags"] is True
    assert svc["networkConfiguration"] == net
    ctl = ecs.ops.ctl
    ctl.reconcile(ctl.clock())
    tasks = [t for t in ecs.ops.state.tasks.values() if t.serviceName == "api"]
    assert len(tasks) == 2, "the planner made the service's tasks"
    assert all(t.tags == {"owner": "svc", "aws:ecs:clusterName": "default", "aws:ecs:serviceName": "api"}
               for t in tasks)
    described = ecs("DescribeServices", {"services": ["api"]})["services"][0]
    assert described["networkConfiguration"] == net


def test_describe_clusters_statistics_by_launch_type_only_when_asked(ecs):
    ecs("RunTask", {"taskDefinition": "web", "count": 3})
    ecs("CreateService", {"serviceName": "api", "taskDefinition": "web", "desiredCount": 0})
    plain = ecs("DescribeClusters", {"clusters": ["default"]})["clusters"][0]
    assert plain["statistics"] == []
    stats = {s["name"]: s["value"] for s in
             ecs("DescribeClusters", {"clusters": ["default"], "include": ["STATISTICS"]})["clusters"][0]["statistics"]}
    assert stats["pendingEC2TasksCount"] == "3" and stats["runningEC2TasksCount"] == "0"
    assert stats["activeEC2ServiceCount"] == "1" and stats["activeFargateServiceCount"] == "0"
    assert set(stats) >= {"runningFargateTasksCount", "pendingFargateTasksCount", "drainingEC2ServiceCount",
                          "drainingFargateServiceCount"}


def test_read_only_keys_may_describe_and_list_only():
    assert ecs_allows("read-only", "DescribeServices") and ecs_allows("read-only", "ListTagsForResource")
    assert not ecs_allows("read-only", "CreateService") and not ecs_allows("read-only", "TagResource")
    assert not ecs_allows("read-only", "RunTask") and ecs_allows("admin", "DeleteCluster")


def test_access_keys_carry_a_role_and_keys_from_before_roles_are_admins(ecs):
    ops = ecs.ops
    ro = ops.create_access_key("read-only")
    admin = ops.create_access_key()
    assert ops.access_key(ro["accessKeyId"]) == (ro["secretAccessKey"], "read-only")
    assert ops.access_key(admin["accessKeyId"]) == (admin["secretAccessKey"], "admin")
    listed = {k["accessKeyId"]: k["role"] for k in ops.access_keys()}
    assert listed == {ro["accessKeyId"]: "read-only", admin["accessKeyId"]: "admin"}
    ops.ctl.secrets.put("accesskey!AKDYLEGACY", "bare-secret", 0.0)  # stored as a bare secret before roles existed
    assert ops.access_key("AKDYLEGACY") == ("bare-secret", "admin")
    assert ops.access_key_secret(ro["accessKeyId"]) == ro["secretAccessKey"]


def test_an_awsvpc_task_shows_its_address_as_an_eni_attachment():
    from orchestrator.ecs_api.shapes import Arns, task_shape
    from orchestrator.models import Task

    t = Task(cluster="default", taskDefinition="web:1", family="web", revision=1, group="family:web",
             lastStatus="RUNNING", ipAddress="172.30.0.2", containers=[{"name": "web"}])
    shape = task_shape(t, Arns())
    (eni,) = shape["attachments"]
    assert eni["type"] == "ElasticNetworkInterface" and eni["status"] == "ATTACHED"
    assert {"name": "privateIPv4Address", "value": "172.30.0.2"} in eni["details"]
    assert shape["containers"][0]["networkInterfaces"] == [{"attachmentId": eni["id"], "privateIpv4Address": "172.30.0.2"}]
    bridge = task_shape(t.model_copy(update={"ipAddress": None}), Arns())
    assert bridge["attachments"] == [] and "networkInterfaces" not in bridge["containers"][0]


def test_tags_in_manifest_documents_are_kept_as_the_records_tags_and_propagate(ecs):
    ops = ecs.ops
    td = {**TD, "family": "fromfile"}
    svc = {"serviceName": "filed", "taskDefinition": "fromfile", "desiredCount": 1, "propagateTags": "TASK_DEFINITION",
           "tags": [{"key": "cost-center", "value": "42"}]}
    results = ops.apply([{"source": "td.json", "document": td}, {"source": "svc.json", "document": svc}], "default")
    assert not any("tags" in str(r.get("warnings")) + str(r["ignoredFields"]) for r in results), results
    assert tags(ecs("DescribeTaskDefinition", {"taskDefinition": "fromfile", "include": ["TAGS"]})["tags"]) == \
        {"team": "td", "tier": "td"}
    assert ops.state.services[("default", "filed")].tags == {"cost-center": "42"}
    ops.ctl.reconcile(ops.ctl.clock())
    (task,) = [t for t in ops.state.tasks.values() if t.serviceName == "filed"]
    assert task.tags == {"team": "td", "tier": "td"}
    ops.apply([{"source": "svc.json", "document": {**svc, "tags": [{"key": "cost-center", "value": "7"}]}}], "default")
    assert ops.state.services[("default", "filed")].tags == {"cost-center": "7"}
