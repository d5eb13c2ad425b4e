"""One agent per node id: look before taking the node's MQTT client id.

Mosquitto's client-id takeover closes the older connection and publishes its Will, so a second agent with a live
node's id would knock the first off (and both would then act on the same containers). Before connecting as the
node, the agent:

1. locks ``<state dir>/agent.lock`` (flock, held for its life): a second agent with the same state directory on
   this host is refused at once;
2. reads the node's retained presence with a probe client id of its own. ``offline`` or none: go. ``online`` with
   a boot id this state directory recorded (our own previous run, which crashed: we hold the lock): go. ``online``
   from anyone else: that agent may be live, or dead with its Will not fired yet; wait the keepalive window (the
   Will fires after 1.5x keepalive), going as soon as its presence turns ``offline``; still ``online`` after it:
   refused, naming the other agent's host.

:func:`verdict` is the decision (pure); :func:`claim` the I/O around it.
"""
from __future__ import annotations

import asyncio
import fcntl
import math
import os
import uuid
from pathlib import Path
from typing import IO, Literal

import aiomqtt
from pydantic import ValidationError

from dockyard.dynsec import Credentials
from dockyard.mqtt import broker_urls, make_client
from dockyard.wire import Presence, node_topic

LOCK_FILE = "agent.lock"
BOOT_FILE = "boot-ids"  # the boot ids this state directory's agents used (the last few)
KEEP_BOOTS = 5
SETTLE = 0.2  # seconds to wait for the retained presence after the second SUBACK (it is there already)
_held: list[IO[str]] = []  # the lock, held until the process exits


class ClaimError(Exception):
    """Another agent runs with this node id; the message names where."""


def keepalive_for(status_interval: float) -> int:
    """An agent's MQTT keepalive (as agent.session computes it): its Will fires 1.5x this after it went silent."""
    return max(10, math.ceil(3 * status_interval))


def verdict(presence: Presence | None, own_boots: set[str]) -> Literal["go", "wait"]:
    if presence is None or presence.state == "offline" or presence.bootId in own_boots:
        return "go"
    return "wait"


def _lock(state_dir: Path, node_id: str) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fh = open(state_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        other = fh.read().strip() or "?"
        fh.close()
        raise ClaimError(f"another agent for node {node_id} runs on this host (pid {other}, holding "
                         f"{state_dir / LOCK_FILE}): stop it first") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    _held.append(fh)


def _own_boots(state_dir: Path) -> list[str]:
    try:
        return (state_dir / BOOT_FILE).read_text().split()
    except OSError:
        return []


def _parse(payload: bytes) -> Presence | None:
    try:
        return Presence.model_validate_json(payload) if payload else None
    except ValidationError:
        return None


async def claim(state_dir: Path, mqtt_url: str, cluster: str, node_id: str, boot_id: str,
                credentials: Credentials | None, ca_file: str | None, log) -> None:  # noqa: ANN001
    """Return once this agent may take the node's client id; ClaimError when another agent holds it.
    ``mqtt_url`` may name several brokers (a pair, URL1,URL2): the first one reachable is asked."""
    _lock(state_dir, node_id)
    urls = broker_urls(mqtt_url)
    for i, url in enumerate(urls):
        try:
            await _look(state_dir, url, cluster, node_id, boot_id, credentials, ca_file, log)
            return
        except (aiomqtt.MqttError, OSError):
            if i == len(urls) - 1:
                raise


async def _look(state_dir: Path, mqtt_url: str, cluster: str, node_id: str, boot_id: str,
                credentials: Credentials | None, ca_file: str | None, log) -> None:  # noqa: ANN001
    own = _own_boots(state_dir)
    topic = node_topic(cluster, node_id, "presence")
    seen: asyncio.Queue[Presence | None] = asyncio.Queue()
    probe = f"dockyard-probe-{cluster}-{node_id}"[:110] + f"-{uuid.uuid4().hex[:8]}"
    async with make_client(mqtt_url, probe, credentials=credentials, ca_file=ca_file, keepalive=10) as client:
        async def pump() -> None:
            async for msg in client.messages:
                if msg.topic.value == topic:
                    await seen.put(_parse(bytes(msg.payload)))  # type: ignore[arg-type]
        reader = asyncio.create_task(pump())
        await client.subscribe(topic, qos=1)
        # The broker sends a subscription's retained message right after its SUBACK, so by the SUBACK of a
        # second subscription (a topic the node may read) the presence, if retained, is already here.
        await client.subscribe(node_topic(cluster, node_id, "refusal"), qos=1)
        try:
            current: Presence | None = None
            try:
                current = await asyncio.wait_for(seen.get(), SETTLE)  # the retained one, if any
            except TimeoutError:
                pass
            if verdict(current, set(own)) == "wait":
                assert current is not None
                other = current
                host = other.attributes.get("hostname", "an unknown host")
                window = 1.5 * keepalive_for(current.statusInterval) + 2
                log.warning("node's presence is online from another agent: waiting for it to go offline",
                            other_host=host, other_boot=current.bootId, wait_seconds=window)
                try:
                    async with asyncio.timeout(window):
                        while verdict(current, set(own)) == "wait":
                            current = await seen.get()
                except TimeoutError:
                    raise ClaimError(f"node {node_id} of cluster {cluster} is already live on host {host} "
                                     f"(boot {other.bootId}, online for more than the {window:.0f} s keepalive "
                                     "window): refusing to run a second agent with its node id") from None
        finally:
            reader.cancel()
    (state_dir / BOOT_FILE).write_text("\n".join([*own[-(KEEP_BOOTS - 1):], boot_id]) + "\n")
