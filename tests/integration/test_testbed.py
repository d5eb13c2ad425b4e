"""The multi-host test bed: 2 hosts, a container in each host's dockerd, nothing left behind."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness import wait_for
from testbed import BRIDGE, Testbed

pytestmark = pytest.mark.integration


def _docker0_addrs() -> list[str]:
    """docker0's addresses (its UP/DOWN state follows whatever else runs on the main dockerd)."""
    out = subprocess.run(["ip", "-br", "addr", "show", "docker0"], capture_output=True, text=True).stdout.split()
    return out[2:]


def _leftovers() -> list[str]:
    out = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    out += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith("dy-h")]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    out += [f"link {line.split()[0]}" for line in links.splitlines() if line.startswith(("dyv", BRIDGE))]
    out += [f"path {p}" for p in ("/run/dockyard-testbed", "/var/lib/dockyard-testbed") if Path(p).exists()]
    mounts = Path("/proc/self/mounts").read_text()
    out += [f"mount {line.split()[1]}" for line in mounts.splitlines() if "dockyard-testbed" in line]
    for proc in Path("/proc").iterdir():  # no `ps`: procps isn't on a minimal Debian
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            zombie = "\nState:\tZ" in (proc / "status").read_text()
        except OSError:
            continue
        if "dockyard-testbed" in args and not zombie:
            out.append(f"process {proc.name} {args.strip()}")
    return out


def test_two_hosts_run_containers_and_tear_down_cleanly(infra, dockyard_env):
    if os.geteuid() != 0:
        pytest.fail("the multi-host test bed needs root (network namespaces, dockerd)", pytrace=False)
    env = dockyard_env
    docker0_before = _docker0_addrs()

    tb = Testbed(2)
    with tb:
        testbed_attach_ok = tb.attach(env) is None
        assert testbed_attach_ok and env.mqtt_url == "mqtt://10.77.0.1:1883"
        h1, h2 = tb.host(1), tb.host(2)
        # Each host has its own dockerd with the offline image loaded.
        for h in (h1, h2):
            h.docker("run", "-d", "--name", f"{env.cluster}-{h.name}", "--label", f"dockyard.cluster={env.cluster}",
                     "-p", "8081:8080", env.image, "httpd", "-f", "-p", "8080", "-h", "/www")
            assert [c["Names"] for c in tb.containers(env, h.k, all=False)] == [f"{env.cluster}-{h.name}"]
        # ...and not in the main dockerd.
        assert env.containers() == []
        # Host 2 reaches host 1's published port over the bridge, and the bed's broker.
        got = wait_for(lambda: h2.docker("run", "--rm", env.image, "wget", "-qO-", f"http://{h1.ip}:8081/",
                                         check=False).stdout.strip() == "hello",
                       timeout=10, message="h2 -> h1:8081")
        assert got
        assert h2.can_connect("10.77.0.1", 1883)
        # A partition: h1 can no longer reach the broker; restore heals it.
        tb.cut(1)
        assert not h1.can_connect("10.77.0.1", 1883)
        tb.restore(1)
        wait_for(lambda: h1.can_connect("10.77.0.1", 1883), timeout=10, message="h1 reaches the broker after restore")
        # Harness cleanup removes the cluster's containers from every host's dockerd.
        assert env.cleanup() == []
        assert tb.containers(env, 1) == [] and tb.containers(env, 2) == []

    assert _leftovers() == []
    # The main dockerd and its docker0 are untouched.
    assert subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    assert _docker0_addrs() == docker0_before and docker0_before


@pytest.mark.slow
def test_partitioned_host_is_replaced_on_the_other(infra, dockyard_env):
    """Orchestrator + an agent per host; cutting h2's link moves its tasks to h1."""
    if os.geteuid() != 0:
        pytest.fail("the multi-host test bed needs root (network namespaces, dockerd)", pytrace=False)
    env = dockyard_env
    with Testbed(2) as tb:
        tb.attach(env)
        env.start_orchestrator(node_lost_seconds=3)
        for k in (1, 2):
            tb.start_agent(env, k)
        manifest = env.write_manifest(f"""
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {{name: web}}
spec:
  containerDefinitions:
    - name: web
      image: {env.image}
      command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
      memory: 32
      stopTimeout: 2
---
apiVersion: dockyard/v1
kind: Service
metadata: {{name: web}}
spec: {{taskDefinition: web, desiredCount: 4}}
""")
        env.cli("apply", "-f", str(manifest))
        env.wait_running(4, timeout=60)
        assert {k: len(tb.containers(env, k, all=False)) for k in (1, 2)} == {1: 2, 2: 2}
        assert env.containers() == []  # nothing in the main dockerd

        tb.cut(2)
        env.wait_for(lambda: not env.node(tb.node_id(env, 2))["connected"], timeout=30, message="h2 disconnected")
        env.wait_for(lambda: len(tb.containers(env, 1, all=False)) == 4, timeout=60, message="4 tasks on h1")
        env.wait_running(4, timeout=30)
        tb.restore(2)
        env.wait_for(lambda: env.node(tb.node_id(env, 2))["connected"], timeout=30, message="h2 reconnected")
        env.cleanup()
    assert _leftovers() == []
