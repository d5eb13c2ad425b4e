"""MQTT client construction shared by orchestrator and agent: URL parsing, TCP_NODELAY, backoff."""
from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiomqtt
from paho.mqtt import client as paho_client
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from pydantic import ValidationError

from dockyard.dynsec import Credentials

DEFAULT_MQTT = "mqtt://127.0.0.1:1883"
# Without TCP_NODELAY a QoS 1 round trip costs ~88 ms (Nagle + delayed ACK); with it ~1 ms.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


@dataclass(frozen=True)
class BrokerURL:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


def broker_urls(value: str) -> list[str]:
    """The brokers of a ``--mqtt`` value: one URL, or several separated by commas (a broker pair: agents use the
    first that answers and move to the next when it is gone; the orchestrator stays connected to all)."""
    urls = [u.strip() for u in value.split(",") if u.strip()]
    if not urls:
        raise ValueError(f"--mqtt {value!r}: give a broker URL, e.g. mqtt://127.0.0.1:1883")
    for u in urls:
        parse_url(u)
    return urls


def parse_url(url: str) -> BrokerURL:
    """``mqtt://[user:pass@]host[:port]`` (port 1883) or ``mqtts://...`` (TLS, port 8883) -> BrokerURL."""
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    if u.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
        raise ValueError(f"unsupported MQTT URL scheme '{u.scheme}' in {url!r}; use mqtt://HOST:PORT or "
                         "mqtts://HOST:PORT (TLS)")
    if not u.hostname:
        raise ValueError(f"MQTT URL {url!r} has no host; use mqtt://HOST:PORT")
    tls = u.scheme in ("mqtts", "ssl")
    return BrokerURL(u.hostname, u.port or (8883 if tls else 1883), u.username, u.password, tls)


def load_credentials(path: str | Path | None) -> Credentials | None:
    """A broker credentials file (JSON ``{"username", "password"}``, as ``dockyard broker init`` and
    ``dockyard node join`` write them); None without a path. ValueError with a hint when unusable."""
    if path is None:
        return None
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ValueError(f"--mqtt-credentials {p}: cannot read it ({e.strerror or e}); "
                         "create it with `dockyard node join NODE -o FILE` (a node) or `dockyard broker init`") from None
    try:
        return Credentials.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(file)"
        raise ValueError(f"--mqtt-credentials {p}: {where}: {first['msg']}; expected JSON "
                         '{"username": ..., "password": ...}') from None


def check_ca(url: str, ca_file: str | None) -> None:
    """ValueError with a hint when ``--mqtt-ca`` cannot be used with ``url``."""
    if ca_file is None:
        return
    if not parse_url(url).tls:
        raise ValueError(f"--mqtt-ca {ca_file} needs a TLS broker URL: mqtts://HOST:8883 (got {url})")
    if not Path(ca_file).is_file():
        raise ValueError(f"--mqtt-ca {ca_file}: no such file (the CA certificate `dockyard broker init --tls-port` "
                         "wrote: DIR/tls/ca.crt)")


def write_credentials(path: str | Path, creds: Credentials) -> None:
    """Write a credentials file readable by its owner only (0600 from the start, not chmod after)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(creds.model_dump_json() + "\n")


def _share_property_tables() -> None:
    """paho's MQTT 5 ``Properties.__init__`` rebuilds its constant tables (property names, ids
    and types: three containers of ~30 entries) for every packet received or acknowledged:
    6 % of the orchestrator's CPU in bench/scale.py, ~50 us a message on the project's machine.
    paho (2.2) only reads them, so every instance shares one copy; per-instance property values
    stay per instance (set as attributes), and ``clear`` looks only at those. Left alone if a paho version lacks those tables
    (tests/unit/test_mqtt_properties.py shows packing and unpacking unchanged)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    if getattr(Properties, "_dockyard_shared_tables", False):
        return
    ref = Properties(PacketTypes.PUBLISH)
    if not all(isinstance(getattr(ref, a, None), (list, dict)) for a in ("types", "names", "properties")):
        return
    shared = {"types": ref.types, "names": ref.names, "properties": ref.properties}

    def __init__(self: Properties, packetType: int) -> None:  # noqa: N803 - paho's name
        object.__setattr__(self, "packetType", packetType)
        for name, table in shared.items():
            object.__setattr__(self, name, table)

    compressed = frozenset(name.replace(" ", "") for name in ref.names)

    def clear(self: Properties) -> None:
        # paho's clear() (run by every unpack: each message received) tries all ~27 names with
        # hasattr; only the few set on this instance are in its __dict__.
        d = self.__dict__
        for name in [k for k in d if k in compressed]:
            del d[name]

    Properties.__init__ = __init__  # type: ignore[method-assign]
    Properties.clear = clear  # type: ignore[method-assign]
    Properties._dockyard_shared_tables = True  # type: ignore[attr-defined]


_share_property_tables()


class Client(aiomqtt.Client):
    """aiomqtt's client with its keepalive housekeeping (paho's ``loop_misc``) every
    ``misc_interval`` seconds instead of every second, or only when the owner calls
    :meth:`housekeeping` (``misc_interval=None``).

    Why: on a VM every wake-up of an idle process costs milliseconds of CPU (7-17 ms measured on
    the project's machine), so a once-a-second timer alone is ~1 % of a core. An agent drives the
    housekeeping from the status tick it has anyway and wakes once per tick.
    Overrides aiomqtt 2.x's private ``_misc_loop`` (pinned <3; tests/integration/test_mqtt_client.py
    shows the override takes effect against the real broker)."""

    def __init__(self, *args: object, misc_interval: float | None = 1.0, batch_io: bool = False,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.misc_interval = misc_interval
        self.batch_io = batch_io
        if batch_io:
            _coalesce_writes(self._client)
            _dispatch_without_filters(self._client)
        # Messages whose topic ends with fast_suffix go to fast_handler(topic, payload) as paho reads
        # them, not through aiomqtt's Message, queue and iterator: the orchestrator's heartbeats
        # (one per node per 1.25 s: 800/s at 1,000 nodes) skip that per-message work. The handler
        # runs in paho's read callback: it must be quick and must not raise.
        self.fast_suffix: bytes = b""
        self.fast_handler: Callable[[bytes, bytes], None] | None = None
        # Every other message to direct_handler(paho's MQTTMessage) as read, when set, instead of
        # aiomqtt's queue (whose Message, future and iterator step cost ~30 us a message): for an
        # owner whose handling is synchronous anyway (the orchestrator's bus). Order is kept (one
        # path for all). Same rules as fast_handler; ``messages`` then only reports a lost connection.
        self.direct_handler: Callable[[Any], None] | None = None

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        handler = self.fast_handler
        if handler is not None and message._topic.endswith(self.fast_suffix):
            handler(message._topic, message.payload)
            return
        if self.direct_handler is not None:
            self.direct_handler(message)
            return
        super()._on_message(client, userdata, message)

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        super()._on_socket_open(client, userdata, sock)
        if self.batch_io:  # after aiomqtt's add_reader (call_soon_threadsafe keeps the order)
            self._loop.call_soon_threadsafe(self._drain_reads, client, sock)

    def _drain_reads(self, client: Any, sock: Any) -> None:
        """Replace aiomqtt 2.x's reader (paho's ``loop_read``: one packet per wake-up while
        nothing is in flight) with one that reads every packet the socket holds, so a burst of
        messages costs one event-loop pass and their acknowledgements one write (with
        :func:`_coalesce_writes`), and its packets a few ``recv`` calls (:func:`_buffer_reads`).
        aiomqtt is pinned <3; tests/unit/test_mqtt_batch_io.py and
        tests/integration/test_mqtt_client.py (against Mosquitto) show it."""
        fd = sock.fileno()
        if fd < 0 or client.socket() is not sock:
            return
        buffered = _buffer_reads(client, sock)

        def readable() -> None:
            try:
                for _ in range(_READ_BURST):
                    rc = client._packet_read()
                    if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                        break
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        client._loop_rc_handle(rc)  # closes the socket (and its reader), as loop_read does
                        return
            except Exception as exc:  # as aiomqtt's reader: a broken connection ends the session
                if not self._disconnected.done():
                    self._disconnected.set_exception(exc)
                return
            if buffered() and client.socket() is sock:  # read, not handled yet: the socket may not wake us again
                self._loop.call_soon(readable)

        self._loop.add_reader(fd, readable)

    async def _misc_loop(self) -> None:
        if self.misc_interval is None:
            return
        while self._client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:  # noqa: ASYNC110 - a timer, not a wait for an event
            await asyncio.sleep(self.misc_interval)

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        await super().publish(*args, **kwargs)
        # paho 2.2 never records a write as activity (_packet_write returns before updating
        # _last_msg_out), so it pings every keepalive even while we publish: one more wake-up
        # (the PINGRESP) per keepalive for an agent whose snapshots already prove the link.
        with self._client._msgtime_mutex:
            self._client._last_msg_out = paho_client.time_func()

    def housekeeping(self) -> None:
        """Send a PINGREQ when due, drop a connection whose PINGRESP is overdue."""
        self._client.loop_misc()


_READ_BURST = 500  # packets per wake-up at most, so other callbacks run between bursts
_RECV_BYTES = 65536


def _buffer_reads(client: paho_client.Client, sock: Any) -> Callable[[], int]:
    """paho reads a packet with at least three ``recv`` calls (its type byte, each byte of its
    length, its body): three system calls for a heartbeat of a few bytes. Serve those reads from
    one ``recv`` of up to 64 KB (through paho's own ``_sock_recv``: its TLS and error handling)
    while ``sock`` is the client's socket. Returns how many bytes are read but not handed to
    paho yet (the reader runs again while there are: the socket will not say so)."""
    raw = paho_client.Client._sock_recv.__get__(client)
    data, pos = b"", 0

    def sock_recv(bufsize: int) -> bytes:
        nonlocal data, pos
        if client._sock is not sock:  # another connection's (a reconnect installs its own)
            return raw(bufsize)
        if pos >= len(data):
            data, pos = raw(_RECV_BYTES), 0  # BlockingIOError when nothing is there; b"" at the end
            if not data:
                return data
        out = data[pos:pos + bufsize]
        pos += len(out)
        return out

    client._sock_recv = sock_recv  # type: ignore[method-assign]
    return lambda: len(data) - pos
_PLAIN = frozenset({0x40, 0x50, 0x60, 0x70, 0x80, 0xA0, 0xC0})  # PUBACK..PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ


def _dispatch_without_filters(client: paho_client.Client) -> None:
    """paho matches every received topic against the filters of ``message_callback_add``
    (a recursive generator over the split topic, ~6 us) before it falls back to ``on_message``;
    aiomqtt registers none. While none is registered, hand the message to ``on_message`` directly
    (as paho would: under its callback lock; an exception logged, raised unless suppressed)."""
    original = client._handle_on_message
    filters = client._on_message_filtered

    def handle(message: paho_client.MQTTMessage) -> None:
        if filters._root._children:  # a filter callback was added: paho's own dispatch
            original(message)
            return
        on_message = client.on_message
        if on_message is None:
            return
        with client._in_callback_mutex:
            try:
                on_message(client, client._userdata, message)
            except Exception as err:
                client._easy_log(paho_client.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not client.suppress_exceptions:
                    raise

    client._handle_on_message = handle  # type: ignore[method-assign]


def _coalesce_writes(client: paho_client.Client) -> None:
    """paho sends each queued packet with its own ``send``; join the queued packets whose
    completion paho does nothing for (QoS 1 publishes, acknowledgements, pings) into one, so a
    pass's documents or a burst's acknowledgements go out in one system call. QoS 0 publishes
    (their completion is the on_publish callback) and DISCONNECT stay packets of their own."""
    write = client._packet_write

    def plain(p: Any) -> bool:  # paho's _OutPacket (a TypedDict)
        kind = p["command"] & 0xF0
        return p["pos"] == 0 and (kind in _PLAIN or (kind == 0x30 and p["qos"] > 0))

    def joined(run: list[Any]) -> Any:
        if len(run) == 1:
            return run[0]
        body = b"".join(p["packet"] for p in run)
        return {"command": 0x40, "mid": 0, "qos": 1, "pos": 0, "to_process": len(body), "packet": body, "info": None}

    def packet_write() -> MQTTErrorCode:
        q: Any = client._out_packet
        if len(q) > 1:
            out: list[Any] = []
            run: list[Any] = []
            for p in q:
                if plain(p) and len(run) < _WRITE_JOIN:
                    run.append(p)
                    continue
                if run:
                    out.append(joined(run))
                run = [p] if plain(p) else []
                if not run:
                    out.append(p)
            if run:
                out.append(joined(run))
            if len(out) < len(q):
                q.clear()
                q.extend(out)
        return write()

    client._packet_write = packet_write  # type: ignore[method-assign]


_WRITE_JOIN = 256  # packets per joined write (documents are ~10 KB: a few MB at most)


def make_client(url: str, identifier: str, will: aiomqtt.Will | None = None, keepalive: int = 5,
                max_inflight_messages: int | None = None, misc_interval: float | None = 1.0,
                credentials: Credentials | None = None, ca_file: str | None = None, batch_io: bool = False) -> Client:
    """An MQTT 5 client with TCP_NODELAY. aiomqtt does not reconnect: callers loop with :class:`Backoff`.

    ``max_inflight_messages``: QoS 1 messages sent and not yet acknowledged (paho's default is
    20; the broker's Receive Maximum still applies). ``misc_interval``: see :class:`Client`;
    with ``None`` the caller must call ``housekeeping()`` well within ``keepalive``. ``credentials``: the
    broker login (over any user:password in the URL). ``mqtts://`` URLs verify the broker's certificate and
    name against ``ca_file`` (else the system's CAs)."""
    b = parse_url(url)
    return Client(
        b.host,
        b.port,
        username=credentials.username if credentials else b.username,
        password=credentials.password if credentials else b.password,
        identifier=identifier,
        protocol=MQTTProtocolVersion.MQTTv5,
        will=will,
        keepalive=keepalive,
        socket_options=NODELAY,
        max_queued_outgoing_messages=100_000,
        max_inflight_messages=max_inflight_messages,
        misc_interval=misc_interval,
        batch_io=batch_io,
        tls_params=aiomqtt.TLSParameters(ca_certs=ca_file) if b.tls else None,
    )


class Backoff:
    """Exponential backoff with "equal jitter" (a delay drawn from [d/2, d] for the attempt's d,
    capped), reset after a successful connection."""

    def __init__(self, base: float = 0.2, cap: float = 10.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0
