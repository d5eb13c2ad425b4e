"""The HTTP API fuzzed from its own OpenAPI document (schemathesis, positive and negative examples of every
operation, with API tokens on): never a 5xx, responses as documented, every 400/422 names the field. And the
limits that hold before anything is parsed (orchestrator.limits): bodies over 10 MB get 413, on the ECS
endpoint too; applies of too many documents 400; a desiredCount past ECS's quota 400."""
from __future__ import annotations

import atexit
import json
import os
import pathlib
import shutil
import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from test_api_auth import _app

from orchestrator.limits import MAX_BODY_BYTES, MAX_DESIRED_COUNT, MAX_DOCUMENTS
from orchestrator.ops import Ops

# Examples per operation: CI's few, derandomized (the same every run); DOCKYARD_FUZZ_EXAMPLES=200 explores.
_TMP = tempfile.mkdtemp(prefix="api-fuzz-")  # built at import (the schema needs the app): removed at exit
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
TC, ADMIN, _STORE = _app(pathlib.Path(_TMP))
AUTH = {"Authorization": f"Bearer {ADMIN}"}
SCHEMA = schemathesis.openapi.from_dict(TC.get("/v1/openapi.json", headers=AUTH).json())
SCHEMA.app = TC.app  # as schemathesis.openapi.from_asgi does; that loader cannot send the token


def names_the_field(ctx, response, case) -> None:  # noqa: ANN001
    """A 400/422 says which field is wrong: ``field``, or per-document ``errors`` that each name theirs."""
    if response.status_code not in (400, 422):
        return
    body = response.json()
    errors = body.get("errors") or []
    assert body.get("error"), f"{response.status_code} without an error message: {body}"
    assert body.get("field") or (errors and all(e.get("field") or e.get("message") for e in errors)), \
        f"{response.status_code} names no field: {body}"


@SCHEMA.parametrize()
@settings(max_examples=int(os.environ.get("DOCKYARD_FUZZ_EXAMPLES", "12")), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_answers_bad_input_with_a_4xx_that_names_the_field(case):
    case.call_and_validate(headers=AUTH, checks=[checks.not_a_server_error, checks.response_schema_conformance,
                                                 names_the_field])


@pytest.fixture
def no_apply(monkeypatch):
    """Fail the test if a request reaches the apply/delete handlers."""
    def boom(*_a, **_k):  # noqa: ANN002, ANN003
        raise AssertionError("the documents were parsed")
    monkeypatch.setattr(Ops, "apply", boom)
    monkeypatch.setattr(Ops, "delete_documents", boom)


def test_a_body_over_the_limit_is_refused_before_it_is_read(no_apply):
    big = b'{"documents": [' + b" " * MAX_BODY_BYTES + b"]}"
    r = TC.post("/v1/apply", content=big, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body" and "10485760 bytes" in r.json()["error"]
    # Chunked (no Content-Length): refused once the bytes read pass the limit.
    chunks = (b" " * (1 << 20) for _ in range(11))
    r = TC.post("/v1/delete", content=chunks, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413
    # The ECS endpoint (POST /) is behind the same limit.
    r = TC.post("/", content=big, headers={"X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListClusters",
                                          "Content-Type": "application/x-amz-json-1.1"})
    assert r.status_code == 413
    r = TC.post("/v1/apply", content=b"{}", headers={**AUTH, "Content-Length": "12x"})
    assert r.status_code == 400 and "Content-Length" in r.json()["error"]


def test_a_body_under_the_limit_still_arrives_whole():
    docs = [{"source": f"d#{i}", "document": {"family": f"f{i}", "containerDefinitions": [
        {"name": "c", "image": "busybox", "memory": 64, "environment": [{"name": "PAD", "value": "x" * 4000}]}]}}
        for i in range(100)]
    body = json.dumps({"documents": docs, "dryRun": True}).encode()
    r = TC.post("/v1/apply", content=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 200 and len(r.json()["results"]) == 100


def test_too_many_documents_are_refused_before_any_is_parsed(no_apply):
    for path in ("/v1/apply", "/v1/delete"):
        r = TC.post(path, json={"documents": [{}] * (MAX_DOCUMENTS + 1)}, headers=AUTH)
        assert r.status_code == 400 and r.json()["field"] == "documents", r.text


def test_delete_of_documents_that_are_not_mappings_is_a_400_per_document():
    # Found by the fuzzer: a list item that is not an object was a 500 (AttributeError) on /v1/delete.
    r = TC.post("/v1/delete", json={"documents": [[None], 3, "x"]}, headers=AUTH)
    assert r.status_code == 400
    assert [e["message"] for e in r.json()["errors"]] == [
        "a document must be a mapping, got list", "a document must be a mapping, got int",
        "a document must be a mapping, got str"]


def test_a_missing_body_names_the_body():
    # Found by the fuzzer: a POST without its body was a 400 with field "".
    for path in ("/v1/apply", "/v1/secrets", "/v1/clusters/default/services/web/scale"):
        r = TC.post(path, headers=AUTH)
        assert r.status_code == 400 and r.json()["field"] == "body" and r.json()["hint"], r.text


def test_desired_count_is_capped_at_ecs_quota():
    # Found while fuzzing manifests: desiredCount 1000000 was accepted and the next reconcile pass created a
    # million tasks at once, blocking the event loop for minutes.
    td = {"family": "cap", "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 64}]}
    svc = {"apiVersion": "dockyard/v1", "kind": "Service", "metadata": {"name": "cap"},
           "spec": {"taskDefinition": "cap", "desiredCount": 10**6}}
    r = TC.post("/v1/apply", json={"documents": [td, svc]}, headers=AUTH)
    assert r.status_code == 400
    err = r.json()["errors"][0]
    assert err["field"] == "spec.desiredCount" and str(MAX_DESIRED_COUNT) in err["message"]
    svc["spec"]["desiredCount"] = MAX_DESIRED_COUNT
    assert TC.post("/v1/apply", json={"documents": [td, svc], "dryRun": True}, headers=AUTH).status_code == 200
    r = TC.post("/v1/clusters/default/services/cap/scale", json={"desiredCount": MAX_DESIRED_COUNT + 1}, headers=AUTH)
    assert r.status_code == 400 and r.json()["field"] == "desiredCount"
