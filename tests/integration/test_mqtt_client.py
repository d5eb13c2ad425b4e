"""dockyard.mqtt.Client against the real broker: keepalive housekeeping driven by its owner.

The agent runs with ``misc_interval=None`` and calls ``housekeeping()`` from its status tick (one
wake-up per tick, docs/benchmarks.md). These show both halves: the owner's calls keep the
connection alive past the broker's 1.5 x keepalive limit, and without them nothing else pings
(so the override of aiomqtt's private per-second loop really took effect)."""
from __future__ import annotations

import asyncio
import uuid

import aiomqtt
import pytest

from paho.mqtt import client as paho_client

import dockyard.mqtt
from dockyard.mqtt import make_client
from harness import MQTT_URL

pytestmark = pytest.mark.integration

KEEPALIVE = 2  # the broker drops a silent client after 3 s


async def _housekeep(client, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        client.housekeeping()


def count_pings(client) -> list[int]:
    """Record each PINGREQ the client sends (paho's private hook, pinned by aiomqtt <3)."""
    pings: list[int] = []
    orig = client._client._send_pingreq

    def spy():
        pings.append(1)
        return orig()

    client._client._send_pingreq = spy
    return pings


async def pings_sent(pings: list[int], n: int, timeout: float) -> None:
    """Wait until ``n`` more pings were sent: an observable event, each one keepalive apart."""
    target = len(pings) + n
    async with asyncio.timeout(timeout):
        while len(pings) < target:
            await asyncio.sleep(0.1)


async def test_owner_driven_housekeeping_keeps_the_connection_and_none_drops_it(infra):
    tag = uuid.uuid4().hex[:8]
    will_topic = f"dockyard/v1/selftest-{tag}/will"
    async with make_client(MQTT_URL, f"selftest-watch-{tag}") as watch:
        await watch.subscribe(f"{will_topic}/#", qos=1)
        wills = watch.messages

        kept = make_client(MQTT_URL, f"selftest-kept-{tag}", keepalive=KEEPALIVE, misc_interval=None,
                           will=aiomqtt.Will(f"{will_topic}/kept", b"gone", qos=1))
        silent = make_client(MQTT_URL, f"selftest-silent-{tag}", keepalive=KEEPALIVE, misc_interval=None,
                             will=aiomqtt.Will(f"{will_topic}/silent", b"gone", qos=1))
        async with kept, silent:
            pings = count_pings(kept)
            beat = asyncio.create_task(_housekeep(kept, 0.5))
            try:
                # Mosquitto 2.0 enforces keepalive lazily (seen: 3-9 s for a 3 s limit): wait
                # for the first Will rather than a fixed time. It must be the silent client's.
                msg = await asyncio.wait_for(anext(aiter(wills)), timeout=20)
                assert str(msg.topic) == f"{will_topic}/silent"
                await pings_sent(pings, 2, timeout=15)  # two more keepalive periods: the kept one stays connected
                await kept.subscribe(f"dockyard/v1/selftest-{tag}/echo", qos=1)
                await kept.publish(f"dockyard/v1/selftest-{tag}/echo", b"ok", qos=1)
                echo = await asyncio.wait_for(anext(aiter(kept.messages)), timeout=3)
                assert echo.payload == b"ok"
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(anext(aiter(wills)), timeout=0.5)
                with pytest.raises(aiomqtt.MqttError):
                    await silent.publish(f"dockyard/v1/selftest-{tag}/x", b"x", qos=1, timeout=2)
            finally:
                beat.cancel()


async def test_default_client_pings_by_itself(infra):
    """misc_interval=1.0 (the default, aiomqtt's own cadence): idle past the limit, still connected."""
    tag = uuid.uuid4().hex[:8]
    async with make_client(MQTT_URL, f"selftest-default-{tag}", keepalive=KEEPALIVE) as c:
        await pings_sent(count_pings(c), 3, timeout=15)  # idle for three keepalive periods
        await c.subscribe(f"dockyard/v1/selftest-{tag}/echo", qos=1)
        await c.publish(f"dockyard/v1/selftest-{tag}/echo", b"ok", qos=1)
        echo = await asyncio.wait_for(anext(aiter(c.messages)), timeout=3)
        assert echo.payload == b"ok"


async def test_publishing_counts_as_activity_so_no_pings_are_sent(infra):
    """paho 2.2 pings every keepalive even while publishing (it never records writes); the
    override records each publish, so a client that publishes more often than keepalive never
    pings (each PINGRESP would be one more wake-up of an idle agent)."""
    tag = uuid.uuid4().hex[:8]
    async with make_client(MQTT_URL, f"selftest-busy-{tag}", keepalive=KEEPALIVE, misc_interval=None) as c:
        pings = count_pings(c)
        for _ in range(8):  # 4 s: two keepalive periods
            await asyncio.sleep(0.5)
            c.housekeeping()
            await c.publish(f"dockyard/v1/selftest-{tag}/beat", b"x", qos=1)
        assert pings == []
        for _ in range(6):  # 3 s silent: now a ping is due
            await asyncio.sleep(0.5)
            c.housekeeping()
        assert pings, "an idle client must still ping"


@pytest.mark.parametrize("burst", [500, 7])
async def test_batch_io_reads_a_burst_in_order_and_acknowledges_each_message_in_few_writes(infra, monkeypatch,
                                                                                          burst):
    """batch_io (the orchestrator's client): a burst of QoS 1 messages is read in a few wake-ups
    and few ``recv`` calls, and their PUBACKs go out joined in a few sends; every message arrives
    once, in order, and is acknowledged exactly once. With a reader burst of 7 packets, what one
    ``recv`` read beyond them is handled without the socket waking the reader again."""
    monkeypatch.setattr(dockyard.mqtt, "_READ_BURST", burst)
    reads: list[object] = []  # the paho client of each recv
    real_recv = paho_client.Client._sock_recv

    def counting_recv(self, bufsize):
        reads.append(self)
        return real_recv(self, bufsize)

    monkeypatch.setattr(paho_client.Client, "_sock_recv", counting_recv)
    tag = uuid.uuid4().hex[:8]
    topic, n = f"dockyard/v1/selftest-{tag}/burst", 2000
    async with make_client(MQTT_URL, f"selftest-batch-{tag}", batch_io=True, max_inflight_messages=0) as sub, \
            make_client(MQTT_URL, f"selftest-pub-{tag}", max_inflight_messages=0) as pub:
        sent: list[bytes] = []
        orig = sub._client._sock_send

        def spy(buf):
            sent.append(bytes(buf))
            return orig(buf)

        sub._client._sock_send = spy
        pub.pending_calls_threshold = n + 1  # a burst on purpose: no warning per publish
        await sub.subscribe(topic, qos=1)
        await asyncio.gather(*(pub.publish(topic, str(i).encode(), qos=1) for i in range(n)))
        got = []
        async with asyncio.timeout(30):
            async for m in sub.messages:
                got.append(int(m.payload))
                if len(got) == n:
                    break
        assert got == list(range(n))
        sub_reads = sum(c is sub._client for c in reads)
        assert sub_reads < n / 4, f"{sub_reads} recv calls for {n} messages: reads were not buffered"
        async with asyncio.timeout(5):
            while sum(p[0] & 0xF0 == 0x40 for p in packets(b"".join(sent))) < n:  # the last write may be queued
                await asyncio.sleep(0.05)
        pubacks = [p for p in packets(b"".join(sent)) if p[0] & 0xF0 == 0x40]
        assert len(pubacks) == n and len({p[2:4] for p in pubacks}) == n  # one per message id
        assert len(sent) < n / 4, f"{len(sent)} sends for {n} acknowledgements: writes were not joined"


def packets(stream: bytes) -> list[bytes]:
    """The MQTT packets in ``stream`` (fixed header, remaining length, body)."""
    out, i = [], 0
    while i < len(stream):
        j, length, mult = i + 1, 0, 1
        while True:
            b = stream[j]
            length += (b & 127) * mult
            mult *= 128
            j += 1
            if not b & 128:
                break
        out.append(stream[i:j + length])
        i = j + length
    return out


async def test_batch_io_handles_what_one_read_took_beyond_a_burst_without_the_socket_waking_it(infra, monkeypatch):
    """200 messages wait in the subscriber's socket while its reader is off; back on, one wake-up
    reads them all into the buffer, handles a burst of 7, and must go on by itself (the socket
    has nothing more to say)."""
    import fcntl
    import struct
    import termios

    monkeypatch.setattr(dockyard.mqtt, "_READ_BURST", 7)
    tag = uuid.uuid4().hex[:8]
    topic, n = f"dockyard/v1/selftest-{tag}/held", 200
    async with make_client(MQTT_URL, f"selftest-held-{tag}", batch_io=True) as sub, \
            make_client(MQTT_URL, f"selftest-heldpub-{tag}", max_inflight_messages=0) as pub:
        await sub.subscribe(topic, qos=1)
        sock = sub._client.socket()
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        payloads = [f"{i:03d}".encode() for i in range(n)]
        await asyncio.gather(*(pub.publish(topic, p, qos=1) for p in payloads))
        each = 1 + 1 + 2 + len(topic) + 2 + 1 + 3  # header, length, topic, packet id, properties, payload
        async with asyncio.timeout(10):
            while struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0] < n * each:
                await asyncio.sleep(0.01)
        sub._drain_reads(sub._client, sock)  # the reader back on
        got = []
        async with asyncio.timeout(2):  # within the keepalive (5 s): no PINGRESP wakes the socket
            async for m in sub.messages:
                got.append(m.payload)
                if len(got) == n:
                    break
        assert got == payloads
