"""http_api and webhook connectors against real HTTP servers on loopback. The retry
policy is the coordinator's `deliver()`, which runs here without a database."""

import base64
import json
import threading
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from deployments.models import TargetStatus as T
from deployments.runner.delivery import deliver
from environments.config import DeploymentDefaults
from environments.connectors import ConnectorError, DeploymentContext, Target
from environments.connectors.http_api import HTTPAPIConnector
from environments.connectors.webhook import WebhookConnector, sign, signing_key
from tests.support.agent import BLOCKING_SCRIPT, Agent, request as agent_request
from tests.support.http import Answer, finishes, silent_server

TOKEN = "agent-token-5d1e-never-in-messages"
CALLBACK = "http://127.0.0.1:9/api/deployment/callback/tok-abc/"

# An acceptance that promises a callback, as our agent's does.
PROMISE = '{"accepted": true, "callback": true}'


class Reporter:
    def __init__(self, callback: dict | None = None, callback_after: float = 0.0):
        self.stop = threading.Event()
        self.started: list[str] = []
        self.text = ""
        self.callback = callback
        self.callback_after = callback_after
        self.waited = False

    def script_started(self, detail):
        self.started.append(detail)

    def output(self, text):
        self.text += text

    def wait_for_callback(self, deadline):
        self.waited = True
        if self.callback is None:
            time.sleep(max(0.0, min(deadline - time.time(), 5)))
            return None
        time.sleep(self.callback_after)
        return self.callback

    def retrying(self, attempt, error, delay):
        pass

    def health_checked(self, healthy, detail, latency_ms=None):
        pass


def api_target(server, **overrides) -> Target:
    values = {
        "environment_id": "docker_local_001",
        "connection_method": "http_api",
        "host": "127.0.0.1",
        "port": server.port,
        "api_token": TOKEN,
        "init_script_path": "./init_aicore.sh",
        "working_directory": "/app",
        "timeout": 20,
    }
    values.update(overrides)
    return Target(**values)


def webhook_target(server, **overrides) -> Target:
    values = {
        "environment_id": "webhook_local_001",
        "connection_method": "webhook",
        "host": "127.0.0.1",
        "port": server.port,
        "webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "timeout": 20,
    }
    values.update(overrides)
    return Target(**values)


def context(**overrides) -> DeploymentContext:
    values = {
        "coordination_id": "deploy_20261123_120000_ab12",
        "ec2_instance_id": "i-0123456789abcdef0",
        "ec2_public_ip": "127.0.0.9",
        "deployment_version": "v1.0.0",
        "connect_timeout": 2,
        "callback_url": CALLBACK,
        "deadline": time.time() + 20,
        "request_timeout": 2,
    }
    values.update(overrides)
    return DeploymentContext(**values)


def defaults(**overrides) -> DeploymentDefaults:
    values = {"retry_count": 2, "retry_delay": 0, "health_check_retries": 0, "health_check_timeout": 2}
    values.update(overrides)
    return DeploymentDefaults(**values)


FINISHED_OK = Answer(200, json.dumps({"success": True, "exit_code": 0, "output": "aicore up\n"}))


# --- http_api ----------------------------------------------------------------------------


def test_http_api_posts_the_documented_body_and_headers(http_server):
    http_server.answer("/api/deploy/init", FINISHED_OK)

    result = HTTPAPIConnector().run(api_target(http_server), context(), Reporter())

    assert result.exit_code == 0
    (request,) = http_server.requests
    assert request.method == "POST"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Idempotency-Key"] == "deploy_20261123_120000_ab12:docker_local_001"
    body = request.json()
    assert {k: v for k, v in body.items() if k != "timestamp"} == {
        "action": "init_local_environment",
        "script_path": "./init_aicore.sh",
        "working_directory": "/app",
        "environment_id": "docker_local_001",
        "coordination_id": "deploy_20261123_120000_ab12",
        "ec2_instance_id": "i-0123456789abcdef0",
        "ec2_public_ip": "127.0.0.9",
        "deployment_version": "v1.0.0",
        "timeout": 20,
        "callback_url": CALLBACK,
    }
    assert body["timestamp"].endswith("Z")


def test_http_api_uses_api_endpoint_when_set(http_server):
    http_server.answer("/custom/deploy", FINISHED_OK)
    target = api_target(http_server, api_endpoint=http_server.url("/custom/deploy"), port=1)

    HTTPAPIConnector().run(target, context(), Reporter())

    assert http_server.paths() == ["/custom/deploy"]


@pytest.mark.parametrize("exit_code", [2**40, -(2**40)])
def test_http_api_200_with_an_exit_code_no_process_has_is_read_as_success_or_failure(http_server, exit_code):
    """The target's exit_code column holds 32 bits: an agent's 2**40 must not fail the
    write (OverflowError on SQLite, DataError on PostgreSQL)."""
    body = {"success": False, "exit_code": exit_code, "output": ""}
    http_server.answer("/api/deploy/init", Answer(200, json.dumps(body)))

    outcome = deliver(api_target(http_server), context(), defaults(), Reporter())

    assert (outcome.status, outcome.reason, outcome.exit_code) == (T.FAILED, "exit_code", 1)


def test_http_api_200_is_a_finished_run_with_its_exit_code_and_output(http_server):
    http_server.answer("/api/deploy/init", Answer(200, json.dumps({"success": False, "exit_code": 3, "output": "x"})))
    reporter = Reporter()

    outcome = deliver(api_target(http_server), context(), defaults(), reporter)

    assert (outcome.status, outcome.reason, outcome.exit_code) == (T.FAILED, "exit_code", 3)
    assert reporter.text == "x\n"
    assert not reporter.waited


def test_http_api_500_then_200_is_retried_with_the_same_idempotency_key(http_server):
    http_server.answer("/api/deploy/init", Answer(500, "boom"), FINISHED_OK)

    outcome = deliver(api_target(http_server), context(), defaults(), Reporter())

    assert outcome.status == T.SUCCEEDED
    keys = [request.headers["Idempotency-Key"] for request in http_server.requests]
    assert len(keys) == 2 and keys[0] == keys[1]


@pytest.mark.parametrize("status", [401, 403])
def test_http_api_refused_credentials_fail_at_once_without_showing_the_token(http_server, status):
    # A careless agent echoing the request back must not leak the token into our records.
    http_server.answer("/api/deploy/init", Answer(status, f'{{"error": "bad token {TOKEN}"}}'))

    outcome = deliver(api_target(http_server), context(), defaults(retry_count=3), Reporter())

    assert (outcome.status, outcome.reason) == (T.FAILED, "auth_failed")
    assert f"HTTP {status}" in outcome.message
    assert outcome.data["response_excerpt"] == '{"error": "bad token ***"}'
    assert TOKEN not in outcome.message and TOKEN not in str(outcome.data)
    assert len(http_server.requests) == 1


def test_http_api_other_4xx_fails_at_once_with_a_body_excerpt_beside_the_message(http_server):
    http_server.answer("/api/deploy/init", Answer(422, '{"error": "action must be init_local_environment"}'))

    outcome = deliver(api_target(http_server), context(), defaults(), Reporter())

    assert (outcome.status, outcome.reason) == (T.FAILED, "rejected")
    assert "action must be" in outcome.data["response_excerpt"]
    assert len(http_server.requests) == 1


def test_an_agents_answer_body_stays_out_of_the_message_which_keeps_the_status(http_server):
    http_server.answer("/api/deploy/init", Answer(500, "stack trace: password=hunter2-b7d0"))

    outcome = deliver(api_target(http_server), context(), defaults(retry_count=0), Reporter())

    assert outcome.message.startswith("HTTP 500 from http://127.0.0.1:")
    assert "hunter2-b7d0" not in outcome.message
    assert outcome.data == {"status_code": 500, "response_excerpt": "stack trace: password=hunter2-b7d0"}


def test_a_server_that_never_answers_is_retried_then_fails():
    sock, port = silent_server()
    try:
        target = Target(environment_id="e", connection_method="http_api", host="127.0.0.1", port=port, api_token=TOKEN)
        outcome = deliver(target, context(request_timeout=1), defaults(retry_count=1), Reporter())
    finally:
        sock.close()

    assert (outcome.status, outcome.reason) == (T.FAILED, "request_timeout")
    assert "did not answer in time" in outcome.message


def test_connection_refused_is_a_retryable_connection_failure():
    from tests.support.ports import free_port

    target = Target(environment_id="e", connection_method="http_api", host="127.0.0.1", port=free_port(), api_token="t")
    with pytest.raises(ConnectorError) as caught:
        HTTPAPIConnector().run(target, context(), Reporter())
    assert (caught.value.reason, caught.value.permanent) == ("connection_failed", False)
    assert "Connection refused" in caught.value.message


def test_202_waits_for_the_callback_and_takes_its_result(http_server):
    http_server.answer("/api/deploy/init", Answer(202, PROMISE))
    reporter = Reporter(callback={"success": True, "exit_code": 0, "output": "from the agent"})

    outcome = deliver(api_target(http_server), context(), defaults(), reporter)

    assert outcome.status == T.SUCCEEDED
    assert "callback" in outcome.message
    assert reporter.started and reporter.waited
    assert reporter.text == "from the agent\n"


def test_202_without_a_callback_before_the_timeout_fails_with_reason_timeout(http_server):
    http_server.answer("/api/deploy/init", Answer(202, PROMISE))

    outcome = deliver(api_target(http_server, timeout=1), context(deadline=time.time() + 1), defaults(), Reporter())

    assert (outcome.status, outcome.reason) == (T.FAILED, "timeout")
    assert "no callback" in outcome.message


def test_409_on_a_first_attempt_means_the_agent_is_busy(http_server):
    http_server.answer("/api/deploy/init", Answer(409, '{"error": "busy", "running_coordination_id": "deploy_x"}'))

    outcome = deliver(api_target(http_server), context(), defaults(), Reporter())

    assert (outcome.status, outcome.reason) == (T.FAILED, "busy")
    assert "deploy_x" in outcome.data["response_excerpt"]


def test_409_duplicate_on_a_retry_means_the_first_attempt_got_through(http_server):
    duplicate = Answer(409, '{"error": "duplicate delivery", "duplicate": true, "webhook_id": "msg_1"}')
    http_server.answer("/api/deploy/init", Answer(502, "bad gateway"), duplicate)
    reporter = Reporter(callback={"success": True, "exit_code": 0, "output": ""})

    outcome = deliver(api_target(http_server), context(), defaults(), reporter)

    assert outcome.status == T.SUCCEEDED
    assert reporter.waited


def test_409_busy_on_a_retry_fails_as_busy_instead_of_waiting_for_a_callback(http_server):
    busy = Answer(409, '{"error": "busy", "duplicate": false, "running_coordination_id": "deploy_other"}')
    http_server.answer("/api/deploy/init", Answer(502, "bad gateway"), busy)
    reporter = Reporter()

    outcome = deliver(api_target(http_server), context(deadline=time.time() + 3), defaults(), reporter)

    assert (outcome.status, outcome.reason) == (T.FAILED, "busy")
    assert "deploy_other" in outcome.data["response_excerpt"]  # the agent's answer, for ADMINs
    assert not reporter.waited


def test_a_retry_to_the_real_agent_busy_with_another_run_fails_as_busy(tmp_path):
    agent = Agent(tmp_path / "agent", BLOCKING_SCRIPT, token=TOKEN)
    try:
        other = {"action": "init_local_environment", "coordination_id": "deploy_other", "timeout": 30}
        headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "deploy_other:docker_local_001"}
        assert agent_request(agent.port, "POST", "/api/deploy/init", other, headers).status == 202
        reporter = Reporter()

        with pytest.raises(ConnectorError) as raised:
            HTTPAPIConnector().run(api_target(agent), context(attempt=2, deadline=time.time() + 3), reporter)

        assert raised.value.reason == "busy"
        assert "deploy_other" in raised.value.data["response_excerpt"]  # the agent's answer, for ADMINs
        assert not reporter.waited
    finally:
        (tmp_path / "agent" / "release").touch()
        agent.stop()


def test_without_a_callback_url_the_run_ends_when_the_health_check_turns_healthy(http_server, monkeypatch):
    monkeypatch.setattr("environments.connectors.http.HEALTH_POLL_SECONDS", 0.2)
    http_server.answer("/api/deploy/init", Answer(202, PROMISE))
    http_server.answer("/health", 503, 503, 200)
    target = api_target(http_server, health_check_url=http_server.url("/health"))

    outcome = deliver(target, context(callback_url=""), defaults(), Reporter())

    assert outcome.status == T.SUCCEEDED
    assert "turned healthy" in outcome.message
    assert http_server.paths().count("/health") >= 3


def test_without_a_callback_url_a_health_url_redirecting_to_a_login_page_never_counts_as_healthy(
    http_server, monkeypatch
):
    monkeypatch.setattr("environments.connectors.http.HEALTH_POLL_SECONDS", 0.2)
    http_server.answer("/api/deploy/init", Answer(202, PROMISE))
    http_server.answer("/health", Answer(302, headers={"Location": http_server.url("/login")}))
    http_server.answer("/login", Answer(200, "<html>sign in</html>", headers={"Content-Type": "text/html"}))
    target = api_target(http_server, timeout=1, health_check_url=http_server.url("/health"))

    outcome = deliver(target, context(callback_url="", deadline=time.time() + 1), defaults(), Reporter())

    assert (outcome.status, outcome.reason) == (T.FAILED, "timeout")
    assert "/health" in http_server.paths()


def test_a_slow_health_url_counts_as_unhealthy(http_server):
    http_server.answer("/api/deploy/init", FINISHED_OK)
    http_server.answer("/health", Answer(200, "{}", delay=3))
    target = api_target(http_server, health_check_url=http_server.url("/health"))

    outcome = deliver(target, context(), defaults(health_check_timeout=0.5), Reporter())

    assert (outcome.status, outcome.reason) == (T.FAILED, "health_check_failed")
    assert "ReadTimeout" in outcome.message


# --- webhook -------------------------------------------------------------------------------


def test_webhook_signature_verifies_with_an_independent_implementation(http_server):
    http_server.answer("/webhook/deploy", Answer(200, "{}"))
    target = webhook_target(http_server)
    reporter = Reporter(callback={"success": True, "exit_code": 0, "output": ""})

    WebhookConnector().run(target, context(), reporter)

    (request,) = http_server.requests
    headers = {name.lower(): value for name, value in request.headers.items()}
    payload = Webhook(target.webhook_secret).verify(request.body, headers)
    assert payload["event"] == "ec2_deployment_completed"
    assert payload["action"] == "init_local_environment"
    assert payload["callback_url"] == CALLBACK
    assert headers["webhook-signature"].startswith("v1,")
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "QUJD" * 8).verify(request.body, headers)


def test_a_plain_secret_is_used_as_its_utf8_bytes(http_server):
    http_server.answer("/webhook/deploy", Answer(204))
    target = webhook_target(http_server, webhook_secret="not-base64 secret")

    WebhookConnector().run(target, context(), Reporter(callback={"success": True, "exit_code": 0}))

    (request,) = http_server.requests
    headers = {name.lower(): value for name, value in request.headers.items()}
    Webhook(b"not-base64 secret").verify(request.body, headers)  # raises if it does not verify


def test_webhook_retries_keep_the_webhook_id_and_renew_the_signature(http_server):
    http_server.answer("/webhook/deploy", Answer(503), Answer(200))
    target = webhook_target(http_server)

    outcome = deliver(target, context(), defaults(), Reporter(callback={"success": True, "exit_code": 0}))

    assert outcome.status == T.SUCCEEDED
    first, second = http_server.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    for request in (first, second):
        headers = {name.lower(): value for name, value in request.headers.items()}
        Webhook(target.webhook_secret).verify(request.body, headers)


def test_webhook_with_neither_callback_nor_health_url_is_delivered_not_verified(http_server):
    http_server.answer("/webhook/deploy", Answer(202))

    outcome = deliver(webhook_target(http_server), context(callback_url=""), defaults(), Reporter())

    assert (outcome.status, outcome.reason, outcome.message) == (
        T.SUCCEEDED,
        "delivered_not_verified",
        "delivered, not verified",
    )


def test_webhook_never_shows_its_secret_or_signature_in_errors(http_server):
    target = webhook_target(http_server)
    http_server.answer("/webhook/deploy", Answer(400, f"echo {target.webhook_secret}"))

    outcome = deliver(target, context(), defaults(), Reporter())

    assert (outcome.status, outcome.reason) == (T.FAILED, "rejected")
    assert target.webhook_secret not in outcome.message


def test_signing_reproduces_the_standard_webhooks_published_test_vector():
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signing_with_a_plain_secret_matches_the_reference_library_over_a_utf8_body():
    body = json.dumps({"deployment_version": "v1.0.0-é", "n": 1}, ensure_ascii=False)
    expected = Webhook(b"not-base64 secret").sign("msg_2Kx9", datetime.fromtimestamp(1700000000, UTC), body)

    assert sign("not-base64 secret", "msg_2Kx9", 1700000000, body.encode("utf-8")) == expected


def test_a_whsec_secret_is_its_base64_decoded_bytes_and_any_other_its_utf8_bytes():
    assert signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert signing_key("plain") == b"plain"


# --- answers of any size ---------------------------------------------------------------------

HUGE_BOUND = 20 * 1024 * 1024  # well under the 50 MB bodies, above what loopback socket buffers hold


def test_an_http_api_500_with_a_50_mb_body_is_retried_with_bounded_reads_and_a_short_excerpt(huge_body_server):
    server = huge_body_server(status=500)

    outcome = deliver(api_target(server), context(), defaults(retry_count=1), Reporter())

    assert (outcome.status, outcome.reason) == (T.FAILED, "server_error")
    assert "HTTP 500" in outcome.message
    assert len(outcome.message) < 1000
    assert server.requests == 2
    assert server.sent < HUGE_BOUND


def test_a_webhook_400_with_an_endless_body_is_rejected_without_hanging(huge_body_server):
    server = huge_body_server(status=400, size=None)

    outcome = finishes(lambda: deliver(webhook_target(server), context(), defaults(), Reporter()))

    assert (outcome.status, outcome.reason) == (T.FAILED, "rejected")
    assert "HTTP 400" in outcome.message


def test_an_http_api_200_larger_than_a_run_result_can_be_is_a_bad_response(huge_body_server):
    server = huge_body_server(status=200)

    outcome = deliver(api_target(server), context(), defaults(), Reporter())

    assert (outcome.status, outcome.reason) == (T.FAILED, "bad_response")
    assert server.sent < HUGE_BOUND


def test_the_preflight_of_an_endpoint_answering_an_endless_body_ends_with_its_status(huge_body_server):
    server = huge_body_server(status=404, size=None)

    detail = finishes(lambda: HTTPAPIConnector().check(api_target(server), context()))

    assert detail.endswith("answers (HTTP 404)")
