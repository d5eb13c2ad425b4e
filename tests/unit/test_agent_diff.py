"""The agent's pure diff (agent.diff): examples and hypothesis properties of its invariants."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import diff
from agent.diff import Create, Finish, Remove, RemoveNetwork, Start, Stop
from agent.runtime import L_ESSENTIAL, L_STOP_TIMEOUT, ActualContainer
from dockyard.ecs import TaskDefinitionSpec, start_order
from dockyard.wire import DesiredTask

NODE = "n1"
IMG = "dockyard-test/busybox:latest"


def tdef(containers: list[dict], **kw) -> TaskDefinitionSpec:
    for c in containers:
        c.setdefault("image", IMG)
        c.setdefault("memory", 32)
    return TaskDefinitionSpec.model_validate({"family": "fam", "containerDefinitions": containers, **kw})


def task(tid: str, containers: list[dict], status: str = "RUNNING", **kw) -> DesiredTask:
    return DesiredTask(taskId=tid, family="fam", revision=1, desiredStatus=status, taskDefinition=tdef(containers), **kw)


_ids = iter(range(10**9))


def ac(tid: str, name: str, state: str = "running", node: str = NODE, exit_code: int | None = None,
       health: str | None = None, essential: bool = True, started: float | None = None) -> ActualContainer:
    n = next(_ids)
    return ActualContainer(
        id=f"c{n:08d}", task_id=tid, container_name=name, node=node, state=state,
        exit_code=exit_code if state == "exited" else None, health=health,
        started_at=started if started is not None else (None if state == "created" else float(n)),
        finished_at=float(n + 1) if state == "exited" else None,
        labels={L_ESSENTIAL: "true" if essential else "false", L_STOP_TIMEOUT: "7"},
    )


def kinds(p: diff.Plan) -> list[tuple[str, str, str]]:
    return [(type(a).__name__, a.task_id, getattr(a, "container_name", "")) for a in p.actions]


# ---- examples ------------------------------------------------------------------------------------
def test_pure_module_imports_no_docker_or_mqtt():
    code = "import sys, agent.diff; bad=[m for m in ('aiodocker','aiomqtt','paho') if m in sys.modules]; print(bad); raise SystemExit(1 if bad else 0)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_fresh_task_creates_in_dependency_order_with_start_conditions_in_one_plan():
    t = task("t1", [{"name": "app", "dependsOn": [{"containerName": "db", "condition": "START"}]}, {"name": "db"}])
    p = diff.plan([t], [], NODE)
    assert kinds(p) == [("Create", "t1", "db"), ("Start", "t1", "db"), ("Create", "t1", "app"), ("Start", "t1", "app")]
    assert p.finished == {}


def test_complete_dependency_waits_then_proceeds():
    t = task("t1", [{"name": "init", "essential": False, "command": ["true"]},
                    {"name": "app", "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]}])
    p = diff.plan([t], [], NODE)
    assert kinds(p) == [("Create", "t1", "init"), ("Start", "t1", "init")]
    running = [ac("t1", "init", essential=False)]
    assert diff.plan([t], running, NODE).actions == []
    done = [ac("t1", "init", "exited", exit_code=0, essential=False)]
    assert kinds(diff.plan([t], done, NODE)) == [("Create", "t1", "app"), ("Start", "t1", "app")]


def test_success_dependency_nonzero_fails_task():
    t = task("t1", [{"name": "init", "essential": False},
                    {"name": "app", "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]}])
    p = diff.plan([t], [ac("t1", "init", "exited", exit_code=3, essential=False)], NODE)
    assert p.actions == []
    fin = p.finished["t1"]
    assert fin.stop_code == "TaskFailedToStart" and "init" in fin.reason and "3" in fin.reason


def test_healthy_dependency():
    hc = {"command": ["CMD-SHELL", "true"], "interval": 5}
    t = task("t1", [{"name": "db", "healthCheck": hc}, {"name": "app", "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]}])
    assert diff.plan([t], [ac("t1", "db", health="starting")], NODE).actions == []
    assert kinds(diff.plan([t], [ac("t1", "db", health="healthy")], NODE)) == [("Create", "t1", "app"), ("Start", "t1", "app")]
    p = diff.plan([t], [ac("t1", "db", health="unhealthy")], NODE)
    assert p.finished["t1"].stop_code == "TaskFailedToStart"


def test_essential_exit_stops_others_in_reverse_dependency_order():
    t = task("t1", [{"name": "a"}, {"name": "b", "dependsOn": [{"containerName": "a", "condition": "START"}]},
                    {"name": "c", "dependsOn": [{"containerName": "b", "condition": "START"}]}])
    actual = [ac("t1", "a"), ac("t1", "b"), ac("t1", "c", "exited", exit_code=137)]
    p = diff.plan([t], actual, NODE)
    assert p.finished["t1"] == Finish("EssentialContainerExited", "Essential container in task exited", "c", 137)
    assert kinds(p) == [("Stop", "t1", "b"), ("Stop", "t1", "a")]
    assert all(a.timeout == 7 for a in p.actions)


def test_non_essential_exit_keeps_task_running():
    t = task("t1", [{"name": "a"}, {"name": "s", "essential": False}])
    actual = [ac("t1", "a"), ac("t1", "s", "exited", exit_code=1, essential=False)]
    p = diff.plan([t], actual, NODE)
    assert p.actions == [] and p.finished == {}
    r = diff.task_report("t1", t, actual)
    assert r.lastStatus == "RUNNING" and r.containers[1].exitCode == 1


def test_finished_task_is_never_restarted():
    t = task("t1", [{"name": "a"}])
    fin = {"t1": Finish("EssentialContainerExited", "x")}
    assert diff.plan([t], [], NODE, fin).actions == []
    assert diff.plan([t], [ac("t1", "a", "exited", exit_code=0)], NODE).actions == []  # adopted after restart


def test_desired_stopped_stops_but_keeps_containers():
    t = task("t1", [{"name": "a"}, {"name": "b", "dependsOn": [{"containerName": "a", "condition": "START"}]}], status="STOPPED")
    p = diff.plan([t], [ac("t1", "a"), ac("t1", "b")], NODE)
    assert kinds(p) == [("Stop", "t1", "b"), ("Stop", "t1", "a")]
    r = diff.task_report("t1", t, [ac("t1", "a", "exited", exit_code=143), ac("t1", "b", "exited", exit_code=143)])
    assert r.lastStatus == "STOPPED" and r.stopCode is None


def test_absent_task_is_stopped_and_removed_with_its_network_other_nodes_untouched():
    actual = [ac("gone", "a", started=1.0), ac("gone", "b", "exited", exit_code=0), ac("other", "a", node="n2")]
    p = diff.plan([], actual, NODE, networks={"gone": "dockyard-task-gone", "old": "dockyard-task-old"})
    k = kinds(p)
    assert k[0] == ("Stop", "gone", "a") and sorted(k[1:3]) == [("Remove", "gone", "a"), ("Remove", "gone", "b")]
    assert k[3:] == [("RemoveNetwork", "gone", ""), ("RemoveNetwork", "old", "")]


def test_no_document_means_no_desired_but_agent_never_plans_without_one():
    # The shell only calls plan() once a desired doc arrived; plan([]) removes everything.
    assert any(isinstance(a, Remove) for a in diff.plan([], [ac("t", "a")], NODE).actions)


def test_created_container_is_started_not_recreated():
    t = task("t1", [{"name": "a"}])
    c = ac("t1", "a", "created")
    assert diff.plan([t], [c], NODE).actions == [Start("t1", "a", c.id)]


def test_duplicate_container_is_removed_keeping_the_running_one():
    t = task("t1", [{"name": "a"}])
    keep, dup = ac("t1", "a"), ac("t1", "a", "created")
    p = diff.plan([t], [keep, dup], NODE)
    assert p.actions == [Remove("t1", "a", dup.id)]


def test_report_status_and_health():
    hc = {"command": ["CMD-SHELL", "true"], "interval": 5}
    t = task("t1", [{"name": "a", "healthCheck": hc}, {"name": "b", "healthCheck": hc}, {"name": "s", "essential": False}])
    r = diff.task_report("t1", t, [ac("t1", "a", health="healthy")])
    assert r.lastStatus == "PENDING" and r.healthStatus == "UNKNOWN"
    cs = [ac("t1", "a", health="healthy"), ac("t1", "b", health="healthy")]
    r = diff.task_report("t1", t, cs)
    assert r.lastStatus == "RUNNING" and r.healthStatus == "HEALTHY" and r.startedAt == min(c.started_at for c in cs)
    r = diff.task_report("t1", t, [ac("t1", "a", health="healthy"), ac("t1", "b", health="unhealthy")])
    assert r.healthStatus == "UNHEALTHY"
    fin = Finish("EssentialContainerExited", "Essential container in task exited", "a", 1)
    r = diff.task_report("t1", t, [ac("t1", "a", "exited", exit_code=1), ac("t1", "b")], fin)
    assert r.lastStatus == "STOPPING" and r.stopCode == "EssentialContainerExited"
    r = diff.task_report("t1", t, [ac("t1", "a", "exited", exit_code=1), ac("t1", "b", "exited", exit_code=143)], fin)
    assert r.lastStatus == "STOPPED" and r.stoppedAt is not None and r.containers[0].exitCode == 1
    assert r.containers[2].lastStatus == "STOPPED"  # never created


def test_pull_failure_report():
    t = task("t1", [{"name": "a"}])
    fin = Finish("TaskFailedToStart", "CannotPullContainerError: no such host", "a")
    r = diff.task_report("t1", t, [], fin, pull_error="no such host")
    assert (r.lastStatus, r.stopCode, r.pullError) == ("STOPPED", "TaskFailedToStart", "no such host")
    assert r.containers[0].reason.startswith("CannotPullContainerError")


def test_oom_reason():
    t = task("t1", [{"name": "a"}])
    c = replace(ac("t1", "a", "exited", exit_code=137), oom_killed=True)
    assert diff.task_report("t1", t, [c]).containers[0].reason == "OOMKilled"


# ---- container spec (pure part of the Docker runtime) -------------------------------------------
def test_task_health_follows_the_essential_containers_that_have_a_health_check():
    """ECS's rule (dockyard.health.task_health): an essential sidecar without a health check no
    longer keeps the task UNKNOWN (it used to: every essential container had to be HEALTHY)."""
    hc = {"command": ["CMD", "true"]}
    t = task("t1", [{"name": "web", "healthCheck": hc}, {"name": "side"}, {"name": "probe", "essential": False, "healthCheck": hc}])
    web, side = ac("t1", "web", health="healthy"), ac("t1", "side")
    assert diff.task_report("t1", t, [web, side, ac("t1", "probe", health="unhealthy")]).healthStatus == "HEALTHY"
    assert diff.task_report("t1", t, [ac("t1", "web", health="starting"), side]).healthStatus == "UNKNOWN"
    assert diff.task_report("t1", t, [ac("t1", "web", health="unhealthy"), side]).healthStatus == "UNHEALTHY"
    assert diff.task_report("t1", t, [side]).healthStatus == "UNKNOWN"  # web not created yet
    # no essential container has a check: UNKNOWN whatever the others report
    t2 = task("t2", [{"name": "a"}, {"name": "b", "essential": False, "healthCheck": hc}])
    assert diff.task_report("t2", t2, [ac("t2", "a"), ac("t2", "b", health="healthy")]).healthStatus == "UNKNOWN"
    # a task no longer desired: labels say which are essential, Docker's health which have a check
    assert diff.task_report("t1", None, [web, side]).healthStatus == "HEALTHY"
    assert diff.task_report("t1", None, [ac("t1", "web", health="unhealthy"), side]).healthStatus == "UNHEALTHY"
    assert diff.task_report("t1", None, [side]).healthStatus == "UNKNOWN"


def test_create_spec_labels_ports_limits_health():
    from agent.docker_runtime import build_create_spec, credentials_env, registry_auth

    t = DesiredTask(taskId="0123456789abcdef0123", family="web", revision=3, taskDefinition=tdef([{
        "name": "web", "command": ["httpd", "-f"], "cpu": 1, "memory": 64, "memoryReservation": 32,
        "portMappings": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 8081}],
        "environment": [{"name": "A", "value": 1}], "dockerLabels": {"team": "x", "dockyard.node": "evil"},
        "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5, "startPeriod": 2},
        "stopTimeout": 5, "essential": True}]))
    s = build_create_spec(t, t.taskDefinition.containerDefinitions[0], NODE, "prod")
    assert s.name == "dockyard-web-3-web-01234567"
    assert s.labels["dockyard.node"] == NODE and s.labels["team"] == "x" and s.labels["dockyard.task"] == t.taskId
    assert s.labels["dockyard.revision"] == "3" and s.labels["dockyard.stop-timeout"] == "5" and s.labels["dockyard.essential"] == "true"
    b, h = s.body, s.body["HostConfig"]
    assert h["PortBindings"] == {"80/tcp": [{"HostPort": ""}], "81/tcp": [{"HostPort": "8081"}]}
    assert h["CpuShares"] == 2 and h["Memory"] == 64 << 20 and h["MemoryReservation"] == 32 << 20
    assert h["NetworkMode"] == "bridge" and h["RestartPolicy"] == {"Name": "no"}
    assert b["Env"] == ["A=1"] and b["StopTimeout"] == 5
    assert b["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5 * 10**9, "Timeout": 5 * 10**9,
                                "Retries": 3, "StartPeriod": 2 * 10**9}
    f = DesiredTask(taskId="f" * 20, family="web", revision=1, launchType="FARGATE",
                    taskDefinition=tdef([{"name": "web", "portMappings": [{"containerPort": 80}]}], cpu="512", memory="1GB"))
    s = build_create_spec(f, f.taskDefinition.containerDefinitions[0], NODE, "prod")
    h = s.body["HostConfig"]
    assert "PortBindings" not in h and h["NanoCpus"] == 500_000_000 and h["Memory"] == 32 << 20
    assert h["NetworkMode"] == s.network == "dockyard-task-ffffffffffff"
    assert credentials_env("my-reg.cred") == "DOCKYARD_REGISTRY_AUTH_MY_REG_CRED"
    c = tdef([{"name": "x", "image": "reg.example:5000/a/b", "repositoryCredentials": {"credentialsParameter": "my-reg"}}]).containerDefinitions[0]
    assert registry_auth(c, {"DOCKYARD_REGISTRY_AUTH_MY_REG": "u:p:w"}) == {"username": "u", "password": "p:w", "serveraddress": "reg.example:5000"}
    assert registry_auth(c, {}) is None


# ---- properties -----------------------------------------------------------------------------------
CONDS = ["START", "COMPLETE", "SUCCESS", "HEALTHY"]
HC = {"command": ["CMD-SHELL", "true"], "interval": 5}


@st.composite
def task_defs(draw, tid: str) -> DesiredTask:
    n = draw(st.integers(1, 4))
    with_hc = [draw(st.booleans()) for _ in range(n)]
    containers = []
    for i in range(n):
        deps = []
        for j in draw(st.sets(st.integers(0, i - 1), max_size=2)) if i else []:
            conds = CONDS if with_hc[j] else CONDS[:3]
            deps.append({"containerName": f"c{j}", "condition": draw(st.sampled_from(conds))})
        c = {"name": f"c{i}", "essential": draw(st.booleans()), "dependsOn": deps}
        if with_hc[i]:
            c["healthCheck"] = HC
        containers.append(c)
    if not any(c["essential"] for c in containers):
        containers[0]["essential"] = True
    return task(tid, containers, status=draw(st.sampled_from(["RUNNING", "RUNNING", "STOPPED"])))


STATES = st.sampled_from(["created", "running", "exited", "missing", "missing"])


@st.composite
def scenarios(draw):
    tasks = [draw(task_defs(f"t{i}")) for i in range(draw(st.integers(0, 3)))]
    actual: list[ActualContainer] = []
    for t in tasks:
        for d in t.taskDefinition.containerDefinitions:
            s = draw(STATES)
            if s == "missing":
                continue
            health = draw(st.sampled_from([None, "starting", "healthy", "unhealthy"])) if d.healthCheck and s != "created" else None
            actual.append(ac(t.taskId, d.name, s, exit_code=draw(st.sampled_from([0, 1, 137])), health=health,
                             essential=d.essential))
            if draw(st.integers(0, 9)) == 0:  # a duplicate
                actual.append(ac(t.taskId, d.name, draw(st.sampled_from(["created", "exited"])), exit_code=0, essential=d.essential))
    for i in range(draw(st.integers(0, 2))):  # tasks no longer desired
        for name in ("a", "b", "a")[: draw(st.integers(2, 3))]:  # sometimes a duplicate "a"
            actual.append(ac(f"gone{i}", name, draw(st.sampled_from(["created", "running", "exited"])), exit_code=0))
    for i in range(draw(st.integers(0, 2))):  # another node's containers, also of desired tasks
        tid = tasks[0].taskId if tasks and i == 0 else f"x{i}"
        actual.append(ac(tid, "c0", draw(st.sampled_from(["created", "running", "exited"])), node="n2", exit_code=1))
    finished = {t.taskId: Finish(diff.FAILED_TO_START, "y") for t in tasks if draw(st.integers(0, 5)) == 0}
    networks = {t: f"net-{t}" for t in draw(st.sets(st.sampled_from(["t0", "gone0", "old"]), max_size=2))}
    return tasks, actual, finished, networks


def simulate(tasks, actual, plan: diff.Plan, node: str = NODE):
    """Apply ``plan`` in order to a simulated engine, checking preconditions at every step."""
    state = {c.id: c for c in actual}
    by_task = {t.taskId: t for t in tasks}
    created: dict[tuple[str, str], str] = {}
    networks_removed = []
    for a in plan.actions:
        if isinstance(a, Create):
            t = a.task
            cur = {c.container_name: c for c in state.values() if c.task_id == t.taskId and c.node == node}
            assert a.container_name not in cur, "never recreate an existing container"
            for dep in a.definition.dependsOn:
                assert diff.condition_state(dep, cur.get(dep.containerName)) == diff.OK, f"{a.container_name} created before {dep}"
            c = ac(t.taskId, a.container_name, "created", essential=a.definition.essential)
            state[c.id] = c
            created[(t.taskId, a.container_name)] = c.id
        elif isinstance(a, Start):
            cid = a.docker_id or created[(a.task_id, a.container_name)]
            c = state[cid]
            assert c.node == node and c.state == "created"
            t = by_task[a.task_id]
            cur = {x.container_name: x for x in state.values() if x.task_id == t.taskId and x.node == node and x.id != cid}
            d = next(d for d in t.taskDefinition.containerDefinitions if d.name == a.container_name)
            for dep in d.dependsOn:
                assert diff.condition_state(dep, cur.get(dep.containerName)) == diff.OK
            state[cid] = replace(c, state="running", started_at=1e9, health="starting" if d.healthCheck else None)
        elif isinstance(a, Stop):
            c = state[a.docker_id]
            assert c.node == node and c.running
            state[a.docker_id] = replace(c, state="exited", exit_code=143, finished_at=2e9)
        elif isinstance(a, Remove):
            assert state[a.docker_id].node == node
            del state[a.docker_id]
        elif isinstance(a, RemoveNetwork):
            networks_removed.append(a.task_id)
    return list(state.values()), networks_removed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_plan_invariants(sc):
    tasks, actual, finished, networks = sc
    p = diff.plan(tasks, actual, NODE, finished, networks)
    desired_ids = {t.taskId for t in tasks}
    ours = {c.id for c in actual if c.node == NODE}
    # never act on other nodes' containers
    for a in p.actions:
        if getattr(a, "docker_id", None):
            assert a.docker_id in ours
    # finished / stopped tasks are never (re)started
    done = set(finished) | set(p.finished) | {t.taskId for t in tasks if t.desiredStatus == "STOPPED"}
    assert not [a for a in p.actions if isinstance(a, (Create, Start)) and a.task_id in done]
    assert not set(p.finished) & set(finished)
    # reverse dependency order for stops within a desired task
    for t in tasks:
        order = start_order(t.taskDefinition.containerDefinitions)
        stops = [a.container_name for a in p.actions if isinstance(a, Stop) and a.task_id == t.taskId]
        assert stops == sorted(stops, key=lambda n: -order.index(n))
    after, nets_removed = simulate(tasks, actual, p)
    # every container of a task absent from the doc is removed, and its network
    assert not [c for c in after if c.node == NODE and c.task_id not in desired_ids]
    assert {t for t in networks if t not in desired_ids} <= set(nets_removed)
    # other nodes' containers untouched
    assert sorted(c.id for c in after if c.node != NODE) == sorted(c.id for c in actual if c.node != NODE)
    # idempotence: re-planning the result gives nothing more to do
    fin2 = {**finished, **p.finished}
    nets2 = {t: n for t, n in networks.items() if t not in nets_removed}
    p2 = diff.plan(tasks, after, NODE, fin2, nets2)
    assert p2.actions == [], kinds(p2)
    assert p2.finished == {}
    # reports are consistent: a finished task never reports RUNNING
    for t in tasks:
        r = diff.task_report(t.taskId, t, [c for c in after if c.task_id == t.taskId and c.node == NODE], fin2.get(t.taskId))
        if t.taskId in fin2 or t.desiredStatus == "STOPPED":
            assert r.lastStatus == "STOPPED"


# ---- the click command (builds AgentConfig; run() itself is covered by the integration tests) -----
def test_agent_command_builds_config(monkeypatch):
    from click.testing import CliRunner

    import agent.main as m

    seen = {}
    monkeypatch.setattr(m, "run", lambda cfg: seen.setdefault("cfg", cfg) and 0)
    monkeypatch.setenv("DOCKYARD_MQTT", "mqtt://broker:1884")
    r = CliRunner().invoke(m.agent_command, ["--node-id", "n7", "--attribute", "zone=a", "--attribute", "disk = ssd",
                                             "--fargate", "--runtime", "hollow", "--hollow-count", "3",
                                             "--image-pull-behavior", "prefer-cached"])
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert (cfg.node_id, cfg.cluster, cfg.mqtt_url) == ("n7", "default", "mqtt://broker:1884")
    assert cfg.attributes == {"zone": "a", "disk": "ssd"} and cfg.capacity_providers == ["EC2", "FARGATE"]
    assert (cfg.runtime, cfg.hollow_count, cfg.image_pull_behavior) == ("hollow", 3, "prefer-cached")


def test_agent_command_rejects_bad_attribute():
    from click.testing import CliRunner

    from agent.main import agent_command

    r = CliRunner().invoke(agent_command, ["--node-id", "n7", "--attribute", "novalue"])
    assert r.exit_code == 2 and "--attribute" in r.output and "key=value" in r.output


def test_hollow_node_ids():
    from agent.main import AgentConfig, make_agents

    assert [a.node_id for a in make_agents(AgentConfig(node_id="h", runtime="hollow", hollow_count=3))] == ["h-0", "h-1", "h-2"]
    assert [a.node_id for a in make_agents(AgentConfig(node_id="h", runtime="hollow"))] == ["h"]


# ---- the cleanup wait (ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION) -----------------------------------------------------
def test_a_task_no_longer_desired_keeps_its_stopped_containers_for_the_cleanup_wait():
    exited = ActualContainer(id="c1", task_id="t9", container_name="web", node=NODE, state="exited", exit_code=0,
                             started_at=900.0, finished_at=1000.0)
    p = diff.plan([], [exited], NODE, networks={"t9": "net9"}, volumes={"t9": ["v9"]}, now=1000.0 + 3599,
                  cleanup_wait=3600)
    assert p.actions == []  # kept, with its network and volumes
    p = diff.plan([], [exited], NODE, networks={"t9": "net9"}, volumes={"t9": ["v9"]}, now=1000.0 + 3600,
                  cleanup_wait=3600)
    assert [type(a).__name__ for a in p.actions] == ["Remove", "RemoveNetwork", "RemoveVolume"]
    assert [type(a).__name__ for a in diff.plan([], [exited], NODE, now=1001.0).actions] == ["Remove"]  # no wait


def test_a_running_task_no_longer_desired_is_stopped_and_kept_and_one_that_never_ran_removed():
    running = ActualContainer(id="c1", task_id="t9", container_name="web", node=NODE, state="running",
                              started_at=900.0)
    p = diff.plan([], [running], NODE, now=1000.0, cleanup_wait=3600)
    assert [type(a).__name__ for a in p.actions] == ["Stop"]
    created = ActualContainer(id="c2", task_id="t8", container_name="web", node=NODE, state="created")
    p = diff.plan([], [created], NODE, now=1000.0, cleanup_wait=3600)
    assert [type(a).__name__ for a in p.actions] == ["Remove"]
    assert diff.cleanup_due([running], 1000.0, 3600) == 4600.0
