"""The task metadata endpoint v4's pure part (agent.metadata): tokens, access rule, ECS's JSON shapes."""
from __future__ import annotations

import os
import stat

from agent import metadata as md
from agent.docker_runtime import build_create_spec
from agent.metadata_server import load_secret
from dockyard.ecs import TaskDefinitionSpec
from dockyard.wire import DesiredTask

SECRET = b"k" * 32


def task(network_mode: str | None = None, launch: str = "EC2", **spec) -> DesiredTask:
    td = TaskDefinitionSpec.model_validate({
        "family": "web", "networkMode": network_mode, **spec, "containerDefinitions": [
            {"name": "app", "image": "busybox", "cpu": 128, "memory": 64,
             "restartPolicy": {"enabled": True}},
            {"name": "side", "image": "busybox", "memoryReservation": 16, "essential": False},
        ]})
    return DesiredTask(taskId="f" * 32, family="web", revision=4, launchType=launch, taskDefinition=td,
                       serviceName="websvc")


def inspect(ip_net: str | None = "bridge", ip: str = "172.17.0.5", state: str = "running") -> dict:
    nets = {ip_net: {"IPAddress": ip}} if ip_net else {"host": {"IPAddress": ""}}
    return {
        "Id": "d" * 64, "Name": "/dockyard-web-4-app-ffffffff", "Image": "sha256:abc", "Created": "2026-12-01T20:00:00.1Z",
        "Config": {"Image": "busybox:latest", "Labels": {"dockyard.task": "f" * 32}},
        "State": {"Status": state, "ExitCode": 1 if state == "exited" else 0, "StartedAt": "2026-12-01T20:00:01Z",
                  "FinishedAt": "0001-01-01T00:00:00Z" if state == "running" else "2026-12-01T20:05:00Z",
                  "Health": {"Status": "healthy"}},
        "NetworkSettings": {"Networks": nets},
        "HostConfig": {"LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}}},
    }


# ---- tokens and the URI ------------------------------------------------------------------------------
def test_token_is_per_container_keyed_and_unguessable_length():
    t = md.token(SECRET, "t1", "app")
    assert len(t) == 64 and int(t, 16) >= 0
    assert t == md.token(SECRET, "t1", "app")
    assert len({t, md.token(SECRET, "t1", "side"), md.token(SECRET, "t2", "app"), md.token(b"x" * 32, "t1", "app")}) == 4
    assert md.token_index(SECRET, [("t1", "app"), ("t2", "app")])[t] == ("t1", "app")
    assert md.metadata_uri("172.17.0.1", 51679, t) == f"http://172.17.0.1:51679/v4/{t}"


def test_secret_is_created_once_private_and_kept(tmp_path):
    d = tmp_path / "state" / "n1"
    s1 = load_secret(d)
    assert len(s1) == 32 and load_secret(d) == s1
    assert stat.S_IMODE(os.stat(d / "metadata.key").st_mode) == 0o600


def test_create_spec_sets_the_uri_last_and_only_when_served():
    t = task()
    c = t.taskDefinition.containerDefinitions[0].model_copy(update={"environment": []})
    assert "Env" not in build_create_spec(t, c, "n1", "prod").body
    c2 = t.taskDefinition.containerDefinitions[0].model_validate(
        {"name": "app", "image": "busybox", "memory": 8,
         "environment": [{"name": "ECS_CONTAINER_METADATA_URI_V4", "value": "mine"}, {"name": "A", "value": "1"}]})
    env = build_create_spec(t, c2, "n1", "prod", metadata_uri="http://g:1/v4/x").body["Env"]
    assert env[-1] == "ECS_CONTAINER_METADATA_URI_V4=http://g:1/v4/x" and "A=1" in env


# ---- who may read -------------------------------------------------------------------------------------
def test_source_must_be_the_containers_own_address_when_it_has_one():
    bridge = md.facts_from_inspect(inspect())
    assert bridge.ips == ("172.17.0.5",)
    assert md.source_allowed("172.17.0.5", bridge)
    assert not md.source_allowed("172.17.0.6", bridge) and not md.source_allowed("172.17.0.1", bridge)
    assert not md.source_allowed(None, bridge)
    host = md.facts_from_inspect(inspect(ip_net=None))
    assert host.ips == () and md.source_allowed("10.0.0.9", host)  # host mode: the token alone decides


# ---- the documents ----------------------------------------------------------------------------------------
def test_container_document_has_ecs_v4_fields():
    t = task()
    f = md.facts_from_inspect(inspect())
    doc = md.container_metadata("prod", t, t.taskDefinition.containerDefinitions[0], f, stopping=False, restart_count=2)
    assert doc["DockerId"] == "d" * 64 and doc["Name"] == "app" and doc["DockerName"] == "dockyard-web-4-app-ffffffff"
    assert (doc["Image"], doc["ImageID"]) == ("busybox:latest", "sha256:abc")
    assert (doc["DesiredStatus"], doc["KnownStatus"], doc["Type"]) == ("RUNNING", "RUNNING", "NORMAL")
    assert doc["Limits"] == {"CPU": 128, "Memory": 64}
    assert doc["CreatedAt"] == "2026-12-01T20:00:00.1Z" and doc["StartedAt"] == "2026-12-01T20:00:01Z"
    assert "FinishedAt" not in doc and "ExitCode" not in doc
    assert doc["Networks"] == [{"NetworkMode": "bridge", "IPv4Addresses": ["172.17.0.5"]}]
    assert doc["ContainerARN"] == f"arn:aws:ecs:local:000000000000:container/prod/{'f' * 32}/app"
    assert doc["Labels"]["com.amazonaws.ecs.task-arn"] == f"arn:aws:ecs:local:000000000000:task/prod/{'f' * 32}"
    assert doc["Labels"]["com.amazonaws.ecs.task-definition-version"] == "4" and doc["Labels"]["dockyard.task"]
    assert doc["LogDriver"] == "json-file" and doc["LogOptions"] == {"max-size": "10m"}
    assert doc["Health"] == {"status": "HEALTHY"} and doc["RestartCount"] == 2


def test_stopped_container_and_one_not_created_yet():
    t = task(network_mode="awsvpc")
    f = md.facts_from_inspect(inspect(ip_net="dockyard-task-x", ip="172.19.0.2", state="exited"))
    doc = md.container_metadata("prod", t, t.taskDefinition.containerDefinitions[1], f, stopping=True)
    assert (doc["KnownStatus"], doc["DesiredStatus"], doc["ExitCode"]) == ("STOPPED", "STOPPED", 1)
    assert doc["FinishedAt"] == "2026-12-01T20:05:00Z" and "RestartCount" not in doc  # side has no policy
    assert doc["Networks"] == [{"NetworkMode": "awsvpc", "IPv4Addresses": ["172.19.0.2"]}]
    none = md.container_metadata("prod", t, t.taskDefinition.containerDefinitions[1], None, stopping=False)
    assert none["KnownStatus"] == "NONE" and "DockerId" not in none and none["Image"] == "busybox"


def test_task_document():
    t = task(launch="FARGATE", cpu="512", memory="1GB")
    f = md.facts_from_inspect(inspect(ip_net="dockyard-task-x", ip="172.19.0.2"))
    doc = md.task_metadata("prod", t, {"app": f}, "RUNNING", stopping=False, availability_zone="zone-a",
                           restarts={"app": 1})
    assert doc["TaskARN"] == f"arn:aws:ecs:local:000000000000:task/prod/{'f' * 32}"
    assert (doc["Cluster"], doc["Family"], doc["Revision"], doc["ServiceName"]) == ("prod", "web", "4", "websvc")
    assert (doc["DesiredStatus"], doc["KnownStatus"], doc["LaunchType"]) == ("RUNNING", "RUNNING", "FARGATE")
    assert doc["Limits"] == {"CPU": 0.5, "Memory": 1024} and doc["AvailabilityZone"] == "zone-a"
    assert "PullStartedAt" not in doc
    assert [c["Name"] for c in doc["Containers"]] == ["app", "side"]
    assert doc["Containers"][0]["RestartCount"] == 1 and doc["Containers"][1]["KnownStatus"] == "NONE"
    assert "Limits" not in md.task_metadata("prod", task(), {}, "PENDING", stopping=False)


def test_availability_zone_from_attributes():
    assert md.availability_zone({"ecs.availability-zone": "a", "zone": "b"}) == "a"
    assert md.availability_zone({"zone": "b"}) == "b"
    assert md.availability_zone({}) is None


def test_pure_module_imports_no_docker_or_http():
    import subprocess
    import sys
    code = ("import sys, agent.metadata; bad=[m for m in ('aiodocker','aiohttp','aiomqtt') if m in sys.modules];"
            "print(bad); raise SystemExit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_times_are_written_as_ecs_does():
    assert md.rfc3339(0.5) == "1970-01-01T00:00:00.500000Z" and md.rfc3339(None) is None


def test_pull_times_span_a_tasks_pulls_and_are_forgotten_with_it():
    from agent.state import NodeState
    from dockyard import log

    st = NodeState("n1", log.get("test"))
    st.pulled("t1", 10.0, 12.0)
    st.pulled("t1", 11.0, 15.0)
    assert st.pulls == {"t1": (10.0, 15.0)}
    st.prune(set())
    assert st.pulls == {}
