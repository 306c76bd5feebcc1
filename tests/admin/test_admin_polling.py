"""Polling environments in the admin, through Django's test client: the agent token typed in
the form (write-only, checked by the model) or generated and shown once, who may do it,
and when each agent was last seen, on the environment's page, the list and the dashboard.
The browser test (test_browser.py) generates a token in Chromium and polls with it."""

import io
import json
import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from environments.agent_tokens import new_token, token_hash
from environments.models import RemoteEnvironment
from tests.factories import make_environment

pytestmark = pytest.mark.django_db

ENVIRONMENTS_URL = "/admin/environments/remoteenvironment/"
LIVE_URL = "/admin/deployments/coordination/dashboard/live/"
OLD_TOKEN = new_token()


def page(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def polling_environment(environment_id="laptop", token=OLD_TOKEN, **fields) -> RemoteEnvironment:
    values = {"host": "", "username": "", "ssh_key_path": "", "agent_token": token, **fields}
    return make_environment(environment_id, connection_method="polling", environment_type="mac_local", **values)


def change_url(environment: RemoteEnvironment) -> str:
    return f"{ENVIRONMENTS_URL}{environment.pk}/change/"


def generate_url(environment: RemoteEnvironment) -> str:
    return f"{ENVIRONMENTS_URL}{environment.pk}/generate-agent-token/"


def form_data(**overrides) -> dict:
    """The change form of a polling environment as a browser posts it (no host, no port typed)."""
    data = {
        "environment_id": "laptop",
        "environment_type": "mac_local",
        "connection_method": "polling",
        "enabled": "on",
        "port": "22",
        "poll_interval": "5",
        "init_script_path": "./init_aicore.sh",
        "timeout": "300",
    }
    data.update(overrides)
    return data


def poll(token: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.post("/api/agent/poll", {"environment_id": "laptop"}, format="json")


def shown_token(html: str) -> str:
    (token,) = re.findall(r'value="(pa_agent_[A-Za-z0-9_-]+)"[^>]*data-pa-agent-token', html)
    return token


def stored_hash(environment: RemoteEnvironment) -> str:
    return RemoteEnvironment.objects.values_list("agent_token_hash", flat=True).get(pk=environment.pk)


def admin_log() -> str:
    return " ".join(LogEntry.objects.values_list("change_message", flat=True))


# --- The form ---------------------------------------------------------------------------------


def test_a_polling_environment_is_added_without_host_or_port_and_its_typed_token_is_write_only(operator):
    form = page(operator.get(ENVIRONMENTS_URL + "add/"))
    assert 'name="agent_token"' in form and 'name="poll_interval"' in form
    assert "Not needed for a polling agent" in form and "Polling agent: none of these" in form

    typed = new_token()
    response = operator.post(ENVIRONMENTS_URL + "add/", form_data(agent_token=typed, poll_interval="7"), follow=True)

    assert typed not in page(response)
    environment = RemoteEnvironment.objects.get(environment_id="laptop")
    assert (environment.host, environment.poll_interval) == ("", 7)
    assert environment.agent_token_hash == token_hash(typed)
    detail = page(operator.get(change_url(environment)))
    assert typed not in detail
    assert "Stored: set. Leave empty to keep it" in detail
    assert re.search(r"field-agent_status.*?token set", detail, re.S)
    assert typed not in admin_log()


def test_an_empty_token_box_keeps_the_token_and_clear_removes_it(operator):
    environment = polling_environment()

    operator.post(change_url(environment), form_data(description="on my desk"))
    environment.refresh_from_db()
    assert (environment.description, environment.agent_token_hash) == ("on my desk", token_hash(OLD_TOKEN))
    assert poll(OLD_TOKEN).status_code == 200

    operator.post(change_url(environment), form_data(clear_secrets=["agent_token"]))
    assert stored_hash(environment) == ""
    assert poll(OLD_TOKEN).status_code == 401


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        ("short-token", "must be 32 to 200 characters long"),
        ("pa_agent_" + "x" * 30 + " with a space", "may hold only visible ASCII characters"),
        ("pa_agent_" + "é" * 40, "may hold only visible ASCII characters"),
    ],
    ids=["too_short", "space", "not_ascii"],
)
def test_a_bad_token_typed_in_the_form_names_the_field_and_changes_nothing(operator, typed, problem):
    environment = polling_environment(description="before")

    response = page(operator.post(change_url(environment), form_data(agent_token=typed, description="after")))

    assert "errornote" in response
    assert re.search(r'class="errorlist[^"]*"[^>]*>\s*<li>' + re.escape(problem), response)
    assert re.search(r"field-agent_token.*?" + re.escape(problem), response, re.S)  # under the field
    assert typed not in response
    environment.refresh_from_db()
    assert (environment.description, environment.agent_token_hash) == ("before", token_hash(OLD_TOKEN))
    assert not LogEntry.objects.exists()


def test_another_environments_token_typed_in_the_form_is_refused_naming_the_field(operator):
    polling_environment("desk", token=OLD_TOKEN)
    mine = new_token()
    environment = polling_environment(token=mine)

    response = page(operator.post(change_url(environment), form_data(agent_token=OLD_TOKEN)))

    assert re.search(r"field-agent_token.*?is the token of another environment", response, re.S)
    assert OLD_TOKEN not in response
    assert stored_hash(environment) == token_hash(mine)


# --- Generate: shown once -----------------------------------------------------------------------


def test_generate_replaces_the_token_shows_it_once_with_the_agent_command(operator):
    environment = polling_environment()
    before = page(operator.get(change_url(environment)))
    assert "data-pa-generate-agent-token" in before and "token set" in before

    response = operator.post(generate_url(environment))

    html = page(response)
    assert "no-store" in response["Cache-Control"]
    token = shown_token(html)
    assert stored_hash(environment) == token_hash(token)
    assert "replaces the previous token" in html and "shown only this once" in html
    assert (
        "python3 agent/powerautomation_agent.py --poll http://testserver --environment-id laptop "
        "--token-file agent-token.txt --script ./init_aicore.sh"
    ) in html
    # The previous agent is refused from now on; the new token is this environment's.
    assert poll(OLD_TOKEN).status_code == 401
    answer = poll(token)
    assert answer.status_code == 200 and answer.json()["run"] is None
    # Logged, without the token; and no other page shows it.
    assert LogEntry.objects.filter(change_message__contains="Generated a new agent token").count() == 1
    assert token not in admin_log()
    for url in (change_url(environment), ENVIRONMENTS_URL, "/admin/", LIVE_URL, f"{ENVIRONMENTS_URL}export/"):
        assert token not in operator.get(url).content.decode(), url
    assert not operator.cookies.get("messages")


def test_generating_twice_gives_a_new_token_each_time(operator):
    environment = polling_environment()
    first = shown_token(page(operator.post(generate_url(environment))))
    second = shown_token(page(operator.post(generate_url(environment))))
    assert first != second
    assert poll(first).status_code == 401 and poll(second).status_code == 200


def test_generate_is_a_post_only(operator):
    environment = polling_environment()
    assert operator.get(generate_url(environment)).status_code == 405
    assert stored_hash(environment) == token_hash(OLD_TOKEN)


def test_a_viewer_cannot_generate_and_sees_only_whether_a_token_is_set(viewer):
    environment = polling_environment(agent_seen_at=timezone.now() - timedelta(seconds=4))

    assert viewer.post(generate_url(environment)).status_code == 403
    assert stored_hash(environment) == token_hash(OLD_TOKEN)
    assert not LogEntry.objects.exists()

    detail = page(viewer.get(change_url(environment)))
    assert 'name="agent_token"' not in detail and "data-pa-generate-agent-token" not in detail
    assert re.search(r"field-agent_status.*?token set", detail, re.S)
    assert re.search(r"agent last seen \d+ s ago", detail)


def test_the_generate_button_is_offered_on_polling_environments_only(operator):
    ssh = make_environment("linux_one")
    detail = page(operator.get(change_url(ssh)))
    assert "data-pa-generate-agent-token" not in detail
    assert "token not set (used when the connection method is “Polling agent”)" in detail


def test_an_import_preview_says_an_agent_token_is_set_never_what_it_is(operator):
    environment = polling_environment()
    typed = new_token()
    entry = {
        "environment_id": "laptop",
        "environment_type": "mac_local",
        "connection_method": "polling",
        "agent_token": typed,
    }
    upload = io.BytesIO(json.dumps({"environments": [entry]}).encode())
    upload.name = "remote_environments.json"

    preview = page(operator.post(f"{ENVIRONMENTS_URL}import/", {"file": upload}))

    assert "agent_token: set" in preview and typed not in preview
    assert stored_hash(environment) == token_hash(OLD_TOKEN)


# --- Last seen: page, list, dashboard ---------------------------------------------------------


@pytest.fixture
def agents(db):
    now = timezone.now()
    polling_environment("laptop_online", token=new_token(), agent_seen_at=now - timedelta(seconds=4))
    polling_environment("laptop_asleep", token=new_token(), agent_seen_at=now - timedelta(seconds=600))
    polling_environment("laptop_new", token=new_token())
    make_environment("linux_ssh")


def agent_line(html: str, environment_id: str) -> str:
    tile = re.search(rf'data-environment="{environment_id}".*?</li>', html, re.S)
    assert tile, environment_id
    found = re.search(r'class="pa-tile-agent" data-agent-online="(true|false)">(.*?)</span>\s*$', tile.group(0), re.M)
    return f"{found.group(1)}: {re.sub(r'<[^>]+>', '', found.group(2))}" if found else ""


def test_the_dashboard_shows_when_each_agent_was_last_seen_and_whether_it_is_online(viewer, agents):
    health = viewer.get(LIVE_URL).json()["fragments"]["health"]

    assert re.fullmatch(r"true: online · agent last seen \d s ago", agent_line(health, "laptop_online"))
    assert re.fullmatch(r"false: offline · agent last seen 6\d\d s ago", agent_line(health, "laptop_asleep"))
    assert agent_line(health, "laptop_new") == "false: offline · agent never seen"
    assert agent_line(health, "linux_ssh") == ""
    assert agent_line(page(viewer.get("/admin/")), "laptop_new") == "false: offline · agent never seen"


def test_the_environment_list_shows_each_agent(viewer, agents):
    html = page(viewer.get(ENVIRONMENTS_URL))

    cells = dict(re.findall(r'field-environment_id"><a [^>]*>([^<]+)</a>.*?<td class="field-agent">(.*?)</td>', html))
    text = {name: re.sub(r"<[^>]+>", "", cell) for name, cell in cells.items()}
    assert re.fullmatch(r"online agent last seen \d s ago", text["laptop_online"])
    assert text["laptop_new"] == "offline agent never seen"
    assert text["linux_ssh"] == "–"


def test_the_dashboard_and_the_list_cost_the_same_for_1_and_20_polling_environments(viewer):
    def queries(path) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert viewer.get(path).status_code == 200
        return len(captured.captured_queries)

    polling_environment("laptop_0", token=new_token(), agent_seen_at=timezone.now())
    one = (queries(LIVE_URL), queries(ENVIRONMENTS_URL))
    for index in range(1, 20):
        polling_environment(f"laptop_{index}", token=new_token(), agent_seen_at=timezone.now())
    assert (queries(LIVE_URL), queries(ENVIRONMENTS_URL)) == one
