"""Issue 16: heartbeats skip aiomqtt's queue (dockyard.mqtt.Client fast path) and reach the controller."""
from __future__ import annotations

from paho.mqtt.client import MQTTMessage

from dockyard.mqtt import make_client
from orchestrator.bus import Bus


class FakeController:
    def __init__(self) -> None:
        self.beats: list[tuple[str, str, str]] = []

    def on_heartbeat(self, cluster: str, node_id: str, boot_id: str) -> None:
        self.beats.append((cluster, node_id, boot_id))


def message(topic: bytes, payload: bytes) -> MQTTMessage:
    m = MQTTMessage(topic=topic)
    m.payload = payload
    return m


async def test_beats_go_to_the_handler_and_everything_else_to_the_queue():
    ctl = FakeController()
    bus = Bus("mqtt://127.0.0.1:1", ctl)
    client = make_client("mqtt://127.0.0.1:1", "t")
    client.fast_suffix, client.fast_handler = b"/heartbeat", bus.heartbeat
    client._on_message(None, None, message(b"dockyard/v1/prod/nodes/n1/heartbeat", b"boot-1"))
    client._on_message(None, None, message(b"dockyard/v1/prod/nodes/n1/status", b"{}"))
    client._on_message(None, None, message(b"dockyard/v1/bad/heartbeat", b"boot-1"))  # dropped
    client._on_message(None, None, message(b"dockyard/v1/prod/nodes/n2/heartbeat", b"x" * 100))  # too big: dropped
    assert ctl.beats == [("prod", "n1", "boot-1")]
    assert client._queue.qsize() == 1 and str(client._queue.get_nowait().topic) == "dockyard/v1/prod/nodes/n1/status"


class RecordingController(FakeController):
    def __init__(self) -> None:
        super().__init__()
        self.heard: list[float] = []
        self.state = type("S", (), {"nodes": {}})()

    def on_broker_heard(self, sent_at: float) -> None:
        self.heard.append(sent_at)


async def test_direct_handler_takes_every_other_message_in_order_and_never_raises():
    ctl = RecordingController()
    bus = Bus("mqtt://127.0.0.1:1", ctl)
    handled: list[str] = []
    bus.handle = lambda topic, payload, retain=False: handled.append(topic)  # type: ignore[method-assign]
    client = make_client("mqtt://127.0.0.1:1", "t")
    client.fast_suffix, client.fast_handler = b"/heartbeat", bus.heartbeat
    client.direct_handler = bus.on_message
    client._on_message(None, None, message(b"dockyard/v1/prod/nodes/n1/presence", b"{}"))
    client._on_message(None, None, message(b"dockyard/v1/prod/nodes/n1/heartbeat", b"boot-1"))
    client._on_message(None, None, message(bus.probe_topic.encode(), b"1700000000.5"))
    client._on_message(None, None, message(b"dockyard/v1/prod/nodes/n1/status", b"{}"))
    client._on_message(None, None, message(b"dockyard/v1/\xff\xfe/nodes/n1/status", b"{}"))  # not UTF-8: logged
    assert handled == ["dockyard/v1/prod/nodes/n1/presence", "dockyard/v1/prod/nodes/n1/status"]
    assert ctl.heard == [1700000000.5] and ctl.beats == [("prod", "n1", "boot-1")]
    assert client._queue.qsize() == 0
