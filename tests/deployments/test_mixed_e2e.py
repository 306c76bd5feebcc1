"""A coordination over all three connection methods, end to end: `trigger_local --wait`
in its own process, a real qcluster, the platform's web process taking the callbacks, a
loopback sshd, and the local agent as real processes for http_api and webhook."""

import json

import pytest

from deployments.models import CallbackToken, Coordination, CoordinationStatus as C, TargetStatus as T
from environments.models import RemoteEnvironment, SettingsBlock
from tests.support.agent import Agent
from tests.support.processes import manage

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TOKEN = "agent-token-e2e-7f3c"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RECORD = (
    'echo "$ENVIRONMENT_ID $DEPLOYMENT_VERSION $COORDINATION_ID" >> "{marker}"\necho "hello from $ENVIRONMENT_ID"\n'
)


@pytest.fixture
def agents(tmp_path):
    started = []

    def start(name, body, **kwargs):
        agent = Agent(tmp_path / name, body, **kwargs)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def platform(web_server, start_qcluster):
    SettingsBlock.objects.create(
        name="default_settings", values={"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    )
    return start_qcluster(PLATFORM_BASE_URL=web_server)


def register_agents(api_agent, webhook_agent):
    RemoteEnvironment.objects.create(
        environment_id="docker_local_001",
        environment_type="docker",
        connection_method="http_api",
        host="127.0.0.1",
        port=api_agent.port,
        api_token=TOKEN,
        timeout=30,
    )
    RemoteEnvironment.objects.create(
        environment_id="webhook_local_001",
        environment_type="mac_local",
        connection_method="webhook",
        host="127.0.0.1",
        port=webhook_agent.port,
        webhook_secret=SECRET,
        timeout=30,
    )


def test_a_coordination_over_ssh_http_api_and_webhook_completes_when_every_script_ran(
    sshd, make_ssh_environment, agents, platform, tmp_path
):
    marker = tmp_path / "ran.txt"
    ssh_marker = sshd.scripts / "ran.txt"
    make_ssh_environment("linux_local_001", sshd.script("init.sh", RECORD.format(marker=ssh_marker)))
    api_agent = agents("api", RECORD.format(marker=marker), token=TOKEN)
    webhook_agent = agents("webhook", RECORD.format(marker=marker), webhook_secret=SECRET)
    register_agents(api_agent, webhook_agent)

    result = manage(["trigger_local", "--wait", "--version", "v3.1.0"], platform.env, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr + platform.output() + api_agent.log()
    coordination = Coordination.objects.get()
    assert coordination.status == C.COMPLETED
    ran = sorted(marker.read_text().splitlines() + ssh_marker.read_text().splitlines())
    assert ran == sorted(
        f"{env} v3.1.0 {coordination.coordination_id}"
        for env in ("docker_local_001", "linux_local_001", "webhook_local_001")
    )
    for target in coordination.targets.all():
        assert (target.status, target.exit_code) == (T.SUCCEEDED, 0)
        assert f"hello from {target.environment_id}" in target.output_tail
    assert not CallbackToken.objects.exists()  # each ended with its target
    assert "🎉 all 3 succeeded" in result.stdout


def test_a_failing_agent_script_fails_the_coordination_with_its_exit_code(
    sshd, make_ssh_environment, agents, platform, tmp_path
):
    api_agent = agents("api", 'echo "migrations failed" >&2\nexit 3\n', token=TOKEN)
    webhook_agent = agents("webhook", "echo ok\n", webhook_secret=SECRET)
    register_agents(api_agent, webhook_agent)

    result = manage(["trigger_local", "--wait", "--json"], platform.env, timeout=120)

    assert result.returncode == 1, result.stdout + result.stderr
    record = json.loads(result.stdout)
    outcomes = {
        env["environment_id"]: (env["status"], env["reason"], env["exit_code"]) for env in record["environments"]
    }
    assert outcomes == {
        "docker_local_001": (T.FAILED, "exit_code", 3),
        "webhook_local_001": (T.SUCCEEDED, "", 0),
    }
    assert "migrations failed" in record["environments"][0]["output_tail"]


def test_a_wrong_agent_token_fails_at_once_naming_the_status(agents, platform, tmp_path):
    marker = tmp_path / "should-not-run"
    api_agent = agents("api", f'touch "{marker}"\n', token="the-real-token")
    RemoteEnvironment.objects.create(
        environment_id="docker_local_001",
        environment_type="docker",
        connection_method="http_api",
        host="127.0.0.1",
        port=api_agent.port,
        api_token="a-wrong-token",
    )

    result = manage(["trigger_local", "--wait"], platform.env, timeout=120)

    assert result.returncode == 1
    assert "❌ docker_local_001 (auth_failed: HTTP 401" in result.stdout
    assert "a-wrong-token" not in result.stdout
    assert not marker.exists()
