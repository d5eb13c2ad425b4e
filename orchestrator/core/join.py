"""One-time join tokens (pure): a node exchanges one, once, for its broker credential.

``dockyard node token create`` makes ``dyj_<id>_<secret>`` (shown once); the store keeps the record with
``sha256(secret)`` only, the cluster, an optional node name it is bound to, and its expiry. ``POST /v1/join``
(no bearer token: the join token is the credential) redeems it: :func:`redeem` decides, the shell marks the record
used before it creates the node's broker client. No I/O; time is an argument.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

PREFIX = "dyj_"
MAX_TTL = 7 * 24 * 3600.0  # a join token is for joining now, not a standing credential


@dataclass(frozen=True, slots=True)
class JoinToken:
    id: str
    digest: str  # sha256 hex of the secret
    cluster: str
    nodeId: str | None  # bound to this node name, or any
    expiresAt: float
    createdAt: float
    usedAt: float | None = None
    usedBy: str | None = None  # the node that redeemed it


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 401 (unknown, used, expired) or 403 (another node or cluster)
    error: str
    hint: str = "ask an admin for a new one: dockyard node token create"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_join_token(cluster: str, node_id: str | None, ttl: float, now: float) -> tuple[str, JoinToken]:
    """A new token (shown once) and the record the store keeps."""
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be more than 0 s and at most {MAX_TTL:.0f} s (7 days)")
    tid, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return f"{PREFIX}{tid}_{secret}", JoinToken(tid, digest(secret), cluster, node_id, now + ttl, now)


def parse(token: str) -> tuple[str, str] | None:
    """``dyj_<id>_<secret>`` -> (id, secret), or None."""
    token = token.strip()
    if not token.startswith(PREFIX):
        return None
    tid, sep, secret = token[len(PREFIX):].partition("_")
    return (tid, secret) if sep and tid and secret else None


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def redeem(rec: JoinToken | None, secret: str, cluster: str, node_id: str, now: float) -> JoinToken | Refusal:
    """May ``node_id`` of ``cluster`` join with this token? The record marked used, or why not."""
    if rec is None or not hmac.compare_digest(rec.digest, digest(secret)):
        return Refusal(401, "unknown join token")
    if rec.usedAt is not None:
        return Refusal(401, f"this join token was used already (by node {rec.usedBy} at {_when(rec.usedAt)}): "
                            "a join token works once")
    if now >= rec.expiresAt:
        return Refusal(401, f"this join token expired at {_when(rec.expiresAt)}")
    if rec.cluster != cluster:
        return Refusal(403, f"this join token is for cluster {rec.cluster!r}, not {cluster!r}",
                       f"start the agent with --cluster {rec.cluster}")
    if rec.nodeId is not None and rec.nodeId != node_id:
        return Refusal(403, f"this join token is for node {rec.nodeId!r}, not {node_id!r}",
                       f"start the agent with --node-id {rec.nodeId}, or ask for a token without --node")
    return dataclasses.replace(rec, usedAt=now, usedBy=node_id)


def fingerprint(cert_der: bytes) -> str:
    """How a certificate is pinned: ``sha256:<hex>`` of its DER bytes (``openssl x509 -fingerprint -sha256``
    prints the same digest)."""
    return "sha256:" + hashlib.sha256(cert_der).hexdigest()
