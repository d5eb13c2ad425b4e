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


class BrokerAdmins:
    """The node clients on every broker of a pair (each broker has its own dynamic-security file). A change
    applied to at least one broker succeeds (the others are logged: a broker that is down gets it when the
    orchestrator next applies it there); refused by all, it fails with the first broker's error."""

    def __init__(self, admins: list[BrokerAdmin], log) -> None:
        self.admins, self.log = admins, log

    async def apply(self, plan: Plan) -> None:
        results = await asyncio.gather(*(a.apply(plan) for a in self.admins), return_exceptions=True)
        errors = [(a, r) for a, r in zip(self.admins, results, strict=True) if isinstance(r, BaseException)]
        for a, e in errors:
            self.log.warning("a broker did not take the node-client change", broker=a.url, error=str(e))
        if len(errors) == len(self.admins):
            raise errors[0][1]
