"""Installing dockyard (issue 19): the image built offline by scripts/build-image.sh, the wheel in a
clean venv, and docker-compose.yml run with Debian's docker-compose 1.29.

Everything is named for this run (images dockyard-test/*:<hex>, compose project dyc<hex>, cluster
and node t-<hex>, a free API port): other engineers' stacks and demos on this machine are never
touched. The rootfs tarball and the wheels stay cached in ~/.cache/dockyard between runs (the
first, cold build takes 100 to 130 s, a warm one about 10 s)."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from harness import DOCKYARD, REPO, docker, docker_containers, free_port, on_postgresql, wait_for

from dockyard import __version__
from dockyard.wire import PROTOCOL_VERSION

pytestmark = [pytest.mark.slow, pytest.mark.skipif(on_postgresql(), reason="installs dockyard as a user does, with its own default SQLite store: it does not take the harness's store; the SQLite run covers it")]

RUN = uuid.uuid4().hex[:8]
IMAGE = f"dockyard-test/dockyard:{RUN}"
MOSQUITTO_IMAGE = f"dockyard-test/mosquitto:{RUN}"
CACHE = Path(os.environ.get("DOCKYARD_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "dockyard")


def _keep_as_cache(image: str) -> None:
    """Retag ``image`` as ``<repo>:last`` (the next run's layer cache: one image per repo stays),
    untag it, and remove the previous ``:last`` with the layers only it had."""
    last = image.rsplit(":", 1)[0] + ":last"
    old = docker("image", "inspect", "-f", "{{.Id}}", last, check=False).stdout.strip()
    new = docker("image", "inspect", "-f", "{{.Id}}", image, check=False).stdout.strip()
    if not new:
        return
    docker("tag", image, last, check=False)
    docker("rmi", image, check=False)
    if old and old != new:
        docker("rmi", old, check=False)


@pytest.fixture(scope="module")
def images():
    """Build both images for this run; afterwards only dockyard-test/*:last stays, as the next
    run's layer cache."""
    env = {**os.environ, "DOCKYARD_IMAGE": IMAGE, "DOCKYARD_MOSQUITTO_IMAGE": MOSQUITTO_IMAGE,
           "DOCKYARD_CACHE": str(CACHE)}
    try:
        cp = subprocess.run([str(REPO / "scripts" / "build-image.sh")], env=env, capture_output=True, text=True,
                            timeout=600)
        sys.stderr.write(cp.stdout)
        assert cp.returncode == 0, f"scripts/build-image.sh exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}"
        yield IMAGE, MOSQUITTO_IMAGE
    finally:
        for image in (IMAGE, MOSQUITTO_IMAGE):
            _keep_as_cache(image)


def test_image_runs_both_daemons_orchestrator_unprivileged_without_test_extras(images):
    image, mosquitto = images
    assert docker("run", "--rm", image, "--version").stdout.strip() == \
        f"dockyard {__version__} (wire protocol {PROTOCOL_VERSION})"
    user = docker("run", "--rm", "--entrypoint", "id", image, "-un").stdout.strip()
    assert user == "dockyard"
    for cmd in ("orchestrator", "agent"):
        assert "Usage:" in docker("run", "--rm", image, cmd, "--help").stdout
    no_pytest = docker("run", "--rm", "--entrypoint", "python", image, "-c", "import pytest", check=False)
    assert no_pytest.returncode != 0 and "No module named 'pytest'" in no_pytest.stderr
    assert docker("run", "--rm", "--entrypoint", "id", mosquitto, "-un").stdout.strip() == "mosquitto"


def test_wheel_installs_into_a_clean_venv_and_reports_its_version(images, tmp_path):
    """The wheel alone (no test extras) gives the dockyard command; its dependencies come from the
    wheel cache that build-image.sh filled (no index needed)."""
    pip = str(REPO / ".venv" / "bin" / "pip")
    subprocess.run([pip, "wheel", "-q", "--no-deps", "--no-index", "--find-links", str(CACHE / "wheels"),
                    "--wheel-dir", str(tmp_path / "w"), str(REPO)], check=True, timeout=300)
    (wheel,) = (tmp_path / "w").glob("dockyard-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=120)
    vbin = tmp_path / "venv" / "bin"
    subprocess.run([str(vbin / "pip"), "install", "-q", "--disable-pip-version-check", "--no-index",
                    "--find-links", str(CACHE / "wheels"), str(wheel)], check=True, timeout=300)
    out = subprocess.run([str(vbin / "dockyard"), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"dockyard {__version__} (wire protocol {PROTOCOL_VERSION})"
    assert subprocess.run([str(vbin / "python"), "-c", "import pytest"], capture_output=True).returncode != 0


def _demo_without_load_balancer(tmp_path: Path) -> Path:
    """manifests/demo/ minus its TargetGroup and LoadBalancer (the compose agent runs none:
    docker-compose.yml says why), and the service without its loadBalancers."""
    docs = [d for f in sorted((REPO / "manifests" / "demo").glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d]
    keep = [d for d in docs if d["kind"] in ("TaskDefinition", "Service")]
    assert {d["kind"] for d in keep} == {"TaskDefinition", "Service"}
    for d in keep:
        d["spec"].pop("loadBalancers", None)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump_all(keep))
    return path


# Run inside the stack: the reason code an anonymous MQTT client gets from the stack's broker.
ANONYMOUS_CONNECT = """
import time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
got = []
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dockyard-test-anonymous")
c.on_connect = lambda _c, _u, _f, rc, _p: got.append(str(rc))
c.connect("mosquitto", 1883, keepalive=10)
c.loop_start()
for _ in range(100):
    if got:
        break
    time.sleep(0.1)
print(got[0] if got else "no CONNACK")
"""


def test_compose_stack_runs_the_demo_keeps_it_over_a_restart_and_leaves_nothing(images, tmp_path):
    # Debian's docker-compose 1.29 by default; DOCKYARD_TEST_COMPOSE names another (e.g. a compose v2 binary).
    compose_bin = os.environ.get("DOCKYARD_TEST_COMPOSE") or shutil.which("docker-compose")
    assert compose_bin, "docker-compose is missing: apt-get install docker-compose (scripts/bootstrap.sh does)"
    image, mosquitto = images
    project, cluster = f"dyc{RUN}", f"t-{RUN}"
    node = f"{cluster}-compose"
    port = free_port()
    env = {**os.environ, "DOCKYARD_IMAGE": image, "DOCKYARD_MOSQUITTO_IMAGE": mosquitto, "DOCKYARD_API_PORT": str(port),
           "DOCKYARD_CLUSTER": cluster, "DOCKYARD_NODE_ID": node}
    env.pop("COMPOSE_PROJECT_NAME", None)

    def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run([compose_bin, "-p", project, "-f", str(REPO / "docker-compose.yml"), *args], env=env,
                            capture_output=True, text=True, timeout=300)
        if check and cp.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}")
        return cp

    base = f"http://127.0.0.1:{port}"
    api = httpx.Client(base_url=base, timeout=5.0)

    def healthy_tasks() -> list[dict] | None:
        tasks = [t for t in api.get(f"/v1/clusters/{cluster}/tasks").json()["tasks"] if t["desiredStatus"] == "RUNNING"]
        ok = [t for t in tasks if t["lastStatus"] == "RUNNING" and t.get("healthStatus") == "HEALTHY"]
        return ok if len(ok) == 3 == len(tasks) else None

    def docker_ids() -> set[str]:
        return {c["ID"] for c in docker_containers([f"dockyard.cluster={cluster}"], all=False)}

    def leftovers() -> list[str]:
        label = f"label=com.docker.compose.project={project}"
        return (docker("ps", "-aq", "--filter", label).stdout.split()
                + docker("volume", "ls", "-q", "--filter", label).stdout.split()
                + docker("network", "ls", "-q", "--filter", label).stdout.split()
                + docker("ps", "-aq", "--filter", f"label=dockyard.node={node}").stdout.split())

    try:
        compose("up", "-d")
        wait_for(lambda: api.get("/healthz").status_code == 200, timeout=60, message="orchestrator /healthz")
        # The API needs a token: the first start wrote an admin token into its volume.
        token = wait_for(lambda: compose("exec", "-T", "orchestrator", "cat", "/etc/dockyard/token/admin-token",
                                         check=False).stdout.strip(), timeout=30, message="the admin token")
        api.headers["Authorization"] = f"Bearer {token}"
        wait_for(lambda: any(n["connected"] for n in api.get(f"/v1/clusters/{cluster}/nodes").json()["nodes"]),
                 timeout=60, message="the compose agent connected")
        subprocess.run([DOCKYARD, "--server", base, "-c", cluster, "apply", "-f", str(_demo_without_load_balancer(tmp_path))],
                       check=True, capture_output=True, timeout=60, env={**os.environ, "DOCKYARD_TOKEN": token})
        first = wait_for(healthy_tasks, timeout=90, message="3 tasks RUNNING and HEALTHY")
        containers = docker_ids()
        assert len(containers) == 3
        # The stack's broker is the secure one: an anonymous client on the stack's network is refused, the
        # agent logged in with its own node credential (kept 0600 in its state volume).
        assert compose("exec", "-T", "orchestrator", "python", "-c", ANONYMOUS_CONNECT).stdout.strip() == "Not authorized"
        assert compose("exec", "-T", "agent", "stat", "-c", "%a", "/var/lib/dockyard/agent/credentials.json"
                       ).stdout.strip() == "600"

        # The whole stack goes and comes back (volumes kept): same tasks, same containers.
        compose("down")
        compose("up", "-d")
        wait_for(lambda: api.get("/healthz").status_code == 200, timeout=60, message="orchestrator back")
        wait_for(lambda: (n := api.get(f"/v1/clusters/{cluster}/nodes").json()["nodes"]) and n[0]["connected"]
                 and n[0]["observedGeneration"] > 0, timeout=60, message="the agent back and observing")
        again = wait_for(healthy_tasks, timeout=60, message="3 tasks RUNNING and HEALTHY after the restart")
        assert {t["taskId"] for t in again} == {t["taskId"] for t in first}
        assert docker_ids() == containers

        # Down with its volumes, then the task containers by label (docs/install.md).
        compose("down", "-v", "--remove-orphans")
        ids = docker("ps", "-aq", "--filter", f"label=dockyard.node={node}").stdout.split()
        assert len(ids) == 3
        docker("rm", "-f", *ids)
        assert leftovers() == []
    finally:
        with contextlib.suppress(Exception):
            api.close()
        compose("down", "-v", "--remove-orphans", "--timeout", "5", check=False)
        ids = docker("ps", "-aq", "--filter", f"label=dockyard.cluster={cluster}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False)
