"""GET environments at fleet size: pages of 100 (or `limit`), a cursor that neither skips
nor repeats while environments are added, filters, and 400s naming the parameter."""

from urllib.parse import parse_qs, urlsplit

import pytest

from environments.models import RemoteEnvironment
from tests.factories import make_environment
from tests.support.fleets import make_fleet

LIST = "/api/deployment/environments"


def ids(body: dict) -> list[str]:
    return [environment["environment_id"] for environment in body["results"]]


def test_the_list_is_a_page_of_100_with_a_link_to_the_next(viewer_client, db):
    make_fleet(250)

    body = viewer_client.get(LIST).json()

    assert set(body) == {"next", "previous", "results"}
    assert ids(body) == [f"fleet_{index:04d}" for index in range(100)]
    assert body["previous"] is None
    assert "cursor" in parse_qs(urlsplit(body["next"]).query)


def test_limit_sets_the_page_size(viewer_client, db):
    make_fleet(30)
    assert len(viewer_client.get(f"{LIST}?limit=7").json()["results"]) == 7
    assert len(viewer_client.get(f"{LIST}?limit=1000").json()["results"]) == 30


def test_walking_the_cursor_sees_every_environment_once_while_more_are_added(viewer_client, db):
    make_fleet(250)
    seen: list[str] = []
    url: str | None = f"{LIST}?limit=40"
    added = 0
    while url:
        body = viewer_client.get(url).json()
        seen += ids(body)
        url = body["next"]
        # Between pages: one that sorts before the cursor, one after it, one at the end.
        for environment_id in (f"fleet_0000_new_{added}", f"fleet_0199_new_{added}", f"zz_new_{added}"):
            make_environment(environment_id)
        added += 1

    old = [environment_id for environment_id in seen if "_new_" not in environment_id]
    assert old == [f"fleet_{index:04d}" for index in range(250)]
    assert len(seen) == len(set(seen))
    assert set(seen) <= set(RemoteEnvironment.objects.values_list("environment_id", flat=True))


def test_previous_leads_back_to_the_page_before(viewer_client, db):
    make_fleet(25)
    first = viewer_client.get(f"{LIST}?limit=10").json()
    second = viewer_client.get(first["next"]).json()
    assert ids(viewer_client.get(second["previous"]).json()) == ids(first)


@pytest.fixture
def mixed(db):
    make_environment("mac_a", tags=["mac"], last_health="unhealthy")
    make_environment("mac_off", tags=["mac"], enabled=False, last_health="healthy")
    make_environment(
        "hook",
        connection_method="webhook",
        webhook_url="http://127.0.0.1:9/hook",
        webhook_secret="whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdA==",
        ssh_key_path="",
        tags=["linux"],
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("tag=mac", ["mac_a", "mac_off"]),
        ("health=unhealthy", ["mac_a"]),
        ("health=unknown", ["hook"]),
        ("connection_method=webhook", ["hook"]),
        ("enabled=false", ["mac_off"]),
        ("tag=mac&health=healthy&limit=1", ["mac_off"]),
    ],
)
def test_each_filter_narrows_the_list(viewer_client, mixed, query, expected):
    response = viewer_client.get(f"{LIST}?{query}")
    assert response.status_code == 200, response.content
    assert ids(response.json()) == expected


def test_a_filtered_walk_pages_through_the_filtered_environments_only(viewer_client, db):
    make_fleet(120, prefix="ill", last_health="unhealthy")
    make_fleet(30, prefix="well", last_health="healthy")
    first = viewer_client.get(f"{LIST}?health=unhealthy").json()
    second = viewer_client.get(first["next"]).json()
    assert len(ids(first)) == 100
    assert ids(first) + ids(second) == [f"ill_{index:04d}" for index in range(120)]
    assert second["next"] is None


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-5", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("health=sick", "health"),
        ("connection_method=carrier_pigeon", "connection_method"),
        ("enabled=maybe", "enabled"),
        ("tag=Not%20A%20Tag", "tag"),
        ("helth=unhealthy", "helth"),
        ("offset=100", "offset"),
    ],
)
def test_a_bad_parameter_is_400_naming_it_and_changes_nothing(viewer_client, db, query, parameter):
    make_fleet(3)
    before = list(RemoteEnvironment.objects.order_by("pk").values())

    response = viewer_client.get(f"{LIST}?{query}")

    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert list(response.json()) == [parameter]
    assert list(RemoteEnvironment.objects.order_by("pk").values()) == before


def test_anonymous_is_refused_and_a_viewer_reads_the_pages(clients, db):
    make_fleet(3)
    assert clients["anonymous"].get(LIST).status_code == 401
    assert len(clients["viewer"].get(LIST).json()["results"]) == 3
    assert len(clients["admin"].get(LIST).json()["results"]) == 3


def test_the_config_export_still_has_every_environment(viewer_client, db):
    make_fleet(250)
    exported = viewer_client.get("/api/deployment/config").json()
    assert len(exported["environments"]) == 250
