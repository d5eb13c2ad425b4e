"""Mosquitto's dynamic-security plugin, as dockyard uses it (pure: documents and commands, no I/O).

One broker client per node, each with a role of its own (2.0.11's ACLs match literal topics: no ``%u``/``%c``),
allowing exactly: subscribe to and receive its own ``desired``, ``presence``, ``refusal`` and ``requests``
(logs and exec, :mod:`dockyard.wire_rr`), publish its own ``status``, ``heartbeat`` and ``presence`` (its Will too)
and anything under its own ``responses/``. The orchestrator's client has ``dockyard/v1/#`` and ``$CONTROL/dynamic-security/#``
(the plugin's admin topic, granted to nobody else). Everything not allowed is denied: the default ACL access
denies publishing, subscribing and receiving. See docs/security.md.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dockyard.wire import PROTOCOL, node_topic
from dockyard.wire_rr import REQUESTS, responses_prefix

PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"  # Debian's mosquitto package
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
ORCHESTRATOR_USER = "dockyard-orchestrator"
ORCHESTRATOR_ROLE = "dockyard-orchestrator"
ITERATIONS = 101  # the plugin's own default (mosquitto_ctrl writes the same)


class Credentials(BaseModel):
    """A broker login, as a credentials file holds it (JSON, mode 0600): ``dockyard broker init`` writes the
    orchestrator's, ``dockyard node join`` a node's."""

    model_config = ConfigDict(extra="ignore")
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def invalid_name(name: str) -> str | None:
    """Why a cluster or node name cannot be a topic level of its own ACL, or None."""
    if not _NAME.fullmatch(name):
        return "must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


def new_password() -> str:
    return secrets.token_urlsafe(24)


def hashed(password: str, salt: bytes | None = None) -> dict[str, Any]:
    """The plugin's stored form of a password: PBKDF2-HMAC-SHA512, 64 bytes, base64 (as mosquitto_ctrl writes)."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS, 64)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": ITERATIONS}


def _acl(kind: str, topic: str) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def orchestrator_acls() -> list[dict[str, Any]]:
    acls = []
    for topic in (f"{PROTOCOL}/#", "$CONTROL/dynamic-security/#"):
        acls += [_acl("publishClientSend", topic), _acl("publishClientReceive", topic),
                 _acl("subscribePattern", topic), _acl("unsubscribePattern", topic)]
    return acls


def node_name(cluster: str, node_id: str) -> str:
    """The node's broker username and role name (both the same)."""
    return f"dockyard-node/{cluster}/{node_id}"


# What a node reads of its own subtree: its desired document, its presence (retained), and the orchestrator's
# ``refusal`` of its boot (retained; the wire protocol's compatibility rule).
NODE_READS = ("desired", "presence", "refusal", REQUESTS)
NODE_WRITES = ("status", "presence", "heartbeat")


def node_acls(cluster: str, node_id: str) -> list[dict[str, Any]]:
    acls = []
    for leaf in NODE_READS:
        t = node_topic(cluster, node_id, leaf)
        acls += [_acl("subscribeLiteral", t), _acl("publishClientReceive", t), _acl("unsubscribeLiteral", t)]
    acls += [_acl("publishClientSend", node_topic(cluster, node_id, leaf)) for leaf in NODE_WRITES]
    # Responses go to ``responses/<requester>`` (a publish ACL matches its topic as a pattern).
    return acls + [_acl("publishClientSend", responses_prefix(cluster, node_id) + "#")]


def initial_config(orchestrator_password: str) -> dict[str, Any]:
    """The plugin's configuration file before any node joined: the orchestrator's client and role only."""
    return {
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                             "unsubscribe": False},
        "clients": [{"username": ORCHESTRATOR_USER, "textname": "the dockyard orchestrator",
                     "roles": [{"rolename": ORCHESTRATOR_ROLE}], **hashed(orchestrator_password)}],
        "groups": [],
        "roles": [{"rolename": ORCHESTRATOR_ROLE, "textname": "dockyard/v1/# and the dynamic-security admin topic",
                   "acls": orchestrator_acls()}],
    }


@dataclass(frozen=True)
class TlsListener:
    port: int
    bind: str
    cafile: str
    certfile: str
    keyfile: str


def mosquitto_conf(config_file: str, port: int | None, bind: str = "127.0.0.1", persistence_dir: str | None = None,
                   tls: TlsListener | None = None) -> str:
    """A mosquitto.conf with the plugin and no anonymous access: a plain listener (``port``; meant for loopback)
    and/or a TLS one. The plugin and ``allow_anonymous`` apply to every listener (per_listener_settings false)."""
    lines = [
        "# dockyard broker: no anonymous access; clients and ACLs in the dynamic-security plugin",
        "per_listener_settings false",
        "allow_anonymous false",
        f"plugin {PLUGIN}",
        f"plugin_opt_config_file {config_file}",
        "set_tcp_nodelay true",  # without it a QoS 1 round trip costs ~88 ms instead of ~1 ms
        # The orchestrator publishes one desired document per node at once, and agents queue status while the
        # orchestrator is away: Mosquitto's defaults (1000 queued, 20 in flight per client) would drop or stall them.
        "max_queued_messages 100000",
        "max_inflight_messages 0",
    ]
    if port is not None:
        lines.append(f"listener {port} {bind}")
    if tls is not None:
        lines += [f"listener {tls.port} {tls.bind}", f"cafile {tls.cafile}", f"certfile {tls.certfile}",
                  f"keyfile {tls.keyfile}", "tls_version tlsv1.2"]
    if persistence_dir:
        lines += ["persistence true", f"persistence_location {persistence_dir.rstrip('/')}/"]
    else:
        lines.append("persistence false")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Plan:
    """Commands for ``$CONTROL/dynamic-security/v1``: ``tolerate`` = commands whose failure is expected (a
    delete of what does not exist)."""

    commands: list[dict[str, Any]]
    tolerate: frozenset[int] = frozenset()

    def payload(self) -> bytes:
        return json.dumps({"commands": self.commands}).encode()


def join_plan(cluster: str, node_id: str, password: str) -> Plan:
    """(Re)create the node's client and role: a previous credential of the node stops working (and its
    connection is closed by the plugin)."""
    name = node_name(cluster, node_id)
    return Plan([
        {"command": "deleteClient", "username": name},
        {"command": "deleteRole", "rolename": name},
        {"command": "createRole", "rolename": name, "textname": f"node {node_id} of cluster {cluster}",
         "acls": node_acls(cluster, node_id)},
        {"command": "createClient", "username": name, "password": password, "roles": [{"rolename": name}],
         "textname": f"node {node_id} of cluster {cluster}"},
    ], tolerate=frozenset({0, 1}))


def revoke_plan(cluster: str, node_id: str) -> Plan:
    """Delete the node's client (its connection is closed) and role."""
    name = node_name(cluster, node_id)
    return Plan([{"command": "deleteClient", "username": name}, {"command": "deleteRole", "rolename": name}],
                tolerate=frozenset({1}))


def forget_plan(cluster: str, node_id: str) -> Plan:
    """As :func:`revoke_plan`, for a node that may never have had a credential (``node delete --force``)."""
    return Plan(revoke_plan(cluster, node_id).commands, tolerate=frozenset({0, 1}))


def failures(plan: Plan, response: dict[str, Any]) -> list[str]:
    """The errors of a response to ``plan`` that matter (its tolerated commands aside)."""
    out = []
    for i, r in enumerate(response.get("responses", [])):
        if r.get("error") and i not in plan.tolerate:
            out.append(f"{r.get('command')}: {r['error']}")
    return out
