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
