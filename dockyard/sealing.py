"""Sealing secrets to a node's key (both sides; see docs/secrets.md).

Each agent holds an X25519 key pair and publishes the public key in its presence. The
orchestrator seals a task's secret values to it: an ephemeral X25519 key, HKDF-SHA256 over
the shared secret (salt: both public keys) and ChaCha20-Poly1305 with the task id as
associated data, so only that node can open the blob and only for that task (a blob copied
onto another task, or altered, fails to open). Built only from ``cryptography``'s primitives.
"""
from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict

ALG = "X25519-HKDF-SHA256-CHACHA20POLY1305"
_INFO = b"dockyard/v1 task secrets"


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class SealError(Exception):
    """A blob that cannot be opened: wrong node key, wrong task, altered, or malformed."""


class Sealed(BaseModel):
    """A sealed blob as it travels in a desired document (all base64)."""

    model_config = ConfigDict(extra="ignore")
    alg: str = ALG
    epk: str  # the sender's ephemeral public key
    nonce: str
    ct: str  # ciphertext + tag


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def generate_private() -> bytes:
    """A new X25519 private key, raw 32 bytes."""
    return X25519PrivateKey.generate().private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                     serialization.NoEncryption())


def public_key(private: bytes) -> str:
    """The base64 public key of a raw private key (what the agent publishes as ``sealKey``)."""
    return _b64(_raw(X25519PrivateKey.from_private_bytes(private).public_key()))


def _key(shared: bytes, epk: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + recipient, info=_INFO).derive(shared)


def _aad(task_id: str) -> bytes:
    return b"task:" + task_id.encode()


def seal(recipient_b64: str, task_id: str, plaintext: bytes) -> Sealed:
    """Seal ``plaintext`` to the node whose public key is ``recipient_b64``, for ``task_id``."""
    try:
        recipient = base64.b64decode(recipient_b64, validate=True)
        peer = X25519PublicKey.from_public_bytes(recipient)
    except ValueError as e:
        raise SealError(f"not an X25519 public key: {e}") from None
    eph = X25519PrivateKey.generate()
    epk = _raw(eph.public_key())
    nonce = os.urandom(12)
    ct = ChaCha20Poly1305(_key(eph.exchange(peer), epk, recipient)).encrypt(nonce, plaintext, _aad(task_id))
    return Sealed(epk=_b64(epk), nonce=_b64(nonce), ct=_b64(ct))


def unseal(private: bytes, task_id: str, sealed: Sealed) -> bytes:
    """Open a blob sealed to this node's key for ``task_id``; SealError if it is not exactly that."""
    if sealed.alg != ALG:
        raise SealError(f"unknown sealing algorithm {sealed.alg!r}")
    try:
        priv = X25519PrivateKey.from_private_bytes(private)
        recipient = _raw(priv.public_key())
        epk = base64.b64decode(sealed.epk, validate=True)
        shared = priv.exchange(X25519PublicKey.from_public_bytes(epk))
        return ChaCha20Poly1305(_key(shared, epk, recipient)).decrypt(
            base64.b64decode(sealed.nonce, validate=True), base64.b64decode(sealed.ct, validate=True), _aad(task_id))
    except (InvalidTag, ValueError) as e:
        raise SealError("the secrets were not sealed to this node's key for this task, or were altered"
                        + (f" ({e})" if str(e) else "")) from None
