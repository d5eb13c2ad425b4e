"""ECS models (dockyard.ecs), control-plane records (orchestrator.models) and the wire contract (dockyard.wire)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dockyard.ecs import (
    DEFAULT_STOP_TIMEOUT,
    ContainerDefinition,
    HealthCheck,
    TaskDefinitionSpec,
    container_hash,
    ignored_fields,
    parse_cpu,
    parse_memory,
    start_order,
)
from dockyard.wire import DesiredDoc, Presence, StatusDoc, TaskReport, node_topic, parse_topic
from orchestrator.models import (
    ClusterSpec,
    Deployment,
    PlacementStrategy,
    ServiceSpec,
    Task,
    TaskContainer,
)


def td(containers: list[dict], **kw) -> TaskDefinitionSpec:
    return TaskDefinitionSpec.model_validate({"family": "app", "containerDefinitions": containers, **kw})


def c(name: str = "web", **kw) -> dict:
    return {"name": name, "image": "busybox", "memory": 64, **kw}


# ---- cpu / memory values -----------------------------------------------------------------------
@pytest.mark.parametrize("value,units", [
    ("256", 256), (512, 512), ("1 vCPU", 1024), ("0.25 vcpu", 256), (" 2 VCPU ", 2048), ("0.5vCPU", 512),
    (None, None), ("", None),
])
def test_parse_cpu(value, units):
    assert parse_cpu(value) == units


@pytest.mark.parametrize("value,mib", [
    ("512", 512), (1024, 1024), ("1GB", 1024), ("0.5GB", 512), ("0.5 gb", 512), ("2GiB", 2048), ("512MiB", 512),
    ("100mb", 100), (None, None),
])
def test_parse_memory(value, mib):
    assert parse_memory(value) == mib


@pytest.mark.parametrize("value", ["a lot", "1 TB", "1GBB", True, "vcpu"])
def test_parse_memory_rejects_nonsense(value):
    with pytest.raises(ValueError):
        parse_memory(value)


@pytest.mark.parametrize("value", ["fast", "1 core", True, "1 vCPUs"])
def test_parse_cpu_rejects_nonsense(value):
    with pytest.raises(ValueError):
        parse_cpu(value)


def test_task_cpu_and_memory_strings_are_normalised():
    spec = td([{"name": "w", "image": "x"}], cpu="0.5 vCPU", memory="1GB")
    assert (spec.cpu, spec.memory, spec.total_cpu, spec.total_memory) == (512, 1024, 512, 1024)


def test_negative_task_cpu_or_memory_is_rejected():
    with pytest.raises(ValidationError):
        td([{"name": "w", "image": "x"}], cpu=-256, memory=512)
    with pytest.raises(ValidationError):
        td([{"name": "w", "image": "x"}], cpu=256, memory=-100)


# ---- reservations ----------------------------------------------------------------------------------
def test_totals_from_containers_when_no_task_level_values():
    spec = td([c("a", cpu=128, memory=256), c("b", cpu=64, memory=512, memoryReservation=128),
               {"name": "d", "image": "x", "memoryReservation": 32}])
    assert spec.total_cpu == 192
    assert spec.total_memory == 256 + 128 + 32  # memoryReservation wins over memory, as ECS


def test_task_level_values_win():
    spec = td([c("a", cpu=128, memory=256)], cpu="1024", memory="2048")
    assert (spec.total_cpu, spec.total_memory) == (1024, 2048)


def test_container_memory_minimum():
    with pytest.raises(ValidationError):
        td([c(memory=4)])


# ---- container definitions ----------------------------------------------------------------------------
def test_environment_values_become_strings():
    spec = td([c(environment=[{"name": "A", "value": 1}, {"name": "B", "value": True}, {"name": "C", "value": 1.5},
                              {"name": "D"}])])
    assert [e.value for e in spec.containerDefinitions[0].environment] == ["1", "true", "1.5", ""]


def test_stop_timeout_default_and_limit():
    assert ContainerDefinition(name="w", image="x").effective_stop_timeout == DEFAULT_STOP_TIMEOUT == 30
    assert ContainerDefinition(name="w", image="x", stopTimeout=0).effective_stop_timeout == 0
    with pytest.raises(ValidationError):
        ContainerDefinition(name="w", image="x", stopTimeout=121)


def test_port_mapping_defaults():
    pm = ContainerDefinition(name="w", image="x", portMappings=[{"containerPort": 80}]).portMappings[0]
    assert (pm.containerPort, pm.hostPort, pm.protocol) == (80, None, "tcp")
    with pytest.raises(ValidationError):
        ContainerDefinition(name="w", image="x", portMappings=[{"containerPort": 80, "protocol": "sctp"}])


def test_health_check_defaults_are_ecs_defaults():
    hc = HealthCheck(command=["CMD-SHELL", "true"])
    assert (hc.interval, hc.timeout, hc.retries, hc.startPeriod) == (30, 5, 3, None)


@pytest.mark.parametrize("kw,fragment", [
    ({"command": ["curl", "x"]}, 'must start with "CMD"'),
    ({"command": ["CMD"]}, "needs the command"),
    ({"command": []}, ""),
    ({"command": ["CMD", "true"], "interval": 4}, "interval must be between 5 and 300"),
    ({"command": ["CMD", "true"], "timeout": 121}, "timeout must be between 2 and 120"),
    ({"command": ["CMD", "true"], "retries": 11}, "retries must be between 1 and 10"),
    ({"command": ["CMD", "true"], "startPeriod": 301}, "startPeriod must be between 0 and 300"),
])
def test_health_check_rules(kw, fragment):
    with pytest.raises(ValidationError) as exc:
        HealthCheck(**kw)
    assert fragment in str(exc.value)


def test_health_check_none_is_allowed():
    assert HealthCheck(command=["NONE"]).command == ["NONE"]


def test_names_are_checked():
    with pytest.raises(ValidationError):
        ContainerDefinition(name="has space", image="x")
    with pytest.raises(ValidationError):
        td([c()], family="bad/family")
    with pytest.raises(ValidationError):
        ContainerDefinition(name="w", image="")


# ---- dependency order ------------------------------------------------------------------------------------
def test_start_order_puts_dependencies_first():
    spec = td([
        c("app", dependsOn=[{"containerName": "db", "condition": "HEALTHY"}, {"containerName": "init", "condition": "SUCCESS"}]),
        c("db", healthCheck={"command": ["CMD", "true"]}),
        c("init", essential=False),
    ])
    order = start_order(spec.containerDefinitions)
    assert order.index("db") < order.index("app") and order.index("init") < order.index("app")
    assert sorted(order) == ["app", "db", "init"]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.tuples(st.integers(0, n - 1),
                                                                                     st.integers(0, n - 1)),
                                                                           max_size=12))))
def test_property_start_order_respects_every_acyclic_dependency(case):
    n, edges = case
    deps: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in edges:
        if a > b:  # only "later depends on earlier": always acyclic
            deps[a].add(b)
    spec = td([c(f"c{i}", dependsOn=[{"containerName": f"c{j}", "condition": "START"} for j in sorted(deps[i])])
               for i in range(n)])
    order = start_order(spec.containerDefinitions)
    assert sorted(order) == sorted(f"c{i}" for i in range(n))
    for i, ds in deps.items():
        for j in ds:
            assert order.index(f"c{j}") < order.index(f"c{i}")


# ---- hashes and ignored fields ---------------------------------------------------------------------------
def test_container_hash_changes_with_the_container_only():
    a = ContainerDefinition(name="w", image="x", memory=64)
    assert container_hash(a) == container_hash(ContainerDefinition(name="w", image="x", memory=64, essential=True))
    assert container_hash(a) != container_hash(ContainerDefinition(name="w", image="x", memory=65))


def test_ignored_fields_are_kept_and_reported_with_paths():
    spec = td([c(secrets=[{"name": "A", "valueFrom": "arn"}], portMappings=[{"containerPort": 80, "appProtocol": "http"}],
                 healthCheck={"command": ["CMD", "true"], "unknownKnob": 1})],
              tags=[{"key": "a", "value": "b"}], ephemeralStorage={"sizeInGiB": 30})
    assert sorted(ignored_fields(spec)) == sorted([
        "tags", "ephemeralStorage",
        "containerDefinitions[0].portMappings[0].appProtocol", "containerDefinitions[0].healthCheck.unknownKnob"])
    assert spec.model_extra["ephemeralStorage"] == {"sizeInGiB": 30}


def test_is_fargate():
    assert td([c()], requiresCompatibilities=["EC2", "FARGATE"]).is_fargate
    assert not td([c()]).is_fargate


# ---- orchestrator specs and records -----------------------------------------------------------------------
def test_service_spec_accepts_an_arn_and_keeps_the_ref():
    s = ServiceSpec(serviceName="web", taskDefinition="arn:aws:ecs:eu-west-1:1:task-definition/web:12")
    assert s.taskDefinition == "web:12"
    assert ServiceSpec(serviceName="web", taskDefinition="web").taskDefinition == "web"


@pytest.mark.parametrize("ref", ["web:x", "we b", "web:1:2", ""])
def test_service_spec_rejects_bad_task_definition_refs(ref):
    with pytest.raises(ValidationError):
        ServiceSpec(serviceName="web", taskDefinition=ref)


def test_service_spec_defaults_are_ecs_defaults():
    s = ServiceSpec(serviceName="web", taskDefinition="web")
    assert s.desiredCount == 1 and s.launchType == "EC2" and s.schedulingStrategy == "REPLICA"
    cfg = s.deploymentConfiguration
    assert (cfg.maximumPercent, cfg.minimumHealthyPercent) == (200, 100)
    assert not cfg.deploymentCircuitBreaker.enable and s.healthCheckGracePeriodSeconds == 0


@pytest.mark.parametrize("cfg", [{"maximumPercent": 99}, {"minimumHealthyPercent": 101}, {"minimumHealthyPercent": -1}])
def test_deployment_configuration_bounds(cfg):
    with pytest.raises(ValidationError):
        ServiceSpec(serviceName="web", taskDefinition="web", deploymentConfiguration=cfg)


@pytest.mark.parametrize("kw,ok", [
    ({"type": "spread"}, True), ({"type": "spread", "field": "attribute:zone"}, True),
    ({"type": "spread", "field": "host"}, False), ({"type": "binpack", "field": "memory"}, True),
    ({"type": "binpack", "field": "cpu"}, True), ({"type": "binpack"}, False), ({"type": "random"}, True),
    ({"type": "roundrobin"}, False),
])
def test_placement_strategy_validation(kw, ok):
    if ok:
        PlacementStrategy(**kw)
    else:
        with pytest.raises(ValidationError):
            PlacementStrategy(**kw)


def test_cluster_name_rule():
    ClusterSpec(clusterName="prod-1")
    with pytest.raises(ValidationError):
        ClusterSpec(clusterName="prod 1")


def test_deployment_defaults():
    d = Deployment(taskDefinition="web:1")
    assert d.status == "PRIMARY" and d.rolloutState == "IN_PROGRESS" and d.id.startswith("ecs-svc/")
    assert d.id != Deployment(taskDefinition="web:1").id


def test_task_active_and_short_id():
    t = Task(cluster="c", taskDefinition="web:1", family="web", revision=1, group="service:web")
    assert t.active and len(t.short_id) == 12 and t.lastStatus == "PROVISIONING"
    t.desiredStatus = "STOPPED"
    assert not t.active


def test_records_ignore_unknown_fields_from_newer_versions():
    t = Task.model_validate({"cluster": "c", "taskDefinition": "web:1", "family": "web", "revision": 1,
                             "group": "service:web", "fromTheFuture": 1})
    assert not hasattr(t, "fromTheFuture")


def test_task_container_from_report():
    from dockyard.wire import ContainerReport, NetworkBinding
    r = ContainerReport(name="web", lastStatus="RUNNING", exitCode=None, healthStatus="HEALTHY", dockerId="abc",
                        networkBindings=[NetworkBinding(containerPort=80, hostPort=32768)])
    tc = TaskContainer.from_report(r)
    assert (tc.name, tc.lastStatus, tc.healthStatus, tc.dockerId) == ("web", "RUNNING", "HEALTHY", "abc")
    assert tc.networkBindings == [{"containerPort": 80, "hostPort": 32768, "protocol": "tcp", "bindIP": "0.0.0.0"}]


# ---- wire --------------------------------------------------------------------------------------------------
def test_topics_round_trip():
    t = node_topic("prod", "node-1", "desired")
    assert t == "dockyard/v1/prod/nodes/node-1/desired"
    assert parse_topic(t) == ("prod", "node-1", "desired")


@pytest.mark.parametrize("topic", ["dockyard/v2/prod/nodes/n/desired", "dockyard/v1/prod/node/n/desired",
                                   "dockyard/v1/prod/nodes/n", "dockyard/v1/prod/nodes/n/desired/x", ""])
def test_parse_topic_rejects_foreign_topics(topic):
    assert parse_topic(topic) is None


def test_wire_models_tolerate_fields_from_newer_peers():
    p = Presence.model_validate({"nodeId": "n", "bootId": "b", "state": "online", "newField": {"x": 1}})
    assert p.state == "online" and p.capacityProviders == ["EC2"]
    r = TaskReport.model_validate({"taskId": "t", "lastStatus": "RUNNING", "gpu": 1})
    assert r.healthStatus == "UNKNOWN"


def test_wire_rejects_unknown_states():
    with pytest.raises(ValidationError):
        TaskReport(taskId="t", lastStatus="EXPLODED")
    with pytest.raises(ValidationError):
        StatusDoc(nodeId="n", bootId="b", seq=1, kind="diff")


def test_desired_doc_version_orders_by_epoch_then_generation():
    def doc(e, g):
        return DesiredDoc(cluster="c", nodeId="n", epoch=e, generation=g)
    assert doc(2, 1).version() > doc(1, 99).version() > doc(1, 98).version()


def test_desired_doc_round_trips_a_task_definition():
    spec = td([c(healthCheck={"command": ["CMD", "true"]}, extraThing=1)], cpu="256")
    from dockyard.wire import DesiredTask
    d = DesiredDoc(cluster="c", nodeId="n", epoch=1, generation=3,
                   tasks=[DesiredTask(taskId="t", family="app", revision=1, taskDefinition=spec)])
    back = DesiredDoc.model_validate_json(d.model_dump_json())
    assert back.tasks[0].taskDefinition.spec_hash() == spec.spec_hash()
    assert back.tasks[0].taskDefinition.containerDefinitions[0].healthCheck.command == ["CMD", "true"]
