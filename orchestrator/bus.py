"""The orchestrator's side of the MQTT bus: publish desired documents, receive presence and status.

One client; reconnects with backoff and, on every (re)connect, republishes every node's
current desired document (retained), so a broker restart loses nothing.
"""
from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import TypeAdapter, ValidationError

from dockyard import log as dlog
from dockyard.dynsec import Credentials
from dockyard.mqtt import Backoff, make_client
from dockyard.wire import (
    PROTOCOL,
    DesiredDoc,
    DesiredVersion,
    Presence,
    Refusal,
    StatusDoc,
    TaskUsage,
    node_topic,
    parse_topic,
)
from orchestrator import metrics

# A StatusDoc's JSON without its "seq" and "ts" members (pydantic writes the fields in order).
_SEQ_TS = re.compile(rb'"seq":\d+,|,"ts":[-+0-9.eE]+(?=}$)')
# Its usage samples (flat objects, just before "ts"), which change every snapshot: compared
# without them, and read on their own from a repeat (orchestrator.usage).
_USAGE = re.compile(rb',"usage":(\[[^\]]*\]|null)(?=,"ts")')
_USAGE_LIST = TypeAdapter(list[TaskUsage])
_SNAPSHOTS = metrics.STATUS_RECEIVED.labels(kind="snapshot")
_RECEIVED = {"snapshot": _SNAPSHOTS, "update": metrics.STATUS_RECEIVED.labels(kind="update")}  # labels() per message costs
# "kind" follows nodeId, bootId and seq at the start of a StatusDoc's JSON.
_SNAPSHOT_KIND = b'"kind":"snapshot"'
_UPDATE_KIND = b'"kind":"update"'
_KIND_WITHIN = 1024
_NUMBER = re.compile(rb"[-+0-9.eE]+")


def snapshot_key(raw: bytes) -> tuple[bytes, bytes | None]:
    """A snapshot's JSON without its seq, usage and ts members (what a repeat shares with the
    last one), and its usage samples (None without). Found by position with ``find`` (a few
    microseconds for a 5 KB snapshot; the regular expressions scan every quote and comma:
    ~100 us, a sixth of the orchestrator's steady CPU); the expressions decide whatever the
    positions do not settle, so the result is theirs (tests/unit/test_snapshot_key.py)."""
    i = raw.find(b'"seq":', 0, _KIND_WITHIN)
    j = raw.find(b",", i + 6, i + 32) if i >= 0 else -1
    t = raw.rfind(b',"ts":')
    if j > i + 6 and raw[i + 6:j].isdigit() and raw.find(b'"seq":', j) < 0 and t > j and raw.endswith(b"}") \
            and _NUMBER.fullmatch(raw, t + 6, len(raw) - 1):
        u = raw.rfind(b',"usage":', j, t)
        if u < 0 or raw.find(b',"usage":', j, u) < 0:  # none, or only this one before ts
            seg = raw[u + 9:t] if u >= 0 else b""
            if u < 0:
                return raw[:i] + raw[j + 1:t] + b"}", None
            if seg == b"null" or (seg[:1] == b"[" and seg.find(b"]") == len(seg) - 1):
                return raw[:i] + raw[j + 1:u] + b"}", seg
    m = _USAGE.search(raw)
    return _SEQ_TS.sub(b"", raw if m is None else raw[:m.start()] + raw[m.end():]), (m.group(1) if m else None)


def _usage_of(samples: bytes | None) -> list[TaskUsage] | None:
    """The usage samples snapshot_key cut out of a snapshot, parsed (None without)."""
    return _USAGE_LIST.validate_json(samples) if samples and samples != b"null" else None


def _as_snapshot(update: StatusDoc, raw: bytes, samples: bytes | None) -> StatusDoc | None:
    """The snapshot ``raw`` when its key (snapshot_key) equals that of ``update`` but for the kind:
    ``update`` with raw's kind, seq, ts and usage, sharing its reports (they are immutable once
    parsed). None if seq or ts are not where snapshot_key found them (then parse it)."""
    i = raw.find(b'"seq":', 0, _KIND_WITHIN)
    j = raw.find(b",", i + 6, i + 32) if i >= 0 else -1
    t = raw.rfind(b',"ts":')
    if j < 0 or t < j or not raw[i + 6:j].isdigit() or not raw.endswith(b"}"):
        return None
    try:
        ts = float(raw[t + 6:-1])
    except ValueError:
        return None
    return update.model_copy(update={"kind": "snapshot", "seq": int(raw[i + 6:j]), "ts": ts,
                                     "usage": _usage_of(samples)})


# Status and presence payloads over this are dropped unread (a status of 1,000 tasks is ~1 MB).
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
# The orchestrator publishes to itself every PROBE_SECONDS: each echo proves the session works
# (a half-open connection delivers nothing; core.nodes times out no node without that proof).
# The probe carries its publication time: once its echo is handled, so is everything the broker
# had before it (one ordered stream), however late the orchestrator reads. Twice a second so a
# silent node's loss (a heartbeat timeout of ~3 s) is proven at most 0.5 s after its deadline.
PROBE_SECONDS = 0.5


_BEAT = b"/heartbeat"


def _probe_time(payload: object) -> float:
    """When the echoed probe was published (now, for a probe without a time)."""
    try:
        return float(payload) if isinstance(payload, bytes | bytearray) else time.time()  # type: ignore[arg-type]
    except ValueError:
        return time.time()


def _count_sent(size: int) -> None:
    _SENT.inc()
    _SENT_BYTES.inc(size)


# Metric children looked up once (labels() per message is measurable on the status path).
_IN = {leaf: (metrics.MQTT_RECEIVED.labels(topic=leaf), metrics.MQTT_RECEIVED_BYTES.labels(topic=leaf))
       for leaf in ("status", "presence", "other")}
_SENT = metrics.MQTT_SENT.labels(topic="desired")
_SENT_BYTES = metrics.MQTT_SENT_BYTES.labels(topic="desired")


class Bus:
    def __init__(self, mqtt_url: str, controller, usage=None, credentials: Credentials | None = None,
                 ca_file: str | None = None, requests=None) -> None:
        self.usage = usage  # an orchestrator.usage.UsageBook: each snapshot's task samples
        self.requests = requests  # an orchestrator.lb_requests.RequestBook: LB nodes' per-target request counts
        self._last_lb: dict[tuple[str, str], list] = {}  # the targets of each LB node's last snapshot
        self.url = mqtt_url
        self.credentials, self.ca_file = credentials, ca_file
        self.controller = controller
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.last_docs: dict[tuple[str, str], DesiredDoc] = {}
        self._last_snapshot: dict[tuple[str, str], bytes] = {}  # per node, without seq and ts
        # Per node, its last update (if the last status handled): as a snapshot's key would be, and parsed.
        self._last_update: dict[tuple[str, str], tuple[bytes, StatusDoc]] = {}
        self._acked: dict[tuple[str, str], int] = {}  # per node, the last generation whose ack was timed
        self._seq: dict[tuple[str, str], tuple[str, int]] = {}  # per known node, the last status's (bootId, seq)
        self.log = dlog.get("bus", mqtt=mqtt_url)
        self.client_id = f"dockyard-orchestrator-{uuid.uuid4().hex[:8]}"
        self.probe_topic = f"{PROTOCOL}/_orchestrator/{self.client_id}/probe"
        self._sends: set[asyncio.Task] = set()  # refusal publications under way
        self.relay: Any = None  # orchestrator.relay.Relay: logs and exec responses (its topics, its messages)

    async def publish(self, doc: DesiredDoc) -> None:
        self.last_docs[(doc.cluster, doc.nodeId)] = doc
        if self.client is None or not self.connected.is_set():
            return  # sent on (re)connect
        try:
            body = doc.model_dump_json()
            await self.client.publish(node_topic(doc.cluster, doc.nodeId, "desired"), body, qos=1, retain=True)
            metrics.DESIRED_PUBLISHED.inc()
            _count_sent(len(body))
        except aiomqtt.MqttError as exc:
            self.log.warning("publish failed; will resend on reconnect", error=str(exc))

    def _send_refusal(self, cluster: str, node_id: str, refusal: Refusal | None) -> None:
        """Tell the agent it is refused (retained), or clear a refusal once it is accepted."""
        client = self.client
        if client is None:
            return
        body = refusal.model_dump_json() if refusal is not None else b""
        task = asyncio.get_running_loop().create_task(
            client.publish(node_topic(cluster, node_id, "refusal"), body, qos=1, retain=True))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def _observe_ack(self, key: tuple[str, str], st: StatusDoc) -> None:
        """Time from a desired document's publication to the first status acknowledging it."""
        doc = self.last_docs.get(key)
        if doc is None or (st.observedEpoch, st.observedGeneration) != (doc.epoch, doc.generation) \
                or self._acked.get(key) == doc.generation:
            return
        self._acked[key] = doc.generation
        metrics.DESIRED_ACK_SECONDS.observe(max(0.0, time.time() - doc.publishedAt))

    async def forget_node(self, cluster: str, node_id: str) -> None:
        """A deleted node: clear its retained desired document and presence (a later start of the orchestrator
        must not register it again from its old ``online``)."""
        self.last_docs.pop((cluster, node_id), None)
        self._seq.pop((cluster, node_id), None)
        self._last_lb.pop((cluster, node_id), None)
        self._last_update.pop((cluster, node_id), None)
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
                # default of 20 unacknowledged, 1,000 documents waited for 50 round trips. 0 (no
                # limit) rather than a large one: under any limit paho walks every queued message
                # on each PUBACK (_update_inflight), O(n^2) for a pass's n documents.
                # batch_io: a burst of status reports is read in one wake-up and acknowledged in one
                # write, and a pass's documents go out in one (dockyard.mqtt._coalesce_writes).
                async with make_client(self.url, self.client_id, max_inflight_messages=0, batch_io=True,
                                       credentials=self.credentials, ca_file=self.ca_file) as client:
                    self.client = client
                    client.fast_suffix, client.fast_handler = _BEAT, self.heartbeat
                    client.direct_handler = self.on_message  # every handler is synchronous: no queue
                    await client.subscribe(f"{PROTOCOL}/+/nodes/+/presence", qos=1)
                    await client.subscribe(f"{PROTOCOL}/+/nodes/+/status", qos=1)
                    await client.subscribe(f"{PROTOCOL}/+/nodes/+/heartbeat", qos=0)
                    await client.subscribe(self.probe_topic, qos=0)
                    if self.relay is not None:
                        await self.relay.on_connect(client)
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
                        body = doc.model_dump_json()
                        await client.publish(node_topic(doc.cluster, doc.nodeId, "desired"), body, qos=1, retain=True)
                        _count_sent(len(body))
                    probe = asyncio.create_task(self._probe(client), name="bus-probe")
                    try:
                        async for msg in client.messages:  # none queued (direct_handler): ends on a lost connection
                            self.dispatch(str(msg.topic), msg.payload, msg.retain, msg.properties)
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
                await client.publish(self.probe_topic, repr(time.time()).encode(), qos=0)
            except aiomqtt.MqttError:
                return  # the message loop sees the lost connection too

    def on_message(self, msg: Any) -> None:
        """A message as paho reads it (dockyard.mqtt.Client.direct_handler): never raises there."""
        try:
            self.dispatch(msg.topic, msg.payload, bool(msg.retain), getattr(msg, "properties", None))
        except Exception:
            self.log.exception("error handling a message")

    def dispatch(self, topic: str, payload: Any, retain: bool, properties: Any) -> None:
        if topic == self.probe_topic:
            self.controller.on_broker_heard(_probe_time(payload))
        elif self.relay is not None and self.relay.owns(topic):
            self.relay.on_message(payload, properties)
        else:
            self.handle(topic, payload, retain=retain)

    def heartbeat(self, topic: bytes, payload: bytes) -> None:
        """A node's light heartbeat, handed over by the client as it is read (dockyard.mqtt.Client:
        the most frequent message skips aiomqtt's queue; no metrics, no parsing beyond the topic)."""
        try:
            parts = topic.split(b"/")
            if len(parts) != 6 or parts[3] != b"nodes" or len(payload) > 64:
                return
            self.controller.on_heartbeat(parts[2].decode(), parts[4].decode(), payload.decode("ascii", "replace"))
        except Exception:  # it runs in paho's read callback: never let it break the session
            self.log.exception("error handling a heartbeat")

    def handle(self, topic: str, payload, retain: bool = False) -> None:
        parsed = parse_topic(topic)
        if parsed is None or not payload:
            return
        cluster, node_id, leaf = parsed
        count, size = _IN.get(leaf) or _IN["other"]
        count.inc()
        size.inc(len(payload))
        if len(payload) > MAX_PAYLOAD_BYTES and leaf in ("status", "presence"):
            self.log.warning("dropping oversized message", topic=topic, bytes=len(payload), limit=MAX_PAYLOAD_BYTES)
            return
        try:
            if leaf == "desired":
                v = DesiredVersion.model_validate_json(payload)
                self.controller.on_desired_seen(cluster, node_id, v.version(), foreign=not retain)
            elif leaf == "presence":
                self._last_snapshot.pop((cluster, node_id), None)
                self._last_update.pop((cluster, node_id), None)
                p = Presence.model_validate_json(payload)
                was_refused = p.state == "online" and self.controller.node_refused(cluster, node_id)
                refusal = self.controller.on_presence(cluster, node_id, p)
                if refusal is not None or was_refused:
                    self._send_refusal(cluster, node_id, refusal)
            elif leaf == "status":
                # Every node sends a snapshot every status interval; in a steady cluster it repeats
                # the last one but for seq and ts. Such a repeat only refreshes the heartbeat
                # (parsing and folding it again is the bulk of a steady control plane's CPU). Any
                # other message drops the remembered snapshot.
                # Updates (most messages while tasks change) skip the comparison and its regex.
                key = (cluster, node_id)
                raw = bytes(payload)
                samples = None
                body: bytes | None = None
                if _SNAPSHOT_KIND in raw[:_KIND_WITHIN]:
                    body, samples = snapshot_key(raw)
                if body is not None and body == self._last_snapshot.get(key) \
                        and self.controller.on_status_repeat(cluster, node_id):
                    _SNAPSHOTS.inc()
                    if self.usage is not None:
                        self.usage.record(cluster, node_id, _usage_of(samples), time.time())
                    if self.requests is not None and key in self._last_lb:  # the same counters again
                        self.requests.record(cluster, node_id, self._last_lb[key], time.time())
                    return
                self._last_snapshot.pop(key, None)
                update = self._last_update.pop(key, None)
                st = None
                if body is not None and update is not None and body == update[0]:
                    st = _as_snapshot(update[1], raw, samples)  # what parsing it would give, without parsing
                if st is None:
                    st = StatusDoc.model_validate_json(raw)
                known = key in self.controller.state.nodes  # nothing is remembered for a node never registered
                last = self._seq.get(key)
                if last is not None and last[0] == st.bootId and st.seq <= last[1]:  # seq is send order
                    self.log.warning("dropping a replayed or out-of-order status", topic=topic, seq=st.seq,
                                     last_seq=last[1])
                    return
                if known:
                    self._seq[key] = (st.bootId, st.seq)
                _RECEIVED[st.kind].inc()
                self._observe_ack(key, st)
                self.controller.on_status(cluster, node_id, st)
                if self.requests is not None and st.loadBalancer is not None and known:
                    self.requests.record(cluster, node_id, st.loadBalancer.targets, time.time())
                    self._last_lb[key] = st.loadBalancer.targets
                if st.kind == "snapshot" and known:
                    if self.usage is not None:
                        self.usage.record(cluster, node_id, st.usage, time.time())
                    self._last_snapshot[key] = body if body is not None else snapshot_key(raw)[0]
                elif known and st.tasks:
                    # The node's next snapshot often carries just what this update did (every task of
                    # the node changed, as in a burst of placements): it is then not parsed again.
                    self._last_update[key] = (snapshot_key(raw)[0].replace(_UPDATE_KIND, _SNAPSHOT_KIND, 1), st)
        except ValidationError as exc:
            self.log.warning("dropping malformed message", topic=topic, error=str(exc).splitlines()[0])
        except Exception:
            self.log.exception("error handling message", topic=topic)
