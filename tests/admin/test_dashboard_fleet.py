"""The dashboard at fleet size, through Django's test client: it summarises the fleet
(counts by health and by tag, unhealthy and failing environments first, the rest in the
environment list), its size and its queries do not grow with the number of healthy
environments, and its live poll answers only what changed since the version the client
sent. The browser test (test_browser.py) watches it update without a reload."""

import re
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from console.dashboard import TILES_SHOWN
from deployments.models import CoordinationStatus as C, TargetStatus as T
from environments.models import Health, RemoteEnvironment
from environments.services import environment_record_health
from tests.factories import make_coordination

pytestmark = pytest.mark.django_db

LIVE_URL = "/admin/deployments/coordination/dashboard/live/"
# A change of the page between 100 and 400 healthy environments: a few counts gain a digit.
SIZE_SLACK_BYTES = 100


def add_fleet(count: int, *, start: int = 0, health: str = Health.HEALTHY, tags=("linux",)) -> list[RemoteEnvironment]:
    rows = [
        RemoteEnvironment(
            environment_id=f"fleet_{index:04d}",
            environment_type="linux_local",
            connection_method="ssh",
            host="127.0.0.1",
            username="deploy",
            ssh_key_path="/nonexistent/id_ed25519",
            tags=list(tags),
            last_health=health,
        )
        for index in range(start, start + count)
    ]
    return RemoteEnvironment.objects.bulk_create(rows)


def page(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def count(html: str, name: str) -> int:
    found = re.search(rf'data-count="{name}">(?:<strong>)?(\d+)', html)
    assert found, name
    return int(found.group(1))


def tag_row(html: str, tag: str) -> list[int]:
    row = re.search(rf'<tr data-tag="{tag}">(.*?)</tr>', html, re.S)
    assert row, tag
    return [int(cell) for cell in re.findall(r"<td[^>]*>(\d+)</td>", row.group(1))]


def tiles(html: str) -> list[str]:
    return re.findall(r'<li class="pa-tile[^"]*" data-environment="([^"]+)"', html)


def queries(client, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured.captured_queries)


def within_one_minute_tick() -> None:
    """The versions move with the minute (relative times are redrawn): start a test that
    compares two polls early enough in a minute that it does not end in between."""
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)


@pytest.fixture
def fleet(db):
    """300 environments: 280 healthy (Mac and Linux), 12 unhealthy, 8 never checked; one
    healthy environment's last run failed."""
    add_fleet(140, tags=("mac", "team-a"))
    add_fleet(140, start=140, tags=("linux",))
    add_fleet(12, start=280, health=Health.UNHEALTHY, tags=("mac", "flaky"))
    add_fleet(8, start=292, health=Health.UNKNOWN, tags=())
    make_coordination("deploy_20261205_090909_fail", C.FAILED, {"fleet_0150": T.FAILED, "fleet_0151": T.SUCCEEDED})


def test_the_dashboard_counts_the_fleet_by_health_and_by_tag(viewer, fleet):
    html = page(viewer.get("/admin/"))

    assert (count(html, "total"), count(html, "unhealthy"), count(html, "healthy"), count(html, "unknown")) == (
        300,
        12,
        280,
        8,
    )
    assert count(html, "failing") == 1
    # Tag, environments, unhealthy, healthy, not checked.
    assert tag_row(html, "mac") == [152, 12, 140, 0]
    assert tag_row(html, "linux") == [140, 0, 140, 0]
    assert tag_row(html, "flaky") == [12, 12, 0, 0]
    assert 'href="/admin/environments/remoteenvironment/?tag=team-a"' in html
    assert 'href="/admin/environments/remoteenvironment/?last_health__exact=unhealthy"' in html


def test_the_dashboard_lists_unhealthy_then_failing_environments_first_and_the_rest_in_the_list(viewer, fleet):
    html = page(viewer.get("/admin/"))

    shown = tiles(html)
    assert len(shown) == TILES_SHOWN
    assert shown[:12] == [f"fleet_{index:04d}" for index in range(280, 292)]  # unhealthy
    assert shown[12] == "fleet_0150"  # its last run failed
    assert shown[13:] == sorted(shown[13:])
    assert f'data-pa-tiles-hidden="{300 - TILES_SHOWN}"' in html
    assert f"Showing {TILES_SHOWN} of 300: unhealthy and failing first" in html


def test_the_dashboard_does_not_grow_with_the_number_of_healthy_environments(operator, viewer):
    add_fleet(100)
    small = {client: len(page(client.get("/admin/"))) for client in (operator, viewer)}
    small_queries = {client: (queries(client, "/admin/"), queries(client, LIVE_URL)) for client in (operator, viewer)}

    add_fleet(300, start=100)

    for client in (operator, viewer):
        assert len(page(client.get("/admin/"))) - small[client] < SIZE_SLACK_BYTES
        assert (queries(client, "/admin/"), queries(client, LIVE_URL)) == small_queries[client]


def test_the_deploy_form_on_the_dashboard_offers_all_and_tags_at_fleet_size(operator):
    add_fleet(120)

    html = page(operator.get("/admin/"))

    assert "data-pa-choices-collapsed" in html and 'name="environments"' not in html
    assert "All enabled environments (120)" in html and 'name="tags"' in html
    assert 'value="fleet_0007"' in page(operator.get("/admin/deployments/coordination/deploy/"))  # one by one there


def test_a_live_poll_with_the_current_version_answers_nothing_else(viewer, fleet):
    within_one_minute_tick()
    html = page(viewer.get("/admin/"))
    version = re.search(r'data-version="([^"]+)"', html).group(1)

    response = viewer.get(LIVE_URL, {"version": version})

    assert response.status_code == 200
    body = response.json()
    assert (body["version"], body["fragments"], body["coordinations"]) == (version, {}, {})
    assert len(response.content) < 1000


def test_a_live_poll_after_a_change_answers_the_panels_that_changed(viewer, fleet):
    within_one_minute_tick()
    version = viewer.get(LIVE_URL).json()["version"]
    environment = RemoteEnvironment.objects.get(environment_id="fleet_0000")

    environment_record_health(environment_pk=environment.pk, healthy=False, detail="HTTP 503")
    changed = viewer.get(LIVE_URL, {"version": version}).json()

    assert set(changed["fragments"]) == {"health"}
    health = changed["fragments"]["health"]
    assert count(health, "unhealthy") == 13 and tiles(health)[0] == "fleet_0000"
    assert changed["version"] != version

    make_coordination("deploy_20261205_101010_next", C.COMPLETED, {"fleet_0001": T.SUCCEEDED})
    again = viewer.get(LIVE_URL, {"version": changed["version"]}).json()
    assert {"recent", "active"} <= set(again["fragments"])
    assert "deploy_20261205_101010_next" in again["fragments"]["recent"]
    assert again["coordinations"]["deploy_20261205_101010_next"]["status"] == C.COMPLETED


@pytest.mark.parametrize("bad", ["x", "0" * 43, "zzzzzzzzzz-0000000000-0000000000-0000000000", "a" * 10_000])
def test_a_live_poll_with_a_malformed_version_is_refused_naming_it(viewer, bad):
    response = viewer.get(LIVE_URL, {"version": bad})

    assert response.status_code == 400
    assert list(response.json()) == ["version"]
