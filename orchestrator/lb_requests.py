"""Requests per target, from the cumulative counters load-balancer nodes report for each target
(HAProxy's ``show stat``: req_tot, else stot), for auto scaling's ALBRequestCountPerTarget.

ELB's RequestCountPerTarget is the target group's request count over a minute divided by its
healthy targets; here it is the rate over the last ``window`` seconds (default 15 s, so scaling
reacts in seconds) expressed per minute, over the service's ready tasks. A counter that went
down (HAProxy restarted, the server re-added) counts from zero.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from dockyard.lb import TargetReport
from orchestrator.core.autoscaling import Reading, average_reading
from orchestrator.models import Service

WINDOW = 15.0


class RequestBook:
    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        # (cluster, LB node, target group, task id) -> (time, cumulative count) samples, oldest first
        self.samples: dict[tuple[str, str, str, str], deque[tuple[float, int]]] = {}

    def record(self, cluster: str, node_id: str, targets: Sequence[TargetReport], now: float) -> None:
        for t in targets:
            q = self.samples.setdefault((cluster, node_id, t.targetGroup, t.taskId), deque())
            q.append((now, t.requests))
            while len(q) > 2 and now - q[1][0] >= self.window:
                q.popleft()
        stale = [k for k, q in self.samples.items() if k[0] == cluster and k[1] == node_id and now - q[-1][0] > 4 * self.window]
        for k in stale:
            del self.samples[k]

    def rate(self, cluster: str, group: str | None, task_id: str, now: float) -> float | None:
        """Requests per minute to one task over the window, summed over the LB nodes (None: no counter)."""
        total, found = 0.0, False
        for (c, _, g, tid), q in self.samples.items():
            if c != cluster or tid != task_id or (group is not None and g != group) or now - q[-1][0] > 2 * self.window:
                continue
            if len(q) < 2:
                continue
            (t0, n0), (t1, n1) = q[0], q[-1]
            if t1 <= t0:
                continue
            found = True
            total += (n1 - n0 if n1 >= n0 else n1) / (t1 - t0) * 60.0
        return total if found else None

    def per_target(self, s: Service, group: str | None, ready: Sequence[str], now: float, starting: int = 0) -> Reading:
        """The service's requests per target per minute: the group's requests over its ready tasks (one the
        load balancer does not count yet, e.g. not yet healthy there, counts as 0 and vetoes a scale-in)."""
        groups = [lb.target_group for lb in s.spec.loadBalancers]
        group = group or (groups[0] if groups else None)
        rates = {tid: self.rate(s.cluster, group, tid, now) for tid in ready}
        return average_reading(rates, ready, starting)
