"""The admin as the control room, through Django's test client: roles, the Deploy form,
write-only secrets, import with a preview, export, host-key approval, a coordination's
page and its live JSON, cancel and retry. The browser tests (test_browser.py) drive the
same pages in Chromium against a real worker."""

import io
import json
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.admin.models import LogEntry

from deployments.models import Coordination, CoordinationStatus as C, CoordinationTarget, StageEvent, TargetStatus as T
from environments.connectors.ssh import fingerprint, parse_host_key
from environments.models import RemoteEnvironment
from tests.factories import make_coordination, make_environment

pytestmark = pytest.mark.django_db

DEPLOY_URL = "/admin/deployments/coordination/deploy/"
ENVIRONMENTS_URL = "/admin/environments/remoteenvironment/"
IMPORT_URL = ENVIRONMENTS_URL + "import/"


def new_host_key() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def environment_url(environment: RemoteEnvironment) -> str:
    return f"{ENVIRONMENTS_URL}{environment.pk}/change/"


def coordination_url(coordination: Coordination) -> str:
    return f"/admin/deployments/coordination/{coordination.pk}/change/"


def page(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def upload(data: dict, name: str = "remote_environments.json") -> io.BytesIO:
    file = io.BytesIO(json.dumps(data).encode())
    file.name = name
    return file


def config_entry(environment_id: str, **fields) -> dict:
    entry = {
        "environment_id": environment_id,
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": "127.0.0.1",
        "port": 2222,
        "username": "deploy",
        "ssh_key_path": "/home/deploy/.ssh/id_ed25519",
    }
    entry.update(fields)
    return entry


# --- Roles --------------------------------------------------------------------------------


def test_a_viewer_sees_everything_and_no_form_or_action(viewer):
    environment = make_environment("linux_one", password="s3cret-Password")
    coordination = make_coordination("deploy_20261123_101010_abcd", C.FAILED, {"linux_one": T.FAILED})

    front = page(viewer.get("/admin/"))
    assert "Environment health" in front and "linux_one" in front
    assert "data-pa-deploy" not in front and "may only watch" in front

    listing = page(viewer.get(ENVIRONMENTS_URL))
    assert "linux_one" in listing
    assert 'name="action"' not in listing  # no action bar at all
    assert "Import config file" not in listing and "Export config file" in listing

    detail = page(viewer.get(environment_url(environment)))
    assert 'name="host"' not in detail  # every field read-only
    assert "s3cret-Password" not in detail
    assert re.search(r"field-password_status.*?<div class=\"readonly\">set</div>", detail, re.S)

    run = page(viewer.get(coordination_url(coordination)))
    assert "data-pa-cancel" not in run and "data-pa-retry" not in run


def test_a_viewer_changes_nothing(viewer):
    environment = make_environment("linux_one")
    running = make_coordination("deploy_20261123_101010_aaaa", C.LOCAL_DEPLOYING, {"linux_one": T.RUNNING})
    failed = make_coordination("deploy_20261123_101010_bbbb", C.FAILED, {"linux_one": T.FAILED})

    refused = [
        viewer.post(DEPLOY_URL, {"all_environments": "on", "version": "v1"}),
        viewer.post(f"/admin/deployments/coordination/{running.pk}/cancel/"),
        viewer.post(f"/admin/deployments/coordination/{failed.pk}/retry/"),
        viewer.post(f"{ENVIRONMENTS_URL}{environment.pk}/approve-host-key/", {"fingerprint": "SHA256:x"}),
        viewer.post(IMPORT_URL, {"file": upload({"environments": [config_entry("new_one")]})}),
        viewer.post(environment_url(environment), {"environment_id": "renamed", "host": "127.0.0.2"}),
        viewer.post(
            ENVIRONMENTS_URL, {"action": "delete_selected", "_selected_action": [environment.pk], "post": "yes"}
        ),
    ]
    assert [response.status_code for response in refused[:6]] == [403] * 6
    # The changelist ignores an action it does not offer.
    assert RemoteEnvironment.objects.filter(pk=environment.pk).exists()
    assert Coordination.objects.count() == 2
    running.refresh_from_db()
    assert running.status == C.LOCAL_DEPLOYING
    environment.refresh_from_db()
    assert (environment.environment_id, environment.host) == ("linux_one", "127.0.0.1")
    assert not RemoteEnvironment.objects.filter(environment_id="new_one").exists()


def test_a_staff_user_without_a_role_sees_no_deployment_model(db):
    from tests.factories import make_staff, signed_in

    nobody = signed_in(make_staff("nobody", None))
    front = page(nobody.get("/admin/"))
    assert "Environment health" not in front
    assert nobody.get(ENVIRONMENTS_URL).status_code == 403
    assert nobody.get("/admin/deployments/coordination/dashboard/live/").status_code == 403


# --- Deploy -------------------------------------------------------------------------------


def test_an_operator_deploys_chosen_environments_from_the_dashboard(operator):
    make_environment("linux_one")
    make_environment("linux_two")
    make_environment("linux_off", enabled=False)
    front = page(operator.get("/admin/"))
    assert "data-pa-deploy" in front
    assert 'value="linux_one"' in front and 'value="linux_off"' not in front  # only enabled ones are offered

    response = operator.post(
        DEPLOY_URL, {"environments": ["linux_two"], "version": "v2.0.0", "next": "/admin/"}, follow=True
    )
    coordination = Coordination.objects.get()
    assert response.redirect_chain[-1][0] == "/admin/"
    assert (coordination.triggered_by, coordination.triggered_by_user, coordination.version) == (
        "admin",
        operator.user,
        "v2.0.0",
    )
    assert list(coordination.targets.values_list("environment_id", flat=True)) == ["linux_two"]
    assert "Started" in page(response) and coordination.coordination_id in page(response)


def test_the_deploy_form_refuses_bad_input_and_starts_nothing(operator):
    make_environment("linux_one")
    nothing_chosen = page(operator.post(DEPLOY_URL, {"version": "v1"}))
    assert "Choose the environments to deploy to" in nothing_chosen
    unknown = page(operator.post(DEPLOY_URL, {"environments": ["no_such_env"]}))
    assert "no_such_env" in unknown and "not one of the available choices" in unknown
    bad_version = page(operator.post(DEPLOY_URL, {"all_environments": "on", "version": "v1; rm -rf /"}))
    assert "errorlist" in bad_version
    assert Coordination.objects.count() == 0


def test_deploy_selected_action_opens_the_form_with_them_ticked(operator):
    one, two = make_environment("linux_one"), make_environment("linux_two")
    make_environment("linux_three")
    response = operator.post(
        ENVIRONMENTS_URL, {"action": "deploy_selected", "_selected_action": [one.pk, two.pk]}, follow=True
    )
    form = page(response)
    assert re.search(r'value="linux_one"[^>]*checked', form) and re.search(r'value="linux_two"[^>]*checked', form)
    assert not re.search(r'value="linux_three"[^>]*checked', form)
    assert Coordination.objects.count() == 0  # the operator still confirms


# --- Environments: secrets, import, export ------------------------------------------------


def _form_data(**overrides) -> dict:
    data = {
        "environment_id": "mac_one",
        "environment_type": "mac_local",
        "connection_method": "ssh",
        "enabled": "on",
        "host": "127.0.0.1",
        "port": "22",
        "username": "deploy",
        "init_script_path": "./init_aicore.sh",
        "timeout": "300",
        "password": "first-Secret-1",
    }
    data.update(overrides)
    return data


def test_secrets_are_write_only_in_the_admin(operator):
    response = operator.post(ENVIRONMENTS_URL + "add/", _form_data(), follow=True)
    assert response.status_code == 200
    environment = RemoteEnvironment.objects.get(environment_id="mac_one")
    assert environment.password == "first-Secret-1"

    detail = page(operator.get(environment_url(environment)))
    assert "first-Secret-1" not in detail
    assert "Stored: set. Leave empty to keep it." in detail

    # Saving with the box empty keeps the secret; ticking "clear" removes it.
    operator.post(environment_url(environment), _form_data(password="", description="renamed"))
    environment.refresh_from_db()
    assert (environment.description, environment.password) == ("renamed", "first-Secret-1")
    operator.post(environment_url(environment), _form_data(password="", ssh_key_path="/k", clear_secrets=["password"]))
    environment.refresh_from_db()
    assert environment.password == ""

    history = " ".join(LogEntry.objects.values_list("change_message", flat=True))
    assert "first-Secret-1" not in history


def test_moving_an_environment_to_another_host_needs_its_password_again(operator):
    operator.post(ENVIRONMENTS_URL + "add/", _form_data())
    environment = RemoteEnvironment.objects.get(environment_id="mac_one")

    refused = page(operator.post(environment_url(environment), _form_data(password="", host="127.0.0.2")))
    environment.refresh_from_db()
    assert "errornote" in refused and "never sent to a new address" in refused
    assert (environment.host, environment.password) == ("127.0.0.1", "first-Secret-1")

    operator.post(environment_url(environment), _form_data(password="second-Secret-2", host="127.0.0.2"))
    environment.refresh_from_db()
    assert (environment.host, environment.password) == ("127.0.0.2", "second-Secret-2")


def test_detach_is_a_three_way_choice_in_the_environment_form(operator, viewer):
    form = page(operator.get(ENVIRONMENTS_URL + "add/"))
    select = form.split('name="detach"')[1].split("</select>")[0]
    options = re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', select)
    assert options == [("", "default (ssh_settings)"), ("True", "detached"), ("False", "attached")]

    operator.post(ENVIRONMENTS_URL + "add/", _form_data(detach="False"))
    environment = RemoteEnvironment.objects.get(environment_id="mac_one")
    assert environment.detach is False
    assert re.search(
        r"<label>Detach:</label>\s*<div class=\"readonly\">attached</div>",
        page(viewer.get(environment_url(environment))),
    )

    operator.post(environment_url(environment), _form_data(password="", detach=""))
    environment.refresh_from_db()
    assert environment.detach is None

    refused = page(operator.post(environment_url(environment), _form_data(password="", detach="yes")))
    environment.refresh_from_db()
    assert "errornote" in refused and environment.detach is None


def test_a_bad_environment_form_names_the_field_and_saves_nothing(operator):
    response = page(operator.post(ENVIRONMENTS_URL + "add/", _form_data(port="70000", password="")))
    assert "errornote" in response and "port" in response
    assert not RemoteEnvironment.objects.exists()


def test_an_environment_form_timeout_beyond_seven_days_names_the_limit_and_saves_nothing(operator):
    response = page(operator.post(ENVIRONMENTS_URL + "add/", _form_data(timeout=str(10**12))))

    assert "errornote" in response
    assert "Enter a whole number from 1 to 604800 seconds (7 days)." in response
    assert not RemoteEnvironment.objects.exists()


def test_import_shows_a_preview_and_changes_nothing_until_applied(operator):
    make_environment("linux_one", host="127.0.0.1", port=22)
    make_environment("linux_gone")
    data = {
        "environments": [
            config_entry("linux_one", port=2200, password="imported-Secret-9"),
            config_entry("mac_new", environment_type="mac_local"),
        ],
        "default_settings": {"timeout": 120},
    }
    preview = page(operator.post(IMPORT_URL, {"file": upload(data), "prune": "on"}))
    assert re.search(r'data-environment="mac_new" data-verb="create"', preview)
    assert re.search(r'data-environment="linux_one" data-verb="update"', preview)
    assert re.search(r'data-environment="linux_gone" data-verb="delete"', preview)
    assert "port: 22 → 2200" in preview and "password: set" in preview
    assert "imported-Secret-9" not in preview  # the file travels encrypted in the page
    assert not RemoteEnvironment.objects.filter(environment_id="mac_new").exists()
    assert RemoteEnvironment.objects.get(environment_id="linux_one").port == 22

    payload = re.search(r'name="payload" value="([^"]+)"', preview).group(1)
    digest = re.search(r'name="digest" value="([^"]+)"', preview).group(1)
    applied = operator.post(IMPORT_URL, {"payload": payload, "digest": digest}, follow=True)
    assert "1 created, 1 updated, 0 unchanged, 1 deleted" in page(applied)
    assert RemoteEnvironment.objects.get(environment_id="linux_one").port == 2200
    assert RemoteEnvironment.objects.get(environment_id="linux_one").password == "imported-Secret-9"
    assert set(RemoteEnvironment.objects.values_list("environment_id", flat=True)) == {"linux_one", "mac_new"}


def test_an_import_preview_is_not_applied_after_the_environments_changed(operator):
    make_environment("linux_one", port=22)
    preview = page(
        operator.post(IMPORT_URL, {"file": upload({"environments": [config_entry("linux_one", port=2200)]})})
    )
    payload = re.search(r'name="payload" value="([^"]+)"', preview).group(1)
    digest = re.search(r'name="digest" value="([^"]+)"', preview).group(1)
    RemoteEnvironment.objects.filter(environment_id="linux_one").update(port=2201)  # someone else, meanwhile

    again = page(operator.post(IMPORT_URL, {"payload": payload, "digest": digest}))
    assert "changed since the preview" in again and "port: 2201 → 2200" in again
    assert RemoteEnvironment.objects.get(environment_id="linux_one").port == 2201

    forged = operator.post(IMPORT_URL, {"payload": payload + "x", "digest": digest}, follow=True)
    assert "expired or is not valid" in page(forged)
    assert RemoteEnvironment.objects.get(environment_id="linux_one").port == 2201


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"{not json", "Not valid JSON"),
        (json.dumps({"environments": [config_entry("bad_one", port=0)]}).encode(), "port"),
        (
            json.dumps(
                {"environments": [config_entry("ok_one"), config_entry("bad_two", connection_method="ftp")]}
            ).encode(),
            "connection_method",
        ),
    ],
)
def test_a_bad_import_file_names_the_problem_and_changes_nothing(operator, content, problem):
    file = io.BytesIO(content)
    file.name = "remote_environments.json"
    response = page(operator.post(IMPORT_URL, {"file": file}))
    assert problem in response
    assert "Apply these changes" not in response
    assert not RemoteEnvironment.objects.exists()


def _uploaded(content: bytes) -> io.BytesIO:
    file = io.BytesIO(content)
    file.name = "remote_environments.json"
    return file


@pytest.mark.parametrize(
    "content, problem",
    [
        (b'{"environments": ' + b"[" * 100_000, "Nested deeper than 64 levels"),
        (b'{"environments": [], "environments": []}', "Duplicate key &#x27;environments&#x27;"),
    ],
    ids=["nested-100000-deep", "duplicate-key"],
)
def test_a_hostile_import_file_is_refused_naming_the_problem(operator, content, problem):
    response = page(operator.post(IMPORT_URL, {"file": _uploaded(content)}))

    assert problem in response
    assert "Apply these changes" not in response


def test_an_import_file_over_10_mib_is_refused_naming_the_limit(operator):
    content = b'{"environments": [], "padding": "' + b"x" * (10 * 1024 * 1024) + b'"}'

    response = page(operator.post(IMPORT_URL, {"file": _uploaded(content)}))

    assert "larger than 10 MiB, the limit for a config file" in response
    assert "Apply these changes" not in response


def test_an_import_file_of_several_mib_applies_after_its_preview(operator):
    description = "a long description " * (4 * 1024 * 1024 // 19)  # about 4 MiB
    data = {"environments": [config_entry("big_one", description=description)]}
    preview = page(operator.post(IMPORT_URL, {"file": upload(data)}))
    payload = re.search(r'name="payload" value="([^"]+)"', preview).group(1)
    digest = re.search(r'name="digest" value="([^"]+)"', preview).group(1)

    applied = operator.post(IMPORT_URL, {"payload": payload, "digest": digest}, follow=True)

    assert "1 created, 0 updated, 0 unchanged, 0 deleted" in page(applied)
    assert RemoteEnvironment.objects.get(environment_id="big_one").description == description


def test_export_is_a_config_file_without_secrets(viewer):
    make_environment("linux_one", password="hidden-Password-1", health_check_url="http://127.0.0.1:9/health")
    response = viewer.get(ENVIRONMENTS_URL + "export/")
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    exported = json.loads(response.content)
    assert [entry["environment_id"] for entry in exported["environments"]] == ["linux_one"]
    assert "password" not in exported["environments"][0]
    assert b"hidden-Password-1" not in response.content


# --- Host keys ----------------------------------------------------------------------------


def _failed_on_host_key(environment: RemoteEnvironment, offered: str, reason: str = "host_key_unknown") -> Coordination:
    coordination = make_coordination("deploy_20261123_111111_hkey", C.FAILED, {environment.environment_id: T.FAILED})
    target = coordination.targets.get()
    CoordinationTarget.objects.filter(pk=target.pk).update(reason=reason, error="host key not trusted")
    StageEvent.objects.create(
        coordination=coordination,
        target=target,
        environment_id=environment.environment_id,
        stage="trigger",
        old_status=T.TRIGGERING,
        new_status=T.FAILED,
        message="host key not trusted",
        data={"offered_key": offered, "fingerprint": fingerprint(parse_host_key(offered))},
    )
    return coordination


def test_an_admin_approves_an_offered_host_key_in_one_click(operator, viewer):
    environment = make_environment("linux_one")
    offered = new_host_key()
    offered_fingerprint = fingerprint(parse_host_key(offered))
    _failed_on_host_key(environment, offered)

    seen_by_viewer = page(viewer.get(environment_url(environment)))
    assert offered_fingerprint in seen_by_viewer and "data-pa-approve-host-key" not in seen_by_viewer

    detail = page(operator.get(environment_url(environment)))
    assert "Unknown host key" in detail and offered_fingerprint in detail and "data-pa-approve-host-key" in detail

    # A fingerprint other than the one offered (a stale page) pins nothing.
    stale = operator.post(f"{ENVIRONMENTS_URL}{environment.pk}/approve-host-key/", {"fingerprint": "SHA256:other"})
    assert stale.status_code == 302
    environment.refresh_from_db()
    assert environment.host_key == ""

    approved = operator.post(
        f"{ENVIRONMENTS_URL}{environment.pk}/approve-host-key/", {"fingerprint": offered_fingerprint}, follow=True
    )
    environment.refresh_from_db()
    assert environment.host_key == offered
    assert environment.host_key_approved_by == operator.user and environment.host_key_approved_at is not None
    after = page(approved)
    assert "Unknown host key" not in after
    assert "approved by operator" in after and offered_fingerprint in after
    assert LogEntry.objects.filter(change_message__contains=offered_fingerprint).exists()


def test_a_changed_host_key_is_explained_with_both_fingerprints(operator):
    pinned = new_host_key()
    environment = make_environment("linux_one", host_key=pinned)
    offered = new_host_key()
    coordination = _failed_on_host_key(environment, offered, reason="host_key_changed")
    event = StageEvent.objects.get(coordination=coordination, new_status=T.FAILED, data__has_key="offered_key")
    StageEvent.objects.filter(pk=event.pk).update(
        data={**event.data, "expected_fingerprint": fingerprint(parse_host_key(pinned))}
    )
    detail = page(operator.get(environment_url(environment)))
    assert "The host key changed" in detail
    assert fingerprint(parse_host_key(pinned)) in detail and fingerprint(parse_host_key(offered)) in detail
    run = page(operator.get(coordination_url(coordination)))
    assert "Review the offered host key" in run


# --- Coordinations ------------------------------------------------------------------------


def test_a_coordination_page_shows_outcomes_output_and_timeline_and_no_status_field(operator):
    make_environment("linux_one")
    make_environment("linux_two")
    coordination = make_coordination(
        "deploy_20261123_121212_page", C.FAILED, {"linux_one": T.SUCCEEDED, "linux_two": T.FAILED}, version="v3"
    )
    CoordinationTarget.objects.filter(environment_id="linux_two").update(
        exit_code=4, output_tail="connecting to platform\nERROR: port 8080 refused\n", error="script exited with 4"
    )
    detail = page(operator.get(coordination_url(coordination)))
    assert 'name="status"' not in detail  # status is never edited by hand
    assert "ERROR: port 8080 refused" in detail and "script exited with 4" in detail
    assert re.search(r'data-environment="linux_two" data-status="failed">.*?<td>4</td>', detail, re.S)
    assert "1 of 2 done" not in detail and "2 of 2 done · 1 failed" in detail
    assert "data-pa-retry" in detail and "data-pa-cancel hidden" in detail
    assert 'class="pa-table pa-timeline"' in detail and "linux_two" in detail

    listing = page(operator.get("/admin/deployments/coordination/"))
    assert "deploy_20261123_121212_page" in listing and "2 of 2 done · 1 failed" in listing


def test_the_live_view_sends_only_new_events(operator):
    make_environment("linux_one")
    coordination = make_coordination("deploy_20261123_131313_live", C.LOCAL_DEPLOYING, {"linux_one": T.RUNNING})
    first = operator.get(f"/admin/deployments/coordination/{coordination.pk}/live/?after=0").json()
    assert first["status"] == C.LOCAL_DEPLOYING and not first["finished"]
    assert "linux_one" in first["targets"] and first["events_html"].count("data-event=") == 1
    again = operator.get(f"/admin/deployments/coordination/{coordination.pk}/live/?after={first['next_after']}").json()
    assert "data-event=" not in again["events_html"] and again["targets"] == {}
    for bad in ("-1", "x", "9" * 30):
        response = operator.get(f"/admin/deployments/coordination/{coordination.pk}/live/?after={bad}")
        assert response.status_code == 400 and "after" in response.json()


def test_the_dashboard_live_view_carries_every_panel(viewer):
    make_environment("linux_one")
    make_coordination("deploy_20261123_141414_dash", C.LOCAL_DEPLOYING, {"linux_one": T.RUNNING})
    live = viewer.get("/admin/deployments/coordination/dashboard/live/").json()
    assert set(live["fragments"]) == {"health", "active", "recent", "checks"}
    assert "deploy_20261123_141414_dash" in live["fragments"]["active"]
    assert live["coordinations"]["deploy_20261123_141414_dash"]["progress"]["running"] == 1


def test_an_operator_cancels_and_retries_from_the_coordination_page(operator):
    make_environment("linux_one")
    make_environment("linux_two")
    running = make_coordination("deploy_20261123_151515_run", C.LOCAL_DEPLOYING, {"linux_one": T.PENDING})
    response = operator.post(f"/admin/deployments/coordination/{running.pk}/cancel/", follow=True)
    running.refresh_from_db()
    assert running.status == C.CANCELLED and "cancelled by operator" in running.error
    assert "Cancelled deploy_20261123_151515_run" in page(response)
    again = operator.post(f"/admin/deployments/coordination/{running.pk}/cancel/", follow=True)
    assert "has already ended" in page(again)

    failed = make_coordination(
        "deploy_20261123_151515_bad", C.FAILED, {"linux_one": T.SUCCEEDED, "linux_two": T.FAILED}
    )
    response = operator.post(f"/admin/deployments/coordination/{failed.pk}/retry/", follow=True)
    retry = Coordination.objects.get(retry_of=failed)
    assert list(retry.targets.values_list("environment_id", flat=True)) == ["linux_two"]
    assert retry.triggered_by == "admin" and retry.triggered_by_user == operator.user
    assert response.redirect_chain[-1][0] == coordination_url(retry)
    assert f"as {retry.coordination_id}" in page(response) or retry.coordination_id in page(response)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_health_check_and_preflight_actions_run_on_a_worker_and_show_their_results(
    no_retry_delay, qcluster, http_server, sshd, make_ssh_environment
):
    from tests.factories import make_staff, signed_in
    from tests.support.processes import wait_until

    operator = signed_in(make_staff("operator", "ADMIN"))
    http_server.answer("/health", 200)
    http_server.answer("/down", 503)
    up = make_ssh_environment("linux_up", "./init_aicore.sh", health_check_url=http_server.url("/health"))
    down = make_ssh_environment("linux_down", "./init_aicore.sh", health_check_url=http_server.url("/down"))
    unchecked = make_ssh_environment("linux_unchecked", "./init_aicore.sh")

    response = operator.post(
        ENVIRONMENTS_URL,
        {"action": "health_check_now", "_selected_action": [up.pk, down.pk, unchecked.pk]},
        follow=True,
    )
    assert "Queued a health check of 2 environments" in page(response)
    assert "No health_check_url, not checked: linux_unchecked" in page(response)
    wait_until(
        lambda: (
            set(RemoteEnvironment.objects.filter(pk__in=[up.pk, down.pk]).values_list("last_health", flat=True))
            == {"healthy", "unhealthy"}
        ),
        60,
        "the worker to check both",
    )
    wait_until(
        lambda: (
            "1 failed" in operator.get("/admin/deployments/coordination/dashboard/live/").json()["fragments"]["checks"]
        ),
        30,
        "the check's result on the dashboard",
    )
    checks = operator.get("/admin/deployments/coordination/dashboard/live/").json()["fragments"]["checks"]
    assert "Health check" in checks and "1 ok" in checks and "linux_down" in checks

    operator.post(ENVIRONMENTS_URL, {"action": "connectivity_preflight", "_selected_action": [up.pk]})
    wait_until(
        lambda: (
            "Connectivity preflight"
            in operator.get("/admin/deployments/coordination/dashboard/live/").json()["fragments"]["checks"]
        ),
        60,
        "the preflight's result",
    )
    detail = page(operator.get(environment_url(up)))
    assert re.search(r"Connectivity preflight, .*? ago:\s*<span class=\"pa-text-good\">ok</span>", detail, re.S)


def test_auto_deploy_claims_are_listed_read_only(operator, viewer):
    from deployments.models import AutoDeploy

    coordination = make_coordination("deploy_20261123_161616_auto", C.COMPLETED, {})
    AutoDeploy.objects.create(version="v9.9.9", coordination=coordination, claimed_by="web-1:4242")
    listing = page(viewer.get("/admin/deployments/autodeploy/"))
    assert "v9.9.9" in listing and "deploy_20261123_161616_auto" in listing and "web-1:4242" in listing
    assert operator.get("/admin/deployments/autodeploy/add/").status_code == 403
