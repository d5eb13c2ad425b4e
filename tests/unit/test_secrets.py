"""Secrets: sealing, the encrypted store, the missing-secret decision, the API/CLI never returning
values, manifests of kind Secret, and the agent side (opening, Env). No network, no Docker."""
from __future__ import annotations

import json
import os
import stat

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from agent.docker_runtime import build_create_spec, registry_auth
from agent.secrets import SecretsUnavailable, open_secrets
from dockyard import sealing
from dockyard.cli import cli
from dockyard.ecs import ContainerDefinition, TaskDefinitionSpec
from dockyard.keyfile import KeyFileError, load_or_create
from dockyard.wire import DesiredTask, NodeResources, Presence
from orchestrator.api import create_app
from orchestrator.client.session import Session
from orchestrator.controller import Controller
from orchestrator.core import secrets as core
from orchestrator.ops import Ops, UserError
from orchestrator.secrets import SecretStore, load_key
from orchestrator.state import State
from orchestrator.store import Store

VALUE = "hunter2-s3cr3t-value"
C = "default"


# ---- sealing -------------------------------------------------------------------------------------
def test_seal_round_trip_and_refusals():
    priv = sealing.generate_private()
    blob = sealing.seal(sealing.public_key(priv), "task-1", VALUE.encode())
    assert VALUE not in blob.model_dump_json()
    assert sealing.unseal(priv, "task-1", blob) == VALUE.encode()
    with pytest.raises(sealing.SealError):  # replayed onto another task
        sealing.unseal(priv, "task-2", blob)
    with pytest.raises(sealing.SealError):  # another node's key
        sealing.unseal(sealing.generate_private(), "task-1", blob)
    ct = bytearray(__import__("base64").b64decode(blob.ct))
    ct[0] ^= 1
    tampered = blob.model_copy(update={"ct": __import__("base64").b64encode(bytes(ct)).decode()})
    with pytest.raises(sealing.SealError):
        sealing.unseal(priv, "task-1", tampered)
    with pytest.raises(sealing.SealError):
        sealing.seal("not a key", "task-1", b"x")


def test_key_file_is_created_0600_and_refused_when_others_can_read(tmp_path):
    path = tmp_path / "d" / "k"
    key, created = load_or_create(path, lambda: b"k" * 32)
    assert created and key == b"k" * 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(path, lambda: b"other")[0] == b"k" * 32
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create(path, lambda: b"x")


# ---- the store -------------------------------------------------------------------------------------
def test_store_keeps_values_encrypted_and_checks_its_key(tmp_path):
    db = tmp_path / "s.db"
    store = Store(db)
    secrets = SecretStore(store, load_key(tmp_path / "s.db.secrets-key"))
    assert secrets.put("db", VALUE, 1.0).version == 1
    assert secrets.put("db", VALUE + "-2", 2.0).version == 2
    assert secrets.value("db") == (2, VALUE + "-2") and secrets.value("db", 1) == (1, VALUE)
    meta = secrets.meta("db")
    assert meta is not None and meta.versions == [1, 2] and meta.createdAt == 1.0 and meta.updatedAt == 2.0
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("s.db") and "key" not in p.name)
    assert VALUE.encode() not in raw and b"db" in raw
    store.close()
    with pytest.raises(KeyFileError, match="not the one"):
        SecretStore(Store(db), load_key(tmp_path / "another-key"))


def test_the_postgresql_store_keeps_versions_and_checks_its_key(tmp_path, pg_url):
    from orchestrator.store_pg import PgStore

    store = PgStore(pg_url)
    secrets = SecretStore(store, load_key(tmp_path / "k"))
    for i in range(25):
        secrets.put("db", f"{VALUE}-{i}", float(i))
    assert secrets.value("db") == (25, f"{VALUE}-24") and secrets.meta("db").versions == list(range(6, 26))
    assert store.secret_value("db", 6)[1] != f"{VALUE}-5".encode()  # encrypted at rest
    store.close()
    with pytest.raises(KeyFileError, match="not the one"):
        SecretStore(PgStore(pg_url), load_key(tmp_path / "another-key"))


# ---- the pure decision -----------------------------------------------------------------------------
def _spec(**container) -> TaskDefinitionSpec:
    return TaskDefinitionSpec(family="app", containerDefinitions=[{"name": "app", "image": "x", "memory": 64,
                                                                    **container}])


def test_missing_secret_or_node_without_key_fails_the_task_with_a_reason_naming_it():
    r = core.refs(_spec(secrets=[{"name": "DB_PASSWORD", "valueFrom": "arn:aws:secretsmanager:eu:1:secret:db"}]))
    assert r.names() == {"db"}
    res = core.resolve(r, {"db": None}, None, "n1", True)
    assert res.failure == "ResourceInitializationError: unable to retrieve secret 'db' from dockyard: secret not found"
    assert core.resolve(r, {"db": 3}, None, "n1", True) == core.Resolution({"db": 3})
    assert core.resolve(r, {"db": 3}, {"db": 1}, "n1", True) == core.Resolution({"db": 1})  # pinned at first publication
    assert "no seal key" in (core.resolve(r, {"db": 3}, None, "n1", False).failure or "")
    # repositoryCredentials naming no secret: the agent's local credentials, no failure and nothing sealed
    reg = core.refs(_spec(repositoryCredentials={"credentialsParameter": "myreg"}))
    assert core.resolve(reg, {"myreg": None}, None, "n1", False) == core.Resolution({})
    _, why = core.payload(reg, {"myreg": "not json"})
    assert why is not None and "username" in why


# ---- controller: resolved when the desired document is built ------------------------------------
def _world():
    state = State(None)
    ctl = Controller(state, epoch=1, publish=None, clock=lambda: 1000.0)  # type: ignore[arg-type]
    return state, ctl, Ops(state, ctl)


def _online(ctl, node: str, key: str | None) -> None:
    ctl.on_presence(C, node, Presence(nodeId=node, bootId="b", state="online", cluster=C,
                                      resources=NodeResources(cpu=4096, memory=4096), sealKey=key))


TD = {"apiVersion": "dockyard/v1", "kind": "TaskDefinition", "metadata": {"name": "app"},
      "spec": {"containerDefinitions": [{"name": "app", "image": "busybox", "memory": 64,
                                         "environment": [{"name": "PLAIN", "value": "p"}],
                                         "secrets": [{"name": "DB_PASSWORD", "valueFrom": "db"}]}]}}


def _run(ops: Ops):
    from orchestrator.models import RunTaskSpec

    return ops.run_task(C, RunTaskSpec(taskDefinition="app"))[0]


def test_a_task_gets_its_secret_sealed_to_its_node_once_and_the_agent_opens_it():
    state, ctl, ops = _world()
    priv = sealing.generate_private()
    _online(ctl, "n1", sealing.public_key(priv))
    res = ops.apply([TD], C)
    assert any("secret 'db' does not exist" in w for w in res[0]["warnings"])  # a warning, not an error
    ops.put_secret("db", VALUE)
    t = _run(ops)
    docs = ctl.reconcile(1000.0)
    dt = docs[0].tasks[0]
    assert dt.secrets is not None and VALUE not in docs[0].model_dump_json()
    assert state.tasks[t.taskId].secretVersions == {"db": 1} and VALUE not in state.tasks[t.taskId].model_dump_json()
    ops.put_secret("db", "newer")  # a running task keeps the version it started with
    state.mark_node_dirty((C, "n1"))
    ctl._published.clear()
    again = ctl.desired_documents(1001.0)[0].tasks[0]
    assert again.secrets is dt.secrets  # sealed once per task
    opened = open_secrets(priv, DesiredTask.model_validate_json(dt.model_dump_json()))
    assert opened.environment == {"app": {"DB_PASSWORD": VALUE}}
    with pytest.raises(SecretsUnavailable):
        open_secrets(sealing.generate_private(), dt)
    with pytest.raises(SecretsUnavailable, match="none arrived"):
        open_secrets(priv, dt.model_copy(update={"secrets": None}))


def test_a_task_whose_secret_is_missing_stops_before_it_is_published():
    state, ctl, ops = _world()
    _online(ctl, "n1", sealing.public_key(sealing.generate_private()))
    ops.apply([TD], C)
    t = _run(ops)
    docs = ctl.reconcile(1000.0)
    assert all(not d.tasks for d in docs)
    assert t.lastStatus == "STOPPED" and t.stopCode == "TaskFailedToStart"
    assert t.stoppedReason == "ResourceInitializationError: unable to retrieve secret 'db' from dockyard: secret not found"


def test_an_agent_without_a_seal_key_gets_no_secrets_and_the_task_fails():
    state, ctl, ops = _world()
    _online(ctl, "old", None)
    ops.apply([TD], C)
    ops.put_secret("db", VALUE)
    t = _run(ops)
    ctl.reconcile(1000.0)
    assert t.lastStatus == "STOPPED" and "no seal key" in (t.stoppedReason or "")


def test_force_new_deployment_replaces_the_deployment_with_the_same_task_definition():
    state, ctl, ops = _world()
    ops.apply([TD, {"apiVersion": "dockyard/v1", "kind": "Service", "metadata": {"name": "web"},
                    "spec": {"taskDefinition": "app", "desiredCount": 1}}], C)
    before = state.services[(C, "web")].deployments[0]
    s = ops.force_new_deployment(C, "web")
    assert s.deployments[0].id != before.id and s.deployments[0].taskDefinition == before.taskDefinition == "app:1"
    assert s.deployments[0].status == "PRIMARY" and s.deployments[1].status == "ACTIVE"


# ---- manifests, API and CLI: values go in, never out -----------------------------------------------
def _secret_doc(value, name="db"):
    return {"apiVersion": "dockyard/v1", "kind": "Secret", "metadata": {"name": name}, "spec": {"secretString": value}}


def test_manifest_kind_secret_is_idempotent_and_versions_on_change():
    state, ctl, ops = _world()
    assert ops.apply([_secret_doc(VALUE)], C)[0]["action"] == "created"
    assert ops.apply([_secret_doc(VALUE)], C)[0]["action"] == "unchanged"
    res = ops.apply([_secret_doc("other")], C)[0]
    assert res["action"] == "configured" and "version 2" in res["detail"] and VALUE not in json.dumps(res)
    with pytest.raises(UserError) as e:
        ops.apply([_secret_doc(True, name="bad name")], C)
    assert "True" not in json.dumps(e.value.body()) and {x.field for x in e.value.errors} >= {"spec.name"}
    assert ops.delete_documents([_secret_doc("x")], C)[0]["action"] == "deleted" and ctl.secrets.meta("db") is None


def test_container_secret_validation_has_field_paths():
    state, ctl, ops = _world()
    bad = json.loads(json.dumps(TD))
    bad["spec"]["containerDefinitions"][0]["secrets"] = [{"name": "1BAD", "valueFrom": "db"},
                                                         {"name": "OK", "valueFrom": ""}]
    with pytest.raises(UserError) as e:
        ops.apply([bad], C)
    fields = {x.field for x in e.value.errors}
    assert fields == {"spec.containerDefinitions[0].secrets[0].name", "spec.containerDefinitions[0].secrets[1].valueFrom"}


def _cli_against(app):
    tc = TestClient(app)

    def handler(request: httpx.Request) -> httpx.Response:
        r = tc.request(request.method, request.url.raw_path.decode(), content=request.content,
                       headers={"content-type": request.headers.get("content-type", "application/json")})
        return httpx.Response(r.status_code, content=r.content, headers=r.headers)

    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, list(args), input=input, obj=Session(transport=httpx.MockTransport(handler)))

    return tc, invoke


def test_cli_and_api_never_return_a_value(tmp_path):
    state, ctl, ops = _world()
    _online(ctl, "n1", sealing.public_key(sealing.generate_private()))
    tc, invoke = _cli_against(create_app(ops))
    r = invoke("secret", "create", "db", "--from-literal", VALUE)
    assert r.exit_code == 0 and r.output.strip() == "secret/db created (version 1)", r.output
    f = tmp_path / "v"
    f.write_text(VALUE + "\n")
    r = invoke("secret", "create", "db", "--from-file", str(f))
    assert r.exit_code == 0 and "version 2" in r.output and ctl.secrets.value("db") == (2, VALUE + "\n")
    assert invoke("secret", "create", "db").exit_code == 2  # neither source
    ops.apply([TD], C)
    task_id = _run(ops).taskId
    ctl.reconcile(1000.0)
    outputs = [invoke("get", "secrets").output, invoke("get", "secrets", "-o", "json").output,
               invoke("describe", "secret", "db").output, invoke("describe", "task", task_id[:8]).output,
               invoke("describe", "task", task_id[:8], "-o", "json").output, invoke("get", "tasks", "-o", "json").output,
               tc.get("/v1/secrets/db").text, tc.get(f"/v1/clusters/{C}/tasks/{task_id}").text,
               tc.get(f"/v1/clusters/{C}/nodes/n1").text]
    assert "db" in outputs[0] and "2" in outputs[0] and '"db": 2' in outputs[5]  # versions only
    assert all(VALUE not in o for o in outputs)
    assert invoke("delete", "secret", "db").output.strip() == "secret/db deleted"
    assert tc.get("/v1/secrets/db").status_code == 404


# ---- the agent's container spec -------------------------------------------------------------------
def test_secret_variables_are_appended_to_the_container_env_and_registry_auth_uses_the_secret():
    task = DesiredTask(taskId="t1", family="app", revision=1, taskDefinition=TaskDefinitionSpec.model_validate({**TD["spec"], "family": "app"}))
    cdef = task.taskDefinition.containerDefinitions[0]
    env = build_create_spec(task, cdef, "n1", C, secrets={"DB_PASSWORD": VALUE}).body["Env"]
    assert env == ["PLAIN=p", f"DB_PASSWORD={VALUE}"]
    assert "Env" in build_create_spec(task, cdef, "n1", C).body and VALUE not in json.dumps(
        build_create_spec(task, cdef, "n1", C).body)
    c = ContainerDefinition(name="a", image="reg.example:5000/app", memory=64,
                            repositoryCredentials={"credentialsParameter": "myreg"})
    assert registry_auth(c, {}, {"username": "u", "password": "p"}) == {
        "username": "u", "password": "p", "serveraddress": "reg.example:5000"}
    assert registry_auth(c, {"DOCKYARD_REGISTRY_AUTH_MYREG": "e:f"})["username"] == "e"  # the local fallback


def test_a_published_task_whose_secret_is_gone_is_not_stopped_by_the_orchestrator():
    state, ctl, ops = _world()
    _online(ctl, "n1", sealing.public_key(sealing.generate_private()))
    ops.apply([TD], C)
    ops.put_secret("db", VALUE)
    t = _run(ops)
    ctl.reconcile(1000.0)
    ops.delete_secret("db")
    ctl._sealed.clear()  # as after an orchestrator restart
    ctl._published.clear()
    state.mark_node_dirty((C, "n1"))
    doc = ctl.desired_documents(1001.0)[0]
    assert t.lastStatus != "STOPPED" and doc.tasks[0].taskId == t.taskId and doc.tasks[0].secrets is None


def test_cli_rollout_restart_forces_a_new_deployment():
    state, ctl, ops = _world()
    ops.apply([TD, {"apiVersion": "dockyard/v1", "kind": "Service", "metadata": {"name": "web"},
                    "spec": {"taskDefinition": "app", "desiredCount": 1}}], C)
    _, invoke = _cli_against(create_app(ops))
    r = invoke("rollout", "restart", "web")
    assert r.exit_code == 0 and "service/web restarting (app:1)" in r.output, r.output
    assert len(state.services[(C, "web")].deployments) == 2
    assert invoke("rollout", "restart", "nope").exit_code == 1


def test_a_service_whose_secret_is_missing_retries_and_starts_once_it_exists():
    now = [1000.0]
    state = State(None)
    ctl = Controller(state, epoch=1, publish=None, clock=lambda: now[0])  # type: ignore[arg-type]
    ops = Ops(state, ctl)
    _online(ctl, "n1", sealing.public_key(sealing.generate_private()))
    ops.apply([TD, {"apiVersion": "dockyard/v1", "kind": "Service", "metadata": {"name": "web"},
                    "spec": {"taskDefinition": "app", "desiredCount": 1}}], C)
    ctl.reconcile(now[0])
    s = state.services[(C, "web")]
    assert any("secret 'db' from dockyard: secret not found" in e.message for e in s.events)
    assert s.deployments[0].launchFailures == 1
    ops.put_secret("db", VALUE)
    published = []
    for _ in range(30):  # past the launch backoff
        now[0] += 5
        published += [t for d in ctl.reconcile(now[0]) for t in d.tasks if t.secrets is not None]
        state.flush()
        if published:
            break
    assert published and VALUE not in published[0].model_dump_json()


def test_the_executor_gives_a_container_its_secrets_and_fails_a_task_it_cannot_open():
    import asyncio

    from agent import diff
    from agent.executor import Executor
    from agent.hollow import HollowRuntime
    from agent.state import NodeState
    from dockyard import log

    class Capturing(HollowRuntime):
        def __init__(self) -> None:
            super().__init__()
            self.env: dict[str, dict[str, str] | None] = {}

        def create_spec(self, task, c, node_id, cluster, secrets=None):
            self.env[task.taskId] = secrets
            return super().create_spec(task, c, node_id, cluster, secrets)

    priv = sealing.generate_private()
    spec = TaskDefinitionSpec.model_validate({**TD["spec"], "family": "app"})
    payload = json.dumps({"environment": {"app": {"DB_PASSWORD": VALUE}}, "registryAuth": {}}).encode()
    good = DesiredTask(taskId="t1", family="app", revision=1, taskDefinition=spec,
                       secrets=sealing.seal(sealing.public_key(priv), "t1", payload))
    replayed = good.model_copy(update={"taskId": "t2"})  # t1's blob on another task

    async def go() -> None:
        rt = Capturing()
        st = NodeState("n1", log.get("test"))
        ex = Executor(rt, st, C, lambda: None, log.get("test"), seal_key=priv)
        ex.apply(diff.plan([good, replayed], [], "n1"))
        await asyncio.gather(*ex.inflight.values())
        assert rt.env == {"t1": {"DB_PASSWORD": VALUE}}  # t2 never reached create_spec
        assert st.finished["t2"].stop_code == diff.FAILED_TO_START
        assert st.finished["t2"].reason.startswith("ResourceInitializationError: unable to retrieve secrets")
        assert [c.task_id for c in await rt.list("n1")] == ["t1"]

    asyncio.run(go())
