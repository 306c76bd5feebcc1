"""Users with each role, their API clients, and rows to read."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.roles import ADMIN, VIEWER
from deployments.models import CoordinationStatus as C, TargetStatus as T
from tests.factories import make_coordination, make_environment, make_user, token_client


@pytest.fixture(autouse=True)
def _fresh_cache(django_db_setup, django_db_blocker):
    """Throttle counts live in the (database) cache, which test teardown does not empty."""
    with django_db_blocker.unblock():
        cache.clear()


@pytest.fixture
def viewer_client(db) -> APIClient:
    return token_client(make_user("viewer", VIEWER))


@pytest.fixture
def admin_client_api(db) -> APIClient:
    return token_client(make_user("operator", ADMIN))


@pytest.fixture
def clients(db, viewer_client, admin_client_api) -> dict[str, APIClient]:
    return {"anonymous": APIClient(), "viewer": viewer_client, "admin": admin_client_api}


@pytest.fixture
def seeded(db):
    """An environment with a password, an active, a failed coordination and one awaiting
    approval after its first wave."""
    environment = make_environment("seed_env", password="seed-password-7f3a", ssh_key_path="")
    make_environment("other_env")
    active = make_coordination("deploy_active", C.PENDING, {"seed_env": T.PENDING})
    failed = make_coordination("deploy_failed", C.FAILED, {"seed_env": T.FAILED, "other_env": T.SUCCEEDED})
    awaiting = make_coordination("deploy_awaiting", C.AWAITING_APPROVAL, {"other_env": T.SUCCEEDED}, wave=1)
    return {"environment": environment, "active": active, "failed": failed, "awaiting": awaiting}
