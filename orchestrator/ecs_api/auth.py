"""SigV4 for the ECS API: access keys dockyard issues, and the verification of a request's
signature with botocore's own signer (the code the clients sign with), so nothing of SigV4 is
re-implemented here.

Access keys live in the secret store (encrypted with the store's key, as verification needs the
secret itself), under names a user's secret cannot have (``accesskey!<id>``). Development mode:
on a loopback listener with no access key created, any signature (or none) is accepted.
"""
from __future__ import annotations

import base64
import datetime as dt
import hmac
import re
import secrets as pysecrets
from collections.abc import Callable, Mapping

from orchestrator.ecs_api.operations import EcsError

PREFIX = "accesskey!"
_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
                   r"SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})")
MAX_SKEW = 15 * 60  # seconds, as AWS


def new_key() -> tuple[str, str]:
    """(access key id, secret access key) in AWS's shapes."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    key_id = "AKDY" + "".join(pysecrets.choice(alphabet) for _ in range(16))
    secret = base64.b64encode(pysecrets.token_bytes(30)).decode()
    return key_id, secret


def verify(method: str, url: str, headers: Mapping[str, str], body: bytes, secret_of: Callable[[str], str | None],
           now: float) -> str:
    """The access key id that signed the request; raises EcsError with AWS's exception names."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    lower = {k.lower(): v for k, v in headers.items()}
    m = _AUTH.fullmatch((lower.get("authorization") or "").strip())
    if m is None:
        raise EcsError("MissingAuthenticationTokenException" if "authorization" not in lower else
                       "IncompleteSignatureException", "Request is missing or has a malformed Authentication Token.", 403)
    key_id, date, region, service, signed, signature = m.groups()
    secret = secret_of(key_id)
    if secret is None:
        raise EcsError("UnrecognizedClientException", "The security token included in the request is invalid.", 403)
    stamp = lower.get("x-amz-date", "")
    try:
        when = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        raise EcsError("IncompleteSignatureException", "X-Amz-Date is missing or malformed.", 403) from None
    if abs(now - when) > MAX_SKEW:
        raise EcsError("InvalidSignatureException", "Signature expired: the request time is more than 15 minutes "
                       "away from the server's (check the client's clock).", 403)
    names = signed.split(";")
    req = AWSRequest(method=method, url=url, data=body, headers={n: lower[n] for n in names if n in lower})
    req.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(key_id, secret), service, region)
    expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
    if not hmac.compare_digest(expected, signature):
        raise EcsError("InvalidSignatureException", "The request signature we calculated does not match the signature "
                       "you provided. Check your AWS Secret Access Key and signing method.", 403)
    return key_id
