"""ECS's container restartPolicy: the model, the pure decision (agent.diff), the count in reports."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent import diff
from agent.diff import Restart, Stop
from agent.runtime import L_ESSENTIAL, L_STOP_TIMEOUT, ActualContainer
from agent.state import NodeState
from dockyard import log
from dockyard.ecs import ContainerDefinition, TaskDefinitionSpec
from dockyard.wire import ContainerReport, DesiredTask
from orchestrator import render
from orchestrator.manifests import _errors

NODE = "n1"
T0 = 1_700_000_000.0


def policy(**kw) -> dict:
    return {"enabled": True, "restartAttemptPeriod": 60, **kw}


def task(containers: list[dict], status: str = "RUNNING") -> DesiredTask:
    for c in containers:
        c.setdefault("image", "busybox")
        c.setdefault("memory", 32)
    spec = TaskDefinitionSpec.model_validate({"family": "fam", "containerDefinitions": containers})
    return DesiredTask(taskId="t1", family="fam", revision=1, desiredStatus=status, taskDefinition=spec)


def ac(name: str, state: str = "running", ran: float = 0.0, exit_code: int | None = None, essential: bool = True,
       cid: str | None = None) -> ActualContainer:
    return ActualContainer(
        id=cid or f"id-{name}", task_id="t1", container_name=name, node=NODE, state=state,
        exit_code=exit_code if state == "exited" else None, started_at=T0,
        finished_at=T0 + ran if state == "exited" else None,
        labels={L_ESSENTIAL: "true" if essential else "false", L_STOP_TIMEOUT: "5"},
    )


def cdef(**kw) -> ContainerDefinition:
    return ContainerDefinition.model_validate({"name": "app", "image": "busybox", **kw})


# ---- the model ---------------------------------------------------------------------------------------
def test_model_defaults_and_ecs_limits_with_field_paths():
    assert cdef(restartPolicy={"enabled": True}).restartPolicy.restartAttemptPeriod == 300
    assert cdef(restartPolicy={"enabled": True, "restartAttemptPeriod": 1800}).restartPolicy is not None
    for bad in ({"enabled": True, "restartAttemptPeriod": 59}, {"enabled": True, "restartAttemptPeriod": 1801},
                {"enabled": True, "ignoredExitCodes": list(range(51))}, {"ignoredExitCodes": []}):
        with pytest.raises(ValidationError) as ei:
            TaskDefinitionSpec.model_validate(
                {"family": "f", "containerDefinitions": [{"name": "a", "image": "x", "memory": 8, "restartPolicy": bad}]})
        fields = [e.field for e in _errors(ei.value, "s", "TaskDefinition", "f", "spec")]
        assert fields and all(f.startswith("spec.containerDefinitions[0].restartPolicy.") for f in fields), fields
    with pytest.raises(ValidationError, match="between 60 and 1800"):
        cdef(restartPolicy={"enabled": True, "restartAttemptPeriod": 30})


# ---- the decision --------------------------------------------------------------------------------------
@pytest.mark.parametrize("rp, c, due", [
    (policy(), ac("app", "exited", ran=60, exit_code=1), True),           # ran exactly the period
    (policy(), ac("app", "exited", ran=59.9, exit_code=1), False),        # exited too soon: no restart
    (policy(), ac("app", "exited", ran=600, exit_code=0), True),          # exit 0 restarts too (ECS)
    (policy(ignoredExitCodes=[0, 3]), ac("app", "exited", ran=600, exit_code=3), False),
    (policy(ignoredExitCodes=[0, 3]), ac("app", "exited", ran=600, exit_code=1), True),
    (policy(enabled=False), ac("app", "exited", ran=600, exit_code=1), False),
    (None, ac("app", "exited", ran=600, exit_code=1), False),
    (policy(), ac("app", "running"), False),
    (policy(), ac("app", "created"), False),
])
def test_restart_due(rp, c, due):
    assert diff.restart_due(cdef(restartPolicy=rp), c) is due


def test_restart_due_uses_now_only_without_finished_at():
    c = ActualContainer(id="x", task_id="t1", container_name="app", node=NODE, state="dead", started_at=T0)
    d = cdef(restartPolicy=policy())
    assert not diff.restart_due(d, c)
    assert not diff.restart_due(d, c, now=T0 + 10)
    assert diff.restart_due(d, c, now=T0 + 61)


def test_essential_container_that_ran_long_enough_is_restarted_in_place_and_task_keeps_running():
    t = task([{"name": "app", "restartPolicy": policy()}, {"name": "side", "essential": False}])
    cs = [ac("app", "exited", ran=120, exit_code=1), ac("side", essential=False)]
    p = diff.plan([t], cs, NODE, now=T0 + 121)
    assert p.actions == [Restart("t1", "app", "id-app")]
    assert p.finished == {}
    r = diff.task_report("t1", t, cs, restarts={"id-app": 2})
    assert r.lastStatus == "RUNNING" and r.stopCode is None
    app = next(c for c in r.containers if c.name == "app")
    assert (app.lastStatus, app.exitCode, app.restartCount) == ("STOPPED", 1, 2)


def test_essential_container_that_exited_too_soon_stops_the_task():
    t = task([{"name": "app", "restartPolicy": policy()}, {"name": "side", "essential": False}])
    cs = [ac("app", "exited", ran=5, exit_code=1), ac("side", essential=False)]
    p = diff.plan([t], cs, NODE, now=T0 + 6)
    assert p.finished["t1"].stop_code == diff.ESSENTIAL_EXITED and p.finished["t1"].container == "app"
    assert p.actions == [Stop("t1", "side", "id-side", 5)]
    assert not any(isinstance(a, Restart) for a in p.actions)


@pytest.mark.parametrize("rp", [policy(enabled=False), policy(ignoredExitCodes=[1]), None])
def test_essential_exit_without_a_due_restart_stops_the_task(rp):
    t = task([{"name": "app", "restartPolicy": rp}])
    p = diff.plan([t], [ac("app", "exited", ran=600, exit_code=1)], NODE, now=T0 + 601)
    assert "t1" in p.finished and p.actions == []


def test_non_essential_container_is_restarted_or_left_exited_and_the_task_runs_on():
    t = task([{"name": "app"}, {"name": "side", "essential": False, "restartPolicy": policy()}])
    long = [ac("app"), ac("side", "exited", ran=61, exit_code=2, essential=False)]
    p = diff.plan([t], long, NODE, now=T0 + 62)
    assert p.actions == [Restart("t1", "side", "id-side")] and p.finished == {}
    short = [ac("app"), ac("side", "exited", ran=3, exit_code=2, essential=False)]
    p = diff.plan([t], short, NODE, now=T0 + 62)
    assert p.actions == [] and p.finished == {}
    assert diff.task_report("t1", t, short).lastStatus == "RUNNING"


def test_finished_or_stopping_tasks_are_never_restarted():
    t = task([{"name": "app", "restartPolicy": policy()}])
    cs = [ac("app", "exited", ran=600, exit_code=1)]
    fin = {"t1": diff.Finish(diff.ESSENTIAL_EXITED, "x", "app", 1)}
    assert diff.plan([t], cs, NODE, fin, now=T0 + 601).actions == []
    stopping = task([{"name": "app", "restartPolicy": policy()}], status="STOPPED")
    assert diff.plan([stopping], cs, NODE, now=T0 + 601).actions == []
    assert diff.plan([], cs, NODE, now=T0 + 601).actions[-1] == diff.Remove("t1", "app", "id-app")


def test_a_restart_that_ran_long_enough_again_is_restarted_again_until_it_exits_too_soon():
    """Docker's StartedAt moves with each start: the period counts from the last restart."""
    t = task([{"name": "app", "restartPolicy": policy()}])
    second = ActualContainer(id="id-app", task_id="t1", container_name="app", node=NODE, state="exited", exit_code=1,
                             started_at=T0 + 500, finished_at=T0 + 530, labels={})
    p = diff.plan([t], [second], NODE, now=T0 + 531)
    assert p.actions == [] and "t1" in p.finished


# ---- counting and showing -------------------------------------------------------------------------------
def test_state_counts_restarts_per_container_and_forgets_removed_ones():
    st = NodeState(NODE, log.get("test"))
    assert st.restarted("a") == 1 and st.restarted("a") == 2 and st.restarted("b") == 1
    st.actual = [ac("x", cid="a")]
    st.prune({"t1"})
    assert st.restarts == {"a": 2}


def test_wire_report_from_an_older_agent_has_restart_count_zero():
    assert ContainerReport.model_validate({"name": "app"}).restartCount == 0


def test_describe_task_shows_the_restart_count():
    out = render.describe_task({"taskId": "t1", "containers": [
        {"name": "app", "lastStatus": "RUNNING", "restartCount": 3, "dockerId": "abc"}]}, T0)
    header, row = [ln for ln in out.splitlines() if "app" in ln or "RESTARTS" in ln]
    col = header.index("RESTARTS")
    assert row[col:col + 8].strip() == "3"


def test_restart_counts_survive_an_agent_restart_through_the_state_dir(tmp_path):
    from agent.hollow import HollowRuntime
    from agent.main import Agent, AgentConfig

    def agent() -> Agent:
        rt = HollowRuntime()
        rt.name = "docker"  # counts are kept for the docker runtime only
        return Agent(AgentConfig(node_id="n1", state_dir=str(tmp_path / "st")), "n1", rt)

    a = agent()
    a._load_restarts()  # nothing saved yet
    assert a.state.restarts == {}
    a.state.restarted("cid1")
    a.executor.on_restart()
    b = agent()
    b._load_restarts()
    assert b.state.restarts == {"cid1": 1}
    (tmp_path / "st" / "restarts.json").write_text("not json")
    c = agent()
    c._load_restarts()  # a damaged file is logged, not fatal
    assert c.state.restarts == {}


@settings(max_examples=300, deadline=None)
@given(ran=st.integers(0, 4000).map(lambda x: x / 10), code=st.integers(0, 3), ignored=st.lists(st.integers(0, 3), max_size=3),
       enabled=st.booleans(), essential=st.booleans(), status=st.sampled_from(["RUNNING", "STOPPED"]),
       known_finished=st.booleans())
def test_property_restart_xor_exit_handling(ran, code, ignored, enabled, essential, status, known_finished):
    """An exited container is either restarted in place (task not finished, policy due) or handled as
    without a policy (essential: the task finishes); never both, never for a finished/stopping task."""
    rp = {"enabled": enabled, "ignoredExitCodes": ignored, "restartAttemptPeriod": 60}
    t = task([{"name": "app", "essential": essential, "restartPolicy": rp}, {"name": "keep"}], status=status)
    cs = [ac("app", "exited", ran=ran, exit_code=code, essential=essential), ac("keep")]
    fin = {"t1": diff.Finish(diff.ESSENTIAL_EXITED, "x", "app", code)} if known_finished else {}
    p = diff.plan([t], cs, NODE, fin, now=T0 + ran + 1)
    restarted = [a for a in p.actions if isinstance(a, Restart)]
    due = enabled and code not in ignored and ran >= 60
    assert bool(restarted) == (due and status == "RUNNING" and not known_finished)
    if restarted:
        assert p.finished == {} and p.actions == restarted
    elif essential and status == "RUNNING" and not known_finished:
        assert p.finished["t1"].container == "app"
    else:
        assert p.finished == {}
