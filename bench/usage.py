#!/usr/bin/env python3
"""Usage sampling: what one sample of N containers costs the agent, cgroup files vs the Docker stats API.

    .venv/bin/python bench/usage.py [--containers 50] [--samples 20] [--interval 5] [--lean] [--gap 0]

Starts --containers idle busybox containers (label ``dockyard-bench-usage=<hex>``, removed at the
end whatever happens), then in this process (the agent's code, agent.usage.UsageSampler):

1. --samples samples of all of them from their cgroup files (the first one, which also finds each
   container's cgroup from its pid, is timed apart);
2. the peer, in the same run: the same containers through the Docker stats API with
   ``stream=false&one-shot=true`` (the fallback), one request per container, all at once (each
   is answered at dockerd's collector's next tick, about 1 s: one after the other, 50 took 50 s).

``--lean``: the sampler as an agent without ``--metrics-listen`` runs it (agent.usage.OpenFiles: no
cpu.stat on v1, no net/dev, memory.stat when due), plus the per-task usage the snapshot sends
(agent.observe.task_usage). ``--gap S``: S seconds between timed samples, so caches are as cold as the
agent's between its status ticks (0: back to back, hot).

CPU is this process's (user+system, time.process_time) per sample; the agent samples once per
status interval, so cpu_percent_at_interval = per-sample CPU / --interval of one core (the
requests' time in dockerd is not counted: it is only larger for the peer).

Figures: files_sample_ms (wall, median), files_sample_cpu_ms, first_sample_ms, stats_api_sample_ms,
stats_api_sample_cpu_ms, files/stats_api (wall), cpu_percent_at_interval.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiodocker  # noqa: E402

from agent.runtime import ActualContainer  # noqa: E402
from agent.usage import UsageSampler, usage_from_stats  # noqa: E402

IMAGE = "dockyard-demo/busybox:latest"


class _Log:
    def warning(self, msg, **kw) -> None:
        print("warning:", msg, kw, file=sys.stderr)

    def debug(self, *a, **kw) -> None:
        pass


async def measure(ids: list[str], samples: int, lean: bool = False, gap: float = 0.0) -> dict[str, float]:
    from agent.observe import task_usage

    docker = aiodocker.Docker()
    try:
        cs = [ActualContainer(id=i, task_id=f"t{n}", container_name="idle", node="bench", state="running")
              for n, i in enumerate(ids)]
        sampler = UsageSampler(docker, _Log(), lean=lean)
        t0 = time.perf_counter()
        got = await sampler.sample(cs, {})
        first = time.perf_counter() - t0
        if len(got) != len(cs) or any(sampler._paths[i][0] is None for i in ids):
            raise SystemExit("cannot measure: not every container's cgroup files were found")
        wall, cpu = [], []
        before, usage = got, []
        for _ in range(samples):
            if gap:
                await asyncio.sleep(gap)
            w, c = time.perf_counter(), time.process_time()
            now = await sampler.sample(cs, {})
            if lean:
                usage = task_usage(now, before, {u.taskId: u for u in usage})
                before = now
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        swall, scpu = [], []
        for _ in range(max(3, samples // 4)):
            w, c = time.perf_counter(), time.process_time()
            answers = await asyncio.gather(*(docker._query_json(f"containers/{i}/stats",
                                                                params={"stream": "false", "one-shot": "true"})
                                             for i in ids))
            for s in answers:
                usage_from_stats(s)
            swall.append(time.perf_counter() - w)
            scpu.append(time.process_time() - c)
        return {"files": statistics.median(wall), "files_cpu": statistics.median(cpu), "first": first,
                "stats": statistics.median(swall), "stats_cpu": statistics.median(scpu)}
    finally:
        await docker.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--lean", action="store_true", help="the sampler of an agent without --metrics-listen")
    ap.add_argument("--gap", type=float, default=0.0, help="seconds between timed samples (cold caches)")
    a = ap.parse_args()
    # SIGTERM (a timeout) must still run the cleanup below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    label = f"dockyard-bench-usage={uuid.uuid4().hex[:8]}"
    ids: list[str] = []
    try:
        for _ in range(a.containers):
            ids.append(subprocess.run(["docker", "run", "-d", "--label", label, "-m", "32m", IMAGE, "sleep", "3600"],
                                      check=True, capture_output=True, text=True).stdout.strip())
        r = asyncio.run(measure(ids, a.samples, a.lean, a.gap))
    finally:
        left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True).stdout.split()
        if left:
            subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
    print(f"containers: {a.containers}")
    print(f"files_sample_ms: {r['files'] * 1e3:.3f}")
    print(f"files_sample_cpu_ms: {r['files_cpu'] * 1e3:.3f}")
    print(f"first_sample_ms: {r['first'] * 1e3:.1f}")
    print(f"stats_api_sample_ms: {r['stats'] * 1e3:.1f}")
    print(f"stats_api_sample_cpu_ms: {r['stats_cpu'] * 1e3:.1f}")
    print(f"files/stats_api: {r['files'] / r['stats']:.3f}")
    print(f"cpu_percent_at_interval: {100 * r['files_cpu'] / a.interval:.3f}")


if __name__ == "__main__":
    main()
