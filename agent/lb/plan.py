"""A load-balancer node's decisions, pure: HAProxy's live servers (from ``show stat``) against the
desired targets -> runtime-API commands, and the targets' health as ELB words it.

Adding a target: ``add server ... disabled`` (an added server counts as UP before its first
check), ``enable health``, then in one command line ``set server ... state ready; set server
... health down`` (health down does not stick while in maintenance): it takes traffic only once
``rise`` checks passed. Draining: ``state drain`` (no new requests,
in-flight ones finish). Removing: ``state maint``, then ``del server`` once it has no sessions
(HAProxy refuses while any connection is attached; the next pass retries).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.lb.config import backend_name, check_args
from dockyard.lb import (
    REASON_CODE_MISMATCH,
    REASON_DRAINING,
    REASON_FAILED,
    REASON_INITIAL_FAILED,
    REASON_REGISTRATION,
    REASON_TIMEOUT,
    LbDesired,
    TargetReport,
)


@dataclass(frozen=True)
class LiveServer:
    backend: str
    name: str
    status: str  # UP, DOWN, DRAIN, MAINT, "UP 1/2", "DOWN 1/5", "no check", ...
    sessions: int
    check_failures: int
    check_status: str  # L7OK, L7STS, L4CON, L4TOUT, L7TOUT, INI, ...
    requests: int = 0  # cumulative: HTTP requests (req_tot), else sessions (stot); for ALBRequestCountPerTarget

    @property
    def state(self) -> str:
        return self.status.split(" ")[0]


def parse_stat(text: str) -> dict[tuple[str, str], LiveServer]:
    """``show stat -1 4 -1`` (servers only) CSV -> (backend, server) -> LiveServer."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    rows = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    out = {}
    for r in rows:
        if not r.get("svname") or r["svname"] in ("FRONTEND", "BACKEND"):
            continue
        out[(r["pxname"], r["svname"])] = LiveServer(
            backend=r["pxname"], name=r["svname"], status=r.get("status") or "",
            sessions=int(r.get("scur") or 0), check_failures=int(r.get("chkfail") or 0),
            check_status=(r.get("check_status") or "").lstrip("* "),
            requests=int(r.get("req_tot") or r.get("stot") or 0))
    return out


def frontend_ports(text: str) -> set[int]:
    """``show stat -1 1 -1`` (frontends) CSV -> the listener ports HAProxy serves (frontends
    ``ls_<port>``, agent.lb.config.frontend_name)."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        return set()
    rows = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    return {int(r["pxname"][3:]) for r in rows
            if r.get("svname") == "FRONTEND" and (r.get("pxname") or "").startswith("ls_") and r["pxname"][3:].isdigit()}


def commands(desired: LbDesired, live: Mapping[tuple[str, str], LiveServer]) -> list[str]:
    """Runtime-API commands that move HAProxy's servers towards ``desired`` (one pass's worth)."""
    out: list[str] = []
    want: dict[tuple[str, str], tuple[object, object]] = {}
    for tg in desired.targetGroups:
        be = backend_name(tg.name)
        for t in tg.targets:
            want[(be, t.id)] = (tg, t)
            cur = live.get((be, t.id))
            if cur is None:
                srv = f"{be}/{t.id}"
                # One command line, run in one go: out of maintenance and forced down together, so it
                # never counts as UP before a check (health down does not stick while in maint).
                out += [f"add server {srv} {t.address}:{t.port} {check_args(tg)} disabled", f"enable health {srv}",
                        f"set server {srv} state {'drain' if t.state == 'draining' else 'ready'}; "
                        f"set server {srv} health down"]
            elif t.state == "draining" and cur.state != "DRAIN":
                out.append(f"set server {be}/{t.id} state drain")
            elif t.state == "active" and cur.state in ("DRAIN", "MAINT"):
                out.append(f"set server {be}/{t.id} state ready")
    backends = {backend_name(tg.name) for tg in desired.targetGroups}
    for key, cur in sorted(live.items()):
        if key in want or cur.backend not in backends:
            continue  # a backend leaving goes with the next reload
        srv = f"{cur.backend}/{cur.name}"
        if cur.state != "MAINT":
            out.append(f"set server {srv} state maint")
        elif cur.sessions == 0:
            out.append(f"del server {srv}")
    return out


def _failure_reason(check_status: str) -> str:
    if check_status == "L7STS":
        return REASON_CODE_MISMATCH
    if check_status.endswith("TOUT"):
        return REASON_TIMEOUT
    return REASON_FAILED


def reports(desired: LbDesired, live: Mapping[tuple[str, str], LiveServer],
            seen_healthy: Iterable[tuple[str, str]]) -> list[TargetReport]:
    """Each desired target's health: initial (not added, or not yet through its first checks),
    healthy, unhealthy (once healthy, or failed ``fall`` checks from the start), draining."""
    healthy_before = set(seen_healthy)
    out = []
    for tg in desired.targetGroups:
        be = backend_name(tg.name)
        for t in tg.targets:
            cur = live.get((be, t.id))
            key = (tg.name, t.id)
            if cur is None:
                out.append(TargetReport(targetGroup=tg.name, id=t.id, taskId=t.taskId, health="initial",
                                        reason=REASON_REGISTRATION))
            elif t.state == "draining" or cur.state == "DRAIN":
                out.append(TargetReport(targetGroup=tg.name, id=t.id, taskId=t.taskId, health="draining",
                                        reason=REASON_DRAINING, sessions=cur.sessions, requests=cur.requests))
            elif cur.state == "UP":
                out.append(TargetReport(targetGroup=tg.name, id=t.id, taskId=t.taskId, health="healthy",
                                        sessions=cur.sessions, requests=cur.requests))
            elif key in healthy_before or cur.check_failures >= tg.healthCheck.unhealthyThresholdCount:
                out.append(TargetReport(targetGroup=tg.name, id=t.id, taskId=t.taskId, health="unhealthy",
                                        reason=_failure_reason(cur.check_status), sessions=cur.sessions, requests=cur.requests))
            else:
                out.append(TargetReport(targetGroup=tg.name, id=t.id, taskId=t.taskId, health="initial",
                                        reason=REASON_INITIAL_FAILED if cur.check_failures else REASON_REGISTRATION,
                                        sessions=cur.sessions, requests=cur.requests))
    return out
