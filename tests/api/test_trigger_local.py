"""POST /api/deployment/trigger-local: the API's `trigger_local`."""

import threading

import pytest
from django.db import connection

from deployments.models import Coordination, StageEvent
from deployments.services import coordination_start_once
from tests.factories import make_environment, make_user, token_client

URL = "/api/deployment/trigger-local"


@pytest.fixture
def environments(db):
    make_environment("mac_local_001")
    make_environment("linux_local_001")
    make_environment("disabled_env", enabled=False)


def test_trigger_local_queues_every_enabled_environment_and_answers_202(admin_client_api, environments):
    response = admin_client_api.post(
        URL,
        {"version": "v1.2.0", "ec2": {"instance_id": "i-0123456789abcdef0", "public_ip": "127.0.0.9"}},
        format="json",
    )

    assert response.status_code == 202, response.content
    body = response.json()
    coordination = Coordination.objects.get()
    assert body["coordination_id"] == coordination.coordination_id
    assert body["status"] == "pending"
    assert (
        body["status_url"] == f"http://testserver/api/deployment/status?coordination_id={coordination.coordination_id}"
    )
    assert response["Location"] == body["status_url"]
    assert body["environments"] == ["linux_local_001", "mac_local_001"]
    assert (coordination.triggered_by, coordination.triggered_by_user) == ("api", admin_client_api.user)
    assert (coordination.version, coordination.ec2_instance_id, coordination.ec2_public_ip) == (
        "v1.2.0",
        "i-0123456789abcdef0",
        "127.0.0.9",
    )


def test_trigger_local_takes_named_environments_an_id_and_the_ec2_config(admin_client_api, environments):
    response = admin_client_api.post(
        URL,
        {
            "environments": ["mac_local_001"],
            "coordination_id": "deploy_api_1",
            "ec2_deployment_config": {"instance_id": "i-0123456789abcdef0"},
        },
        format="json",
    )

    assert response.status_code == 202, response.content
    coordination = Coordination.objects.get(coordination_id="deploy_api_1")
    assert list(coordination.targets.values_list("environment_id", flat=True)) == ["mac_local_001"]
    assert coordination.ec2_deployment_config == {"instance_id": "i-0123456789abcdef0"}


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"environments": ["mac_local_001", "ghost_env"]}, {"environments": ["unknown environment(s): ghost_env"]}),
        ({"environments": ["disabled_env"]}, {"environments": ["disabled environment(s): disabled_env"]}),
        ({"environments": []}, {"environments": ["name at least one environment"]}),
        ({"ec2": {"public_ip": "not-an-ip"}}, {"ec2": {"public_ip": ["'not-an-ip' is not an IP address"]}}),
        (
            {"ec2": {"instance_id": "vm-1"}},
            {"ec2": {"instance_id": ["an EC2 instance id looks like i-0123456789abcdef0"]}},
        ),
        ({"version": "v 1"}, {"version": ["use 1-100 letters, digits, '_', '.', '+', ':' or '-'"]}),
        ({"environments": "mac_local_001"}, {"environments": ['Expected a list of items but got type "str".']}),
        (
            {"ec2_deployment_config": [1]},
            {"ec2_deployment_config": ['Expected a dictionary of items but got type "list".']},
        ),
    ],
)
def test_bad_input_is_400_naming_the_field_and_starts_nothing(admin_client_api, environments, body, errors):
    response = admin_client_api.post(URL, body, format="json")
    assert response.status_code == 400
    assert response.json() == errors
    assert not Coordination.objects.exists()


def test_no_enabled_environment_is_400(admin_client_api, db):
    response = admin_client_api.post(URL, {}, format="json")
    assert response.status_code == 400
    assert response.json() == {"environments": ["there is no enabled environment to deploy to"]}


def test_an_existing_coordination_id_is_400(admin_client_api, environments):
    assert admin_client_api.post(URL, {"coordination_id": "deploy_x"}, format="json").status_code == 202
    response = admin_client_api.post(URL, {"coordination_id": "deploy_x"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"coordination_id": ["a coordination 'deploy_x' already exists"]}


def test_a_body_that_is_not_json_is_400(admin_client_api, environments):
    response = admin_client_api.post(URL, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_a_replayed_idempotency_key_returns_the_first_coordination(admin_client_api, environments):
    body = {"version": "v3.0.0"}
    first = admin_client_api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="deploy-job-4711")
    replay = admin_client_api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="deploy-job-4711")
    other = admin_client_api.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="deploy-job-4712")

    assert first.status_code == 202
    assert replay.status_code == 200
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert other.status_code == 202
    assert other.json()["coordination_id"] != first.json()["coordination_id"]
    assert Coordination.objects.count() == 2
    assert StageEvent.objects.filter(message__startswith="created by api").count() == 2


def test_an_idempotency_key_reused_for_another_request_or_by_another_user_is_422(admin_client_api, environments):
    assert admin_client_api.post(URL, {"version": "v1"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1").status_code == 202
    different = admin_client_api.post(URL, {"version": "v2"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    someone_else = token_client(make_user("other_admin", "ADMIN")).post(
        URL, {"version": "v1"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert different.status_code == 422
    assert different.json() == {"detail": "this Idempotency-Key was already used with a different request"}
    assert someone_else.status_code == 422
    assert someone_else.json() == {"detail": "this Idempotency-Key was already used by another user"}
    assert Coordination.objects.count() == 1


def test_a_bad_idempotency_key_is_400(admin_client_api, environments):
    response = admin_client_api.post(URL, {}, format="json", HTTP_IDEMPOTENCY_KEY="x" * 256)
    assert response.status_code == 400
    assert list(response.json()) == ["Idempotency-Key"]
    assert not Coordination.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_idempotency_key_start_one_coordination():
    """The unique constraint decides a race: requests that all found no coordination for
    the key before any committed still end with one coordination, which all return."""
    make_environment("race_env")
    user = make_user("racer", "ADMIN")
    barrier = threading.Barrier(6)
    results, errors = [], []

    def request():
        try:
            barrier.wait(timeout=10)
            coordination, created = coordination_start_once(
                idempotency_key="race-key", triggered_by="api", user=user, version="v9"
            )
            results.append((coordination.coordination_id, created))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    assert Coordination.objects.count() == 1
    winner = Coordination.objects.get()
    assert {coordination_id for coordination_id, _ in results} == {winner.coordination_id}
    assert sum(created for _, created in results) == 1


def test_a_trigger_with_an_unknown_field_is_400_naming_it_and_starts_nothing(admin_client_api, environments):
    response = admin_client_api.post(URL, {"version": "v1.2.0", "environment": ["mac_local_001"]}, format="json")

    assert response.status_code == 400, response.content
    assert response.json() == {"environment": ["unknown field: this endpoint does not take it"]}
    assert not Coordination.objects.exists()


def test_an_unknown_field_inside_ec2_is_400_naming_it_there(admin_client_api, environments):
    body = {"ec2": {"instance_id": "i-0123456789abcdef0", "ip": "127.0.0.9"}}

    response = admin_client_api.post(URL, body, format="json")

    assert response.status_code == 400, response.content
    assert response.json() == {"ec2": {"ip": ["unknown field: this endpoint does not take it"]}}
    assert not Coordination.objects.exists()


# --- Selecting by tag ---------------------------------------------------------------------


@pytest.fixture
def tagged(db):
    make_environment("mac_a", tags=["mac"])
    make_environment("mac_flaky", tags=["mac", "flaky"])
    make_environment("mac_off", tags=["mac"], enabled=False)
    make_environment("linux_a", tags=["linux"])
    make_environment("plain")


def targets(response) -> list[str]:
    assert response.status_code == 202, response.content
    return response.json()["environments"]


def test_tags_select_the_enabled_environments_with_any_of_them(admin_client_api, tagged):
    response = admin_client_api.post(URL, {"tags": ["mac", "linux"]}, format="json")

    assert targets(response) == ["linux_a", "mac_a", "mac_flaky"]
    assert sorted(Coordination.objects.get().targets.values_list("environment_id", flat=True)) == targets(response)


def test_exclude_tags_leave_out_those_with_any_of_them_named_ones_too(admin_client_api, tagged):
    response = admin_client_api.post(
        URL, {"environments": ["plain", "mac_flaky"], "tags": ["mac"], "exclude_tags": ["flaky"]}, format="json"
    )

    assert targets(response) == ["mac_a", "plain"]


def test_exclude_tags_alone_leave_them_out_of_every_enabled_environment(admin_client_api, tagged):
    response = admin_client_api.post(URL, {"exclude_tags": ["flaky"]}, format="json")

    assert targets(response) == ["linux_a", "mac_a", "plain"]


@pytest.mark.parametrize(
    ("body", "field", "problem"),
    [
        ({"tags": ["mac", "macc"]}, "tags", "unknown tag(s): macc"),
        ({"exclude_tags": ["flakey"]}, "exclude_tags", "unknown tag(s): flakey"),
        ({"tags": ["Mac"]}, "tags", "'Mac' is not a tag"),
        ({"tags": []}, "tags", "name at least one tag"),
        ({"tags": ["mac"], "exclude_tags": ["mac"]}, "tags", "nothing left to deploy to"),
        ({"environments": ["mac_flaky"], "exclude_tags": ["flaky"]}, "environments", "nothing left to deploy to"),
        ({"tags": "mac"}, "tags", "Expected a list"),
        ({"tags": ["m" * 51]}, "tags", "no more than 50 characters"),
        ({"exclude_tags": [f"t{i}" for i in range(101)]}, "exclude_tags", "no more than 100"),
    ],
    ids=[
        "unknown",
        "unknown-excluded",
        "malformed",
        "empty",
        "all-excluded",
        "named-excluded",
        "string",
        "long",
        "101",
    ],
)
def test_a_bad_tag_selection_is_400_naming_the_field_and_starts_nothing(admin_client_api, tagged, body, field, problem):
    response = admin_client_api.post(URL, body, format="json")

    assert response.status_code == 400, response.content
    assert list(response.json()) == [field]
    assert problem in str(response.json()[field])
    assert not Coordination.objects.exists()
    assert not StageEvent.objects.exists()


def test_a_replayed_idempotency_key_with_other_tags_is_422(admin_client_api, tagged):
    first = admin_client_api.post(URL, {"tags": ["mac"]}, format="json", HTTP_IDEMPOTENCY_KEY="key-tags")
    again = admin_client_api.post(URL, {"tags": ["mac"]}, format="json", HTTP_IDEMPOTENCY_KEY="key-tags")
    other = admin_client_api.post(URL, {"tags": ["linux"]}, format="json", HTTP_IDEMPOTENCY_KEY="key-tags")

    assert (first.status_code, again.status_code, other.status_code) == (202, 200, 422)
    assert Coordination.objects.count() == 1
