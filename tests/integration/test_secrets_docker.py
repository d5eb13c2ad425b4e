"""Issue 12, secrets, end to end: a secret reaches the container's environment and nowhere else in
plain text (describe, the API, logs, every MQTT message, the store file); a missing one fails the task."""
from __future__ import annotations

import uuid

from harness import IMAGE, TOPIC_ROOT, docker

TD = f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: app}}
spec:
  containerDefinitions:
    - name: app
      image: {IMAGE}
      command: ["sleep", "300"]
      memory: 32
      stopTimeout: 1
      secrets: [{{name: DB_PASSWORD, valueFrom: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-pass"}}]
---
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: nosecret}}
spec:
  containerDefinitions:
    - name: app
      image: {IMAGE}
      command: ["sleep", "300"]
      memory: 32
      secrets: [{{name: TOKEN, valueFrom: missing-one}}]
"""


class Sniffer:
    """Every message under the cluster's topics, retained or not, from before the agent starts."""

    def __init__(self, env) -> None:
        self.payloads: list[tuple[str, bytes]] = []
        self.c = env.mqtt_client("dockyard-test-sniff")  # the test's broker, with a login if it needs one
        self.c.on_message = lambda _c, _u, m: self.payloads.append((m.topic, m.payload))
        self.c.subscribe(f"{TOPIC_ROOT}/{env.cluster}/#", qos=1)
        self.c.loop_start()

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_a_secret_reaches_only_the_container(dockyard_env):
    env = dockyard_env
    value = f"s3cr3t-{uuid.uuid4().hex}"
    env.start_orchestrator()
    sniffer = Sniffer(env)
    try:
        env.start_agent()
        assert "created (version 1)" in env.cli("secret", "create", "db-pass", "--from-literal", value).stdout
        applied = env.cli("apply", "-f", env.write_manifest(TD))
        assert "secret 'missing-one' does not exist" in applied.stderr  # a warning at apply, not an error
        task_id = env.cli("run", "app").stdout.strip()
        env.wait_for(lambda: env.get(f"/v1/clusters/{env.cluster}/tasks/{task_id}")["task"]["lastStatus"] == "RUNNING",
                     timeout=60, message="the task with a secret RUNNING")
        (container,) = env.containers(task=task_id)
        assert f"DB_PASSWORD={value}" in docker("exec", container["ID"], "env").stdout

        missing = env.cli("run", "nosecret").stdout.strip()
        stopped = env.wait_for(lambda: (t := env.get(f"/v1/clusters/{env.cluster}/tasks/{missing}")["task"])
                               ["lastStatus"] == "STOPPED" and t, timeout=60, message="the task without its secret STOPPED")
        assert stopped["stopCode"] == "TaskFailedToStart" and "'missing-one'" in stopped["stoppedReason"]
        assert not env.containers(task=missing)
        env.wait_quiet_evidence(snapshots=1)  # the agent has reported since: its messages are in
    finally:
        sniffer.close()
    assert any(t.endswith("/desired") for t, _ in sniffer.payloads)  # the sniffer saw the documents
    seen = {
        "describe task": env.cli("describe", "task", task_id).stdout,
        "describe task -o json": env.cli("describe", "task", task_id, "-o", "json").stdout,
        "get secrets": env.cli("get", "secrets", "-o", "json").stdout,
        "API task": env.api.get(f"/v1/clusters/{env.cluster}/tasks/{task_id}").text,
        "API tasks": env.api.get(f"/v1/clusters/{env.cluster}/tasks").text,
        "API secret": env.api.get("/v1/secrets/db-pass").text,
        **{f"log {p.name}": p.read_text(errors="replace") for p in env.logs},
        **{f"store {name}": text for name, text in env.store_contents().items()},
        **{f"mqtt {i} {t}": p.decode("latin-1") for i, (t, p) in enumerate(sniffer.payloads)},
    }
    # The store was read (SQLite: the file; PostgreSQL: every table), and holds the secret's name, sealed.
    assert any("db-pass" in text for where, text in seen.items() if where.startswith("store ")), list(seen)
    assert "db-pass" in seen["get secrets"]
    leaks = [where for where, text in seen.items() if value in text]
    assert not leaks, f"the secret value appears in: {leaks}"
