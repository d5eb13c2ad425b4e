#!/usr/bin/env python3
"""Scale: 1,000 hollow nodes, services totalling 1k / 2k / 5k / 10k tasks, apply -> all RUNNING;
then 10k running with 100k stopped tasks retained.

    .venv/bin/python bench/scale.py [--nodes 1000] [--procs 4] [--sizes 1000,2000,5000,10000]
                                    [--history 100000] [--store sqlite|postgres] [--py-spy PREFIX]

Hollow agents (`dockyard agent --runtime hollow --hollow-count N`: the real agent code, MQTT
client per node, reconcile and status reports, with in-memory containers) run the nodes as
--procs processes; one orchestrator and a private Mosquitto. Each node offers 4096 cpu units
and 16 GiB; tasks ask 0 cpu and 32 MiB, so 10k tasks fit (~10 per node, spread).

For each size N, in turn on the same orchestrator and nodes (the largest --repeat times, median
reported: runs on this 2-core machine vary by +-30%): apply 10 services of N/10 tasks
each (`dockyard apply`), time until the API reports N tasks RUNNING
(GET /v1/clusters/C/services runningCount/pendingCount, polled every 0.2 s; checked once more
with the task list), then delete the services and wait until no task runs (not timed). Stopped
tasks are kept 24 h, as in production (in the orchestrator's store, not its memory). A warm-up
round of one task per node comes first (not counted): a hollow agent process imports the
container-spec code (aiodocker, aiohttp) on its first task.

History (--history H, default 100,000; 0 skips it): rounds of the largest size are churned
(apply, all RUNNING, delete, all STOPPED) until H tasks in all have stopped, then the largest
size is applied once more and measured with those H stopped tasks retained. Churn rather than
seeding the store with H STOPPED records before the orchestrator starts: seeding would only
measure the load at start (which reads no STOPPED body, see tests/unit/test_state_history.py),
while churning drives every task through the real path (placement, documents, reports, STOPPED,
flushed, dropped from memory), so anything the loop still kept per stopped task would show up
as growth. It costs about 15 s per 10k-task round.

--py-spy PREFIX (py-spy installed, root or ptrace allowed): sample the orchestrator with py-spy
during each measured round of the largest size (apply -> all RUNNING, the window of
orchestrator_cpu_seconds_largest) into PREFIX-<round>.txt (collapsed stacks, `--format raw`:
one line per stack and its sample count), for a per-part profile of the CPU per placement, and
during the steady state into PREFIX-steady.txt.

Figures: false_node_losses (tasks stopped as node-lost: 0, every node is healthy) and
heartbeat_timeouts (orchestrator log lines: 0), nodes, seconds_1000 ... seconds_10000, seconds_10000_runs, placements_per_second
(N / median seconds of the largest N, end to end: placement, documents, agents, reports; target >= 2000),
growth_10k_vs_1k (seconds(10k) / seconds(1k) / 10: 1.0 = linear), orchestrator_peak_rss_mb
(VmHWM after the first round of the largest size: 10k tasks RUNNING and the earlier rounds' tasks
kept STOPPED, orchestrator_tasks_kept_then of them in all; target <= 300),
orchestrator_peak_rss_mb_end (VmHWM at the end, after the repeats and the history),
orchestrator_cpu_seconds_largest (median over the largest rounds),
orchestrator_steady_cpu_percent (the largest size running, nothing changing, over 10 s);
with the history: history_stopped_tasks_kept (STOPPED tasks the API lists then),
history_seconds_10000 and history_placements_per_second (that round, end to end),
history_orchestrator_rss_mb and history_orchestrator_peak_rss_mb (VmRSS and VmHWM with 10k
RUNNING and H kept; target <= 300), history_list_stopped_seconds (GET the H stopped tasks, the
list `dockyard get tasks --all` reads: streamed from the store) and the RSS / peak after it.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import time

import httpx
from _common import (
    DOCKYARD,
    Bench,
    CannotMeasure,
    log,
    main,
    median,
    proc_cpu_seconds,
    proc_status,
)

TD = """
apiVersion: dockyard/v1
kind: TaskDefinition
metadata: {name: bscale}
spec:
  containerDefinitions:
    - {name: app, image: dockyard-demo/busybox:latest, command: [sleep, "3600"], memory: 32, stopTimeout: 1}
"""


def services(prefix: str, total: int, count: int) -> str:
    per, extra = divmod(total, count)
    docs = [TD]
    for i in range(count):
        n = per + (1 if i < extra else 0)
        docs.append(f"""
apiVersion: dockyard/v1
kind: Service
metadata: {{name: {prefix}-{i}}}
spec: {{taskDefinition: bscale, desiredCount: {n}}}
""")
    return "---".join(docs)


async def wait_services(api: httpx.AsyncClient, cluster: str, prefix: str, n: int, t0: float, timeout: float,
                        what: str) -> float:
    """Until the services named <prefix>-* report n RUNNING and none pending (runningCount and
    pendingCount of GET /v1/clusters/C/services, ECS's DescribeServices); n == 0: until they are
    gone (deleted services disappear once their last task is STOPPED). O(their tasks) per poll,
    unlike the cluster view, which counts every task ever kept."""
    last = None
    trace = os.environ.get("DOCKYARD_BENCH_TRACE")
    while time.monotonic() - t0 < timeout:
        svcs = [x for x in (await api.get(f"/v1/clusters/{cluster}/services")).json()["services"]
                if x["serviceName"].startswith(prefix + "-")]
        now = (sum(x["runningCount"] for x in svcs), sum(x["pendingCount"] for x in svcs), len(svcs))
        if trace and now != last:
            log(f"  t={time.monotonic() - t0:.2f}s running={now[0]} pending={now[1]} services={now[2]}")
        last = now
        if (n == 0 and not svcs) or (n > 0 and now[0] == n and now[1] == 0):
            return time.monotonic() - t0
        await asyncio.sleep(0.2)
    raise CannotMeasure(f"{what}: not reached within {timeout:.0f}s (running, pending, services = {last})")


UPDATES = 'dockyard_status_messages_total{kind="update"}'
SNAPSHOTS = 'dockyard_status_messages_total{kind="snapshot"}'


def log_metrics(m0: dict[str, float], m1: dict[str, float]) -> None:
    d = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in m1}
    log(f"  orchestrator: {d.get('dockyard_reconcile_pass_seconds_count', 0):.0f} passes "
        f"({d.get('dockyard_reconcile_pass_seconds_sum', 0):.2f} s), "
        f"{d.get('dockyard_desired_documents_published_total', 0):.0f} desired documents, status messages "
        f"{d.get(UPDATES, 0):.0f} updates + {d.get(SNAPSHOTS, 0):.0f} snapshots, cyclic GC "
        f"{sum(v for k, v in d.items() if k.startswith('dockyard_gc_seconds_total')):.2f} s")


async def start_py_spy(pid: int, out: str) -> asyncio.subprocess.Process:
    """py-spy sampling process ``pid`` into ``out`` (collapsed stacks) until stop_py_spy."""
    spy = await asyncio.create_subprocess_exec(
        shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid",
        str(pid), "--format", "raw", "--rate", "200", "--nonblocking", "--output", out,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(0.5)  # attached
    return spy


async def stop_py_spy(spy: asyncio.subprocess.Process) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
    await spy.wait()


async def scrape(api: httpx.AsyncClient) -> dict[str, float]:
    """The orchestrator's /metrics samples (name{labels} -> value)."""
    out: dict[str, float] = {}
    for line in (await api.get("/metrics")).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def run(bench: Bench) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4, help="hollow agent processes")
    ap.add_argument("--sizes", default="1000,2000,5000,10000")
    ap.add_argument("--services", type=int, default=10, help="services per size")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--heartbeat-interval", type=float, default=None,
                    help="the agents' --heartbeat-interval (default: theirs; 0: no light heartbeats)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the largest size (the median is reported)")
    ap.add_argument("--history", type=int, default=100_000,
                    help="then churn until this many tasks are STOPPED (kept) and measure the largest size again; 0: skip")
    ap.add_argument("--steady-seconds", type=float, default=10.0,
                    help="orchestrator CPU measured this long with the largest size running")
    ap.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite",
                    help="the orchestrator's store: its SQLite file, or a PostgreSQL 15 the bench starts (fsync on, "
                         "synchronous_commit off: as durable as SQLite's WAL with synchronous=NORMAL)")
    ap.add_argument("--py-spy", dest="py_spy", metavar="PREFIX",
                    help="sample the orchestrator during each measured largest round into PREFIX-<round>.txt")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    env = bench.env
    if args.store == "postgres":
        from pgserver import PgServer

        pg = PgServer(durable=True)
        if pg.missing():
            raise CannotMeasure(pg.missing() or "")
        bench.extra_cleanups.append(pg.stop)
        env.store = pg.start().database()
        log(f"store: PostgreSQL 15 on port {pg.port}")
    orch = env.start_orchestrator()
    opid = orch.popen.pid
    per, extra = divmod(args.nodes, args.procs)
    for k in range(args.procs):
        count = per + (1 if k < extra else 0)
        beat = {} if args.heartbeat_interval is None else {"heartbeat_interval": args.heartbeat_interval}
        env.start_agent(node_id=f"{env.cluster}-p{k}", wait=False, runtime="hollow", hollow_count=count,
                        log_level="warning", **beat)
    t0 = time.monotonic()

    def connected() -> int:
        return sum(1 for n in env.nodes() if n.get("connected"))
    while (c := connected()) < args.nodes:
        if time.monotonic() - t0 > 180:
            raise CannotMeasure(f"only {c} of {args.nodes} hollow nodes connected after 180 s")
        for name, p in env.agents.items():
            if p.popen.poll() is not None:
                raise CannotMeasure(f"hollow agent process {name} exited: {env.tail(p.log, 20)}")
        time.sleep(1.0)
    log(f"{args.nodes} hollow nodes connected in {time.monotonic() - t0:.1f}s; settling 5 s")
    time.sleep(5.0)

    runs: dict[int, list[float]] = {}
    cpu_runs: list[float] = []
    steady: dict[str, float] = {}
    history: dict[str, float] = {}

    async def one_round(api: httpx.AsyncClient, r: int, n: int, warmup: bool = False,
                        measure: bool = True, before_delete=None) -> float:
        """Apply services of n tasks, wait until they all run, then delete them and wait until
        they are gone (all their tasks STOPPED); seconds until RUNNING."""
        prefix = f"r{r}"
        path = bench.manifest(services(prefix, n, args.services), f"scale-{n}.yaml")
        m0 = await scrape(api)
        spy = None
        if args.py_spy and n == max(sizes) and measure and not warmup:
            spy = await start_py_spy(opid, f"{args.py_spy}-{r}.txt")
        c0 = proc_cpu_seconds(opid)
        a0 = sum(proc_cpu_seconds(p.popen.pid) for p in env.agents.values())
        b0 = proc_cpu_seconds(bench.broker.proc.pid)
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            DOCKYARD, "--server", env.base_url, "-c", env.cluster, "apply", "-f", str(path),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env.cli_env())
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise CannotMeasure(f"dockyard apply failed: {err.decode()[-500:]}")
        took = await wait_services(api, env.cluster, prefix, n, t0, args.timeout, f"{n} tasks RUNNING")
        if warmup:  # one task per node: every hollow process has run its first task (imports)
            log(f"warm-up: {n} tasks RUNNING after {took:.2f}s (not counted)")
        elif measure:
            runs.setdefault(n, []).append(took)
        cpu = proc_cpu_seconds(opid) - c0
        if spy is not None:
            await stop_py_spy(spy)
        agents_cpu = sum(proc_cpu_seconds(p.popen.pid) for p in env.agents.values()) - a0
        broker_cpu = proc_cpu_seconds(bench.broker.proc.pid) - b0
        tasks = (await api.get(f"/v1/clusters/{env.cluster}/tasks", params={"desiredStatus": "RUNNING"})).json()["tasks"]
        running = sum(t["lastStatus"] == "RUNNING" for t in tasks)
        if running != n:
            raise CannotMeasure(f"cluster view said {n} RUNNING but the task list has {running}")
        log_metrics(m0, await scrape(api))
        log(f"{n} tasks: RUNNING after {took:.2f}s ({n / took:.0f}/s), cpu seconds: orchestrator "
            f"{cpu:.1f}, hollow agents {agents_cpu:.1f}, broker {broker_cpu:.1f}; orchestrator rss "
            f"{proc_status(opid)['VmRSS'] / 1024:.0f} MB")
        if n == max(sizes) and measure and not warmup:
            cpu_runs.append(cpu)
        if before_delete is not None:
            await before_delete(n, took)
        m0 = await scrape(api)
        t1 = time.monotonic()
        for i in range(args.services):
            (await api.delete(f"/v1/clusters/{env.cluster}/services/{prefix}-{i}")).raise_for_status()
        await wait_services(api, env.cluster, prefix, 0, t1, args.timeout, "all tasks stopped")
        log(f"  deleted; all stopped after {time.monotonic() - t1:.1f}s")
        log_metrics(m0, await scrape(api))
        await asyncio.sleep(2.0)
        return took

    async def rounds() -> None:
        async with httpx.AsyncClient(base_url=env.base_url, timeout=120, headers=env.api_headers) as api:
            async def first_largest(n: int, took: float) -> None:
                if n != max(sizes) or "cpu" in steady:
                    return
                # Peak RSS up to the first round of the largest size (the repeats add more
                # stopped tasks, which the orchestrator keeps for 24 h, in its store).
                steady["hwm"] = proc_status(opid)["VmHWM"] / 1024
                steady["kept"] = len((await api.get(f"/v1/clusters/{env.cluster}/tasks")).json()["tasks"])
                # Steady state: every node sends a snapshot every 2 s; nothing changes.
                await asyncio.sleep(3.0)
                spy = await start_py_spy(opid, f"{args.py_spy}-steady.txt") if args.py_spy else None
                m0 = await scrape(api)
                s0, w0 = proc_cpu_seconds(opid), time.monotonic()
                await asyncio.sleep(args.steady_seconds)
                steady["cpu"] = (proc_cpu_seconds(opid) - s0) / (time.monotonic() - w0) * 100
                if spy is not None:
                    await stop_py_spy(spy)
                log(f"  steady state with {n} tasks: orchestrator cpu {steady['cpu']:.1f}%")
                log_metrics(m0, await scrape(api))

            plan = [-args.nodes] + sizes + [max(sizes)] * (args.repeat - 1)
            for r, n in enumerate(plan):
                await one_round(api, r, abs(n), warmup=n < 0, before_delete=first_largest)
            if not args.history:
                return
            # History: churn rounds of the largest size until --history tasks are STOPPED (and
            # kept: 24 h), then the largest size once more, measured with them retained.
            done = sum(abs(n) for n in plan)
            r = len(plan)
            while done < args.history:
                log(f"history: {done} tasks stopped so far; churning {max(sizes)} more")
                await one_round(api, r, max(sizes), measure=False)
                done, r = done + max(sizes), r + 1

            async def with_history(n: int, took: float) -> None:
                await asyncio.sleep(3.0)
                st = proc_status(opid)
                history["rss"], history["hwm"] = st["VmRSS"] / 1024, st["VmHWM"] / 1024
                history["seconds"] = took
                t0 = time.monotonic()
                stopped = (await api.get(f"/v1/clusters/{env.cluster}/tasks",
                                         params={"desiredStatus": "STOPPED"})).json()["tasks"]
                history["list_seconds"] = time.monotonic() - t0
                history["kept"] = len(stopped)
                del stopped
                st = proc_status(opid)
                history["rss_listed"], history["hwm_listed"] = st["VmRSS"] / 1024, st["VmHWM"] / 1024
                log(f"  with {history['kept']:.0f} stopped tasks kept: {n} RUNNING after {took:.2f}s; orchestrator "
                    f"rss {history['rss']:.0f} MB (peak {history['hwm']:.0f}); listing the stopped ones took "
                    f"{history['list_seconds']:.1f}s, rss after {history['rss_listed']:.0f} MB")

            await one_round(api, r, max(sizes), measure=False, before_delete=with_history)

    asyncio.run(rounds())
    results = {n: median(v) for n, v in runs.items()}
    cpu_largest = median(cpu_runs)
    for name, p in env.agents.items():
        if p.popen.poll() is not None:
            raise CannotMeasure(f"hollow agent process {name} exited during the run")
    st = proc_status(opid)
    big, small = max(sizes), min(sizes)
    bench.figure("nodes", args.nodes)
    bench.figure("store", args.store)
    for n in sizes:
        bench.figure(f"seconds_{n}", results[n])
    bench.figure(f"seconds_{big}_runs", " ".join(f"{x:.2f}" for x in runs[big]))
    bench.figure("placements_per_second", big / results[big])
    if small != big:
        bench.figure(f"growth_{big // 1000}k_vs_{small // 1000}k", results[big] / results[small] / (big / small))
    bench.figure("orchestrator_peak_rss_mb", steady["hwm"])
    bench.figure("orchestrator_tasks_kept_then", steady["kept"])
    bench.figure("orchestrator_peak_rss_mb_end", st["VmHWM"] / 1024)
    bench.figure("orchestrator_cpu_seconds_largest", cpu_largest)
    bench.figure("orchestrator_steady_cpu_percent", steady["cpu"])
    # Issue 16: no healthy node may be declared lost under this load (light heartbeats, 2 missed).
    bench.figure("false_node_losses", int(env.metric('dockyard_tasks_stopped_total{reason="node_lost"}')))
    log_text = env.orchestrator.log.read_text(errors="replace") if env.orchestrator else ""
    bench.figure("heartbeat_timeouts", log_text.count("node heartbeat timeout"))
    if history:
        bench.figure("history_stopped_tasks_kept", history["kept"])
        bench.figure(f"history_seconds_{big}", history["seconds"])
        bench.figure("history_placements_per_second", big / history["seconds"])
        bench.figure("history_orchestrator_rss_mb", history["rss"])
        bench.figure("history_orchestrator_peak_rss_mb", history["hwm"])
        bench.figure("history_list_stopped_seconds", history["list_seconds"])
        bench.figure("history_orchestrator_rss_mb_after_list", history["rss_listed"])
        bench.figure("history_orchestrator_peak_rss_mb_after_list", history["hwm_listed"])


if __name__ == "__main__":
    main(run, "scale")
