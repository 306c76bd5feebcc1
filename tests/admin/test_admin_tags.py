"""Tags in the admin, through Django's test client: edited on an environment's form, shown,
filtered and searched in the list and on the dashboard, and choosing what the Deploy form
deploys, with the count of what a choice selects before it starts."""

import io
import json
import re

import pytest

from deployments.models import Coordination
from environments.models import RemoteEnvironment
from tests.factories import make_environment, make_staff, signed_in

pytestmark = pytest.mark.django_db

DEPLOY_URL = "/admin/deployments/coordination/deploy/"
SELECTION_URL = "/admin/deployments/coordination/deploy/selection/"
ENVIRONMENTS_URL = "/admin/environments/remoteenvironment/"


def page(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def form_data(**overrides) -> dict:
    data = {
        "environment_id": "mac_one",
        "environment_type": "mac_local",
        "connection_method": "ssh",
        "enabled": "on",
        "host": "127.0.0.1",
        "port": "22",
        "username": "deploy",
        "ssh_key_path": "/home/deploy/.ssh/id_ed25519",
        "init_script_path": "./init_aicore.sh",
        "timeout": "300",
    }
    data.update(overrides)
    return data


@pytest.fixture
def fleet(db):
    make_environment("mac_a", tags=["mac", "team-a"])
    make_environment("mac_flaky", tags=["mac", "flaky"])
    make_environment("mac_off", tags=["mac", "retired"], enabled=False)
    make_environment("linux_a", tags=["linux"], host="127.0.0.5")


def listed(html: str) -> list[str]:
    return sorted(set(re.findall(r'class="field-environment_id"><a href="[^"]*">([^<]+)</a>', html)))


# --- An environment's tags ------------------------------------------------------------------


def test_tags_typed_comma_separated_are_stored_as_a_list_and_shown_back(operator):
    response = operator.post(ENVIRONMENTS_URL + "add/", form_data(tags=" mac, team-a ,"), follow=True)

    environment = RemoteEnvironment.objects.get(environment_id="mac_one")
    assert response.status_code == 200
    assert environment.tags == ["mac", "team-a"]
    change = page(operator.get(f"{ENVIRONMENTS_URL}{environment.pk}/change/"))
    assert re.search(r'name="tags" value="mac, team-a"', change)


@pytest.mark.parametrize(
    ("typed", "problem"),
    [("mac, Linux", "&#x27;Linux&#x27; is not a tag"), ("mac, mac", "a tag may appear once (repeated: mac)")],
    ids=["uppercase", "duplicate"],
)
def test_tags_breaking_the_rule_are_an_error_on_the_field_and_change_nothing(operator, typed, problem):
    environment = make_environment("mac_one", environment_type="mac_local", tags=["mac"])

    html = page(operator.post(f"{ENVIRONMENTS_URL}{environment.pk}/change/", form_data(tags=typed)))

    assert re.search(r'<div class="form-row[^"]*field-tags', html) and "errors" in html
    assert problem in html
    assert RemoteEnvironment.objects.get().tags == ["mac"]


def test_the_list_shows_each_environments_tags(viewer, fleet):
    html = page(viewer.get(ENVIRONMENTS_URL))

    assert re.search(r'class="field-tags_shown">mac, team-a<', html)
    assert re.search(r'class="field-tags_shown">linux<', html)


def test_the_list_filter_offers_the_tags_in_use_and_filters_by_one(viewer, fleet):
    html = page(viewer.get(ENVIRONMENTS_URL))
    offered = re.findall(r'href="\?tag=([^"&]+)"', html)
    assert offered == ["flaky", "linux", "mac", "retired", "team-a"]

    assert listed(page(viewer.get(ENVIRONMENTS_URL + "?tag=mac"))) == ["mac_a", "mac_flaky", "mac_off"]
    assert listed(page(viewer.get(ENVIRONMENTS_URL + "?tag=flaky&enabled__exact=1"))) == ["mac_flaky"]


def test_a_search_finds_environments_by_tag_as_well_as_by_their_fields(viewer, fleet):
    assert listed(page(viewer.get(ENVIRONMENTS_URL + "?q=Team-A"))) == ["mac_a"]
    assert listed(page(viewer.get(ENVIRONMENTS_URL + "?q=127.0.0.5"))) == ["linux_a"]
    assert listed(page(viewer.get(ENVIRONMENTS_URL + "?q=flaky&tag=linux"))) == []


def test_the_dashboard_shows_each_environments_tags(viewer, fleet):
    html = page(viewer.get("/admin/"))

    assert 'data-tags="mac,team-a"' in html
    assert '<span class="pa-tag">retired</span>' in html


# --- Deploying by tag -----------------------------------------------------------------------


def test_the_deploy_form_offers_tags_and_shows_each_environments(operator, fleet):
    html = page(operator.get(DEPLOY_URL))

    assert 'name="tags"' in html and 'name="exclude_tags"' in html
    assert "mac_a (mac, team-a)" in html
    assert f'data-selection-url="{SELECTION_URL}"' in html


def test_the_deploy_form_deploys_the_enabled_tagged_environments_less_the_excluded(operator, fleet):
    response = operator.post(
        DEPLOY_URL, {"all_environments": "on", "tags": "mac, linux", "exclude_tags": "flaky", "version": "v3"}
    )

    assert response.status_code == 302
    coordination = Coordination.objects.get()
    assert sorted(coordination.targets.values_list("environment_id", flat=True)) == ["linux_a", "mac_a"]


def test_ticked_environments_and_tags_deploy_both(operator, fleet):
    operator.post(DEPLOY_URL, {"environments": ["linux_a"], "tags": "team-a"})

    assert sorted(Coordination.objects.get().targets.values_list("environment_id", flat=True)) == ["linux_a", "mac_a"]


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({"tags": "mac, macc"}, "tags", "unknown tag(s): macc"),
        ({"all_environments": "on", "exclude_tags": "flakey"}, "exclude_tags", "unknown tag(s): flakey"),
        ({"tags": "retired"}, "tags", "no enabled environment has any of the tags: retired"),
    ],
    ids=["unknown", "unknown-excluded", "only-disabled"],
)
def test_a_bad_tag_choice_is_an_error_on_its_field_and_starts_nothing(operator, fleet, data, field, problem):
    html = page(operator.post(DEPLOY_URL, data))

    assert re.search(rf'<ul class="errorlist"[^>]*><li>{re.escape(problem)}', html), html
    assert html.index(problem) < html.index(f'name="{field}"')
    assert not Coordination.objects.exists()


@pytest.mark.parametrize(
    ("query", "count", "environments"),
    [
        ("all_environments=on", 3, ["linux_a", "mac_a", "mac_flaky"]),
        ("all_environments=on&exclude_tags=flaky", 2, ["linux_a", "mac_a"]),
        ("all_environments=on&tags=mac", 2, ["mac_a", "mac_flaky"]),
        ("environments=linux_a&tags=team-a", 2, ["linux_a", "mac_a"]),
    ],
    ids=["all", "all-less-excluded", "tags-over-all", "ticked-and-tagged"],
)
def test_the_selection_view_counts_what_a_choice_selects(viewer, fleet, query, count, environments):
    response = viewer.get(f"{SELECTION_URL}?{query}")

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["environments"], body["errors"]) == (count, environments, {})
    assert body["summary"] == f"Selects {count} environments"
    assert not Coordination.objects.exists()


@pytest.mark.parametrize(
    ("query", "field", "problem"),
    [
        ("tags=macc", "tags", "unknown tag(s): macc (no environment has them)"),
        ("environments=mac_flaky&exclude_tags=flaky", "environments", "nothing left to deploy to"),
        ("", "__all__", "Choose the environments to deploy to, or tick all enabled environments."),
        ("environments=mac_off", "environments", "Select a valid choice. mac_off is not one"),
    ],
    ids=["unknown-tag", "all-excluded", "nothing-chosen", "disabled"],
)
def test_the_selection_view_answers_a_choice_that_selects_nothing_with_its_problems(
    viewer, fleet, query, field, problem
):
    body = viewer.get(f"{SELECTION_URL}?{query}").json()

    assert (body["count"], body["environments"]) == (0, [])
    assert body["errors"][field][0].startswith(problem)
    assert not Coordination.objects.exists()


def test_the_selection_view_needs_a_role(db):
    nobody = signed_in(make_staff("nobody", None))
    assert nobody.get(f"{SELECTION_URL}?all_environments=on").status_code == 403


def test_the_import_preview_shows_changed_tags_and_applies_them(operator):
    make_environment("linux_one", tags=["linux"])
    entry = {
        "environment_id": "linux_one",
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": "127.0.0.1",
        "username": "deploy",
        "ssh_key_path": "/nonexistent/id_ed25519",
        "tags": ["linux", "team-a"],
    }
    file = io.BytesIO(json.dumps({"environments": [entry]}).encode())
    file.name = "remote_environments.json"

    preview = page(operator.post(ENVIRONMENTS_URL + "import/", {"file": file}))

    assert re.search(r'data-environment="linux_one" data-verb="update"', preview)
    assert "tags: linux → linux, team-a" in preview
    assert RemoteEnvironment.objects.get().tags == ["linux"]
    payload = re.search(r'name="payload" value="([^"]+)"', preview).group(1)
    digest = re.search(r'name="digest" value="([^"]+)"', preview).group(1)
    operator.post(ENVIRONMENTS_URL + "import/", {"payload": payload, "digest": digest})
    assert RemoteEnvironment.objects.get().tags == ["linux", "team-a"]


def test_a_viewer_sees_an_environments_tags_read_only(viewer, fleet):
    environment = RemoteEnvironment.objects.get(environment_id="mac_a")

    html = page(viewer.get(f"{ENVIRONMENTS_URL}{environment.pk}/change/"))

    assert 'name="tags"' not in html
    assert re.search(r"field-tags.*?mac.*?team-a", html, re.S)
