"""Planning an import (environments.config.plan_import) without writing anything."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from environments.config import plan_import
from environments.models import RemoteEnvironment

pytestmark = pytest.mark.django_db


def entry(environment_id: str) -> dict:
    return {
        "environment_id": environment_id,
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": "127.0.0.1",
        "username": "deploy",
        "ssh_key_path": "/keys/id_ed25519",
    }


def queries_to_plan(count: int) -> int:
    RemoteEnvironment.objects.all().delete()
    ids = [f"env_{n:03}" for n in range(count)]
    RemoteEnvironment.objects.bulk_create(RemoteEnvironment(**entry(environment_id)) for environment_id in ids)
    data = {"environments": [{**entry(environment_id), "description": "changed"} for environment_id in ids]}
    with CaptureQueriesContext(connection) as queries:
        plan = plan_import(data)
    assert len(plan.update) == count
    return len(queries)


def test_planning_an_import_of_existing_environments_takes_the_same_queries_for_any_number():
    assert queries_to_plan(20) == queries_to_plan(1)
