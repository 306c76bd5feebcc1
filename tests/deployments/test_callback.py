"""The agents' callback endpoint: the token is the only credential."""

import hashlib
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.models import CallbackToken, CoordinationTarget, TargetStatus, TriggerSource
from deployments.services import coordination_cancel, coordination_start
from deployments.transitions import transition
from environments.models import RemoteEnvironment

pytestmark = pytest.mark.django_db

TOKEN = "k3mS9yQ2xq0cU-callback-token-for-tests-only"


@pytest.fixture
def target():
    RemoteEnvironment.objects.create(
        environment_id="docker_local_001",
        environment_type="docker",
        connection_method="http_api",
        host="127.0.0.1",
        port=8082,
        api_token="t",
    )
    coordination_start(triggered_by=TriggerSource.COMMAND)
    target = CoordinationTarget.objects.get()
    CallbackToken.objects.create(
        target=target,
        token_hash=hashlib.sha256(TOKEN.encode()).hexdigest(),
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    return target


def post(client, token, body):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(f"/api/deployment/callback/{token}/", data=data, content_type="application/json")


def test_a_valid_callback_is_recorded_once(client, target):
    response = post(client, TOKEN, {"success": True, "exit_code": 0, "output": "ok\n"})

    assert response.status_code == 200
    callback = CallbackToken.objects.get(target=target)
    assert callback.used_at is not None
    assert callback.result == {"success": True, "exit_code": 0, "output": "ok\n"}


def test_a_reused_token_gets_404_and_changes_nothing(client, target):
    post(client, TOKEN, {"success": True, "exit_code": 0, "output": "first"})

    response = post(client, TOKEN, {"success": False, "exit_code": 9, "output": "second"})

    assert response.status_code == 404
    assert CallbackToken.objects.get(target=target).result["output"] == "first"


def test_an_unknown_token_gets_404(client, target):
    assert post(client, "not-a-token", {"success": True, "exit_code": 0}).status_code == 404
    assert CallbackToken.objects.get(target=target).used_at is None


def test_an_expired_token_gets_404(client, target):
    CallbackToken.objects.filter(target=target).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert post(client, TOKEN, {"success": True, "exit_code": 0}).status_code == 404
    assert CallbackToken.objects.get(target=target).used_at is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "non_field_errors"),
        ([1, 2], "non_field_errors"),
        ({"exit_code": 0}, "success"),
        ({"success": "yes"}, "success"),
        ({"success": True, "exit_code": "0"}, "exit_code"),
        ({"success": True, "exit_code": 0, "output": 42}, "output"),
    ],
)
def test_a_bad_body_names_the_field_and_leaves_the_token_usable(client, target, body, field):
    response = post(client, TOKEN, body)

    assert response.status_code == 400
    assert field in response.json()
    assert CallbackToken.objects.get(target=target).used_at is None
    assert post(client, TOKEN, {"success": True, "exit_code": 0}).status_code == 200


def test_only_post_is_allowed(client, target):
    assert client.get(f"/api/deployment/callback/{TOKEN}/").status_code == 405
    assert CallbackToken.objects.get(target=target).used_at is None


def test_only_the_hash_of_the_token_is_stored(target):
    assert not CallbackToken.objects.filter(token_hash=TOKEN).exists()
    assert TOKEN not in json.dumps(list(CallbackToken.objects.values()), default=str)


def test_long_output_is_kept_whole(client, target, settings):
    settings.DEPLOYMENT_OUTPUT_TAIL_BYTES = 1024
    post(client, TOKEN, {"success": True, "exit_code": 0, "output": "x" * 500_000 + "THE END"})
    output = CallbackToken.objects.get(target=target).result["output"]
    assert output == "x" * 500_000 + "THE END"


def test_a_callback_after_its_target_was_cancelled_gets_404_and_changes_nothing(client, target):
    coordination_cancel(coordination=target.coordination)

    response = post(client, TOKEN, {"success": True, "exit_code": 0, "output": "forged"})

    assert response.status_code == 404
    target.refresh_from_db()
    assert target.status == TargetStatus.CANCELLED
    assert not CallbackToken.objects.filter(target=target, used_at__isnull=False).exists()


def test_a_callback_after_its_running_targets_coordination_was_cancelled_gets_404(client, target):
    transition(target, TargetStatus.TRIGGERING)
    transition(target, TargetStatus.RUNNING)
    coordination_cancel(coordination=target.coordination)

    response = post(client, TOKEN, {"success": True, "exit_code": 0, "output": "forged"})

    assert response.status_code == 404
    assert not CallbackToken.objects.filter(target=target, used_at__isnull=False).exists()


def test_a_callback_after_its_target_succeeded_gets_404(client, target):
    transition(target, TargetStatus.TRIGGERING)
    transition(target, TargetStatus.RUNNING)
    transition(target, TargetStatus.SUCCEEDED)

    assert post(client, TOKEN, {"success": False, "exit_code": 1}).status_code == 404


def test_a_deeply_nested_body_with_a_bogus_token_gets_404_not_500(client, target):
    assert post(client, "not-a-token", "[" * 100_000).status_code == 404


def test_a_deeply_nested_body_with_a_live_token_is_a_400_naming_the_problem(client, target):
    response = post(client, TOKEN, "[" * 100_000)

    assert response.status_code == 400
    assert "nested too deeply" in response.json()["non_field_errors"][0]
    assert CallbackToken.objects.get(target=target).used_at is None


def test_a_body_with_a_duplicate_key_is_a_400_naming_the_key(client, target):
    response = post(client, TOKEN, '{"success": false, "exit_code": 1, "success": true}')

    assert response.status_code == 400
    assert "duplicate key 'success'" in response.json()["non_field_errors"][0]
    assert CallbackToken.objects.get(target=target).used_at is None


def test_a_body_over_the_limit_is_a_400_and_the_token_stays_usable(client, target):
    response = post(client, TOKEN, '{"success": true, "output": "' + "x" * (2 * 1024 * 1024) + '"}')

    assert response.status_code == 400
    assert "too large" in response.json()["non_field_errors"][0]
    assert post(client, TOKEN, {"success": True, "exit_code": 0}).status_code == 200
