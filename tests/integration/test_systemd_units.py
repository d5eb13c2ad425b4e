"""deploy/systemd/ (issue 19): every unit and drop-in passes `systemd-analyze verify` with no
finding (it exits 0 on unknown keys and bad values, so any output fails); the Mosquitto drop-in runs the
secure broker `dockyard broker init` writes. Needs Debian's systemd package, not systemd as PID 1; the slow
test boots the units under a real systemd in a container."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from harness import DOCKYARD, IMAGE, REPO, docker, on_postgresql, wait_for

pytestmark = pytest.mark.skipif(on_postgresql(), reason="installs dockyard as a user does, with its own default SQLite store: it does not take the harness's store; the SQLite run covers it")

UNITS = REPO / "deploy" / "systemd"
SERVICES = sorted(UNITS.glob("*.service"))


def _verify(unit_dir: Path, *units: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, timeout=60,
                          env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


@pytest.fixture
def unit_dir(tmp_path):
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: apt-get install systemd"
    return tmp_path


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_unit_verifies_clean(unit_dir, unit):
    # ExecStart must exist for verify: the installed /opt/dockyard/bin/dockyard is this repo's.
    text = unit.read_text()
    assert "/opt/dockyard/bin/dockyard" in text
    for needed in ("Restart=on-failure", "StateDirectory=", "NoNewPrivileges=yes", "ProtectSystem=strict"):
        assert needed in text, f"{unit.name} lacks {needed}"
    copy = unit_dir / unit.name
    copy.write_text(text.replace("/opt/dockyard/bin/dockyard", DOCKYARD))
    cp = _verify(unit_dir, copy)
    assert cp.returncode == 0 and not (cp.stdout + cp.stderr).strip(), cp.stdout + cp.stderr


def test_orchestrator_runs_as_a_dynamic_user_and_the_agent_keeps_haproxy_over_restarts():
    orch = (UNITS / "dockyard-orchestrator.service").read_text()
    agent = (UNITS / "dockyard-agent.service").read_text()
    assert "DynamicUser=yes" in orch and "User=root" not in orch
    assert "KillMode=process" in agent  # agent/lb/haproxy.py: HAProxy survives the agent, which adopts it


def test_mosquitto_drop_in_verifies_clean_with_debians_unit(unit_dir):
    debian = Path("/lib/systemd/system/mosquitto.service")
    assert debian.exists(), "Debian's mosquitto package is missing (scripts/bootstrap.sh installs it)"
    shutil.copy(debian, unit_dir / "mosquitto.service")
    (unit_dir / "mosquitto.service.d").mkdir()
    shutil.copy(UNITS / "mosquitto.service.d" / "dockyard.conf", unit_dir / "mosquitto.service.d" / "dockyard.conf")
    cp = _verify(unit_dir, unit_dir / "mosquitto.service")
    assert cp.returncode == 0 and not (cp.stdout + cp.stderr).strip(), cp.stdout + cp.stderr


def test_the_broker_drop_in_runs_what_broker_init_wrote():
    """deploy/systemd/mosquitto.service.d/dockyard.conf replaces Debian's ExecStart with the secure broker's
    configuration (the units under systemd below run it)."""
    conf = (UNITS / "mosquitto.service.d" / "dockyard.conf").read_text()
    assert "ExecStart=\nExecStart=/usr/sbin/mosquitto -c /etc/dockyard/broker/mosquitto.conf" in conf
    orch = (UNITS / "dockyard-orchestrator.service").read_text()
    assert "/etc/dockyard/broker/orchestrator-credentials.json /run/dockyard/mqtt.json" in orch
    assert "--mqtt-credentials /run/dockyard/mqtt.json" in orch


# ---- the units under a real systemd ------------------------------------------------------------
# A bookworm rootfs with systemd (debootstrap, cached like scripts/build-image.sh's), booted as a
# container (systemd as its PID 1) with the host's Docker socket: Mosquitto, the orchestrator and
# the agent installed as docs/install.md says, then a service's tasks run on the host's dockerd.
SYSTEMD_PACKAGES = "systemd,systemd-sysv,python3,python3-venv,mosquitto,ca-certificates,curl"
CACHE = Path(os.environ.get("DOCKYARD_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "dockyard")

INSTALL = r"""
set -e
python3 -m venv /opt/dockyard
/opt/dockyard/bin/pip install -q --disable-pip-version-check --no-index --find-links /wh dockyard
/opt/dockyard/bin/dockyard broker init /etc/dockyard/broker --persistence >/dev/null
mkdir -p /etc/systemd/system/mosquitto.service.d
cp /deploy/systemd/mosquitto.service.d/dockyard.conf /etc/systemd/system/mosquitto.service.d/
cp /deploy/systemd/dockyard-orchestrator.service /deploy/systemd/dockyard-agent.service /etc/systemd/system/
cp /deploy/systemd/orchestrator.env /etc/default/dockyard-orchestrator
cp /deploy/systemd/agent.env /etc/default/dockyard-agent
sed -i "s/^DOCKYARD_NODE_ID=.*/DOCKYARD_NODE_ID=$NODE/; s/^DOCKYARD_CLUSTER=.*/DOCKYARD_CLUSTER=$CLUSTER/; s#^DOCKYARD_MQTT=.*#DOCKYARD_MQTT=mqtt://127.0.0.1:1883#; s#^DOCKYARD_AGENT_ARGS=.*#DOCKYARD_AGENT_ARGS=--metadata-port 0 --mqtt-credentials /etc/dockyard/$NODE.credentials.json#" /etc/default/dockyard-agent
systemctl daemon-reload
systemctl restart mosquitto
systemctl enable --now dockyard-orchestrator
for i in $(seq 1 100); do curl -sf 127.0.0.1:8080/healthz >/dev/null && break; sleep 0.2; done
# The node's own broker login, as docs/install.md says (the admin token the orchestrator's first start wrote).
DOCKYARD_TOKEN_FILE=/var/lib/dockyard/admin-token /opt/dockyard/bin/dockyard --server http://127.0.0.1:8080 \
  -c $CLUSTER node join $NODE -o /etc/dockyard/$NODE.credentials.json
systemctl enable --now dockyard-agent
"""

ANONYMOUS_PROBE = """
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

got = []
c = mqtt.Client(CallbackAPIVersion.VERSION2)
c.on_connect = lambda _c, _u, _f, rc, _p: got.append(str(rc))
c.connect("127.0.0.1", 1883)
for _ in range(20):
    c.loop(0.2)
    if got:
        break
print("connected" if got == ["Success"] else "refused: " + (got[0] if got else "no answer"))
"""

SERVICE = """
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {name: web}
spec:
  containerDefinitions:
    - {name: web, image: IMAGE, command: ["httpd", "-f", "-p", "8080", "-h", "/www"], memory: 32, stopTimeout: 2}
---
apiVersion: dockyard/v1
kind: Service
metadata: {name: web}
spec: {taskDefinition: web, desiredCount: 2}
"""


def _debian_mirror() -> str:
    """The mirror apt uses (as scripts/build-image.sh finds it), or DOCKYARD_DEBIAN_MIRROR."""
    if os.environ.get("DOCKYARD_DEBIAN_MIRROR"):
        return os.environ["DOCKYARD_DEBIAN_MIRROR"]
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        for m in re.finditer(r"^(?:URIs:|deb)\s+(https?://\S+/debian)/?\s", f.read_text() if f.is_file() else "", re.M):
            return m.group(1)
    raise AssertionError("no Debian mirror in /etc/apt/sources.list*: set DOCKYARD_DEBIAN_MIRROR")


def _systemd_image() -> str:
    key = hashlib.sha256(f"bookworm {SYSTEMD_PACKAGES}".encode()).hexdigest()[:12]
    image = f"dockyard-test/systemd:{key}"
    if docker("image", "inspect", image, check=False).returncode == 0:
        return image
    tarball = CACHE / f"rootfs-bookworm-systemd-{key}.tar"
    if not tarball.exists():
        assert shutil.which("debootstrap"), "debootstrap is missing: scripts/build-image.sh installs it"
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as root:
            subprocess.run(["debootstrap", "--variant=minbase", f"--include={SYSTEMD_PACKAGES}", "bookworm", root,
                            _debian_mirror()], check=True, capture_output=True, timeout=600)
            subprocess.run(["tar", "-C", root, "--numeric-owner", "-cf", f"{tarball}.tmp", "."], check=True, timeout=300)
        os.replace(f"{tarball}.tmp", tarball)
    docker("import", "-c", 'CMD ["/sbin/init"]', str(tarball), image, timeout=300)
    return image


def _sh(container: str, script: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 300):
    args = ["exec"] + [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")] + [container, "bash", "-c", script]
    return docker(*args, check=check, timeout=timeout)


@pytest.mark.slow
def test_units_run_under_systemd_with_restart_on_failure(tmp_path):
    run = uuid.uuid4().hex[:8]
    cluster, node, name = f"t-{run}", f"t-{run}-sd", f"dockyard-test-systemd-{run}"
    wheels = tmp_path / "wh"
    pip = str(REPO / ".venv" / "bin" / "pip")
    cmd = [pip, "wheel", "-q", "--disable-pip-version-check", "--find-links", str(CACHE / "wheels"),
           "--wheel-dir", str(wheels), str(REPO)]
    if subprocess.run(cmd + ["--no-index"], capture_output=True, timeout=300).returncode != 0:
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)  # the wheel cache is not filled yet
    image = _systemd_image()
    try:
        # systemd as PID 1 needs CAP_SYS_ADMIN and the cgroup tree; this machine refuses --privileged.
        docker("run", "-d", "--name", name, "--label", f"dockyard.test={run}", "--cap-add", "SYS_ADMIN",
               "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
               "-v", "/sys/fs/cgroup:/sys/fs/cgroup", "--tmpfs", "/run", "--tmpfs", "/run/lock",
               "-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", f"{wheels}:/wh:ro",
               "-v", f"{REPO / 'deploy'}:/deploy:ro", image, "/sbin/init")
        wait_for(lambda: _sh(name, "systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded"),
                 timeout=60, message="systemd up in the container")
        _sh(name, INSTALL, env={"NODE": node, "CLUSTER": cluster})

        dy = (f"DOCKYARD_TOKEN_FILE=/var/lib/dockyard/admin-token "  # the admin token the first start wrote
              f"/opt/dockyard/bin/dockyard --server http://127.0.0.1:8080 -c {cluster}")
        try:
            wait_for(lambda: f"{node} " in _sh(name, f"{dy} get nodes", check=False).stdout, timeout=60,
                     message="the agent's node registered")
        except AssertionError as e:  # say why: the units' journals and the CLI's own answer
            logs = _sh(name, "journalctl --no-pager -n 40 -u dockyard-orchestrator -u dockyard-agent; "
                             f"{dy} get nodes", check=False)
            raise AssertionError(f"{e}\n{logs.stdout[-4000:]}\n{logs.stderr[-2000:]}") from None
        # The secure broker: no anonymous login; the orchestrator logged in with the credential systemd handed over.
        anon = _sh(name, "cat > /tmp/anon.py <<'EOF'\n" + ANONYMOUS_PROBE + "EOF\n/opt/dockyard/bin/python /tmp/anon.py",
                   check=False)
        assert anon.stdout.strip() == "refused: Not authorized", (anon.stdout, anon.stderr)
        show = _sh(name, "systemctl show -p User -p DynamicUser dockyard-orchestrator").stdout
        assert "DynamicUser=yes" in show
        assert _sh(name, "stat -c %U /var/lib/private/dockyard/dockyard.db").stdout.strip() != "root"
        assert _sh(name, "stat -c %a /var/lib/dockyard-agent/seal.key").stdout.strip() == "600"

        _sh(name, f"cat > /tmp/svc.yaml <<'EOF'\n{SERVICE.replace('IMAGE', IMAGE)}\nEOF\n{dy} apply -f /tmp/svc.yaml")
        wait_for(lambda: _sh(name, f"{dy} get tasks", check=False).stdout.count("RUNNING   RUNNING") == 2,
                 timeout=60, message="2 tasks RUNNING through the units")

        # Restart=on-failure: a killed orchestrator comes back (a new epoch), its tasks kept.
        _sh(name, "kill -9 $(systemctl show -p MainPID --value dockyard-orchestrator)")
        wait_for(lambda: '"epoch":2' in _sh(name, "curl -s 127.0.0.1:8080/healthz", check=False).stdout,
                 timeout=60, message="the orchestrator restarted by systemd")
        assert "NRestarts=1" in _sh(name, "systemctl show -p NRestarts dockyard-orchestrator").stdout
        wait_for(lambda: _sh(name, f"{dy} get tasks", check=False).stdout.count("RUNNING   RUNNING") == 2,
                 timeout=60, message="the same 2 tasks RUNNING after the restart")
    finally:
        docker("rm", "-f", name, check=False)
        ids = docker("ps", "-aq", "--filter", f"label=dockyard.cluster={cluster}", check=False).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False)
