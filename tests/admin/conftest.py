"""Admin users of each role, signed in through the test client."""

import pytest
from django.test import Client

from accounts.roles import ADMIN, VIEWER
from tests.factories import make_staff, signed_in


@pytest.fixture
def operator(db) -> Client:
    return signed_in(make_staff("operator", ADMIN))


@pytest.fixture
def viewer(db) -> Client:
    return signed_in(make_staff("watcher", VIEWER))
