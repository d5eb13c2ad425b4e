"""Invariant checker for fault scenarios (issue 16): samples the whole cluster continuously.

The pure part (:func:`check_sample`, :func:`check_final`, :class:`Tracker`) judges samples: the
API's tasks, services and nodes plus the containers every host's dockerd runs. The shell part
(:class:`Checker`) takes a sample every ``interval`` seconds in a thread during a scenario::

    with Checker(env, hosts=[None] or bed docker urls) as chk:
        ... fault ...
        chk.fault_ended()
        chk.wait_converged(predicate, bound=30)      # prints and records the time
    chk.assert_ok()                                  # violations, lost tasks, orphans, 2xx writes

Invariants (the issue's wording; every one is checked at every sample):

* **Surge bound.** Per service, tasks *live* across all hosts (a running container, and the task
  is not being stopped: its desiredStatus is RUNNING and it is not draining) never exceed
  ``floor(max(desired before, desired after) x maximumPercent / 100)``. "Before" is the highest
  desiredCount seen within ``desired_window`` seconds (a write and the pass that acts on it are
  not atomic for an observer). A task whose node is disconnected cannot be told to stop, so its
  running containers are counted but the excess they cause is a *transient*, reported with its
  peak and duration, not a violation (the partitioned-node bound the scenario prints).
* **No duplicates.** Never two running containers of one (task id, container name).
* **Nothing lost** (at the end): every task seen is RUNNING or STOPPED with a stoppedReason, and
  still listed; every write the API acknowledged (2xx) is still there (:meth:`Checker.wrote`).
* **No orphans** (at the end): no container, network or volume labelled with the cluster whose
  task is unknown; no running container of a STOPPED task.
* **0 failed requests** (with ``load_url``: a load-balanced service): a bounded request loop
  (:class:`loadgen.Load`, two clients, at most 40 requests/s each, only to 127.0.0.0/8 or the
  bed's 10.77.0.0/24) runs from ``__enter__`` to ``__exit__``; every non-200 answer or error is a
  failure, and the final check wants none, and requests answered throughout (:func:`check_requests`).
"""
from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

STOPPED = "STOPPED"


@dataclass(frozen=True)
class Container:
    host: str  # the docker URL (or "local")
    task_id: str
    name: str  # the container name in the task definition (label dockyard.container)
    running: bool


@dataclass(frozen=True)
class Sample:
    t: float
    tasks: Mapping[str, Mapping[str, Any]]  # taskId -> API task
    services: Mapping[str, Mapping[str, Any]]  # serviceName -> API service
    connected: Mapping[str, bool]  # nodeId -> connected
    containers: tuple[Container, ...]


@dataclass(frozen=True)
class Violation:
    t: float
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind} at {self.t:.1f}s] {self.detail}"


def surge_bound(desired_before: int, desired_after: int, maximum_percent: int) -> int:
    return math.floor(max(desired_before, desired_after) * maximum_percent / 100)


def live_tasks(sample: Sample) -> dict[str, dict[str, set[str]]]:
    """Per service: {"live": task ids running and not being stopped, "cut": those of them on a
    disconnected node (which cannot be told to stop)}."""
    running = {c.task_id for c in sample.containers if c.running}
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: {"live": set(), "cut": set()})
    for tid in running:
        t = sample.tasks.get(tid)
        if t is None or not t.get("serviceName"):
            continue
        svc = t["serviceName"]
        on_cut_node = t.get("nodeId") is not None and not sample.connected.get(t["nodeId"], False)
        stopping = t.get("desiredStatus") == STOPPED or t.get("drainingSince") is not None
        if stopping and not on_cut_node:
            continue
        out[svc]["live"].add(tid)
        if on_cut_node:
            out[svc]["cut"].add(tid)
    return out


def duplicates(containers: Iterable[Container]) -> dict[tuple[str, str], list[str]]:
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for c in containers:
        if c.running:
            where[(c.task_id, c.name)].append(c.host)
    return {k: v for k, v in where.items() if len(v) > 1}


@dataclass
class Transient:
    """A condition seen in some samples (tasks live on disconnected nodes, the excess over the
    surge bound they cause): its peak, and how long it lasted in all (``seconds``, summed over its
    ``episodes``: runs of consecutive samples)."""

    peak: int = 0
    first: float | None = None
    last: float | None = None
    seconds: float = 0.0
    episodes: int = 0

    def seen(self, t: float, value: int, previous_sample: float | None) -> None:
        self.peak = max(self.peak, value)
        if self.last is not None and self.last == previous_sample:
            self.seconds += t - self.last
        else:
            self.episodes += 1
        self.first = t if self.first is None else self.first
        self.last = t


@dataclass
class Tracker:
    """Judges samples one after the other (pure: it only keeps what it was given)."""

    desired_window: float = 5.0
    violations: list[Violation] = field(default_factory=list)
    transients: dict[str, Transient] = field(default_factory=dict)
    peak_live: dict[str, int] = field(default_factory=dict)
    cut: dict[str, Transient] = field(default_factory=dict)  # live tasks on disconnected nodes, excess or not
    seen_tasks: set[str] = field(default_factory=set)
    samples: int = 0
    _desired: list[tuple[float, str, int]] = field(default_factory=list)
    _previous: float | None = None  # the time of the sample before this one

    def add(self, s: Sample) -> list[Violation]:
        self.samples += 1
        self.seen_tasks |= set(s.tasks)
        for name, svc in s.services.items():
            self._desired.append((s.t, name, int(svc.get("desiredCount", 0))))
        self._desired = [d for d in self._desired if d[0] >= s.t - self.desired_window]
        found: list[Violation] = []
        for name, sets in live_tasks(s).items():
            svc = s.services.get(name)
            if svc is None:
                continue
            conf = (svc.get("spec") or svc).get("deploymentConfiguration") or {}  # the API nests it in spec
            pct = int(conf.get("maximumPercent", 200))
            desired = [n for _, svc_name, n in self._desired if svc_name == name] or [0]
            bound = surge_bound(max(desired), int(svc.get("desiredCount", 0)), pct)
            live = len(sets["live"])
            self.peak_live[name] = max(self.peak_live.get(name, 0), live)
            if sets["cut"]:
                self.cut.setdefault(name, Transient()).seen(s.t, len(sets["cut"]), self._previous)
            if live <= bound:
                continue
            excess = live - bound
            if excess <= len(sets["cut"]):
                self.transients.setdefault(name, Transient()).seen(s.t, excess, self._previous)
            else:
                found.append(Violation(s.t, "surge", f"service {name}: {live} live tasks > bound {bound} "
                                       f"(max desired {max(desired)}, maximumPercent {pct}; "
                                       f"{len(sets['cut'])} on disconnected nodes)"))
        for (tid, cname), hosts in duplicates(s.containers).items():
            found.append(Violation(s.t, "duplicate", f"task {tid} container {cname} runs on {hosts}"))
        self.violations += found
        self._previous = s.t
        return found


def check_final(last: Sample, seen_tasks: Iterable[str], writes: Iterable[tuple[str, Callable[[Sample], bool]]],
                networks: Iterable[tuple[str, str, str]] = (), volumes: Iterable[tuple[str, str, str]] = ()
                ) -> list[Violation]:
    """Nothing lost, every acknowledged write still there, no orphans. ``networks``/``volumes``:
    (host, name, task id) of the cluster's labelled ones."""
    out: list[Violation] = []
    for tid in sorted(seen_tasks):
        t = last.tasks.get(tid)
        if t is None:
            out.append(Violation(last.t, "lost", f"task {tid} is no longer listed"))
        elif t.get("lastStatus") == STOPPED and not t.get("stoppedReason"):
            out.append(Violation(last.t, "lost", f"task {tid} STOPPED without a reason"))
        elif t.get("lastStatus") != STOPPED and t.get("desiredStatus") == STOPPED:
            out.append(Violation(last.t, "lost", f"task {tid} still {t.get('lastStatus')} though stopped"))
        elif t.get("lastStatus") not in ("RUNNING", STOPPED):
            out.append(Violation(last.t, "lost", f"task {tid} never ran ({t.get('lastStatus')}: "
                                 f"{t.get('pendingReason') or t.get('stoppedReason')})"))
    for what, ok in writes:
        if not ok(last):
            out.append(Violation(last.t, "write", f"acknowledged write not there: {what}"))
    for c in last.containers:
        t = last.tasks.get(c.task_id)
        if t is None:
            out.append(Violation(last.t, "orphan", f"container {c.name} of unknown task {c.task_id} on {c.host}"))
        elif c.running and t.get("lastStatus") == STOPPED:
            out.append(Violation(last.t, "orphan", f"container {c.name} of STOPPED task {c.task_id} runs on {c.host}"))
    have = {(c.host, c.task_id) for c in last.containers}
    for kind, rows in (("network", networks), ("volume", volumes)):
        for host, name, tid in rows:
            t = last.tasks.get(tid)
            if t is None or (t.get("lastStatus") == STOPPED and (host, tid) not in have):
                out.append(Violation(last.t, "orphan", f"{kind} {name} of {'unknown' if t is None else 'STOPPED'} "
                                     f"task {tid} on {host}"))
    return out


def check_requests(t: float, ok: int, failures: Iterable[tuple[float, Any, str]], longest_gap: float,
                   min_ok: int = 20, max_gap: float = 5.0) -> list[Violation]:
    """The load balancer's invariant: no request failed (``failures``: (seconds into the scenario,
    status or "error", detail)); and the loop really ran: at least ``min_ok`` answered, never more
    than ``max_gap`` s without a successful answer (a stalled request is a failure too)."""
    out = [Violation(ft, "request", f"request failed: {status} {detail}") for ft, status, detail in failures]
    if ok < min_ok:
        out.append(Violation(t, "request", f"only {ok} requests answered (< {min_ok}): the loop did not run"))
    if longest_gap > max_gap:
        out.append(Violation(t, "request", f"{longest_gap:.1f}s without a successful answer (> {max_gap:g}s)"))
    return out


LOAD_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.77.0.0/24"))  # loopback, the bed


def local_url(url: str) -> str:
    """``url`` if it targets loopback or the test bed's bridge, else ValueError (the loop is bounded
    to this machine)."""
    host = urlsplit(url).hostname or ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"load URL {url!r}: an IP address in 127.0.0.0/8 or 10.77.0.0/24 expected") from None
    if not any(ip in n for n in LOAD_NETWORKS):
        raise ValueError(f"load URL {url!r}: only 127.0.0.0/8 or the bed's 10.77.0.0/24")
    return url


# ---- the shell: sampling a live cluster -------------------------------------------------------
class Checker:
    """Samples ``env``'s cluster (API + every host's dockerd) in a thread (module docstring)."""

    def __init__(self, env: Any, hosts: Iterable[str | None] = (None,), interval: float = 0.5,
                 desired_window: float = 5.0, load_url: str | None = None, load_limit: float = 300.0) -> None:
        self.env = env
        self.hosts = list(hosts)
        self.interval = interval
        self.tracker = Tracker(desired_window=desired_window)
        self.writes: list[tuple[str, Callable[[Sample], bool]]] = []
        self.last: Sample | None = None
        self.errors: list[str] = []
        self.t0 = time.monotonic()
        self.fault_end: float | None = None
        self.convergence: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="invariants", daemon=True)
        self.load: Any = None
        if load_url is not None:
            from loadgen import Load

            self.load = Load(local_url(load_url), limit=load_limit)
        self.longest_gap = 0.0  # seconds without a successful answer, measured at the samples
        self._ok_seen: tuple[int, float] | None = None  # (answers, when the count last rose)

    def __enter__(self) -> Checker:
        if self.load is not None:
            self.load.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.load is not None:
            self.load.__exit__()

    def _watch_load(self) -> None:
        if self.load is None:
            return
        now, ok = time.monotonic(), sum(self.load.ok.values())
        if self._ok_seen is None or ok > self._ok_seen[0]:
            self._ok_seen = (ok, now)
        self.longest_gap = max(self.longest_gap, now - self._ok_seen[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            self._watch_load()
            try:
                s = self.sample()
                self.tracker.add(s)
                self.last = s
            except Exception as e:  # noqa: BLE001 - an unreachable API during a crash is expected
                self.errors.append(f"{time.monotonic() - self.t0:.1f}s: {type(e).__name__}: {e}")
            self._stop.wait(self.interval)

    def _containers(self) -> list[Container]:
        from harness import docker_containers

        out = []
        for h in self.hosts:
            try:
                rows = docker_containers([f"dockyard.cluster={self.env.cluster}"], all=True, host=h)
            except Exception:  # noqa: BLE001 - a killed dockerd: its containers are gone or frozen
                continue
            for r in rows:
                lab = r["Labels"]
                out.append(Container(h or "local", lab.get("dockyard.task", ""), lab.get("dockyard.container", ""),
                                     r.get("State") == "running"))
        return out

    def sample(self) -> Sample:
        c = self.env.cluster
        tasks = {t["taskId"]: t for t in self.env.get(f"/v1/clusters/{c}/tasks")["tasks"]}
        services = {s["serviceName"]: s for s in self.env.get(f"/v1/clusters/{c}/services")["services"]}
        nodes = {n["nodeId"]: bool(n.get("connected")) for n in self.env.get(f"/v1/clusters/{c}/nodes")["nodes"]}
        return Sample(time.monotonic() - self.t0, tasks, services, nodes, tuple(self._containers()))

    def wrote(self, what: str, ok: Callable[[Sample], bool]) -> None:
        """Record a write the API acknowledged with 2xx, and how to see it in a final sample."""
        self.writes.append((what, ok))

    def fault_ended(self) -> None:
        self.fault_end = time.monotonic()

    def wait_converged(self, predicate: Callable[[], Any], bound: float, what: str = "desired state") -> float:
        """Wait (up to ``bound`` s from the fault's end) for ``predicate``; print and return the time."""
        start = self.fault_end or time.monotonic()
        self.env.wait_for(predicate, timeout=max(1.0, bound - (time.monotonic() - start)), interval=0.2,
                          message=f"{what} within the convergence bound {bound:g}s")
        self.convergence = time.monotonic() - start
        print(f"invariants: converged to {what} {self.convergence:.1f}s after the fault ended (bound {bound:g}s)")
        return self.convergence

    def _labelled(self, kind: str) -> list[tuple[str, str, str]]:
        from harness import docker

        out = []
        for h in self.hosts:
            cp = docker(kind, "ls", "--filter", f"label=dockyard.cluster={self.env.cluster}", "--format",
                        '{{.Name}}\t{{.Label "dockyard.task"}}', check=False, host=h)
            for line in cp.stdout.splitlines():
                name, _, tid = line.partition("\t")
                if tid:
                    out.append((h or "local", name, tid))
        return out

    def final(self) -> list[Violation]:
        """Take a last sample (the cluster settled) and check the end-of-scenario invariants."""
        s = self.sample()
        self.tracker.add(s)
        self.last = s
        out = check_final(s, self.tracker.seen_tasks, self.writes, self._labelled("network"),
                          self._labelled("volume"))
        if self.load is not None:
            off = time.time() - (time.monotonic() - self.t0)  # wall clock of t0: the loop stamps with time.time()
            fails = [(ft - off, status, detail) for ft, status, detail in self.load.bad]
            out += check_requests(s.t, sum(self.load.ok.values()), fails, self.longest_gap)
        return out

    def report(self) -> str:
        tr = self.tracker
        parts = [f"{tr.samples} samples, {len(tr.violations)} violations, peak live {tr.peak_live}"]
        for name, c in tr.cut.items():
            t = tr.transients.get(name, Transient())
            parts.append(f"{name}: up to {c.peak} task(s) live on a disconnected node, {c.seconds:.1f}s in "
                         f"{c.episodes} episode(s); partitioned-node transient +{t.peak} over the surge bound "
                         f"for {t.seconds:.1f}s")
        if self.convergence is not None:
            parts.append(f"convergence {self.convergence:.1f}s")
        if self.load is not None:
            parts.append(f"requests {self.load.total}, failed {len(self.load.bad)}, served by {dict(self.load.ok)}, "
                         f"longest without an answer {self.longest_gap:.1f}s")
        return "invariants: " + "; ".join(parts)

    def assert_ok(self, final: bool = True) -> None:
        problems = list(self.tracker.violations) + (self.final() if final else [])
        print(self.report())
        assert self.tracker.samples >= 3, f"the checker took only {self.tracker.samples} samples: {self.errors[-3:]}"
        shown = "\n  ".join(map(str, problems[:40])) + (f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else "")
        assert not problems, f"{len(problems)} invariant violations:\n  " + shown
