"""The orchestrator managing node clients in Mosquitto's dynamic-security plugin (the shell around dockyard.dynsec).

Each operation is one short MQTT session with the orchestrator's own broker credentials (its role has
``$CONTROL/dynamic-security/#``): subscribe to the response topic, publish the plan's commands in one message, wait
for the one response. Kept off the bus's connection so an administrative call never delays desired documents.
"""
from __future__ import annotations

import asyncio
import json
import uuid

import aiomqtt

from dockyard import dynsec
from dockyard.dynsec import Credentials, Plan
from dockyard.mqtt import make_client

TIMEOUT = 5.0


class BrokerAdminError(Exception):
    """The broker refused or did not answer; ``status``: the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class BrokerAdmin:
    def __init__(self, url: str, credentials: Credentials | None, ca_file: str | None = None) -> None:
        self.url, self.credentials, self.ca_file = url, credentials, ca_file
        self._lock = asyncio.Lock()  # one response topic: one operation at a time

    async def apply(self, plan: Plan) -> None:
        hint = ("the broker must run Mosquitto's dynamic-security plugin and the orchestrator must log in with "
                "--mqtt-credentials (docs/security.md)")
        async with self._lock:
            try:
                async with make_client(self.url, f"dockyard-admin-{uuid.uuid4().hex[:8]}",
                                       credentials=self.credentials, ca_file=self.ca_file) as client:
                    await client.subscribe(dynsec.RESPONSE_TOPIC, qos=1)
                    await client.publish(dynsec.CONTROL_TOPIC, plan.payload(), qos=1)
                    async with asyncio.timeout(TIMEOUT):
                        async for msg in client.messages:
                            response = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                            break
            except TimeoutError:
                raise BrokerAdminError(f"the broker did not answer the dynamic-security command; {hint}",
                                       504) from None
            except aiomqtt.MqttError as e:
                raise BrokerAdminError(f"cannot manage broker clients: {e}; {hint}") from None
        errors = dynsec.failures(plan, response)
        if errors:
            raise BrokerAdminError("the broker refused: " + "; ".join(errors))
