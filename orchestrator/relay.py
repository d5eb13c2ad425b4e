"""The orchestrator's side of request/response (logs, exec) over the bus's MQTT client.

:meth:`Relay.open` publishes a request on the node's ``requests`` topic with an MQTT 5 response topic
of this orchestrator's own (``.../nodes/<node>/responses/<client id>``) and a fresh correlation id,
and returns a :class:`Call`: an async iterator of :class:`~dockyard.wire_rr.Chunk` / ``End``. The
Call acknowledges what its reader consumed (credit), pings while open, and cancels the request when
closed early, so the agent never sends faster than the reader reads. Its queue holds at most the
request's window (the agent's bound) plus a margin; a reader that stops reading stops the credit and
the agent ends the request after ``IDLE_SECONDS``.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from dockyard import log as dlog
from dockyard.wire import PROTOCOL
from dockyard.wire_rr import (
    PING_SECONDS,
    RESPONSE,
    Cancel,
    Chunk,
    Credit,
    End,
    ExecRequest,
    LogsRequest,
    requests_topic,
    responses_topic,
)

FIRST_ANSWER_SECONDS = 10.0  # a node that says nothing this long after a request is gone (or an older agent)
IDLE_SECONDS = 60.0  # between two messages of an open, not-following request


class RelayError(Exception):
    """The request could not be carried: no broker connection, or the node did not answer."""


class Call:
    """One open request: iterate for its messages (ends after the End)."""

    def __init__(self, relay: Relay, cluster: str, node_id: str, corr: bytes, window: int, follow: bool) -> None:
        self.relay, self.cluster, self.node_id, self.corr = relay, cluster, node_id, corr
        self.queue: asyncio.Queue[Chunk | End] = asyncio.Queue(maxsize=window + 8)
        self.window, self.follow = window, follow
        self.received = -1
        self.acked = -1
        self.ended = False
        self.overflow = False
        self._pinger: asyncio.Task[None] | None = None

    def _put(self, msg: Chunk | End) -> None:
        if self.ended:
            return
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:  # the agent ignored the window: end it rather than buffer without bound
            self.overflow = True

    async def _credit(self, ack: int) -> None:
        self.acked = ack
        await self.relay._publish_request(self.cluster, self.node_id, self.corr, Credit(ack=ack).model_dump_json())

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(PING_SECONDS)
            try:
                await self._credit(self.received)
            except Exception:  # noqa: BLE001 - the next ping retries; the agent's idle timer is the backstop
                pass

    async def messages(self) -> AsyncGenerator[Chunk | End, None]:
        """The node's messages up to its End (use with contextlib.aclosing: closing early cancels)."""
        self._pinger = asyncio.get_running_loop().create_task(self._ping())
        first = True
        try:
            while True:
                if self.overflow:
                    raise RelayError("the node sent beyond its window; request ended")
                timeout = FIRST_ANSWER_SECONDS if first else (None if self.follow else IDLE_SECONDS)
                try:
                    msg = await asyncio.wait_for(self.queue.get(), timeout)
                except TimeoutError:
                    if first:
                        raise RelayError(f"node {self.node_id} did not answer within {FIRST_ANSWER_SECONDS:g} s "
                                         "(disconnected, or an agent without logs/exec support)") from None
                    raise RelayError(f"node {self.node_id} went silent for {IDLE_SECONDS:g} s") from None
                first = False
                self.received = max(self.received, msg.seq)
                yield msg
                if isinstance(msg, End):
                    self.ended = True
                    return
                if self.received - self.acked >= max(1, self.window // 2):
                    await self._credit(self.received)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        self.relay.calls.pop(self.corr, None)
        if not self.ended:
            self.ended = True
            try:
                await self.relay._publish_request(self.cluster, self.node_id, self.corr, Cancel().model_dump_json())
            except Exception:  # noqa: BLE001 - the agent's idle timer ends it anyway
                pass


class Relay:
    """Requests to agents through the bus's client (``bus.client``; subscribed by :meth:`on_connect`). On a
    broker pair (orchestrator.buses.Buses) a request goes out on every connected broker (the agent is on one)
    and every bus routes the responses here."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.buses = list(getattr(bus, "buses", [bus]))
        for b in self.buses:
            b.relay = self
        self.requester = self.buses[0].client_id
        self.subscription = f"{PROTOCOL}/+/nodes/+/responses/{self.requester}"
        self.calls: dict[bytes, Call] = {}
        self.log = dlog.get("relay")

    async def on_connect(self, client: Any) -> None:
        await client.subscribe(self.subscription, qos=1)

    def owns(self, topic: str) -> bool:
        return topic.endswith(f"/responses/{self.requester}")

    def on_message(self, payload: Any, properties: Any) -> None:
        corr = getattr(properties, "CorrelationData", None)
        call = self.calls.get(bytes(corr)) if corr else None
        if call is None:
            return  # a request already closed
        try:
            call._put(RESPONSE.validate_json(payload))
        except ValidationError as e:
            self.log.warning("dropping malformed response", node=call.node_id, error=str(e).splitlines()[0])

    async def _publish_request(self, cluster: str, node_id: str, corr: bytes, body: str,
                               response_topic: str | None = None) -> None:
        clients = [b.client for b in self.buses if b.client is not None and b.connected.is_set()]
        if not clients:
            raise RelayError("the orchestrator has no broker connection now; retry")
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = corr
        if response_topic:
            props.ResponseTopic = response_topic
        for client in clients:
            await client.publish(requests_topic(cluster, node_id), body, qos=1, properties=props)

    async def open(self, cluster: str, node_id: str, req: LogsRequest | ExecRequest) -> Call:
        corr = uuid.uuid4().hex.encode()
        call = Call(self, cluster, node_id, corr, req.window, isinstance(req, LogsRequest) and req.follow)
        self.calls[corr] = call
        try:
            await self._publish_request(cluster, node_id, corr, req.model_dump_json(),
                                        responses_topic(cluster, node_id, self.requester))
        except Exception:
            self.calls.pop(corr, None)
            raise
        return call
