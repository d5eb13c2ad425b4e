"""dockyard.mqtt shares paho's constant MQTT 5 property tables between Properties instances
(a CPU saving per message): packing, unpacking and per-instance values stay as paho's own."""
from __future__ import annotations

import dockyard.mqtt  # noqa: F401 - applies the sharing
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def test_properties_share_the_tables_and_keep_their_own_values():
    assert getattr(Properties, "_dockyard_shared_tables", False)
    a, b = Properties(PacketTypes.PUBLISH), Properties(PacketTypes.PUBACK)
    assert a.names is b.names and a.properties is b.properties and a.types is b.types
    assert a.packetType == PacketTypes.PUBLISH and b.packetType == PacketTypes.PUBACK
    a.UserProperty = ("k", "v")
    a.MessageExpiryInterval = 30
    assert not hasattr(b, "UserProperty") and b.isEmpty() and not a.isEmpty()
    assert len(a.names) == 27 and a.names["User Property"] == 38  # the tables themselves untouched


def test_properties_pack_and_unpack_as_before():
    p = Properties(PacketTypes.PUBLISH)
    p.UserProperty = [("a", "1"), ("b", "2")]
    p.MessageExpiryInterval = 60
    p.ContentType = "application/json"
    packed = p.pack()
    q, length = Properties(PacketTypes.PUBLISH).unpack(packed)
    assert length == len(packed)
    assert q.UserProperty == [("a", "1"), ("b", "2")] and q.MessageExpiryInterval == 60
    assert q.ContentType == "application/json"
    assert Properties(PacketTypes.PUBLISH).pack() == b"\x00"  # none: a zero length
    try:
        p.ReceiveMaximum = 10  # a CONNECT property: refused for a PUBLISH, as paho does
    except Exception as e:  # noqa: BLE001 - paho raises its MQTTException
        assert "does not apply" in str(e)
    else:
        raise AssertionError("a property of another packet type was accepted")


def test_clear_drops_the_values_set_and_keeps_the_tables():
    p = Properties(PacketTypes.PUBLISH)
    p.UserProperty = ("k", "v")
    p.CorrelationData = b"id"
    p.clear()
    assert p.isEmpty() and not hasattr(p, "UserProperty") and not hasattr(p, "CorrelationData")
    assert p.packetType == PacketTypes.PUBLISH and len(p.names) == 27  # the tables stay
    p.ResponseTopic = "r/t"  # reused after a clear, as unpack does
    q, _ = Properties(PacketTypes.PUBLISH).unpack(p.pack())
    assert q.ResponseTopic == "r/t" and not hasattr(q, "UserProperty")
