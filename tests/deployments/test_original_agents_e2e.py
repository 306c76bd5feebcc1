"""People moving from the original PowerAutomation deployment component bring its config
file and agents. Here: its remote_environments.json (tests/fixtures/, the original's shape,
loopback addresses) imported as is, then one real coordination (trigger_local --wait, a real
qcluster) over stand-ins written from the original agents' formats, each counting how often
its "script" ran:
- an http_api agent that answers when the script has finished, `200 {"status": "success"}`;
- one whose script fails, `500 {"status": "error"}` (never retried, though the file asks for
  retries);
- a webhook receiver that answers `202 {"received": true}`, never calls back, and has a
  health URL."""

import json
from pathlib import Path

import pytest
from django_q.models import Schedule

from deployments.models import Coordination, CoordinationStatus as C, CoordinationTarget, TargetStatus as T
from environments.models import SettingsBlock
from environments.services import HEALTH_SCHEDULE_NAME
from tests.support.http import Answer, HTTPServer
from tests.support.processes import manage, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "original_remote_environments.json"
SUCCESS = {
    "status": "success",
    "message": "Local environment initialized successfully",
    "deployment_id": "deploy_x",
    "script_output": "Initializing AICore...\nAICore ready\n",
    "timestamp": "2026-12-05T10:00:00",
}
ERROR = {
    "status": "error",
    "message": "Deployment failed",
    "error": "init_aicore.sh exited with 1: npm: command not found",
    "timestamp": "2026-12-05T10:00:00",
}


@pytest.fixture
def stand_ins():
    servers = {name: HTTPServer() for name in ("sync", "error", "webhook", "slack")}
    servers["sync"].answer("/api/deploy/init", Answer(200, json.dumps(SUCCESS)))
    servers["error"].answer("/api/deploy/init", Answer(500, json.dumps(ERROR)))
    servers["webhook"].answer("/webhook/deploy", Answer(202, '{"received": true, "timestamp": "..."}'))
    servers["webhook"].answer("/health", Answer(200, '{"status": "healthy"}'))
    servers["slack"].answer("/services/T000/B000/XXXX", Answer(200, "ok"))
    yield servers
    for server in servers.values():
        server.close()


def runs(server: HTTPServer, path: str) -> int:
    return sum(1 for request in server.requests if request.method == "POST" and request.path == path)


def test_the_original_config_and_agents_work_unchanged(stand_ins, start_qcluster, tmp_path):
    text = FIXTURE.read_text()
    for name, server in stand_ins.items():
        text = text.replace(f"{{{name}_port}}", str(server.port))
    config = tmp_path / "remote_environments.json"
    config.write_text(text)
    cluster = start_qcluster()

    imported = manage(["import_environments", str(config)], cluster.env)

    assert imported.returncode == 0, imported.stdout + imported.stderr
    for line in (
        "mapped global_settings.max_concurrent_deployments → deployment_settings.parallel_limit",
        "mapped global_settings.default_timeout → default_settings.timeout",
        "mapped global_settings.retry_attempts → default_settings.retry_count",
        "mapped global_settings.health_check_interval → default_settings.health_check_interval",
        "mapped notification_settings.slack_webhook → notification_settings.notification_webhook",
    ):
        assert line in imported.stdout
    assert "global_settings" not in imported.stderr and "slack_webhook" not in imported.stderr
    blocks = {block.name: block.values for block in SettingsBlock.objects.all()}
    assert blocks["deployment_settings"]["parallel_limit"] == 3
    assert blocks["default_settings"]["retry_count"] == 2
    assert Schedule.objects.get(name=HEALTH_SCHEDULE_NAME).minutes == 2  # 120 s

    result = manage(["trigger_local", "--wait", "--version", "v2.0"], cluster.env, timeout=120)

    assert result.returncode == 1, result.stdout + result.stderr + cluster.output()
    coordination = Coordination.objects.get()
    assert coordination.status == C.FAILED
    assert coordination.settings["parallel_limit"] == 3 and coordination.settings["retry_count"] == 2
    targets = {target.environment_id: target for target in CoordinationTarget.objects.all()}
    succeeded = targets["mac_local_original"]
    assert (succeeded.status, succeeded.exit_code) == (T.SUCCEEDED, 0)
    assert succeeded.output_tail == SUCCESS["script_output"]
    failed = targets["windows_local_original"]
    assert (failed.status, failed.reason) == (T.FAILED, "script_failed")
    assert "npm: command not found" in failed.output_tail
    notified = targets["linux_webhook_original"]
    assert notified.status == T.SUCCEEDED
    assert "health check turned healthy" in notified.events.get(new_status=T.SUCCEEDED).message
    # Each "script" ran once: the failed one was not retried, the webhook not re-sent.
    assert runs(stand_ins["sync"], "/api/deploy/init") == 1
    assert runs(stand_ins["error"], "/api/deploy/init") == 1
    assert runs(stand_ins["webhook"], "/webhook/deploy") == 1
    # The Slack webhook of the original file gets the summary.
    wait_until(lambda: runs(stand_ins["slack"], "/services/T000/B000/XXXX") == 1, 30, "the Slack notification")
    summary = json.dumps(stand_ins["slack"].requests[-1].json())
    assert coordination.coordination_id in summary
