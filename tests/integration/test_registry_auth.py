"""Private registries (issue 12): an image is pulled with the credentials a dockyard secret holds
(repositoryCredentials.credentialsParameter), and without them the pull fails the task with a
reason. A real registry (Debian's docker-registry) with htpasswd auth on a loopback port."""
from __future__ import annotations

import crypt  # bcrypt for the htpasswd file (Debian 12: Python 3.11; the module goes in 3.13)
import json
import os
import shutil
import subprocess
import time

import httpx
import pytest

from harness import IMAGE, docker, free_port

pytestmark = pytest.mark.slow

USER, PASSWORD = "dockyard", "pull-s3cret"


@pytest.fixture
def registry(tmp_path):
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed (scripts/bootstrap.sh installs Debian's package)", pytrace=False)
    port = free_port()
    (tmp_path / "htpasswd").write_text(f"{USER}:{crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    (tmp_path / "registry.yml").write_text(f"""version: 0.1
storage: {{filesystem: {{rootdirectory: {tmp_path / 'data'}}}}}
http: {{addr: 127.0.0.1:{port}}}
auth: {{htpasswd: {{realm: dockyard-test, path: {tmp_path / 'htpasswd'}}}}}
""")
    log = open(tmp_path / "registry.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["docker-registry", "serve", str(tmp_path / "registry.yml")], stdout=log, stderr=log)
    repo = f"127.0.0.1:{port}/dockyard-test/busybox"
    cfg = {"DOCKER_CONFIG": str(tmp_path / "docker-config")}  # never the machine's ~/.docker
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 401:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("docker-registry did not start: " + (tmp_path / "registry.log").read_text()[-500:])
            time.sleep(0.1)
        env = {**os.environ, **cfg}
        subprocess.run(["docker", "login", "-u", USER, "--password-stdin", f"127.0.0.1:{port}"], input=PASSWORD,
                       text=True, env=env, check=True, capture_output=True)
        for tag in ("private", "nocreds"):
            docker("tag", IMAGE, f"{repo}:{tag}")
            subprocess.run(["docker", "push", f"{repo}:{tag}"], env=env, check=True, capture_output=True)
            docker("rmi", f"{repo}:{tag}")  # only the registry has it now
        yield repo
    finally:
        for tag in ("private", "nocreds"):
            docker("rmi", "-f", f"{repo}:{tag}", check=False)
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_a_private_image_is_pulled_with_credentials_from_a_secret_and_refused_without(dockyard_env, registry):
    env = dockyard_env
    env.start_orchestrator()
    env.start_agent()
    env.cli("secret", "create", "regcreds", "--from-literal", json.dumps({"username": USER, "password": PASSWORD}))
    private = {"family": "private", "containerDefinitions": [{
        "name": "app", "image": f"{registry}:private", "memory": 32, "command": ["sleep", "300"], "stopTimeout": 1,
        "repositoryCredentials": {"credentialsParameter": "arn:aws:secretsmanager:eu-west-1:1:secret:regcreds"}}]}
    nocreds = {"family": "nocreds", "containerDefinitions": [{
        "name": "app", "image": f"{registry}:nocreds", "memory": 32, "command": ["sleep", "300"], "stopTimeout": 1}]}
    env.cli("apply", "-f", env.write_manifest(json.dumps(private), "private.json"),
            "-f", env.write_manifest(json.dumps(nocreds), "nocreds.json"))
    env.cli("run", "private")
    env.cli("run", "nocreds")
    running = env.wait_for(lambda: next((t for t in env.tasks() if t["family"] == "private" and t["lastStatus"] == "RUNNING"), None),
                           timeout=60, message="the private image pulled and RUNNING")
    assert docker("image", "inspect", f"{registry}:private", check=False).returncode == 0  # really pulled
    failed = env.wait_for(lambda: next((t for t in env.tasks() if t["family"] == "nocreds" and t["lastStatus"] == "STOPPED"), None),
                          timeout=60, message="the pull without credentials failed")
    assert failed["stopCode"] == "TaskFailedToStart" and "CannotPullContainerError" in failed["stoppedReason"], failed
    assert PASSWORD not in json.dumps(running) and PASSWORD not in "".join(p.read_text() for p in env.logs)
