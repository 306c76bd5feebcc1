"""http_api and webhook targets inside a coordination: the callback reaches the target
through the platform's own callback endpoint."""

import threading
import time
from urllib.parse import urlparse

import pytest
from django.db import connection
from django.test import Client

from deployments.models import CallbackToken, Coordination, CoordinationStatus as C, TargetStatus as T, TriggerSource
from deployments.services import coordination_start
from deployments.tasks import run_coordination
from environments.models import RemoteEnvironment, SettingsBlock
from tests.support.http import Answer
from tests.support.processes import in_thread

pytestmark = pytest.mark.django_db(transaction=True)

# An acceptance that promises a callback, as our agent's does.
PROMISE = '{"accepted": true, "callback": true}'


@pytest.fixture(autouse=True)
def quick_settings():
    SettingsBlock.objects.create(
        name="default_settings", values={"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    )


def http_api_environment(server, environment_id="docker_local_001", **fields):
    return RemoteEnvironment.objects.create(
        environment_id=environment_id,
        environment_type="docker",
        connection_method="http_api",
        host="127.0.0.1",
        port=server.port,
        api_token="agent-token",
        timeout=fields.pop("timeout", 20),
        **fields,
    )


def run_in_background(coordination: Coordination) -> threading.Thread:
    return in_thread(run_coordination, coordination_pk=coordination.pk)


def wait_for_request(server, path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for request in server.requests:
            if request.path == path:
                return request
        time.sleep(0.05)
    raise AssertionError(f"no request to {path}")


def test_an_accepted_trigger_ends_when_the_agent_calls_back(http_server, settings):
    settings.PLATFORM_BASE_URL = "http://127.0.0.1:8000"
    http_server.answer("/api/deploy/init", Answer(202, PROMISE))
    http_api_environment(http_server)
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    runner = run_in_background(coordination)

    request = wait_for_request(http_server, "/api/deploy/init")
    callback_url = request.json()["callback_url"]
    assert callback_url.startswith("http://127.0.0.1:8000/api/deployment/callback/")
    response = Client().post(
        urlparse(callback_url).path,
        data={"success": True, "exit_code": 0, "output": "agent says hi"},
        content_type="application/json",
    )
    runner.join(timeout=30)

    assert response.status_code == 200
    coordination.refresh_from_db()
    target = coordination.targets.get()
    assert coordination.status == C.COMPLETED
    assert (target.status, target.exit_code) == (T.SUCCEEDED, 0)
    assert "agent says hi" in target.output_tail
    assert not CallbackToken.objects.filter(target=target).exists()  # it ended with its target


def test_a_failing_callback_fails_the_environment_with_its_exit_code(http_server, settings):
    settings.PLATFORM_BASE_URL = "http://127.0.0.1:8000"
    http_server.answer("/api/deploy/init", Answer(202, PROMISE))
    http_api_environment(http_server)
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    runner = run_in_background(coordination)

    callback_url = wait_for_request(http_server, "/api/deploy/init").json()["callback_url"]
    Client().post(
        urlparse(callback_url).path,
        data={"success": False, "exit_code": 12, "output": "disk full"},
        content_type="application/json",
    )
    runner.join(timeout=30)

    target = Coordination.objects.get().targets.get()
    assert (target.status, target.reason, target.exit_code) == (T.FAILED, "exit_code", 12)
    assert "disk full" in target.output_tail


def test_a_webhook_without_callback_or_health_url_is_delivered_not_verified(http_server, settings):
    settings.PLATFORM_BASE_URL = ""
    http_server.answer("/webhook/deploy", Answer(200))
    RemoteEnvironment.objects.create(
        environment_id="webhook_local_001",
        environment_type="linux_local",
        connection_method="webhook",
        host="127.0.0.1",
        port=http_server.port,
        webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)

    run_coordination(coordination_pk=coordination.pk)

    coordination.refresh_from_db()
    target = coordination.targets.get()
    assert coordination.status == C.COMPLETED
    assert (target.status, target.reason) == (T.SUCCEEDED, "delivered_not_verified")
    assert target.events.get(new_status=T.SUCCEEDED).message == "delivered, not verified"
    assert not CallbackToken.objects.exists()
    assert http_server.requests[0].json()["callback_url"] == ""


def test_a_stored_timeout_beyond_its_bound_does_not_fail_the_coordination(http_server, settings):
    # Refused at every entry point; written straight to the table, as an older version or a
    # hand edit could have. The biggest value each backend's column holds.
    huge = 10**12 if connection.vendor == "sqlite" else 2**31 - 1
    settings.PLATFORM_BASE_URL = "http://127.0.0.1:8000"
    http_server.answer("/api/deploy/init", Answer(200, '{"success": true, "exit_code": 0, "output": "done"}'))
    for environment_id in ("docker_local_001", "docker_local_002"):
        http_api_environment(http_server, environment_id)
    RemoteEnvironment.objects.update(timeout=huge)
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)

    run_coordination(coordination_pk=coordination.pk)

    coordination.refresh_from_db()
    assert coordination.status == C.COMPLETED
    assert set(coordination.targets.values_list("status", "reason")) == {(T.SUCCEEDED, "")}
