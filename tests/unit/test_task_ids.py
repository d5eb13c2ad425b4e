"""Task ids: ECS's form (32 hex digits of a random version-4 UUID), made without uuid.uuid4()."""
from __future__ import annotations

import uuid

from orchestrator.models import new_task_id


def test_task_ids_are_random_version_4_uuids():
    ids = {new_task_id() for _ in range(2000)}
    assert len(ids) == 2000
    for i in ids:
        u = uuid.UUID(hex=i)
        assert len(i) == 32 and u.hex == i and u.version == 4 and u.variant == uuid.RFC_4122
