"""Every JSON body of the API is read one way (powerautomation.parsers.BoundedJSONParser):
bounded in size and depth, each key once; a hostile body is a 400 saying what is wrong,
never a 500, and changes nothing."""

import pytest
from django.conf import settings

from deployments.models import Coordination
from environments.models import RemoteEnvironment
from tests.factories import make_environment

TRIGGER = "/api/deployment/trigger-local"
ENVIRONMENTS = "/api/deployment/environments"
CONFIG = "/api/deployment/config"
ENVIRONMENT = "/api/deployment/environments/kept_env/"
# The config file's size limit, as the README states it.
MAX_CONFIG_FILE_BYTES = 10 * 1024 * 1024

BODY_ENDPOINTS = [
    ("post", TRIGGER),
    ("post", ENVIRONMENTS),
    ("post", CONFIG),
    ("put", ENVIRONMENT),
    ("patch", ENVIRONMENT),
]


@pytest.fixture
def kept_environment(db) -> RemoteEnvironment:
    return make_environment("kept_env", description="as it was")


def send(client, method: str, url: str, body: str | bytes):
    return getattr(client, method)(url, data=body, content_type="application/json")


def nothing_changed() -> bool:
    environment = RemoteEnvironment.objects.get()
    return (environment.environment_id, environment.description) == ("kept_env", "as it was") and (
        not Coordination.objects.exists()
    )


@pytest.mark.parametrize(("method", "url"), BODY_ENDPOINTS)
def test_json_nested_100000_deep_is_a_400_naming_the_depth(admin_client_api, kept_environment, method, url):
    response = send(admin_client_api, method, url, "[" * 100_000)

    assert response.status_code == 400, response.content
    assert "nested deeper than 64 levels" in response.json()["detail"]
    assert nothing_changed()


@pytest.mark.parametrize(("method", "url"), BODY_ENDPOINTS)
def test_a_body_with_a_duplicate_key_is_a_400_naming_the_key(admin_client_api, kept_environment, method, url):
    body = '{"description": "first", "environments": [], "version": "v1", "description": "second"}'

    response = send(admin_client_api, method, url, body)

    assert response.status_code == 400, response.content
    assert "duplicate key 'description'" in response.json()["detail"]
    assert nothing_changed()


def test_a_duplicate_key_deep_inside_a_body_is_named(admin_client_api, kept_environment):
    body = '{"environments": [{"environment_id": "kept_env", "host": "a.internal", "host": "b.internal"}]}'

    response = send(admin_client_api, "post", CONFIG, body)

    assert response.status_code == 400, response.content
    assert "duplicate key 'host'" in response.json()["detail"]
    assert nothing_changed()


@pytest.mark.parametrize(("method", "url"), BODY_ENDPOINTS[:2] + BODY_ENDPOINTS[3:])
def test_a_body_over_the_upload_limit_is_a_json_400_naming_the_limit(admin_client_api, kept_environment, method, url):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = '{"description": "' + "x" * limit + '"}'

    response = send(admin_client_api, method, url, body)

    assert response.status_code == 400, response.content[:200]
    assert response["Content-Type"] == "application/json"
    assert f"larger than {limit} bytes" in response.json()["detail"]
    assert nothing_changed()


def test_a_config_import_body_may_be_as_large_as_a_config_file(admin_client_api, kept_environment):
    # Larger than DATA_UPLOAD_MAX_MEMORY_SIZE, within the config file's limit: read and validated.
    padding = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1024)
    body = '{"environments": [], "padding": "' + padding + '"}'

    response = send(admin_client_api, "post", CONFIG + "?dry_run=true", body)

    assert response.status_code == 200, response.content[:300]
    assert "padding: unknown top-level key, ignored" in response.json()["warnings"]


def test_a_config_import_body_over_the_config_file_limit_is_a_400_naming_it(admin_client_api, kept_environment):
    body = '{"environments": [], "padding": "' + "x" * MAX_CONFIG_FILE_BYTES + '"}'

    response = send(admin_client_api, "post", CONFIG, body)

    assert response.status_code == 400
    assert f"larger than {MAX_CONFIG_FILE_BYTES} bytes" in response.json()["detail"]


def test_a_request_django_itself_refuses_is_answered_in_json_under_api(client, db):
    # A Host header outside ALLOWED_HOSTS is refused by Django before any view (handler400).
    response = client.get("/api/deployment/status", HTTP_HOST="not-allowed.invalid")

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Bad request."}
