"""The agent's MQTT session: connection with reconnect and backoff, presence and its Will,
the subscription to the node's ``desired`` topic, and decoding of desired documents.

On every connect: publish ``online`` presence (retained), subscribe, call ``on_connect`` (the
agent sends a snapshot), then hand every message to ``on_message``. aiomqtt does not
reconnect by itself, so :meth:`Session.run` loops with jittered exponential backoff.
"""
from __future__ import annotations

import asyncio
import math
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import aiomqtt
from pydantic_core import from_json

from agent.runtime import EngineInfo
from dockyard import __version__
from dockyard.dynsec import Credentials
from dockyard.mqtt import Backoff, Client, broker_urls, make_client
from dockyard.wire import (
    CGROUP_ATTRIBUTE,
    PROTOCOL_VERSION,
    DesiredDoc,
    DesiredDocHead,
    DesiredTask,
    NodeResources,
    Presence,
    Refusal,
    node_topic,
)
from dockyard.wire_rr import requests_topic

# Tests only (tests/integration/test_versions.py): the wire-protocol version the agent claims in
# its presence, to play an older or newer agent. Nothing else changes with it.
TEST_PROTOCOL_ENV = "DOCKYARD_TEST_PROTOCOL_VERSION"


def protocol_version() -> int:
    return int(os.environ.get(TEST_PROTOCOL_ENV) or PROTOCOL_VERSION)


class Session:
    def __init__(self, *, node_id: str, cluster: str, mqtt_url: str, boot_id: str, status_interval: float,
                 attributes: dict[str, str], capacity_providers: list[str], runtime_name: str, log: Any,
                 on_connect: Callable[[], Awaitable[None]], on_message: Callable[[Any], Awaitable[None]],
                 advertise_address: str | None = None, load_balancer: bool = False,
                 seal_key: str | None = None, credentials: Credentials | None = None,
                 mqtt_ca: str | None = None, heartbeat_interval: float | None = None) -> None:
        self.node_id, self.cluster, self.mqtt_url, self.boot_id = node_id, cluster, mqtt_url, boot_id
        # Where other nodes (load balancers) reach this node's host ports: the flag, else the
        # source address of the broker connection (set on connect).
        self.address = advertise_address
        self._advertised = advertise_address is not None
        self.load_balancer = load_balancer
        self.mqtt_ca = mqtt_ca
        self.credentials = credentials  # the node's broker login (None: anonymous, development only)
        self.seal_key = seal_key  # the public key task secrets are sealed to (base64)
        self.status_interval = status_interval
        self.heartbeat_interval = heartbeat_interval  # light heartbeats (None: none, snapshots only)
        self.user_attributes, self.capacity_providers, self.runtime_name = attributes, capacity_providers, runtime_name
        self.log, self.on_connect, self.on_message = log, on_connect, on_message
        self.t_desired = node_topic(cluster, node_id, "desired")
        self.t_status = node_topic(cluster, node_id, "status")
        self.t_presence = node_topic(cluster, node_id, "presence")
        self.t_refusal = node_topic(cluster, node_id, "refusal")
        self.t_requests = requests_topic(cluster, node_id)
        # agent.requests.RequestServer.handle(payload, response topic, correlation data): logs and exec; None: not served
        self.on_request: Callable[[bytes, str | None, bytes | None], None] | None = None
        self.t_heartbeat = node_topic(cluster, node_id, "heartbeat")
        self.protocol_version = protocol_version()
        self.refused: str | None = None  # the orchestrator's reason while it refuses this boot
        self.info: EngineInfo | None = None  # set by the agent once the engine answered
        # The agent's /metrics as others reach it, given this node's address (agent.observe), or None.
        self.metrics_endpoint: Callable[[str | None], str | None] | None = None
        self.client: Client | None = None  # None while disconnected
        self.connected = asyncio.Event()

    # ---- presence -----------------------------------------------------------------------------
    def attributes(self) -> dict[str, str]:
        base = {
            "ecs.os-type": self.info.os_type if self.info else "linux",
            "ecs.cpu-architecture": self.info.architecture if self.info else "x86_64",
            "hostname": socket.gethostname(),
        }
        if self.info and self.info.cgroup_version:
            base[CGROUP_ATTRIBUTE] = self.info.cgroup_version
        return {**base, **self.user_attributes}

    def presence(self, state: Literal["online", "offline"]) -> bytes:
        res = NodeResources(cpu=self.info.cpu, memory=self.info.memory) if self.info else None
        return Presence(
            nodeId=self.node_id, bootId=self.boot_id, state=state, cluster=self.cluster, resources=res,
            attributes=self.attributes(), capacityProviders=list(self.capacity_providers), runtime=self.runtime_name,
            statusInterval=self.status_interval, heartbeatInterval=self.heartbeat_interval, address=self.address, loadBalancer=self.load_balancer,
            sealKey=self.seal_key, agentVersion=__version__, protocolVersion=self.protocol_version,
            metricsEndpoint=self.metrics_endpoint(self.address) if self.metrics_endpoint else None,
        ).model_dump_json().encode()

    def keepalive(self) -> int:
        """MQTT keepalive, long enough for housekeeping once per status tick (paho pings when
        nothing was sent or received for keepalive s; the broker's Will fires after 1.5x)."""
        return max(10, math.ceil(3 * self.status_interval))

    async def beat(self) -> None:
        """The light heartbeat (dockyard.wire): the boot id, QoS 0. A publish counts as MQTT
        activity, so the session needs no PINGREQ of its own while it beats."""
        client = self.client
        if client is None or not self.heartbeat_interval:
            return
        try:
            await client.publish(self.t_heartbeat, self.boot_id.encode(), qos=0)
        except aiomqtt.MqttError as e:
            self.log.debug("heartbeat not sent", error=str(e))

    def housekeeping(self) -> None:
        """Keepalive work, driven by the agent's status tick (the client has no timer of its own)."""
        client = self.client
        if client is not None:
            client.housekeeping()

    # ---- connection ---------------------------------------------------------------------------
    async def run(self) -> None:
        backoff = Backoff()
        ident = f"dockyard-agent-{self.cluster}-{self.node_id}"[:128]
        urls, at = broker_urls(self.mqtt_url), 0  # several brokers: the next one when the current one is gone
        while True:
            try:
                will = aiomqtt.Will(self.t_presence, self.presence("offline"), qos=1, retain=True)
                async with make_client(urls[at], ident, will=will, keepalive=self.keepalive(),
                                       misc_interval=None, credentials=self.credentials,
                                       ca_file=self.mqtt_ca) as client:  # housekeeping: the status tick
                    self.client = client
                    backoff.reset()
                    if not self._advertised:
                        self.address = _source_address(client) or self.address
                    await client.publish(self.t_presence, self.presence("online"), qos=1, retain=True)
                    await client.subscribe(self.t_desired, qos=1)
                    await client.subscribe(self.t_refusal, qos=1)
                    if self.on_request is not None:
                        await client.subscribe(self.t_requests, qos=1)
                    self.connected.set()
                    self.log.info("connected", broker=urls[at], bootId=self.boot_id, agentVersion=__version__,
                                  protocolVersion=self.protocol_version)
                    await self.on_connect()
                    async for msg in client.messages:
                        if msg.topic.value == self.t_refusal:
                            self.on_refusal(msg.payload)
                        elif msg.topic.value == self.t_requests and self.on_request is not None:
                            props = msg.properties
                            self.on_request(bytes(msg.payload), getattr(props, "ResponseTopic", None),  # type: ignore[arg-type]
                                            getattr(props, "CorrelationData", None))
                        else:
                            await self.on_message(msg.payload)
            except aiomqtt.MqttError as e:
                self.client = None
                self.connected.clear()
                at = (at + 1) % len(urls)
                delay = backoff.next() if at == 0 else 0.0  # the next broker at once; back off after a full round
                self.log.warning("mqtt disconnected; reconnecting", error=str(e), broker=urls[at], retry_in=round(delay, 2))
                await asyncio.sleep(delay)
            finally:
                self.client = None
                self.connected.clear()

    def on_refusal(self, payload: Any) -> None:
        """Log the orchestrator's refusal of this boot (or its end) once; the agent keeps running
        (and its containers): an upgraded orchestrator or agent resolves it."""
        refusal: Refusal | None = None
        if payload:
            try:
                refusal = Refusal.model_validate_json(payload)
            except ValueError as e:
                self.log.warning("ignoring invalid refusal", error=str(e).splitlines()[0])
                return
            if refusal.bootId != self.boot_id:
                return  # a previous boot's, not yet cleared
        reason = refusal.reason if refusal is not None else None
        if reason == self.refused:
            return
        self.refused = reason
        if refusal is not None:
            self.log.error("refused by the orchestrator: this agent is not managed until one of them is upgraded",
                           reason=refusal.reason, agentVersion=__version__, agentProtocol=refusal.agentProtocol,
                           orchestratorVersion=refusal.orchestratorVersion,
                           orchestratorProtocol=refusal.orchestratorProtocol)
        else:
            self.log.info("accepted by the orchestrator")

    async def goodbye(self) -> None:
        """Publish ``offline`` presence ourselves (a graceful stop), waiting at most 2 s."""
        client = self.client
        if client is None:
            return
        try:
            await asyncio.wait_for(client.publish(self.t_presence, self.presence("offline"), qos=1, retain=True), 2.0)
        except Exception as e:  # noqa: BLE001
            self.log.warning("offline presence not published", error=str(e))


def _source_address(client: Client) -> str | None:
    """The local address of the broker connection (aiomqtt 2.x keeps paho's client in ``_client``)."""
    try:
        sock = client._client.socket()
        return str(sock.getsockname()[0]) if sock is not None else None  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None


def parse_desired(payload: Any, head: DesiredDocHead, previous: DesiredDoc | None) -> DesiredDoc:
    """The DesiredDoc in ``payload``, validating only the tasks ``previous`` did not have.

    Documents are full task sets, so most tasks repeat from one generation to the next; a
    task's definition is fixed by its id and family:revision (revisions are immutable), so
    the already-validated entry is reused (with the new desiredStatus): validating every task
    definition of every document would cost far more than the head (bench/bus.py measures
    it). ``head`` is the payload parsed as :class:`DesiredDocHead`."""
    known = {t.taskId: t for t in previous.tasks} if previous is not None else {}
    tasks: list[DesiredTask | None] = []
    for h in head.tasks:
        k = known.get(h.taskId)
        if k is None or (k.family, k.revision, k.launchType, k.serviceName) != (h.family, h.revision, h.launchType, h.serviceName):
            tasks.append(None)
        elif k.desiredStatus != h.desiredStatus:
            tasks.append(k.model_copy(update={"desiredStatus": h.desiredStatus}))
        else:
            tasks.append(k)
    if all(t is None for t in tasks):
        return DesiredDoc.model_validate_json(payload)
    if any(t is None for t in tasks):
        raw = from_json(payload)["tasks"]
        for i, t in enumerate(tasks):
            if t is None:
                tasks[i] = DesiredTask.model_validate(raw[i])
    return DesiredDoc.model_construct(cluster=head.cluster, nodeId=head.nodeId, epoch=head.epoch,
                                      generation=head.generation, tasks=tasks, publishedAt=head.publishedAt,
                                      loadBalancer=head.loadBalancer)
