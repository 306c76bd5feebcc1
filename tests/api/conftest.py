"""Users with each role, their API clients, and rows to read."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from knox.models import AuthToken
from rest_framework.test import APIClient

from accounts.roles import ADMIN, VIEWER
from deployments.models import Coordination, CoordinationStatus as C, CoordinationTarget, StageEvent, TargetStatus as T
from environments.models import RemoteEnvironment

ROLE_NAMES = ("anonymous", "viewer", "admin")


@pytest.fixture(autouse=True)
def _fresh_cache(django_db_setup, django_db_blocker):
    """Throttle counts live in the (database) cache, which test teardown does not empty."""
    with django_db_blocker.unblock():
        cache.clear()


def make_user(username: str, role: str | None = None, **fields):
    user = get_user_model().objects.create_user(username=username, password=None, **fields)
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def token_client(user, **token_fields) -> APIClient:
    _, key = AuthToken.objects.create(user=user, **token_fields)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    client.key = key
    client.user = user
    return client


@pytest.fixture
def viewer_client(db) -> APIClient:
    return token_client(make_user("viewer", VIEWER))


@pytest.fixture
def admin_client_api(db) -> APIClient:
    return token_client(make_user("operator", ADMIN))


@pytest.fixture
def clients(db, viewer_client, admin_client_api) -> dict[str, APIClient]:
    return {"anonymous": APIClient(), "viewer": viewer_client, "admin": admin_client_api}


def make_environment(environment_id: str, **fields) -> RemoteEnvironment:
    values = {
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": "127.0.0.1",
        "port": 22,
        "username": "deploy",
        "ssh_key_path": "/nonexistent/id_ed25519",
    }
    values.update(fields)
    environment = RemoteEnvironment(environment_id=environment_id, **values)
    environment.full_clean()
    environment.save()
    return environment


def make_coordination(coordination_id: str, status: str, targets: dict[str, str], **fields) -> Coordination:
    """A coordination in `status` with one target per {environment_id: target status},
    linked to the environment of that id when it exists. Rows as a finished or running
    run leaves them, written directly: these tests read them, they do not run them."""
    coordination = Coordination.objects.create(
        coordination_id=coordination_id, status=status, triggered_by="command", **fields
    )
    environments = {env.environment_id: env for env in RemoteEnvironment.objects.filter(environment_id__in=targets)}
    for environment_id, target_status in targets.items():
        target = CoordinationTarget.objects.create(
            coordination=coordination,
            remote_environment=environments.get(environment_id),
            environment_id=environment_id,
            status=target_status,
            reason="exit_code" if target_status == T.FAILED else "",
            exit_code=1 if target_status == T.FAILED else (0 if target_status == T.SUCCEEDED else None),
        )
        StageEvent.objects.create(
            coordination=coordination,
            target=target,
            environment_id=environment_id,
            stage="run",
            old_status=T.PENDING,
            new_status=target_status,
        )
    return coordination


@pytest.fixture
def seeded(db):
    """An environment with a password, an active and a failed coordination."""
    environment = make_environment("seed_env", password="seed-password-7f3a", ssh_key_path="")
    make_environment("other_env")
    active = make_coordination("deploy_active", C.PENDING, {"seed_env": T.PENDING})
    failed = make_coordination("deploy_failed", C.FAILED, {"seed_env": T.FAILED, "other_env": T.SUCCEEDED})
    return {"environment": environment, "active": active, "failed": failed}
