"""Issue 18: two orchestrators on one PostgreSQL (a real PostgreSQL 15), a real Mosquitto and dockerd.

The leader SIGKILLed during a rolling deployment: the standby leads, republishes and finishes it, no container
restarted, no acknowledged write lost, the old leader restarted is a standby. The leader paused past its lease
and resumed: it writes and publishes nothing the agents accept, and leaves.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import httpx
import pytest

from harness import IMAGE, Harness, private_broker

pytestmark = pytest.mark.slow
LEASE = 2.0


def manifest(marker: str, desired: int = 3) -> str:
    return f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - name: web
      image: {IMAGE}
      command: ["sh", "-c", "echo {marker} > /www/v.txt; exec httpd -f -p 8080 -h /www"]
      memory: 16
      stopTimeout: 1
      environment: [{{name: MARK, value: "{marker}"}}]
      healthCheck: {{command: ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"], interval: 5, timeout: 2, retries: 1}}
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: web}}
spec:
  taskDefinition: web
  desiredCount: {desired}
  deploymentConfiguration: {{maximumPercent: 200, minimumHealthyPercent: 100}}
"""


def service_doc(name: str) -> dict:
    return {"source": f"{name}.yaml#1", "document": {"apiVersion": "dockyard/v1", "kind": "Service",
                                                    "metadata": {"name": name},
                                                    "spec": {"taskDefinition": "web", "desiredCount": 0}}}


@contextlib.contextmanager
def peer_of(env: Harness):
    """A second orchestrator on the same database (its own port), with the same key and admin token."""
    peer = Harness(workdir=env.workdir / "peer", cluster=env.cluster, mqtt_url=env.mqtt_url)
    peer.store, peer.token_file = env.store, env.token_file
    try:
        yield peer
    finally:
        peer.cleanup()


def start(h: Harness, env: Harness):
    return h.start_orchestrator(secrets_key_file=env.workdir / "secrets-key", lease_seconds=LEASE, standby_ok=True)


def ready(h: Harness) -> bool:
    try:
        return h.api.get("/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def running_containers(env: Harness) -> dict[str, str]:
    """Running container id -> its StartedAt (a restart in place changes it)."""
    return {c["ID"]: env.inspect(c["ID"])["State"]["StartedAt"] for c in env.containers(all=False)}


@pytest.fixture
def ha_env(dockyard_env, pg_url):
    """The test's own database and broker (on the shared one, other tests' orchestrators adopt its node)."""
    dockyard_env.store = pg_url
    with private_broker(dockyard_env.workdir) as url:
        dockyard_env.mqtt_url = url
        yield dockyard_env
        dockyard_env.cleanup()  # before the broker stops


def test_leader_killed_during_a_rolling_deployment_the_standby_finishes_it(ha_env):
    env = ha_env
    start(env, env)
    env.start_agent()
    env.cli("apply", "-f", env.write_manifest(manifest("v1")))
    env.wait_for(env.completed("web", "web:1"), timeout=90, message="web:1 COMPLETED")
    with peer_of(env) as peer:
        start(peer, env)
        assert not ready(peer) and ready(env)
        assert peer.get("/healthz")["role"] == "standby"
        # The standby forwards writes to the leader: a POST through it is applied (the CLI works against either).
        peer.cli("apply", "-f", env.write_manifest(manifest("v2")))
        env.wait_for(lambda: any(t["taskDefinition"].endswith("web:2") for t in env.running_tasks()), timeout=60,
                     message="the rolling deployment under way")
        acked: list[str] = []
        stop = threading.Event()

        def writer() -> None:  # applies through the standby all along; records every 2xx
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = peer.api.post(f"/v1/apply?cluster={env.cluster}", json={"documents": [service_doc(f"s{i}")]},
                                      timeout=5)
                    if r.status_code < 300:
                        acked.append(f"s{i}")
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        th = threading.Thread(target=writer, daemon=True)
        th.start()
        time.sleep(0.5)
        before = running_containers(env)
        killed_at = time.monotonic()
        env.stop_orchestrator(kill=True)
        peer.wait_for(lambda: ready(peer), timeout=30, message="the standby leads")
        took = time.monotonic() - killed_at
        time.sleep(1.0)
        stop.set()
        th.join(10)
        peer.wait_for(peer.completed("web", "web:2"), timeout=120, message="web:2 COMPLETED under the new leader")
        after = running_containers(env)
        # No container restarted: every one still running kept its id and start time; the v2 ones that ran at the
        # kill still run (the v1 ones were stopped by the deployment, as it went on).
        assert all(after[c] == before[c] for c in after.keys() & before.keys())
        v2_before = {c["ID"] for c in env.containers(all=True) if c["Labels"].get("dockyard.revision") == "2"
                     and c["ID"] in before}
        assert v2_before <= after.keys()
        assert len(after) == 3
        names = {s["serviceName"] for s in peer.get(f"/v1/clusters/{env.cluster}/services")["services"]}
        assert acked and set(acked) <= names, f"acknowledged applies lost: {set(acked) - names}"
        # The old leader restarted is a standby, and writes through it still reach the leader.
        start(env, env)
        assert not ready(env) and env.get("/healthz")["role"] == "standby"
        env.cli("scale", "web", "2")
        peer.wait_for(lambda: len(peer.running_tasks()) == 2, timeout=60, message="scaled to 2 by the leader")
        assert env.get("/healthz")["leader"] == peer.base_url
        print(f"failover: leader killed -> standby ready in {took:.2f} s (lease {LEASE} s)")


def test_a_leader_paused_past_its_lease_writes_and_publishes_nothing_agents_accept(ha_env):
    env = ha_env
    old = start(env, env)
    env.start_agent()
    env.cli("apply", "-f", env.write_manifest(manifest("v1", desired=1)))
    env.wait_for(env.completed("web", "web:1"), timeout=90, message="web:1 COMPLETED")
    node = env.node_ids[0]
    old_epoch = env.get("/healthz")["epoch"]
    with peer_of(env) as peer:
        start(peer, env)
        os.kill(old.popen.pid, signal.SIGSTOP)
        try:
            peer.wait_for(lambda: ready(peer), timeout=30, message="the standby leads")
            new_epoch = peer.get("/healthz")["epoch"]
            assert new_epoch > old_epoch
            peer.wait_for(lambda: (peer.node(node) or {}).get("observedEpoch") == new_epoch, timeout=30,
                          message="the agent applied the new leader's document")
            peer.cli("scale", "web", "2")
            peer.wait_for(lambda: len(peer.running_tasks()) == 2, timeout=60, message="scaled to 2 by the new leader")
        finally:
            os.kill(old.popen.pid, signal.SIGCONT)
        # Resumed, the ex-leader finds its lease gone and leaves; meanwhile it published nothing the agent took.
        deadline = time.monotonic() + 30
        while old.popen.poll() is None:
            assert (peer.node(node) or {}).get("observedEpoch") == new_epoch
            assert time.monotonic() < deadline, "the ex-leader did not step down"
            time.sleep(0.2)
        assert old.popen.returncode == 1 and "lost the leadership" in env.tail(old.log, 50)
        env.orchestrator = None
        peer.wait_quiet_evidence()
        assert (peer.node(node) or {}).get("observedEpoch") == new_epoch
        assert len(peer.running_tasks()) == 2 and len(env.containers(all=False)) == 2
        assert peer.service("web")["desiredCount"] == 2


def test_postgresql_restarted_under_the_leader_writes_get_503_then_it_goes_on(dockyard_env):
    from pgserver import PgServer

    env = dockyard_env
    pg = PgServer().start()
    try:
        env.store = pg.database()
        with private_broker(env.workdir) as url:
            env.mqtt_url = url
            leader = start(env, env)
            env.start_agent()
            env.cli("apply", "-f", env.write_manifest(manifest("v1", desired=1)))
            env.wait_for(env.completed("web", "web:1"), timeout=90, message="web:1 COMPLETED")
            epoch = env.get("/healthz")["epoch"]
            scale = f"/v1/clusters/{env.cluster}/services/web/scale"
            pg.halt()
            r = env.api.post(scale, json={"desiredCount": 3})
            assert r.status_code == 503 and "retry" in r.json()["hint"], r.text
            assert env.api.get(f"/v1/clusters/{env.cluster}/services/web").status_code == 200  # reads from memory
            pg.resume()
            acked = env.wait_for(lambda: env.api.post(scale, json={"desiredCount": 2}).status_code == 200, timeout=30,
                                 interval=0.5, message="a write accepted once PostgreSQL is back")
            assert acked and leader.popen.poll() is None and env.get("/healthz")["epoch"] == epoch  # the same leader
            env.wait_for(lambda: len(env.running_tasks()) == 2, timeout=60, message="scaled to 2")
            env.restart_orchestrator(secrets_key_file=env.workdir / "secrets-key", lease_seconds=LEASE)
            assert env.service("web")["desiredCount"] == 2  # the acknowledged write is in the database
            env.cleanup()
    finally:
        pg.stop()


def test_a_standby_serves_reads_from_the_database_while_the_leader_is_paused(ha_env):
    """Reads on a standby come from the database (the leader's last pass), not through the leader: they keep
    working while the leader is paused; writes still go to the leader."""
    env = ha_env
    leader = env.start_orchestrator(secrets_key_file=env.workdir / "secrets-key", lease_seconds=10.0)
    env.cli("apply", "-f", env.write_manifest(manifest("v1", desired=0)))
    with peer_of(env) as peer:
        peer.start_orchestrator(secrets_key_file=env.workdir / "secrets-key", lease_seconds=10.0, standby_ok=True)
        assert peer.get("/healthz")["role"] == "standby"
        r = peer.api.get(f"/v1/clusters/{env.cluster}/services/web", timeout=5)
        assert r.status_code == 200 and r.headers.get("x-dockyard-standby-read"), (r.status_code, dict(r.headers))
        assert r.json()["service"]["desiredCount"] == 0
        peer.cli("scale", "web", "0")  # a write through the standby reaches the leader
        os.kill(leader.popen.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            r = peer.api.get(f"/v1/clusters/{env.cluster}/services", timeout=5)
            took = time.monotonic() - t0
            assert r.status_code == 200 and r.headers.get("x-dockyard-standby-read"), r.text[:200]
            assert [s["serviceName"] for s in r.json()["services"]] == ["web"]
            assert peer.api.get("/v1/clusters", timeout=5).status_code == 200
            assert peer.api.get(f"/v1/clusters/{env.cluster}/services/web",
                                headers={"Authorization": "Bearer dy_bad_token"}, timeout=5).status_code == 401
        finally:
            os.kill(leader.popen.pid, signal.SIGCONT)
        print(f"standby read with the leader paused: {took * 1000:.0f} ms")
