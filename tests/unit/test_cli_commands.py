"""The `dockyard` client commands against a mocked HTTP API (httpx.MockTransport).

Unit tests of the client: request paths and bodies, output, error lines and exit codes.
The real API is exercised end to end by the integration tests.
"""
from __future__ import annotations

import json
import sys
import types

import click
import httpx
import pytest
from click.testing import CliRunner

from dockyard.cli import cli
from orchestrator.client.session import Clock, Session

NOW = 1_700_000_000.0


class FakeApi:
    """Routes (METHOD, path) to canned responses and records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], object] = {}
        self.requests: list[httpx.Request] = []
        self.clock = Clock(sleep=lambda s: None, wallclock=lambda: NOW)

    def invoke(self, *args: str, input: str | None = None, env: dict | None = None):
        """Run the CLI in-process against this fake API (and its clock)."""
        return invoke(*args, input=input, env=env, transport=httpx.MockTransport(self.handler), clock=self.clock)

    def on(self, method: str, path: str, response) -> None:
        self.routes[(method, path)] = response

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = (request.method, request.url.path)
        if key not in self.routes:
            return httpx.Response(404, json={"error": f"no route {key}"})
        resp = self.routes[key]
        if callable(resp):
            resp = resp(request)
        if isinstance(resp, httpx.Response):
            return resp
        if isinstance(resp, list):  # a sequence of answers, the last one repeats
            item = resp.pop(0) if len(resp) > 1 else resp[0]
            return item if isinstance(item, httpx.Response) else httpx.Response(200, json=item)
        return httpx.Response(200, json=resp)

    def bodies(self, method: str, path: str) -> list[dict]:
        return [json.loads(r.content or b"null") for r in self.requests if r.method == method and r.url.path == path]


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("DOCKYARD_CLUSTER", raising=False)
    monkeypatch.delenv("DOCKYARD_SERVER", raising=False)
    monkeypatch.setenv("DOCKYARD_CONFIG", "/nonexistent/dockyard-test/config.yaml")  # no user's contexts


@pytest.fixture
def api():
    return FakeApi()


def invoke(*args: str, input: str | None = None, env: dict | None = None,
           transport: httpx.BaseTransport | None = None, clock: Clock | None = None):
    """Run `dockyard ARGS` in-process; the client gets `transport` (and `clock`) instead of the network."""
    session = Session(transport=transport, clock=clock or Clock())
    return CliRunner().invoke(cli, list(args), input=input, env=env, obj=session)


# ---- errors and exit codes ----------------------------------------------------------------
def test_connection_refused_is_one_clear_line():
    def refuse(request):
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    r = invoke("--server", "http://127.0.0.1:9", "get", "services", transport=httpx.MockTransport(refuse))
    assert r.exit_code == 1
    assert r.stderr == (
        "error: cannot reach the dockyard API at http://127.0.0.1:9 "
        "(is the orchestrator running? start it with: dockyard orchestrator)\n"
    )
    assert r.stdout == ""


def test_timeout_is_reported():
    def slow(request):
        raise httpx.ReadTimeout("timed out", request=request)

    r = invoke("get", "nodes", transport=httpx.MockTransport(slow))
    assert r.exit_code == 1 and "did not answer within 30 s" in r.stderr


def test_api_error_with_field_and_hint(api):
    api.on("POST", "/v1/clusters/default/services/web/scale",
           httpx.Response(400, json={"error": "must be >= 0", "field": "desiredCount", "hint": "use 0 to stop all tasks"}))
    r = api.invoke("scale", "web", "3")
    assert r.exit_code == 1
    assert r.stderr == "error: desiredCount: must be >= 0 (hint: use 0 to stop all tasks)\n"


def test_not_found_and_ambiguous_prefix_messages_are_printed_as_is(api):
    api.on("POST", "/v1/clusters/default/tasks/ab/stop", httpx.Response(409, json={"error": "task id prefix 'ab' is ambiguous: ab12, ab34"}))
    r = api.invoke("stop", "ab")
    assert (r.exit_code, r.stderr) == (1, "error: task id prefix 'ab' is ambiguous: ab12, ab34\n")


def test_fastapi_detail_and_non_json_errors(api):
    api.on("GET", "/v1/clusters/default/services", httpx.Response(422, json={"detail": [{"loc": ["query", "cluster"], "msg": "bad"}]}))
    r = api.invoke("get", "svc")
    assert (r.exit_code, r.stderr) == (1, "error: query.cluster: bad\n")
    api.on("GET", "/v1/clusters/default/nodes", httpx.Response(502, text="<html>Bad gateway</html>"))
    r = api.invoke("get", "nodes")
    assert (r.exit_code, r.stderr) == (1, "error: the API answered HTTP 502: <html>Bad gateway</html>\n")


def test_keyboard_interrupt_exits_130():
    def interrupt(request):
        raise KeyboardInterrupt

    r = invoke("get", "services", transport=httpx.MockTransport(interrupt))
    assert r.exit_code == 130
    assert "Traceback" not in r.output


def test_unexpected_exception_is_one_line_without_traceback(monkeypatch):
    def boom(request):
        raise ZeroDivisionError("division by zero")

    monkeypatch.delenv("DOCKYARD_DEBUG", raising=False)
    r = invoke("get", "services", transport=httpx.MockTransport(boom))
    assert r.exit_code == 1
    assert r.stderr.startswith("error: internal error: ZeroDivisionError: division by zero")
    assert "Traceback" not in r.output


def test_usage_error_exits_2(api):
    r = api.invoke("get", "widgets")
    assert r.exit_code == 2 and "unknown kind 'widgets'" in r.stderr


def test_server_without_scheme_gets_http(api):
    api.on("GET", "/v1/clusters", {"clusters": []})
    r = api.invoke("--server", "localhost:8080", "get", "clusters")
    assert r.exit_code == 0
    assert str(api.requests[0].url).startswith("http://localhost:8080/v1/clusters")


def test_help_lists_daemons_and_version():
    r = invoke("--help")
    assert r.exit_code == 0
    for name in ("apply", "get", "describe", "rollout", "orchestrator", "agent"):
        assert f"  {name} " in r.stdout
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.startswith("dockyard ")


# ---- apply / delete -----------------------------------------------------------------------
MANIFESTS = """apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {name: web}
spec:
  containerDefinitions: [{name: web, image: busybox, memory: 64, logConfiguration: {}}]
---
apiVersion: dockyard/v1
kind: Service
metadata: {name: web}
spec: {taskDefinition: web, desiredCount: 2}
"""


def test_apply_sends_documents_with_sources_and_prints_results(api, tmp_path):
    f = tmp_path / "web.yaml"
    f.write_text(MANIFESTS)
    api.on("POST", "/v1/apply", {"results": [
        {"source": f"{f}#1", "kind": "TaskDefinition", "name": "web", "action": "registered", "detail": "taskdefinition/web:3",
         "ignoredFields": ["containerDefinitions[0].logConfiguration"]},
        {"source": f"{f}#2", "kind": "Service", "name": "web", "action": "created", "detail": None, "ignoredFields": []},
    ]})
    r = api.invoke("-c", "prod", "apply", "-f", str(f))
    assert r.exit_code == 0, r.output
    assert r.stdout == "taskdefinition/web:3 registered\nservice/web created\n"
    assert r.stderr == "warning: taskdefinition/web: ignored unsupported fields: containerDefinitions[0].logConfiguration\n"
    req = api.requests[0]
    assert req.url.params["cluster"] == "prod"
    body = json.loads(req.content)
    assert body["dryRun"] is False
    assert [d["source"] for d in body["documents"]] == [f"{f}#1", f"{f}#2"]
    assert body["documents"][1]["document"]["spec"] == {"taskDefinition": "web", "desiredCount": 2}


def test_apply_result_detail_naming_and_extra_text(api):
    api.on("POST", "/v1/apply", {"results": [
        {"kind": "Task", "name": "batch", "action": "created", "detail": "task/batch (2 started)"},
        {"kind": "Service", "name": "web", "action": "configured", "detail": "desiredCount 2 -> 3"}]})
    r = api.invoke("apply", "-f", "-", input="kind: Task\n")
    assert r.stdout.splitlines() == ["task/batch created (2 started)", "service/web configured (desiredCount 2 -> 3)"]


def test_validation_error_field_not_repeated(api):
    api.on("POST", "/v1/clusters/default/services/web/scale",
           httpx.Response(400, json={"error": "desiredCount: Input should be greater than or equal to 0", "field": "desiredCount"}))
    r = api.invoke("scale", "web", "3")
    assert r.stderr == "error: desiredCount: Input should be greater than or equal to 0\n"


def test_apply_dry_run_from_stdin(api):
    api.on("POST", "/v1/apply", {"results": [{"kind": "Service", "name": "web", "action": "unchanged"}]})
    r = api.invoke("apply", "--dry-run", "-f", "-", input="kind: Service\nmetadata: {name: web}\n")
    assert r.exit_code == 0
    assert r.stdout == "service/web unchanged (dry run)\n"
    body = json.loads(api.requests[0].content)
    assert body["dryRun"] is True and body["documents"][0]["source"] == "<stdin>#1"


def test_apply_yaml_error_never_calls_the_server(api, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("kind: Service\nspec:\n  desiredCount: [1\n")
    r = api.invoke("apply", "-f", str(f))
    assert r.exit_code == 1
    assert r.stderr.startswith(f"error: {f}:4:1 (doc 1): invalid YAML: ")
    assert len(r.stderr.splitlines()) == 1
    assert api.requests == []


def test_apply_validation_errors_one_line_each(api, tmp_path):
    f = tmp_path / "web.yaml"
    f.write_text(MANIFESTS)
    api.on("POST", "/v1/apply", httpx.Response(400, json={"error": "2 documents are invalid", "errors": [
        {"source": f"{f}#1", "kind": "TaskDefinition", "name": "web", "field": "containerDefinitions[0].memory",
         "message": "Input should be greater than or equal to 6", "hint": "memory is in MiB"},
        {"source": f"{f}#2", "kind": "Service", "name": "web", "field": None, "message": "unknown task definition family 'web2'"},
    ]}))
    r = api.invoke("apply", "-f", str(f))
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        (f"error: {f} (doc 1, kind TaskDefinition name web): containerDefinitions[0].memory: "
        "Input should be greater than or equal to 6 (hint: memory is in MiB)"),
        f"error: {f} (doc 2, kind Service name web): unknown task definition family 'web2'",
    ]


def test_delete_by_file_and_by_kind_name(api, tmp_path):
    f = tmp_path / "web.yaml"
    f.write_text(MANIFESTS)
    api.on("POST", "/v1/delete", {"results": [{"kind": "Service", "name": "web", "action": "deleted"}]})
    r = api.invoke("delete", "-f", str(f))
    assert (r.exit_code, r.stdout) == (0, "service/web deleted\n")
    assert len(json.loads(api.requests[-1].content)["documents"]) == 2

    for args, method_path, line in [
        (("svc", "web"), ("DELETE", "/v1/clusters/default/services/web"), "service/web deleted"),
        (("td", "web:3"), ("DELETE", "/v1/taskdefinitions/web:3"), "taskdefinition/web:3 deregistered"),
        (("tasks", "abc"), ("DELETE", "/v1/clusters/default/tasks/abc"), "task/abc stopping"),
        (("node", "n1"), ("DELETE", "/v1/clusters/default/nodes/n1"), "node/n1 deregistered"),
        (("clusters", "prod"), ("DELETE", "/v1/clusters/prod"), "cluster/prod deleted"),
    ]:
        api.on(*method_path, {})
        r = api.invoke("delete", *args)
        assert (r.exit_code, r.stdout.strip()) == (0, line), args
        assert (api.requests[-1].method, api.requests[-1].url.path) == method_path


def test_delete_taskdefinition_needs_revision(api):
    r = api.invoke("delete", "td", "web")
    assert r.exit_code == 1 and "web:REVISION" in r.stderr and api.requests == []


# ---- get / describe -----------------------------------------------------------------------
def mk_task(tid, last="RUNNING", desired="RUNNING", **kw):
    t = {"taskId": tid, "taskDefinition": "web:1", "serviceName": "web", "nodeId": "n1", "lastStatus": last,
         "desiredStatus": desired, "healthStatus": "UNKNOWN", "createdAt": NOW - 10, "containers": []}
    t.update(kw)
    return t


def tasks_route(request):
    status = request.url.params.get("desiredStatus")
    if status == "RUNNING":
        return {"tasks": [mk_task("aaaa00000000111")]}
    return {"tasks": [mk_task("bbbb00000000222", last="STOPPING", desired="STOPPED"),
                      mk_task("cccc00000000333", last="STOPPED", desired="STOPPED")]}


def test_get_tasks_hides_stopped_unless_all(api):
    asked: list[str | None] = []

    def route(request):
        asked.append(request.url.params.get("stopped"))
        return tasks_route(request)

    api.on("GET", "/v1/clusters/default/tasks", route)
    r = api.invoke("get", "tasks")
    assert r.exit_code == 0
    assert asked == ["false", "false"]  # the server leaves the 24 h history out
    ids = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert ids == ["aaaa00000000", "bbbb00000000"]
    r = api.invoke("get", "tasks", "--all", "-o", "json")
    assert [t["taskId"] for t in json.loads(r.stdout)] == ["aaaa00000000111", "bbbb00000000222", "cccc00000000333"]
    assert asked[2:] == [None, None]


def test_get_tasks_service_filter_goes_to_server(api):
    api.on("GET", "/v1/clusters/default/tasks", {"tasks": []})
    r = api.invoke("get", "tasks", "--service", "web")
    assert r.exit_code == 0 and "No tasks found in cluster default." in r.stderr
    assert {req.url.params["service"] for req in api.requests} == {"web"}


def test_get_services_table_yaml_and_name_filter(api):
    svc = {"serviceName": "web", "spec": {"desiredCount": 1}, "runningCount": 1, "pendingCount": 0,
           "taskDefinition": "web:1", "deployments": [{"status": "PRIMARY", "rolloutState": "COMPLETED"}], "createdAt": NOW - 5}
    api.on("GET", "/v1/clusters/prod/services", {"services": [svc, dict(svc, serviceName="api")]})
    r = api.invoke("get", "services", "-c", "prod")
    assert r.exit_code == 0
    assert [line.split()[0] for line in r.stdout.splitlines()] == ["NAME", "api", "web"]
    r = api.invoke("get", "svc", "web", "-o", "yaml", "--cluster", "prod")
    assert r.exit_code == 0 and "serviceName: web" in r.stdout and "api" not in r.stdout
    r = api.invoke("get", "svc", "nope", "-c", "prod")
    assert (r.exit_code, r.stderr) == (1, "error: service nope not found in cluster prod\n")


def test_cluster_from_env(api):
    api.on("GET", "/v1/clusters/staging/nodes", {"nodes": []})
    r = api.invoke("get", "nodes", env={"DOCKYARD_CLUSTER": "staging"})
    assert r.exit_code == 0 and api.requests[0].url.path == "/v1/clusters/staging/nodes"


def test_get_taskdefinitions_and_clusters_endpoints(api):
    api.on("GET", "/v1/taskdefinitions", {"taskDefinitions": [
        {"family": "web", "revision": 2, "status": "ACTIVE", "spec": {"containerDefinitions": [{"name": "web", "memory": 64}]}},
        {"family": "web", "revision": 1, "status": "INACTIVE", "spec": {"containerDefinitions": [{"name": "web", "memory": 64}]}}]})
    r = api.invoke("get", "task-definitions")
    assert [line.split()[:2] for line in r.stdout.splitlines()[1:]] == [["web", "1"], ["web", "2"]]
    api.on("GET", "/v1/clusters", {"clusters": [{"clusterName": "default", "status": "ACTIVE"}]})
    r = api.invoke("get", "clusters")
    assert r.exit_code == 0 and r.stdout.splitlines()[1].split()[:2] == ["default", "ACTIVE"]


def test_describe_service_fetches_service_and_its_tasks(api):
    api.on("GET", "/v1/clusters/default/services/web", {"service": {
        "serviceName": "web", "spec": {"taskDefinition": "web"}, "deployments": [], "events": [
            {"createdAt": NOW - 1, "message": "service web has reached a steady state."}]}})
    api.on("GET", "/v1/clusters/default/tasks", tasks_route)
    r = api.invoke("describe", "svc", "web")
    assert r.exit_code == 0, r.output
    assert "Name:" in r.stdout and "aaaa00000000" in r.stdout and "steady state" in r.stdout
    r = api.invoke("describe", "service", "web", "-o", "json")
    assert json.loads(r.stdout)["serviceName"] == "web"


def test_describe_task_by_prefix_and_taskdef(api):
    api.on("GET", "/v1/clusters/default/tasks/aaaa", mk_task("aaaa00000000111"))  # bare object accepted too
    r = api.invoke("describe", "task", "aaaa")
    assert r.exit_code == 0 and "aaaa00000000111" in r.stdout
    api.on("GET", "/v1/taskdefinitions/web:2", {"taskDefinition": {"family": "web", "revision": 2, "spec": {}}})
    r = api.invoke("describe", "td", "web:2")
    assert r.exit_code == 0 and "web:2" in r.stdout


# ---- run / stop / scale / node ------------------------------------------------------------
TD_TWO = {"taskDefinition": {"family": "job", "revision": 1, "spec": {"containerDefinitions": [
    {"name": "side", "essential": False}, {"name": "main"}]}}}


def stopped(tid, containers, **kw):
    return mk_task(tid, last="STOPPED", desired="STOPPED", taskDefinition="job:1", containers=containers, **kw)


def test_run_prints_ids_and_sends_body(api):
    api.on("POST", "/v1/clusters/default/tasks", {"tasks": [mk_task("t1"), mk_task("t2")]})
    r = api.invoke("run", "job", "--count", "2", "--launch-type", "fargate")
    assert (r.exit_code, r.stdout) == (0, "t1\nt2\n")
    assert json.loads(api.requests[0].content) == {"taskDefinition": "job", "count": 2, "launchType": "FARGATE"}


def test_run_wait_exits_with_essential_container_code(api):
    api.on("POST", "/v1/clusters/default/tasks", {"tasks": [mk_task("t1", last="PROVISIONING")]})
    api.on("GET", "/v1/clusters/default/tasks/t1", [
        {"task": mk_task("t1", last="PENDING")},
        {"task": mk_task("t1", last="RUNNING")},
        {"task": stopped("t1", [{"name": "side", "exitCode": 0}, {"name": "main", "exitCode": 3}],
                         stopCode="EssentialContainerExited")},
    ])
    api.on("GET", "/v1/taskdefinitions/job:1", TD_TWO)
    r = api.invoke("run", "job", "--wait")
    assert r.exit_code == 3, r.output
    assert r.stdout.splitlines() == ["t1", "task t1 stopped: container main exited with code 3 [EssentialContainerExited]"]
    assert "task t1 PENDING on n1" in r.stderr and "task t1 RUNNING" in r.stderr


def test_run_wait_failed_to_start_exits_1_with_reason(api):
    api.on("POST", "/v1/clusters/default/tasks", {"tasks": [mk_task("t1")]})
    api.on("GET", "/v1/clusters/default/tasks/t1", {"task": stopped(
        "t1", [{"name": "main", "exitCode": None}], stopCode="TaskFailedToStart",
        stoppedReason="CannotPullContainerError: pull access denied for nope")})
    api.on("GET", "/v1/taskdefinitions/job:1", TD_TWO)
    r = api.invoke("run", "job", "--wait")
    assert r.exit_code == 1
    assert "TaskFailedToStart: CannotPullContainerError: pull access denied for nope" in r.stdout


def test_run_wait_timeout(api):
    clock = iter(range(0, 1000, 1))
    api.clock.monotonic = lambda: float(next(clock))
    api.on("POST", "/v1/clusters/default/tasks", {"tasks": [mk_task("t1")]})
    api.on("GET", "/v1/clusters/default/tasks/t1", {"task": mk_task("t1")})
    r = api.invoke("run", "job", "--wait", "--timeout", "5")
    assert r.exit_code == 1
    assert "error: timed out after 5 s waiting for task(s) to stop: t1 (RUNNING)" in r.stderr


def test_run_with_no_task_started_is_an_error(api):
    # The API starts every requested task or answers an error (unplaceable ones stay PENDING);
    # an empty list is still reported rather than exiting 0 with nothing to show.
    api.on("POST", "/v1/clusters/default/tasks", {"tasks": []})
    r = api.invoke("run", "job")
    assert (r.exit_code, r.stderr) == (1, "error: no task was started\n")


def test_stop_scale_node_paths_and_bodies(api):
    api.on("POST", "/v1/clusters/default/tasks/abc/stop", {"task": {"taskId": "abcdef"}})
    api.on("POST", "/v1/clusters/default/services/web/scale", {"service": {}})
    api.on("POST", "/v1/clusters/default/nodes/n1/drain", {"node": {}})
    api.on("POST", "/v1/clusters/default/nodes/n1/activate", {"node": {}})
    assert api.invoke("stop", "abc", "--reason", "done").stdout == "task/abcdef stopping\n"
    assert api.bodies("POST", "/v1/clusters/default/tasks/abc/stop") == [{"reason": "done"}]
    assert api.invoke("scale", "web", "0").stdout == "service/web scaled to 0\n"
    assert api.bodies("POST", "/v1/clusters/default/services/web/scale") == [{"desiredCount": 0}]
    assert api.invoke("node", "drain", "n1").stdout == "node/n1 draining\n"
    assert api.invoke("node", "activate", "n1").stdout == "node/n1 activated\n"
    assert api.invoke("scale", "web", "-1").exit_code == 2


# ---- rollout ------------------------------------------------------------------------------
def svc(*deps, gen=2, observed=2):
    return {"service": {"serviceName": "web", "status": "ACTIVE", "generation": gen, "observedGeneration": observed,
                        "deployments": list(deps)}}


def dep(id, state="IN_PROGRESS", status="PRIMARY", running=0, desired=2, rollback=False, reason=None):
    return {"id": id, "status": status, "taskDefinition": f"web:{id[-1]}", "rolloutState": state, "runningCount": running,
            "desiredCount": desired, "pendingCount": desired - running, "failedTasks": 0, "isRollback": rollback,
            "rolloutStateReason": reason}


def test_rollout_status_completes_and_prints_changes_only(api):
    api.on("GET", "/v1/clusters/default/services/web", [
        svc(dep("d2"), dep("d1", "COMPLETED", "ACTIVE", running=2)),
        svc(dep("d2"), dep("d1", "COMPLETED", "ACTIVE", running=2)),
        svc(dep("d2", running=1), dep("d1", "COMPLETED", "ACTIVE", running=1)),
        svc(dep("d2", "COMPLETED", running=2)),
    ])
    r = api.invoke("rollout", "status", "web")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines == [
        "deployment d2 (web:2) IN_PROGRESS: 0/2 running, 2 pending, 0 failed; 2 old task(s) running",
        "deployment d2 (web:2) IN_PROGRESS: 1/2 running, 1 pending, 0 failed; 1 old task(s) running",
        "service web successfully rolled out web:2 (2/2 running, 0 pending, 0 failed)",
    ]


def test_rollout_status_circuit_breaker_rollback_exits_1(api):
    api.on("GET", "/v1/clusters/default/services/web", [
        svc(dep("d2"), dep("d1", "COMPLETED", "ACTIVE", running=2)),
        svc(dep("d3", rollback=True), dep("d2", "FAILED", "ACTIVE", reason="tasks failed to start"),
            dep("d1", "COMPLETED", "INACTIVE")),
    ])
    r = api.invoke("rollout", "status", "web")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == "error: deployment d2 (web:2) failed: tasks failed to start"


def test_rollout_status_timeout(api):
    clock = iter(range(0, 1000, 1))
    api.clock.monotonic = lambda: float(next(clock))
    api.on("GET", "/v1/clusters/default/services/web", svc(dep("d2")))
    r = api.invoke("rollout", "status", "web", "--timeout", "3")
    assert r.exit_code == 1 and "timed out after 3 s waiting for service web to roll out" in r.stderr


def test_rollout_history_and_undo(api):
    api.on("GET", "/v1/clusters/default/services/web/deployments",
           {"deployments": [dep("d2", "FAILED", reason="boom"), dep("d1", "COMPLETED", "INACTIVE", running=2)]})
    r = api.invoke("rollout", "history", "web")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "TASKDEF"]
    assert [line.split()[0] for line in lines[1:]] == ["d2", "d1"]
    api.on("POST", "/v1/clusters/default/services/web/rollback", {"service": {
        "serviceName": "web", "taskDefinition": "web:1", "deployments": [dep("d3", rollback=True)]}})
    r = api.invoke("rollout", "undo", "web")
    assert (r.exit_code, r.stdout) == (0, "service/web rolled back to web:1\n")


# ---- daemons ------------------------------------------------------------------------------
def test_orchestrator_calls_daemon_run_with_its_signature(monkeypatch):
    calls = []
    fake = types.ModuleType("orchestrator.daemon")
    fake.run = lambda **kw: calls.append(kw) or 0
    monkeypatch.setitem(sys.modules, "orchestrator.daemon", fake)
    r = invoke("orchestrator", "--listen", "0.0.0.0:9000", "--store", "/tmp/x.db", "--log-level", "DEBUG", "--log-json")
    assert r.exit_code == 0, r.output
    assert calls == [{"listen": "0.0.0.0:9000", "store": "/tmp/x.db", "mqtt": "mqtt://127.0.0.1:1883",
                      "node_lost_seconds": 3.0, "mass_loss_fraction": 0.55, "mass_loss_interval": 30.0,
                      "secrets_key_file": None, "epoch_window": 10_000, "mqtt_credentials": None, "mqtt_ca": None, "insecure_no_auth": False, "anonymous_reads": False, "admin_token_file": None, "tls_cert": None, "tls_key": None,
                      "insecure": False, "lease_seconds": 3.0, "log_level": "debug", "log_json": True}]
    fake.run = lambda **kw: 3
    assert invoke("orchestrator").exit_code == 3


def test_agent_forwards_all_arguments(monkeypatch):
    seen = []

    @click.command()
    @click.option("--node-id", required=True)
    @click.option("--mqtt")
    def agent_command(node_id, mqtt):
        seen.append((node_id, mqtt))

    fake = types.ModuleType("agent.main")
    fake.agent_command = agent_command
    monkeypatch.setitem(sys.modules, "agent.main", fake)
    r = invoke("agent", "--node-id", "n1", "--mqtt", "mqtt://h:1883")
    assert r.exit_code == 0, r.output
    assert seen == [("n1", "mqtt://h:1883")]
    r = invoke("agent", "--help")
    assert r.exit_code == 0 and "--node-id" in r.stdout
    r = invoke("agent")
    assert r.exit_code == 2 and "--node-id" in r.stderr


# ---- join tokens and contexts ---------------------------------------------------------------
def test_node_token_create_prints_the_token_the_pin_and_the_agent_line(api):
    api.on("POST", "/v1/clusters/default/join-tokens",
           {"token": "dyj_ab_cd", "id": "ab", "cluster": "default", "nodeId": "n1", "expiresAt": NOW + 3600,
            "fingerprint": "sha256:ff"})
    r = api.invoke("--server", "https://o:8443", "node", "token", "create", "--node", "n1", "--ttl", "15m")
    assert r.exit_code == 0, r.output
    assert api.bodies("POST", "/v1/clusters/default/join-tokens") == [{"ttlSeconds": 900.0, "nodeId": "n1"}]
    lines = r.stdout.splitlines()
    assert lines[0] == "dyj_ab_cd" and "works once; only for node n1" in lines[1]
    assert "--join https://o:8443 --token dyj_ab_cd --join-fingerprint sha256:ff" in lines[-1]
    assert api.invoke("node", "token", "create", "--ttl", "soon").exit_code == 2


def test_the_current_context_gives_server_and_token(api, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("current-context: p\ncontexts:\n  p: {server: 'http://ctx:1', token: dy_x_y}\n")
    api.on("GET", "/v1/clusters/default/nodes", {"nodes": []})
    r = api.invoke("get", "nodes", env={"DOCKYARD_CONFIG": str(cfg)})
    assert r.exit_code == 0, r.output
    assert str(api.requests[-1].url).startswith("http://ctx:1/") and api.requests[-1].headers["authorization"] == "Bearer dy_x_y"
    r = api.invoke("--token", "dy_a_b", "get", "nodes", env={"DOCKYARD_CONFIG": str(cfg)})
    assert api.requests[-1].headers["authorization"] == "Bearer dy_a_b"
    cfg.write_text("contexts: {p: {sever: typo}}\n")
    r = api.invoke("get", "nodes", env={"DOCKYARD_CONFIG": str(cfg)})
    assert r.exit_code == 1 and "contexts.p" in r.output
