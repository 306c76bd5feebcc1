"""Rows, users and signed-in clients for tests, written directly to the test database.

API users and their token clients (`make_user`, `token_client`), admin users and their
browser-like clients (`make_staff`, `signed_in`), environments and coordinations as a run
leaves them (`make_environment`, `make_coordination`)."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from knox.models import AuthToken
from rest_framework.test import APIClient

from deployments.models import Coordination, CoordinationTarget, StageEvent, TargetStatus as T
from environments.models import RemoteEnvironment

PASSWORD = "correct horse battery staple"  # every staff user's


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


def make_staff(username: str, role: str | None) -> object:
    user = get_user_model().objects.create_user(username=username, password=PASSWORD, is_staff=True)
    if role:
        # get_or_create: a transactional test flushes the groups the migration made.
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    client.user = user
    return client


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
