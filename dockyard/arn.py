"""ECS-style ARNs for dockyard objects (read by tools that expect ECS's identifiers).

There is no AWS account or region here: ARNs carry the placeholders :data:`REGION` and
:data:`ACCOUNT` (``local`` is no AWS region, so an SDK that derives a region from an ARN
never calls real AWS by mistake)."""
from __future__ import annotations

REGION = "local"
ACCOUNT = "000000000000"


def task_arn(cluster: str, task_id: str) -> str:
    """ECS's long form: ``arn:aws:ecs:<region>:<account>:task/<cluster>/<taskId>``."""
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{task_id}"


def container_arn(cluster: str, task_id: str, name: str) -> str:
    """ECS puts a container id last; dockyard's containers are named uniquely within a task."""
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:container/{cluster}/{task_id}/{name}"


def task_definition_arn(family: str, revision: int) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{revision}"
