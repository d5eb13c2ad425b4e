"""Container usage (agent.usage): the cgroup v1 / v2 and Docker stats parsers on real file contents,
the metric families with cAdvisor's names and dockyard's labels, and the per-task usage the agent
sends (agent.observe.task_usage); the sampler's shell on a fake cgroup tree."""
from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from agent.observe import task_usage
from agent.runtime import ActualContainer
from agent.usage import (
    Sample,
    Usage,
    UsageSampler,
    families,
    parse_limit,
    parse_net_dev,
    parse_proc_cgroup,
    usage_from_stats,
    usage_v1,
    usage_v2,
)

CID = "17f9242196ca3804d9db39b523dd66d452bae294740a464c38bded4ee29a45b6"
PROC_V1 = f"""9:name=systemd:/docker/{CID}
8:pids:/docker/{CID}
4:memory:/docker/{CID}
2:cpuacct:/docker/{CID}
1:cpu:/docker/{CID}
0::/docker/{CID}
"""
PROC_V1_JOINT = f"""4:memory:/docker/{CID}
3:cpu,cpuacct:/docker/{CID}
"""
PROC_V2 = "0::/system.slice/docker-abc.scope\n"
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     500       5    0    0    0     0          0         0      500       5    0    0    0     0       0          0
  eth0:    1098      15    0    0    0     0          0         0      631       7    0    0    0     0       0          0
"""
CPU_STAT_V1 = "nr_periods 10\nnr_throttled 4\nthrottled_time 2500000000\nnr_bursts 0\nburst_time 0\n"
MEM_STAT_V1 = "cache 40960\nrss 8192\ninactive_file 4096\ntotal_inactive_file 12288\n"
CPU_STAT_V2 = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 0\nnr_throttled 0\nthrottled_usec 1500\n"
MEM_STAT_V2 = "anon 4096\nfile 8192\ninactive_file 2048\nactive_file 1024\n"


def test_proc_cgroup_gives_the_v1_directories_per_controller():
    p = parse_proc_cgroup(PROC_V1, Path("/cg"))
    assert p is not None and p.version == "1"
    assert p.cpu == Path(f"/cg/cpuacct/docker/{CID}") and p.cpu_stat == Path(f"/cg/cpu/docker/{CID}")
    assert p.memory == Path(f"/cg/memory/docker/{CID}")
    joint = parse_proc_cgroup(PROC_V1_JOINT, Path("/cg"))
    assert joint is not None and joint.cpu == joint.cpu_stat == Path(f"/cg/cpu,cpuacct/docker/{CID}")


def test_proc_cgroup_gives_the_one_v2_directory():
    p = parse_proc_cgroup(PROC_V2, Path("/cg"))
    assert p is not None and p.version == "2" and p.cpu == p.memory == Path("/cg/system.slice/docker-abc.scope")
    assert parse_proc_cgroup("garbage\n") is None


def test_v1_files_become_usage_with_the_working_set_without_inactive_file_cache():
    u = usage_v1("33008428\n", CPU_STAT_V1, "819200\n", MEM_STAT_V1, "33554432\n", NET_DEV)
    assert u.cpu_seconds == pytest.approx(0.033008428)
    assert u.throttled_seconds == pytest.approx(2.5)
    assert u.memory_usage == 819200 and u.working_set == 819200 - 12288  # total_inactive_file, as cAdvisor
    assert u.memory_limit == 33554432
    assert u.network == {"eth0": (1098, 631)}  # loopback left out


def test_v2_files_become_usage():
    u = usage_v2(CPU_STAT_V2, "65536\n", MEM_STAT_V2, "max\n")
    assert u.cpu_seconds == pytest.approx(2.5) and u.throttled_seconds == pytest.approx(0.0015)
    assert u.working_set == 65536 - 2048 and u.memory_limit == 0


def test_unlimited_memory_is_zero_and_limits_parse():
    assert parse_limit("9223372036854771712\n") == 0
    assert parse_limit("max") == 0 and parse_limit("1048576") == 1048576
    assert parse_net_dev("a\nb\n") == {}


def test_docker_stats_answer_is_the_fallback():
    stats = {"cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000}, "throttling_data": {"throttled_time": 10**9}},
             "memory_stats": {"usage": 10_000, "limit": 9223372036854771712, "stats": {"inactive_file": 1_000}},
             "networks": {"eth0": {"rx_bytes": 5, "tx_bytes": 7}}}
    u = usage_from_stats(stats)
    assert (u.cpu_seconds, u.throttled_seconds, u.working_set, u.memory_limit) == (3.0, 1.0, 9_000, 0)
    assert u.network == {"eth0": (5, 7)}
    assert usage_from_stats({}).memory_usage == 0


LABELS = ("c1", "web", "task1", "web", "3", "app", "n1")


def test_families_carry_cadvisor_names_and_dockyard_labels():
    s = Sample(LABELS, Usage(1.5, 0.0, 100, 80, 0, {"eth0": (1, 2)}), 1_700_000_000.0, 1_700_000_100.0)
    got = {(m.name, sm.name): sm for m in families([s]) for sm in m.samples}
    cpu = got[("container_cpu_usage_seconds", "container_cpu_usage_seconds_total")]
    assert cpu.value == 1.5
    assert cpu.labels == {"cluster": "c1", "service": "web", "task": "task1", "family": "web", "revision": "3",
                          "container": "app", "node": "n1"}
    assert got[("container_memory_working_set_bytes", "container_memory_working_set_bytes")].value == 80
    assert got[("container_start_time_seconds", "container_start_time_seconds")].value == 1_700_000_000.0
    rx = got[("container_network_receive_bytes", "container_network_receive_bytes_total")]
    assert rx.labels["interface"] == "eth0" and rx.value == 1
    names = {m.name for m in families([])}
    assert {"container_spec_memory_limit_bytes", "container_cpu_cfs_throttled_seconds", "container_memory_usage_bytes",
            "container_network_transmit_bytes"} <= names


def test_task_usage_is_the_cpu_rate_in_units_and_the_summed_working_set():
    def sample(task: str, cpu: float, at: float, ws: int = 1000, limit: int = 0) -> Sample:
        return Sample(("c", "s", task, "f", "1", "x", "n"), Usage(cpu, 0, ws, ws, limit), None, at)

    before = {"a": sample("t1", 10.0, 100.0), "b": sample("t1", 5.0, 100.0)}
    now = {"a": sample("t1", 12.0, 102.0, ws=2000, limit=4096), "b": sample("t1", 5.5, 102.0),
           "c": sample("t2", 1.0, 102.0)}  # t2: first sample, no rate yet
    out = task_usage(now, before)
    assert [u.taskId for u in out] == ["t1"]
    assert out[0].cpu == pytest.approx((1.0 + 0.25) * 1024)  # one core + a quarter
    assert out[0].memory == 3000 and out[0].memoryLimit == 4096


class FakeDocker:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.calls: list[str] = []

    async def _query_json(self, path: str, params=None):
        self.calls.append(path)
        if path.endswith("/json"):
            return {"State": {"Pid": self.pid}}
        return {"memory_stats": {"usage": 42}}


def _container(cid: str, state: str = "running") -> ActualContainer:
    return ActualContainer(id=cid, task_id="task1", container_name="app", node="n1", state=state,
                           labels={"dockyard.cluster": "c1", "dockyard.family": "web", "dockyard.revision": "3",
                                   "dockyard.container": "app", "dockyard.node": "n1"})


def test_sampler_reads_the_cgroup_files_and_inspects_once(tmp_path):
    proc, root = tmp_path / "proc", tmp_path / "cg"
    (proc / "77" / "net").mkdir(parents=True)
    (proc / "77" / "cgroup").write_text(PROC_V1)
    (proc / "77" / "net" / "dev").write_text(NET_DEV)
    for ctl, files in (("cpuacct", {"cpuacct.usage": "2000000000"}), ("cpu", {"cpu.stat": CPU_STAT_V1}),
                       ("memory", {"memory.usage_in_bytes": "819200", "memory.stat": MEM_STAT_V1,
                                   "memory.limit_in_bytes": "33554432"})):
        d = root / ctl / "docker" / CID
        d.mkdir(parents=True)
        for name, text in files.items():
            (d / name).write_text(text)
    docker = FakeDocker(77)
    sampler = UsageSampler(docker, log=_Log(), root=root, proc=proc)
    for _ in range(2):
        got = asyncio.run(sampler.sample([_container(CID), _container("gone", state="exited")], {"task1": "web"}))
    assert list(got) == [CID]
    assert got[CID].usage.cpu_seconds == 2.0 and got[CID].labels[1] == "web"
    assert docker.calls == [f"containers/{CID}/json"]  # located once, then files only
    (root / "cpuacct" / "docker" / CID / "cpuacct.usage").write_text("3000000000")  # kept open: read afresh
    assert asyncio.run(sampler.sample([_container(CID)], {"task1": "web"}))[CID].usage.cpu_seconds == 3.0
    restarted = dataclasses.replace(_container(CID), started_at=1_700_000_000.0)  # in place: a new pid
    asyncio.run(sampler.sample([restarted], {}))
    assert docker.calls == [f"containers/{CID}/json"] * 2
    # files gone (the container exited meanwhile): the stats API answers instead
    (root / "memory" / "docker" / CID / "memory.stat").unlink()
    got = asyncio.run(sampler.sample([_container(CID)], {}))
    assert got[CID].usage.memory_usage == 42 and docker.calls[-1] == f"containers/{CID}/stats"
    asyncio.run(sampler.sample([], {}))  # gone: forgotten, its files closed
    assert sampler._open == {} and sampler._paths == {}


class _Log:
    def warning(self, *a, **k) -> None:
        pass

    def debug(self, *a, **k) -> None:
        pass

    def info(self, *a, **k) -> None:
        pass

    def error(self, *a, **k) -> None:
        pass


def test_keyed_reads_one_line_at_its_start_only():
    from agent.usage import keyed

    text = "total_inactive_file 12288\ninactive_file 4096\nx_inactive_file 9\n"
    assert keyed(text, "inactive_file") == 4096 and keyed(text, "total_inactive_file") == 12288
    assert keyed(text, "missing", -1) == -1 and keyed("inactive_file 7", "inactive_file") == 7
    assert usage_v1("1", "", "100", "inactive_file 10\n", "max").working_set == 90  # not hierarchical


def test_metrics_endpoint_is_advertised_on_the_node_address_when_bound_to_a_wildcard():
    from agent.observe import Observer

    obs = Observer(None, _Log(), "0.0.0.0:0")
    assert obs.advertised("10.0.0.5") is None  # not serving
    obs.endpoint = "0.0.0.0:9780"
    assert obs.advertised("10.0.0.5") == "10.0.0.5:9780" and obs.advertised(None) == "0.0.0.0:9780"
    obs.endpoint = "127.0.0.1:9780"
    assert obs.advertised("10.0.0.5") == "127.0.0.1:9780"


def test_the_agent_metrics_handler_serves_container_families_and_its_own():
    from agent.observe import Observer

    obs = Observer(None, _Log(), None)
    obs.sampler.last = {"c1": Sample(LABELS, Usage(2.0, 0.0, 10, 8, 0), None, 1.0)}
    resp = asyncio.run(obs._metrics(None))  # type: ignore[arg-type]  (the socket side: test_prometheus.py)
    body = resp.body.decode()
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert 'container_cpu_usage_seconds_total{cluster="c1",container="app"' in body
    assert "dockyard_agent_build_info" in body and "process_cpu_seconds_total" in body
    assert asyncio.run(obs.start()) is False  # no --metrics-listen: nothing served


def test_a_lean_sampler_reads_only_what_the_status_stream_needs(tmp_path):
    """No /metrics served: no cpu.stat (v1) nor net/dev; the limit every LIMIT_EVERY samples."""
    from agent.usage import OpenFiles

    proc, root = tmp_path / "proc", tmp_path / "cg"
    (proc / "77" / "net").mkdir(parents=True)
    (proc / "77" / "cgroup").write_text(PROC_V1)
    (proc / "77" / "net" / "dev").write_text(NET_DEV)
    for ctl, files in (("cpuacct", {"cpuacct.usage": "2000000000"}),
                       ("memory", {"memory.usage_in_bytes": "819200", "memory.stat": MEM_STAT_V1,
                                   "memory.limit_in_bytes": "33554432"})):  # no cpu.stat at all
        d = root / ctl / "docker" / CID
        d.mkdir(parents=True)
        for name, text in files.items():
            (d / name).write_text(text)
    sampler = UsageSampler(FakeDocker(77), log=_Log(), root=root, proc=proc, lean=True)
    for _ in range(2):
        got = asyncio.run(sampler.sample([_container(CID)], {}))[CID].usage
    assert (got.cpu_seconds, got.memory_limit, got.throttled_seconds, got.network) == (2.0, 33554432, 0.0, {})
    assert got.working_set < got.memory_usage == 819200
    (root / "memory" / "docker" / CID / "memory.limit_in_bytes").write_text("16777216")
    limits = [asyncio.run(sampler.sample([_container(CID)], {}))[CID].usage.memory_limit
              for _ in range(OpenFiles.LIMIT_EVERY)]
    assert limits[-1] == 16777216 and limits[0] == 33554432  # re-read within LIMIT_EVERY samples
    assert len(sampler._open[CID].fds) == 5 and sampler._open[CID].fds[1] == -1 and sampler._open[CID].net == -1
    sampler.close()


def test_stat_due_every_n_samples_and_when_the_usage_moved():
    from agent.usage import STAT_DRIFT_BYTES, stat_due

    assert stat_due(5, 12, 100, None)  # never read
    assert stat_due(12, 12, 100, 100) and not stat_due(13, 12, 100, 100)
    assert not stat_due(1, 12, 100 + STAT_DRIFT_BYTES, 100) and stat_due(1, 12, 101 + STAT_DRIFT_BYTES, 100)
    big = 64 << 20  # a 16th of 64 MiB (4 MiB) is more than the floor
    assert not stat_due(1, 12, big + (4 << 20), big) and stat_due(1, 12, big - (4 << 20) - 1, big)


def _lean_v1_tree(tmp_path):
    proc, root = tmp_path / "proc", tmp_path / "cg"
    (proc / "77").mkdir(parents=True)
    (proc / "77" / "cgroup").write_text(PROC_V1)
    for ctl, files in (("cpuacct", {"cpuacct.usage": "2000000000"}),
                       ("memory", {"memory.usage_in_bytes": "8192000", "memory.stat": MEM_STAT_V1,
                                   "memory.limit_in_bytes": "33554432"})):
        d = root / ctl / "docker" / CID
        d.mkdir(parents=True)
        for name, text in files.items():
            (d / name).write_text(text)
    return proc, root, root / "memory" / "docker" / CID


def test_a_lean_sample_reads_memory_stat_when_due_and_reuses_an_unchanged_usage(tmp_path):
    from agent.usage import OpenFiles

    proc, root, mem = _lean_v1_tree(tmp_path)
    sampler = UsageSampler(FakeDocker(77), log=_Log(), root=root, proc=proc, lean=True)

    def usage() -> Usage:
        return asyncio.run(sampler.sample([_container(CID)], {}))[CID].usage

    assert usage().working_set == 8192000 - 12288  # located (one read of every file); total_inactive_file
    first = usage()  # from the kept files
    assert first.working_set == 8192000 - 12288
    assert usage() is first  # nothing changed: the same object, nothing parsed
    # More inactive cache at the same usage: seen at the periodic re-read only...
    (mem / "memory.stat").write_text(MEM_STAT_V1.replace("total_inactive_file 12288", "total_inactive_file 1012288"))
    seen = [usage().working_set for _ in range(OpenFiles.STAT_EVERY)]
    assert seen[0] == 8192000 - 12288 and seen[-1] == 8192000 - 1012288
    # ...but at once when the usage moved by more than the drift (and the cpu counter is read every time).
    (mem / "memory.stat").write_text(MEM_STAT_V1.replace("total_inactive_file 12288", "total_inactive_file 0"))
    (mem / "memory.usage_in_bytes").write_text("1000")
    (root / "cpuacct" / "docker" / CID / "cpuacct.usage").write_text("3000000000")
    moved = usage()
    assert (moved.memory_usage, moved.working_set, moved.cpu_seconds) == (1000, 1000, 3.0)
    # A small change of the usage: the usage is new, the inactive cache the last one read (clamped at 0).
    (mem / "memory.stat").write_text(MEM_STAT_V1.replace("total_inactive_file 12288", "total_inactive_file 900"))
    (mem / "memory.usage_in_bytes").write_text("1200")
    assert (usage().memory_usage, usage().working_set) == (1200, 1200)
    sampler.close()


def test_a_lean_v2_sample_takes_cpu_and_throttling_from_cpu_stat(tmp_path):
    proc, root = tmp_path / "proc", tmp_path / "cg"
    (proc / "77").mkdir(parents=True)
    (proc / "77" / "cgroup").write_text(PROC_V2)
    d = root / "system.slice" / "docker-abc.scope"
    d.mkdir(parents=True)
    for name, text in {"cpu.stat": CPU_STAT_V2, "memory.current": "10240", "memory.stat": MEM_STAT_V2,
                       "memory.max": "max"}.items():
        (d / name).write_text(text)
    sampler = UsageSampler(FakeDocker(77), log=_Log(), root=root, proc=proc, lean=True)
    got = asyncio.run(sampler.sample([_container(CID)], {}))[CID].usage
    assert got == Usage(2.5, 0.0015, 10240, 10240 - 2048, 0)
    sampler.close()


def test_task_usage_returns_an_unchanged_entry_again():
    def sample(cpu: float, at: float, ws: int = 1000) -> Sample:
        return Sample(("c", "s", "t1", "f", "1", "x", "n"), Usage(cpu, 0, ws, ws, 0), None, at)

    first = task_usage({"a": sample(1.0, 2.0)}, {"a": sample(1.0, 1.0)})
    again = task_usage({"a": sample(1.0, 3.0)}, {"a": sample(1.0, 2.0)}, {u.taskId: u for u in first})
    assert again[0] is first[0] and again[0].cpu == 0.0
    moved = task_usage({"a": sample(1.0, 3.0, ws=2000)}, {"a": sample(1.0, 2.0)}, {u.taskId: u for u in first})
    assert moved[0] is not first[0] and moved[0].memory == 2000


def test_an_unchanged_container_keeps_its_sample_and_counts_as_idle(tmp_path):
    proc, root, _ = _lean_v1_tree(tmp_path)
    sampler = UsageSampler(FakeDocker(77), log=_Log(), root=root, proc=proc, lean=True)
    for _ in range(2):
        asyncio.run(sampler.sample([_container(CID)], {"task1": "web"}))
    before = sampler.last
    now = asyncio.run(sampler.sample([_container(CID)], {"task1": "web"}))
    assert now[CID] is before[CID]  # nothing moved: the same Sample
    assert [(u.taskId, u.cpu, u.memory) for u in task_usage(now, before)] == [("task1", 0.0, 8192000 - 12288)]
    moved = asyncio.run(sampler.sample([_container(CID)], {"task1": "api"}))  # another service: new labels
    assert moved[CID] is not now[CID] and moved[CID].labels[1] == "api"
    sampler.close()
