"""Python side of the multi-host test bed (scripts/testbed.sh does the work; this wraps it).

Usage in a test (root only; the module fixture brings hosts up once and always tears down)::

    from testbed import Testbed

    @pytest.fixture(scope="module")
    def testbed():
        with Testbed(3) as tb:
            yield tb

    def test_node_failure(dockyard_env, testbed):
        env = dockyard_env
        testbed.attach(env)                   # orchestrator uses the bed's broker; cleanup covers every host
        env.start_orchestrator(node_lost_seconds=3)
        for k in testbed.hosts:
            testbed.start_agent(env, k)       # node id <cluster>-h<k>, in netns dy-h<k>
        ...
        testbed.cut(2)                        # partition host 2; testbed.restore(2) heals it
        testbed.kill_dockerd(3)               # host failure; testbed.start_dockerd(3) brings it back
        testbed.stop_dockerd(3)               # a graceful dockerd stop (SIGTERM), the first half of a restart

``Testbed(3, live_restore={2})``: host 2's dockerd runs with ``--live-restore`` (its containers
survive a dockerd restart or kill); the others without, Debian's default (they die with it).
        env.stop_agent(testbed.node_id(env, 1), kill=True)   # agent crash
"""
from __future__ import annotations

import fcntl
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness import REPO, SECURE_BROKERS, Harness, SecureBroker, docker, docker_containers

SCRIPT = REPO / "scripts" / "testbed.sh"
BRIDGE = "dybr0"
BRIDGE_IP = "10.77.0.1"
MQTT_URL = f"mqtt://{BRIDGE_IP}:1883"
# The bed's broker is a secure one (scripts/testbed.sh runs `dockyard broker init` here): registered in the
# harness's SECURE_BROKERS while the bed is up, so an attached Harness logs its orchestrator and agents in.
BROKER_DIR = Path("/run/dockyard-testbed/broker")
# The bed is machine-wide (one bridge, fixed names): test runs that use it take turns.
LOCK_PATH = "/run/dockyard-testbed.lock"
_held_here: list["Testbed"] = []  # a bed up in this process (waiting for our own lock would hang)


@dataclass(frozen=True)
class Host:
    k: int

    @property
    def name(self) -> str:
        return f"h{self.k}"

    @property
    def netns(self) -> str:
        return f"dy-h{self.k}"

    @property
    def ip(self) -> str:
        return f"10.77.0.{10 + self.k}"

    @property
    def veth(self) -> str:
        return f"dyv{self.k}"

    @property
    def docker_url(self) -> str:
        return f"unix:///run/dockyard-testbed/h{self.k}.sock"

    @property
    def nsenter(self) -> list[str]:
        """Prefix that runs a command inside this host's network namespace."""
        return ["nsenter", f"--net=/var/run/netns/{self.netns}"]

    @property
    def dockerd_log(self) -> Path:
        return Path(f"/run/dockyard-testbed/h{self.k}.dockerd.log")

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return docker(*args, check=check, timeout=timeout, host=self.docker_url)

    def exec(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a command in this host's network namespace."""
        cp = subprocess.run([*self.nsenter, *argv], capture_output=True, text=True, timeout=timeout)
        if check and cp.returncode != 0:
            raise AssertionError(f"[{self.name}] {' '.join(argv)} failed ({cp.returncode}): {cp.stderr.strip()}")
        return cp


    def can_connect(self, ip: str, port: int, timeout: float = 1.0) -> bool:
        """Can this host open a TCP connection to ip:port (e.g. the broker at 10.77.0.1:1883)?"""
        code = f"import socket; socket.create_connection(({ip!r}, {port}), {timeout})"
        return self.exec(str(REPO / ".venv" / "bin" / "python"), "-c", code, check=False,
                         timeout=timeout + 10).returncode == 0


def run_script(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    cp = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    if check and cp.returncode != 0:
        raise AssertionError(f"scripts/testbed.sh {' '.join(args)} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
    return cp


class Testbed:
    """N hosts on this machine. ``up()``/``down()`` or use as a context manager (down always runs)."""

    __test__ = False  # not a pytest test class

    def __init__(self, n: int, live_restore: Iterable[int] = ()) -> None:
        self.n = n
        self.live_restore = sorted(set(live_restore))
        if any(not 1 <= k <= n for k in self.live_restore):
            raise ValueError(f"live_restore {self.live_restore}: hosts 1..{n}")
        self.hosts: dict[int, Host] = {k: Host(k) for k in range(1, n + 1)}
        self.mqtt_url = MQTT_URL
        self._lock = None

    def up(self, lock_timeout: float = 600) -> "Testbed":
        if _held_here:
            raise AssertionError("a Testbed is already up in this process (one bed at a time: share it "
                                 "through a fixture, or let the other's scope end first)")
        self._lock = open(LOCK_PATH, "w")
        deadline = time.monotonic() + lock_timeout
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock.close()
                    self._lock = None
                    raise AssertionError(f"another test run holds the test bed ({LOCK_PATH}) for {lock_timeout:.0f}s")
                time.sleep(0.5)
        _held_here.append(self)
        try:
            run_script(*self._up_args())
        except BaseException:
            self.down()
            raise
        SECURE_BROKERS[MQTT_URL] = SecureBroker(MQTT_URL, BROKER_DIR, BROKER_DIR / "orchestrator-credentials.json")
        return self

    def down(self) -> None:
        SECURE_BROKERS.pop(MQTT_URL, None)
        try:
            run_script("down")
        finally:
            if self._lock is not None:
                self._lock.close()  # releases the flock
                self._lock = None
            if self in _held_here:
                _held_here.remove(self)

    def __enter__(self) -> "Testbed":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def host(self, k: int) -> Host:
        return self.hosts[k]

    def heal(self) -> None:
        """Undo earlier failures: links back up, dead dockerds restarted (``testbed.sh up`` is
        idempotent). Call it at the start of each test that shares a bed with others."""
        run_script(*self._up_args())

    def _up_args(self) -> list[str]:
        return ["up", str(self.n), "--live-restore", ",".join(map(str, self.live_restore))]

    # ---- failures ----------------------------------------------------------------------------
    def kill_dockerd(self, k: int) -> None:
        run_script("kill-dockerd", str(k))

    def start_dockerd(self, k: int) -> None:
        run_script("start-dockerd", str(k))

    def stop_dockerd(self, k: int) -> None:
        """SIGTERM host k's dockerd and wait until it is gone (without live-restore it stops its
        containers first; with it they keep running)."""
        run_script("stop-dockerd", str(k))

    def cut(self, k: int) -> None:
        """Network partition: host k's veth goes down (its agent can't reach the broker)."""
        run_script("cut", str(k))

    def restore(self, k: int) -> None:
        run_script("restore", str(k))

    def broker_stop(self, kill: bool = False) -> None:
        """Stop the bed's Mosquitto by pid: SIGTERM (it publishes every client's Will as it shuts
        down) or SIGKILL (nothing published). Returns once the process is gone."""
        run_script("broker-stop", *(["kill"] if kill else []))

    def broker_start(self) -> None:
        """Start the bed's Mosquitto again (persistence off: it comes back with nothing retained; the
        plugin's file keeps the node clients)."""
        run_script("broker-start")

    # ---- with the harness ---------------------------------------------------------------------
    def attach(self, env: Harness) -> None:
        """Point ``env`` at the bed's broker (call before ``env.start_orchestrator``) and make its
        cleanup remove the cluster's containers from every host's dockerd."""
        env.mqtt_url = self.mqtt_url
        hosts = [None] + [h.docker_url for h in self.hosts.values()]
        original = env.cleanup

        def cleanup(docker_hosts=hosts):  # noqa: ANN001
            problems = original(docker_hosts=[h for h in docker_hosts if h is None or self._reachable(h)])
            return problems
        env.cleanup = cleanup  # type: ignore[method-assign]

    @staticmethod
    def _reachable(docker_url: str) -> bool:
        return docker("info", check=False, timeout=10, host=docker_url).returncode == 0

    def node_id(self, env: Harness, k: int) -> str:
        return f"{env.cluster}-h{k}"

    def start_agent(self, env: Harness, k: int, **kwargs):  # noqa: ANN003, ANN201
        """Start an agent for host k inside its namespace, driving its dockerd, via the bed's broker."""
        h = self.hosts[k]
        kwargs.setdefault("node_id", self.node_id(env, k))
        return env.start_agent(mqtt=self.mqtt_url, docker_url=h.docker_url, argv_prefix=h.nsenter, **kwargs)

    def containers(self, env: Harness, k: int, all: bool = True) -> list[dict]:
        return docker_containers([f"dockyard.cluster={env.cluster}"], all=all, host=self.hosts[k].docker_url)
