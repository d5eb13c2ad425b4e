"""Pure decision logic of the CLI: `run --wait` exit codes and `rollout status` verdicts."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.client.decisions import (
    essential_containers,
    rollout_verdict,
    run_exit_code,
    task_exit_status,
)


def task(tid="t1", containers=(), **kw):
    return {"taskId": tid, "lastStatus": "STOPPED", "containers": list(containers), **kw}


def c(name, code=None, reason=None):
    return {"name": name, "exitCode": code, "reason": reason}


# ---- run --wait ---------------------------------------------------------------------------
def test_first_essential_container_with_exit_code_in_container_order():
    t = task(containers=[c("side", 9), c("a", None), c("b", 4), c("c", 5)])
    assert task_exit_status(t, {"a", "b", "c"})[0] == 4


def test_non_essential_exit_codes_are_ignored():
    t = task(containers=[c("side", 1), c("main", 0)])
    assert task_exit_status(t, {"main"}) == (0, "task t1 stopped: container main exited with code 0")


def test_unknown_task_definition_treats_all_containers_as_essential():
    assert task_exit_status(task(containers=[c("side", 7), c("main", 0)]), None)[0] == 7


def test_stopped_without_exit_code_is_1_with_stopped_reason():
    t = task(containers=[c("main")], stopCode="TaskFailedToStart", stoppedReason="CannotPullContainerError: nope")
    code, line = task_exit_status(t, {"main"})
    assert code == 1
    assert line == "task t1 stopped without an exit code: TaskFailedToStart: CannotPullContainerError: nope"


def test_exit_code_zero_essential_even_if_only_non_essential_missing():
    assert task_exit_status(task(containers=[c("main", 0), c("side")]), {"main"})[0] == 0


def test_out_of_range_exit_codes_become_1():
    assert task_exit_status(task(containers=[c("m", -1)]), None)[0] == 1
    assert task_exit_status(task(containers=[c("m", 256)]), None)[0] == 1


def test_several_tasks_first_non_zero_in_task_order():
    tasks = [task("a", [c("m", 0)]), task("b", [c("m", 2)]), task("c", [c("m", 5)])]
    code, lines = run_exit_code(tasks, {"m"})
    assert code == 2 and len(lines) == 3
    assert run_exit_code([task("a", [c("m", 0)]), task("b", [c("m", 0)])], {"m"})[0] == 0
    assert run_exit_code([task("a", [c("m", 0)]), task("b", [c("m")])], {"m"})[0] == 1


@given(st.lists(st.integers(0, 255), min_size=1, max_size=10))
def test_run_exit_code_is_first_non_zero(codes):
    tasks = [task(str(i), [c("m", code)]) for i, code in enumerate(codes)]
    expected = next((x for x in codes if x != 0), 0)
    assert run_exit_code(tasks, {"m"})[0] == expected


def test_essential_containers_default_true():
    td = {"spec": {"containerDefinitions": [{"name": "a"}, {"name": "b", "essential": False}, {"name": "c", "essential": True}]}}
    assert essential_containers(td) == {"a", "c"}
    assert essential_containers({"spec": {}}) is None


# ---- rollout status -----------------------------------------------------------------------
def dep(id, state="IN_PROGRESS", status="PRIMARY", rollback=False, reason=None, running=0, desired=2):
    return {"id": id, "status": status, "taskDefinition": f"web:{id}", "rolloutState": state, "isRollback": rollback,
            "rolloutStateReason": reason, "runningCount": running, "desiredCount": desired, "pendingCount": 0, "failedTasks": 0}


def svc(*deps, gen=1, observed=1, status="ACTIVE"):
    return {"serviceName": "web", "status": status, "generation": gen, "observedGeneration": observed, "deployments": list(deps)}


def test_primary_completed_is_complete():
    v = rollout_verdict(svc(dep("1", "COMPLETED", running=2)), {"1"}, None)
    assert (v.state, v.tracked) == ("complete", "1")


def test_in_progress_tracks_primary():
    v = rollout_verdict(svc(dep("2"), dep("1", "COMPLETED", "ACTIVE", running=2)), {"1", "2"}, None)
    assert (v.state, v.tracked) == ("progress", "2")
    assert "0/2 running" in v.message and "2 old task(s) running" in v.message


def test_tracked_deployment_failed():
    v = rollout_verdict(svc(dep("2", "FAILED", reason="circuit breaker: 3 tasks failed")), {"2"}, "2")
    assert v.state == "failed" and "circuit breaker: 3 tasks failed" in v.message


def test_new_rollback_deployment_means_failed_even_if_it_completed():
    s = svc(dep("3", "COMPLETED", rollback=True, running=2), dep("2", "IN_PROGRESS", "INACTIVE", reason="tasks kept failing"))
    v = rollout_verdict(s, {"1", "2"}, "2")
    assert v.state == "failed"
    assert v.message == "deployment 2 (web:2) failed and was rolled back to web:3: tasks kept failing"


def test_a_rollback_already_there_at_start_reports_the_failed_deployment_it_replaced():
    # the bad revision failed before the command's first look (a task that exits at once): the
    # outcome is the same as when the command saw it fail, whether the rollback completed or not
    for state in ("COMPLETED", "IN_PROGRESS"):
        s = svc(dep("3", state, rollback=True, running=2), dep("2", "FAILED", "ACTIVE", reason="3 tasks failed"))
        v = rollout_verdict(s, {"2", "3"}, None)
        assert v.state == "failed", state
        assert v.message == "deployment 2 (web:2) failed and was rolled back to web:3: 3 tasks failed"


def test_a_rollback_whose_failed_deployment_is_gone_is_followed():
    # only the rollback is left (the failed one pruned): it is the service's state, followed as usual
    s = svc(dep("3", "COMPLETED", rollback=True, running=2))
    assert rollout_verdict(s, {"3"}, None).state == "complete"


def test_rollback_detected_even_when_failed_deployment_was_pruned():
    v = rollout_verdict(svc(dep("3", rollback=True)), {"2"}, "2")
    assert v.state == "failed" and "rolled back to web:3" in v.message


def test_a_newer_non_rollback_deployment_is_followed():
    s = svc(dep("4"), dep("2", "IN_PROGRESS", "ACTIVE"))
    v = rollout_verdict(s, {"2"}, "2")
    assert (v.state, v.tracked) == ("progress", "4")
    s = svc(dep("4", "COMPLETED", running=2))
    assert rollout_verdict(s, {"2"}, "4").state == "complete"


def test_waits_until_controller_observed_the_generation():
    # an old COMPLETED deployment must not count as success before the controller saw the change
    v = rollout_verdict(svc(dep("1", "COMPLETED", running=2), gen=2, observed=1), {"1"}, None)
    assert v.state == "progress" and "observe generation 2" in v.message


def test_no_deployment_yet_is_progress():
    assert rollout_verdict(svc(gen=1, observed=1), set(), None).state == "progress"


def test_deleted_service_fails():
    assert rollout_verdict(svc(dep("1"), status="DRAINING"), {"1"}, "1").state == "failed"


def test_primary_failed_without_tracking_fails():
    assert rollout_verdict(svc(dep("1", "FAILED")), {"1"}, None).state == "failed"


def test_progress_names_the_proof_and_then_the_bake():
    d = dep("2", running=2) | {"provenCount": 1}
    s = svc(d) | {"spec": {"deploymentConfiguration": {"minimumHealthyTimeSeconds": 10}}}
    v = rollout_verdict(s, {"2"}, None, now=100.0)
    assert v.state == "progress" and "1/2 proven healthy (10s each)" in v.message
    baking = svc(d | {"provenCount": 2, "bakeStartedAt": 95.0, "bakeEndsAt": 105.0})
    v = rollout_verdict(baking, {"2"}, None, now=100.0)
    assert v.state == "progress" and "baking: all 2 tasks proven healthy, completes in 5s" in v.message
