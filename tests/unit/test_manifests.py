"""Server-side document parsing and validation (orchestrator.manifests): kinds, bare ECS JSON,
field paths in errors, FARGATE rules, spec hashes."""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.ecs import TaskDefinitionSpec, ignored_fields
from orchestrator.manifests import API_VERSION, FARGATE_SIZES, fargate_errors, parse_document
from orchestrator.models import ClusterSpec, RunTaskSpec, ServiceSpec


def parse(doc, cluster: str = "default"):
    return parse_document("web.yaml", doc, cluster)


def ok(doc, cluster: str = "default"):
    d, errs = parse(doc, cluster)
    assert errs == [], [e.as_dict() for e in errs]
    assert d is not None
    return d


def bad(doc) -> list:
    d, errs = parse(doc)
    assert d is None and errs
    assert all(e.source == "web.yaml" for e in errs)
    return errs


def fields(errs) -> list[str]:
    return [e.field for e in errs]


def manifest(kind: str, spec: dict, name: str = "web", **meta) -> dict:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name, **meta}, "spec": spec}


CONTAINER = {"name": "web", "image": "busybox", "memory": 64}


# ---- dockyard/v1 manifests of each kind -----------------------------------------------------------
def test_cluster_manifest():
    d = ok(manifest("Cluster", {}, name="prod"))
    assert d.kind == "Cluster" and d.name == "prod" and isinstance(d.spec, ClusterSpec)
    assert d.spec.clusterName == "prod"


def test_task_definition_manifest_takes_family_from_the_name():
    d = ok(manifest("TaskDefinition", {"containerDefinitions": [CONTAINER]}, labels={"team": "web", "tier": 1}))
    assert d.kind == "TaskDefinition" and isinstance(d.spec, TaskDefinitionSpec)
    assert d.spec.family == "web" and d.spec.containerDefinitions[0].image == "busybox"
    assert d.labels == {"team": "web", "tier": "1"}


def test_service_manifest_with_cluster_in_metadata():
    d = ok(manifest("Service", {"taskDefinition": "web:2", "desiredCount": 3}, cluster="prod"))
    assert d.kind == "Service" and isinstance(d.spec, ServiceSpec)
    assert d.spec.serviceName == "web" and d.spec.desiredCount == 3 and d.cluster == "prod"
    assert d.spec.deploymentConfiguration.maximumPercent == 200
    assert d.spec.deploymentConfiguration.minimumHealthyPercent == 100


def test_service_manifest_defaults_to_the_default_cluster():
    assert ok(manifest("Service", {"taskDefinition": "web"}), cluster="dev").cluster == "dev"


def test_task_manifest():
    d = ok(manifest("Task", {"taskDefinition": "batch:1", "count": 2}, name="nightly"))
    assert d.kind == "Task" and isinstance(d.spec, RunTaskSpec) and d.spec.count == 2 and d.name == "nightly"


def test_service_with_placement_and_deployment_configuration():
    d = ok(manifest("Service", {
        "taskDefinition": "web",
        "placementConstraints": [{"type": "distinctInstance"},
                                 {"type": "memberOf", "expression": "attribute:zone in [a, b]"}],
        "placementStrategy": [{"type": "spread", "field": "attribute:zone"}, {"type": "binpack", "field": "memory"}],
        "deploymentConfiguration": {"maximumPercent": 150, "minimumHealthyPercent": 50,
                                    "deploymentCircuitBreaker": {"enable": True, "rollback": True}},
    }))
    cfg = d.spec.deploymentConfiguration
    assert (cfg.maximumPercent, cfg.minimumHealthyPercent) == (150, 50)
    assert cfg.deploymentCircuitBreaker.enable and cfg.deploymentCircuitBreaker.rollback
    assert [s.type for s in d.spec.placementStrategy] == ["spread", "binpack"]


def test_spread_without_field_means_instance_id():
    d = ok(manifest("Service", {"taskDefinition": "web", "placementStrategy": [{"type": "spread"}]}))
    assert d.spec.placementStrategy[0].field == "instanceId"


def test_daemon_service_may_use_100_100():
    ok(manifest("Service", {"taskDefinition": "web", "schedulingStrategy": "DAEMON",
                            "deploymentConfiguration": {"maximumPercent": 100, "minimumHealthyPercent": 100}}))


# ---- bare ECS JSON ------------------------------------------------------------------------------
ECS_TASK_DEFINITION = json.loads("""
{
  "family": "web-app",
  "taskRoleArn": "arn:aws:iam::123456789012:role/webAppTaskRole",
  "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
  "networkMode": "awsvpc",
  "requiresCompatibilities": ["FARGATE"],
  "cpu": "256",
  "memory": "0.5GB",
  "runtimePlatform": {"operatingSystemFamily": "LINUX", "cpuArchitecture": "X86_64"},
  "containerDefinitions": [
    {
      "name": "web",
      "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1.4.2",
      "essential": true,
      "portMappings": [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp", "appProtocol": "http"}],
      "environment": [{"name": "PORT", "value": "8080"}, {"name": "WORKERS", "value": 4}],
      "secrets": [{"name": "DB_PASSWORD", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/db-pass"}],
      "logConfiguration": {
        "logDriver": "awslogs",
        "options": {"awslogs-group": "/ecs/web", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "web"}
      },
      "healthCheck": {
        "command": ["CMD-SHELL", "wget -q -O- http://localhost:8080/health || exit 1"],
        "interval": 30, "timeout": 5, "retries": 3, "startPeriod": 10
      },
      "ulimits": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
      "stopTimeout": 20
    },
    {
      "name": "log-router",
      "image": "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable",
      "essential": false,
      "firelensConfiguration": {"type": "fluentbit"},
      "memoryReservation": 50
    }
  ],
  "tags": [{"key": "team", "value": "web"}]
}
""")


def test_bare_ecs_task_definition_is_accepted_with_ignored_fields_reported():
    d = ok(copy.deepcopy(ECS_TASK_DEFINITION))
    assert d.kind == "TaskDefinition" and d.name == "web-app" and d.cluster == "default"
    td: TaskDefinitionSpec = d.spec
    assert (td.cpu, td.memory) == (256, 512)  # "256" and "0.5GB"
    assert td.is_fargate and td.networkMode == "awsvpc"
    web = td.containerDefinitions[0]
    assert web.environment[1].value == "4"  # numbers become strings, as ECS
    assert web.healthCheck.startPeriod == 10 and web.effective_stop_timeout == 20
    ignored = set(ignored_fields(td))
    assert "containerDefinitions[0].secrets" not in ignored and web.secrets[0].secret == "db-pass"
    assert {
        "runtimePlatform", "tags",
        "containerDefinitions[0].portMappings[0].appProtocol",
        "containerDefinitions[1].firelensConfiguration",
    } <= ignored
    assert "family" not in ignored and "containerDefinitions[0].image" not in ignored
    assert "taskRoleArn" not in ignored  # modelled (accepted, kept)
    assert "containerDefinitions[0].ulimits" not in ignored and "containerDefinitions[0].logConfiguration" not in ignored


def test_bare_create_service_body():
    body = {
        "cluster": "prod", "serviceName": "web", "taskDefinition": "arn:aws:ecs:us-east-1:123456789012:task-definition/web:3",
        "desiredCount": 2, "launchType": "EC2",
        "loadBalancers": [{"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/73e2d6bc24d8a067",
                           "containerName": "web", "containerPort": 80}],
        "enableECSManagedTags": True, "propagateTags": "SERVICE",
        "deploymentConfiguration": {"maximumPercent": 200, "minimumHealthyPercent": 50,
                                    "deploymentCircuitBreaker": {"enable": True, "rollback": True}},
    }
    d = ok(body)
    assert d.kind == "Service" and d.name == "web" and d.cluster == "prod"
    assert d.spec.taskDefinition == "web:3"  # an ARN's last part
    assert not {"enableECSManagedTags", "propagateTags"} & set(ignored_fields(d.spec))  # they tag the tasks
    assert d.spec.propagateTags == "SERVICE" and d.spec.enableECSManagedTags is True
    assert d.spec.loadBalancers[0].target_group == "web"  # the ARN's name part


def test_bare_create_service_without_cluster_uses_the_default():
    assert ok({"serviceName": "web", "taskDefinition": "web"}, cluster="dev").cluster == "dev"


# ---- errors name the field path --------------------------------------------------------------------
def test_missing_image_names_the_path():
    errs = bad(manifest("TaskDefinition", {"containerDefinitions": [{"name": "web", "memory": 64}]}))
    assert fields(errs) == ["spec.containerDefinitions[0].image"]
    assert errs[0].kind == "TaskDefinition" and errs[0].name == "web" and errs[0].hint == "add this field"


def test_missing_image_in_bare_json_has_no_spec_prefix():
    errs = bad({"family": "web", "containerDefinitions": [CONTAINER, {"name": "side", "memory": 8}]})
    assert fields(errs) == ["containerDefinitions[1].image"]


@pytest.mark.parametrize("spec,path,hint", [
    ({"taskDefinition": "web", "desiredCount": "three"}, "spec.desiredCount", "whole number"),
    ({"taskDefinition": "web", "desiredCount": -1}, "spec.desiredCount", ""),
    ({"taskDefinition": "web", "placementConstraints": "distinctInstance"}, "spec.placementConstraints", "list"),
    ({"taskDefinition": "web", "launchType": "LAMBDA"}, "spec.launchType", ""),
    ({"taskDefinition": "web", "deploymentConfiguration": {"maximumPercent": 50}},
     "spec.deploymentConfiguration.maximumPercent", ""),
    ({"taskDefinition": "web", "deploymentConfiguration": {"deploymentCircuitBreaker": {"enable": "maybe"}}},
     "spec.deploymentConfiguration.deploymentCircuitBreaker.enable", "true or false"),
    ({"taskDefinition": "web:latest"}, "spec.taskDefinition", ""),
    ({"taskDefinition": "web", "placementStrategy": [{"type": "binpack"}]}, "spec.placementStrategy[0]", ""),
])
def test_service_type_errors_name_the_path(spec, path, hint):
    errs = bad(manifest("Service", spec))
    assert path in fields(errs)
    assert hint in next(e.hint for e in errs if e.field == path)


@pytest.mark.parametrize("container,path", [
    ({"name": "web", "image": "x", "memory": "lots"}, "spec.containerDefinitions[0].memory"),
    ({"name": "web", "image": "x", "memory": 64, "command": "echo hi"}, "spec.containerDefinitions[0].command"),
    ({"name": "web", "image": "x", "memory": 64, "portMappings": [{"containerPort": 70000}]},
     "spec.containerDefinitions[0].portMappings[0].containerPort"),
    ({"name": "web", "image": "x", "memory": 64, "healthCheck": {"command": ["curl", "x"]}},
     "spec.containerDefinitions[0].healthCheck.command"),
    ({"name": "web", "image": "x", "memory": 64, "healthCheck": {"command": ["CMD", "true"], "interval": 1}},
     "spec.containerDefinitions[0].healthCheck"),
    ({"name": "web", "image": "x", "memory": 64, "essential": "sometimes"}, "spec.containerDefinitions[0].essential"),
    ({"name": "we b", "image": "x", "memory": 64}, "spec.containerDefinitions[0].name"),
])
def test_container_errors_name_the_path(container, path):
    errs = bad(manifest("TaskDefinition", {"containerDefinitions": [container]}))
    assert path in fields(errs), fields(errs)


def test_command_as_string_says_use_a_list():
    errs = bad(manifest("TaskDefinition", {"containerDefinitions": [{**CONTAINER, "command": "echo hi"}]}))
    assert "list of strings" in errs[0].message


def test_wrong_value_is_quoted_in_the_message():
    errs = bad(manifest("Service", {"taskDefinition": "web", "desiredCount": "three"}))
    assert "'three'" in errs[0].message


def test_unknown_kind():
    errs = bad(manifest("Widget", {}))
    assert fields(errs) == ["kind"] and "Widget" in errs[0].message and "Service" in errs[0].hint


def test_bad_api_version():
    errs = bad({**manifest("Service", {"taskDefinition": "web"}), "apiVersion": "dockyard/v2"})
    assert fields(errs) == ["apiVersion"] and "dockyard/v2" in errs[0].message and API_VERSION in errs[0].hint


def test_missing_api_version():
    errs = bad({"kind": "Service", "metadata": {"name": "web"}, "spec": {"taskDefinition": "web"}})
    assert fields(errs) == ["apiVersion"]


def test_missing_name():
    errs = bad({"apiVersion": API_VERSION, "kind": "Service", "spec": {"taskDefinition": "web"}})
    assert fields(errs) == ["metadata.name"]


def test_spec_must_be_a_mapping():
    errs = bad({"apiVersion": API_VERSION, "kind": "Service", "metadata": {"name": "web"}, "spec": ["x"]})
    assert fields(errs) == ["spec"]


def test_not_a_mapping_and_unrecognised_documents():
    assert "mapping" in bad(["x"])[0].message
    errs = bad({"name": "web"})
    assert "cannot tell" in errs[0].message and "family" in errs[0].hint


def test_member_of_syntax_error_names_the_expression_path():
    errs = bad(manifest("Service", {"taskDefinition": "web", "placementConstraints": [
        {"type": "distinctInstance"}, {"type": "memberOf", "expression": "attribute:zone =~ a"}]}))
    assert fields(errs) == ["spec.placementConstraints[1].expression"]
    assert "unknown operator" in errs[0].message


def test_member_of_without_expression():
    errs = bad(manifest("Service", {"taskDefinition": "web", "placementConstraints": [{"type": "memberOf"}]}))
    assert fields(errs) == ["spec.placementConstraints[0].expression"]


def test_distinct_instance_with_expression_is_rejected():
    errs = bad(manifest("Task", {"taskDefinition": "web", "placementConstraints": [
        {"type": "distinctInstance", "expression": "attribute:zone == a"}]}))
    assert fields(errs) == ["spec.placementConstraints[0].expression"]


def test_member_of_syntax_error_in_a_task_definition_is_rejected():
    errs = bad(manifest("TaskDefinition", {
        "containerDefinitions": [CONTAINER],
        "placementConstraints": [{"type": "memberOf", "expression": "attribute:zone =="}]}))
    assert fields(errs) == ["spec.placementConstraints[0].expression"]


def test_depends_on_unknown_container_is_rejected():
    errs = bad(manifest("TaskDefinition", {"containerDefinitions": [
        {**CONTAINER, "dependsOn": [{"containerName": "db", "condition": "START"}]}]}))
    assert "dependsOn unknown container 'db'" in errs[0].message
    assert errs[0].field.startswith("spec")


def test_depends_on_unknown_container_names_the_container_path():
    errs = bad(manifest("TaskDefinition", {"containerDefinitions": [
        CONTAINER, {**CONTAINER, "name": "side", "dependsOn": [{"containerName": "db", "condition": "START"}]}]}))
    assert errs[0].field.startswith("spec.containerDefinitions[1].dependsOn")


@pytest.mark.parametrize("containers,fragment", [
    ([CONTAINER, CONTAINER], "unique"),
    ([{**CONTAINER, "essential": False}], "essential"),
    ([{"name": "web", "image": "x"}], "memory"),
    ([{**CONTAINER, "dependsOn": [{"containerName": "web", "condition": "START"}]}], "dependsOn unknown"),
    ([{**CONTAINER, "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]}, {**CONTAINER, "name": "db"}],
     "has no healthCheck"),
    ([{**CONTAINER, "dependsOn": [{"containerName": "db", "condition": "START"}]},
      {**CONTAINER, "name": "db", "dependsOn": [{"containerName": "web", "condition": "START"}]}], "cycle"),
    ([{**CONTAINER, "memory": 64, "memoryReservation": 128}], "memoryReservation"),
])
def test_task_definition_rules(containers, fragment):
    errs = bad(manifest("TaskDefinition", {"containerDefinitions": containers}))
    assert any(fragment in e.message for e in errs), [e.message for e in errs]


def test_too_many_containers():
    cs = [{**CONTAINER, "name": f"c{i}"} for i in range(11)]
    assert fields(bad(manifest("TaskDefinition", {"containerDefinitions": cs}))) == ["spec.containerDefinitions"]


def test_100_100_deployment_configuration_is_rejected():
    errs = bad(manifest("Service", {"taskDefinition": "web", "deploymentConfiguration": {
        "maximumPercent": 100, "minimumHealthyPercent": 100}}))
    assert fields(errs) == ["spec.deploymentConfiguration"]
    assert "no room" in errs[0].message and "maximumPercent" in errs[0].hint


def test_100_100_in_bare_create_service():
    errs = bad({"serviceName": "web", "taskDefinition": "web",
                "deploymentConfiguration": {"maximumPercent": 100, "minimumHealthyPercent": 100}})
    assert fields(errs) == ["deploymentConfiguration"]


def test_all_errors_of_a_document_are_reported_together():
    errs = bad(manifest("Service", {"taskDefinition": "web", "desiredCount": "x", "launchType": "LAMBDA"}))
    assert {"spec.desiredCount", "spec.launchType"} <= set(fields(errs))


# ---- FARGATE rules --------------------------------------------------------------------------------
def fargate(**kw) -> dict:
    container = {"name": "web", "image": "x", **kw.pop("container", {})}
    return {"family": "web", "requiresCompatibilities": ["FARGATE"], "networkMode": "awsvpc", "cpu": "256",
            "memory": "512", "containerDefinitions": [container], **kw}


def test_valid_fargate_definition():
    d = ok(fargate(container={"portMappings": [{"containerPort": 80, "hostPort": 80}]}))
    assert d.spec.is_fargate


@pytest.mark.parametrize("cpu,memory", [("256", "4GB"), ("512", "512"), ("300", "1024"), ("1 vCPU", "1GB"),
                                        ("16384", "30GB")])
def test_fargate_invalid_cpu_memory_combination(cpu, memory):
    errs = bad(fargate(cpu=cpu, memory=memory))
    assert len(errs) == 1 and "not a valid FARGATE size" in errs[0].message
    assert errs[0].field in ("cpu", "memory") and "256: 512-2048" in errs[0].hint


@pytest.mark.parametrize("cpu,memory", [("256", "0.5GB"), ("0.25 vCPU", "2GB"), ("1 vcpu", "8GB"), ("4096", "30720"),
                                        ("8192", "16GB"), ("16384", "120GB")])
def test_fargate_valid_sizes(cpu, memory):
    ok(fargate(cpu=cpu, memory=memory))


def test_fargate_requires_task_level_cpu_and_memory():
    doc = fargate()
    del doc["memory"]
    doc["containerDefinitions"][0]["memory"] = 512
    errs = bad(doc)
    assert fields(errs) == ["memory"] and "task-level cpu and memory" in errs[0].message


def test_fargate_rejects_bridge_network_mode():
    errs = bad(fargate(networkMode="bridge"))
    assert fields(errs) == ["networkMode"] and "awsvpc" in errs[0].message and "FARGATE" in errs[0].message


def test_fargate_network_mode_may_be_omitted():
    doc = fargate()
    del doc["networkMode"]
    ok(doc)


def test_fargate_rejects_host_port_different_from_container_port():
    errs = bad(fargate(container={"portMappings": [{"containerPort": 80}, {"containerPort": 443, "hostPort": 8443}]}))
    assert fields(errs) == ["containerDefinitions[0].portMappings[1].hostPort"]
    assert "hostPort to equal containerPort (443)" in errs[0].message


def test_fargate_rejects_privileged():
    errs = bad(manifest("TaskDefinition", {k: v for k, v in fargate(container={"privileged": True}).items()
                                           if k != "family"}))
    assert fields(errs) == ["spec.containerDefinitions[0].privileged"]
    assert "privileged" in errs[0].message and "FARGATE" in errs[0].message


def test_fargate_rejects_links_volumes_and_constraints():
    errs = bad(fargate(container={"links": ["db"]}, volumes=[{"name": "data", "host": {"sourcePath": "/srv"}}],
                       placementConstraints=[{"type": "memberOf", "expression": "attribute:zone == a"}]))
    assert set(fields(errs)) == {"containerDefinitions[0].links", "volumes[0].host", "placementConstraints"}
    assert len(errs) == 3  # links: said once (networkMode awsvpc), not once per rule


def test_fargate_allows_task_scoped_volumes():
    assert ok(fargate(volumes=[{"name": "scratch"}])).spec.volumes[0].bind_path is None


def test_fargate_rules_do_not_apply_to_ec2_definitions():
    td = TaskDefinitionSpec.model_validate({"family": "web", "networkMode": "bridge", "containerDefinitions": [
        {"name": "web", "image": "x", "memory": 64, "privileged": True,
         "portMappings": [{"containerPort": 80, "hostPort": 8080}]}]})
    assert fargate_errors(td) == []


def test_fargate_sizes_table_matches_ecs():
    assert FARGATE_SIZES[256] == [512, 1024, 2048]
    assert FARGATE_SIZES[512] == [1024, 2048, 3072, 4096]
    assert FARGATE_SIZES[4096][0] == 8192 and FARGATE_SIZES[4096][-1] == 30720


# ---- spec hash --------------------------------------------------------------------------------------
def spec(doc: dict) -> TaskDefinitionSpec:
    return TaskDefinitionSpec.model_validate(doc)


def test_spec_hash_equal_for_identical_specs():
    a = spec(copy.deepcopy(ECS_TASK_DEFINITION))
    b = spec(copy.deepcopy(ECS_TASK_DEFINITION))
    assert a.spec_hash() == b.spec_hash()


def test_spec_hash_ignores_key_order_defaults_and_value_spelling():
    a = spec({"family": "w", "cpu": "256", "memory": "0.5GB",
              "containerDefinitions": [{"name": "w", "image": "x", "essential": True, "environment": [{"name": "N", "value": 1}]}]})
    b = spec({"containerDefinitions": [{"environment": [{"value": "1", "name": "N"}], "image": "x", "name": "w"}],
              "memory": 512, "cpu": 256, "family": "w"})
    assert a.spec_hash() == b.spec_hash()


@pytest.mark.parametrize("change", [
    lambda d: d["containerDefinitions"][0].update(image="nginx:1.26"),
    lambda d: d.update(memory="1GB"),
    lambda d: d["containerDefinitions"][0]["environment"].append({"name": "X", "value": "1"}),
    lambda d: d["containerDefinitions"][0]["healthCheck"].update(retries=5),
    lambda d: d["containerDefinitions"][1].update(essential=True),
    lambda d: d["containerDefinitions"][0].update(command=["serve", "--port", "8080"]),
])
def test_spec_hash_differs_for_changed_specs(change):
    base = copy.deepcopy(ECS_TASK_DEFINITION)
    changed = copy.deepcopy(ECS_TASK_DEFINITION)
    change(changed)
    assert spec(base).spec_hash() != spec(changed).spec_hash()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["A", "B", "C", "D"]), st.text("abc01", max_size=4)), max_size=4,
                unique_by=lambda kv: kv[0]),
       st.sampled_from(["busybox", "nginx:1", "nginx:2"]), st.integers(6, 4096))
def test_property_spec_hash_is_a_function_of_the_content(env, image, memory):
    doc = {"family": "w", "containerDefinitions": [{"name": "w", "image": image, "memory": memory,
                                                    "environment": [{"name": k, "value": v} for k, v in env]}]}
    h = spec(doc).spec_hash()
    assert spec(json.loads(json.dumps(doc))).spec_hash() == h
    other = copy.deepcopy(doc)
    other["containerDefinitions"][0]["memory"] = memory + 1
    assert spec(other).spec_hash() != h
