"""The ECS API (issue 15): boto3 and the AWS CLI against a real orchestrator and agent, unchanged
but for the endpoint URL."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from harness import IMAGE

ACCOUNT = "123456789012"
CREDS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def client(env, region: str = "eu-west-1"):  # noqa: ANN001, ANN201
    return boto3.client("ecs", endpoint_url=env.base_url, region_name=region, aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"],
                        config=Config(retries={"max_attempts": 1}))


TD = {"family": "web", "containerDefinitions": [{
    "name": "web", "image": IMAGE, "memory": 32, "stopTimeout": 2, "essential": True,
    "command": ["sh", "-c", "mkdir -p /www; echo ok > /www/index.html; exec httpd -f -p 8080 -h /www"],
    "portMappings": [{"containerPort": 8080}]}]}


def test_boto3_drives_clusters_task_definitions_services_and_tasks(dockyard_env):
    env = dockyard_env
    env.start_orchestrator()
    ecs = client(env)
    c = ecs.create_cluster(clusterName=env.cluster)["cluster"]
    assert c["clusterArn"] == f"arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/{env.cluster}"  # region from SigV4's scope
    env.start_agent()
    td = ecs.register_task_definition(**TD)["taskDefinition"]
    assert td["taskDefinitionArn"].endswith(":task-definition/web:1") and td["status"] == "ACTIVE"
    assert ecs.describe_task_definition(taskDefinition="web")["taskDefinition"]["revision"] == 1
    td2 = ecs.register_task_definition(**{**TD, "containerDefinitions": [{**TD["containerDefinitions"][0], "memory": 48}]})
    assert td2["taskDefinition"]["revision"] == 2
    arns = ecs.list_task_definitions(familyPrefix="web", sort="DESC")["taskDefinitionArns"]
    assert [a.rsplit(":", 1)[1] for a in arns] == ["2", "1"]
    page = ecs.list_task_definitions(maxResults=1)
    assert len(page["taskDefinitionArns"]) == 1 and page.get("nextToken")
    rest = ecs.list_task_definitions(maxResults=1, nextToken=page["nextToken"])
    assert rest["taskDefinitionArns"] != page["taskDefinitionArns"]
    assert ecs.list_task_definition_families()["families"] == ["web"]

    svc = ecs.create_service(cluster=env.cluster, serviceName="web", taskDefinition=td["taskDefinitionArn"], desiredCount=2,
                             deploymentConfiguration={"maximumPercent": 200, "minimumHealthyPercent": 100})["service"]
    assert svc["serviceArn"] == f"arn:aws:ecs:eu-west-1:{ACCOUNT}:service/{env.cluster}/web"
    with pytest.raises(ClientError) as e:
        ecs.create_service(cluster=env.cluster, serviceName="web", taskDefinition="web", desiredCount=1)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    kw = {"cluster": env.cluster, "serviceName": "once", "taskDefinition": "web", "desiredCount": 0, "clientToken": "t-1"}
    assert ecs.create_service(**kw)["service"]["serviceArn"] == ecs.create_service(**kw)["service"]["serviceArn"]  # idempotent
    ecs.delete_service(cluster=env.cluster, service="once")
    ecs.update_cluster_settings(cluster=env.cluster, settings=[{"name": "containerInsights", "value": "enabled"}])
    assert ecs.describe_clusters(clusters=[env.cluster])["clusters"][0]["settings"] == [
        {"name": "containerInsights", "value": "enabled"}]
    ecs.get_waiter("services_stable").wait(cluster=env.cluster, services=["web"], WaiterConfig={"Delay": 2, "MaxAttempts": 60})
    d = ecs.describe_services(cluster=env.cluster, services=["web", "nope"])
    assert d["services"][0]["runningCount"] == 2 and d["failures"][0]["reason"] == "MISSING"
    assert ecs.list_services(cluster=env.cluster)["serviceArns"] == [svc["serviceArn"]]
    ecs.update_service(cluster=env.cluster, service="web", taskDefinition="web:2")
    ecs.get_waiter("services_stable").wait(cluster=env.cluster, services=["web"], WaiterConfig={"Delay": 2, "MaxAttempts": 90})
    s = ecs.describe_services(cluster=env.cluster, services=["web"])["services"][0]
    assert s["taskDefinition"].endswith("web:2") and len(s["deployments"]) == 1
    running = ecs.list_tasks(cluster=env.cluster, serviceName="web")["taskArns"]
    assert len(running) == 2
    tasks = ecs.describe_tasks(cluster=env.cluster, tasks=running + ["0" * 32])
    assert {t["lastStatus"] for t in tasks["tasks"]} == {"RUNNING"} and tasks["failures"][0]["reason"] == "MISSING"
    assert tasks["tasks"][0]["containers"][0]["networkBindings"][0]["containerPort"] == 8080
    inst = ecs.list_container_instances(cluster=env.cluster)["containerInstanceArns"]
    assert ecs.list_container_instances(cluster=env.cluster, filter="attribute:ecs.os-type == linux")["containerInstanceArns"] == inst
    assert ecs.list_container_instances(cluster=env.cluster, filter="attribute:ecs.os-type == windows")["containerInstanceArns"] == []
    ci = ecs.describe_container_instances(cluster=env.cluster, containerInstances=inst)["containerInstances"][0]
    assert ci["agentConnected"] is True and {r["name"] for r in ci["registeredResources"]} >= {"CPU", "MEMORY"}

    # Tags, custom attributes (memberOf sees them), StartTask on a named instance.
    ecs.tag_resource(resourceArn=svc["serviceArn"], tags=[{"key": "team", "value": "web"}, {"key": "tier", "value": "1"}])
    ecs.untag_resource(resourceArn=svc["serviceArn"], tagKeys=["tier"])
    assert ecs.list_tags_for_resource(resourceArn=svc["serviceArn"])["tags"] == [{"key": "team", "value": "web"}]
    assert ecs.describe_services(cluster=env.cluster, services=["web"])["services"][0]["tags"] == [{"key": "team", "value": "web"}]
    ecs.put_attributes(cluster=env.cluster, attributes=[{"name": "disk", "value": "ssd", "targetType": "container-instance",
                                                         "targetId": inst[0]}])
    listed = ecs.list_attributes(cluster=env.cluster, targetType="container-instance", attributeName="disk")["attributes"]
    assert [(a["value"], a["targetId"]) for a in listed] == [("ssd", inst[0])]
    ecs.register_task_definition(family="pinned", containerDefinitions=[
        {"name": "main", "image": IMAGE, "memory": 16, "command": ["sh", "-c", "exit 0"]}])
    (st_task,) = ecs.start_task(cluster=env.cluster, taskDefinition="pinned", containerInstances=[inst[0]])["tasks"]
    ecs.get_waiter("tasks_stopped").wait(cluster=env.cluster, tasks=[st_task["taskArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 150})
    (ran,) = ecs.run_task(cluster=env.cluster, taskDefinition="pinned",
                          placementConstraints=[{"type": "memberOf", "expression": "attribute:disk == ssd"}])["tasks"]
    ecs.get_waiter("tasks_stopped").wait(cluster=env.cluster, tasks=[ran["taskArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 150})
    assert ecs.describe_tasks(cluster=env.cluster, tasks=[ran["taskArn"]])["tasks"][0]["containerInstanceArn"] == inst[0]

    # A one-off task; the stock waiter sees it stop with its exit code.
    ecs.register_task_definition(family="once", containerDefinitions=[
        {"name": "main", "image": IMAGE, "memory": 16, "command": ["sh", "-c", "exit 3"]}])
    (t,) = ecs.run_task(cluster=env.cluster, taskDefinition="once", startedBy="boto3")["tasks"]
    ecs.get_waiter("tasks_stopped").wait(cluster=env.cluster, tasks=[t["taskArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 150})
    done = ecs.describe_tasks(cluster=env.cluster, tasks=[t["taskArn"]])["tasks"][0]
    assert done["containers"][0]["exitCode"] == 3 and done["stopCode"] == "EssentialContainerExited"
    # RunTask overrides: the command and an environment variable of this run only.
    (o,) = ecs.run_task(cluster=env.cluster, taskDefinition="once", overrides={"containerOverrides": [
        {"name": "main", "command": ["sh", "-c", 'exit "$CODE"'], "environment": [{"name": "CODE", "value": "7"}]}]})["tasks"]
    ecs.get_waiter("tasks_stopped").wait(cluster=env.cluster, tasks=[o["taskArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 150})
    assert ecs.describe_tasks(cluster=env.cluster, tasks=[o["taskArn"]])["tasks"][0]["containers"][0]["exitCode"] == 7
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster=env.cluster, taskDefinition="once", overrides={"containerOverrides": [{"name": "nope"}]})
    assert "overrides.containerOverrides[0].name" in e.value.response["Error"]["Message"]
    assert ecs.list_tasks(cluster=env.cluster, startedBy="boto3", desiredStatus="STOPPED")["taskArns"] == [t["taskArn"]]

    # Errors with ECS's names.
    for call, code in [(lambda: ecs.describe_services(cluster="nope", services=["x"]), "ClusterNotFoundException"),
                       (lambda: ecs.delete_cluster(cluster=env.cluster), "ClusterContainsServicesException"),
                       (lambda: ecs.delete_service(cluster=env.cluster, service="web"), "InvalidParameterException"),
                       (lambda: ecs.describe_task_definition(taskDefinition="nope:1"), "ClientException"),
                       (lambda: ecs.register_task_definition(family="bad", containerDefinitions=[
                           {"name": "x", "image": IMAGE, "memory": 16, "mountPoints": [{"sourceVolume": "v", "containerPath": "/d"}]}]),
                        "InvalidParameterException"),
                       (lambda: ecs.execute_command(cluster=env.cluster, task=running[0], command="sh", interactive=True),
                        "UnsupportedFeatureException")]:
        with pytest.raises(ClientError) as e:
            call()
        assert e.value.response["Error"]["Code"] == code, e.value.response
    bad = ecs.register_task_definition  # the field path survives into the message
    with pytest.raises(ClientError) as e:
        bad(family="bad", containerDefinitions=[{"name": "x", "image": IMAGE, "memory": 16,
                                                 "mountPoints": [{"sourceVolume": "v", "containerPath": "/d"}]}])
    assert "containerDefinitions[0].mountPoints[0].sourceVolume" in e.value.response["Error"]["Message"]

    ecs.delete_service(cluster=env.cluster, service="web", force=True)
    ecs.get_waiter("services_inactive").wait(cluster=env.cluster, services=["web"], WaiterConfig={"Delay": 2, "MaxAttempts": 60})
    ecs.deregister_task_definition(taskDefinition="web:1")
    assert ecs.describe_task_definition(taskDefinition="web:1")["taskDefinition"]["status"] == "INACTIVE"
    gone = ecs.delete_task_definitions(taskDefinitions=["web:1", "web:2"])
    assert [t["revision"] for t in gone["taskDefinitions"]] == [1] and "ACTIVE" in gone["failures"][0]["reason"]
    with pytest.raises(ClientError):
        ecs.describe_task_definition(taskDefinition="web:1")


def test_the_aws_cli_as_a_user_types_it(dockyard_env, tmp_path):
    env = dockyard_env
    env.start_orchestrator()
    env.start_agent()
    aws = [str(Path(sys.executable).parent / "aws"), "--endpoint-url", env.base_url, "--region", "us-east-1", "--output", "json"]
    run_env = {**os.environ, **CREDS, "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}

    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run([*aws, "ecs", *args], capture_output=True, text=True, env=run_env, timeout=300)
        if check:
            assert cp.returncode == 0, (args, cp.stdout, cp.stderr)
        return cp

    cli("create-cluster", "--cluster-name", env.cluster)
    (tmp_path / "td.json").write_text(json.dumps(TD))
    arn = json.loads(cli("register-task-definition", "--cli-input-json", f"file://{tmp_path / 'td.json'}").stdout)[
        "taskDefinition"]["taskDefinitionArn"]
    cli("create-service", "--cluster", env.cluster, "--service-name", "web", "--task-definition", arn, "--desired-count", "2")
    cli("wait", "services-stable", "--cluster", env.cluster, "--services", "web")
    cli("update-service", "--cluster", env.cluster, "--service", "web", "--force-new-deployment")
    cli("wait", "services-stable", "--cluster", env.cluster, "--services", "web")
    out = json.loads(cli("list-tasks", "--cluster", env.cluster, "--max-items", "1").stdout)
    assert len(out["taskArns"]) == 1 and out.get("NextToken")
    # A one-off task, tagged: run-task, wait tasks-stopped, and its exit code in describe-tasks.
    (tmp_path / "job.json").write_text(json.dumps({"family": "job", "containerDefinitions": [{
        "name": "job", "image": IMAGE, "memory": 16, "essential": True, "command": ["sh", "-c", "exit 3"]}]}))
    cli("register-task-definition", "--cli-input-json", f"file://{tmp_path / 'job.json'}")
    task = json.loads(cli("run-task", "--cluster", env.cluster, "--task-definition", "job",
                          "--tags", "key=run,value=nightly").stdout)["tasks"][0]["taskArn"]
    cli("wait", "tasks-stopped", "--cluster", env.cluster, "--tasks", task)
    done = json.loads(cli("describe-tasks", "--cluster", env.cluster, "--tasks", task, "--include", "TAGS").stdout)["tasks"][0]
    assert done["lastStatus"] == "STOPPED" and done["containers"][0]["exitCode"] == 3, done
    assert done["tags"] == [{"key": "run", "value": "nightly"}], done
    cp = cli("describe-services", "--cluster", "nope", "--services", "web", check=False)
    assert cp.returncode == 255 and "ClusterNotFoundException" in cp.stderr, (cp.returncode, cp.stderr)


def test_ecs_deploy_a_third_party_tool_deploys_scales_and_rolls_back(dockyard_env, tmp_path):
    """fabfuel's ecs-deploy (PyPI), pointed at dockyard with AWS_ENDPOINT_URL_ECS and nothing else."""
    env = dockyard_env
    env.start_orchestrator()
    env.start_agent()
    ecs = client(env, "us-east-1")
    ecs.create_cluster(clusterName=env.cluster)
    ecs.register_task_definition(**TD)
    ecs.create_service(cluster=env.cluster, serviceName="web", taskDefinition="web", desiredCount=1)
    ecs.get_waiter("services_stable").wait(cluster=env.cluster, services=["web"], WaiterConfig={"Delay": 2, "MaxAttempts": 60})
    tool = str(Path(sys.executable).parent / "ecs")
    run_env = {**os.environ, **CREDS, "AWS_ENDPOINT_URL_ECS": env.base_url, "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    docker_tag = f"{IMAGE.rsplit(':', 1)[0]}:v2"
    subprocess.run(["docker", "tag", IMAGE, docker_tag], check=True)
    try:
        cp = subprocess.run([tool, "deploy", env.cluster, "web", "--image", "web", docker_tag, "--timeout", "240"],
                            capture_output=True, text=True, env=run_env, timeout=300)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        s = ecs.describe_services(cluster=env.cluster, services=["web"])["services"][0]
        td = ecs.describe_task_definition(taskDefinition=s["taskDefinition"])["taskDefinition"]
        assert td["revision"] == 2 and td["containerDefinitions"][0]["image"] == docker_tag
        assert ecs.describe_task_definition(taskDefinition="web:1")["taskDefinition"]["status"] == "INACTIVE"  # deregistered
        cp = subprocess.run([tool, "scale", env.cluster, "web", "3", "--timeout", "240"], capture_output=True, text=True,
                            env=run_env, timeout=300)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert ecs.describe_services(cluster=env.cluster, services=["web"])["services"][0]["runningCount"] == 3
        # Rolling back to the deregistered revision.
        cp = subprocess.run([tool, "deploy", env.cluster, "web", "--task", "web:1", "--timeout", "240"],
                            capture_output=True, text=True, env=run_env, timeout=300)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        s = ecs.describe_services(cluster=env.cluster, services=["web"])["services"][0]
        image = ecs.describe_task_definition(taskDefinition=s["taskDefinition"])["taskDefinition"]["containerDefinitions"][0]["image"]
        assert image == IMAGE
    finally:
        subprocess.run(["docker", "rmi", docker_tag], capture_output=True)


def test_sigv4_with_dockyard_access_keys_once_one_exists(dockyard_env):
    env = dockyard_env
    env.start_orchestrator()
    ecs = client(env)
    assert ecs.list_clusters()["clusterArns"] == []  # development mode: loopback, no key created yet
    out = env.cli("accesskey", "create").stdout
    creds = dict(line.split("=", 1) for line in out.split())
    assert creds["AWS_ACCESS_KEY_ID"] in env.cli("accesskey", "list").stdout
    assert creds["AWS_SECRET_ACCESS_KEY"] not in env.cli("accesskey", "list").stdout
    assert creds["AWS_ACCESS_KEY_ID"] not in env.cli("get", "secrets").stdout  # kept in the store, not listed
    with pytest.raises(ClientError) as e:
        ecs.list_clusters()  # the dummy key is not one of dockyard's
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    good = boto3.client("ecs", endpoint_url=env.base_url, region_name="us-east-1",
                        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"], aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
    assert good.create_cluster(clusterName=env.cluster)["cluster"]["clusterName"] == env.cluster
    wrong = boto3.client("ecs", endpoint_url=env.base_url, region_name="us-east-1",
                         aws_access_key_id=creds["AWS_ACCESS_KEY_ID"], aws_secret_access_key="x" * 40,
                         config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        wrong.list_clusters()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    # A read-only key reads and is refused every write with ECS's AccessDeniedException.
    ro = dict(line.split("=", 1) for line in env.cli("accesskey", "create", "--role", "read-only").stdout.split())
    assert f"{ro['AWS_ACCESS_KEY_ID']}\tread-only" in env.cli("accesskey", "list").stdout
    reader = boto3.client("ecs", endpoint_url=env.base_url, region_name="us-east-1",
                          aws_access_key_id=ro["AWS_ACCESS_KEY_ID"], aws_secret_access_key=ro["AWS_SECRET_ACCESS_KEY"],
                          config=Config(retries={"max_attempts": 1}))
    assert reader.describe_clusters(clusters=[env.cluster])["clusters"][0]["clusterName"] == env.cluster
    with pytest.raises(ClientError) as e:
        reader.create_cluster(clusterName="by-a-reader")
    assert e.value.response["Error"]["Code"] == "AccessDeniedException", e.value.response
    assert "ecs:CreateCluster" in e.value.response["Error"]["Message"]
    assert "by-a-reader" not in str(good.list_clusters()["clusterArns"])
    env.cli("accesskey", "delete", ro["AWS_ACCESS_KEY_ID"])
    env.cli("accesskey", "delete", creds["AWS_ACCESS_KEY_ID"])
    assert ecs.list_clusters()["clusterArns"]  # no key left: development mode again
