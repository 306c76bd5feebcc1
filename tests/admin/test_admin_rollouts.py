"""Rollouts in the admin, through Django's test client: the Deploy form's rollout fields
(over the config file's defaults, judged by the start's one rule, errors on their fields,
nothing created), what a choice's rollout makes of it before it starts, a coordination's
rollout and waves on its page and live JSON, and the Approve button (ADMIN only) on the
page and the dashboard."""

import re

import pytest
from django.contrib.admin.models import LogEntry

from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    StageEvent,
    TargetStatus as T,
)
from environments.models import SettingsBlock
from tests.factories import make_coordination, make_environment

pytestmark = pytest.mark.django_db

DEPLOY_URL = "/admin/deployments/coordination/deploy/"
SELECTION_URL = "/admin/deployments/coordination/deploy/selection/"


def page(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def coordination_url(coordination: Coordination) -> str:
    return f"/admin/deployments/coordination/{coordination.pk}/change/"


def approve_url(coordination: Coordination) -> str:
    return f"/admin/deployments/coordination/{coordination.pk}/approve/"


def live(client, coordination: Coordination) -> dict:
    response = client.get(f"/admin/deployments/coordination/{coordination.pk}/live/?after=0")
    assert response.status_code == 200
    return response.json()


def row_counts() -> tuple[int, int, int]:
    return Coordination.objects.count(), CoordinationTarget.objects.count(), StageEvent.objects.count()


def field_block(html: str, name: str) -> str:
    """The Deploy form's block (`<div class="pa-field">`) holding the input `name`: where
    that field's errors show."""
    at = html.index(f'name="{name}"')
    return html[html.rindex('<div class="pa-field', 0, at) : html.index("</div>", at)]


@pytest.fixture
def fleet(db) -> list[str]:
    names = [f"linux_{n:02}" for n in range(20)]
    for name in names:
        make_environment(name, tags=["linux"] if name != "linux_00" else ["linux", "canary"])
    return names


def awaiting_approval(coordination_id: str = "deploy_20261205_101010_gate") -> Coordination:
    """A coordination as the runner leaves it after its canary: wave 1 ended, the other
    two environments wait for an ADMIN."""
    for name in ("linux_a", "linux_b", "linux_c"):
        if not CoordinationTarget.objects.filter(environment_id=name).exists():
            make_environment(name)
    coordination = make_coordination(
        coordination_id,
        C.AWAITING_APPROVAL,
        {"linux_a": T.SUCCEEDED, "linux_b": T.PENDING, "linux_c": T.PENDING},
        wave=1,
        rollout={
            "batch_size": [1, "100%"],
            "max_failures": None,
            "pause_after_first_batch": "approval",
            "batch_pause_seconds": 0,
            "concurrency": "queue",
            "waves": [1, 2],
            "failure_budget": None,
        },
    )
    coordination.targets.exclude(environment_id="linux_a").update(wave=2)
    return coordination


# --- The Deploy form ------------------------------------------------------------------------


def test_the_deploy_form_offers_the_rollout_fields_with_the_config_files_defaults(operator):
    make_environment("linux_one")
    SettingsBlock.objects.create(
        name="deployment_settings",
        values={
            "batch_size": [1, "50%"],
            "max_failures": 2,
            "pause_after_first_batch": "approval",
            "concurrency": "reject",
        },
    )

    html = page(operator.get(DEPLOY_URL))

    assert re.search(r'name="batch_size"[^>]*placeholder="1, 50%"|placeholder="1, 50%"[^>]*name="batch_size"', html)
    assert re.search(r'name="max_failures"[^>]*placeholder="2"|placeholder="2"[^>]*name="max_failures"', html)
    assert "Default: wait for an ADMIN&#x27;s approval" in html
    assert '<option value="" selected>Default: reject</option>' in html
    assert 'value="supersede">supersede: cancels the older run on it' in html


def test_the_dashboards_deploy_form_has_the_rollout_fields_too(operator):
    make_environment("linux_one")

    html = page(operator.get("/admin/"))

    assert 'placeholder="all at once"' in html and 'name="pause_after_first"' in html


def test_the_deploy_form_starts_a_rollout_with_the_values_given(operator, fleet):
    response = operator.post(
        DEPLOY_URL,
        {
            "all_environments": "on",
            "batch_size": " 1, 25%, 100% ",
            "max_failures": "10%",
            "pause_after_first": "approval",
            "batch_pause_seconds": "5",
            "concurrency": "supersede",
        },
    )

    assert response.status_code == 302
    coordination = Coordination.objects.get()
    assert coordination.rollout == {
        "batch_size": [1, "25%", "100%"],
        "max_failures": "10%",
        "pause_after_first_batch": "approval",
        "batch_pause_seconds": 5,
        "concurrency": "supersede",
        "waves": [1, 5, 14],
        "failure_budget": 2,
    }
    waves = dict(coordination.targets.values_list("environment_id", "wave"))
    assert sorted(waves.values()).count(1) == 1 and sorted(waves.values()).count(2) == 5


def test_empty_rollout_fields_keep_the_config_files_defaults(operator, fleet):
    SettingsBlock.objects.create(
        name="deployment_settings", values={"batch_size": [2, "100%"], "pause_after_first_batch": 30}
    )

    operator.post(DEPLOY_URL, {"all_environments": "on", "max_failures": "1"})

    rollout = Coordination.objects.get().rollout
    assert (rollout["waves"], rollout["pause_after_first_batch"], rollout["failure_budget"]) == ([2, 18], 30, 1)


def test_a_pause_of_some_seconds_after_the_first_wave_is_taken_from_its_box(operator, fleet):
    operator.post(
        DEPLOY_URL,
        {"tags": "linux", "batch_size": "1,100%", "pause_after_first": "seconds", "pause_after_first_seconds": "45"},
    )

    assert Coordination.objects.get().rollout["pause_after_first_batch"] == 45


def test_seconds_typed_with_the_choice_left_at_its_default_are_a_pause(operator, fleet):
    operator.post(DEPLOY_URL, {"all_environments": "on", "batch_size": "1,100%", "pause_after_first_seconds": "20"})

    assert Coordination.objects.get().rollout["pause_after_first_batch"] == 20


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({"batch_size": "0"}, "batch_size", "must be from 1 to 100000, not 0"),
        ({"batch_size": "1, 0"}, "batch_size", "element 2: must be from 1 to 100000, not 0"),
        ({"batch_size": "150%"}, "batch_size", "a percentage must be from 1% to 100%, not &#x27;150%&#x27;"),
        ({"max_failures": "-1"}, "max_failures", "must be from 0 to 100000, not -1"),
        ({"max_failures": "lots"}, "max_failures", "must be a whole number or a percentage"),
        (
            {"pause_after_first": "seconds", "pause_after_first_seconds": "90000"},
            "pause_after_first_seconds",
            "a whole number of seconds from 0 to 86400",
        ),
        ({"pause_after_first": "seconds"}, "pause_after_first_seconds", "not &#x27;&#x27;"),
        ({"batch_pause_seconds": "soon"}, "batch_pause_seconds", "must be a whole number of seconds"),
        ({"concurrency": "whenever"}, "concurrency", "Select a valid choice. whenever is not one"),
        ({"tags": "linux, macc"}, "tags", "unknown tag(s): macc"),
    ],
    ids=[
        "batch-0",
        "batch-list-0",
        "batch-150%",
        "failures-minus-1",
        "failures-word",
        "pause-too-long",
        "pause-empty",
        "between-word",
        "concurrency-unknown",
        "unknown-tag",
    ],
)
def test_a_bad_rollout_value_is_an_error_on_its_field_and_creates_nothing(operator, fleet, data, field, problem):
    before = row_counts()

    response = operator.post(DEPLOY_URL, {"all_environments": "on", "version": "v1", **data})

    html = page(response)
    assert problem in field_block(html, field), field_block(html, field)
    assert field in response.context["form"].errors
    assert row_counts() == before
    assert not response.context["form"].non_field_errors()


def test_every_bad_rollout_value_is_named_at_once(operator, fleet):
    response = operator.post(DEPLOY_URL, {"all_environments": "on", "batch_size": "0", "max_failures": "-1"})

    assert set(response.context["form"].errors) == {"batch_size", "max_failures"}
    assert not Coordination.objects.exists()


def test_reject_names_each_busy_environment_and_its_coordination_and_starts_nothing(operator):
    make_environment("linux_a")
    make_environment("linux_b")
    make_environment("linux_c")
    holder = make_coordination(
        "deploy_20261205_090909_hold", C.LOCAL_DEPLOYING, {"linux_a": T.RUNNING, "linux_b": T.PENDING}
    )
    before = row_counts()

    html = page(operator.post(DEPLOY_URL, {"all_environments": "on", "concurrency": "reject"}))

    errors = re.search(r'<div class="errornote">(.*?)</div>', html, re.S).group(1)
    assert "Nothing started" in errors
    link = f'<a href="{coordination_url(holder)}">deploy_20261205_090909_hold</a>'
    assert f"linux_a (in {link})" in errors and f"linux_b (in {link})" in errors
    assert "linux_c" not in errors
    assert row_counts() == before


# --- What a choice's rollout makes of it, before it starts ----------------------------------


def test_the_selection_view_says_how_the_rollout_splits_the_selection(viewer, fleet):
    query = "all_environments=on&batch_size=1,25%25,100%25&pause_after_first=approval"

    body = viewer.get(f"{SELECTION_URL}?{query}").json()

    assert (body["count"], body["waves"], body["errors"]) == (20, [1, 5, 14], {})
    assert body["summary"] == "Selects 20 environments in 3 waves: 1, 5, 14; approval after the first"
    assert not Coordination.objects.exists()


def test_the_selection_view_applies_the_config_files_defaults_and_the_budget(viewer, fleet):
    SettingsBlock.objects.create(name="deployment_settings", values={"batch_size": ["50%"], "max_failures": "10%"})

    body = viewer.get(f"{SELECTION_URL}?tags=canary&batch_pause_seconds=30").json()
    assert (body["waves"], body["summary"]) == ([1], "Selects 1 environment; stops at the first failure")

    body = viewer.get(f"{SELECTION_URL}?all_environments=on&batch_pause_seconds=30").json()
    assert body["waves"] == [10, 10] and body["failure_budget"] == 2
    assert body["summary"] == (
        "Selects 20 environments in 2 waves: 10, 10; a 30 s pause after the first; stops once more than 2 fail"
    )


@pytest.mark.parametrize(
    ("query", "field", "problem"),
    [
        ("batch_size=0", "batch_size", "must be from 1 to 100000, not 0"),
        ("max_failures=-1", "max_failures", "must be from 0 to 100000, not -1"),
        ("pause_after_first=seconds&pause_after_first_seconds=x", "pause_after_first_seconds", "must be"),
    ],
    ids=["batch-0", "failures-minus-1", "pause-word"],
)
def test_the_selection_view_answers_a_bad_rollout_value_by_its_field(viewer, fleet, query, field, problem):
    body = viewer.get(f"{SELECTION_URL}?all_environments=on&{query}").json()

    assert list(body["errors"]) == [field]
    assert body["errors"][field][0].startswith(problem)
    assert body["count"] == 20  # the selection itself is fine
    assert not Coordination.objects.exists()


# --- A coordination's rollout on its page ---------------------------------------------------


def test_a_coordination_page_shows_its_rollout_its_waves_and_the_wave_of_each_environment(viewer):
    coordination = awaiting_approval()

    html = page(viewer.get(coordination_url(coordination)))

    rollout = re.search(r"data-pa-rollout>(.*?)</fieldset>", html, re.S).group(1)
    waves = re.findall(r'data-wave="(\d)" data-state="(\w+)" data-size="(\d)"', rollout)
    assert waves == [("1", "ended", "1"), ("2", "next", "2")]
    assert "after approval" in rollout
    assert "Awaiting an ADMIN's approval after wave 1: 2 environments wait for it." in rollout
    assert "wait for an ADMIN&#x27;s approval" in rollout
    assert "none: every environment runs, however many fail" in rollout
    assert "queue: waits for the run holding it" in rollout
    assert "not yet: awaiting approval" in rollout
    assert "<th>Wave</th>" in html
    assert re.search(r'data-environment="linux_b".*?<td class="pa-wave-cell" data-wave="2">2</td>', html, re.S)
    assert 'class="pa-badge pa-tone-attention" data-status="awaiting_approval"' in html


def test_a_viewer_sees_the_rollout_and_its_status_but_no_approve_button(viewer):
    coordination = awaiting_approval()

    html = page(viewer.get(coordination_url(coordination)))

    assert "Awaiting approval" in html and "Approving needs the ADMIN role" in html
    assert "data-pa-approve" not in html and "/approve/" not in html
    front = page(viewer.get("/admin/"))
    assert "awaiting approval after wave 1" in front
    assert "data-pa-approve" not in front and "pa-dashboard-approve" not in front


def test_a_pending_target_queued_behind_another_coordination_says_which(viewer):
    make_environment("linux_a")
    holder = make_coordination("deploy_20261205_080808_hold", C.LOCAL_DEPLOYING, {"linux_a": T.RUNNING})
    queued = make_coordination("deploy_20261205_080809_next", C.LOCAL_DEPLOYING, {"linux_a": T.PENDING})
    queued.targets.update(waiting_for=holder.coordination_id)

    html = page(viewer.get(coordination_url(queued)))

    assert f'waiting for <a href="{coordination_url(holder)}">deploy_20261205_080808_hold</a>' in html


def test_a_percentage_budget_is_shown_with_what_it_resolved_to(viewer):
    make_environment("linux_a")
    coordination = make_coordination(
        "deploy_20261205_070707_pct",
        C.COMPLETED,
        {"linux_a": T.SUCCEEDED},
        wave=1,
        rollout={"max_failures": "10%", "failure_budget": 0, "waves": [1], "concurrency": "reject"},
    )

    html = page(viewer.get(coordination_url(coordination)))

    assert "stops at the first failure (max failures 10%)" in html
    assert "reject: refuses the whole deployment" in html


# --- Approve --------------------------------------------------------------------------------


def test_an_admin_sees_the_approve_button_while_it_awaits_approval_and_cancel_stays(operator):
    coordination = awaiting_approval()

    html = page(operator.get(coordination_url(coordination)))

    approve = re.search(r'<form method="post" action="([^"]+)" data-pa-approve( hidden)?>', html)
    assert approve.group(1) == approve_url(coordination) and approve.group(2) is None
    assert 'name="csrfmiddlewaretoken"' in html
    assert re.search(r"data-pa-cancel>", html)  # not hidden


def test_an_admin_approves_and_the_page_says_who(operator):
    coordination = awaiting_approval()

    response = operator.post(approve_url(coordination), follow=True)

    coordination.refresh_from_db()
    assert coordination.status == C.LOCAL_DEPLOYING
    assert coordination.approved_by == operator.user and coordination.approved_at is not None
    assert response.redirect_chain[-1][0] == coordination_url(coordination)
    html = page(response)
    assert f"Approved {coordination.coordination_id}" in html
    assert re.search(r"data-pa-approval>by operator at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC<", html)
    assert re.search(r'data-pa-approve hidden>', html)
    assert LogEntry.objects.filter(object_id=str(coordination.pk), change_message__contains="Approved").exists()
    assert StageEvent.objects.filter(coordination=coordination, new_status=C.LOCAL_DEPLOYING).count() == 1


def test_approving_a_coordination_not_awaiting_approval_shows_the_conflict_and_changes_nothing(operator):
    make_environment("linux_a")
    running = make_coordination("deploy_20261205_060606_run", C.LOCAL_DEPLOYING, {"linux_a": T.RUNNING})
    before = row_counts()

    html = page(operator.post(approve_url(running), follow=True))

    assert "deploy_20261205_060606_run is local_deploying, not awaiting approval" in html
    running.refresh_from_db()
    assert (running.status, running.approved_at) == (C.LOCAL_DEPLOYING, None)
    assert row_counts() == before


def test_a_viewer_cannot_approve(viewer):
    coordination = awaiting_approval()
    before = row_counts()

    response = viewer.post(approve_url(coordination))

    assert response.status_code == 403
    coordination.refresh_from_db()
    assert coordination.status == C.AWAITING_APPROVAL
    assert (coordination.approved_at, coordination.approved_by) == (None, None)
    assert row_counts() == before


def test_approve_takes_only_a_post(operator):
    coordination = awaiting_approval()

    assert operator.get(approve_url(coordination)).status_code == 405
    coordination.refresh_from_db()
    assert coordination.status == C.AWAITING_APPROVAL


def test_the_dashboard_shows_a_run_awaiting_approval_with_an_approve_button_back_to_itself(operator):
    coordination = awaiting_approval()

    front = page(operator.get("/admin/"))
    row = re.search(rf'<tr data-coordination="{coordination.coordination_id}".*?</tr>', front, re.S).group(0)
    assert "awaiting approval after wave 1" in row and "pa-tone-attention" in row
    assert f'form="pa-dashboard-approve" formaction="{approve_url(coordination)}"' in row
    form = re.search(r'<form method="post" id="pa-dashboard-approve" hidden>(.*?)</form>', front, re.S).group(1)
    assert 'name="next" value="/admin/"' in form and 'name="csrfmiddlewaretoken"' in form

    fragment = operator.get("/admin/deployments/coordination/dashboard/live/").json()["fragments"]["active"]
    assert "awaiting approval after wave 1" in fragment and "data-pa-approve" in fragment

    response = operator.post(approve_url(coordination), {"next": "/admin/"})
    assert response.status_code == 302 and response["Location"] == "/admin/"
    coordination.refresh_from_db()
    assert coordination.status == C.LOCAL_DEPLOYING


def test_approve_does_not_follow_a_next_to_another_site(operator):
    coordination = awaiting_approval()

    response = operator.post(approve_url(coordination), {"next": "https://example.invalid/"})

    assert response["Location"] == coordination_url(coordination)


# --- The live JSON --------------------------------------------------------------------------


def test_the_live_json_carries_can_approve_and_the_rollout_panel(operator):
    coordination = awaiting_approval()

    body = live(operator, coordination)
    assert body["can_approve"] is True and body["status"] == C.AWAITING_APPROVAL
    assert "data-pa-awaiting" in body["rollout_html"]
    assert "pa-tone-attention" in body["status_html"]

    operator.post(approve_url(coordination))
    body = live(operator, coordination)
    assert body["can_approve"] is False and body["status"] == C.LOCAL_DEPLOYING
    assert "data-pa-awaiting" not in body["rollout_html"]
    assert "by operator at" in body["rollout_html"]


def test_a_coordination_from_before_rollouts_shows_one_wave(viewer):
    make_environment("linux_a")
    make_environment("linux_b")
    old = make_coordination("deploy_20261101_101010_old", C.COMPLETED, {"linux_a": T.SUCCEEDED, "linux_b": T.SUCCEEDED})

    html = page(viewer.get(coordination_url(old)))

    assert re.findall(r'data-wave="(\d)" data-state="(\w+)" data-size="(\d)"', html) == [("1", "ended", "2")]
    assert live(viewer, old)["can_approve"] is False
