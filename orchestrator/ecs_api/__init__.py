"""The ECS API (awsJson 1.1, as botocore's ECS model describes it) on the orchestrator's listener:
``POST /`` with ``X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>``. A translation onto
the same operations the dockyard API uses (operations.py); docs/ecs-compat.md lists what is
supported. Requests are SigV4-signed with access keys dockyard issues (auth.py)."""
from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response

from orchestrator.core.auth import ecs_allows
from orchestrator.ecs_api.auth import verify
from orchestrator.ecs_api.operations import EcsError, Operations
from orchestrator.ecs_api.shapes import Arns
from orchestrator.ops import Ops

TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
CONTENT_TYPE = "application/x-amz-json-1.1"
_REGION = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/ecs/aws4_request")


def region_of(authorization: str | None) -> str:
    """The region of the request's SigV4 credential scope (us-east-1 when unsigned)."""
    m = _REGION.search(authorization or "")
    return m.group(1) if m else "us-east-1"


def mount(app: FastAPI, ops: Ops, account: str = "123456789012", loopback: bool = True) -> None:
    """``loopback``: the listener is on a loopback address; with no access key created, requests
    are then accepted unsigned (development mode, docs/ecs-compat.md). Otherwise every request
    must be SigV4-signed with an access key from `dockyard accesskey create`."""
    deleted: dict[tuple[str, str], dict[str, Any]] = {}  # services deleted through this API, still described

    def answer(body: dict[str, Any], status: int = 200) -> Response:
        return Response(json.dumps(body), status_code=status, media_type=CONTENT_TYPE,
                        headers={"x-amzn-RequestId": str(uuid.uuid4())})

    @app.post("/", include_in_schema=False)
    async def ecs(request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        if not target.startswith(TARGET_PREFIX):
            return answer({"__type": "UnknownOperationException", "message": f"Unknown target {target!r}"}, 400)
        name = target[len(TARGET_PREFIX):]
        handler = Operations(ops, Arns(region_of(request.headers.get("authorization")), account), deleted).handler(name)
        if handler is None:
            return answer({"__type": "UnsupportedFeatureException",
                           "message": f"{name} is not supported by dockyard (see docs/ecs-compat.md)"}, 400)
        raw = await request.body()
        if not (loopback and not ops.access_keys()):
            try:
                key_id = verify(request.method, str(request.url), request.headers, raw, ops.access_key_secret, time.time())
            except EcsError as e:
                return answer({"__type": e.type, "message": e.message}, e.status)
            found = ops.access_key(key_id)
            role = found[1] if found else "read-only"
            if not ecs_allows(role, name):
                return answer({"__type": "AccessDeniedException", "message": (
                    f"User: arn:aws:iam::{account}:user/{key_id} is not authorized to perform: ecs:{name} on "
                    f"resource: * (the access key's role is {role}; a writing client needs a key made with "
                    "`dockyard accesskey create --role admin`)")}, 400)
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError) as e:  # JSONDecodeError, a number of over 4300 digits, deep nesting
            why = str(e).split(";")[0] if isinstance(e, ValueError) else "nested too deeply"
            return answer({"__type": "SerializationException", "message": f"invalid JSON: {why}"}, 400)
        try:
            if not isinstance(body, dict):
                raise EcsError("SerializationException", "the request body must be a JSON object")
            return answer(handler(body))
        except EcsError as e:
            return answer({"__type": e.type, "message": e.message}, e.status)
        except Exception as e:  # noqa: BLE001 - a bug: ECS's ServerException, logged with its trace
            ops.ctl.log.exception("ECS API error", operation=name)
            return answer({"__type": "ServerException", "message": f"internal error: {type(e).__name__}"}, 500)
