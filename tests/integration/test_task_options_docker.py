"""Task definitions run as written (issue 12): volumes keep data across replacements, mounts and
Linux parameters reach Docker, log drivers work or fail the task with a reason, bad input is
refused at apply. Plain ECS JSON task definitions, applied with `dockyard apply -f`."""
from __future__ import annotations

import json
import socket
import threading

from harness import IMAGE, docker

SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]


def _stopped(env, task_id: str):
    def check():
        t = env.get(f"/v1/clusters/{env.cluster}/tasks/{task_id}")["task"]
        return t if t["lastStatus"] == "STOPPED" else None
    return check


def _exec(cid: str, *cmd: str) -> int:
    return docker("exec", cid, *cmd, check=False).returncode


def test_volumes_keep_data_across_a_replacement_and_options_reach_docker(dockyard_env, tmp_path):
    env = dockyard_env
    host_dir = tmp_path / "srv-data"  # created by Docker on the node, as ECS does
    shared = f"{env.cluster}-shared"
    td = {
        "family": "db",
        "volumes": [
            {"name": "data", "host": {"sourcePath": str(host_dir)}},
            {"name": "cache", "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": True, "driver": "local",
                                                            "labels": {"dockyard.cluster": env.cluster}}},
            {"name": "scratch"},
        ],
        "containerDefinitions": [
            {"name": "db", "image": IMAGE, "memory": 64, "stopTimeout": 2, "readonlyRootFilesystem": True,
             "command": ["sh", "-c", "echo run >> /data/log; echo run >> /cache/log; echo s > /scratch/f; "
                                     "trap 'exit 0' TERM; while true; do sleep 1; done"],
             "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"},
                             {"sourceVolume": "cache", "containerPath": "/cache"},
                             {"sourceVolume": "scratch", "containerPath": "/scratch"},
                             {"sourceVolume": "data", "containerPath": "/ro", "readOnly": True}],
             "ulimits": [{"name": "nofile", "softLimit": 1000, "hardLimit": 2000}],
             "linuxParameters": {"initProcessEnabled": True, "capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]},
                                 "tmpfs": [{"containerPath": "/tmp", "size": 16}]},
             "extraHosts": [{"hostname": "db.internal", "ipAddress": "10.9.8.7"}],
             "logConfiguration": {"logDriver": "json-file", "options": {"max-size": "1m", "max-file": "2"}}},
            {"name": "side", "image": IMAGE, "memory": 32, "essential": False, "stopTimeout": 2, "command": SLEEP,
             "volumesFrom": [{"sourceContainer": "db", "readOnly": True}]},
        ],
    }
    svc = {"serviceName": "db", "taskDefinition": "db", "desiredCount": 1}
    # The shared volume is named after the task definition's volume ("cache"): make it this test's own.
    td["volumes"][1]["name"] = shared
    for m in td["containerDefinitions"][0]["mountPoints"]:
        if m["sourceVolume"] == "cache":
            m["sourceVolume"] = shared
    env.start_orchestrator()
    env.start_agent()
    try:
        out = env.cli("apply", "-f", env.write_manifest(json.dumps(td), "db.json"),
                      "-f", env.write_manifest(json.dumps(svc), "svc.json"))
        assert "ignored" not in out.stderr, out.stderr  # nothing of this definition is dropped
        (first,) = env.wait_running(1)
        db = env.containers(all=False, task=first["taskId"], container="db")[0]["ID"]
        side = env.wait_for(lambda: next((c["ID"] for c in env.containers(all=False, task=first["taskId"], container="side")), None),
                            message="side container running")
        env.wait_for(lambda: _exec(db, "test", "-s", "/scratch/f") == 0, message="db wrote its files")

        info = env.inspect(db)
        h = info["HostConfig"]
        assert h["Ulimits"] == [{"Name": "nofile", "Soft": 1000, "Hard": 2000}]
        assert h["Init"] is True and h["ReadonlyRootfs"] is True
        assert h["CapAdd"] == ["NET_ADMIN"] and h["CapDrop"] == ["MKNOD"]
        assert h["Tmpfs"] == {"/tmp": "size=16m"} and h["ExtraHosts"] == ["db.internal:10.9.8.7"]
        assert h["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        assert mounts["/data"]["Type"] == "bind" and mounts["/data"]["Source"] == str(host_dir)
        assert mounts["/ro"]["RW"] is False and mounts["/cache"]["Name"] == shared
        assert mounts["/scratch"]["Name"] == f"dockyard-{first['taskId'][:12]}-scratch"

        assert _exec(db, "touch", "/ro/x") != 0, "a readOnly mount accepted a write"
        assert _exec(db, "touch", "/rootfile") != 0, "readonlyRootFilesystem accepted a write to /"
        assert _exec(db, "touch", "/tmp/ok") == 0  # the tmpfs is writable
        assert docker("exec", side, "cat", "/scratch/f").stdout.strip() == "s"  # volumesFrom shares
        assert _exec(side, "touch", "/scratch/g") != 0  # ... read-only, as asked
        assert "db.internal" in docker("exec", db, "cat", "/etc/hosts").stdout

        # Killed and replaced on the same node: the replacement sees the data.
        docker("kill", "--signal", "KILL", db)
        env.wait_for(_stopped(env, first["taskId"]), timeout=30, message="first task STOPPED")
        (second,) = env.wait_for(lambda: [t for t in env.running_tasks() if t["taskId"] != first["taskId"]] or None,
                                 timeout=60, message="replacement RUNNING")
        db2 = env.containers(all=False, task=second["taskId"], container="db")[0]["ID"]
        env.wait_for(lambda: (host_dir / "log").exists() and (host_dir / "log").read_text().count("run") == 2,
                     message="the replacement appended to the host-path volume")
        env.wait_for(lambda: docker("exec", db2, "cat", "/cache/log", check=False).stdout.count("run") == 2,
                     message="the replacement appended to the shared volume")
        # The first task's scratch volume goes with its containers; the shared one stays.
        env.wait_for(lambda: not docker("volume", "ls", "-q", "--filter", f"label=dockyard.task={first['taskId']}").stdout.strip(),
                     timeout=30, message="the first task's scratch volume removed")
        env.cli("delete", "service", "db")
        env.wait_for(lambda: not env.containers(), timeout=30, message="service containers removed")
        assert docker("volume", "inspect", shared, check=False).returncode == 0, "the shared volume was removed"
    finally:
        docker("volume", "rm", "-f", shared, check=False)


def test_log_drivers_reach_a_receiver_or_fail_the_task_with_a_reason(dockyard_env):
    env = dockyard_env
    received: list[bytes] = []
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.5)
    port = rx.getsockname()[1]
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                received.append(rx.recv(65536))
            except OSError:
                continue

    threading.Thread(target=receive, daemon=True).start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, never listening: connections are refused
    syslog = {"family": "tosyslog", "containerDefinitions": [
        {"name": "app", "image": IMAGE, "memory": 32, "command": ["sh", "-c", "echo hello-syslog; sleep 30"],
         "logConfiguration": {"logDriver": "syslog", "options": {"syslog-address": f"udp://127.0.0.1:{port}",
                                                                 "tag": "dockyard-test"}}}]}
    fluent = {"family": "tofluentd", "containerDefinitions": [
        {"name": "app", "image": IMAGE, "memory": 32, "command": ["true"],
         "logConfiguration": {"logDriver": "fluentd", "options": {"fluentd-address": f"127.0.0.1:{closed_port}"}}}]}
    env.start_orchestrator()
    env.start_agent()
    try:
        env.cli("apply", "-f", env.write_manifest(json.dumps(syslog), "s.json"), "-f", env.write_manifest(json.dumps(fluent), "f.json"))
        env.cli("run", "tosyslog")
        env.cli("run", "tofluentd")
        env.wait_for(lambda: any(b"hello-syslog" in m for m in received), timeout=30, message="the syslog line received")
        t = env.wait_for(lambda: next((t for t in env.tasks() if t["family"] == "tofluentd" and t["lastStatus"] == "STOPPED"), None),
                         timeout=30, message="the fluentd task STOPPED")
        assert t["stopCode"] == "TaskFailedToStart"
        assert "fluentd" in t["stoppedReason"] or "logging driver" in t["stoppedReason"], t["stoppedReason"]
    finally:
        done.set()
        rx.close()
        closed.close()


def test_bad_volume_definitions_are_refused_at_apply_and_nothing_is_registered(dockyard_env):
    env = dockyard_env
    bad = {"family": "bad", "volumes": [{"name": "data", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}],
           "containerDefinitions": [{"name": "db", "image": IMAGE, "memory": 32,
                                     "mountPoints": [{"sourceVolume": "dta", "containerPath": "/data"},
                                                     {"sourceVolume": "data", "containerPath": "/data"}]}]}
    env.start_orchestrator()
    cp = env.cli("apply", "-f", env.write_manifest(json.dumps(bad), "bad.json"), check=False)
    assert cp.returncode == 1
    for path in ("volumes[0].efsVolumeConfiguration", "containerDefinitions[0].mountPoints[0].sourceVolume",
                 "containerDefinitions[0].mountPoints[1].containerPath"):
        assert path in cp.stderr, cp.stderr
    assert "Traceback" not in cp.stderr
    assert env.get("/v1/taskdefinitions?status=ALL")["taskDefinitions"] == []
