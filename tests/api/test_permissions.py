"""Every endpoint as anonymous, VIEWER and ADMIN: anonymous gets 401, a VIEWER may read
and gets 403 on a write, ADMIN may do everything; refused requests change nothing."""

import pytest
from django.test import Client
from knox.models import AuthToken

from deployments.models import Coordination, CoordinationTarget, StageEvent
from environments.models import RemoteEnvironment
from tests.factories import make_user, token_client

NEW_ENVIRONMENT = {
    "environment_id": "new_env",
    "environment_type": "mac_local",
    "connection_method": "ssh",
    "host": "127.0.0.1",
    "username": "alex",
    "ssh_key_path": "/nonexistent/key",
}
REPLACED_ENVIRONMENT = {**NEW_ENVIRONMENT, "environment_id": "seed_env", "password": "replaced-password"}

# (method, path, body, status for ADMIN)
READS = [
    ("get", "/api/deployment/status", None, 200),
    ("get", "/api/deployment/status?coordination_id=deploy_failed", None, 200),
    ("get", "/api/deployment/history", None, 200),
    ("get", "/api/deployment/environments", None, 200),
    ("get", "/api/deployment/environments/seed_env/", None, 200),
    ("get", "/api/deployment/config", None, 200),
    ("get", "/api/deployment/coordinations/deploy_failed/", None, 200),
    ("get", "/api/deployment/coordinations/deploy_failed/events/", None, 200),
    ("get", "/api/deployment/coordinations/deploy_failed/environments/", None, 200),
]
WRITES = [
    ("post", "/api/deployment/trigger-local", {}, 202),
    (
        "post",
        "/api/deployment/trigger-local",
        {"rollout": {"batch_size": [1, "100%"], "pause_after_first_batch": "approval"}},
        202,
    ),
    ("post", "/api/deployment/environments", NEW_ENVIRONMENT, 201),
    ("post", "/api/deployment/config", {"environments": [NEW_ENVIRONMENT]}, 200),
    ("put", "/api/deployment/environments/seed_env/", REPLACED_ENVIRONMENT, 200),
    ("patch", "/api/deployment/environments/seed_env/", {"description": "changed"}, 200),
    ("delete", "/api/deployment/environments/seed_env/", None, 204),
    ("post", "/api/deployment/coordinations/deploy_active/cancel/", None, 200),
    ("post", "/api/deployment/coordinations/deploy_failed/retry/", None, 202),
    ("post", "/api/deployment/coordinations/deploy_awaiting/approve/", None, 200),
]
ENDPOINTS = READS + WRITES


def _ids(endpoint):
    method, path, body, _ = endpoint
    return f"{method.upper()} {path}" + (" with a rollout" if body and "rollout" in body else "")


def snapshot() -> dict:
    """Everything a write could change."""
    return {
        "coordinations": sorted(Coordination.objects.values_list("coordination_id", "status")),
        "targets": sorted(CoordinationTarget.objects.values_list("coordination_id", "environment_id", "status")),
        "events": StageEvent.objects.count(),
        "environments": [
            (env.environment_id, env.description, env.password, env.username, env.connection_method)
            for env in RemoteEnvironment.objects.order_by("environment_id")
        ],
    }


def call(client, method, path, body):
    return getattr(client, method)(path, body, format="json") if body is not None else getattr(client, method)(path)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=_ids)
def test_anonymous_gets_401_and_changes_nothing(clients, seeded, endpoint):
    method, path, body, _ = endpoint
    before = snapshot()
    response = call(clients["anonymous"], method, path, body)
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == "Token"
    assert snapshot() == before


@pytest.mark.parametrize("endpoint", READS, ids=_ids)
def test_viewer_may_read(clients, seeded, endpoint):
    method, path, body, _ = endpoint
    assert call(clients["viewer"], method, path, body).status_code == 200


@pytest.mark.parametrize("endpoint", WRITES, ids=_ids)
def test_viewer_gets_403_on_a_write_and_changes_nothing(clients, seeded, endpoint):
    method, path, body, _ = endpoint
    before = snapshot()
    response = call(clients["viewer"], method, path, body)
    assert response.status_code == 403, response.content
    assert "ADMIN" in response.json()["detail"]
    assert snapshot() == before


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=_ids)
def test_admin_may_do_everything(clients, seeded, endpoint):
    method, path, body, expected = endpoint
    response = call(clients["admin"], method, path, body)
    assert response.status_code == expected, response.content


def test_a_superuser_counts_as_admin(seeded):
    client = token_client(make_user("root", is_superuser=True))
    assert client.post("/api/deployment/coordinations/deploy_active/cancel/").status_code == 200


def test_a_user_without_a_role_may_read_nothing(seeded):
    client = token_client(make_user("nobody"))
    response = client.get("/api/deployment/status")
    assert response.status_code == 403
    assert "VIEWER or ADMIN" in response.json()["detail"]


@pytest.mark.parametrize("endpoint", WRITES, ids=_ids)
def test_a_user_without_a_role_may_write_nothing(seeded, endpoint):
    method, path, body, _ = endpoint
    before = snapshot()
    response = call(token_client(make_user("nobody")), method, path, body)
    assert response.status_code == 403, response.content
    assert "ADMIN" in response.json()["detail"]
    assert snapshot() == before


def test_a_browser_session_works_like_a_token(seeded, client):
    user = make_user("browser", "VIEWER")
    client.force_login(user)
    assert client.get("/api/deployment/history").status_code == 200
    # Session writes need the CSRF token like any form, so a page elsewhere cannot post.
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(make_user("browser_admin", "ADMIN"))
    assert strict.post("/api/deployment/trigger-local", {}, content_type="application/json").status_code == 403


def test_a_wrong_expired_or_revoked_token_gets_401(seeded):
    from datetime import timedelta

    user = make_user("scripted", "ADMIN")
    expired = token_client(user, expiry=timedelta(seconds=-1))
    revoked = token_client(user)
    AuthToken.objects.filter(token_key=revoked.key[:15]).delete()
    wrong = token_client(user)
    wrong.credentials(HTTP_AUTHORIZATION="Token " + "0" * 64)

    for client in (expired, revoked, wrong):
        response = client.get("/api/deployment/status")
        assert response.status_code == 401, response.content
        assert response.json()["detail"] == "Invalid token."


@pytest.mark.django_db
def test_the_roles_exist_after_migrating():
    """deployments.0004 creates the groups. (pytest-django runs these tests before the
    transactional ones, whose teardown empties every table.)"""
    from django.contrib.auth.models import Group

    from accounts.roles import ROLES

    assert set(Group.objects.filter(name__in=ROLES).values_list("name", flat=True)) == set(ROLES)
