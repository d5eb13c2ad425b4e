"""dockyard.mqtt's joined writes (batch_io): queued packets whose completion paho does nothing
for go out in one send, in order; QoS 0 publishes (their completion is on_publish) stay alone."""
from __future__ import annotations

import socket

from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from dockyard.mqtt import _buffer_reads, _coalesce_writes, _dispatch_without_filters


def test_joined_writes_keep_the_order_and_leave_qos0_publishes_alone():
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    a, b = socket.socketpair()
    a.setblocking(False)
    c._sock = a
    sends: list[bytes] = []
    orig = c._sock_send
    c._sock_send = lambda buf: (sends.append(bytes(buf)), orig(buf))[1]
    published: list[int] = []
    c.on_publish = lambda *args: published.append(args[2])
    _coalesce_writes(c)

    def queue(command: int, qos: int, body: bytes, mid: int = 0) -> None:
        info = paho.MQTTMessageInfo(mid)
        c._out_packet.append({"command": command, "mid": mid, "qos": qos, "pos": 0, "to_process": len(body),
                              "packet": body, "info": info})

    queue(0x40, 0, b"\x40\x02\x00\x01")  # PUBACK
    queue(0x32, 1, b"\x32\x05\x00\x01t\x00\x02")  # QoS 1 PUBLISH
    queue(0x40, 0, b"\x40\x02\x00\x03")
    queue(0x30, 0, b"\x30\x04\x00\x01tq", mid=9)  # QoS 0 PUBLISH: its own send, then on_publish
    queue(0x40, 0, b"\x40\x02\x00\x04")
    queue(0xC0, 0, b"\xc0\x00")  # PINGREQ
    assert c._packet_write() == 0
    assert sends == [b"\x40\x02\x00\x01\x32\x05\x00\x01t\x00\x02\x40\x02\x00\x03", b"\x30\x04\x00\x01tq",
                     b"\x40\x02\x00\x04\xc0\x00"]
    assert b.recv(100) == b"".join(sends) and not c._out_packet
    assert published == [9]
    a.close()
    b.close()


def test_a_partial_joined_write_resumes_where_it_stopped():
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    a, b = socket.socketpair()
    c._sock = a
    calls = []

    def short_send(buf):  # the kernel took 3 bytes this time
        calls.append(bytes(buf))
        return a.send(bytes(buf[:3]))

    c._sock_send = short_send
    _coalesce_writes(c)
    for mid in (1, 2):
        c._out_packet.append({"command": 0x40, "mid": 0, "qos": 0, "pos": 0, "to_process": 4,
                              "packet": b"\x40\x02\x00" + bytes([mid]), "info": None})
    while c._out_packet:
        c._packet_write()
    assert b.recv(100) == b"\x40\x02\x00\x01\x40\x02\x00\x02"
    assert calls[0] == b"\x40\x02\x00\x01\x40\x02\x00\x02"  # joined first, then the rest of it
    a.close()
    b.close()


def test_messages_reach_on_message_without_topic_matching_until_a_filter_is_added():
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    got: list[tuple[str, bytes]] = []
    c.on_message = lambda client, userdata, m: got.append(("all", m.payload))
    matched = []
    real_match = c._on_message_filtered.iter_match
    c._on_message_filtered.iter_match = lambda topic: (matched.append(topic), real_match(topic))[1]
    _dispatch_without_filters(c)

    def message(topic: bytes, payload: bytes) -> paho.MQTTMessage:
        m = paho.MQTTMessage(topic=topic)
        m.payload = payload
        return m

    c._handle_on_message(message(b"a/b", b"1"))
    assert got == [("all", b"1")] and matched == []  # no filter: straight to on_message
    c.message_callback_add("x/#", lambda client, userdata, m: got.append(("x", m.payload)))
    c._handle_on_message(message(b"x/y", b"2"))
    c._handle_on_message(message(b"a/b", b"3"))
    assert got == [("all", b"1"), ("x", b"2"), ("all", b"3")] and matched == ["x/y", "a/b"]  # paho's dispatch
    c.message_callback_remove("x/#")

    def boom(client, userdata, m):
        raise RuntimeError("handler failed")

    c.on_message = boom
    try:
        c._handle_on_message(message(b"a/b", b"4"))
    except RuntimeError:
        pass
    else:
        raise AssertionError("an exception in on_message is raised, as paho does unless suppressed")
    c.suppress_exceptions = True
    c._handle_on_message(message(b"a/b", b"5"))  # logged, not raised


def _publish_packet(topic: bytes, payload: bytes) -> bytes:
    """An MQTT 5 QoS 0 PUBLISH (no properties)."""
    body = len(topic).to_bytes(2, "big") + topic + b"\x00" + payload
    n, length = len(body), b""
    while True:
        byte, n = n % 128, n // 128
        length += bytes([byte | (128 if n else 0)])
        if not n:
            break
    return b"\x30" + length + body


def _reading_client(monkeypatch):
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    a, b = socket.socketpair()
    a.setblocking(False)
    c._sock = a
    raw_reads: list[int] = []
    real = paho.Client._sock_recv

    def counting(self, bufsize):
        raw_reads.append(bufsize)
        return real(self, bufsize)

    monkeypatch.setattr(paho.Client, "_sock_recv", counting)
    got: list[bytes] = []
    c.on_message = lambda client, userdata, m: got.append(m.payload)
    return c, a, b, raw_reads, got


def drain(c) -> int:
    rc = MQTTErrorCode.MQTT_ERR_SUCCESS
    while rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
        rc = c._packet_read()
    return rc


def test_buffered_reads_take_a_burst_of_packets_in_a_few_system_calls(monkeypatch):
    c, a, b, raw_reads, got = _reading_client(monkeypatch)
    left = _buffer_reads(c, a)
    b.sendall(b"".join(_publish_packet(b"t/beat", str(i).encode()) for i in range(300)))
    assert drain(c) == MQTTErrorCode.MQTT_ERR_AGAIN
    assert got == [str(i).encode() for i in range(300)] and left() == 0
    assert len(raw_reads) <= 3, f"{len(raw_reads)} recv calls for 300 packets"  # paho alone: >= 900
    a.close()
    b.close()


def test_buffered_reads_resume_a_packet_split_across_reads_and_see_the_end(monkeypatch):
    c, a, b, raw_reads, got = _reading_client(monkeypatch)
    _buffer_reads(c, a)
    p = _publish_packet(b"t/s", b"x" * 300)  # a two-byte remaining length
    b.sendall(p[:2])
    assert drain(c) == MQTTErrorCode.MQTT_ERR_AGAIN and got == []
    b.sendall(p[2:150])
    assert drain(c) == MQTTErrorCode.MQTT_ERR_AGAIN and got == []
    b.sendall(p[150:] + _publish_packet(b"t/s", b"y"))
    assert drain(c) == MQTTErrorCode.MQTT_ERR_AGAIN and got == [b"x" * 300, b"y"]
    b.close()
    assert drain(c) == MQTTErrorCode.MQTT_ERR_CONN_LOST  # the peer closed: as paho's own reads
    a.close()


def test_buffered_reads_report_what_is_read_but_not_handled(monkeypatch):
    """The reader stops after a burst of packets; what it read beyond is counted, so it runs again."""
    c, a, b, raw_reads, got = _reading_client(monkeypatch)
    left = _buffer_reads(c, a)
    packets_ = [_publish_packet(b"t", bytes([i])) for i in range(10)]
    b.sendall(b"".join(packets_))
    for _ in range(4):
        assert c._packet_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert len(got) == 4 and left() == sum(map(len, packets_[4:]))
    c._sock = None  # another connection: the buffer is not this one's
    other, peer = socket.socketpair()
    other.setblocking(False)
    c._sock = other
    peer.sendall(_publish_packet(b"t", b"z"))
    assert c._packet_read() == MQTTErrorCode.MQTT_ERR_SUCCESS and got[-1] == b"z"
    for s in (a, b, other, peer):
        s.close()
