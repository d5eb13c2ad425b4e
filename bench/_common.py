"""Shared helpers of the benchmark scripts (not a benchmark itself).

Every script builds on :class:`Bench`: a private dockyard world (cluster ``bench-<hex>``, a
temporary store and log directory, a free HTTP port) on top of the integration-test
``Harness`` (tests/integration/harness.py), whose cleanup kills the processes it started by
pid, force-removes containers labelled ``dockyard.cluster=<cluster>`` and clears the
cluster's retained MQTT topics. ``Bench`` runs that cleanup on every exit path (normal end,
exception, SIGINT/SIGTERM) and also removes the Swarm services and raw containers the script
registered, and leaves Swarm mode when it was the one to enable it.

Output rule: a script prints its figures LAST, one ``name: value`` line each
(:func:`Bench.figures`), and exits non-zero (:class:`CannotMeasure`) when it could not measure.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO))

from harness import (  # noqa: E402  (after the sys.path set-up)
    DOCKYARD, IMAGE, Harness, check_infra, docker, docker_containers, free_port, kill_pid, remove_by_label, wait_for,
)

__all__ = ["REPO", "DOCKYARD", "IMAGE", "Bench", "CannotMeasure", "docker", "docker_containers", "free_port",
           "kill_pid", "remove_by_label", "wait_for", "proc_status", "proc_cpu_seconds", "log", "Swarm"]

T0 = time.monotonic()


def log(msg: str) -> None:
    """Progress goes to stderr so the figures on stdout stay last and clean."""
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class CannotMeasure(RuntimeError):
    """The benchmark could not measure (infra missing, timeout, a peer failed): exit non-zero."""


# ------------------------------------------------------------------------------------------ /proc
def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM / ... of a process from /proc/<pid>/status, in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key.startswith("Vm"):
                out[key] = int(rest.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float:
    """CPU time of a process (its live threads), in seconds: the scheduler's nanosecond sums
    (/proc/PID/task/*/schedstat) where available, else utime + stime in clock ticks (10 ms:
    too coarse for an idle process, whose every wake-up may be charged a whole tick)."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        return total / 1e9
    except (FileNotFoundError, ValueError):
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# ------------------------------------------------------------------------------------------ broker
class Broker:
    """A private Mosquitto on a free port (same settings as the dev broker: TCP_NODELAY, no
    persistence, unbounded in-flight). Benchmarks use their own broker because every
    orchestrator subscribes to every cluster's presence on its broker: on the shared
    127.0.0.1:1883 another test's orchestrator adopts the benchmark's nodes and publishes
    them (empty) desired documents with its own, higher epoch."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.url = f"mqtt://{host}:{self.port}"
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} {host}\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n"
            "max_queued_messages 1000000\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n")
        self.proc: subprocess.Popen | None = None

    def start(self, argv_prefix: list[str] | None = None) -> "Broker":
        if shutil.which("mosquitto") is None:
            raise CannotMeasure("mosquitto is not installed (scripts/bootstrap.sh installs it)")
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen([*(argv_prefix or []), "mosquitto", "-c", str(self.conf)], stdout=fh,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        fh.close()
        from harness import port_open
        deadline = time.monotonic() + 10
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise CannotMeasure(f"private mosquitto did not start: {self.log.read_text()[-500:]}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            kill_pid(self.proc, timeout=5)
            self.proc = None


# ------------------------------------------------------------------------------------------ swarm
class Swarm:
    """Docker Swarm mode on the local engine: enabled if needed, left again only if we enabled it."""

    def __init__(self) -> None:
        self.we_enabled = False
        self.had_gwbridge = True
        self.services: list[str] = []

    def state(self) -> str:
        return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()

    def ensure(self) -> None:
        st = self.state()
        if st == "active":
            return
        if st not in ("inactive", ""):
            raise CannotMeasure(f"Swarm mode is in state {st!r}; cannot use it")
        self.had_gwbridge = docker("network", "inspect", "docker_gwbridge", check=False).returncode == 0
        log("enabling Swarm mode (docker swarm init --advertise-addr 127.0.0.1)")
        self.we_enabled = True
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")

    def create(self, name: str, *args: str) -> None:
        self.services.append(name)
        docker("service", "create", "--detach", "--no-resolve-image", "--name", name, *args)

    def remove_services(self) -> None:
        for name in self.services:
            docker("service", "rm", name, check=False)
        if self.services:
            # `service rm` returns at once; the task containers go away asynchronously.
            flt = [f"com.docker.swarm.service.name={n}" for n in self.services]
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if not any(docker_containers([f], all=True) for f in flt):
                    break
                time.sleep(0.5)
        self.services.clear()

    def cleanup(self) -> None:
        try:
            self.remove_services()
        finally:
            if self.we_enabled:
                log("leaving Swarm mode (docker swarm leave --force)")
                docker("swarm", "leave", "--force", check=False)
                self.we_enabled = False
                if not self.had_gwbridge:  # `swarm init` creates it, `swarm leave` keeps it
                    docker("network", "rm", "docker_gwbridge", check=False)


# ------------------------------------------------------------------------------------------ bench
class Bench:
    """One benchmark run's world; use as a context manager (cleanup always runs)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"dockyard-bench-{name}-"))
        self.swarm: Swarm | None = None
        self.broker: Broker | None = None
        self.envs: list[Harness] = []
        self.new_env()
        self.raw_labels: list[str] = []  # label filters of containers created directly (raw API)
        self.extra_cleanups: list[Callable[[], Any]] = []
        self.procs: list[subprocess.Popen] = []  # helper processes (killed by pid in cleanup)
        self._figures: list[tuple[str, str]] = []
        self.keep_logs = bool(os.environ.get("DOCKYARD_BENCH_KEEP"))

    @property
    def env(self) -> Harness:
        return self.envs[-1]

    def new_env(self) -> Harness:
        """A fresh world (new cluster name, store, port); the previous one is cleaned up first."""
        if self.envs:
            problems = self.envs[-1].cleanup()
            if problems:
                raise CannotMeasure("cleanup of the previous run failed: " + "; ".join(problems))
        k = len(self.envs)
        env = Harness(self.tmp / f"run{k}", cluster=f"bench-{self.name}-{uuid.uuid4().hex[:6]}")
        if self.broker is not None:
            env.mqtt_url = self.broker.url
        self.envs.append(env)
        return env

    # -- life cycle
    def __enter__(self) -> "Bench":
        problems = check_infra()
        if problems:
            raise CannotMeasure("; ".join(problems))
        self.broker = Broker(self.tmp).start()
        self.env.mqtt_url = self.broker.url

        def _sig(signum, _frame):  # noqa: ANN001
            raise KeyboardInterrupt(f"signal {signum}")
        signal.signal(signal.SIGTERM, _sig)
        log(f"cluster {self.env.cluster}, work dir {self.tmp}, broker {self.broker.url}")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        # --help and other clean exits (SystemExit(0)) leave nothing behind
        self.cleanup(failed=exc_type is not None and not (exc_type is SystemExit and exc.code in (0, None)))

    def cleanup(self, failed: bool = False) -> None:
        problems: list[str] = []
        for fn in reversed(self.extra_cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                problems.append(f"{fn}: {e}")
        self.extra_cleanups.clear()
        for p in self.procs:
            try:
                kill_pid(p, timeout=5)
            except Exception as e:  # noqa: BLE001
                problems.append(f"killing pid {p.pid}: {e}")
        self.procs.clear()
        for env in self.envs:
            try:
                problems += env.cleanup()
            except Exception as e:  # noqa: BLE001
                problems.append(f"harness cleanup of {env.cluster}: {e}")
        for flt in self.raw_labels:
            try:
                remove_by_label([flt])
            except Exception as e:  # noqa: BLE001
                problems.append(f"removing {flt}: {e}")
        self.raw_labels.clear()
        if self.broker is not None:
            self.broker.stop()
        if self.swarm is not None:
            try:
                self.swarm.cleanup()
            except Exception as e:  # noqa: BLE001
                problems.append(f"swarm cleanup: {e}")
        for p in problems:
            log(f"CLEANUP PROBLEM: {p}")
        if failed or self.keep_logs:
            log(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """A helper process, logged to <workdir>/<name>.log, killed by pid in cleanup."""
        log_path = self.tmp / f"{name}.log"
        fh = open(log_path, "ab")
        p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, start_new_session=True)
        fh.close()
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen) -> None:
        kill_pid(p, timeout=5)
        if p in self.procs:
            self.procs.remove(p)

    def use_swarm(self) -> Swarm:
        if self.swarm is None:
            self.swarm = Swarm()
        self.swarm.ensure()
        return self.swarm

    # -- figures
    def figure(self, name: str, value: Any) -> None:
        if isinstance(value, float):
            value = f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        self._figures.append((name, str(value)))
        log(f"figure {name} = {value}")

    def print_figures(self) -> None:
        sys.stdout.flush()
        for name, value in self._figures:
            print(f"{name}: {value}")
        sys.stdout.flush()

    # -- dockyard
    def manifest(self, text: str, name: str | None = None) -> Path:
        return self.env.write_manifest(text, name)

    def apply(self, path: Path) -> None:
        self.env.cli("apply", "-f", str(path))

    def running_count(self) -> int:
        return sum(1 for t in self.env.tasks() if t.get("lastStatus") == "RUNNING" and t.get("desiredStatus") == "RUNNING")


def main(fn: Callable[[Bench], None], name: str) -> None:
    """Run ``fn(bench)``; figures last; exit 1 when it could not measure."""
    rc = 0
    bench = Bench(name)
    try:
        with bench:
            fn(bench)
    except CannotMeasure as e:
        log(f"CANNOT MEASURE: {e}")
        rc = 1
    except KeyboardInterrupt as e:
        log(f"interrupted ({e})")
        rc = 130
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        log(f"CANNOT MEASURE: {type(e).__name__}: {e}")
        rc = 1
    if rc == 0:
        bench.print_figures()
    sys.exit(rc)


def run_async(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def jdump(x: Any) -> str:
    return json.dumps(x, separators=(",", ":"))


@contextlib.contextmanager
def timer():
    t = time.monotonic()
    box = [0.0]
    yield box
    box[0] = time.monotonic() - t


def sh(*argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    cp = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and cp.returncode != 0:
        raise CannotMeasure(f"{' '.join(argv)} failed ({cp.returncode}): {cp.stderr.strip()[-500:]}")
    return cp
