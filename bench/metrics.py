#!/usr/bin/env python3
"""Metrics: the orchestrator's /metrics scrape at scale, in process (no broker, no engine).

    .venv/bin/python bench/metrics.py [--nodes 1000] [--tasks 10000] [--services 100] [--runs 20]

A State with --nodes connected nodes, --services services and --tasks RUNNING tasks spread over
them, every task with a usage sample (so the per-service utilization gauges are computed too),
and the API's /metrics registry (orchestrator.metrics_collector.registry_for: the process's
instruments plus the scrape-time state collector). Times generate_latest() --runs times after
one warm-up and prints the median and the worst, and the body's size.

Peer in the same run: the same number of samples held in plain prometheus-client Gauges
(a registry with one labelled Gauge per metric, values set beforehand): what an exporter that
kept a Python object per series would pay at scrape time alone, before keeping them up to date.

Figures: scrape_p50_s (target <= 0.2), scrape_max_s, body_bytes, series, gauge_peer_p50_s,
scrape/gauge_peer.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, Gauge, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from dockyard.wire import NodeResources, TaskUsage  # noqa: E402
from orchestrator.metrics_collector import StateCollector, registry_for  # noqa: E402
from orchestrator.models import Node, Service, ServiceSpec, Task  # noqa: E402
from orchestrator.state import State  # noqa: E402
from orchestrator.usage import UsageBook  # noqa: E402


def build(nodes: int, tasks: int, services: int) -> tuple[State, UsageBook]:
    st, book, now = State(), UsageBook(), time.time()
    for n in range(nodes):
        st.put_node(Node(cluster="bench", nodeId=f"n{n:04d}", connected=True, statusInterval=5.0,
                         resources=NodeResources(cpu=4096, memory=16384)))
    for s in range(services):
        st.put_service(Service(cluster="bench", serviceName=f"svc{s:03d}",
                               spec=ServiceSpec(serviceName=f"svc{s:03d}", taskDefinition="web",
                                                desiredCount=tasks // services)))
    per_node: dict[str, list[TaskUsage]] = {}
    for i in range(tasks):
        node = f"n{i % nodes:04d}"
        t = Task(taskId=f"{i:032x}", cluster="bench", taskDefinition="web:1", family="web", revision=1,
                 group="g", serviceName=f"svc{i % services:03d}", nodeId=node, lastStatus="RUNNING",
                 cpu=256, memory=512)
        st.put_task(t)
        per_node.setdefault(node, []).append(TaskUsage(taskId=t.taskId, cpu=100.0, memory=100 << 20))
    for node, usage in per_node.items():
        book.record("bench", node, usage, now)
    return st, book


def gauge_peer(families) -> CollectorRegistry:
    reg = CollectorRegistry()
    for fam in families:
        if not fam.samples:
            continue
        g = Gauge(fam.name, fam.documentation or "x", list(fam.samples[0].labels), registry=reg)
        for s in fam.samples:
            g.labels(**s.labels).set(s.value)
    return reg


def timed(reg, runs: int) -> tuple[list[float], bytes]:
    body = generate_latest(reg)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        body = generate_latest(reg)
        times.append(time.perf_counter() - t0)
    return times, body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    st, book = build(a.nodes, a.tasks, a.services)
    times, body = timed(registry_for(st, book), a.runs)
    state_fams = list(text_string_to_metric_families(generate_latest(_Only(StateCollector(st, book))).decode()))
    series = sum(len(f.samples) for f in state_fams)
    peer, _ = timed(gauge_peer(state_fams), a.runs)
    p50, peer50 = statistics.median(times), statistics.median(peer)
    print(f"nodes={a.nodes} tasks={a.tasks} services={a.services} runs={a.runs}")
    print(f"scrape_p50_s={p50:.4f} scrape_max_s={max(times):.4f} body_bytes={len(body)} series={series}")
    print(f"gauge_peer_p50_s={peer50:.4f} scrape/gauge_peer={p50 / peer50:.2f}")


class _Only:
    def __init__(self, c) -> None:
        self.c = c

    def collect(self):
        return self.c.collect()


if __name__ == "__main__":
    main()
