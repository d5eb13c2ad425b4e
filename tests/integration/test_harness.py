"""Self-test of the integration harness: real broker and dockerd, no orchestrator needed."""
from __future__ import annotations

import asyncio
import socket
import time
import uuid

import pytest
from harness import MQTT_URL, docker, wait_for

from dockyard.mqtt import make_client

pytestmark = pytest.mark.integration


def test_infra_is_there(infra):
    # The fixture itself asserts dockerd, the broker and the image; reaching here is the test.
    assert docker("info", "--format", "{{.ServerVersion}}").stdout.strip()


async def test_mqtt_round_trip_with_nodelay(infra):
    # The machine-wide development broker (anonymous, scripts/bootstrap.sh): its set_tcp_nodelay is what is checked.
    topic = f"dockyard/v1/selftest-{uuid.uuid4().hex[:8]}/ping"
    async with make_client(MQTT_URL, f"selftest-sub-{uuid.uuid4().hex[:6]}") as sub, \
            make_client(MQTT_URL, f"selftest-pub-{uuid.uuid4().hex[:6]}") as pub:
        # make_client sets TCP_NODELAY on the socket; check it really took effect.
        sock = pub._client.socket()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        await sub.subscribe(topic, qos=1)
        rtts = []
        for i in range(20):
            t0 = time.perf_counter()
            await pub.publish(topic, f"ping {i}".encode(), qos=1)
            msg = await asyncio.wait_for(anext(aiter(sub.messages)), timeout=5)
            rtts.append(time.perf_counter() - t0)
            assert msg.payload == f"ping {i}".encode()
    # With Nagle + delayed ACK a QoS 1 round trip is ~40-90 ms; with NODELAY on both ends ~1 ms.
    # A generous bound that still catches `set_tcp_nodelay` missing from the broker config.
    assert sorted(rtts)[len(rtts) // 2] < 0.035, f"median MQTT round trip {sorted(rtts)[10] * 1000:.1f} ms"


def test_container_with_label_is_listed_and_cleaned_up(dockyard_env):
    env = dockyard_env
    assert env.cluster.startswith("t-") and len(env.cluster) == 10
    name = f"dockyard-selftest-{env.cluster}"
    docker("run", "-d", "--name", name, "--label", f"dockyard.cluster={env.cluster}",
           "--label", "dockyard.node=selftest", env.image, "sleep", "300")
    rows = wait_for(lambda: env.containers(all=False), timeout=10, message="running selftest container")
    assert [r["Names"] for r in rows] == [name]
    assert rows[0]["Labels"]["dockyard.node"] == "selftest"
    assert env.containers(node_id="selftest") and not env.containers(node_id="other")

    # A retained message this test "created" under its cluster must be cleared by cleanup.
    topic = f"dockyard/v1/{env.cluster}/nodes/selftest/presence"
    docker_exit = docker("run", "--rm", env.image, "sh", "-c", "echo hi").stdout.strip()
    assert docker_exit == "hi"
    _publish_retained(env, topic, b'{"state":"online"}')
    assert topic in env.retained()

    assert env.cleanup() == []
    assert env.containers() == []
    assert env.retained() == {}
    assert env.cleanup() == []  # idempotent: the fixture runs it again


def test_wait_for_reports_message_and_last_value():
    seen = iter(range(1000))
    with pytest.raises(AssertionError, match=r"waiting for the answer; last value: \[\]"):
        wait_for(lambda: [] if next(seen) >= 0 else None, timeout=0.2, message="the answer")
    assert wait_for(lambda: [1], timeout=1) == [1]


def _publish_retained(env, topic: str, payload: bytes) -> None:
    c = env.mqtt_client("selftest")  # the test's broker (with a login on a secure one)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=True).wait_for_publish(timeout=5)
    c.loop_stop()
    c.disconnect()


def test_the_default_broker_is_a_secure_one_of_the_tests_own(dockyard_env):
    """The secure path is the tested path: no anonymous access, the orchestrator and agents log in."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from dockyard.mqtt import parse_url

    env = dockyard_env
    assert env.broker is not None and env.mqtt_url == env.broker.url != MQTT_URL
    b = parse_url(env.mqtt_url)
    anonymous = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"selftest-anon-{uuid.uuid4().hex[:6]}")
    codes: list = []
    anonymous.on_connect = lambda _c, _u, _f, rc, _p: codes.append(rc)
    anonymous.connect(b.host, b.port, keepalive=10)
    anonymous.loop_start()
    try:
        wait_for(lambda: codes, timeout=10, message="CONNACK")
    finally:
        anonymous.loop_stop()
    assert codes[0].is_failure, codes
    env.start_orchestrator()
    env.start_agent("n1")
    assert "--mqtt-credentials" in env.agents["n1"].argv and "--mqtt-credentials" in env.orchestrator.argv


@pytest.mark.anonymous_broker("checks the opt-out itself")
def test_a_test_may_opt_out_to_the_shared_anonymous_broker(dockyard_env):
    assert dockyard_env.broker is None and dockyard_env.mqtt_url == MQTT_URL
