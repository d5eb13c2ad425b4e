"""Integration-test harness: real orchestrator and agent processes against a real Mosquitto and dockerd.

Each test gets a :class:`Harness` (fixture ``dockyard_env``, alias ``harness``) with its own cluster
name ``t-<8 hex>``, store file, HTTP port and log directory. Everything it starts is cleaned up
in :meth:`Harness.cleanup`, which the fixture always runs, pass or fail:

* processes it started are killed by pid (SIGTERM, then SIGKILL),
* containers, networks and volumes labelled ``dockyard.cluster=<cluster>`` are force-removed,
* retained MQTT messages under ``dockyard/v1/<cluster>/`` are cleared.

See docs/testing.md for the rules and an example.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
DOCKYARD = str(VENV_BIN / "dockyard") if (VENV_BIN / "dockyard").exists() else "dockyard"
DOCKER = os.environ.get("DOCKYARD_DOCKER_CLI", "docker")
BROKER_HOST = "127.0.0.1"
BROKER_PORT = 1883
MQTT_URL = f"mqtt://{BROKER_HOST}:{BROKER_PORT}"
IMAGE = os.environ.get("DOCKYARD_IMAGE", "dockyard-demo/busybox:latest")
TOPIC_ROOT = "dockyard/v1"

T = TypeVar("T")


def on_postgresql() -> bool:
    """This run's stores are PostgreSQL databases (DOCKYARD_TEST_STORE=postgresql; tests/conftest.py)."""
    return os.environ.get("DOCKYARD_TEST_STORE", "sqlite").lower() == "postgresql"


# ------------------------------------------------------------------------------------------ helpers
def free_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range (32768+), which outgoing connections and
    Docker's port proxies draw from: a port picked there can be taken before the daemon binds it."""
    for _ in range(500):
        port = random.randint(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that value.

    Exceptions raised by the predicate count as "not yet". On timeout raise AssertionError
    naming ``message`` and showing the last value (or exception) seen.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - "not ready yet" is often an exception
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {message}; last value: {last!r}")
        time.sleep(interval)


def kill_pid(proc: subprocess.Popen, timeout: float = 10.0, kill: bool = False) -> int | None:
    """SIGTERM (or SIGKILL when ``kill``), wait up to ``timeout``, then SIGKILL. Returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=10)


def docker(*args: str, check: bool = True, timeout: float = 120, host: str | None = None) -> subprocess.CompletedProcess:
    """Run the docker CLI (``host`` = a DOCKER_HOST such as unix:///run/x.sock)."""
    cmd = [DOCKER] + (["-H", host] if host else []) + list(args)
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and cp.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({cp.returncode}): {cp.stderr.strip() or cp.stdout.strip()}")
    return cp


def parse_labels(s: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (s or "").split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k] = v
    return out


def docker_containers(label_filters: list[str], all: bool = True, host: str | None = None) -> list[dict]:
    """``docker ps`` rows (dicts from ``--format '{{json .}}'``) matching ALL label filters; ``Labels`` parsed."""
    args = ["ps", "--no-trunc", "--format", "{{json .}}"] + (["-a"] if all else [])
    for f in label_filters:
        args += ["--filter", f"label={f}"]
    rows = [json.loads(line) for line in docker(*args, host=host).stdout.splitlines() if line.strip()]
    for r in rows:
        r["Labels"] = parse_labels(r.get("Labels", ""))
    return rows


def remove_by_label(label_filters: list[str], host: str | None = None) -> list[str]:
    """Force-remove containers (then networks and volumes) carrying ALL the given labels. Returns removed ids."""
    ids = [c["ID"] for c in docker_containers(label_filters, all=True, host=host)]
    if ids:
        docker("rm", "-f", "-v", *ids, check=False, host=host)
    net_args = ["network", "ls", "-q", "--no-trunc"]
    for f in label_filters:
        net_args += ["--filter", f"label={f}"]
    nets = docker(*net_args, check=False, host=host).stdout.split()
    if nets:
        docker("network", "rm", *nets, check=False, host=host)
    vol_args = ["volume", "ls", "-q"]
    for f in label_filters:
        vol_args += ["--filter", f"label={f}"]
    vols = docker(*vol_args, check=False, host=host).stdout.split()
    if vols:
        docker("volume", "rm", "-f", *vols, check=False, host=host)
    return ids


def clear_retained(prefix: str, known_topics: list[str] = (), settle: float = 0.3,
                   host: str = BROKER_HOST, port: int = BROKER_PORT, auth: tuple[str, str] | None = None) -> list[str]:
    """Clear retained messages: the given topics plus every retained topic found under ``prefix/#``.

    Uses paho-mqtt (installed with aiomqtt) synchronously so it works from any finalizer.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    found: set[str] = set(known_topics)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dockyard-test-clear-{uuid.uuid4().hex[:8]}")
    c.on_message = lambda _c, _u, msg: found.add(msg.topic) if msg.retain and msg.payload else None
    if auth:
        c.username_pw_set(*auth)
    c.connect(host, port, keepalive=10)
    c.loop_start()
    try:
        c.subscribe(f"{prefix}/#", qos=1)
        time.sleep(settle)
        infos = [c.publish(t, payload=None, qos=1, retain=True) for t in sorted(found)]
        for i in infos:
            i.wait_for_publish(timeout=5)
    finally:
        c.loop_stop()
        c.disconnect()
    return sorted(found)


def retained_topics(prefix: str, settle: float = 0.3, host: str = BROKER_HOST, port: int = BROKER_PORT,
                    auth: tuple[str, str] | None = None) -> dict[str, bytes]:
    """Retained messages currently held by the broker under ``prefix/#`` (topic -> payload)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: dict[str, bytes] = {}
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dockyard-test-peek-{uuid.uuid4().hex[:8]}")
    c.on_message = lambda _c, _u, msg: got.__setitem__(msg.topic, msg.payload) if msg.retain else None
    if auth:
        c.username_pw_set(*auth)
    c.connect(host, port, keepalive=10)
    c.loop_start()
    try:
        c.subscribe(f"{prefix}/#", qos=1)
        time.sleep(settle)
    finally:
        c.loop_stop()
        c.disconnect()
    return got


@dataclass
class SecureBroker:
    """A Mosquitto without anonymous access, its clients in the dynamic-security plugin (``dockyard broker init``)."""

    url: str
    dir: Path
    credentials_file: Path  # the orchestrator's login (it may also manage the plugin)
    tls_url: str | None = None  # mqtts:// on the TLS listener (secure_broker(tls=True))
    ca_file: Path | None = None  # the CA the TLS listener's certificate is signed by
    proc: subprocess.Popen | None = None  # the broker (a test may kill it: kill_pid(b.proc, kill=True))

    @property
    def auth(self) -> tuple[str, str]:
        d = json.loads(self.credentials_file.read_text())
        return d["username"], d["password"]


# Every secure broker a test runs, by URL: the Harness looks its broker up here, so a test that sets
# ``env.mqtt_url`` to one gets credentials for the orchestrator, its agents and the cleanup in one place.
SECURE_BROKERS: dict[str, SecureBroker] = {}


def secure_by_default() -> bool:
    """Every test's broker is a secure one of its own unless DOCKYARD_TEST_SECURE_BROKER=0 (a developer's quick
    look at the shared anonymous broker; CI never sets it). A test opts out with
    ``@pytest.mark.anonymous_broker("why")`` (tests/conftest.py)."""
    return os.environ.get("DOCKYARD_TEST_SECURE_BROKER", "1").lower() not in ("0", "false", "no")


def broker_init(directory: Path, port: int, bind: str, tls_args: list[str] = ()) -> None:
    """``dockyard broker init`` in this process (the same command users run; no interpreter start per test).
    ``tls_args``: its further flags."""
    from dockyard.cli import cli

    try:
        cli.main(args=["broker", "init", str(directory), "--port", str(port), "--bind", bind, *tls_args],
                 prog_name="dockyard", standalone_mode=False)
    except Exception as e:  # noqa: BLE001 - a CliError or click's usage error
        raise AssertionError(f"dockyard broker init failed: {e}") from None


@contextlib.contextmanager
def secure_broker(workdir: Path, bind: str = BROKER_HOST, tls: bool = False,
                  login_of: SecureBroker | None = None) -> Iterator[SecureBroker]:
    """A Mosquitto of the test's own on a free port, configured by ``dockyard broker init`` (no anonymous access,
    the dynamic-security plugin holding the orchestrator's client); registered in SECURE_BROKERS; stopped by pid.
    ``tls``: also a TLS listener on another free port (its certificate names only ``localhost``).
    ``login_of``: the second broker of a pair, with the first one's orchestrator login (docs/high-availability.md:
    the same orchestrator credentials on both) and no node client yet."""
    port = free_port()
    tls_port = free_port() if tls else None
    # Not under pytest's tmp_path (0700 root): Mosquitto started as root drops to the user 'mosquitto',
    # which must reach the plugin's file. The broker's log is copied into ``workdir`` after.
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="dockyard-test-broker-"))
    base.chmod(0o755)
    bdir = base / "broker"
    tls_args = ["--tls-port", str(tls_port), "--tls-bind", bind, "--tls-name", "localhost"] if tls_port else []
    login_args = ["--orchestrator-credentials", str(login_of.credentials_file)] if login_of else []
    broker_init(bdir, port, bind, tls_args + login_args)
    log = open(bdir / "mosquitto.log", "ab")
    proc = subprocess.Popen(["mosquitto", "-c", str(bdir / "mosquitto.conf"), "-v"], stdout=log,
                            stderr=subprocess.STDOUT)
    log.close()
    b = SecureBroker(f"mqtt://{bind}:{port}", bdir, bdir / "orchestrator-credentials.json",
                     f"mqtts://localhost:{tls_port}" if tls_port else None, bdir / "tls" / "ca.crt" if tls_port else None,
                     proc)
    urls = [u for u in (b.url, b.tls_url) if u]
    SECURE_BROKERS.update({u: b for u in urls})
    try:
        wait_for(lambda: proc.poll() is None and port_open(bind, port) and (not tls_port or port_open(bind, tls_port)),
                 timeout=10, message="secure mosquitto")
        yield b
    finally:
        for u in urls:
            SECURE_BROKERS.pop(u, None)
        kill_pid(proc)
        with contextlib.suppress(OSError):
            shutil.copy(bdir / "mosquitto.log", workdir / f"mosquitto-{port}.log")
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def private_broker(workdir: Path, secure: bool | None = None) -> Iterator[str]:
    """A Mosquitto of the test's own on a free loopback port (yields its URL; stopped by pid after).

    For tests that run long or restart agents: an orchestrator subscribes to every cluster's
    presence, so on the shared broker the orchestrator of another test running at the same time
    adopts this test's nodes and, with a higher epoch of its own, publishes them an empty desired
    document (the agent then removes its tasks). Set ``env.mqtt_url`` before starting anything.
    ``secure`` (default: :func:`secure_by_default`): a :func:`secure_broker`; the Harness finds its
    credentials by the URL."""
    if secure if secure is not None else secure_by_default():
        with secure_broker(workdir) as b:
            yield b.url
        return
    port = free_port()
    conf = workdir / "private-mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: proc.poll() is None and port_open(BROKER_HOST, port), timeout=10, message="private mosquitto")
        yield f"mqtt://{BROKER_HOST}:{port}"
    finally:
        kill_pid(proc)


# ------------------------------------------------------------------------------------------ infra
def check_infra() -> list[str]:
    """Problems that make integration tests impossible (empty list when all is well)."""
    problems: list[str] = []
    try:
        cp = subprocess.run([DOCKER, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=20)
        if cp.returncode != 0:
            problems.append(f"dockerd is not reachable (`docker info`: {cp.stderr.strip()[-300:]})")
    except (OSError, subprocess.TimeoutExpired) as e:
        problems.append(f"docker CLI unusable: {e}")
    else:
        if cp.returncode == 0:
            im = subprocess.run([DOCKER, "image", "inspect", IMAGE], capture_output=True, text=True, timeout=20)
            if im.returncode != 0:
                problems.append(f"image {IMAGE} is missing (scripts/bootstrap.sh builds it offline)")
    if not port_open(BROKER_HOST, BROKER_PORT):
        problems.append(f"no MQTT broker listens on {BROKER_HOST}:{BROKER_PORT}")
    if not (VENV_BIN / "dockyard").exists():
        problems.append(f"{VENV_BIN / 'dockyard'} is missing (pip install -e '.[test]' into .venv)")
    import shutil

    if shutil.which("haproxy") is None:
        problems.append("haproxy is not installed (scripts/bootstrap.sh installs Debian's package)")
    return problems


# ------------------------------------------------------------------------------------------ harness
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    argv: list[str]


@dataclass
class Harness:
    """One test's private dockyard world. Build with :meth:`create`; always :meth:`cleanup`."""

    workdir: Path
    cluster: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:8]}")
    mqtt_url: str = MQTT_URL
    image: str = IMAGE

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A SQLite file, or a postgresql:// URL (tests/conftest.py: DOCKYARD_TEST_STORE=postgresql).
        self.store: Path | str = self.workdir / "dockyard.db"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api = httpx.Client(base_url=self.base_url, timeout=10.0)
        self.orchestrator: Proc | None = None
        self.agents: dict[str, Proc] = {}
        self.node_ids: list[str] = []  # every node id ever started (for MQTT cleanup)
        self.logs: list[Path] = []     # every log file ever written (printed on failure)
        self._dead: list[Proc] = []
        self._agent_seq = 0
        self._metadata_ports: dict[str, int] = {}  # node id -> its agent's --metadata-port
        self._manifest_seq = 0
        self._cleaned = False
        self._mqtt_dirty = False  # retained topics may exist that cleanup must clear
        # The API's admin token: the orchestrator's first start writes it here (--admin-token-file); the harness
        # sends it with every request of self.api and self.cli (None: started with insecure_no_auth=True).
        self.token_file = self.workdir / "admin-token"
        self.token: str | None = None
        self.tls_ca: Path | None = None  # set by use_tls: the API is https:// and verified against this CA

    # ---- processes ------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        # Append: a restarted process keeps its predecessor's log above a marker.
        fh = open(log, "ab")
        fh.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
        fh.flush()
        penv = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=penv, cwd=str(self.workdir), start_new_session=True)
        fh.close()
        if log not in self.logs:
            self.logs.append(log)
        return Proc(name, popen, log, argv)

    @staticmethod
    def _flags(extra: dict[str, Any]) -> list[str]:
        out: list[str] = []
        for k, v in extra.items():
            flag = "--" + k.replace("_", "-")
            if v is True:
                out.append(flag)
            elif v is False or v is None:
                continue
            elif isinstance(v, (list, tuple)):
                for item in v:
                    out += [flag, str(item)]
            else:
                out += [flag, str(v)]
        return out

    def start_orchestrator(self, wait: bool = True, timeout: float = 30.0, mqtt: str | None = None,
                           standby_ok: bool = False, **extra_flags: Any) -> Proc:
        """Start ``dockyard orchestrator`` on this test's port and store; wait for /healthz.

        ``standby_ok``: on a PostgreSQL store, do not wait until it leads (a second orchestrator).
        ``extra_flags`` become CLI flags: ``heartbeat_timeout=5`` -> ``--heartbeat-timeout 5``,
        ``foo=True`` -> ``--foo``, lists repeat the flag. ``mqtt``: another broker URL for the
        orchestrator only (e.g. through a fault injector); cleanup still uses ``mqtt_url``.
        """
        if self.orchestrator and self.orchestrator.popen.poll() is None:
            raise AssertionError("orchestrator already running; stop_orchestrator() first")
        for attempt in range(3):
            argv = [DOCKYARD, "orchestrator", "--listen", f"127.0.0.1:{self.port}", "--store", str(self.store),
                    "--mqtt", mqtt or self.mqtt_url] + self._flags({**self._orchestrator_auth(), **extra_flags})
            if not extra_flags.get("insecure_no_auth") and "admin_token_file" not in extra_flags:
                argv += ["--admin-token-file", str(self.token_file)]
            if isinstance(self.store, str) and "secrets_key_file" not in extra_flags:
                argv += ["--secrets-key-file", str(self.workdir / "secrets-key")]  # not in the user's data dir
            self.orchestrator = p = self._spawn("orchestrator", argv)
            self._mqtt_dirty = True
            if not wait:
                return p

            def healthy() -> bool:
                if p.popen.poll() is not None:
                    raise _Exited(f"orchestrator exited with {p.popen.returncode}; log:\n{self.tail(p.log)}")
                return self.api.get("/healthz", timeout=1.0).status_code == 200
            try:
                self._wait_alive(healthy, timeout, "orchestrator /healthz")
                if isinstance(self.store, str) and not extra_flags.get("insecure_no_auth"):
                    # On PostgreSQL a standby is alive at once; the first leader writes the admin token just after.
                    wait_for(self.token_file.exists, timeout=timeout, message="the admin token file")
                if isinstance(self.store, str) and not standby_ok:
                    # Restarted after a crash it is a standby until the old lease expires: wait until it leads.
                    wait_for(lambda: self.api.get("/readyz", timeout=1.0).status_code == 200, timeout=timeout,
                             message="the orchestrator leads (/readyz)")
                self._use_token(None if extra_flags.get("insecure_no_auth") else self.token_file)
                return p
            except _Exited:
                # Another process took the port between free_port() and the bind: use another one.
                if attempt == 2 or "cannot listen" not in self.tail(p.log, 20):
                    raise
                self._dead.append(p)
                self.port = free_port()
                self._new_api()
        return p

    def use_tls(self, ca_file: Path) -> None:
        """Talk to the orchestrator over HTTPS (start it with ``tls_cert=``/``tls_key=`` for 127.0.0.1),
        verifying its certificate against ``ca_file``; the CLI gets ``--ca``. Call before start_orchestrator."""
        self.tls_ca = ca_file
        self._new_api()

    def _new_api(self) -> None:
        import ssl

        self.base_url = f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{self.port}"
        self.api.close()
        verify: Any = ssl.create_default_context(cafile=str(self.tls_ca)) if self.tls_ca else True
        self.api = httpx.Client(base_url=self.base_url, timeout=10.0, verify=verify)
        self._use_token(self.token_file if self.token else None)

    # ---- broker credentials (a secure broker: SECURE_BROKERS) ----------------------------------
    @property
    def broker(self) -> SecureBroker | None:
        return SECURE_BROKERS.get(self.mqtt_url)

    def _orchestrator_auth(self) -> dict[str, Any]:
        b = self.broker
        return {"mqtt_credentials": str(b.credentials_file), **self._tls_flags()} if b else {}

    def _tls_flags(self) -> dict[str, Any]:
        b = self.broker
        return {"mqtt_ca": str(b.ca_file)} if b and b.tls_url == self.mqtt_url else {}

    def node_credentials(self, node_id: str) -> Path:
        """The node's broker credential file, issued once per node by ``dockyard node join`` (the join flow)."""
        path = self.workdir / f"node-{node_id}.credentials.json"
        if not path.exists():
            if self.orchestrator is None:
                raise AssertionError("start the orchestrator before an agent: it issues the node's credential")
            # What `dockyard node join NODE -o PATH` does (test_security runs the command itself), without
            # an interpreter start per agent.
            from dockyard.dynsec import Credentials
            from dockyard.mqtt import write_credentials

            r = self.api.post(f"/v1/clusters/{self.cluster}/nodes/{node_id}/credentials")
            if r.status_code != 200:
                raise AssertionError(f"issuing {node_id}'s broker credential: {r.status_code} {r.text}")
            got = r.json()
            write_credentials(path, Credentials(username=got["username"], password=got["password"]))
        return path

    def mqtt_client(self, prefix: str = "dockyard-test"):
        """A connected paho client (MQTT 3.1.1, loop not started) on this test's broker: with the orchestrator's
        login on a secure broker (its plain listener), so a test may watch everything."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from dockyard.mqtt import parse_url

        broker = self.broker
        b = parse_url(broker.url if broker else self.mqtt_url)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{prefix}-{uuid.uuid4().hex[:8]}")
        if broker:
            c.username_pw_set(*broker.auth)
        c.connect(b.host, b.port, keepalive=10)
        return c

    def retained(self, prefix: str | None = None) -> dict[str, bytes]:
        """Retained messages under ``prefix`` (default: this cluster's topics) on this test's broker."""
        from dockyard.mqtt import parse_url

        broker = self.broker
        b = parse_url(broker.url if broker else self.mqtt_url)
        return retained_topics(prefix or f"{TOPIC_ROOT}/{self.cluster}", host=b.host, port=b.port,
                               auth=broker.auth if broker else None)

    def _use_token(self, path: Path | None) -> None:
        self.token = path.read_text().strip() if path is not None and path.exists() else None
        self.api.headers.pop("Authorization", None)
        if self.token:
            self.api.headers["Authorization"] = f"Bearer {self.token}"

    @property
    def api_headers(self) -> dict[str, str]:
        """Headers an HTTP client of the test's own needs for the API (the bearer token)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def stop_orchestrator(self, kill: bool = False, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful) or SIGKILL (crash) the orchestrator; returns its exit code."""
        if not self.orchestrator:
            return None
        rc = kill_pid(self.orchestrator.popen, timeout=timeout, kill=kill)
        self._dead.append(self.orchestrator)
        self.orchestrator = None
        return rc

    def store_contents(self) -> dict[str, str]:
        """The store's raw content as text (bytes as latin-1), for leak checks: each SQLite file (the database,
        its WAL), or each table of the PostgreSQL database, by name."""
        if isinstance(self.store, Path):
            return {p.name: p.read_bytes().decode("latin-1") for p in self.store.parent.glob(self.store.name + "*")
                    if "key" not in p.name}
        import psycopg

        def text(v: Any) -> str:
            return bytes(v).decode("latin-1") if isinstance(v, (bytes, memoryview)) else str(v)
        out: dict[str, str] = {}
        with psycopg.connect(self.store) as db:
            tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            for table in tables:
                rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
                out[table] = "\n".join(" ".join(text(v) for v in row) for row in rows)
        return out

    def restart_orchestrator(self, kill: bool = False, **extra_flags: Any) -> Proc:
        self.stop_orchestrator(kill=kill)
        return self.start_orchestrator(**extra_flags)

    def start_agent(
        self,
        node_id: str | None = None,
        attributes: dict[str, str] | None = None,
        wait: bool = True,
        timeout: float = 30.0,
        mqtt: str | None = None,
        docker_url: str | None = None,
        argv_prefix: list[str] | None = None,
        env: dict[str, str] | None = None,
        **extra_flags: Any,
    ) -> Proc:
        """Start ``dockyard agent`` for this cluster; by default wait until the API shows the node connected.

        ``argv_prefix`` runs the agent under a wrapper, e.g. ``["nsenter", "--net=/var/run/netns/dy-h1"]``
        for the multi-host test bed (with ``mqtt="mqtt://10.77.0.1:1883"`` and ``docker_url=...``).
        """
        if node_id is None:
            self._agent_seq += 1
            node_id = f"{self.cluster}-n{self._agent_seq}"
        if node_id in self.agents and self.agents[node_id].popen.poll() is None:
            raise AssertionError(f"agent {node_id} already running")
        argv = list(argv_prefix or []) + [DOCKYARD, "agent", "--node-id", node_id, "--cluster", self.cluster,
                                           "--mqtt", mqtt or self.mqtt_url]
        if docker_url:
            argv += ["--docker", docker_url]
        for k, v in (attributes or {}).items():
            argv += ["--attribute", f"{k}={v}"]
        # The agent's state (the metadata token secret) in the test's dir; a metadata port of its own,
        # since several agents share a host here (pass metadata_port=0 to serve none).
        extra_flags.setdefault("state_dir", str(self.workdir / f"agent-state-{node_id}"))
        # (the same one when a node's agent is restarted: its containers' URIs name it).
        extra_flags.setdefault("metadata_port", self._metadata_ports.setdefault(node_id, free_port("0.0.0.0")))
        # Stopped tasks' containers removed at once, as tests counting containers expect (test_logs_exec keeps them).
        extra_flags.setdefault("task_cleanup_wait", 0)
        if self.broker is not None and "mqtt_credentials" not in extra_flags:
            extra_flags["mqtt_credentials"] = str(self.node_credentials(node_id))
            extra_flags = {**self._tls_flags(), **extra_flags}
        argv += self._flags(extra_flags)
        p = self._spawn(f"agent-{node_id}", argv, env=env)
        self._mqtt_dirty = True
        self.agents[node_id] = p
        if node_id not in self.node_ids:
            self.node_ids.append(node_id)
        if wait and self.orchestrator is not None:
            def connected() -> bool:
                if p.popen.poll() is not None:
                    raise _Exited(f"agent {node_id} exited with {p.popen.returncode}; log:\n{self.tail(p.log)}")
                return bool((self.node(node_id) or {}).get("connected"))
            self._wait_alive(connected, timeout, f"node {node_id} connected")
        return p

    def stop_agent(self, node_id: str, kill: bool = False, timeout: float = 15.0) -> int | None:
        p = self.agents.pop(node_id, None)
        if p is None:
            return None
        rc = kill_pid(p.popen, timeout=timeout, kill=kill)
        self._dead.append(p)
        return rc

    def _wait_alive(self, predicate: Callable[[], Any], timeout: float, message: str) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                if predicate():
                    return True
            except _Exited:
                raise
            except Exception as e:  # noqa: BLE001
                last = e
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}; last: {last!r}")
            time.sleep(0.1)

    # ---- client side -----------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True, timeout: float = 120.0, input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``dockyard --server URL -c CLUSTER *args``; with ``check`` a non-zero exit fails the test."""
        argv = [DOCKYARD, "--server", self.base_url, *(["--ca", str(self.tls_ca)] if self.tls_ca else []),
                "-c", self.cluster, *map(str, args)]
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, env=self.cli_env())
        if check and cp.returncode != 0:
            raise AssertionError(
                f"`dockyard {' '.join(map(str, args))}` exited {cp.returncode}\n--- stdout\n{cp.stdout}\n--- stderr\n{cp.stderr}")
        return cp

    def cli_env(self) -> dict[str, str]:
        """The environment a ``dockyard`` CLI process needs against this orchestrator (its API token)."""
        return {**os.environ, "NO_COLOR": "1", **({"DOCKYARD_TOKEN": self.token} if self.token else {})}

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def get(self, path: str) -> Any:
        r = self.api.get(path)
        r.raise_for_status()
        return r.json()

    def tasks(self) -> list[dict]:
        return self.get(f"/v1/clusters/{self.cluster}/tasks")["tasks"]

    def nodes(self) -> list[dict]:
        return self.get(f"/v1/clusters/{self.cluster}/nodes")["nodes"]

    def node(self, node_id: str) -> dict | None:
        return next((n for n in self.nodes() if n.get("nodeId") == node_id), None)

    def running_tasks(self) -> list[dict]:
        return [t for t in self.tasks() if t.get("lastStatus") == "RUNNING"]

    def wait_for(self, predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1,
                 message: str = "condition") -> T:
        return wait_for(predicate, timeout=timeout, interval=interval, message=message)

    def service(self, name: str) -> dict:
        return self.get(f"/v1/clusters/{self.cluster}/services/{name}")["service"]

    def completed(self, name: str, taskdef: str) -> Callable[[], dict | None]:
        """A wait_for predicate: the service, once its PRIMARY deployment is ``taskdef`` and COMPLETED."""
        def check() -> dict | None:
            s = self.service(name)
            p = s["deployments"][0]
            done = p["status"] == "PRIMARY" and p["taskDefinition"] == taskdef and p["rolloutState"] == "COMPLETED"
            return s if done else None
        return check

    def metric(self, sample: str) -> float:
        """The value of one sample of the orchestrator's /metrics, e.g.
        ``dockyard_status_messages_total{kind="snapshot"}`` (0 when absent)."""
        r = self.api.get("/metrics")
        r.raise_for_status()
        for line in r.text.splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
        return 0.0

    def wait_quiet_evidence(self, snapshots: int = 2, timeout: float = 30.0) -> None:
        """Wait for the observable events after which "nothing changed" means something: the
        orchestrator received ``snapshots`` more full status snapshots (every agent sends one per
        status interval) and ran a reconcile pass after the last of them."""
        snap, passes = 'dockyard_status_messages_total{kind="snapshot"}', "dockyard_reconcile_pass_seconds_count"
        target = self.metric(snap) + snapshots
        self.wait_for(lambda: self.metric(snap) >= target, timeout=timeout, interval=0.2,
                      message=f"{snapshots} more status snapshots")
        after = self.metric(passes)
        self.wait_for(lambda: self.metric(passes) > after, timeout=timeout, interval=0.1,
                      message="a reconcile pass after them")

    def wait_running(self, count: int, timeout: float = 60.0) -> list[dict]:
        """Wait until exactly ``count`` tasks are RUNNING; returns them."""
        return self.wait_for(lambda: (lambda r: r if len(r) == count else None)(self.running_tasks()),
                             timeout=timeout, message=f"{count} RUNNING tasks in {self.cluster}")

    def write_manifest(self, text: str, name: str | None = None) -> Path:
        """Write a manifest (YAML/JSON text) into the test's workdir and return its path."""
        self._manifest_seq += 1
        path = self.workdir / (name or f"manifest-{self._manifest_seq}.yaml")
        path.write_text(text)
        return path

    # ---- docker side -----------------------------------------------------------------------
    def containers(self, all: bool = True, node_id: str | None = None, host: str | None = None, **labels: str) -> list[dict]:
        """This cluster's containers (``docker ps`` JSON rows, ``Labels`` parsed into a dict).

        ``all=False`` lists running ones only; ``node_id``/``labels`` narrow by more labels
        (``task="..."`` -> ``dockyard.task=...``); ``host`` queries another dockerd.
        """
        filters = [f"dockyard.cluster={self.cluster}"]
        if node_id:
            filters.append(f"dockyard.node={node_id}")
        filters += [f"dockyard.{k}={v}" for k, v in labels.items()]
        return docker_containers(filters, all=all, host=host)

    def inspect(self, container_id: str, host: str | None = None) -> dict:
        return json.loads(docker("inspect", container_id, host=host).stdout)[0]

    # ---- logs and cleanup ------------------------------------------------------------------
    @staticmethod
    def tail(path: Path, lines: int = 200) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"<cannot read {path}: {e}>"

    def log_sections(self, lines: int = 300) -> list[tuple[str, str]]:
        return [(f"dockyard log: {p.name} ({p})", self.tail(p, lines)) for p in self.logs]

    def cleanup(self, docker_hosts: list[str | None] = (None,)) -> list[str]:
        """Kill processes, remove labelled containers and networks, clear retained MQTT. Idempotent.

        Returns a list of problems (also collected best-effort: one failure doesn't stop the rest).
        """
        problems: list[str] = []
        procs = list(self.agents.values()) + ([self.orchestrator] if self.orchestrator else [])
        self.agents.clear()
        self.orchestrator = None
        for p in procs:  # agents first so the orchestrator doesn't see them flap
            try:
                kill_pid(p.popen, timeout=10)
            except Exception as e:  # noqa: BLE001
                problems.append(f"killing {p.name} pid {p.popen.pid}: {e}")
            self._dead.append(p)
        for host in docker_hosts:
            try:
                remove_by_label([f"dockyard.cluster={self.cluster}"], host=host)
            except Exception as e:  # noqa: BLE001
                problems.append(f"removing containers of {self.cluster}{' on ' + host if host else ''}: {e}")
        try:
            known = [f"{TOPIC_ROOT}/{self.cluster}/nodes/{n}/{leaf}" for n in self.node_ids for leaf in ("desired", "presence", "refusal")]
            from dockyard.mqtt import parse_url

            broker = self.broker
            b = parse_url(broker.url if broker else self.mqtt_url)  # the plain listener of a TLS broker
            # Once cleared, a second cleanup (the fixture's, after an explicit one) skips the broker,
            # which may be gone by then (the test bed's).
            if (self._mqtt_dirty or not self._cleaned) and port_open(b.host, b.port):
                clear_retained(f"{TOPIC_ROOT}/{self.cluster}", known, host=b.host, port=b.port,
                               auth=broker.auth if broker else None)
            self._mqtt_dirty = False
        except Exception as e:  # noqa: BLE001
            problems.append(f"clearing retained MQTT messages of {self.cluster}: {e}")
        with contextlib.suppress(Exception):
            self.api.close()
        self._cleaned = True
        return problems


class _Exited(AssertionError):
    """A process we wait on died: fail at once with its log instead of waiting for the timeout."""
