"""SigV4 verification of ECS API requests (orchestrator.ecs_api.auth), against requests signed by
botocore itself, as boto3 and the AWS CLI sign them."""
from __future__ import annotations

import datetime as dt
import json
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from orchestrator.ecs_api.auth import new_key, verify
from orchestrator.ecs_api.operations import EcsError

KEY, SECRET = new_key()
URL = "http://127.0.0.1:8080/"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)


def signed(body: bytes, key: str = KEY, secret: str = SECRET, when: dt.datetime = NOW) -> dict[str, str]:
    req = AWSRequest(method="POST", url=URL, data=body, headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters"})
    signer = SigV4Auth(Credentials(key, secret), "ecs", "eu-west-1")
    with mock.patch("botocore.auth.get_current_datetime", lambda: when.replace(tzinfo=None)):
        signer.add_auth(req)
    return {**dict(req.headers.items()), "host": "127.0.0.1:8080"}


def lookup(key: str) -> str | None:
    return SECRET if key == KEY else None


def code(body: bytes, headers: dict[str, str], now: dt.datetime = NOW) -> str:
    with pytest.raises(EcsError) as e:
        verify("POST", URL, headers, body, lookup, now.timestamp())
    return e.value.type


BODY = json.dumps({"maxResults": 5}).encode()


def test_a_request_botocore_signed_with_a_dockyard_key_verifies():
    assert verify("POST", URL, signed(BODY), BODY, lookup, NOW.timestamp()) == KEY


def test_refusals_use_aws_exception_names():
    assert code(BODY + b" ", signed(BODY)) == "InvalidSignatureException"  # the body changed
    assert code(BODY, signed(BODY, secret="x" * 40)) == "InvalidSignatureException"  # wrong secret
    assert code(BODY, signed(BODY, key="AKIDUNKNOWN")) == "UnrecognizedClientException"
    assert code(BODY, signed(BODY), NOW + dt.timedelta(minutes=16)) == "InvalidSignatureException"  # expired
    assert code(BODY, {"content-type": "application/x-amz-json-1.1"}) == "MissingAuthenticationTokenException"
    assert code(BODY, {"authorization": "Bearer x"}) == "IncompleteSignatureException"
    h = signed(BODY)
    h["X-Amz-Target"] = "AmazonEC2ContainerServiceV20141113.DeleteCluster"  # a signed header changed
    assert code(BODY, h) == "InvalidSignatureException"


def test_new_keys_look_like_aws_keys_and_differ():
    k1, s1 = new_key()
    k2, _ = new_key()
    assert k1 != k2 and len(k1) == 20 and k1.startswith("AKDY") and len(s1) == 40
