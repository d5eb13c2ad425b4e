"""Volumes, logging, limits and Linux parameters: validation at apply (dockyard.ecs_compat), the
Docker create body (agent.docker_options via build_create_spec), task volumes and their removal
(agent.runtime.task_volumes, agent.diff)."""
from __future__ import annotations

import pytest

from agent import diff
from agent.docker_runtime import build_create_spec
from agent.runtime import L_TASK, ActualContainer, task_volumes
from dockyard.ecs import TaskDefinitionSpec, start_order
from dockyard.ecs_compat import taskdef_errors, taskdef_warnings
from dockyard.wire import DesiredTask
from orchestrator.manifests import parse_document

TID = "0123456789abcdef0123456789abcdef"


def td(containers: list[dict], **kw) -> TaskDefinitionSpec:
    for c in containers:
        c.setdefault("image", "busybox")
        if "memoryReservation" not in c:
            c.setdefault("memory", 64)
    return TaskDefinitionSpec.model_validate({"family": "db", "containerDefinitions": containers, **kw})


def task(spec: TaskDefinitionSpec, launch: str = "EC2") -> DesiredTask:
    return DesiredTask(taskId=TID, family=spec.family, revision=3, taskDefinition=spec, launchType=launch)  # type: ignore[arg-type]


def body(spec: TaskDefinitionSpec, name: str | None = None) -> dict:
    c = next(c for c in spec.containerDefinitions if name is None or c.name == name)
    return build_create_spec(task(spec), c, "node-a", "prod").body


def paths(problems) -> list[str]:
    return [p for p, _, _ in problems]


DB = {"name": "db", "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}]}


# ---- the first example: a host-path volume is mounted, not dropped ----------------------------
def test_host_volume_and_mount_point_become_a_bind_mount():
    spec = td([dict(DB)], volumes=[{"name": "data", "host": {"sourcePath": "/srv/data"}}])
    assert taskdef_errors(spec) == []
    assert body(spec)["HostConfig"]["Binds"] == ["/srv/data:/data"]
    assert task_volumes(task(spec), "node-a", "prod") == []  # a bind mount needs no Docker volume


def test_read_only_mount():
    spec = td([{"name": "db", "mountPoints": [{"sourceVolume": "data", "containerPath": "/data", "readOnly": True}]}],
              volumes=[{"name": "data", "host": {"sourcePath": "/srv/data"}}])
    assert body(spec)["HostConfig"]["Binds"] == ["/srv/data:/data:ro"]


def test_volume_without_host_is_a_task_scoped_docker_volume_labelled_with_the_task():
    spec = td([dict(DB)], volumes=[{"name": "data"}])
    (vol,) = task_volumes(task(spec), "node-a", "prod")
    assert vol.name == f"dockyard-{TID[:12]}-data" and vol.task_scoped and vol.create
    assert vol.labels[L_TASK] == TID and vol.labels["dockyard.node"] == "node-a"
    assert body(spec)["HostConfig"]["Binds"] == [f"dockyard-{TID[:12]}-data:/data"]


def test_shared_docker_volume_is_named_after_the_volume_and_created_only_with_autoprovision():
    dvc = {"scope": "shared", "autoprovision": True, "driver": "local", "driverOpts": {"type": "tmpfs", "device": "tmpfs"},
           "labels": {"team": "db"}}
    spec = td([dict(DB)], volumes=[{"name": "data", "dockerVolumeConfiguration": dvc}])
    (vol,) = task_volumes(task(spec), "node-a", "prod")
    assert (vol.name, vol.task_scoped, vol.create, vol.driver) == ("data", False, True, "local")
    assert vol.driver_opts == {"type": "tmpfs", "device": "tmpfs"} and vol.labels["team"] == "db"
    assert L_TASK not in vol.labels  # not removed with the task
    assert body(spec)["HostConfig"]["Binds"] == ["data:/data"]
    spec2 = td([dict(DB)], volumes=[{"name": "data", "dockerVolumeConfiguration": {"scope": "shared"}}])
    assert task_volumes(task(spec2), "node-a", "prod")[0].create is False


def test_unused_volumes_are_not_created():
    spec = td([{"name": "db"}], volumes=[{"name": "data"}])
    assert task_volumes(task(spec), "n", "c") == []


def test_volumes_from_and_links_order_the_containers_and_name_the_docker_containers():
    spec = td([{"name": "app", "volumesFrom": [{"sourceContainer": "data", "readOnly": True}], "links": ["cache:redis"]},
               {"name": "data", "essential": False}, {"name": "cache", "essential": False}])
    assert taskdef_errors(spec) == []
    order = start_order(spec.containerDefinitions)
    assert order.index("data") < order.index("app") and order.index("cache") < order.index("app")
    h = body(spec, "app")["HostConfig"]
    assert h["VolumesFrom"] == [f"dockyard-db-3-data-{TID[:8]}:ro"]
    assert h["Links"] == [f"dockyard-db-3-cache-{TID[:8]}:redis"]


# ---- logging, limits, Linux parameters -----------------------------------------------------------
def test_log_configuration_is_passed_to_docker_with_string_options():
    spec = td([{"name": "db", "logConfiguration": {"logDriver": "json-file", "options": {"max-size": "10m", "max-file": 3}}}])
    assert body(spec)["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}


def test_awslogs_uses_the_node_default_with_a_warning_naming_the_field():
    spec = td([{"name": "db", "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}}}])
    assert "LogConfig" not in body(spec)["HostConfig"]
    (w,) = taskdef_warnings(spec)
    assert w.startswith("containerDefinitions[0].logConfiguration.logDriver: awslogs")


def test_unknown_log_driver_is_refused():
    with pytest.raises(ValueError, match="unknown log driver 'cloudwatch'"):
        td([{"name": "db", "logConfiguration": {"logDriver": "cloudwatch"}}])


def test_limits_and_linux_parameters_map_to_host_config():
    spec = td([{
        "name": "db", "memory": 256, "readonlyRootFilesystem": True,
        "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
        "linuxParameters": {"initProcessEnabled": True, "capabilities": {"add": ["NET_ADMIN"], "drop": ["cap_mknod"]},
                            "sharedMemorySize": 128, "tmpfs": [{"containerPath": "/run", "size": 64, "mountOptions": ["noexec"]}],
                            "devices": [{"hostPath": "/dev/null", "containerPath": "/dev/x", "permissions": ["read"]}],
                            "maxSwap": 512, "swappiness": 10},
        "extraHosts": [{"hostname": "db.local", "ipAddress": "10.0.0.5"}], "dnsServers": ["10.0.0.2"],
        "dnsSearchDomains": ["corp"], "systemControls": [{"namespace": "net.core.somaxconn", "value": "1024"}],
        "hostname": "db1", "pseudoTerminal": True, "interactive": True, "dockerSecurityOptions": ["no-new-privileges"],
    }], pidMode="host", ipcMode="none")
    assert taskdef_errors(spec) == []
    b = body(spec)
    h = b["HostConfig"]
    MiB = 1024 * 1024
    assert h["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 4096}]
    assert h["ReadonlyRootfs"] is True and h["Init"] is True
    assert h["CapAdd"] == ["NET_ADMIN"] and h["CapDrop"] == ["MKNOD"]
    assert h["ShmSize"] == 128 * MiB and h["Tmpfs"] == {"/run": "size=64m,noexec"}
    assert h["Devices"] == [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/x", "CgroupPermissions": "r"}]
    assert h["Memory"] == 256 * MiB and h["MemorySwap"] == (256 + 512) * MiB and h["MemorySwappiness"] == 10
    assert h["ExtraHosts"] == ["db.local:10.0.0.5"] and h["Dns"] == ["10.0.0.2"] and h["DnsSearch"] == ["corp"]
    assert h["Sysctls"] == {"net.core.somaxconn": "1024"} and h["SecurityOpt"] == ["no-new-privileges"]
    assert h["PidMode"] == "host" and h["IpcMode"] == "none"
    assert (b["Hostname"], b["Tty"], b["OpenStdin"]) == ("db1", True, True)


def test_max_swap_zero_means_no_swap():
    spec = td([{"name": "db", "memory": 100, "linuxParameters": {"maxSwap": 0}}])
    h = body(spec)["HostConfig"]
    assert h["MemorySwap"] == h["Memory"]


def test_a_plain_definition_gets_no_extra_options():
    h = body(td([{"name": "web"}]))["HostConfig"]
    assert set(h) == {"RestartPolicy", "NetworkMode", "Memory"}


def test_swappiness_warns_only_on_a_cluster_with_cgroup_v2_nodes():
    spec = td([{"name": "db", "linuxParameters": {"swappiness": 10}}])
    assert taskdef_warnings(spec, {"1"}) == []
    assert any("cgroup v2" in w for w in taskdef_warnings(spec, {"1", "2"}))


# ---- refused at apply, with field paths -------------------------------------------------------------
def test_unknown_source_volume_is_refused_naming_the_field_and_the_known_volumes():
    spec = td([{"name": "db", "mountPoints": [{"sourceVolume": "dta", "containerPath": "/data"}]}], volumes=[{"name": "data"}])
    ((path, msg, hint),) = taskdef_errors(spec)
    assert path == "containerDefinitions[0].mountPoints[0].sourceVolume" and "'dta'" in msg and "data" in msg


def test_two_mounts_on_one_path_are_refused():
    spec = td([{"name": "db", "mountPoints": [{"sourceVolume": "a", "containerPath": "/data"},
                                            {"sourceVolume": "b", "containerPath": "/data/"}],
                "linuxParameters": {"tmpfs": [{"containerPath": "/data", "size": 8}]}}],
              volumes=[{"name": "a"}, {"name": "b"}])
    assert paths(taskdef_errors(spec)) == ["containerDefinitions[0].mountPoints[1].containerPath",
                                           "containerDefinitions[0].linuxParameters.tmpfs[0].containerPath"]


def test_efs_volume_is_refused_not_warned():
    spec = td([dict(DB)], volumes=[{"name": "data", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}])
    ((path, msg, hint),) = taskdef_errors(spec)
    assert path == "volumes[0].efsVolumeConfiguration" and "EFS" in msg and "dockerVolumeConfiguration" in hint
    assert taskdef_warnings(spec) == []  # refused, so not also "ignored"


@pytest.mark.parametrize("extra,path", [
    ({"environmentFiles": [{"value": "arn:aws:s3:::b/f.env", "type": "s3"}]}, "containerDefinitions[0].environmentFiles"),
    ({"resourceRequirements": [{"type": "GPU", "value": "1"}]}, "containerDefinitions[0].resourceRequirements"),
    ({"portMappings": [{"containerPort": 80, "containerPortRange": "80-90"}]},
     "containerDefinitions[0].portMappings[0].containerPortRange"),
])
def test_fields_that_would_change_what_the_container_does_are_refused(extra, path):
    assert paths(taskdef_errors(td([{"name": "db", **extra}]))) == [path]


@pytest.mark.parametrize("container,vols,path", [
    ({"volumesFrom": [{"sourceContainer": "nope"}]}, [], "containerDefinitions[0].volumesFrom[0].sourceContainer"),
    ({"links": ["nope"]}, [], "containerDefinitions[0].links[0]"),
    ({"ulimits": [{"name": "nofile", "softLimit": 10, "hardLimit": 5}]}, [], "containerDefinitions[0].ulimits[0].softLimit"),
    ({"memoryReservation": 64, "linuxParameters": {"maxSwap": 10}}, [],
     "containerDefinitions[0].linuxParameters.maxSwap"),
    ({"systemControls": [{"namespace": "kernel.panic", "value": "1"}]}, [],
     "containerDefinitions[0].systemControls[0].namespace"),
    ({"dockerSecurityOptions": ["privileged"]}, [], "containerDefinitions[0].dockerSecurityOptions[0]"),
    ({}, [{"name": "a", "host": {"sourcePath": "relative/dir"}}], "volumes[0].host.sourcePath"),
    ({}, [{"name": "a"}, {"name": "a"}], "volumes[1].name"),
    ({}, [{"name": "a", "dockerVolumeConfiguration": {"scope": "task", "autoprovision": True}}],
     "volumes[0].dockerVolumeConfiguration.autoprovision"),
])
def test_cross_field_rules(container, vols, path):
    c = {"name": "db", **container}
    assert paths(taskdef_errors(td([c], volumes=vols))) == [path]


def test_host_network_mode_refuses_net_sysctls_and_links():
    spec = td([{"name": "db", "systemControls": [{"namespace": "net.ipv4.ip_forward", "value": "1"}], "links": ["x"]},
               {"name": "x"}], networkMode="host")
    assert paths(taskdef_errors(spec)) == ["containerDefinitions[0].links", "containerDefinitions[0].systemControls[0].namespace"]


def test_apply_refuses_with_field_paths_under_the_manifest_prefix_and_registers_nothing():
    doc = {"apiVersion": "dockyard/v1", "kind": "TaskDefinition", "metadata": {"name": "db"},
           "spec": {"family": "db", "volumes": [{"name": "data", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}],
                    "containerDefinitions": [{"name": "db", "image": "x", "memory": 64,
                                              "mountPoints": [{"sourceVolume": "dat", "containerPath": "/d"}]}]}}
    d, errs = parse_document("db.yaml", doc, "default")
    assert d is None
    assert [e.field for e in errs] == ["spec.volumes[0].efsVolumeConfiguration",
                                       "spec.containerDefinitions[0].mountPoints[0].sourceVolume"]


def test_bad_capability_names_the_field():
    with pytest.raises(ValueError, match="unknown capability NET_FOO"):
        td([{"name": "db", "linuxParameters": {"capabilities": {"add": ["NET_FOO"]}}}])


def test_pid_mode_task_is_refused_with_a_reason():
    assert paths(taskdef_errors(td([{"name": "db"}], pidMode="task"))) == ["pidMode"]


def test_unsupported_harmless_fields_are_warned_with_what_dockyard_does():
    spec = td([{"name": "db", "startTimeout": 30}], ephemeralStorage={"sizeInGiB": 30}, taskRoleArn="arn:aws:iam::1:role/r")
    ws = taskdef_warnings(spec)
    assert any(w.startswith("ephemeralStorage: not enforced") for w in ws)
    assert any(w.startswith("containerDefinitions[0].startTimeout: not enforced") for w in ws)
    assert any(w.startswith("taskRoleArn: no IAM") for w in ws)


# ---- the agent removes task volumes with the task -------------------------------------------------
def test_task_volumes_are_removed_after_the_task_containers_and_shared_ones_never_listed():
    gone = ActualContainer(id="c1", task_id="gone", container_name="db", node="n1", state="exited", exit_code=0)
    p = diff.plan([], [gone], "n1", volumes={"gone": ["dockyard-gone-data"], "old": ["dockyard-old-x"]})
    kinds = [(type(a).__name__, a.task_id) for a in p.actions]
    assert kinds == [("Remove", "gone"), ("RemoveVolume", "gone"), ("RemoveVolume", "old")]


def test_a_desired_task_keeps_its_volumes():
    spec = td([dict(DB)], volumes=[{"name": "data"}])
    running = ActualContainer(id="c1", task_id=TID, container_name="db", node="n1", state="running", started_at=1.0)
    p = diff.plan([task(spec)], [running], "n1", volumes={TID: [f"dockyard-{TID[:12]}-data"]})
    assert p.actions == []


# ---- every RegisterTaskDefinition field has an answer (botocore's ECS model is the reference) ------
PENDING_MERGE: set[str] = set()  # fields modelled on branches not merged yet


def test_every_register_task_definition_field_is_modelled_refused_or_documented_as_without_effect():
    import botocore.session

    from dockyard import ecs, ecs_options
    from dockyard.ecs_compat import KEPT, NO_EFFECT, REFUSED

    model = botocore.session.get_session().get_service_model("ecs")
    ours = {"RegisterTaskDefinitionRequest": ecs.TaskDefinitionSpec, "ContainerDefinition": ecs.ContainerDefinition,
            "Volume": ecs_options.Volume, "PortMapping": ecs.PortMapping, "HealthCheck": ecs.HealthCheck,
            "MountPoint": ecs.MountPoint, "VolumeFrom": ecs_options.VolumeFrom, "LinuxParameters": ecs_options.LinuxParameters,
            "LogConfiguration": ecs_options.LogConfiguration, "Ulimit": ecs_options.Ulimit, "Tmpfs": ecs_options.Tmpfs,
            "Device": ecs_options.Device, "KernelCapabilities": ecs_options.KernelCapabilities,
            "HostVolumeProperties": ecs_options.HostVolumeProperties, "HostEntry": ecs_options.HostEntry,
            "DockerVolumeConfiguration": ecs_options.DockerVolumeConfiguration, "SystemControl": ecs_options.SystemControl,
            "ContainerDependency": ecs.ContainerDependency, "RepositoryCredentials": ecs.RepositoryCredentials,
            "KeyValuePair": ecs.KeyValuePair, "Secret": ecs.Secret, "TaskDefinitionPlacementConstraint": ecs.PlacementConstraint,
            "ContainerRestartPolicy": ecs.RestartPolicy}
    unanswered: list[str] = []

    def walk(shape, cls, path: str) -> None:
        for name, member in shape.members.items():
            p = f"{path}{name}"
            if name not in cls.model_fields:
                if p not in REFUSED and p not in NO_EFFECT and p not in KEPT and p not in PENDING_MERGE:
                    unanswered.append(p)
                continue
            inner = member.member if member.type_name == "list" else member
            if inner.type_name == "structure" and name not in ("tags",):
                assert inner.name in ours, f"{p}: modelled, but its shape {inner.name} is not mapped in this test"
                walk(inner, ours[inner.name], f"{p}.")

    walk(model.operation_model("RegisterTaskDefinition").input_shape, ecs.TaskDefinitionSpec, "")
    assert unanswered == [], f"fields with no answer (model them, or add them to REFUSED/NO_EFFECT and docs/ecs-compat.md): {unanswered}"


# ---- RunTask overrides (dockyard.ecs.apply_overrides) -------------------------------------------
def test_overrides_replace_the_command_merge_the_environment_and_resize():
    from dockyard.ecs import TaskOverride, apply_overrides

    spec = td([{"name": "app", "command": ["serve"], "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
               {"name": "side"}])
    out = apply_overrides(spec, TaskOverride.model_validate({"containerOverrides": [
        {"name": "app", "command": ["migrate"], "environment": [{"name": "B", "value": "9"}, {"name": "C", "value": "3"}],
         "memory": 128}]}))
    app = out.containerDefinitions[0]
    assert app.command == ["migrate"] and app.memory == 128
    assert [(kv.name, kv.value) for kv in app.environment] == [("A", "1"), ("B", "9"), ("C", "3")]
    assert out.containerDefinitions[1] == spec.containerDefinitions[1] and spec.containerDefinitions[0].command == ["serve"]
    with pytest.raises(ValueError, match=r"@overrides.containerOverrides\[0\].name: .* no container 'nope'"):
        apply_overrides(spec, TaskOverride.model_validate({"containerOverrides": [{"name": "nope"}]}))
