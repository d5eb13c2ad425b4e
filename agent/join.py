"""``dockyard agent --join https://ORCHESTRATOR:PORT --token T``: exchange a one-time join token for this node's
broker credential, once, and keep it in the state directory (mode 0600) for every later start.

Over HTTPS only, verifying the orchestrator: against ``--join-ca`` (the CA that signed its certificate), or the
certificate's ``sha256:`` fingerprint printed with the token (``--join-fingerprint``: the certificate is fetched,
compared, then the request's handshake must present that very certificate), or else the system's CAs. The agent
needs only this one outbound request; a used or expired token is refused with the orchestrator's reason.
"""
from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from dockyard.dynsec import Credentials
from dockyard.mqtt import load_credentials, write_credentials

CREDENTIALS_FILE = "broker-credentials.json"


class JoinError(Exception):
    """The join failed; the message says why and what to do."""


def _pinned_context(host: str, port: int, want: str) -> ssl.SSLContext:
    try:
        pem = ssl.get_server_certificate((host, port), timeout=15)
    except OSError as e:
        raise JoinError(f"cannot reach the orchestrator at {host}:{port}: {e}") from None
    got = "sha256:" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
    if got.lower() != want.strip().lower():
        raise JoinError(f"the orchestrator at {host}:{port} presents a certificate with fingerprint {got}, not the "
                        f"pinned {want}: not sending the token (a man in the middle, or a new certificate: ask for "
                        "the current fingerprint)")
    ctx = ssl.create_default_context(cadata=pem)  # that certificate alone is trusted...
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # ...as a leaf: the handshake must present it again
    ctx.check_hostname = False  # the pin is stronger than a name
    return ctx


def verify_context(url: str, ca_file: str | None, fingerprint: str | None) -> ssl.SSLContext:
    u = urlsplit(url)
    if u.scheme != "https" or not u.hostname:
        raise JoinError(f"--join {url}: the join goes over HTTPS only (https://ORCHESTRATOR:PORT; the orchestrator "
                        "serves it with --tls-cert/--tls-key)")
    if fingerprint:
        return _pinned_context(u.hostname, u.port or 443, fingerprint)
    try:
        return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    except (OSError, ssl.SSLError) as e:
        raise JoinError(f"--join-ca {ca_file}: {e}") from None


def credentials(state_dir: Path, url: str, token: str | None, cluster: str, node_id: str,
                ca_file: str | None = None, fingerprint: str | None = None) -> Path:
    """The node's credential file: the one kept from an earlier join, else a new one exchanged for ``token``."""
    path = state_dir / CREDENTIALS_FILE
    if path.exists():
        load_credentials(str(path))  # a broken file is an error, not a reason to join again
        return path
    if not token:
        raise JoinError(f"--join needs --token (no credential kept in {path} yet): dockyard node token create")
    ctx = verify_context(url, ca_file, fingerprint)
    try:
        r = httpx.post(url.rstrip("/") + "/v1/join", json={"token": token, "cluster": cluster, "nodeId": node_id},
                       verify=ctx, timeout=30)
    except httpx.ConnectError as e:
        raise JoinError(f"cannot join through {url}: {e}"
                        + (" (give --join-ca, the CA that signed its certificate, or --join-fingerprint)"
                           if "CERTIFICATE_VERIFY_FAILED" in str(e) else "")) from None
    except httpx.HTTPError as e:
        raise JoinError(f"cannot join through {url}: {e or type(e).__name__}") from None
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code != 200:
        hint = f" ({body['hint']})" if body.get("hint") else ""
        raise JoinError(f"the orchestrator refused the join token: {body.get('error') or r.text[:200]}{hint}")
    try:
        creds = Credentials(username=body["username"], password=body["password"])
    except (KeyError, ValueError):
        raise JoinError(f"the orchestrator at {url} answered the join without a credential") from None
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_credentials(path, creds)
    return path
