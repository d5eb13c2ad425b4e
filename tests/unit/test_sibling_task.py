"""core.tasks.sibling_task: a service's further tasks of one start, copied from the first one
new_task made: the same record but for id and creation time, with lists and tags of their own."""
from __future__ import annotations

from dockyard.ecs import TaskDefinitionSpec
from orchestrator.core.tasks import new_task, sibling_task
from orchestrator.models import PlacementConstraint, PlacementStrategy, Service, ServiceSpec, TaskDefinition

T0 = 1_700_000_000.0


def make():  # noqa: ANN201
    td = TaskDefinition(family="web", revision=3, specHash="h", tags={"team": "a"}, spec=TaskDefinitionSpec.model_validate({"family": "web",
        "containerDefinitions": [{"name": "web", "image": "busybox", "memory": 64}],
        "placementConstraints": [{"type": "memberOf", "expression": "attribute:zone == a"}]}))
    s = Service(cluster="prod", serviceName="web", spec=ServiceSpec.model_validate({
        "serviceName": "web", "taskDefinition": "web", "desiredCount": 3, "propagateTags": "TASK_DEFINITION",
        "placementStrategy": [{"type": "spread", "field": "instanceId"}],
        "placementConstraints": [{"type": "distinctInstance"}]}))
    return td, s


def test_a_sibling_is_what_new_task_makes_but_for_its_id_and_time():
    td, s = make()
    first = new_task("a" * 32, "prod", td, T0, service=s, deployment_id="ecs-svc/1")
    before = first.model_dump()
    other = sibling_task(first, "b" * 32, T0 + 1)
    built = new_task("b" * 32, "prod", td, T0 + 1, service=s, deployment_id="ecs-svc/1")
    assert other.model_dump() == built.model_dump()
    assert other.model_fields_set == built.model_fields_set | {"containers"}
    assert first.model_dump() == before  # not changed
    assert other.tags == built.tags and other.tags is not None and other.tags["team"] == "a"
    assert len(other.placementConstraints) == 2 and [p.type for p in other.placementStrategy] == ["spread"]


def test_a_sibling_shares_no_list_or_tags_with_the_first():
    td, s = make()
    first = new_task("a" * 32, "prod", td, T0, service=s, deployment_id="ecs-svc/1")
    other = sibling_task(first, "b" * 32, T0)
    other.containers.append(first.containers[0] if first.containers else None)  # type: ignore[arg-type]
    other.placementConstraints.append(PlacementConstraint(type="distinctInstance"))
    other.placementStrategy.append(PlacementStrategy(type="random"))
    assert other.tags is not None and first.tags is not None
    other.tags["x"] = "y"
    assert first.containers == [] and len(first.placementConstraints) == 2 and len(first.placementStrategy) == 1
    assert "x" not in first.tags
