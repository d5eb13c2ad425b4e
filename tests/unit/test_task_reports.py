"""Folding agent reports into Task records (orchestrator.core.tasks)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.wire import ContainerReport, TaskReport
from orchestrator.core.tasks import fold_report
from orchestrator.models import Task
from orchestrator.task_apply import apply_report, mark_stopped, request_stop

T0 = 1_000_000.0


def task(**kw) -> Task:
    base = dict(cluster="default", taskDefinition="web:1", family="web", revision=1, group="service:web",
                serviceName="web", nodeId="n1", lastStatus="PENDING")
    base.update(kw)
    return Task(**base)


def report(tid: str, status: str, **kw) -> TaskReport:
    return TaskReport(taskId=tid, lastStatus=status, **kw)


def web(status: str = "RUNNING", **kw) -> ContainerReport:
    return ContainerReport(name="web", lastStatus=status, **kw)


def test_running_sets_started_at_from_the_report():
    t = task()
    out = apply_report(t, report(t.taskId, "RUNNING", startedAt=T0 - 5, containers=[web()]), T0)
    assert out.changed and not out.stopped_now and not out.failure
    assert t.lastStatus == "RUNNING" and t.startedAt == T0 - 5
    assert [c.name for c in t.containers] == ["web"] and t.containers[0].lastStatus == "RUNNING"


def test_running_without_started_at_uses_now():
    t = task()
    apply_report(t, report(t.taskId, "RUNNING"), T0)
    assert t.startedAt == T0


def test_started_at_is_kept_once_set():
    t = task()
    apply_report(t, report(t.taskId, "RUNNING", startedAt=T0), T0)
    apply_report(t, report(t.taskId, "RUNNING", startedAt=T0 + 50), T0 + 60)
    assert t.startedAt == T0


def test_stopped_on_its_own_is_an_essential_container_exit_and_a_failure():
    t = task(lastStatus="RUNNING", startedAt=T0)
    r = report(t.taskId, "STOPPED", containers=[web("STOPPED", exitCode=1)], stoppedAt=T0 + 10)
    out = apply_report(t, r, T0 + 11)
    assert out.changed and out.stopped_now and out.failure
    assert t.lastStatus == "STOPPED" and t.desiredStatus == "STOPPED"
    assert t.stopCode == "EssentialContainerExited"
    assert t.stoppedReason == "Essential container in task exited"
    assert t.stoppedAt == T0 + 10 and t.stoppingAt == T0 + 10
    assert t.containers[0].exitCode == 1
    assert not t.active


def test_stopped_on_its_own_keeps_the_agents_stop_code_and_reason():
    t = task()
    r = report(t.taskId, "STOPPED", stopCode="TaskFailedToStart", stoppedReason="CannotPullContainerError: nope")
    out = apply_report(t, r, T0)
    assert out.failure and t.stopCode == "TaskFailedToStart" and "CannotPull" in t.stoppedReason


def test_stopped_with_a_non_failure_code_is_not_a_failure():
    t = task(lastStatus="RUNNING")
    out = apply_report(t, report(t.taskId, "STOPPED", stopCode="UserInitiated", stoppedReason="docker stop"), T0)
    assert out.stopped_now and not out.failure


def test_stop_requested_keeps_user_initiated_stop_code():
    t = task(lastStatus="RUNNING", startedAt=T0)
    assert request_stop(t, "UserInitiated", "Task stopped by user", T0 + 1)
    assert t.desiredStatus == "STOPPED" and t.lastStatus == "RUNNING" and t.stoppingAt == T0 + 1
    out = apply_report(t, report(t.taskId, "STOPPED", stopCode="EssentialContainerExited",
                                 stoppedReason="Essential container in task exited",
                                 containers=[web("STOPPED", exitCode=143)]), T0 + 5)
    assert out.stopped_now and not out.failure
    assert t.stopCode == "UserInitiated" and t.stoppedReason == "Task stopped by user"
    assert t.lastStatus == "STOPPED" and t.stoppingAt == T0 + 1


def test_request_stop_twice_is_a_noop():
    t = task(lastStatus="RUNNING")
    assert request_stop(t, "UserInitiated", "first", T0)
    assert not request_stop(t, "ServiceSchedulerInitiated", "second", T0 + 1)
    assert t.stopCode == "UserInitiated" and t.stoppedReason == "first" and t.stoppingAt == T0


def test_request_stop_of_an_unplaced_task_stops_it_at_once():
    t = task(nodeId=None, lastStatus="PROVISIONING")
    assert request_stop(t, "ServiceSchedulerInitiated", "Scaling activity", T0)
    assert t.lastStatus == "STOPPED" and t.stoppedAt == T0 and t.stopCode == "ServiceSchedulerInitiated"


def test_repeated_identical_report_is_not_a_change():
    t = task()
    r = report(t.taskId, "RUNNING", healthStatus="HEALTHY", startedAt=T0, ipAddress="10.0.0.5",
               containers=[web(healthStatus="HEALTHY", dockerId="abc", exitCode=None)])
    assert apply_report(t, r, T0).changed
    assert not apply_report(t, r, T0 + 1).changed
    assert not apply_report(t, r.model_copy(), T0 + 2).changed


def test_a_container_change_in_any_field_is_a_change_and_a_repeat_keeps_the_held_list():
    from orchestrator.core.tasks import fold_report

    base = dict(healthStatus="HEALTHY", dockerId="abc", image="busybox", restartCount=0,
                networkBindings=[{"containerPort": 80, "hostPort": 32768}])
    t = task()
    apply_report(t, report(t.taskId, "RUNNING", containers=[web(**base)]), T0)
    held = t.containers
    changes, out = fold_report(t, report(t.taskId, "RUNNING", containers=[web(**base)]), T0 + 1)
    assert "containers" not in changes and not out.changed and t.containers is held
    for field, value in [("healthStatus", "UNHEALTHY"), ("dockerId", "def"), ("image", "other"),
                         ("restartCount", 1), ("exitCode", 3), ("reason", "oom"),
                         ("networkBindings", [{"containerPort": 80, "hostPort": 32769}]),
                         ("networkBindings", [])]:
        r = report(t.taskId, "RUNNING", containers=[web(**{**base, field: value})])
        changes, out = fold_report(t, r, T0 + 2)
        assert out.changed and changes["containers"][0] == type(held[0]).from_report(r.containers[0]), field
    two = report(t.taskId, "RUNNING", containers=[web(**base), ContainerReport(name="log", lastStatus="RUNNING")])
    assert len(fold_report(t, two, T0 + 3)[0]["containers"]) == 2


def test_health_change_is_a_change():
    t = task()
    apply_report(t, report(t.taskId, "RUNNING", healthStatus="UNKNOWN"), T0)
    out = apply_report(t, report(t.taskId, "RUNNING", healthStatus="HEALTHY"), T0 + 1)
    assert out.changed and t.healthStatus == "HEALTHY"


def test_reports_after_stopped_are_ignored():
    t = task(lastStatus="RUNNING")
    apply_report(t, report(t.taskId, "STOPPED"), T0)
    before = t.model_dump()
    out = apply_report(t, report(t.taskId, "RUNNING", healthStatus="HEALTHY"), T0 + 1)
    assert not out.changed and t.model_dump() == before


def test_stopping_report_moves_to_stopping():
    t = task(lastStatus="RUNNING")
    out = apply_report(t, report(t.taskId, "DEACTIVATING"), T0)
    assert out.changed and t.lastStatus == "STOPPING" and not out.stopped_now


def test_provisioning_task_becomes_pending_from_a_pending_report():
    t = task(lastStatus="PROVISIONING")
    out = apply_report(t, report(t.taskId, "PENDING", pullError="pull failed; using local image"), T0)
    assert t.lastStatus == "PENDING" and t.pullError == "pull failed; using local image" and out.changed


def test_ip_address_is_kept_when_a_later_report_omits_it():
    t = task()
    apply_report(t, report(t.taskId, "RUNNING", ipAddress="10.1.0.2"), T0)
    apply_report(t, report(t.taskId, "RUNNING"), T0 + 1)
    assert t.ipAddress == "10.1.0.2"


def test_mark_stopped_keeps_an_existing_stop_code():
    t = task(lastStatus="RUNNING")
    request_stop(t, "UserInitiated", "by user", T0)
    t.containers = []
    mark_stopped(t, "ServiceSchedulerInitiated", "Node n1 lost", T0 + 30)
    assert t.lastStatus == "STOPPED" and t.stopCode == "UserInitiated" and t.stoppedAt == T0 + 30


def test_mark_stopped_stops_containers():
    t = task(lastStatus="RUNNING")
    apply_report(t, report(t.taskId, "RUNNING", containers=[web(), ContainerReport(name="side")]), T0)
    mark_stopped(t, "ServiceSchedulerInitiated", "Node n1 lost", T0 + 30)
    assert all(c.lastStatus == "STOPPED" for c in t.containers)
    assert t.stopCode == "ServiceSchedulerInitiated" and t.stoppedReason == "Node n1 lost"


STATUSES = ["PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(STATUSES), st.sampled_from(["HEALTHY", "UNHEALTHY", "UNKNOWN"])),
                min_size=1, max_size=10), st.booleans())
def test_property_stopped_is_final_and_reported_once(seq, asked):
    t = task(lastStatus="PENDING")
    if asked:
        request_stop(t, "UserInitiated", "by user", T0)
    stopped_now = 0
    for i, (status, health) in enumerate(seq):
        out = apply_report(t, report(t.taskId, status, healthStatus=health), T0 + i)
        stopped_now += out.stopped_now
        if out.failure:
            assert not asked and t.stopCode in ("EssentialContainerExited", "TaskFailedToStart")
        # applying the same report again never changes anything
        assert not apply_report(t, report(t.taskId, status, healthStatus=health), T0 + i).changed
    assert stopped_now == (1 if "STOPPED" in [s for s, _ in seq] else 0)
    if stopped_now:
        assert t.lastStatus == "STOPPED" and t.desiredStatus == "STOPPED" and t.stoppedAt is not None
        assert t.stopCode == ("UserInitiated" if asked else "EssentialContainerExited")


def test_the_core_functions_change_nothing_they_are_given():
    from orchestrator.core.tasks import fold_report, stop_changes, stopped_changes

    t = task(containers=[])
    apply_report(t, report(t.taskId, "RUNNING", containers=[web()]), T0)
    before = t.model_dump()
    changes, out = fold_report(t, report(t.taskId, "STOPPED", containers=[web("STOPPED", exitCode=1)]), T0 + 5)
    assert out.changed and out.stopped_now and changes["lastStatus"] == "STOPPED"
    assert stop_changes(t, "UserInitiated", "by user", T0 + 6)["desiredStatus"] == "STOPPED"
    assert stopped_changes(t, "ServiceSchedulerInitiated", "Node n1 lost", T0 + 7)["containers"][0].lastStatus == "STOPPED"
    assert t.model_dump() == before


def test_set_fields_is_pydantic_assignment():
    """task_apply.set_fields: the same record, fields set and dump as attribute assignment."""
    from orchestrator.task_apply import set_fields

    changes = {"lastStatus": "RUNNING", "nodeId": "n9", "startedAt": 12.5, "pendingReason": None}
    a = task()
    b = a.model_copy(deep=True)
    for k, v in changes.items():
        setattr(a, k, v)
    set_fields(b, dict(changes))
    assert a == b and a.model_fields_set == b.model_fields_set and a.model_dump_json() == b.model_dump_json()


def test_a_first_report_listing_pending_containers_is_a_details_only_change():
    t = task(lastStatus="PENDING", containers=[])
    changes, out = fold_report(t, TaskReport(taskId=t.taskId, lastStatus="PENDING",
                                             containers=[ContainerReport(name="web")]), 0.0)
    assert set(changes) == {"containers"} and out.changed and out.details_only
    changes, out = fold_report(t, TaskReport(taskId=t.taskId, lastStatus="RUNNING",
                                             containers=[ContainerReport(name="web", lastStatus="RUNNING")]), 0.0)
    assert "lastStatus" in changes and out.changed and not out.details_only


def test_the_controller_defers_the_write_of_a_details_only_report(monkeypatch):
    """The loop's flush writes a task's first report (containers PENDING) with its next change
    (RUNNING), not on its own: the controller puts it as details_only."""
    from test_controller_sim import Sim, service, taskdef

    sim = Sim(monkeypatch)
    sim.node_online("n1")
    sim.apply(taskdef(), service(desired=1))
    sim.reconcile()
    (t,) = sim.tasks()
    pending = TaskReport(taskId=t.taskId, lastStatus="PENDING", containers=[ContainerReport(name="web")])
    sim.status("n1", [])  # the document's acknowledgement (the node's observed version is written)
    sim.state.flush(defer_details=True)
    sim.status("n1", [pending])
    assert t.containers and sim.state.flush(defer_details=True) == 0
    assert sim.state.store.load("task")[0].containers == []
    sim.agent_report("n1", kind="update")
    assert t.lastStatus == "RUNNING" and sim.state.flush(defer_details=True) == 1
    stored = sim.state.store.load("task")[0]
    assert stored.lastStatus == "RUNNING" and stored.containers[0].lastStatus == "RUNNING"
