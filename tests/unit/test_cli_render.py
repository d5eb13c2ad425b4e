"""orchestrator.render: tables, ages and describe pages (pure; `now` is fixed)."""
from __future__ import annotations

import json

import pytest
import yaml

from orchestrator import render

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    "seconds,text",
    [(0, "0s"), (-5, "0s"), (59, "59s"), (119, "119s"), (120, "2m"), (200, "3m20s"), (599, "9m59s"),
     (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (3 * 3600 + 120, "3h2m"), (8 * 3600, "8h"),
     (47 * 3600, "47h"), (2 * 86400, "2d"), (3 * 86400 + 4 * 3600, "3d4h"), (10 * 86400, "10d"),
     (800 * 86400, "2y70d")],
)
def test_format_duration_kubectl_style(seconds, text):
    assert render.format_duration(seconds) == text


def test_age_accepts_epoch_and_iso_and_missing():
    assert render.age(NOW - 65, NOW) == "65s"
    assert render.age("2023-11-14T22:11:20Z", NOW) == "2m"  # NOW is 22:13:20Z
    assert render.age(None, NOW) == "<none>"
    assert render.age(0, NOW) == "<none>"


def test_table_aligns_columns_with_no_trailing_space():
    text = render.table(["NAME", "COUNT"], [["a", 1], ["longer-name", None], ["b", True]])
    assert text.splitlines() == [
        "NAME          COUNT",
        "a             1",
        "longer-name   <none>",
        "b             true",
    ]


def test_table_cells_never_break_lines():
    text = render.table(["A", "B"], [["x\ny", "z"]])
    assert text.splitlines()[1] == "x y   z"


def task(**kw):
    base = {
        "taskId": "0123456789abcdef0123", "taskDefinition": "web:3", "serviceName": "web", "nodeId": "n1",
        "lastStatus": "RUNNING", "desiredStatus": "RUNNING", "healthStatus": "HEALTHY", "createdAt": NOW - 30,
        "containers": [{"name": "web", "exitCode": None, "networkBindings": [
            {"containerPort": 80, "hostPort": 32768, "protocol": "tcp", "bindIP": "0.0.0.0"}]}],
    }
    base.update(kw)
    return base


def test_tasks_table_and_wide():
    t2 = task(taskId="fedcba9876543210", serviceName=None, nodeId=None, lastStatus="STOPPED", desiredStatus="STOPPED",
              healthStatus="UNKNOWN", stopCode="EssentialContainerExited", stoppedReason="Essential container in task exited",
              containers=[{"name": "a", "exitCode": 0}, {"name": "b", "exitCode": 137}])
    lines = render.tasks_table([task(), t2], NOW).splitlines()
    assert lines[0].split() == ["TASK", "TASKDEF", "SERVICE", "NODE", "LAST", "DESIRED", "HEALTH", "AGE"]
    assert lines[1].split() == ["0123456789ab", "web:3", "web", "n1", "RUNNING", "RUNNING", "HEALTHY", "30s"]
    assert lines[2].split()[:4] == ["fedcba987654", "web:3", "<none>", "<none>"]
    wide = render.tasks_table([task(), t2], NOW, wide=True).splitlines()
    assert wide[0].split()[-4:] == ["STOPCODE", "REASON", "EXIT", "PORTS"]
    assert wide[1].endswith("32768->80/tcp")
    assert "EssentialContainerExited" in wide[2] and "a=0,b=137" in wide[2]


def test_services_table_uses_primary_deployment():
    svc = {
        "serviceName": "web", "status": "ACTIVE", "spec": {"taskDefinition": "web", "desiredCount": 3},
        "runningCount": 2, "pendingCount": 1, "taskDefinition": "web:4", "createdAt": NOW - 7200,
        "deployments": [
            {"id": "ecs-svc/old", "status": "ACTIVE", "taskDefinition": "web:3", "rolloutState": "COMPLETED"},
            {"id": "ecs-svc/new", "status": "PRIMARY", "taskDefinition": "web:4", "rolloutState": "IN_PROGRESS"},
        ],
    }
    lines = render.services_table([svc], NOW).splitlines()
    assert lines[0].split() == ["NAME", "TASKDEF", "DESIRED", "RUNNING", "PENDING", "ROLLOUT", "AGE", "STATE"]
    assert lines[1].split() == ["web", "web:4", "3", "2", "1", "IN_PROGRESS", "120m", "DEPLOYING"]


def test_nodes_table_remaining_over_registered():
    node = {"nodeId": "host-a", "status": "DRAINING", "connected": False, "resources": {"cpu": 2048, "memory": 4096},
            "remaining": {"cpu": 1024, "memory": 3072}, "runningTasks": 2, "registeredAt": NOW - 90,
            "attributes": {"zone": "a", "disk": "ssd"}, "agentVersion": "0.1.0", "lastSeenAt": NOW - 5}
    lines = render.nodes_table([node], NOW).splitlines()
    assert lines[0].split() == ["NODE", "STATUS", "CONNECTED", "CPU", "MEMORY", "TASKS", "AGE"]
    assert lines[1].split() == ["host-a", "DRAINING", "false", "1024/2048", "3072/4096", "2", "90s"]
    wide = render.nodes_table([node], NOW, wide=True).splitlines()
    assert wide[1].split()[-3:] == ["5s", "0.1.0", "disk=ssd,zone=a"]


def test_taskdefinitions_table_sums_containers_without_task_level_values():
    td = {"family": "web", "revision": 2, "status": "ACTIVE", "registeredAt": NOW - 10, "spec": {
        "family": "web", "containerDefinitions": [
            {"name": "web", "image": "busybox", "cpu": 128, "memory": 64},
            {"name": "log", "image": "busybox", "cpu": 0, "memory": 128, "memoryReservation": 32}]}}
    lines = render.taskdefinitions_table([td], NOW).splitlines()
    assert lines[0].split() == ["FAMILY", "REVISION", "STATUS", "CONTAINERS", "CPU", "MEMORY", "AGE"]
    assert lines[1].split() == ["web", "2", "ACTIVE", "web,log", "128", "96", "10s"]
    td["spec"].update(cpu=512, memory=1024)
    assert render.taskdefinitions_table([td], NOW).splitlines()[1].split()[4:6] == ["512", "1024"]


def test_clusters_table_ecs_counts():
    c = {"clusterName": "default", "status": "ACTIVE", "activeServicesCount": 2, "runningTasksCount": 5,
         "registeredContainerInstancesCount": 3}
    lines = render.clusters_table([c], NOW).splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "SERVICES", "TASKS", "NODES"]
    assert lines[1].split() == ["default", "ACTIVE", "2", "5", "3"]


def test_events_newest_first_with_repeat_count():
    events = [{"createdAt": NOW - 100, "message": "old"}, {"createdAt": NOW - 5, "message": "new", "count": 3}]
    lines = render.events_table(events, NOW).splitlines()
    assert lines == ["AGE    MESSAGE", "5s     new (x3)", "100s   old"]


def service_fixture():
    return {
        "serviceName": "web", "cluster": "default", "status": "ACTIVE", "generation": 2, "observedGeneration": 2,
        "spec": {"taskDefinition": "web", "desiredCount": 2, "launchType": "EC2", "schedulingStrategy": "REPLICA",
                 "deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 50,
                                             "deploymentCircuitBreaker": {"enable": True, "rollback": True}}},
        "runningCount": 2, "pendingCount": 0, "createdAt": NOW - 300,
        "deployments": [{"id": "ecs-svc/abc", "status": "PRIMARY", "taskDefinition": "web:2", "desiredCount": 2,
                         "pendingCount": 0, "runningCount": 2, "failedTasks": 1, "rolloutState": "COMPLETED",
                         "rolloutStateReason": "ECS deployment ecs-svc/abc completed.", "createdAt": NOW - 60}],
        "events": [{"createdAt": NOW - 50, "message": "service web has started 1 tasks"},
                   {"createdAt": NOW - 10, "message": "service web has reached a steady state."}],
    }


def test_describe_service_sections_in_order():
    text = render.describe_service(service_fixture(), [task()], NOW)
    for needle in ("Name:", "minimumHealthyPercent 50", "circuit breaker on with rollback", "Deployments:", "Tasks:", "Events:"):
        assert needle in text
    assert text.index("Deployments:") < text.index("Tasks:") < text.index("Events:")
    dep_header = text.split("Deployments:\n")[1].splitlines()[0].split()
    assert dep_header[:8] == ["ID", "STATUS", "TASKDEF", "DESIRED", "PENDING", "RUNNING", "FAILED", "ROLLOUT"]
    assert "REASON" in dep_header
    events = text.split("Events:\n")[1].splitlines()
    assert "steady state" in events[1] and "started 1 tasks" in events[2]


def test_describe_service_without_deployments_or_events():
    svc = service_fixture()
    svc["deployments"], svc["events"] = [], []
    text = render.describe_service(svc, [], NOW)
    assert "Deployments:\n  <none>" in text and "Events:\n  <none>" in text


def test_describe_task_taskdef_node_cluster_do_not_crash_on_sparse_objects():
    assert "Containers:" in render.describe_task(task(), NOW)
    assert "Containers:\n  <none>" in render.describe_task({"taskId": "x"}, NOW)
    assert "Attributes:" in render.describe_node({"nodeId": "n1"}, None, NOW)
    assert "Task definition:" in render.describe_taskdefinition({"family": "web", "revision": 1}, NOW)
    assert "Cluster:" in render.describe_cluster({"clusterName": "default"}, NOW)


def test_machine_formats_round_trip():
    items = [service_fixture()]
    assert json.loads(render.to_json(items)) == items
    assert yaml.safe_load(render.to_yaml(items)) == items


def test_render_list_empty_is_empty_string():
    assert render.render_list("tasks", [], NOW) == ""


def test_port_mappings_dynamic_host_port():
    assert render.port_mappings([{"containerPort": 80}, {"containerPort": 53, "hostPort": 5353, "protocol": "udp"}]) == "80/tcp,5353->53/udp"
