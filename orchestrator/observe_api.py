"""The API's views of usage (``dockyard top``) and Prometheus HTTP service discovery.

    GET /v1/clusters/{cluster}/top/tasks      per RUNNING task: cpu units, memory, CPUUtilization, MemoryUtilization
    GET /v1/clusters/{cluster}/top/services   per service: the averages over its sampled RUNNING tasks
    GET /v1/clusters/{cluster}/top/nodes      per node: the sum of its tasks' usage against its registered resources
    GET /v1/prometheus/sd                     Prometheus HTTP SD (orchestrator.sd)
"""
from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from orchestrator import sd
from orchestrator.ops import Ops
from orchestrator.usage import MIB, UsageBook, Utilization, average, service_utilizations


def _util(u: Utilization | None) -> dict[str, Any]:
    if u is None:
        return {"cpuUnits": None, "memoryBytes": None, "CPUUtilization": None, "MemoryUtilization": None,
                "sampledAt": None}
    return {"cpuUnits": u.cpu_units, "memoryBytes": u.memory_bytes, "CPUUtilization": u.cpu_percent,
            "MemoryUtilization": u.memory_percent, "cpuBasis": u.cpu_basis, "memoryBasisBytes": u.memory_basis,
            "sampledAt": u.sampled_at}


def router(ops: Ops, book: UsageBook, self_target: str | None) -> APIRouter:
    st = ops.state
    r = APIRouter()

    @r.get("/v1/clusters/{cluster}/top/tasks")
    async def top_tasks(cluster: str, service: str | None = None) -> dict:
        ops.cluster(cluster)
        now = time.time()
        rows = []
        for t in sorted(st.iter_tasks(cluster, service=service or None, stopped=False), key=lambda t: t.taskId):
            if t.lastStatus != "RUNNING":
                continue
            u = book.task(t, st.nodes.get((cluster, t.nodeId)) if t.nodeId else None, now)
            rows.append({"taskId": t.taskId, "serviceName": t.serviceName, "taskDefinition": t.taskDefinition,
                         "nodeId": t.nodeId, "cpu": t.cpu, "memory": t.memory, **_util(u)})
        return {"tasks": rows}

    @r.get("/v1/clusters/{cluster}/top/services")
    async def top_services(cluster: str) -> dict:
        ops.cluster(cluster)
        now = time.time()
        rows = []
        for s in sorted(st.cluster_services(cluster), key=lambda s: s.serviceName):
            utils = service_utilizations(book, st, cluster, s.serviceName, now)
            avg = average(utils)
            rows.append({"serviceName": s.serviceName, "sampledTasks": len(utils),
                         "runningCount": sum(t.lastStatus == "RUNNING"
                                             for t in st.service_active_tasks(cluster, s.serviceName)),
                         "cpuUnits": round(sum(u.cpu_units for u in utils), 1) if utils else None,
                         "memoryBytes": sum(u.memory_bytes for u in utils) if utils else None,
                         "CPUUtilization": avg[0] if avg else None, "MemoryUtilization": avg[1] if avg else None})
        return {"services": rows}

    @r.get("/v1/clusters/{cluster}/top/nodes")
    async def top_nodes(cluster: str) -> dict:
        ops.cluster(cluster)
        now = time.time()
        rows = []
        for n in sorted(st.cluster_nodes(cluster), key=lambda n: n.nodeId):
            utils = [u for t in st.node_active_tasks(cluster, n.nodeId) if (u := book.task(t, n, now)) is not None]
            cpu = round(sum(u.cpu_units for u in utils), 1) if utils else None
            mem = sum(u.memory_bytes for u in utils) if utils else None
            reg_cpu, reg_mem = n.resources.cpu, n.resources.memory * MIB
            rows.append({"nodeId": n.nodeId, "connected": n.connected, "sampledTasks": len(utils),
                         "cpuRegistered": reg_cpu, "memoryRegisteredBytes": reg_mem, "cpuUnits": cpu, "memoryBytes": mem,
                         "CPUUtilization": round(100.0 * cpu / reg_cpu, 1) if cpu is not None and reg_cpu else None,
                         "MemoryUtilization": round(100.0 * mem / reg_mem, 1) if mem is not None and reg_mem else None})
        return {"nodes": rows}

    @r.get("/v1/prometheus/sd")
    async def prometheus_sd() -> list[dict[str, Any]]:
        return sd.targets(st, self_target)

    return r
