"""The API's TLS (``--tls-cert/--tls-key``, served by uvicorn) and the secure-by-default rule for its address.

:func:`exposure_refusal` is the rule (pure): an API on a non-loopback address needs TLS and tokens, or an explicit
``--insecure``. :func:`load` checks the files up front (a clear error and exit 1, not a failure inside uvicorn) and
gives the certificate's fingerprint, which ``dockyard node token create`` prints for agents to pin.
"""
from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from orchestrator.core.join import fingerprint


@dataclass(frozen=True)
class ApiTls:
    certfile: str
    keyfile: str
    fingerprint: str  # sha256:<hex> of the (first) certificate in certfile


def load(certfile: str | None, keyfile: str | None) -> ApiTls | None:
    if not certfile and not keyfile:
        return None
    if not (certfile and keyfile):
        raise ValueError("--tls-cert and --tls-key go together (make both with `dockyard ca`)")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
        cert = x509.load_pem_x509_certificate(Path(certfile).read_bytes())
    except (OSError, ssl.SSLError, ValueError) as e:
        raise ValueError(f"--tls-cert {certfile} / --tls-key {keyfile}: {e}") from None
    return ApiTls(certfile, keyfile, fingerprint(cert.public_bytes(Encoding.DER)))


def exposure_refusal(loopback: bool, tls: bool, tokens: bool, insecure: bool) -> str | None:
    """Why the orchestrator must not start on this address (None: it may)."""
    if loopback or insecure or (tls and tokens):
        return None
    missing = " and ".join(w for w, ok in (("TLS (--tls-cert/--tls-key)", tls), ("API tokens", tokens)) if not ok)
    return (f"the API would listen beyond loopback without {missing}: refusing to start; give the missing pieces "
            "(`dockyard ca` makes certificates), listen on 127.0.0.1, or pass --insecure to accept the risk")
