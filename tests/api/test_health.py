"""GET /api/health: database, broker, and a worker seen within the last minute."""

import json
import subprocess
import sys
import time

import pytest
from rest_framework.test import APIClient

from tests.support.ports import free_port
from tests.support.processes import ROOT, process_environment

pytestmark = pytest.mark.django_db


def test_without_a_worker_health_is_503_naming_the_worker(db):
    response = APIClient().get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["down"]) == ("unavailable", ["worker"])
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert "no worker seen in the last 60 s" in body["checks"]["worker"]["detail"]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_with_a_running_qcluster_health_is_200(qcluster):
    deadline = time.monotonic() + 30
    while True:
        response = APIClient().get("/api/health")
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert response.status_code == 200, response.content.decode() + qcluster.output()
    body = response.json()
    assert (body["status"], body["down"]) == ("ok", [])
    assert "workers in 1 clusters" in body["checks"]["worker"]["detail"]


PROBE = (
    "import django, json; django.setup(); from django.test import Client; "
    "r = Client(HTTP_HOST='127.0.0.1').get('/api/health'); print(r.status_code); print(r.content.decode())"
)


def health_in_a_process(**variables) -> tuple[int, dict]:
    """The endpoint in a separate process started with other settings."""
    env = {k: v for k, v in process_environment(":memory:").items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(variables)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    status, body = result.stdout.strip().split("\n", 1)
    return int(status), json.loads(body)


def test_an_unreachable_database_is_503_naming_it(tmp_path):
    status, body = health_in_a_process(DATABASE_URL=f"sqlite:///{tmp_path}/no-such-dir/db.sqlite3")
    assert status == 503
    assert "database" in body["down"]
    assert body["checks"]["database"]["detail"] == "unreachable (OperationalError)"


def test_an_unreachable_broker_is_503_naming_it(tmp_path):
    status, body = health_in_a_process(
        DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    assert status == 503
    assert body["down"] == ["broker", "worker"]
    assert body["checks"]["database"]["ok"]
    assert body["checks"]["broker"]["detail"] == "unreachable (ConnectionError)"


def test_the_api_version_is_anonymous_and_in_the_schema(db, settings):
    anonymous = APIClient()
    response = anonymous.get("/api/version")
    schema = anonymous.get("/api/schema/", {"format": "json"}).json()

    assert (response.status_code, response.json()) == (200, {"api_version": settings.API_VERSION})
    assert "/api/version" in schema["paths"]
    assert schema["info"]["version"] == settings.API_VERSION
