"""The OpenAPI schema (drf-spectacular): valid, complete, served with an offline Swagger
UI, and kept honest by schemathesis against a live server."""

import contextlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django_q.models import OrmQ
from rest_framework.test import APIClient

from deployments.models import CoordinationStatus as C, TargetStatus as T
from environments.models import RemoteEnvironment
from tests.factories import make_coordination, make_environment, make_user, token_client
from tests.support.passes import on_postgres
from tests.support.processes import Web, process_environment

ENDPOINTS = {
    ("post", "/api/deployment/trigger-local"),
    ("get", "/api/deployment/status"),
    ("get", "/api/deployment/history"),
    ("get", "/api/deployment/environments"),
    ("post", "/api/deployment/environments"),
    ("get", "/api/deployment/environments/{environment_id}/"),
    ("put", "/api/deployment/environments/{environment_id}/"),
    ("patch", "/api/deployment/environments/{environment_id}/"),
    ("delete", "/api/deployment/environments/{environment_id}/"),
    ("get", "/api/deployment/coordinations/{coordination_id}/"),
    ("get", "/api/deployment/coordinations/{coordination_id}/environments/"),
    ("get", "/api/deployment/coordinations/{coordination_id}/events/"),
    ("get", "/api/deployment/coordinations/{coordination_id}/environments/{environment_id}/output"),
    ("post", "/api/deployment/coordinations/{coordination_id}/cancel/"),
    ("post", "/api/deployment/coordinations/{coordination_id}/retry/"),
    ("post", "/api/deployment/coordinations/{coordination_id}/approve/"),
    ("get", "/api/deployment/config"),
    ("post", "/api/deployment/config"),
    ("get", "/api/health"),
    ("get", "/api/version"),
    ("post", "/api/agent/poll"),
    ("post", "/api/agent/runs/{run_id}/heartbeat"),
    ("post", "/api/agent/runs/{run_id}/output"),
    ("post", "/api/agent/runs/{run_id}/result"),
}


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("schema") / "schema.yml"
    # --validate checks it against the OpenAPI 3 meta-schema; --fail-on-warn makes any
    # endpoint spectacular could not describe an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def test_the_schema_documents_every_endpoint_with_its_error_codes(schema):
    operations = {
        (method, path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert set(operations) == ENDPOINTS
    for (method, path), operation in operations.items():
        codes = set(operation["responses"])
        assert any(code.startswith("2") for code in codes), (method, path)
        if path.startswith("/api/agent/"):
            # A polling agent's own token; no role, no throttle.
            assert {"400", "401"} <= codes, (method, path)
            assert operation["security"] == [{"agentToken": []}]
        elif path not in ("/api/health", "/api/version"):  # anonymous, unthrottled
            assert {"401", "403", "429"} <= codes, (method, path)
            assert {"knoxApiToken": []} in operation["security"]
        if method in ("post", "put", "patch") and not path.endswith(("/retry/", "/cancel/", "/approve/")):
            assert "400" in codes, (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)
    assert (
        schema["components"]["securitySchemes"]["knoxApiToken"]
        == {
            "type": "http",
            "scheme": "bearer",
        }
        or schema["components"]["securitySchemes"]["knoxApiToken"]["in"] == "header"
    )


def test_secrets_are_write_only_in_the_schema(schema):
    request = schema["components"]["schemas"]["RemoteEnvironmentRequest"]["properties"]
    response = schema["components"]["schemas"]["RemoteEnvironment"]["properties"]
    for name in ("password", "api_token", "webhook_secret"):
        assert request[name]["writeOnly"] is True
        assert name not in response
        assert response[f"{name}_set"]["readOnly"] is True


def test_tags_are_in_the_schema_of_an_environment_the_list_filter_and_the_trigger(schema):
    schemas = schema["components"]["schemas"]
    for name in ("RemoteEnvironment", "RemoteEnvironmentRequest"):
        tags = schemas[name]["properties"]["tags"]
        assert (tags["type"], tags["items"]["type"], tags["maxItems"]) == ("array", "string", 20)
    trigger = schemas["TriggerLocalRequest"]["properties"]
    for name in ("tags", "exclude_tags"):
        assert (trigger[name]["type"], trigger[name]["items"]["type"]) == ("array", "string")
    (tag,) = [
        parameter
        for parameter in schema["paths"]["/api/deployment/environments"]["get"]["parameters"]
        if parameter["name"] == "tag"
    ]
    assert (tag["schema"]["type"], tag["explode"]) == ("array", True)


def _resolved(schema: dict, node: dict) -> dict:
    """A property's schema, through drf-spectacular's `allOf: [$ref]` wrapping."""
    if "allOf" in node:
        (node,) = node["allOf"]
    if "$ref" in node:
        return schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _types(node: dict) -> set:
    """The types a value may take: "integer", "string", "string ^pattern$", "array of ...",
    "enum a/b"."""
    if "oneOf" in node:
        return set().union(*(_types(option) for option in node["oneOf"]))
    if "enum" in node:
        return {"enum " + "/".join(node["enum"])}
    if node["type"] == "array":
        return {"array of " + ", ".join(sorted(_types(node["items"])))}
    return {node["type"] + (f" {node['pattern']}" if "pattern" in node else "")}


def test_the_rollout_is_in_the_schema_of_the_trigger_and_of_a_coordination(schema):
    percent = "string ^[0-9]{1,3}%$"
    expected = {
        "batch_size": {"integer", percent, f"array of integer, {percent}"},
        "max_failures": {"integer", percent},
        "pause_after_first_batch": {"enum approval", "integer"},
        "batch_pause_seconds": {"integer"},
        "concurrency": {"enum queue/reject/supersede"},
    }
    trigger = schema["components"]["schemas"]["TriggerLocalRequest"]["properties"]
    rollout = _resolved(schema, trigger["rollout"])
    assert {name: _types(_resolved(schema, node)) for name, node in rollout["properties"].items()} == expected
    assert all(node["nullable"] for node in rollout["properties"].values())  # null: the config file's default
    assert rollout["properties"]["batch_size"]["oneOf"][2]["maxItems"] == 20

    coordination = schema["components"]["schemas"]["CoordinationSummary"]["properties"]
    plan = _resolved(schema, coordination["rollout"])["properties"]
    assert {name: _types(_resolved(schema, plan[name])) for name in expected} == expected
    assert (_types(plan["waves"]), _types(plan["failure_budget"])) == ({"array of integer"}, {"integer"})
    assert plan["failure_budget"]["nullable"] is True
    for name, types in {"wave": {"integer"}, "approved_at": {"string"}, "approved_by": {"string"}}.items():
        assert _types(coordination[name]) == types
    for target in ("TargetSummary", "Target"):
        fields = schema["components"]["schemas"][target]["properties"]
        assert (_types(fields["wave"]), _types(fields["waiting_for"])) == ({"integer"}, {"string"})


def test_the_busy_409_and_the_approve_endpoint_are_in_the_schema(schema):
    paths = schema["paths"]
    busy = paths["/api/deployment/trigger-local"]["post"]["responses"]["409"]
    busy = _resolved(schema, busy["content"]["application/json"]["schema"])
    assert set(busy["properties"]) == {"detail", "busy"}
    assert set(_resolved(schema, busy["properties"]["busy"]["items"])["properties"]) == {
        "environment_id",
        "coordination_id",
    }
    approve = paths["/api/deployment/coordinations/{coordination_id}/approve/"]["post"]
    assert approve["operationId"] == "coordination_approve"
    ok = approve["responses"]["200"]["content"]["application/json"]["schema"]
    conflict = approve["responses"]["409"]["content"]["application/json"]["schema"]
    assert (ok["$ref"], conflict["$ref"]) == (
        "#/components/schemas/CoordinationDetail",
        "#/components/schemas/Conflict",
    )
    assert "requestBody" not in approve


@pytest.mark.django_db
def test_the_schema_and_the_swagger_page_are_served(client, settings):
    # Without collectstatic's manifest: the page's assets are found by the finders.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    assert APIClient().get("/api/schema/?format=json").json()["info"]["title"].startswith("PowerAutomation")
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="/static/([^"]+\.(?:js|css))"', page.content.decode())
    assert any("swagger-ui-bundle" in asset for asset in assets)
    # Served from the installed sidecar package, not a CDN: the page works offline.
    assert "cdn" not in page.content.decode().lower()
    for asset in assets:
        assert finders.find(asset), asset


@contextlib.contextmanager
def web_process(database: str, log_path: Path, **variables):
    """The web process as `make run` starts it (gunicorn), on a free loopback port."""
    web = Web(process_environment(database, **variables), log_path)
    try:
        yield web.url
    finally:
        web.stop()


@pytest.fixture
def gunicorn(settings, tmp_path):
    with web_process(settings.DATABASES["default"]["NAME"], tmp_path / "gunicorn.log") as url:
        yield url


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_swagger_page_and_its_assets_are_served_by_the_web_process(gunicorn):
    page = requests.get(f"{gunicorn}/api/docs/", timeout=10)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="(/static/[^"]+\.(?:js|css))"', page.text)
    assert len(assets) >= 3
    for asset in assets:
        response = requests.get(f"{gunicorn}{asset}", timeout=10)
        assert response.status_code == 200, asset
    schema = requests.get(f"{gunicorn}/api/schema/", timeout=10)
    assert schema.status_code == 200
    assert "/api/deployment/trigger-local" in schema.text


SCHEMATHESIS_CONFIG = """
[[operations]]
include-path = "/api/health"
checks.not_a_server_error.expected-statuses = ["2xx", "4xx", "503"]
"""


def _seed_loopback_data():
    """Rows for schemathesis' calls to find: every host is loopback."""
    make_environment("env_a", password="pw-a")
    make_environment("env_b")
    make_coordination("deploy_active", C.LOCAL_DEPLOYING, {"env_a": T.RUNNING, "env_b": T.PENDING})
    make_coordination("deploy_failed", C.FAILED, {"env_a": T.FAILED, "env_b": T.SUCCEEDED})


@pytest.mark.skipif(
    not on_postgres,
    reason="the fuzz runs once, in the PostgreSQL + Redis pass: the stricter backend (it refuses NUL in text, "
    "which SQLite stores) and the 20-minute budget",
)
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(settings, tmp_path):
    """A bounded schemathesis run with an ADMIN token against the web process on loopback.

    No qcluster runs during it, so the coordinations it starts are never run and nothing
    connects to the hosts of the environments it creates; they are purged at the end."""
    _seed_loopback_data()
    key = token_client(make_user("fuzzer", "ADMIN")).key
    (tmp_path / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG)
    limits = {"API_THROTTLE_RATE": "1000000/minute", "API_ANON_THROTTLE_RATE": "1000000/minute"}
    database = settings.DATABASES["default"]["NAME"]
    try:
        with web_process(database, tmp_path / "gunicorn.log", **limits) as url:
            command = [
                str(Path(sys.executable).parent / "schemathesis"),
                "--config-file",
                str(tmp_path / "schemathesis.toml"),
                "run",
                f"{url}/api/schema/?format=json",
                "--header",
                f"Authorization: Token {key}",
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "20",
                "--seed",
                "20261123",
                "--workers",
                "1",
                "--max-redirects",
                "0",
                "--request-timeout",
                "20",
                "--generation-database",
                "none",
                "--generation-with-security-parameters",
                "false",
                "--suppress-health-check",
                "all",
            ]
            result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    finally:
        OrmQ.objects.all().delete()  # never let a later worker run what the fuzzer started
        RemoteEnvironment.objects.all().delete()
    assert result.returncode == 0, result.stdout[-15000:] + result.stderr[-3000:]
    assert "Server error" not in result.stdout


def test_a_nul_character_in_the_url_is_a_400_not_a_server_error(client):
    """PostgreSQL refuses NUL in strings: found by schemathesis on the scale-out suite."""
    assert client.get("/api/deployment/status?coordination_id=a%00b").status_code == 400
    assert client.get("/api/deployment/coordinations/a%00b/").status_code == 400
    assert client.get("/admin/deployments/coordination/?q=%00").status_code == 400


def test_the_environment_list_is_paged_and_filtered_in_the_schema(schema):
    operation = schema["paths"]["/api/deployment/environments"]["get"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert {"cursor", "limit", "tag", "health", "connection_method", "enabled"} <= set(parameters)
    assert parameters["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert set(parameters["health"]["schema"]["enum"]) == {"healthy", "unhealthy", "unknown"}
    page = _resolved(schema, operation["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(page["properties"]) == {"next", "previous", "results"}
