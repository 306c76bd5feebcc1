"""Admin users of each role, signed in through the test client."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from accounts.roles import ADMIN, VIEWER

PASSWORD = "correct horse battery staple"


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


@pytest.fixture
def operator(db) -> Client:
    return signed_in(make_staff("operator", ADMIN))


@pytest.fixture
def viewer(db) -> Client:
    return signed_in(make_staff("watcher", VIEWER))
