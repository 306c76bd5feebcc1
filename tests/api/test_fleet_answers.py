"""Answers about many environments stay bounded: the status overview under 50 KB at 3,000
environments, a coordination's record with its first 100 environments, the rest a paged
list away (`coordinations/<id>/environments/`)."""

import json

import pytest

from deployments.models import Coordination, CoordinationStatus as C, TargetStatus as T
from tests.factories import make_coordination, make_environment
from tests.support.fleets import make_fleet, make_fleet_coordination

STATUS = "/api/deployment/status"
KB = 1024


@pytest.fixture
def fleet(db):
    """3,000 environments, each unhealthy (with the longest health detail) and failed in a
    finished run; a running coordination over all of them; 11 more active ones."""
    environments = make_fleet(3000, last_health="unhealthy", last_health_detail="x" * 500)
    make_fleet_coordination("deploy_before", C.FAILED, environments, [T.FAILED], reason="exit_code", exit_code=1)
    make_fleet_coordination(
        "deploy_all", C.LOCAL_DEPLOYING, environments, [T.FAILED, T.RUNNING, T.PENDING, T.SUCCEEDED]
    )
    for index in range(11):
        make_fleet_coordination(f"deploy_queued_{index:02d}", C.PENDING, environments[index : index + 1], [T.PENDING])
    return environments


def test_the_status_overview_stays_under_50_kb_at_3000_environments(viewer_client, fleet):
    response = viewer_client.get(STATUS)

    assert response.status_code == 200
    assert len(response.content) < 50 * KB, len(response.content)
    body = response.json()
    assert (body["active_count"], len(body["active"])) == (12, 10)
    assert body["environment_counts"] == {
        "total": 3000,
        "enabled": 3000,
        "health": {"healthy": 0, "unhealthy": 3000, "unknown": 0},
    }
    assert (body["attention_count"], len(body["environments"])) == (3000, 25)
    big = body["active"][0]
    assert big["coordination_id"] == "deploy_all"
    # The progress counts every target; the few shown are the failed ones first.
    assert big["progress"] == {
        "total": 3000,
        "done": 1500,
        "succeeded": 750,
        "failed": 750,
        "cancelled": 0,
        "running": 750,
        "pending": 750,
    }
    assert [target["status"] for target in big["environments"]] == ["failed"] * 10
    assert big["environments_url"] == "http://testserver/api/deployment/coordinations/deploy_all/environments/"


def test_a_coordinations_record_shows_100_environments_needing_attention_first(viewer_client, fleet):
    response = viewer_client.get("/api/deployment/coordinations/deploy_all/")

    body = response.json()
    shown = body["environments"]
    assert len(shown) == 100
    assert {target["status"] for target in shown} == {"failed"}
    assert [target["environment_id"] for target in shown] == sorted(target["environment_id"] for target in shown)
    assert body["progress"]["total"] == 3000
    assert len(response.content) < 100 * KB


def test_a_small_coordination_shows_every_environment_by_id(viewer_client, db):
    for environment_id in ("env_c", "env_a", "env_b"):
        make_environment(environment_id)
    make_coordination("deploy_small", C.LOCAL_DEPLOYING, {"env_c": T.FAILED, "env_a": T.SUCCEEDED, "env_b": T.RUNNING})

    body = viewer_client.get("/api/deployment/coordinations/deploy_small/").json()

    assert [target["environment_id"] for target in body["environments"]] == ["env_a", "env_b", "env_c"]


def test_a_coordinations_environments_page_through_every_one_exactly_once(viewer_client, fleet):
    seen: list[str] = []
    url: str | None = "/api/deployment/coordinations/deploy_all/environments/?limit=1000"
    while url:
        body = viewer_client.get(url).json()
        seen += [target["environment_id"] for target in body["results"]]
        assert all("output_tail" not in target for target in body["results"])
        url = body["next"]
    assert seen == [environment.environment_id for environment in fleet]


def test_a_coordinations_environments_filter_by_status_100_a_page(viewer_client, fleet):
    body = viewer_client.get("/api/deployment/coordinations/deploy_all/environments/?status=running").json()
    assert len(body["results"]) == 100
    assert {target["status"] for target in body["results"]} == {"running"}


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("status=stuck", "status"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("x=1", "x"),
    ],
)
def test_a_bad_parameter_of_a_coordinations_environments_is_400_naming_it(viewer_client, db, query, parameter):
    make_environment("env_a")
    make_coordination("deploy_small", C.LOCAL_DEPLOYING, {"env_a": T.RUNNING})

    response = viewer_client.get(f"/api/deployment/coordinations/deploy_small/environments/?{query}")

    assert response.status_code == 400, response.content
    assert list(response.json()) == [parameter]
    assert Coordination.objects.get().status == C.LOCAL_DEPLOYING


def test_the_environments_of_an_unknown_coordination_are_404(viewer_client, db):
    assert viewer_client.get("/api/deployment/coordinations/deploy_nope/environments/").status_code == 404


def test_a_coordinations_environments_are_for_signed_in_users(clients, db):
    make_environment("env_a")
    make_coordination("deploy_small", C.COMPLETED, {"env_a": T.SUCCEEDED})
    path = "/api/deployment/coordinations/deploy_small/environments/"
    assert clients["anonymous"].get(path).status_code == 401
    assert clients["viewer"].get(path).status_code == 200
    assert json.loads(clients["admin"].get(path).content)["results"][0]["environment_id"] == "env_a"
