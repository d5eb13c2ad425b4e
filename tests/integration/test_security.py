"""Issue 13 as an attacker would try it, against a real Mosquitto and dockerd.

Fencing that cannot be poisoned: a forged retained desired document with a huge epoch and no tasks (the issue's
attack 2) no longer fences the orchestrator out for good: it re-asserts with a higher epoch, the node's tasks run
again, and an agent restarted afterwards finds the orchestrator's document, not the forged one."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from harness import IMAGE, private_broker

from dockyard.mqtt import parse_url

WEB = f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - name: web
      image: {IMAGE}
      command: ["sleep", "3600"]
      memory: 16
      stopTimeout: 1
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: web}}
spec:
  taskDefinition: web
  desiredCount: 2
"""


@pytest.fixture(params=["anonymous", "secure"])
def env(request, dockyard_env):
    """A broker of this test's own: the forged document must not meet another test's orchestrator. Anonymous
    (as a broker without ACLs is: anyone may forge), and secure, where the forger bypasses the ACL with the
    orchestrator's own credential (an admin client): fencing must hold without the broker's help."""
    with private_broker(dockyard_env.workdir, secure=request.param == "secure") as url:
        dockyard_env.mqtt_url = url
        yield dockyard_env


def admin_auth(env) -> tuple[str, str] | None:
    return env.broker.auth if env.broker else None


def publish_raw(url: str, topic: str, payload: bytes, retain: bool = True, auth: tuple[str, str] | None = None) -> None:
    """Publish one message as a plain MQTT client would (paho, QoS 1); ``auth``: (username, password)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    b = parse_url(url)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"attacker-{uuid.uuid4().hex[:8]}")
    if auth:
        c.username_pw_set(*auth)
    c.connect(b.host, b.port, keepalive=10)
    c.loop_start()
    try:
        c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=5)
    finally:
        c.loop_stop()
        c.disconnect()


def retained_desired(env, node: str) -> dict | None:
    got = env.retained(f"dockyard/v1/{env.cluster}/nodes/{node}")
    raw = got.get(f"dockyard/v1/{env.cluster}/nodes/{node}/desired")
    return json.loads(raw) if raw else None


def running_ids(env) -> set[str]:
    return {c["Labels"]["dockyard.task"] for c in env.containers(all=False)}


def test_a_forged_desired_document_with_a_huge_epoch_does_not_fence_the_orchestrator_out(env):
    env.start_orchestrator(node_lost_seconds=120)  # the agent's restart below must not replace its tasks
    env.start_agent()
    node = env.node_ids[0]
    env.cli("apply", "-f", env.write_manifest(WEB))
    tasks = {t["taskId"] for t in env.wait_running(2)}
    env.wait_for(lambda: running_ids(env) == tasks, timeout=60, message="both containers running")
    assert env.get("/healthz")["epoch"] == 1

    forged = {"cluster": env.cluster, "nodeId": node, "epoch": 5000, "generation": 1, "tasks": [],
              "publishedAt": time.time()}
    publish_raw(env.mqtt_url, f"dockyard/v1/{env.cluster}/nodes/{node}/desired", json.dumps(forged).encode(),
                auth=admin_auth(env))

    # The orchestrator takes the node back: a higher epoch of its own, its document retained, the service running
    # there again (a task the forged document stopped before the take-back may have been replaced).
    env.wait_for(lambda: env.get("/healthz")["epoch"] > 5000, timeout=30, message="the orchestrator re-asserting")
    epoch = env.get("/healthz")["epoch"]
    env.wait_for(lambda: env.node(node)["observedEpoch"] == epoch, timeout=30,
                 message="the node applying the orchestrator's document")

    def restored() -> set[str] | None:
        api = {t["taskId"] for t in env.running_tasks()}
        return api if len(api) == 2 and running_ids(env) == api else None
    env.wait_for(restored, timeout=60, message="the node's tasks running again")
    env.wait_quiet_evidence()  # a replacement of a task the forgery stopped is placed by now
    tasks = env.wait_for(restored, timeout=60, message="the node's tasks running again")
    doc = retained_desired(env, node)
    assert doc["epoch"] == epoch and {t["taskId"] for t in doc["tasks"]} >= tasks
    assert env.metric('dockyard_fencing_alerts_total{kind="reassert"}') >= 1

    # An agent restarted now applies the orchestrator's retained document, not the forged one.
    env.stop_agent(node)
    env.start_agent(node)
    env.wait_quiet_evidence()
    env.wait_for(lambda: running_ids(env) == tasks and {t["taskId"] for t in env.running_tasks()} == tasks,
                 timeout=60, message="the tasks running after the agent's restart")
    assert env.get("/healthz")["epoch"] == epoch  # nothing forged any more: no further re-assertion
    assert retained_desired(env, node)["epoch"] == epoch


def test_an_orchestrator_on_a_fresh_store_takes_its_nodes_back(env, request):
    env.start_orchestrator()
    env.start_agent()
    node = env.node_ids[0]
    env.cli("apply", "-f", env.write_manifest(WEB))
    env.wait_running(2)
    env.restart_orchestrator()  # epoch 2: the agent applies documents of epoch 2
    env.wait_for(lambda: env.node(node)["connected"] and env.node(node)["observedEpoch"] == 2, timeout=30,
                 message="the node on epoch 2")
    old = running_ids(env)
    env.stop_orchestrator()
    # The store is lost: a fresh one starts at epoch 1 (the SQLite file gone, or a new PostgreSQL database).
    if isinstance(env.store, Path):
        env.store.rename(env.store.with_suffix(".lost"))
    else:
        env.store = request.getfixturevalue("pg_server").database()
    env.start_orchestrator()
    env.wait_for(lambda: (n := env.node(node)) and n["connected"], timeout=30, message="the node registered again")
    env.cli("apply", "-f", env.write_manifest(WEB))
    tasks = {t["taskId"] for t in env.wait_running(2, timeout=90)}
    assert not tasks & old
    assert env.get("/healthz")["epoch"] > 2
    env.wait_for(lambda: running_ids(env) == tasks, timeout=60, message="only the new store's tasks on the node")


# ---- the broker: no anonymous access, one confined credential per node ---------------------------------------
class Raw:
    """A plain MQTT 5 client (paho) as an attacker holding some credential would use it."""

    def __init__(self, url: str, auth: tuple[str, str] | None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        b = parse_url(url)
        self.got: list[tuple[str, bytes]] = []
        self.subacks: dict[int, list] = {}
        self.connack: list = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:8]}",
                             protocol=MQTTProtocolVersion.MQTTv5)
        if auth:
            self.c.username_pw_set(*auth)
        self.c.on_connect = lambda _c, _u, _f, rc, _p: self.connack.append(rc)
        self.c.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload)))
        self.c.on_subscribe = lambda _c, _u, mid, rcs, _p: self.subacks.__setitem__(mid, rcs)
        self.c.connect(b.host, b.port, keepalive=10)
        self.c.loop_start()
        from harness import wait_for

        wait_for(lambda: self.connack, timeout=10, message="CONNACK")

    @property
    def accepted(self) -> bool:
        return not self.connack[0].is_failure

    def subscribe(self, topic: str) -> bool:
        """True when the broker granted the subscription (SUBACK)."""
        from harness import wait_for

        _, mid = self.c.subscribe(topic, qos=1)
        rcs = wait_for(lambda: self.subacks.get(mid), timeout=10, message=f"SUBACK for {topic}")
        return not rcs[0].is_failure

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=5)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def creds(path) -> tuple[str, str]:
    d = json.loads(path.read_text())
    return d["username"], d["password"]


def test_a_node_credential_reaches_only_its_own_topics(dockyard_env):
    from harness import secure_broker, wait_for

    env = dockyard_env
    with secure_broker(env.workdir) as broker:
        env.mqtt_url = broker.url
        env.start_orchestrator()
        # The join flow as documented: `dockyard node join a -o FILE`, then the agent with --mqtt-credentials FILE
        # (the harness does what the command does for every other agent).
        env.cli("node", "join", "a", "-o", str(env.workdir / "node-a.credentials.json"))
        env.start_agent("a")
        env.start_agent("b")
        env.cli("apply", "-f", env.write_manifest(WEB))
        env.wait_running(2)
        assert creds(env.node_credentials("a"))[0] == f"dockyard-node/{env.cluster}/a"
        assert oct(env.node_credentials("a").stat().st_mode & 0o777) == "0o600"
        root = f"dockyard/v1/{env.cluster}/nodes"
        spy = Raw(broker.url, broker.auth)  # the orchestrator's identity sees everything that gets through
        assert spy.subscribe("dockyard/v1/#")
        before = {t: p for t, p in spy.got if t.endswith("/desired")}
        assert set(before) >= {f"{root}/a/desired", f"{root}/b/desired"}

        a = Raw(broker.url, creds(env.node_credentials("a")))
        try:
            assert a.accepted
            assert a.subscribe(f"{root}/a/desired")  # its own: granted, and delivered
            wait_for(lambda: any(t == f"{root}/a/desired" for t, _ in a.got), timeout=10, message="own desired")
            for topic in (f"{root}/b/desired", "#", "dockyard/v1/#", f"{root}/+/desired", f"{root}/b/status",
                          "$CONTROL/dynamic-security/#", "$SYS/#"):
                assert not a.subscribe(topic), f"node a may subscribe to {topic}"
            forged = json.dumps({"cluster": env.cluster, "nodeId": "b", "epoch": 5000, "generation": 1,
                                 "tasks": []}).encode()
            a.publish(f"{root}/b/desired", forged, retain=True)
            a.publish(f"{root}/a/desired", forged.replace(b'"b"', b'"a"'), retain=True)
            a.publish(f"{root}/b/status", b'{"forged": 1}')
            a.publish(f"{root}/b/presence", b'{"forged": 1}', retain=True)
            a.publish("$CONTROL/dynamic-security/v1", b'{"commands":[{"command":"listClients"}]}')
            a.publish(f"{root}/a/status", b"marker")  # its own status: delivered, so the spy would have seen them
            wait_for(lambda: (f"{root}/a/status", b"marker") in spy.got, timeout=10, message="a's own status")
            leaked = [(t, p) for t, p in spy.got if b"forged" in p or b"5000" in p or t.startswith("$CONTROL")]
            assert leaked == [], leaked
            assert [t for t, _ in a.got if not t.startswith(f"{root}/a/")] == []
        finally:
            a.close()
        # The retained documents are still the orchestrator's; both nodes keep their tasks.
        after = Raw(broker.url, broker.auth)
        try:
            assert after.subscribe(f"{root}/+/desired")
            wait_for(lambda: len(after.got) >= 2, timeout=10, message="retained desired documents")
            assert all(json.loads(p)["epoch"] == 1 for _, p in after.got)
        finally:
            after.close()
        assert len(env.running_tasks()) == 2 and env.get("/healthz")["epoch"] == 1

        assert not Raw(broker.url, None).accepted  # anonymous
        assert not Raw(broker.url, (creds(env.node_credentials("a"))[0], "wrong")).accepted
        assert not Raw(broker.url, (broker.auth[0], "wrong")).accepted

        # `delete node --force`: a connected node is revoked (disconnected, refused), its tasks run elsewhere, its
        # retained topics are gone.
        env.cli("delete", "node", "b", "--force")
        assert env.node("b") is None
        assert not Raw(broker.url, creds(env.node_credentials("b"))).accepted
        env.wait_for(lambda: len(env.running_tasks()) == 2 and {t["nodeId"] for t in env.running_tasks()} == {"a"},
                     timeout=60, message="node b's tasks replaced on node a")
        assert not [t for t in env.retained(f"{root}/b") if env.retained(f"{root}/b")[t]]
        env.wait_quiet_evidence()
        assert env.node("b") is None  # its agent, refused by the broker, did not come back

        # Revoking a node disconnects its agent, and its credential is refused from then on.
        env.cli("node", "revoke", "a")
        env.wait_for(lambda: not env.node("a")["connected"], timeout=30, message="node a disconnected")
        assert not Raw(broker.url, creds(env.node_credentials("a"))).accepted
        spy.close()
        env.cleanup()


# ---- TLS -----------------------------------------------------------------------------------------------------
def test_over_tls_clients_verify_the_broker_against_the_ca(dockyard_env):
    import ssl

    import paho.mqtt.client as mqtt
    from harness import secure_broker
    from paho.mqtt.enums import CallbackAPIVersion

    from dockyard import certs

    env = dockyard_env
    with secure_broker(env.workdir, tls=True) as broker:
        env.mqtt_url = broker.tls_url  # orchestrator and agents: mqtts:// with --mqtt-ca (the harness adds it)
        env.start_orchestrator()
        env.start_agent("a")
        env.cli("apply", "-f", env.write_manifest(WEB))
        env.wait_running(2)
        assert "--mqtt-ca" in env.agents["a"].argv and env.agents["a"].argv[env.agents["a"].argv.index("--mqtt") + 1] \
            .startswith("mqtts://")

        # A client trusting another CA refuses the broker (as the broker would look to a man in the middle).
        other_ca, _ = certs.ca("not dockyard's CA")
        wrong = env.workdir / "wrong-ca.crt"
        wrong.write_bytes(other_ca)
        port = int(broker.tls_url.rsplit(":", 1)[1])
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wrong-ca")
        c.tls_set(ca_certs=str(wrong))
        with pytest.raises(ssl.SSLCertVerificationError):
            c.connect("localhost", port, keepalive=10)
        # An agent given the wrong CA never connects, and says why.
        p = env.start_agent("b", wait=False, mqtt_ca=str(wrong))
        env.wait_for(lambda: "certificate verify failed" in env.tail(p.log), timeout=30, message="a TLS failure")
        assert env.node("b") is None
        # The right CA, but a name the certificate does not have: refused too.
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="wrong-name")
        c.tls_set(ca_certs=str(broker.ca_file))
        with pytest.raises(ssl.SSLCertVerificationError):
            c.connect("127.0.0.1", port, keepalive=10)  # the certificate names localhost only
        env.cleanup()


# ---- the API: bearer tokens ----------------------------------------------------------------------------------
def test_the_api_needs_a_token_and_a_role_that_may_act(dockyard_env):
    import os
    import subprocess

    import httpx
    from harness import DOCKYARD

    env = dockyard_env
    env.start_orchestrator()
    assert env.token and oct(env.token_file.stat().st_mode & 0o777) == "0o600"
    anon = httpx.Client(base_url=env.base_url, timeout=10)
    assert anon.get("/healthz").status_code == 200 and anon.get("/readyz").status_code == 200
    for method, path in (("GET", "/v1/clusters"), ("GET", "/metrics"), ("POST", "/v1/apply"),
                         ("DELETE", f"/v1/clusters/{env.cluster}/services/web")):
        r = anon.request(method, path, json={"documents": []} if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["error"] and "Bearer" in r.json()["hint"]
    assert anon.get("/v1/clusters", headers={"Authorization": "Bearer dy_nope_nope"}).status_code == 401

    # The harness's admin token (the first start's) may act; a read-only one reads only.
    env.cli("apply", "-f", env.write_manifest(WEB))
    ro = env.cli("token", "create", "--role", "read-only", "--name", "grafana").stdout.strip()
    as_ro = httpx.Client(base_url=env.base_url, timeout=10, headers={"Authorization": f"Bearer {ro}"})
    assert as_ro.get(f"/v1/clusters/{env.cluster}/services").status_code == 200
    assert as_ro.get("/metrics").status_code == 200
    r = as_ro.post(f"/v1/clusters/{env.cluster}/services/web/scale", json={"desiredCount": 0})
    assert r.status_code == 403 and "admin" in r.json()["hint"]
    assert as_ro.get("/v1/tokens").status_code == 403
    listed = env.cli("token", "list").stdout
    assert "grafana" in listed and ro.split("_")[2] not in listed  # ids and roles, never secrets

    # The CLI: a read-only token is refused with the server's words, exit 1, no stack trace.
    base_env = {k: v for k, v in os.environ.items() if k != "DOCKYARD_TOKEN"}
    cp = subprocess.run([DOCKYARD, "--server", env.base_url, "-c", env.cluster, "scale", "web", "0"],
                        capture_output=True, text=True, env={**base_env, "DOCKYARD_TOKEN": ro}, timeout=60)
    assert cp.returncode == 1 and "admin" in cp.stderr and "Traceback" not in cp.stderr
    cp = subprocess.run([DOCKYARD, "--server", env.base_url, "get", "services"], capture_output=True, text=True,
                        env={**base_env, "DOCKYARD_TOKEN_FILE": str(env.workdir / "none")}, timeout=60)
    assert cp.returncode == 1 and "token" in cp.stderr.lower() and "Traceback" not in cp.stderr

    # Revoked: 401 from then on; tokens survive a restart (and the first start's token is not made again).
    token_id = ro.split("_")[1]
    env.cli("token", "revoke", token_id)
    assert as_ro.get(f"/v1/clusters/{env.cluster}/services").status_code == 401
    admin = env.token
    env.restart_orchestrator()
    assert env.token == admin and env.get("/v1/clusters") is not None
    assert as_ro.get("/v1/clusters").status_code == 401


def test_insecure_no_auth_is_explicit(dockyard_env):
    import httpx

    env = dockyard_env
    env.start_orchestrator(insecure_no_auth=True)
    assert env.token is None
    assert httpx.get(f"{env.base_url}/v1/clusters", timeout=10).status_code == 200
    assert "--insecure-no-auth" in env.tail(env.orchestrator.log)
