"""Per-container resource usage, read from the cgroup files as cAdvisor does, with cAdvisor's metric names.

* pure parsers of the files' contents (``/proc/<pid>/cgroup``, ``cpu.stat``, ``memory.stat``,
  ``/proc/<pid>/net/dev``...) into a :class:`Usage`, for cgroup v1 and v2, and of the Docker
  stats API's answer (the fallback when the files cannot be read);
* :class:`UsageSampler`, the small shell: per container it finds the cgroup directories once
  (from the container's pid, one inspect), then each sample reads a handful of files per
  container (no API round trip); the Docker stats API (``one-shot``) only when that fails
  (about 1 s per request however many are asked at once: they run concurrently);
* :func:`families`: the samples as Prometheus metric families (``container_*``, labelled with
  dockyard's cluster, service, task, family, revision, container and node).

Working set = usage minus inactive file cache (``total_inactive_file`` on v1, ``inactive_file`` on
v2), as cAdvisor and the kubelet compute it. An unlimited memory limit is reported as 0.
"""
from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.runtime import L_CLUSTER, L_CONTAINER, L_FAMILY, L_NODE, L_REVISION, ActualContainer

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
UNLIMITED = 1 << 62  # v1 writes "no limit" as 9223372036854771712 (page-rounded 2^63-1)
LABELS = ["cluster", "service", "task", "family", "revision", "container", "node"]


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float  # cumulative CPU time, user + system
    throttled_seconds: float  # cumulative time throttled by the CFS quota
    memory_usage: int  # bytes, page cache included
    working_set: int  # bytes: usage minus inactive file cache
    memory_limit: int  # bytes; 0 when unlimited
    network: dict[str, tuple[int, int]] = field(default_factory=dict)  # interface -> (rx bytes, tx bytes)


@dataclass(frozen=True)
class CgroupPaths:
    """Where one container's cgroup files are: version "1" (a directory per controller) or "2"."""

    version: str
    cpu: Path  # v1: the cpuacct directory (cpuacct.usage); v2: the one directory
    cpu_stat: Path  # v1: the cpu directory (cpu.stat: throttled_time); v2: the same directory
    memory: Path

    @cached_property
    def files(self) -> tuple[str, ...]:
        """The files one sample reads, as usage_v1 / usage_v2 take them (joined once per container)."""
        if self.version == "1":
            return (str(self.cpu / "cpuacct.usage"), str(self.cpu_stat / "cpu.stat"),
                    str(self.memory / "memory.usage_in_bytes"), str(self.memory / "memory.stat"),
                    str(self.memory / "memory.limit_in_bytes"))
        return (str(self.cpu / "cpu.stat"), str(self.memory / "memory.current"), str(self.memory / "memory.stat"),
                str(self.memory / "memory.max"))

    @cached_property
    def lean_files(self) -> tuple[str, ...]:
        """What the control plane's usage needs (cpu time, working set, the limit): v1 skips cpu.stat (throttling
        is only a /metrics family); v2's cpu.stat holds the cpu time itself. Same layout, "" for a skipped file."""
        if self.version == "1":
            return (self.files[0], "", *self.files[2:])
        return self.files


# ---- pure parsers ------------------------------------------------------------------------------
def parse_proc_cgroup(text: str, root: Path = CGROUP_ROOT) -> CgroupPaths | None:
    """``/proc/<pid>/cgroup`` -> the container's directories. v1 when a line names the memory
    controller (a hybrid host has a ``0::`` line too), else v2 from the ``0::`` line."""
    v1: dict[str, Path] = {}
    unified: str | None = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "" and parts[0] == "0":
            unified = path
            continue
        for c in controllers.split(","):
            v1[c] = root / controllers / path.lstrip("/")
    if "memory" in v1 and "cpuacct" in v1:
        # A joint "cpu,cpuacct" hierarchy is mounted under that name (root/"cpu,cpuacct"/path).
        return CgroupPaths("1", v1["cpuacct"], v1.get("cpu", v1["cpuacct"]), v1["memory"])
    if unified is not None:
        d = root / unified.lstrip("/")
        return CgroupPaths("2", d, d, d)
    return None


def parse_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (cpu.stat, memory.stat) -> {key: int}; other lines are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            continue
    return out


def keyed(text: str, key: str, default: int = 0) -> int:
    """The value of one ``key value`` line (without parsing the others: memory.stat has ~40)."""
    at = 0
    while (i := text.find(key, at)) >= 0:
        end = i + len(key)
        if (i == 0 or text[i - 1] == "\n") and text[end:end + 1] == " ":
            nl = text.find("\n", end)
            try:
                return int(text[end + 1:nl if nl >= 0 else None])
            except ValueError:
                return default
        at = end
    return default


def parse_limit(text: str) -> int:
    """memory.max / memory.limit_in_bytes -> bytes, 0 when unlimited ("max", or v1's huge value)."""
    s = text.strip()
    if s == "max" or not s:
        return 0
    n = int(s)
    return 0 if n >= UNLIMITED else n


def parse_net_dev(text: str) -> dict[str, tuple[int, int]]:
    """``/proc/<pid>/net/dev`` -> {interface: (rx bytes, tx bytes)}, loopback left out."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        cols = rest.split()
        if name == "lo" or len(cols) < 9:
            continue
        out[name] = (int(cols[0]), int(cols[8]))
    return out


def usage_v1(cpuacct_usage: str, cpu_stat: str, memory_usage: str, memory_stat: str, memory_limit: str,
             net_dev: str | None = None) -> Usage:
    """cgroup v1: cpuacct.usage (ns), cpu.stat (throttled_time ns), memory.usage_in_bytes,
    memory.stat (total_inactive_file), memory.limit_in_bytes."""
    usage = int(cpuacct_usage.strip())
    mem = int(memory_usage.strip())
    inactive = inactive_file("1", memory_stat)
    return Usage(cpu_seconds=usage / 1e9, throttled_seconds=keyed(cpu_stat, "throttled_time") / 1e9,
                 memory_usage=mem, working_set=max(0, mem - inactive), memory_limit=parse_limit(memory_limit),
                 network=parse_net_dev(net_dev) if net_dev else {})


def usage_v2(cpu_stat: str, memory_current: str, memory_stat: str, memory_max: str, net_dev: str | None = None) -> Usage:
    """cgroup v2: cpu.stat (usage_usec, throttled_usec), memory.current, memory.stat
    (inactive_file), memory.max."""
    mem = int(memory_current.strip())
    inactive = inactive_file("2", memory_stat)
    return Usage(cpu_seconds=keyed(cpu_stat, "usage_usec") / 1e6, throttled_seconds=keyed(cpu_stat, "throttled_usec") / 1e6,
                 memory_usage=mem, working_set=max(0, mem - inactive), memory_limit=parse_limit(memory_max),
                 network=parse_net_dev(net_dev) if net_dev else {})


def usage_from_stats(s: Mapping[str, Any]) -> Usage:
    """The Docker stats API's answer (GET /containers/ID/stats?stream=false&one-shot=true)."""
    cpu = s.get("cpu_stats") or {}
    mem = s.get("memory_stats") or {}
    mstat = mem.get("stats") or {}
    usage = int(mem.get("usage") or 0)
    inactive = int(mstat.get("total_inactive_file", mstat.get("inactive_file", 0)) or 0)
    limit = int(mem.get("limit") or 0)
    nets = {name: (int(n.get("rx_bytes", 0)), int(n.get("tx_bytes", 0)))
            for name, n in (s.get("networks") or {}).items()}
    return Usage(cpu_seconds=int((cpu.get("cpu_usage") or {}).get("total_usage", 0)) / 1e9,
                 throttled_seconds=int((cpu.get("throttling_data") or {}).get("throttled_time", 0)) / 1e9,
                 memory_usage=usage, working_set=max(0, usage - inactive),
                 memory_limit=0 if limit >= UNLIMITED else limit, network=nets)


# ---- samples as metrics ------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One container's usage as read ``at``; a later sample in which nothing moved is this object again
    (agent.observe.task_usage counts such a container as idle over the interval)."""
    labels: tuple[str, ...]  # LABELS' values
    usage: Usage
    started_at: float | None
    at: float  # when it was read (epoch seconds)


def labels_of(c: ActualContainer, services: Mapping[str, str | None]) -> tuple[str, ...]:
    lb = c.labels
    return (lb.get(L_CLUSTER, ""), services.get(c.task_id) or "", c.task_id, lb.get(L_FAMILY, ""),
            lb.get(L_REVISION, ""), lb.get(L_CONTAINER, c.container_name), lb.get(L_NODE, c.node))


def families(samples: Iterable[Sample]) -> Iterator[Metric]:
    """cAdvisor's names and meanings (the subset dockyard reports)."""
    cpu = CounterMetricFamily("container_cpu_usage_seconds_total", "Cumulative cpu time consumed", labels=LABELS)
    thr = CounterMetricFamily("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled",
                              labels=LABELS)
    ws = GaugeMetricFamily("container_memory_working_set_bytes", "Current working set", labels=LABELS)
    use = GaugeMetricFamily("container_memory_usage_bytes", "Current memory usage, including all memory regardless of when it was accessed",
                            labels=LABELS)
    lim = GaugeMetricFamily("container_spec_memory_limit_bytes", "Memory limit for the container (0: none)", labels=LABELS)
    start = GaugeMetricFamily("container_start_time_seconds", "Start time of the container since unix epoch", labels=LABELS)
    rx = CounterMetricFamily("container_network_receive_bytes_total", "Cumulative count of bytes received",
                             labels=[*LABELS, "interface"])
    tx = CounterMetricFamily("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted",
                             labels=[*LABELS, "interface"])
    for s in samples:
        v, u = list(s.labels), s.usage
        cpu.add_metric(v, u.cpu_seconds)
        thr.add_metric(v, u.throttled_seconds)
        ws.add_metric(v, u.working_set)
        use.add_metric(v, u.memory_usage)
        lim.add_metric(v, u.memory_limit)
        if s.started_at:
            start.add_metric(v, s.started_at)
        for iface, (r, t) in sorted(u.network.items()):
            rx.add_metric([*v, iface], r)
            tx.add_metric([*v, iface], t)
    yield from (cpu, thr, ws, use, lim, start, rx, tx)


# ---- the shell ---------------------------------------------------------------------------------
def _read(p: Path | str) -> str:
    """One small kernel file in one read: os.open/os.read, 3 system calls where open() makes ~7
    (a sample reads ~6 files per container, and under gVisor each call is costly: bench/usage.py)."""
    fd = os.open(p, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def read_cgroup(paths: CgroupPaths, pid: int | None, proc: Path = PROC, lean: bool = False) -> Usage:
    """One sample of a container from its cgroup files (and its network namespace's net/dev; not when ``lean``,
    see :class:`OpenFiles`)."""
    net = None
    if pid and not lean:
        try:
            net = _read(f"{proc}/{pid}/net/dev")
        except OSError:
            net = None
    t = [_read(f) if f else "" for f in (paths.lean_files if lean else paths.files)]
    if paths.version == "1":
        return usage_v1(t[0], t[1], t[2], t[3], t[4], net)
    return usage_v2(t[0], t[1], t[2], t[3], net)


def inactive_file(version: str, memory_stat: str) -> int:
    """The inactive file cache of memory.stat: v1 ``total_inactive_file`` (the cgroup's own
    ``inactive_file`` when not hierarchical), v2 ``inactive_file``."""
    if version == "1":
        inactive = keyed(memory_stat, "total_inactive_file", -1)
        if inactive >= 0:
            return inactive
    return keyed(memory_stat, "inactive_file")


def stat_due(reads: int, every: int, usage: int, usage_at_stat: int | None) -> bool:
    """Whether a lean sample re-reads memory.stat: every ``every`` samples, and whenever the usage moved by
    more than :data:`STAT_DRIFT_BYTES` or a 16th since memory.stat was last read (the inactive file cache
    is part of the usage: it cannot change much while the usage stays put, and the periodic read catches
    cache turning active/inactive within an unchanged usage)."""
    if usage_at_stat is None or reads % every == 0:
        return True
    return abs(usage - usage_at_stat) > max(STAT_DRIFT_BYTES, usage_at_stat >> 4)


STAT_DRIFT_BYTES = 1 << 20


class OpenFiles:
    """One container's sample files kept open: a sample is one pread per file (cgroup and proc files
    generate their contents again at offset 0), 10x cheaper than open/read/close under gVisor
    (1.6 vs 16 us a file, measured here). Closed when the container goes or restarts.

    ``lean`` (no /metrics served): only what the status stream's usage needs, no cpu.stat on v1 and no
    net/dev (per container 11.7 of 20 us of system calls here: memory.stat 9, net/dev 5.3, the rest ~1.3
    each). The memory limit, which only ``docker update`` changes, is read every LIMIT_EVERY samples;
    memory.stat (7 us, 5x any other file here: the kernel formats ~40 lines) only when :func:`stat_due`,
    and its inactive file cache is reused in between. A sample whose cpu and usage files read as before
    returns the previous Usage object itself (an idle container: two preads, nothing parsed)."""

    LIMIT_EVERY = 12  # a minute at the default 5 s status interval
    STAT_EVERY = 12

    def __init__(self, paths: CgroupPaths, pid: int | None, proc: Path = PROC, lean: bool = False) -> None:
        self.version, self.lean = paths.version, lean
        self.fds: list[int] = []
        self.net = -1
        self._limit = ""
        self._reads = 0
        self._raw: tuple[bytes, bytes] | None = None  # lean: the cpu and usage files as last read
        self._usage: Usage | None = None
        self._inactive = 0
        self._usage_at_stat: int | None = None
        try:
            for f in (paths.lean_files if lean else paths.files):
                self.fds.append(os.open(f, os.O_RDONLY) if f else -1)
        except OSError:
            self.close()
            raise
        if pid and not lean:
            try:
                self.net = os.open(f"{proc}/{pid}/net/dev", os.O_RDONLY)
            except OSError:
                self.net = -1

    def read(self) -> Usage:
        fds = self.fds
        n = self._reads
        self._reads += 1
        fresh_limit = n % self.LIMIT_EVERY == 0
        if fresh_limit:
            self._limit = os.pread(fds[-1], 4096, 0).decode()
        if self.lean:
            return self._read_lean(n, fresh_limit)
        t = [os.pread(fd, 65536, 0).decode() if fd >= 0 else "" for fd in fds[:-1]]
        net = None
        if self.net >= 0:
            try:
                net = os.pread(self.net, 65536, 0).decode()
            except OSError:
                net = None
        if self.version == "1":
            return usage_v1(t[0], t[1], t[2], t[3], self._limit, net)
        return usage_v2(t[0], t[1], t[2], self._limit, net)

    def _read_lean(self, n: int, fresh_limit: bool) -> Usage:
        fds = self.fds
        v1 = self.version == "1"
        raw = (os.pread(fds[0], 4096, 0), os.pread(fds[2] if v1 else fds[1], 4096, 0))
        mem = int(raw[1])
        due = stat_due(n, self.STAT_EVERY, mem, self._usage_at_stat)
        if raw == self._raw and not due and not fresh_limit and self._usage is not None:
            return self._usage
        if due:
            self._inactive = inactive_file(self.version, os.pread(fds[3] if v1 else fds[2], 65536, 0).decode())
            self._usage_at_stat = mem
        if v1:
            cpu, throttled = int(raw[0]) / 1e9, 0.0
        else:
            text = raw[0].decode()
            cpu, throttled = keyed(text, "usage_usec") / 1e6, keyed(text, "throttled_usec") / 1e6
        self._raw = raw
        self._usage = Usage(cpu_seconds=cpu, throttled_seconds=throttled, memory_usage=mem,
                            working_set=max(0, mem - self._inactive), memory_limit=parse_limit(self._limit))
        return self._usage

    def close(self) -> None:
        for fd in [*self.fds, self.net]:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fds, self.net = [], -1


class UsageSampler:
    """Samples the running containers of one node; keeps the last sample per container.

    ``docker`` is an aiodocker client (for the pid, once per container, and the stats fallback)."""

    def __init__(self, docker: Any, log: Any, root: Path = CGROUP_ROOT, proc: Path = PROC, lean: bool = False) -> None:
        self.docker, self.log, self.root, self.proc = docker, log, root, proc
        self.lean = lean  # no /metrics served: read only what the status stream needs (OpenFiles)
        # container id -> (paths, pid, the start they belong to: an in-place restart has a new pid)
        self._paths: dict[str, tuple[CgroupPaths | None, int | None, float | None]] = {}
        self._open: dict[str, OpenFiles] = {}  # container id -> its files, open (see OpenFiles)
        self.last: dict[str, Sample] = {}  # container id -> its latest sample
        self._warned: set[str] = set()

    async def _locate(self, cid: str, started_at: float | None = None) -> tuple[CgroupPaths | None, int | None]:
        hit = self._paths.get(cid)
        if hit is not None and hit[2] == started_at:
            return hit[0], hit[1]
        pid: int | None = None
        paths: CgroupPaths | None = None
        try:
            info = await self.docker._query_json(f"containers/{cid}/json")
            pid = int((info.get("State") or {}).get("Pid") or 0) or None
            if pid:
                paths = parse_proc_cgroup(_read(self.proc / str(pid) / "cgroup"), self.root)
        except Exception as e:  # noqa: BLE001 - any failure: the stats API fallback
            self._warn(cid, "cgroup of container not found; using the Docker stats API", e)
        self._paths[cid] = (paths, pid, started_at)
        return paths, pid

    def _warn(self, cid: str, msg: str, e: Exception) -> None:
        if cid not in self._warned:
            self._warned.add(cid)
            self.log.warning(msg, container=cid[:12], error=f"{type(e).__name__}: {e}")

    async def sample_one(self, c: ActualContainer) -> Usage | None:
        paths, pid = await self._locate(c.id, c.started_at)
        if paths is not None:
            try:
                return read_cgroup(paths, pid, self.proc, self.lean)
            except (OSError, ValueError) as e:
                self._warn(c.id, "cgroup files not readable; using the Docker stats API", e)
                self._paths[c.id] = (None, pid, c.started_at)
        try:
            stats = await self.docker._query_json(f"containers/{c.id}/stats",
                                                  params={"stream": "false", "one-shot": "true"})
            return usage_from_stats(stats)
        except Exception as e:  # noqa: BLE001 - a container that just exited, an engine hiccup
            self.log.debug("container stats unavailable", container=c.id[:12], error=str(e))
            return None

    async def sample(self, containers: Iterable[ActualContainer], services: Mapping[str, str | None]) -> dict[str, Sample]:
        """Sample every running container; forget the others. Returns the latest samples."""
        running = [c for c in containers if c.running and c.task_id]
        usages: dict[str, Usage | None] = {}
        rest = []
        for c in running:  # the located ones: their files, without a coroutine each
            hit = self._paths.get(c.id)
            if hit is not None and hit[0] is not None and hit[2] == c.started_at:
                try:
                    try:
                        usages[c.id] = self._files(c.id, hit[0], hit[1]).read()
                    except OSError as e:
                        if e.errno not in (errno.EMFILE, errno.ENFILE):
                            raise
                        usages[c.id] = read_cgroup(hit[0], hit[1], self.proc, self.lean)  # out of descriptors
                    continue
                except (OSError, ValueError) as e:
                    self._warn(c.id, "cgroup files not readable; using the Docker stats API", e)
                    self._paths[c.id] = (None, hit[1], c.started_at)
                    self._close(c.id)
            else:
                self._close(c.id)  # new, or restarted in place: its files are others now
            rest.append(c)
        # Concurrently: the Docker stats API answers each request at its collector's next tick
        # (about 1 s, one-shot or not: bench/usage.py), so one after the other they would add up.
        for c, u in zip(rest, await asyncio.gather(*(self.sample_one(c) for c in rest)), strict=True):
            usages[c.id] = u
        now = time.time()
        last, live = self.last, {}
        for c in running:
            if (u := usages.get(c.id)) is None:
                continue
            prev = last.get(c.id)
            if prev is not None and prev.labels[1] == (services.get(c.task_id) or "") and prev.labels[2] == c.task_id:
                if prev.usage is u and prev.started_at == c.started_at:
                    live[c.id] = prev  # nothing moved (a lean read returned the same Usage): the same sample
                    continue
                labels = prev.labels  # a container's labels do not change
            else:
                labels = labels_of(c, services)
            live[c.id] = Sample(labels, u, c.started_at, now)
        for cid in [k for k in self._paths if k not in live]:
            self._paths.pop(cid, None)
            self._close(cid)
        self._warned &= set(live)
        self.last = live
        return live

    def _files(self, cid: str, paths: CgroupPaths, pid: int | None) -> OpenFiles:
        f = self._open.get(cid)
        if f is None:
            f = self._open[cid] = OpenFiles(paths, pid, self.proc, self.lean)
        return f

    def _close(self, cid: str) -> None:
        f = self._open.pop(cid, None)
        if f is not None:
            f.close()

    def close(self) -> None:
        for cid in list(self._open):
            self._close(cid)

    def collect(self) -> Iterator[Metric]:
        """A prometheus-client collector over the latest samples (a scrape reads no file)."""
        return families(self.last.values())
