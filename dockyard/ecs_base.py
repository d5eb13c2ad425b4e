"""The base of every ECS document model (shared by :mod:`dockyard.ecs` and :mod:`dockyard.ecs_options`)."""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,255}$")


class EcsModel(BaseModel):
    """Base for ECS documents: unknown fields are kept (to be reported), not rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
