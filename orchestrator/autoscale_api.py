"""The API's auto-scaling routes and view (docs/autoscaling.md).

    GET    /v1/clusters/{cluster}/autoscaling                     every scalable target of the cluster
    GET    /v1/clusters/{cluster}/services/{name}/autoscaling     the service's target, policies, metrics, activities
    PUT    /v1/clusters/{cluster}/services/{name}/autoscaling     register or replace it (a ScalingPolicy spec)
    DELETE /v1/clusters/{cluster}/services/{name}/autoscaling     stop auto scaling the service (its count stays)
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError

from orchestrator import autoscale_ops
from orchestrator.autoscale_views import target_view
from orchestrator.autoscaling_models import ScalingSpec
from orchestrator.ops import Ops, UserError, not_found


def router(ops: Ops) -> APIRouter:
    st = ops.state
    r = APIRouter()

    @r.get("/v1/clusters/{cluster}/autoscaling")
    async def list_targets(cluster: str) -> dict:
        ops.cluster(cluster)
        return {"scalableTargets": [target_view(t) for (c, _), t in sorted(st.scalable_targets.items()) if c == cluster]}

    @r.get("/v1/clusters/{cluster}/services/{name}/autoscaling")
    async def get_target(cluster: str, name: str) -> dict:
        ops.service(cluster, name)
        t = st.scalable_targets.get((cluster, name))
        if t is None:
            raise not_found("scalable target of service", name, f"set one with: dockyard autoscale {name} --min 1 "
                                                                "--max 4 --cpu 60")
        return {"scalableTarget": target_view(t)}

    @r.put("/v1/clusters/{cluster}/services/{name}/autoscaling")
    async def put_target(cluster: str, name: str, body: dict[str, Any]) -> dict:
        try:
            spec = ScalingSpec.model_validate({**body, "serviceName": name})
        except ValidationError as exc:
            e = exc.errors()[0]
            loc = ".".join(str(p) for p in e["loc"])
            raise UserError(f"{loc}: {e['msg'].removeprefix('Value error, ')}" if loc else e["msg"], 400,
                            field=loc) from None
        ops.cluster(cluster)
        errs = autoscale_ops.check(st, cluster, spec, {})
        if errs:
            raise UserError(errs[0].message, 404 if "does not exist" in errs[0].message else 400, field=errs[0].field,
                            hint=errs[0].hint)
        action, t = autoscale_ops.put(st, cluster, spec, ops.ctl.clock())
        ops._commit()
        return {"action": action, "scalableTarget": target_view(t)}

    @r.delete("/v1/clusters/{cluster}/services/{name}/autoscaling")
    async def delete_target(cluster: str, name: str) -> dict:
        t = autoscale_ops.remove(st, cluster, name)
        if t is None:
            raise not_found("scalable target of service", name)
        ops._commit()
        return {"scalableTarget": target_view(t)}

    return r
