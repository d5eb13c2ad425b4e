"""The ECS endpoint fuzzed with request bodies generated from botocore's ECS model (hypothesis):
never a 5xx, every 4xx an ECS exception name; and the wire rules (target, errors, request id)."""
from __future__ import annotations

import json

import botocore.session
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.api import create_app
from orchestrator.controller import Controller
from orchestrator.ecs_api import TARGET_PREFIX
from orchestrator.ecs_api.operations import UNSUPPORTED, Operations
from orchestrator.ops import Ops
from orchestrator.state import State

MODEL = botocore.session.get_session().get_service_model("ecs")
EXCEPTIONS = {MODEL.shape_for(n).name for n in MODEL.shape_names if MODEL.shape_for(n).metadata.get("exception")}
EXCEPTIONS |= {"UnknownOperationException", "SerializationException", "UnsupportedFeatureException"}
SUPPORTED = sorted(op for op in MODEL.operation_names if op not in UNSUPPORTED
                   and getattr(Operations, "".join(f"_{c.lower()}" if c.isupper() else c for c in op).lstrip("_"), None))


def value(shape, depth: int = 0):  # noqa: ANN001, ANN201
    """A hypothesis strategy for a botocore shape (bounded depth)."""
    t = shape.type_name
    if t == "structure":
        if depth > 3:
            return st.just({})
        members = {k: value(v, depth + 1) for k, v in shape.members.items()}
        return st.fixed_dictionaries({}, optional=members)
    if t == "list":
        return st.lists(value(shape.member, depth + 1), max_size=2)
    if t == "map":
        return st.dictionaries(st.text(max_size=5), value(shape.value, depth + 1), max_size=2)
    if t == "string":
        if shape.enum:
            return st.sampled_from(shape.enum)
        return st.one_of(st.text(max_size=12), st.sampled_from(["default", "web", "web:1", "arn:aws:ecs:x:1:cluster/default"]))
    if t in ("integer", "long"):
        return st.integers(-5, 2000)
    if t == "boolean":
        return st.booleans()
    if t in ("double", "float"):
        return st.floats(-10, 10, allow_nan=False)
    if t == "timestamp":
        return st.integers(0, 2_000_000_000)
    return st.none()


def app() -> TestClient:
    state = State()

    async def publish(_doc):  # noqa: ANN001
        return None
    ctl = Controller(state, epoch=1, publish=publish)
    return TestClient(create_app(Ops(state, ctl)))


CLIENT = app()


def call(op: str, body) -> tuple[int, dict]:  # noqa: ANN001
    r = CLIENT.post("/", content=json.dumps(body), headers={"X-Amz-Target": TARGET_PREFIX + op,
                                                            "Content-Type": "application/x-amz-json-1.1"})
    assert r.headers["x-amzn-RequestId"] and r.headers["content-type"].startswith("application/x-amz-json-1.1")
    return r.status_code, r.json()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_no_body_from_the_model_gets_a_5xx_and_every_error_is_an_ecs_exception(data):
    op = data.draw(st.sampled_from(SUPPORTED))
    body = data.draw(value(MODEL.operation_model(op).input_shape))
    status, out = call(op, body)
    assert status < 500, (op, body, out)
    if status >= 400:
        assert out["__type"] in EXCEPTIONS and out["message"], (op, body, out)


def test_every_supported_operation_is_in_the_model_and_unsupported_ones_say_so():
    assert len(SUPPORTED) >= 20 and set(SUPPORTED) <= set(MODEL.operation_names)
    status, out = call("ExecuteCommand", {})
    assert status == 400 and out["__type"] == "UnsupportedFeatureException" and "ExecuteCommand" in out["message"]
    status, out = call("NoSuchOperation", {})
    assert out["__type"] == "UnsupportedFeatureException"
    r = CLIENT.post("/", content="{", headers={"X-Amz-Target": TARGET_PREFIX + "ListClusters"})
    assert r.status_code == 400 and r.json()["__type"] == "SerializationException"
    r = CLIENT.post("/", content="{}")
    assert r.json()["__type"] == "UnknownOperationException"


def test_bodies_json_cannot_hold_in_python_are_serialization_errors():
    # Found by tests/unit/test_api_fuzz.py's inputs: both were a 500 ServerException.
    for raw in ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", '{"maxResults": ' + "9" * 5000 + "}"):
        r = CLIENT.post("/", content=raw, headers={"X-Amz-Target": TARGET_PREFIX + "ListClusters"})
        assert r.status_code == 400 and r.json()["__type"] == "SerializationException", r.text
        assert "sys.set_int_max_str_digits" not in r.json()["message"]
    r = CLIENT.post("/", content=b"[" * (11 << 20), headers={"X-Amz-Target": TARGET_PREFIX + "ListClusters"})
    assert r.status_code == 413  # orchestrator.limits, before the body is read
