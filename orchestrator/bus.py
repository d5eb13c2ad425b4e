"""The orchestrator's side of the MQTT bus: publish desired documents, receive presence and status.

One client; reconnects with backoff and, on every (re)connect, republishes every node's
current desired document (retained), so a broker restart loses nothing.
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import ValidationError

from dockyard import log as dlog
from dockyard.dynsec import Credentials
from dockyard.mqtt import Backoff, make_client
from dockyard.wire import (
    PROTOCOL,
    DesiredDoc,
    DesiredVersion,
    Presence,
    StatusDoc,
    node_topic,
    parse_topic,
)
from orchestrator import metrics

# A StatusDoc's JSON without its "seq" and "ts" members (pydantic writes the fields in order).
_SEQ_TS = re.compile(rb'"seq":\d+,|,"ts":[-+0-9.eE]+(?=}$)')
_SNAPSHOTS = metrics.STATUS_RECEIVED.labels(kind="snapshot")
# "kind" follows nodeId, bootId and seq at the start of a StatusDoc's JSON.
_SNAPSHOT_KIND = b'"kind":"snapshot"'
_KIND_WITHIN = 1024
# The orchestrator publishes to itself every PROBE_SECONDS: each echo proves the session works
# (a half-open connection delivers nothing; core.nodes times out no node without that proof).
PROBE_SECONDS = 1.0


class Bus:
    def __init__(self, mqtt_url: str, controller, credentials: Credentials | None = None,
                 ca_file: str | None = None) -> None:
        self.url = mqtt_url
        self.credentials, self.ca_file = credentials, ca_file
        self.controller = controller
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.last_docs: dict[tuple[str, str], DesiredDoc] = {}
        self._last_snapshot: dict[tuple[str, str], bytes] = {}  # per node, without seq and ts
        self.log = dlog.get("bus", mqtt=mqtt_url)
        self.client_id = f"dockyard-orchestrator-{uuid.uuid4().hex[:8]}"
        self.probe_topic = f"{PROTOCOL}/_orchestrator/{self.client_id}/probe"

    async def publish(self, doc: DesiredDoc) -> None:
        self.last_docs[(doc.cluster, doc.nodeId)] = doc
        if self.client is None or not self.connected.is_set():
            return  # sent on (re)connect
        try:
            await self.client.publish(node_topic(doc.cluster, doc.nodeId, "desired"), doc.model_dump_json(), qos=1,
                                      retain=True)
            metrics.DESIRED_PUBLISHED.inc()
        except aiomqtt.MqttError as exc:
            self.log.warning("publish failed; will resend on reconnect", error=str(exc))

    async def forget_node(self, cluster: str, node_id: str) -> None:
        """A deleted node: clear its retained desired document and presence (a later start of the orchestrator
        must not register it again from its old ``online``)."""
        self.last_docs.pop((cluster, node_id), None)
        if self.client is None or not self.connected.is_set():
            return
        for leaf in ("desired", "presence"):
            try:
                await self.client.publish(node_topic(cluster, node_id, leaf), b"", qos=1, retain=True)
            except aiomqtt.MqttError as exc:
                self.log.warning("clearing a deleted node's retained topics failed", node=node_id, error=str(exc))

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff()
        # Node liveness is judged only through a working broker session (orchestrator.core.nodes):
        # the controller learns when one begins and ends.
        self.controller.on_broker_disconnected(time.time())
        while not stop.is_set():
            try:
                # One desired document per changed node per pass, all published at once: with paho's
                # default of 20 unacknowledged, 1,000 documents waited for 50 round trips.
                async with make_client(self.url, self.client_id, max_inflight_messages=1000,
                                       credentials=self.credentials, ca_file=self.ca_file) as client:
                    self.client = client
                    await client.subscribe(f"{PROTOCOL}/+/nodes/+/presence", qos=1)
                    await client.subscribe(f"{PROTOCOL}/+/nodes/+/status", qos=1)
                    await client.subscribe(self.probe_topic, qos=0)
                    # Every desired document this client did not publish (noLocal): the retained ones now,
                    # and any another client publishes later (core.fencing: forged or a second orchestrator).
                    await client.subscribe(f"{PROTOCOL}/+/nodes/+/desired", options=SubscribeOptions(qos=1, noLocal=True))
                    self.connected.set()
                    backoff.reset()
                    self.log.info("connected to broker")
                    # After subscribing: the retained presence of every node arrives next, and is
                    # handled after the session start, so those nodes count as seen in it.
                    self.controller.on_broker_connected(time.time())
                    for doc in list(self.last_docs.values()):
                        await client.publish(node_topic(doc.cluster, doc.nodeId, "desired"), doc.model_dump_json(),
                                             qos=1, retain=True)
                    probe = asyncio.create_task(self._probe(client), name="bus-probe")
                    try:
                        async for msg in client.messages:
                            topic = str(msg.topic)
                            if topic == self.probe_topic:
                                self.controller.on_broker_heard(time.time())
                                continue
                            self.handle(topic, msg.payload, retain=msg.retain)
                    finally:
                        probe.cancel()
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self.client = None
                self.controller.on_broker_disconnected(time.time())
                delay = backoff.next()
                self.log.warning("broker connection lost; retrying", error=str(exc), retry_in=round(delay, 2))
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
        self.connected.clear()

    async def _probe(self, client: aiomqtt.Client) -> None:
        """Publish to our own probe topic every PROBE_SECONDS (QoS 0, a few bytes)."""
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            try:
                await client.publish(self.probe_topic, b"1", qos=0)
            except aiomqtt.MqttError:
                return  # the message loop sees the lost connection too

    def handle(self, topic: str, payload, retain: bool = False) -> None:
        parsed = parse_topic(topic)
        if parsed is None or not payload:
            return
        cluster, node_id, leaf = parsed
        try:
            if leaf == "desired":
                v = DesiredVersion.model_validate_json(payload)
                self.controller.on_desired_seen(cluster, node_id, v.version(), foreign=not retain)
            elif leaf == "presence":
                self._last_snapshot.pop((cluster, node_id), None)
                p = Presence.model_validate_json(payload)
                self.controller.on_presence(cluster, node_id, p)
            elif leaf == "status":
                # Every node sends a snapshot every status interval; in a steady cluster it repeats
                # the last one but for seq and ts. Such a repeat only refreshes the heartbeat
                # (parsing and folding it again is the bulk of a steady control plane's CPU). Any
                # other message drops the remembered snapshot.
                # Updates (most messages while tasks change) skip the comparison and its regex.
                key = (cluster, node_id)
                raw = bytes(payload)
                body = _SEQ_TS.sub(b"", raw) if _SNAPSHOT_KIND in raw[:_KIND_WITHIN] else None
                if body is not None and body == self._last_snapshot.get(key) \
                        and self.controller.on_status_repeat(cluster, node_id):
                    _SNAPSHOTS.inc()
                    return
                self._last_snapshot.pop(key, None)
                st = StatusDoc.model_validate_json(raw)
                metrics.STATUS_RECEIVED.labels(kind=st.kind).inc()
                self.controller.on_status(cluster, node_id, st)
                if st.kind == "snapshot":
                    self._last_snapshot[key] = body if body is not None else _SEQ_TS.sub(b"", raw)
        except ValidationError as exc:
            self.log.warning("dropping malformed message", topic=topic, error=str(exc).splitlines()[0])
        except Exception:
            self.log.exception("error handling message", topic=topic)
