"""No log line, Django's or gunicorn's, shows an agent's callback token."""

import hashlib
import logging
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from deployments.models import CallbackToken, CoordinationTarget, TriggerSource
from deployments.services import coordination_start
from powerautomation.log_redaction import redact_callback_tokens
from tests.factories import make_environment
from tests.support.processes import wait_until

TOKEN = "Zq7-callback-token-that-must-never-be-logged"
CALLBACK = f"/api/deployment/callback/{TOKEN}/"


def live_callback_token() -> CoordinationTarget:
    make_environment("docker_local_001", connection_method="http_api", api_token="t")
    coordination_start(triggered_by=TriggerSource.COMMAND)
    target = CoordinationTarget.objects.get()
    CallbackToken.objects.create(
        target=target,
        token_hash=hashlib.sha256(TOKEN.encode()).hexdigest(),
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    return target


@pytest.mark.django_db
def test_djangos_request_log_of_a_bad_callback_body_shows_no_token(client, caplog):
    live_callback_token()
    caplog.set_level(logging.WARNING, logger="django.request")

    response = client.post(CALLBACK, data="not json", content_type="application/json")

    assert response.status_code == 400
    lines = [record.getMessage() for record in caplog.records if record.name == "django.request"]
    assert lines == ["Bad Request: /api/deployment/callback/***/"]


@pytest.mark.e2e
def test_the_web_processs_access_and_error_logs_never_show_a_callback_token(web_server, tmp_path):
    live_callback_token()

    bad = requests.post(web_server + CALLBACK, data=b"not json", timeout=10)
    good = requests.post(web_server + CALLBACK, json={"success": True, "exit_code": 0}, timeout=10)
    reused = requests.post(web_server + CALLBACK, json={"success": True}, timeout=10)

    assert (bad.status_code, good.status_code, reused.status_code) == (400, 200, 404)
    log_path = tmp_path / "gunicorn.log"

    def access_lines():
        lines = [line for line in log_path.read_text().splitlines() if '"POST /api/deployment/callback/' in line]
        return lines if len(lines) == 3 else None

    lines = wait_until(access_lines, 10, "the access log's line for each of the 3 callbacks")
    log = log_path.read_text()
    assert TOKEN not in log
    assert "Bad Request: /api/deployment/callback/***/" in log  # Django's own line, redacted
    assert all('"POST /api/deployment/callback/***/ HTTP/1.1"' in line for line in lines)


@pytest.mark.parametrize(
    "path",
    [
        "/api/deployment/callbac%6B/{token}/",  # Django decodes PATH_INFO: this routes to the callback
        "/api%2Fdeployment%2Fcallback%2F{token}/",
        "/api/deployment/callback/{token}/",
    ],
)
def test_a_percent_encoded_callback_path_is_redacted_too(path):
    token = "pretend-live-token-7c1f"
    line = f'127.0.0.1 - - "POST {path.format(token=token)} HTTP/1.1" 400 58'

    assert token not in redact_callback_tokens(line)
