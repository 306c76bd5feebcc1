"""The original PowerAutomation deployment component's agents, as its users bring them: their
answers read through the real connectors against loopback stand-ins (tests/support/http.py).
Through a real coordination: tests/deployments/test_original_agents_e2e.py."""

import json

import pytest

from deployments.models import TargetStatus as T
from deployments.runner.delivery import deliver
from environments.config import DeploymentDefaults
from tests.environments.test_http_connectors import Reporter, api_target, context, webhook_target
from tests.support.http import Answer

SUCCESS = {
    "status": "success",
    "message": "Local environment initialized successfully",
    "deployment_id": "deploy_20261123_120000_ab12",
    "script_output": "Initializing AICore...\nAICore ready\n",
    "timestamp": "2026-12-05T10:00:00",
}
ERROR = {
    "status": "error",
    "message": "Deployment failed",
    "error": "init_aicore.sh: line 12: npm: command not found",
    "timestamp": "2026-12-05T10:00:00",
}


def defaults(retries: int = 2) -> DeploymentDefaults:
    return DeploymentDefaults(retry_count=retries, retry_delay=0, health_check_retries=0)


def test_a_finished_success_is_a_succeeded_run_with_its_script_output(http_server):
    http_server.answer("/api/deploy/init", Answer(200, json.dumps(SUCCESS)))
    reporter = Reporter()

    outcome = deliver(api_target(http_server), context(), defaults(), reporter)

    assert (outcome.status, outcome.exit_code) == (T.SUCCEEDED, 0)
    assert reporter.text == SUCCESS["script_output"]
    assert reporter.started and not reporter.waited
    assert len(http_server.requests) == 1


@pytest.mark.parametrize("status", [500, 200, 400])
def test_a_finished_error_fails_at_once_under_any_status_and_is_not_retried(http_server, status):
    http_server.answer("/api/deploy/init", Answer(status, json.dumps(ERROR)))
    reporter = Reporter()

    outcome = deliver(api_target(http_server), context(), defaults(retries=3), reporter)

    assert (outcome.status, outcome.reason) == (T.FAILED, "script_failed")
    assert len(http_server.requests) == 1  # the script ran once: never again
    assert "npm: command not found" in reporter.text and "Deployment failed" in reporter.text
    # What the agent said is output, not the error message a VIEWER reads.
    assert "npm" not in outcome.message


def test_a_500_without_that_body_still_retries(http_server):
    http_server.answer("/api/deploy/init", Answer(500, '{"detail": "upstream down"}'))

    outcome = deliver(api_target(http_server), context(), defaults(retries=2), Reporter())

    assert (outcome.status, outcome.reason) == (T.FAILED, "server_error")
    assert len(http_server.requests) == 3


def test_what_the_agent_says_has_the_secrets_we_sent_blanked(http_server):
    said = dict(ERROR, error=f"bad token {api_target(http_server).api_token}")
    http_server.answer("/api/deploy/init", Answer(500, json.dumps(said)))
    reporter = Reporter()

    deliver(api_target(http_server), context(), defaults(), reporter)

    assert api_target(http_server).api_token not in reporter.text and "***" in reporter.text


def test_a_webhook_receiver_that_promises_no_callback_ends_delivered_not_verified(http_server):
    http_server.answer("/webhook/deploy", Answer(202, '{"received": true, "event": "ec2_deployment_completed"}'))
    reporter = Reporter()

    outcome = deliver(webhook_target(http_server), context(), defaults(), reporter)

    assert (outcome.status, outcome.reason) == (T.SUCCEEDED, "delivered_not_verified")
    assert not reporter.waited


def test_a_webhook_receiver_that_promises_no_callback_ends_when_its_health_url_is_healthy(http_server):
    http_server.answer("/webhook/deploy", Answer(202, '{"received": true}'))
    http_server.answer("/health", Answer(200, '{"status": "healthy"}'))
    target = webhook_target(http_server, health_check_url=f"http://127.0.0.1:{http_server.port}/health")
    reporter = Reporter()

    outcome = deliver(target, context(), defaults(), reporter)

    assert outcome.status == T.SUCCEEDED and "health check" in outcome.message
    assert not reporter.waited


def test_an_acceptance_that_promises_a_callback_is_waited_for(http_server):
    http_server.answer("/webhook/deploy", Answer(202, '{"accepted": true, "callback": true}'))
    reporter = Reporter(callback={"success": False, "exit_code": 3, "output": "broken"})

    outcome = deliver(webhook_target(http_server), context(), defaults(), reporter)

    assert (outcome.status, outcome.exit_code) == (T.FAILED, 3)
    assert reporter.waited


@pytest.mark.parametrize(
    ("body", "waited"),
    [
        ('{"accepted": true}', True),  # our agents before "callback" existed: they call back
        ('{"accepted": true, "callback": false}', False),
        ('{"received": true}', False),
        ("{}", False),
        ("not json", False),
    ],
)
def test_which_acceptances_promise_a_callback(http_server, body, waited):
    http_server.answer("/api/deploy/init", Answer(202, body))
    reporter = Reporter(callback={"success": True, "exit_code": 0, "output": ""})

    deliver(api_target(http_server), context(), defaults(), reporter)

    assert reporter.waited is waited
