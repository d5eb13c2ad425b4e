"""Issue 2 end to end: a manifest puts real containers on a real agent (real Mosquitto, real dockerd)."""
from __future__ import annotations

import json

import pytest

from harness import IMAGE, docker

WEB = f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - name: web
      image: {IMAGE}
      command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
      memory: 32
      cpu: 16
      portMappings: [{{containerPort: 8080}}]
      stopTimeout: 2
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: web}}
spec:
  taskDefinition: web
  desiredCount: 3
"""


def _service_up(env, count=3, **orchestrator_flags):
    env.start_orchestrator(**orchestrator_flags)
    env.start_agent()
    env.cli("apply", "-f", env.write_manifest(WEB))
    return env.wait_running(count, timeout=60)


def test_apply_three_replicas_runs_labelled_containers(dockyard_env):
    env = dockyard_env
    tasks = _service_up(env)
    node = env.node_ids[0]
    running = env.containers(all=False)
    assert len(running) == 3
    by_task = {c["Labels"]["dockyard.task"]: c for c in running}
    assert set(by_task) == {t["taskId"] for t in tasks}
    for t in tasks:
        labels = by_task[t["taskId"]]["Labels"]
        assert labels["dockyard.cluster"] == env.cluster
        assert labels["dockyard.node"] == node
        assert labels["dockyard.family"] == "web" and labels["dockyard.revision"] == "1"
        assert labels["dockyard.container"] == "web"
        assert labels.get("dockyard.spec-hash")
        assert by_task[t["taskId"]]["Names"] == f"dockyard-web-1-web-{t['taskId'][:8]}"
        # dynamic host port reported back as a network binding
        assert 49153 <= t["containers"][0]["networkBindings"][0]["hostPort"] <= 65535  # ECS dynamic range
    out = env.cli("get", "tasks").stdout
    assert out.count("RUNNING") >= 3 and all(t["taskId"][:12] in out for t in tasks)
    # the deployment completes once its tasks are proven (minimumHealthyTimeSeconds) and baked
    svc = env.wait_for(lambda: (s := env.get(f"/v1/clusters/{env.cluster}/services/web")["service"])
                       ["deployments"][0]["rolloutState"] == "COMPLETED" and s, timeout=45, message="COMPLETED")
    assert svc["runningCount"] == 3 and svc["deployments"][0]["rolloutState"] == "COMPLETED"
    # applying the same manifest again changes nothing
    again = env.cli("apply", "-f", env.write_manifest(WEB)).stdout
    assert "unchanged" in again and "registered" not in again
    assert {t["taskId"] for t in env.running_tasks()} == {t["taskId"] for t in tasks}


def test_killed_container_is_stopped_with_exit_code_and_replaced(dockyard_env):
    env = dockyard_env
    tasks = _service_up(env)
    victim = tasks[0]
    cid = env.containers(all=False, task=victim["taskId"])[0]["ID"]
    docker("kill", "--signal", "KILL", cid)  # through the Docker API, behind the agent's back

    def stopped():
        t = env.get(f"/v1/clusters/{env.cluster}/tasks/{victim['taskId']}")["task"]
        return t if t["lastStatus"] == "STOPPED" else None

    # Event-driven: well under the agent's 30 s re-list (Docker's die event comes before a list
    # shows the container exited; the agent passes again EVENT_SETTLE_SECONDS later).
    t = env.wait_for(stopped, timeout=10, message="killed task STOPPED")
    assert t["stopCode"] == "EssentialContainerExited"
    assert t["stoppedReason"] == "Essential container in task exited"
    assert t["containers"][0]["exitCode"] == 137
    assert t["desiredStatus"] == "STOPPED" and t["stoppedAt"] >= t["startedAt"]
    running = env.wait_for(
        lambda: (lambda r: r if len(r) == 3 and victim["taskId"] not in {x["taskId"] for x in r} else None)(
            env.running_tasks()), timeout=60, message="replacement RUNNING")
    assert len({x["taskId"] for x in running} - {x["taskId"] for x in tasks}) == 1
    # the stopped task's container is removed, and exactly 3 containers run
    env.wait_for(lambda: len(env.containers(all=True)) == 3, timeout=20, message="stopped container removed")
    events = env.get(f"/v1/clusters/{env.cluster}/services/web")["service"]["events"]
    assert any(victim["taskId"][:12] in e["message"] and "exit 137" in e["message"] for e in events)


def test_run_wait_returns_exit_code_of_batch_task(dockyard_env):
    env = dockyard_env
    env.start_orchestrator()
    env.start_agent()
    env.cli("apply", "-f", env.write_manifest(f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: batch}}
spec:
  containerDefinitions:
    - {{name: main, image: {IMAGE}, command: ["sh", "-c", "echo working; sleep 1; exit 3"], memory: 16}}
"""))
    cp = env.cli("run", "batch", "--wait", "--timeout", "60", check=False)
    assert cp.returncode == 3, cp.stdout + cp.stderr
    tasks = env.tasks()
    assert len(tasks) == 1
    t = tasks[0]
    assert t["lastStatus"] == "STOPPED" and t["stopCode"] == "EssentialContainerExited"
    assert t["containers"][0]["exitCode"] == 3
    assert env.containers(all=False) == []
    env.wait_quiet_evidence()  # a batch task is never replaced
    assert len(env.tasks()) == 1 and env.containers(all=False) == []


def test_orchestrator_restart_keeps_containers_and_state(dockyard_env):
    env = dockyard_env
    tasks = _service_up(env)
    before = sorted(c["ID"] for c in env.containers(all=False))
    epoch1 = env.get("/healthz")["epoch"]
    env.restart_orchestrator(kill=True)  # a crash, not a clean stop
    assert env.get("/healthz")["epoch"] == epoch1 + 1
    env.wait_for(lambda: (env.node(env.node_ids[0]) or {}).get("connected"), timeout=20, message="node reconnected")
    env.wait_quiet_evidence()  # agent snapshots and a reconcile pass under the new epoch
    assert sorted(c["ID"] for c in env.containers(all=False)) == before
    assert {t["taskId"] for t in env.running_tasks()} == {t["taskId"] for t in tasks}
    # and the service still converges after the restart
    env.cli("scale", "web", "4")
    env.wait_running(4, timeout=30)
    assert len(env.containers(all=False)) == 4
    assert set(before) <= {c["ID"] for c in env.containers(all=False)}


def test_agent_restart_adopts_containers(dockyard_env):
    env = dockyard_env
    # A generous node-lost time: this test is about adoption, not about how fast a lost node is replaced.
    tasks = _service_up(env, node_lost_seconds=30)
    node = env.node_ids[0]
    before = sorted(c["ID"] for c in env.containers(all=True))
    env.stop_agent(node, kill=True)
    env.start_agent(node)
    env.wait_quiet_evidence()  # snapshots and a reconcile pass under the new bootId
    after = sorted(c["ID"] for c in env.containers(all=True))
    assert after == before, "agent restart must adopt, not recreate"
    assert {t["taskId"] for t in env.running_tasks()} == {t["taskId"] for t in tasks}
    assert all(t["lastStatus"] != "STOPPED" for t in env.tasks())


BAD_CASES = [
    ("wrong type", """
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {name: bad}
spec:
  containerDefinitions:
    - {name: a, image: x, memory: lots}
""", "spec.containerDefinitions[0].memory"),
    ("missing image", """
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {name: bad}
spec:
  containerDefinitions:
    - {name: a, memory: 16}
""", "spec.containerDefinitions[0].image"),
    ("unknown kind", """
apiVersion: dockyard/v1
kind: Deployment
metadata: {name: bad}
spec: {}
""", "kind"),
    ("service without taskdef", """
apiVersion: dockyard/v1
kind: Service
metadata: {name: bad}
spec: {taskDefinition: nosuch, desiredCount: 1}
""", "spec.taskDefinition"),
]


@pytest.mark.parametrize("label,text,field", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_manifests_name_the_field_and_change_nothing(dockyard_env, label, text, field):
    env = dockyard_env
    env.start_orchestrator()
    good = f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: good}}
spec:
  containerDefinitions: [{{name: a, image: {IMAGE}, memory: 16}}]
---
"""
    path = env.write_manifest(good + text.strip() + "\n")
    cp = env.cli("apply", "-f", path, check=False)
    assert cp.returncode == 1
    assert field in cp.stderr, cp.stderr
    assert "Traceback" not in cp.stderr + cp.stdout
    # atomic: the valid document in the same apply was not registered either
    assert env.get("/v1/taskdefinitions?family=good")["taskDefinitions"] == []
    assert env.get(f"/v1/clusters/{env.cluster}/services")["services"] == []


def test_bad_yaml_is_reported_with_line_and_nothing_sent(dockyard_env):
    env = dockyard_env
    env.start_orchestrator()
    path = env.write_manifest("apiVersion: dockyard/v1\nkind: TaskDefinition\nmetadata: {name: x\nspec: [\n")
    cp = env.cli("apply", "-f", path, check=False)
    assert cp.returncode == 1 and f"{path}:4:" in cp.stderr  # file:line:column
    assert "Traceback" not in cp.stderr
    assert env.get("/v1/taskdefinitions")["taskDefinitions"] == []


def test_bare_ecs_json_applies_unchanged(dockyard_env):
    env = dockyard_env
    env.start_orchestrator()
    env.start_agent()
    td = {
        "family": "api",
        "networkMode": "bridge",
        "requiresCompatibilities": ["EC2"],
        "cpu": "128",
        "memory": "64",
        "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "containerDefinitions": [{
            "name": "api", "image": IMAGE, "essential": True,
            "command": ["httpd", "-f", "-p", "8081", "-h", "/www"],
            "environment": [{"name": "MODE", "value": "prod"}],
            "portMappings": [{"containerPort": 8081, "hostPort": 0, "protocol": "tcp"}],
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/api"}},
            "secrets": [{"name": "TOKEN", "valueFrom": "arn:aws:ssm:::parameter/token"}],
        }],
    }
    svc = {"serviceName": "api", "taskDefinition": "api", "desiredCount": 2}
    env.cli("secret", "create", "token", "--from-literal", "t0ken")  # valueFrom's ARN names it
    cp = env.cli("apply", "-f", env.write_manifest(json.dumps(td), "td.json"),
                 "-f", env.write_manifest(json.dumps(svc), "svc.json"))
    assert "taskdefinition/api:1 registered" in cp.stdout and "service/api created" in cp.stdout
    assert "logConfiguration" in cp.stderr  # reported, not fatal
    tasks = env.wait_running(2, timeout=60)
    env_vars = env.inspect(env.containers(all=False, task=tasks[0]["taskId"])[0]["ID"])["Config"]["Env"]
    assert "MODE=prod" in env_vars and "TOKEN=t0ken" in env_vars
