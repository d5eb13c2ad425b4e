"""ECS's task metadata endpoint v4, served by the agent to its containers (real dockerd + broker).

A container reads its own task through ``$ECS_CONTAINER_METADATA_URI_V4`` (bridge and awsvpc
network modes); another task's container, or the host, holding that URI gets no data."""
from __future__ import annotations

import json
import os

import httpx
import pytest
from harness import IMAGE, docker, private_broker

pytestmark = pytest.mark.integration

MANIFEST = f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: meta}}
spec:
  containerDefinitions:
    - {{name: app, image: {IMAGE}, command: [sleep, "3600"], cpu: 64, memory: 16, stopTimeout: 1}}
    - {{name: side, image: {IMAGE}, command: [sleep, "3600"], memory: 16, essential: false, stopTimeout: 1,
        restartPolicy: {{enabled: true}}}}
---
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: metavpc}}
spec:
  networkMode: awsvpc
  containerDefinitions:
    - {{name: app, image: {IMAGE}, command: [sleep, "3600"], memory: 16, stopTimeout: 1}}
"""


def env_uri(inspect: dict) -> str:
    env = dict(e.split("=", 1) for e in inspect["Config"]["Env"] or [])
    return env["ECS_CONTAINER_METADATA_URI_V4"]


def fetch(container_id: str, url_expr: str) -> tuple[int, str, str]:
    """``wget`` inside the container (busybox; its -T option crashes this build, so none)."""
    cp = docker("exec", container_id, "sh", "-c", f'wget -q -O - "{url_expr}"', check=False, timeout=60)
    return cp.returncode, cp.stdout, cp.stderr


@pytest.fixture
def env(dockyard_env):
    """A broker of this test's own (see harness.private_broker)."""
    with private_broker(dockyard_env.workdir) as url:
        dockyard_env.mqtt_url = url
        yield dockyard_env


def test_metadata_endpoint_answers_its_own_task_and_no_other(env):
    env.start_orchestrator()
    env.start_agent()
    env.cli("apply", "-f", str(env.write_manifest(MANIFEST)))
    env.cli("run", "meta", "--count", "2")
    env.cli("run", "metavpc")
    tasks = env.wait_for(lambda: (lambda ts: ts if len(ts) == 3 and all(t["lastStatus"] == "RUNNING" for t in ts)
                                  else None)(env.tasks()), timeout=60, message="3 RUNNING tasks")
    a, b = sorted((t for t in tasks if t["family"] == "meta"), key=lambda t: t["taskId"])
    vpc = next(t for t in tasks if t["family"] == "metavpc")
    ids = {t["taskId"]: {c["name"]: c["dockerId"] for c in t["containers"]} for t in tasks}
    ca, cb = ids[a["taskId"]]["app"], ids[b["taskId"]]["app"]
    ins_a = env.inspect(ca)
    uri_a = env_uri(ins_a)
    assert uri_a != env_uri(env.inspect(cb)) and uri_a != env_uri(env.inspect(ids[a["taskId"]]["side"]))

    # The container's own document, through its environment variable.
    rc, out, err = fetch(ca, "$ECS_CONTAINER_METADATA_URI_V4")
    assert rc == 0, err
    me = json.loads(out)
    assert (me["Name"], me["DockerId"], me["Type"], me["KnownStatus"], me["DesiredStatus"]) == \
        ("app", ca, "NORMAL", "RUNNING", "RUNNING")
    assert me["Limits"] == {"CPU": 64, "Memory": 16}
    assert me["Labels"]["com.amazonaws.ecs.task-arn"].endswith(f"task/{env.cluster}/{a['taskId']}")
    ip = ins_a["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    assert me["Networks"] == [{"NetworkMode": "bridge", "IPv4Addresses": [ip]}]

    # Its task, with both containers.
    rc, out, err = fetch(ca, "$ECS_CONTAINER_METADATA_URI_V4/task")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["TaskARN"] == f"arn:aws:ecs:local:000000000000:task/{env.cluster}/{a['taskId']}"
    assert (doc["Cluster"], doc["Family"], doc["Revision"], doc["KnownStatus"], doc["LaunchType"]) == \
        (env.cluster, "meta", "1", "RUNNING", "EC2")
    assert {c["Name"]: c["DockerId"] for c in doc["Containers"]} == ids[a["taskId"]]
    assert next(c for c in doc["Containers"] if c["Name"] == "side")["RestartCount"] == 0
    assert doc["PullStartedAt"] <= doc["PullStoppedAt"] and doc["PullStoppedAt"].endswith("Z")
    assert b["taskId"] not in out

    # Docker stats of the container, and of the task's containers by docker id.
    rc, out, err = fetch(ca, "$ECS_CONTAINER_METADATA_URI_V4/stats")
    assert rc == 0, err
    assert "memory_stats" in json.loads(out)
    rc, out, err = fetch(ca, "$ECS_CONTAINER_METADATA_URI_V4/task/stats")
    assert rc == 0, err
    assert set(json.loads(out)) == set(ids[a["taskId"]].values())

    # Task B's container holding A's URI gets nothing of A (its address is not A's container's).
    for suffix in ("", "/task", "/stats", "/task/stats"):
        rc, out, err = fetch(cb, uri_a + suffix)
        assert rc != 0 and "403" in err and out == "", (suffix, out, err)
    # Nor does the host; an unknown token is not found.
    r = httpx.get(uri_a + "/task", timeout=10)
    assert r.status_code == 403 and a["taskId"] not in r.text
    bogus = uri_a.rsplit("/", 1)[0] + "/" + "0" * 64
    rc, out, err = fetch(ca, bogus + "/task")
    assert rc != 0 and "404" in err and out == ""

    # A container on its task's own network (awsvpc) reaches the endpoint too.
    cv = ids[vpc["taskId"]]["app"]
    rc, out, err = fetch(cv, "$ECS_CONTAINER_METADATA_URI_V4/task")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["TaskARN"].endswith(vpc["taskId"]) and doc["Containers"][0]["Networks"][0]["NetworkMode"] == "awsvpc"
    assert doc["Containers"][0]["Networks"][0]["IPv4Addresses"] == [vpc["ipAddress"]]


@pytest.mark.slow
def test_metadata_endpoint_in_the_multi_host_bed(dockyard_env):
    """The agent in a host's network namespace, next to that host's dockerd: its containers reach it."""
    if os.geteuid() != 0:
        pytest.fail("the multi-host test bed needs root (network namespaces, dockerd)", pytrace=False)
    from testbed import Testbed

    env = dockyard_env
    with Testbed(1) as tb:
        tb.attach(env)
        env.start_orchestrator()
        tb.start_agent(env, 1)
        env.cli("apply", "-f", str(env.write_manifest(MANIFEST)))
        env.cli("run", "meta")
        task = env.wait_running(1)[0]
        cid = next(c["dockerId"] for c in task["containers"] if c["name"] == "app")
        cp = tb.host(1).docker("exec", cid, "sh", "-c", 'wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4/task"',
                               check=False)
        assert cp.returncode == 0, cp.stderr
        doc = json.loads(cp.stdout)
        assert doc["TaskARN"].endswith(f"task/{env.cluster}/{task['taskId']}") and doc["KnownStatus"] == "RUNNING"
        assert env.cleanup() == []
