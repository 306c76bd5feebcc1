"""`check_environments`: health checks on demand, the connectivity preflight, and the
schedule that runs them."""

import json
import re
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from environments.agent_tokens import new_token
from environments.connectors.ssh import fingerprint, parse_host_key
from environments.models import Health, HealthChange, RemoteEnvironment, SettingsBlock
from environments.services import HEALTH_SCHEDULE_NAME
from environments.tasks import check_environments_health
from tests.support.http import Answer
from tests.support.ports import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_retries():
    SettingsBlock.objects.create(
        name="default_settings", values={"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    )


def check(*args) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("check_environments", *args, stdout=out)
    except SystemExit as exit_:
        return exit_.code, out.getvalue()
    return 0, out.getvalue()


def http_environment(environment_id, server, **fields):
    return RemoteEnvironment.objects.create(
        environment_id=environment_id,
        environment_type="docker",
        connection_method="http_api",
        host="127.0.0.1",
        port=server.port,
        api_token="token",
        **fields,
    )


def test_healthy_environment_is_recorded_with_time_and_latency(http_server):
    http_server.answer("/health", 200)
    environment = http_environment("up", http_server, health_check_url=http_server.url("/health"))

    code, out = check("--environments", "up")

    assert code == 0
    assert out.startswith("✅ up: GET ")
    environment.refresh_from_db()
    assert environment.last_health == Health.HEALTHY
    assert environment.last_health_at is not None
    assert environment.last_health_latency_ms is not None


def test_unhealthy_environment_exits_1_and_a_flip_is_recorded_with_its_time(http_server):
    http_server.answer("/health", 200, 503)
    environment = http_environment("flaky", http_server, health_check_url=http_server.url("/health"))
    check()

    code, out = check("--json")

    assert code == 1
    (report,) = json.loads(out)
    assert (report["environment_id"], report["ok"]) == ("flaky", False)
    assert "503" in report["detail"]
    environment.refresh_from_db()
    assert environment.last_health == Health.UNHEALTHY
    flips = list(HealthChange.objects.filter(environment=environment).order_by("id"))
    assert [(f.old_health, f.new_health) for f in flips] == [
        (Health.UNKNOWN, Health.HEALTHY),
        (Health.HEALTHY, Health.UNHEALTHY),
    ]
    assert environment.last_health_changed_at == flips[-1].created_at


def redirect_to_login(server) -> None:
    """A health URL behind a login: 302 to a sign-in page that answers 200."""
    server.answer("/health", Answer(302, headers={"Location": server.url("/login")}))
    server.answer("/login", Answer(200, "<html>sign in</html>", headers={"Content-Type": "text/html"}))


def test_a_health_url_redirecting_to_a_login_page_is_unhealthy(http_server):
    redirect_to_login(http_server)
    environment = http_environment("behind_login", http_server, health_check_url=http_server.url("/health"))

    code, out = check("--environments", "behind_login", "--json")

    assert code == 1
    (report,) = json.loads(out)
    assert report["ok"] is False
    environment.refresh_from_db()
    assert environment.last_health == Health.UNHEALTHY


def test_an_environment_without_health_url_is_skipped_not_failed(http_server):
    environment = http_environment("no_url", http_server)

    code, out = check()

    assert code == 0
    assert "➖ no_url: no health_check_url" in out
    environment.refresh_from_db()
    assert environment.last_health == Health.UNKNOWN


def test_connectivity_preflight_authenticates_over_ssh_and_runs_nothing(sshd, make_ssh_environment):
    marker = sshd.scripts / "preflight-ran"
    make_ssh_environment("reachable", sshd.script("never.sh", f"touch '{marker}'\n"))

    code, out = check("--connectivity")

    assert code == 0
    assert f"✅ reachable: 127.0.0.1:{sshd.port}: host key verified, authenticated as {sshd.user}" in out
    assert not marker.exists()


def test_connectivity_preflight_reports_an_unknown_host_key_with_its_fingerprint(
    sshd, make_ssh_environment, settings, tmp_path
):
    (tmp_path / "known_hosts").write_text("")
    settings.SSH_KNOWN_HOSTS = str(tmp_path / "known_hosts")
    make_ssh_environment("stranger", "./init_aicore.sh")

    code, out = check("--connectivity", "--json")

    assert code == 1
    (report,) = json.loads(out)
    assert report["ok"] is False
    assert report["detail"].startswith("host_key_unknown: ")
    assert report["data"]["fingerprint"] == fingerprint(parse_host_key(sshd.host_public_key))


@pytest.mark.parametrize("known_hosts", ["", "no-such-known-hosts"], ids=["unset", "missing_file"])
def test_connectivity_preflight_without_a_known_hosts_file_or_pinned_key_refuses_the_host(
    sshd, make_ssh_environment, settings, tmp_path, known_hosts
):
    settings.SSH_KNOWN_HOSTS = str(tmp_path / known_hosts) if known_hosts else ""
    make_ssh_environment("fresh_machine", "./init_aicore.sh")

    code, out = check("--connectivity", "--json")

    assert code == 1
    (report,) = json.loads(out)
    assert report["ok"] is False
    assert report["detail"].startswith("host_key_unknown: ")
    assert report["data"]["fingerprint"] == fingerprint(parse_host_key(sshd.host_public_key))


def test_connectivity_preflight_checks_http_endpoints_answer(http_server):
    http_server.answer("/api/deploy/init", Answer(405))
    http_environment("agent_up", http_server)
    RemoteEnvironment.objects.create(
        environment_id="agent_down",
        environment_type="docker",
        connection_method="webhook",
        host="127.0.0.1",
        port=free_port(),
        webhook_secret="s",
    )

    code, out = check("--connectivity")

    assert code == 1
    assert "✅ agent_up: " in out and "answers (HTTP 405)" in out
    assert "❌ agent_down: connection_failed: " in out
    assert all(request.method == "GET" for request in http_server.requests)


def polling_environment(environment_id, *, seen_seconds_ago=None, token="", poll_interval=5):
    seen_at = None if seen_seconds_ago is None else timezone.now() - timedelta(seconds=seen_seconds_ago)
    return RemoteEnvironment.objects.create(
        environment_id=environment_id,
        environment_type="mac_local",
        connection_method="polling",
        poll_interval=poll_interval,
        agent_token=token or new_token(),
        agent_seen_at=seen_at,
    )


def test_a_polling_preflight_passes_when_its_agent_was_seen_within_three_intervals():
    polling_environment("laptop", seen_seconds_ago=20, poll_interval=10)  # 3 × 10 s

    code, out = check("--connectivity")

    assert code == 0
    assert re.fullmatch(r"✅ laptop: agent last seen 2\d s ago\n", out)


@pytest.mark.parametrize(
    ("seen_seconds_ago", "seen"),
    [(200, r"agent last seen 2\d\d s ago"), (None, "agent never seen")],
    ids=["seen_long_ago", "never_seen"],
)
def test_a_polling_preflight_fails_when_its_agent_was_not_seen_within_three_intervals(seen_seconds_ago, seen):
    polling_environment("laptop", seen_seconds_ago=seen_seconds_ago, poll_interval=5)
    polling_environment("desk", seen_seconds_ago=1, poll_interval=5)

    code, out = check("--connectivity", "--json")

    assert code == 1
    reports = {report["environment_id"]: report for report in json.loads(out)}
    assert reports["desk"]["ok"] is True
    assert reports["laptop"]["ok"] is False
    assert re.fullmatch(rf"agent_offline: {seen} \(online: seen within 15 s, .*\)", reports["laptop"]["detail"])


def test_a_polling_preflight_without_an_agent_token_fails_saying_so():
    environment = polling_environment("laptop", seen_seconds_ago=1)
    RemoteEnvironment.objects.filter(pk=environment.pk).update(agent_token_hash="")

    code, out = check("--connectivity", "--environments", "laptop")

    assert code == 1
    assert out.startswith("❌ laptop: agent_token_missing: no agent token is set, agent last seen ")


def test_unknown_environment_ids_exit_2():
    with pytest.raises(CommandError) as caught:
        check("--environments", "ghost")
    assert caught.value.returncode == 2
    assert "ghost" in str(caught.value)


def test_a_named_disabled_environment_exits_2_naming_the_option(http_server):
    http_environment("off", http_server, health_check_url=http_server.url("/health"), enabled=False)
    with pytest.raises(CommandError) as caught:
        call_command("check_environments", "--environments", "off")
    assert caught.value.returncode == 2
    assert str(caught.value) == "--environments: disabled environment(s): off"
    assert http_server.paths() == []


def test_migrate_keeps_a_health_check_schedule_at_the_configured_interval(settings):
    from django_q.models import Schedule

    from environments.apps import ensure_health_schedule

    schedule = Schedule.objects.get(name=HEALTH_SCHEDULE_NAME)
    assert schedule.func == "environments.tasks.check_environments_health"
    assert schedule.minutes == settings.HEALTH_CHECK_INTERVAL_MINUTES

    settings.HEALTH_CHECK_INTERVAL_MINUTES = 11
    ensure_health_schedule(sender=None)

    assert Schedule.objects.get(name=HEALTH_SCHEDULE_NAME).minutes == 11


def test_the_scheduled_task_checks_enabled_environments_with_a_health_url(http_server):
    http_server.answer("/health", 200)
    http_environment("checked", http_server, health_check_url=http_server.url("/health"))
    http_environment("disabled", http_server, health_check_url=http_server.url("/health"), enabled=False)
    http_environment("no_url", http_server)

    assert check_environments_health() == 1
    assert RemoteEnvironment.objects.get(environment_id="checked").last_health == Health.HEALTHY
    assert RemoteEnvironment.objects.get(environment_id="disabled").last_health == Health.UNKNOWN


def test_the_scheduled_task_counts_a_redirect_to_a_login_page_as_unhealthy(http_server):
    redirect_to_login(http_server)
    http_environment("behind_login", http_server, health_check_url=http_server.url("/health"))

    check_environments_health()

    assert RemoteEnvironment.objects.get(environment_id="behind_login").last_health == Health.UNHEALTHY
