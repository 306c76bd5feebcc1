"""List endpoints run the same number of queries for 1 row as for 50."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deployments.models import CoordinationStatus as C, StageEvent, TargetStatus as T
from tests.factories import make_coordination, make_environment, make_user


def queries(client, path) -> int:
    with CaptureQueriesContext(connection) as context:
        response = client.get(path)
    assert response.status_code == 200, response.content
    return len(context.captured_queries)


def grow_to(count: int, status: str, target_status: str, environment_ids: list[str]) -> None:
    """Each coordination on environments of its own: an environment runs in one
    coordination at a time (the database refuses two running targets on one). Each
    approved by a user of its own; every other one from before rollouts (no rollout
    stored, so its one wave is counted from its targets)."""
    from deployments.models import Coordination

    for index in range(Coordination.objects.filter(status=status).count(), count):
        own = [make_environment(f"{environment_id}_{index}").environment_id for environment_id in environment_ids]
        rollout = {"batch_size": [1], "waves": [1] * len(own), "failure_budget": 0} if index % 2 else {}
        make_coordination(
            f"deploy_{status}_{index}",
            status,
            dict.fromkeys(own, target_status),
            approved_by=make_user(f"approver_{status}_{index}"),
            approved_at=timezone.now(),
            rollout=rollout,
        )


@pytest.fixture
def environments(db):
    return [make_environment(f"env_{index}").environment_id for index in range(3)]


@pytest.mark.parametrize(
    ("path", "status", "target_status"),
    [
        ("/api/deployment/history?limit=100", C.FAILED, T.FAILED),
        ("/api/deployment/status", C.LOCAL_DEPLOYING, T.RUNNING),
    ],
)
def test_coordination_lists_cost_the_same_for_1_and_50_coordinations(
    viewer_client, environments, path, status, target_status
):
    grow_to(1, status, target_status, environments)
    one = queries(viewer_client, path)
    grow_to(50, status, target_status, environments)
    fifty = queries(viewer_client, path)
    body = viewer_client.get(path).json()
    # The status shows the oldest 10 active ones and counts them all.
    assert len(body["results"]) == 50 if "results" in body else (len(body["active"]), body["active_count"]) == (10, 50)
    assert one == fifty


def test_status_costs_the_same_for_1_and_50_environments(viewer_client, db):
    make_environment("env_first")
    make_coordination("deploy_a", C.FAILED, {"env_first": T.FAILED})
    one = queries(viewer_client, "/api/deployment/status")
    for index in range(49):
        make_environment(f"env_more_{index}")
        make_coordination(f"deploy_more_{index}", C.FAILED, {f"env_more_{index}": T.FAILED})
    fifty = queries(viewer_client, "/api/deployment/status")
    assert one == fifty


def test_the_environment_list_costs_the_same_for_1_and_50(viewer_client, db):
    make_environment("env_first", password="pw")
    one = queries(viewer_client, "/api/deployment/environments")
    for index in range(49):
        make_environment(f"env_more_{index}", password="pw")
    assert queries(viewer_client, "/api/deployment/environments") == one


def test_events_cost_the_same_for_1_and_50(viewer_client, environments):
    coordination = make_coordination("deploy_ev", C.LOCAL_DEPLOYING, {environments[0]: T.RUNNING})
    path = "/api/deployment/coordinations/deploy_ev/events/"
    one = queries(viewer_client, path)
    StageEvent.objects.bulk_create(
        StageEvent(coordination=coordination, stage="run", message=str(i)) for i in range(49)
    )
    assert queries(viewer_client, path) == one
    assert len(viewer_client.get(path).json()["events"]) == 50


def test_the_environment_list_filtered_by_tag_costs_the_same_for_1_and_50(viewer_client, db):
    make_environment("env_first", tags=["mac"])
    one = queries(viewer_client, "/api/deployment/environments?tag=mac")
    for index in range(49):
        make_environment(f"env_more_{index}", tags=["mac"] if index % 2 else ["linux"])
    assert queries(viewer_client, "/api/deployment/environments?tag=mac") == one
    assert len(viewer_client.get("/api/deployment/environments?tag=mac").json()["results"]) == 25
