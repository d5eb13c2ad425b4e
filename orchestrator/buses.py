"""The orchestrator on several brokers at once (a broker pair, docs/high-availability.md).

Agents use one broker at a time and move to the next when theirs is gone; the orchestrator keeps a
:class:`orchestrator.bus.Bus` on every broker, publishes each desired document on all of them and hears every
agent wherever it is (on one broker only, an agent that moved would look lost and its tasks be duplicated).

Node liveness is judged through a working broker session (core.nodes). When one broker's session ends while
another still works, the controller is told of a session end and a new start at once: the nodes that were on the
lost broker get the reconnect window of a new session to reach another, instead of being declared lost after
--node-lost-seconds.
"""
from __future__ import annotations

import asyncio

from orchestrator.bus import Bus


class _Sessions:
    """The controller as each bus sees it: the broker-session calls merged over all buses, the rest passed on."""

    def __init__(self, controller, count: int) -> None:
        self._ctl = controller
        self._up: set[int] = set()
        self._count = count

    def of(self, index: int):
        sessions = self

        class View:
            def on_broker_connected(self, now: float) -> None:
                sessions._connected(index, now)

            def on_broker_disconnected(self, now: float) -> None:
                sessions._disconnected(index, now)

            def __getattr__(self, name: str):
                return getattr(sessions._ctl, name)
        return View()

    def _connected(self, index: int, now: float) -> None:
        self._up.add(index)
        if len(self._up) == 1:
            self._ctl.on_broker_connected(now)

    def _disconnected(self, index: int, now: float) -> None:
        was = index in self._up
        self._up.discard(index)
        if not self._up:
            self._ctl.on_broker_disconnected(now)
        elif was:  # one broker lost, another works: a new session for the nodes that were on the lost one
            self._ctl.on_broker_disconnected(now)
            self._ctl.on_broker_connected(now)


class Buses:
    """The :class:`Bus` interface the daemon uses, over one bus per broker URL."""

    def __init__(self, urls: list[str], controller, **kwargs) -> None:
        sessions = _Sessions(controller, len(urls))
        self.buses = [Bus(url, sessions.of(i), **kwargs) for i, url in enumerate(urls)]
        self.connected = asyncio.Event()  # any broker

    async def publish(self, doc) -> None:
        await asyncio.gather(*(b.publish(doc) for b in self.buses))

    async def forget_node(self, cluster: str, node_id: str) -> None:
        await asyncio.gather(*(b.forget_node(cluster, node_id) for b in self.buses))

    async def run(self, stop: asyncio.Event) -> None:
        async def watch() -> None:
            while not stop.is_set():
                if any(b.connected.is_set() for b in self.buses):
                    self.connected.set()
                else:
                    self.connected.clear()
                await asyncio.sleep(0.1)
        await asyncio.gather(watch(), *(b.run(stop) for b in self.buses))
