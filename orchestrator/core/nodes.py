"""Node liveness: which nodes are disconnected, and whose tasks are lost now (pure).

The orchestrator sees a node only through its own broker session, so it judges liveness only
from what that session showed it:

* **Broker outage.** While the orchestrator has no broker session, no node times out and none
  is lost. When a session starts at ``R`` (first connect, or reconnect), a node not seen since
  counts as last seen at ``R``, and a node disconnected before ``R`` (a Will the broker
  published as it shut down, a retained ``offline``) is lost no earlier than
  ``R + reconnect window``: every node gets a fair chance to show itself again (its retained
  presence, or its agent's reconnect, capped at 10 s by the agents' backoff, then a snapshot).
  The window is the node's heartbeat timeout, at least ``RECONNECT_WINDOW_MIN``.
  A node's heartbeat timeout also needs evidence that the session worked after the deadline
  (:attr:`BrokerView.heard_at`): a control plane cut off from the broker sees every node fall
  silent before its own MQTT keepalive notices.
* **Mass loss**, per cluster of more than one node. When every node is disconnected, none is
  declared lost: the replacements have nowhere to go, and such a view is almost always the
  control plane's own fault. When more than ``MassLossPolicy.fraction`` of the nodes are
  disconnected (Kubernetes' unhealthyZoneThreshold, 0.55), the nodes that are due are released
  oldest-disconnected first, one per ``MassLossPolicy.interval`` seconds counted from the
  cluster's previous release (``interval`` 0: none while it lasts), like Kubernetes' node
  lifecycle controller slows evictions in a partially disrupted zone.

A node alone in its trouble is lost ``node_lost_seconds`` after it went offline (Will), or at
its heartbeat timeout of silence: ``max(node_lost_seconds, 2 x heartbeatInterval)`` for a node
whose light heartbeats (the ``heartbeat`` topic, every 1.5 s by default) this boot has been
heard, else ``max(node_lost_seconds, 3 x statusInterval)`` (its snapshots: an older agent, or
one whose beats the broker's ACL drops). A host that loses power or its link closes no
connection, so no Will comes at once; the beats make that silent loss ~3 s, not 15 s. Two missed
beats, not three: a beat is QoS 0 on a TCP session, so it is late, never lost, while the session
lives, and the orchestrator's own lag is covered by :attr:`BrokerView.heard_at`.
No I/O and no clock: the controller passes ``now`` and applies the :class:`NodesPlan`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

# The agents reconnect with a backoff capped at 10 s (dockyard.mqtt.Backoff): after a long broker
# outage an agent may come back 10 s after the broker, plus its connect and presence. Nodes get
# at least this long after the orchestrator's own (re)connect, whatever their status interval.
RECONNECT_WINDOW_MIN = 15.0
MISSED_HEARTBEATS = 3  # status snapshots
MISSED_BEATS = 2  # light heartbeats (see the module docstring)


@dataclass(frozen=True, slots=True)
class NodeLiveness:
    """What liveness needs of a node record (orchestrator.models.Node)."""

    cluster: str
    node_id: str
    connected: bool
    last_seen_at: float
    disconnected_at: float | None
    status_interval: float
    active_tasks: int  # tasks not STOPPED on the node: only a node with some can be lost
    heartbeat_interval: float | None = None  # set once a light heartbeat of this boot was heard


@dataclass(frozen=True, slots=True)
class BrokerView:
    """The orchestrator's own broker session: ``connected_since`` is when the current one began
    (or, with no bus, when the controller started); ``heard_at`` is when it last delivered the
    orchestrator's own probe (None: not tracked), as the time the probe was *published*: every
    message the broker had before it was handled by then. A half-open session (the control plane cut off,
    not yet noticed by the MQTT keepalive, up to 2 keepalives) stops delivering it, so a silent
    node is timed out only once the session has proven itself working after the node's deadline."""

    connected: bool
    connected_since: float | None
    heard_at: float | None = None


@dataclass(frozen=True, slots=True)
class MassLossPolicy:
    fraction: float = 0.55  # more than this share of a cluster's nodes disconnected is a mass loss
    interval: float = 30.0  # then one node's tasks replaced per interval; 0 = none until it ends


@dataclass(frozen=True, slots=True)
class TimedOut:
    """A connected node silent for longer than its heartbeat timeout: mark it disconnected."""

    cluster: str
    node_id: str
    disconnected_at: float


@dataclass(frozen=True, slots=True)
class Lost:
    """A node whose tasks are to be stopped now ("Node X lost") and replaced elsewhere."""

    cluster: str
    node_id: str
    since: float


@dataclass(frozen=True, slots=True)
class Hold:
    """A cluster whose due node losses are held back by the mass-loss rule."""

    cluster: str
    mode: Literal["throttled", "paused", "all_disconnected"]
    down: int
    total: int
    held: tuple[str, ...]  # nodes due and not released, oldest-disconnected first
    next_release_at: float | None  # when the next one is released (None: not while this lasts)
    message: str

    @property
    def signature(self) -> tuple:
        """Changes when the situation does (not with the clock): one event per change."""
        return (self.mode, self.held, self.next_release_at)


@dataclass(frozen=True, slots=True)
class NodesPlan:
    timed_out: tuple[TimedOut, ...] = ()
    lost: tuple[Lost, ...] = ()
    holds: tuple[Hold, ...] = ()
    last_release: Mapping[str, float] = field(default_factory=dict)  # per cluster, for the next call
    wake_at: float | None = None


def heartbeat_timeout(node: NodeLiveness, node_lost_seconds: float) -> float:
    if node.heartbeat_interval:
        return max(node_lost_seconds, MISSED_BEATS * node.heartbeat_interval)
    return max(node_lost_seconds, MISSED_HEARTBEATS * node.status_interval)


def reconnect_window(node: NodeLiveness, node_lost_seconds: float) -> float:
    return max(heartbeat_timeout(node, node_lost_seconds), RECONNECT_WINDOW_MIN)


def plan_nodes(nodes: Iterable[NodeLiveness], now: float, broker: BrokerView, node_lost_seconds: float,
               policy: MassLossPolicy = MassLossPolicy(),
               last_release: Mapping[str, float] | None = None) -> NodesPlan:
    """Time out silent nodes, declare lost the nodes disconnected for too long, within the
    broker-outage and mass-loss rules (module docstring). ``last_release``: per cluster, when
    the tasks of a node were last declared lost (the plan returns the updated mapping)."""
    releases = dict(last_release or {})
    if not broker.connected:
        return NodesPlan(last_release=releases)  # nothing judged; the bus wakes us on reconnect
    session = broker.connected_since if broker.connected_since is not None else now
    wake: list[float] = []
    timed_out: list[TimedOut] = []
    by_cluster: dict[str, list[tuple[NodeLiveness, float | None]]] = {}  # node, since (None: connected)
    for n in nodes:
        since: float | None = None
        if n.connected:
            seen = max(n.last_seen_at, session)
            deadline = seen + heartbeat_timeout(n, node_lost_seconds)
            if n.last_seen_at and now > deadline and (broker.heard_at is None or broker.heard_at >= deadline):
                timed_out.append(TimedOut(n.cluster, n.node_id, seen))
                since = seen
            elif n.last_seen_at:
                wake.append(deadline)
        else:
            since = n.disconnected_at or n.last_seen_at or session
        by_cluster.setdefault(n.cluster, []).append((n, since))

    lost: list[Lost] = []
    holds: list[Hold] = []
    for cluster, members in sorted(by_cluster.items()):
        down = [(n, since) for n, since in members if since is not None]
        due: list[tuple[float, str, float]] = []  # (since, node id, due at): oldest first
        for n, since in down:
            if not n.active_tasks:
                continue
            due_at = since + node_lost_seconds
            if n.last_seen_at <= session:  # not seen since this session began: give it a fair chance
                due_at = max(due_at, session + reconnect_window(n, node_lost_seconds))
            if now >= due_at:
                due.append((since, n.node_id, due_at))
            else:
                wake.append(due_at)
        if not due:
            continue
        due.sort()
        total = len(members)
        if total >= 2 and len(down) == total:
            holds.append(_hold(cluster, "all_disconnected", due, len(down), total, None, policy, now))
            continue
        if total < 2 or len(down) / total <= policy.fraction:
            lost += [Lost(cluster, node_id, since) for since, node_id, _ in due]
            releases[cluster] = now
            continue
        if policy.interval <= 0:
            holds.append(_hold(cluster, "paused", due, len(down), total, None, policy, now))
            continue
        previous = releases.get(cluster)
        if previous is None or now >= previous + policy.interval:
            since, node_id, _ = due.pop(0)
            lost.append(Lost(cluster, node_id, since))
            releases[cluster] = previous = now
        if due:
            nxt = previous + policy.interval
            wake.append(nxt)
            holds.append(_hold(cluster, "throttled", due, len(down), total, nxt, policy, now))
    return NodesPlan(timed_out=tuple(timed_out), lost=tuple(lost), holds=tuple(holds), last_release=releases,
                     wake_at=min(wake) if wake else None)


def _hold(cluster: str, mode: str, due: list[tuple[float, str, float]], down: int, total: int,
          next_release_at: float | None, policy: MassLossPolicy, now: float) -> Hold:
    held = tuple(node_id for _, node_id, _ in due)
    head = f"{down} of {total} nodes of cluster {cluster} ({100 * down / total:.0f}%) are disconnected"
    if mode == "all_disconnected":
        message = (f"{head}: no node is declared lost while none is connected (nowhere to place replacements, "
                   f"and most likely the control plane's own view is broken); "
                   f"the tasks of {len(held)} node(s) are kept until nodes reconnect")
    elif mode == "paused":
        message = (f"{head}, above the mass-loss threshold of {100 * policy.fraction:.0f}%: node-lost replacements "
                   f"are paused (mass-loss interval 0) for {len(held)} node(s) until enough nodes reconnect")
    else:
        message = (f"{head}, above the mass-loss threshold of {100 * policy.fraction:.0f}%: node-lost replacements "
                   f"are limited to one node every {policy.interval:g}s; {len(held)} node(s) held back, "
                   f"the next ({held[0]}) in {max(0.0, (next_release_at or now) - now):.0f}s")
    return Hold(cluster, mode, down, total, held, next_release_at, message)  # type: ignore[arg-type]
