"""The machine's MQTT floor for bench/bus.py: QoS 1 round trips through the same broker with no
client library and no event loop on either side (blocking sockets, TCP_NODELAY, MQTT 3.1.1).

    python bench/_rawmqtt.py echo HOST PORT TOPIC_IN TOPIC_OUT   # the peer (a process)

and :func:`roundtrips` for the publishing side. What Python clients (aiomqtt, the agent) add on
top of this is theirs; what this costs is the machine's (process wake-ups, the broker).
"""
from __future__ import annotations

import re
import socket
import struct
import sys
import time

_GEN = re.compile(rb'"generation":(\d+)')
CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 0x10, 0x20, 0x30, 0x40, 0x82, 0x90


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _packet(head: int, body: bytes) -> bytes:
    return bytes([head]) + _varint(len(body)) + body


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


class Conn:
    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.mid = 0
        self.sock.sendall(_packet(CONNECT, _str("MQTT") + bytes([4, 2]) + struct.pack("!H", 60) + _str(client_id)))
        head, _ = self.read()
        if head & 0xF0 != CONNACK:
            raise RuntimeError(f"expected CONNACK, got {head:#x}")

    def read(self) -> tuple[int, bytes]:
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf):
                    b = self.buf[i]
                    n += (b & 127) * mult
                    mult *= 128
                    i += 1
                    if not b & 128:
                        break
                else:
                    i = -1
                if i > 0 and len(self.buf) >= i + n:
                    head, body = self.buf[0], bytes(self.buf[i:i + n])
                    del self.buf[:i + n]
                    return head, body
            data = self.sock.recv(262144)
            if not data:
                raise ConnectionError("broker closed the connection")
            self.buf += data

    def subscribe(self, topic: str) -> None:
        self.sock.sendall(_packet(SUBSCRIBE, struct.pack("!H", 1) + _str(topic) + b"\x01"))
        while self.read()[0] & 0xF0 != SUBACK:
            pass

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.mid = self.mid % 65535 + 1
        self.sock.sendall(_packet(PUBLISH | 0x02 | int(retain), _str(topic) + struct.pack("!H", self.mid) + payload))

    def next_publish(self) -> bytes:
        """The payload of the next PUBLISH received (acknowledged); PUBACKs are skipped."""
        while True:
            head, body = self.read()
            if head & 0xF0 != PUBLISH:
                continue
            tl = struct.unpack("!H", body[:2])[0]
            qos = (head >> 1) & 3
            if qos:
                self.sock.sendall(_packet(PUBACK, body[2 + tl:4 + tl]))
                return body[4 + tl:]
            return body[2 + tl:]


def echo(host: str, port: int, topic_in: str, topic_out: str) -> None:
    c = Conn(host, port, f"dockyard-bench-rawecho-{time.time_ns() % 10**9}")
    c.subscribe(topic_in)
    while True:
        p = c.next_publish()
        m = _GEN.search(p[:400])
        c.publish(topic_out, m.group(1) if m else b"0")


def roundtrips(host: str, port: int, topic_in: str, topic_out: str, payloads: list[tuple[int, bytes]],
               gap: float, timeout: float = 30.0) -> list[float]:
    """Publish each (generation, payload) retained to ``topic_in`` and wait for the echo of its
    generation on ``topic_out``; latencies in ms."""
    c = Conn(host, port, f"dockyard-bench-rawpub-{time.time_ns() % 10**9}")
    c.subscribe(topic_out)
    c.sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while True:  # wait until the echo peer is subscribed
        c.publish(topic_in, b'{"generation":0}')
        c.sock.settimeout(0.5)
        try:
            if c.next_publish() == b"0":
                break
        except socket.timeout:
            if time.monotonic() > deadline:
                raise
    c.sock.settimeout(timeout)
    lat: list[float] = []
    for gen, payload in payloads:
        t0 = time.perf_counter()
        c.publish(topic_in, payload, retain=True)
        while c.next_publish() != str(gen).encode():
            pass
        lat.append((time.perf_counter() - t0) * 1000)
        time.sleep(gap)
    c.publish(topic_in, b"", retain=True)  # clear the retained document
    c.sock.close()
    return lat


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "echo":
        try:
            echo(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
        except (KeyboardInterrupt, ConnectionError):
            pass
        sys.exit(0)
    sys.exit(f"usage: {sys.argv[0]} echo HOST PORT TOPIC_IN TOPIC_OUT")
