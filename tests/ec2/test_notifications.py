"""Notifications when a coordination ends: queued on every end, POSTed with retries to a
real HTTP receiver on loopback, signed as Standard Webhooks, never changing the coordination."""

import time

import pytest
from django_q.brokers import get_broker
from django_q.signing import SignedPackage
from standardwebhooks import Webhook

from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    Stage,
    StageEvent,
    TargetStatus as T,
    TriggerSource,
)
from deployments.notifications import coordination_notify, summary
from deployments.runner.sequence import fail_unfinished
from deployments.services import coordination_cancel, coordination_start
from deployments.transitions import transition
from environments.models import RemoteEnvironment, SettingsBlock
from tests.support.http import Answer

SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtbm90aWZpY2F0aW9uLXRlc3Q="
HOOK = "/hooks/deployments"


def make_environment(environment_id: str, **fields) -> RemoteEnvironment:
    values = {"environment_type": "linux_local", "connection_method": "ssh", "host": "127.0.0.1", "username": "u"}
    return RemoteEnvironment.objects.create(environment_id=environment_id, **{**values, **fields})


def notify_to(url: str, **block) -> None:
    values = {"enable_notifications": True, "notification_webhook": url, **block}
    SettingsBlock.objects.update_or_create(name="notification_settings", defaults={"values": values})


def ended_coordination(status: str = C.FAILED) -> Coordination:
    """A coordination over two environments that ended with one failed, one succeeded."""
    make_environment("env_ok")
    make_environment("env_broken")
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND, version="v9")
    ok, broken = coordination.targets.order_by("environment_id").reverse()
    for target in (ok, broken):
        transition(target, T.TRIGGERING)
        transition(target, T.RUNNING)
    transition(ok, T.SUCCEEDED, fields={"exit_code": 0})
    transition(broken, T.FAILED, fields={"reason": "exit_code", "error": "script exited with 4", "exit_code": 4})
    for step in (C.EC2_DEPLOYING, C.EC2_COMPLETED, C.LOCAL_TRIGGERING, C.LOCAL_COMPLETED):
        transition(coordination, step)
    transition(coordination, status, fields={"error": "1 of 2 environments failed: env_broken (exit_code)"})
    return coordination


def headers_of(request) -> dict:
    return {name.lower(): value for name, value in request.headers.items()}


# --- What is sent --------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_summary_is_slack_text_plus_the_structured_record():
    coordination = ended_coordination()

    body = summary(coordination)

    assert body["text"].startswith(f"❌ Deployment {coordination.coordination_id} (v9) failed in ")
    assert "1 of 2 environments succeeded; not succeeded: env_broken (exit_code)" in body["text"]
    assert body["type"] == "coordination.ended"
    data = body["data"]
    assert (data["coordination_id"], data["status"], data["version"]) == (coordination.coordination_id, "failed", "v9")
    assert data["progress"] == {
        "total": 2,
        "done": 2,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 0,
        "running": 0,
        "pending": 0,
    }
    assert data["failed_environments"] == [
        {"environment_id": "env_broken", "status": "failed", "reason": "exit_code", "error": "script exited with 4"}
    ]
    assert data["duration_seconds"] >= 0
    assert data["error"] == "1 of 2 environments failed: env_broken (exit_code)"


@pytest.mark.django_db
def test_a_receiver_that_keeps_failing_gets_bounded_retries_and_the_coordination_is_unchanged(http_server, settings):
    settings.NOTIFICATION_RETRIES = 2
    settings.NOTIFICATION_RETRY_DELAY_SECONDS = 0
    http_server.answer(HOOK, Answer(503, "down"))
    notify_to(http_server.url(HOOK))
    coordination = ended_coordination()

    result = coordination_notify(coordination_pk=coordination.pk)

    assert http_server.paths() == [HOOK] * 3
    assert result == (
        f"notification to http://127.0.0.1:{http_server.port} failed after 3 attempts: "
        "HTTP 503 (response body: ADMINs only)"
    )
    coordination.refresh_from_db()
    assert coordination.status == C.FAILED
    (notice,) = coordination.events.filter(stage=Stage.NOTIFY)
    assert (notice.message, notice.data) == (
        result,
        {"delivered": False, "attempts": 3, "kind": "ended", "response_excerpt": "down"},
    )
    assert not notice.new_status


@pytest.mark.django_db
def test_a_4xx_answer_is_not_retried(http_server, settings):
    settings.NOTIFICATION_RETRY_DELAY_SECONDS = 0
    http_server.answer(HOOK, Answer(404, "no such hook"))
    notify_to(http_server.url(HOOK))

    result = coordination_notify(coordination_pk=ended_coordination().pk)

    assert http_server.paths() == [HOOK]
    assert result.endswith("failed after 1 attempt: HTTP 404 (response body: ADMINs only)")
    assert "no such hook" not in result  # the answer could be anything: events are VIEWER-readable


@pytest.mark.django_db
def test_enable_notifications_false_sends_nothing(http_server, settings):
    settings.NOTIFICATION_WEBHOOK_URL = http_server.url(HOOK)
    notify_to(http_server.url(HOOK), enable_notifications=False)

    assert coordination_notify(coordination_pk=ended_coordination().pk) == "notifications are off"
    assert http_server.requests == []


@pytest.mark.django_db
def test_the_setting_is_used_when_the_config_file_names_no_webhook(http_server, settings):
    settings.NOTIFICATION_WEBHOOK_URL = http_server.url(HOOK)
    http_server.answer(HOOK, Answer(200))

    coordination = ended_coordination()
    first = coordination_notify(coordination_pk=coordination.pk)
    second = coordination_notify(coordination_pk=coordination.pk)

    assert first.startswith("notification delivered to http://127.0.0.1:")
    assert second == "already notified"
    assert len(http_server.requests) == 1
    assert "webhook-signature" not in headers_of(http_server.requests[0])  # no secret, no signature


# --- Every end queues one ----------------------------------------------------------------


def drain_notification_tasks() -> list[tuple]:
    broker = get_broker()
    tasks = [SignedPackage.loads(payload) for _, payload in broker.dequeue() or []]
    broker.purge_queue()
    return [(task["func"], task["args"]) for task in tasks]


def complete(coordination):
    for step in (C.EC2_DEPLOYING, C.EC2_COMPLETED, C.LOCAL_TRIGGERING, C.LOCAL_COMPLETED, C.COMPLETED):
        transition(coordination, step)


def cancel(coordination):
    coordination_cancel(coordination=coordination)


def close_out(coordination):
    transition(coordination, C.EC2_DEPLOYING)
    fail_unfinished(coordination, "the worker running it stopped answering")


@pytest.mark.django_db
@pytest.mark.parametrize("end", [complete, cancel, close_out], ids=["completed", "cancelled", "closed_out"])
def test_every_end_of_a_coordination_queues_one_notification_after_commit(
    end, settings, django_capture_on_commit_callbacks
):
    settings.NOTIFICATION_WEBHOOK_URL = "http://127.0.0.1:9/hook"
    make_environment("env_a")
    with django_capture_on_commit_callbacks(execute=True):
        coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    drain_notification_tasks()  # the coordination's own task

    with django_capture_on_commit_callbacks(execute=True):
        end(coordination)

    coordination.refresh_from_db()
    assert coordination.is_terminal
    assert drain_notification_tasks() == [("deployments.tasks.notify_coordination_end", (coordination.pk,))]


# --- Through a real worker ----------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_worker_posts_a_signed_summary_retrying_a_failed_delivery(
    sshd, make_ssh_environment, start_qcluster, http_server
):
    http_server.answer(HOOK, Answer(500, "try later"), Answer(200, "ok"))
    notify_to(http_server.url(HOOK))
    SettingsBlock.objects.create(name="default_settings", values={"retry_count": 0, "health_check_retries": 0})
    make_ssh_environment("linux_local_001", sshd.script("notify-ok.sh", "true\n"))
    start_qcluster(NOTIFICATION_WEBHOOK_SECRET=SECRET, NOTIFICATION_RETRY_DELAY_SECONDS="1")

    coordination = coordination_start(triggered_by=TriggerSource.COMMAND, version="v9")
    deadline = time.monotonic() + 60
    while not coordination.events.filter(stage=Stage.NOTIFY).exists() and time.monotonic() < deadline:
        time.sleep(0.2)

    coordination.refresh_from_db()
    assert coordination.status == C.COMPLETED
    first, second = http_server.requests
    webhook = Webhook(SECRET)
    for request in (first, second):
        webhook.verify(request.body, headers_of(request))  # raises unless signed with the secret
    assert headers_of(first)["webhook-id"] == headers_of(second)["webhook-id"]
    body = second.json()
    assert body["text"].startswith(f"✅ Deployment {coordination.coordination_id} (v9) completed in ")
    assert body["data"]["progress"]["succeeded"] == 1
    assert body["data"]["failed_environments"] == []
    notice = coordination.events.get(stage=Stage.NOTIFY)
    assert notice.message == f"notification delivered to http://127.0.0.1:{http_server.port} (HTTP 200, attempt 2)"


@pytest.mark.django_db
def test_a_receiver_answering_a_50_mb_error_is_read_only_a_few_kib_per_attempt(huge_body_server, settings):
    settings.NOTIFICATION_RETRIES = 1
    settings.NOTIFICATION_RETRY_DELAY_SECONDS = 0
    server = huge_body_server(status=503)
    notify_to(server.url(HOOK))

    result = coordination_notify(coordination_pk=ended_coordination().pk)

    assert "failed after 2 attempts: HTTP 503" in result
    (notice,) = StageEvent.objects.filter(stage=Stage.NOTIFY)
    assert notice.data["response_excerpt"].startswith("xxx")
    assert len(notice.data["response_excerpt"]) < 1000
    assert server.sent < 20 * 1024 * 1024
