"""API access decisions (pure): who may call what with which bearer token.

Roles: ``admin`` may do everything (tokens included); ``read-only`` may read (GET/HEAD) and nothing else. Only
``/healthz``, ``/readyz`` and ``/`` (the ECS API, which checks its own SigV4 signatures) go without a token; ``/metrics`` takes a read token like any read. Tokens are
``dy_<id>_<secret>``; the store keeps ``sha256(secret)`` only (the secret is 32 random bytes: a slow hash adds
nothing). No I/O: the API's middleware gathers the header and the token record, calls :func:`decide`, answers.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "read-only"]
ROLES: tuple[Role, ...] = ("admin", "read-only")
# "/": the ECS API (awsJson, ``POST /`` with X-Amz-Target) authenticates its own requests (SigV4 with access keys).
# "/v1/join": a one-time join token in the body is the credential (orchestrator/join.py).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/v1/join"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PREFIX = "dy_"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    role: Role
    digest: str  # sha256 hex of the secret
    name: str = ""
    createdAt: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    status: int  # 200: allowed; 401 / 403 otherwise
    error: str = ""
    hint: str = ""
    token_id: str | None = None


def new_token(role: Role, name: str, now: float) -> tuple[str, TokenRecord]:
    """A new token (shown once) and the record the store keeps."""
    tid, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return f"{PREFIX}{tid}_{secret}", TokenRecord(tid, role, digest(secret), name, now)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(header: str | None) -> tuple[str, str] | None:
    """``Authorization: Bearer dy_<id>_<secret>`` -> (id, secret), or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value.startswith(PREFIX):
        return None
    tid, sep, secret = value[len(PREFIX):].partition("_")
    return (tid, secret) if sep and tid and secret else None


def decide(method: str, path: str, header: str | None, lookup: dict[str, TokenRecord],
           anonymous_reads: bool = False) -> Decision:
    """May a request go through? ``lookup``: the live tokens by id."""
    if path in OPEN_PATHS:
        return Decision(200)
    read = method.upper() in READ_METHODS
    hint = "send Authorization: Bearer TOKEN (dockyard --token, or DOCKYARD_TOKEN; see docs/security.md)"
    got = parse(header)
    if got is None:
        if header:
            return Decision(401, "malformed bearer token", hint)
        if read and anonymous_reads:
            return Decision(200)
        return Decision(401, "this API needs a token", hint)
    rec = lookup.get(got[0])
    if rec is None or not hmac.compare_digest(rec.digest, digest(got[1])):
        return Decision(401, "invalid or revoked token", "create one with `dockyard token create` as an admin")
    if not read and rec.role != "admin":
        return Decision(403, f"a {rec.role} token may not {method.upper()} {path}",
                        "use a token with the admin role", rec.id)
    return Decision(200, token_id=rec.id)


def ecs_allows(role: Role, operation: str) -> bool:
    """May an ECS API access key of ``role`` call ``operation``? A read-only key may Describe* and List*."""
    return role == "admin" or operation.startswith(("Describe", "List"))
