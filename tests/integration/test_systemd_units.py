"""deploy/systemd/ (issue 19): every unit and drop-in passes `systemd-analyze verify` with no
finding (it exits 0 on unknown keys and bad values, so any output fails), and the broker
configuration for /etc/mosquitto/conf.d/ starts a Mosquitto. Needs Debian's systemd package,
not systemd as PID 1."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from harness import DOCKYARD, REPO, free_port, kill_pid, port_open, wait_for

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


def test_broker_conf_d_file_starts_mosquitto(tmp_path):
    """deploy/mosquitto/dockyard.conf as Mosquitto reads it (on a free port instead of 1883)."""
    port = free_port()
    conf = (REPO / "deploy" / "mosquitto" / "dockyard.conf").read_text()
    assert "listener 1883 127.0.0.1" in conf
    (tmp_path / "m.conf").write_text(conf.replace("listener 1883 ", f"listener {port} ") + "\nlog_dest stderr\n")
    p = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "m.conf")], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: p.poll() is not None or port_open("127.0.0.1", port), timeout=10, message="mosquitto up")
        assert p.poll() is None, p.stdout.read().decode() if p.stdout else ""
    finally:
        kill_pid(p)
