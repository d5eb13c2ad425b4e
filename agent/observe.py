"""What the agent shows of its node: container usage samples, its ``/metrics`` endpoint, and the
compact per-task usage it sends in its status stream.

Sampling happens at the status tick (the agent's one timer): each tick reads every running
container's cgroup files (agent.usage), turns the difference to the previous sample into a cpu
rate, and keeps the result for the next snapshot and for scrapes (a scrape reads no file).
The metrics server is aiohttp in the agent's event loop (the agent does not depend on
FastAPI/uvicorn).
"""
from __future__ import annotations

import platform
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import Metric

from agent.usage import Sample, UsageSampler
from dockyard import __version__
from dockyard.wire import TaskUsage

AGENT_INFO = Gauge("dockyard_agent_build_info", "dockyard agent build: always 1", ["version", "python"])
AGENT_INFO.labels(version=__version__, python=platform.python_version()).set(1)
SAMPLE_SECONDS = Histogram("dockyard_agent_usage_sample_seconds", "Duration of one usage sample of all containers",
                           buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
SAMPLED = Counter("dockyard_agent_usage_samples_total", "Container usage samples taken")
# The agent's own bus traffic (agent.reporter counts through these).
STATUS_SENT = Counter("dockyard_agent_status_messages_total", "Status messages published", ["kind"])
STATUS_SENT_BYTES = Counter("dockyard_agent_status_sent_bytes_total", "Status message bytes published")


def task_usage(now: Mapping[str, Sample], before: Mapping[str, Sample],
               reuse: Mapping[str, TaskUsage] | None = None) -> list[TaskUsage]:
    """Per task: cpu units used (1024 per core) over the interval between the two samples of each
    of its containers, working-set memory and the containers' memory limits. A container without an
    earlier sample (just started) counts no cpu yet; a task none of whose containers has one is left out.
    ``reuse``: the last result by task; an entry with the same values is returned again, not rebuilt
    (an idle task's usage does not change from one sample to the next)."""
    acc: dict[str, list[float]] = {}
    for cid, s in now.items():
        task = s.labels[2]
        a = acc.setdefault(task, [0.0, 0.0, 0.0, 0.0])  # cpu units, rated containers, memory, limit
        prev = before.get(cid)
        if prev is s:  # the same sample again: its cpu counter did not move
            a[1] += 1
        elif prev is not None and s.at > prev.at and s.usage.cpu_seconds >= prev.usage.cpu_seconds:
            a[0] += (s.usage.cpu_seconds - prev.usage.cpu_seconds) / (s.at - prev.at) * 1024
            a[1] += 1
        a[2] += s.usage.working_set
        a[3] += s.usage.memory_limit
    out: list[TaskUsage] = []
    old = reuse or {}
    for t, a in sorted(acc.items()):
        if not a[1]:
            continue
        cpu, mem, limit = round(a[0], 1), int(a[2]), int(a[3])
        u = old.get(t)
        if u is None or u.cpu != cpu or u.memory != mem or u.memoryLimit != limit:
            # model_construct: the fields are a float and ints made here (validating 50 a tick was a tenth of a sample).
            u = TaskUsage.model_construct(taskId=t, cpu=cpu, memory=mem, memoryLimit=limit)
        out.append(u)
    return out


class Observer:
    """One agent's usage sampling and metrics endpoint (Docker runtime only)."""

    def __init__(self, docker: Any, log: Any, listen: str | None) -> None:
        # Without a /metrics endpoint only the status stream's cpu and memory are read (agent.usage.OpenFiles).
        self.sampler = UsageSampler(docker, log, lean=not listen)
        self.log, self.listen = log, listen
        self.usage: list[TaskUsage] = []  # the latest per-task usage, sent with status snapshots
        self._runner: web.AppRunner | None = None
        self.endpoint: str | None = None  # host:port actually served

    async def sample(self, containers: list[Any], services: Mapping[str, str | None]) -> None:
        before = self.sampler.last
        with SAMPLE_SECONDS.time():
            now = await self.sampler.sample(containers, services)
        SAMPLED.inc(len(now))
        self.usage = task_usage(now, before, {u.taskId: u for u in self.usage})

    @staticmethod
    def sent(kind: str, size: int) -> None:
        STATUS_SENT.labels(kind=kind).inc()
        STATUS_SENT_BYTES.inc(size)

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from self.sampler.collect()

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> bool:
        """Serve /metrics on ``listen`` (HOST:PORT); False (logged) when it cannot."""
        if not self.listen:
            return False
        host, _, port = self.listen.rpartition(":")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host or "0.0.0.0", int(port))
            await site.start()
        except (OSError, ValueError) as e:
            await runner.cleanup()
            self.log.error("metrics endpoint disabled: cannot listen", listen=self.listen, error=str(e),
                           hint="choose another --metrics-listen")
            return False
        self._runner = runner
        sock = site._server.sockets[0] if site._server and site._server.sockets else None  # type: ignore[union-attr,attr-defined]
        bound = sock.getsockname() if sock is not None else (host, int(port))
        self.endpoint = f"{bound[0]}:{bound[1]}"
        self.log.info("metrics endpoint listening", listen=self.endpoint)
        return True

    def advertised(self, address: str | None) -> str | None:
        """The endpoint as others reach it: a wildcard bind is advertised on the node's address."""
        if self.endpoint is None:
            return None
        host, _, port = self.endpoint.rpartition(":")
        if host in ("0.0.0.0", "::", "") and address:
            host = address
        return f"{host}:{port}"

    async def close(self) -> None:
        self.sampler.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
