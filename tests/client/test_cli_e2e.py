"""The client, installed without Django, against a live platform: gunicorn, a real
qcluster, a loopback sshd. `powerautomation trigger-local --wait` prints what
`manage.py trigger_local --wait` prints for the same run (its stage log, formatted from the
run's events by the platform's own deployments.stage_log) and exits with its codes."""

import subprocess

import pytest

from deployments.models import Coordination, CoordinationStatus as C, StageEvent
from deployments.stage_log import format_event, format_total
from environments.models import RemoteEnvironment, SettingsBlock
from tests.support.passes import sqlite_pass_only
from tests.support.processes import manage, process_environment, wait_until

# Once, in the SQLite pass: the client sees only HTTP; the API on PostgreSQL has its own tests.
pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), sqlite_pass_only]


@pytest.fixture
def quick_retries(transactional_db):
    SettingsBlock.objects.create(
        name="default_settings", values={"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    )


def stage_log(coordination_id: str) -> list[str]:
    """The lines `trigger_local --wait` prints for this run."""
    coordination = Coordination.objects.get(coordination_id=coordination_id)
    events = StageEvent.objects.filter(coordination=coordination).select_related("coordination").order_by("id")
    return [format_event(event) for event in events] + [format_total(coordination)]


def test_trigger_local_wait_prints_trigger_locals_stage_log_and_exits_with_its_codes(
    sshd, make_ssh_environment, qcluster, quick_retries, web, admin_token, powerautomation
):
    make_ssh_environment("good_env", sshd.script("ok.sh", "echo fine\n"))
    make_ssh_environment("broken_env", sshd.script("broken.sh", "exit 4\n"))
    make_ssh_environment("slow_env", sshd.script("slow.sh", "sleep 3\n"))
    ec2 = {"EC2_INSTANCE_ID": "i-0123456789abcdef0", "EC2_PUBLIC_IP": "127.0.0.9", "DEPLOYMENT_VERSION": "v1.0.0"}

    def trigger(*args, extra_env=None):
        return powerautomation(web.url, admin_token, "trigger-local", *args, extra_env=extra_env)

    success = trigger("--wait", "--environments", "good_env", "--coordination-id", "run_ok", extra_env=ec2)
    failure = trigger("--wait", "--environments", "good_env,broken_env", "--coordination-id", "run_failed")
    unknown = trigger("--wait", "--environments", "good_env,ghost_env")
    bad_ip = trigger("--wait", extra_env={"EC2_PUBLIC_IP": "not-an-ip"})
    bad_timeout = trigger("--wait", "--timeout", "-5")
    timed_out = trigger("--wait", "--environments", "slow_env", "--coordination-id", "run_slow", "--timeout", "1")

    assert success.returncode == 0, success.stdout + success.stderr + qcluster.output()
    assert success.stdout.splitlines() == stage_log("run_ok")
    run_ok = Coordination.objects.get(coordination_id="run_ok")
    assert (run_ok.status, run_ok.version, run_ok.ec2_public_ip) == (C.COMPLETED, "v1.0.0", "127.0.0.9")
    assert failure.returncode == 1, failure.stdout + failure.stderr
    assert failure.stdout.splitlines() == stage_log("run_failed")
    assert "❌ broken_env (exit_code: script exited with 4)" in failure.stdout
    # Bad input: exit 2, the flag named as trigger_local names it, nothing started.
    platform = process_environment()
    for client, command_line in (
        (unknown, ["--environments", "good_env,ghost_env"]),
        (bad_timeout, ["--wait", "--timeout", "-5"]),
    ):
        reference = manage(["trigger_local", *command_line], platform)
        assert (client.returncode, reference.returncode) == (2, 2)
        assert reference.stderr.strip().endswith(client.stderr.strip().split(": ", 1)[1].split("--timeout: ")[-1])
    assert "powerautomation: --environments: unknown environment(s): ghost_env" in unknown.stderr
    assert bad_ip.returncode == 2 and "--ec2-public-ip / EC2_PUBLIC_IP: " in bad_ip.stderr
    assert set(Coordination.objects.values_list("coordination_id", flat=True)) == {"run_ok", "run_failed", "run_slow"}
    # --timeout: exit 3 while the run goes on; the lines so far are the run's first events.
    assert timed_out.returncode == 3, timed_out.stdout + timed_out.stderr
    *lines, last = timed_out.stdout.splitlines()
    assert last.startswith("⏳ still ") and "the run goes on (powerautomation status run_slow)" in last
    assert lines == stage_log("run_slow")[: len(lines)]
    wait_until(lambda: Coordination.objects.get(coordination_id="run_slow").status == C.COMPLETED, 30, "slow_env")
    # The token is in no output: the client's, the web process's, the worker's.
    everything = [r.stdout + r.stderr for r in (success, failure, unknown, bad_ip, bad_timeout, timed_out)]
    everything += [web.log.read_text(errors="replace"), qcluster.output()]
    assert not [text for text in everything if admin_token in text]


def test_a_viewer_token_gets_exit_4_and_the_403_message_on_trigger_local(
    sshd, make_ssh_environment, web, viewer_token, powerautomation
):
    make_ssh_environment("good_env", sshd.script("ok.sh", "true\n"))

    result = powerautomation(web.url, viewer_token, "trigger-local", "--wait")

    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stderr == "powerautomation: This needs the ADMIN role. Your account may only read.\n"
    assert result.stdout == ""
    assert not Coordination.objects.exists()
    assert viewer_token not in result.stderr + web.log.read_text(errors="replace")


def test_wait_survives_the_web_process_restarted_mid_run(
    sshd, make_ssh_environment, qcluster, quick_retries, web, admin_token, powerautomation
):
    make_ssh_environment("slow_env", sshd.script("slow4.sh", "sleep 4\necho done\n"))
    process = powerautomation(
        web.url, admin_token, "trigger-local", "--wait", "--coordination-id", "run_restart", popen=True
    )
    try:
        wait_until(
            lambda: Coordination.objects.filter(coordination_id="run_restart", targets__status="running").exists(),
            60,
            "the script to start",
        )
        web.restart()
        assert process.poll() is None, "the run ended before the web process was back"
        stdout, stderr = process.communicate(timeout=90)
    finally:
        process.kill()

    assert process.returncode == 0, stdout + stderr + qcluster.output()
    assert stdout.splitlines() == stage_log("run_restart")  # every line once, in order


def test_the_seed_readmes_example_registers_an_environment_and_completes_a_coordination(
    sshd, qcluster, quick_retries, web, admin_token, client_venv, tmp_path
):
    """The original README's "use the coordinator directly", with only its import and its
    constructor changed (and the machine's address: the test's sshd)."""
    script = sshd.script("init_aicore.sh", "echo initialised\n")
    example = tmp_path / "deploy.py"
    example.write_text(
        SEED_EXAMPLE.format(host=sshd.host, port=sshd.port, user=sshd.user, key=sshd.client_key, script=script)
    )
    env = {"PATH": "/usr/bin:/bin", "POWERAUTOMATION_URL": web.url, "POWERAUTOMATION_TOKEN": admin_token}
    result = subprocess.run(
        [str(client_venv.python), str(example)], env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stdout + result.stderr + qcluster.output()
    assert result.stdout == "部署状态: completed\n"
    environment = RemoteEnvironment.objects.get(environment_id="mac_local_001")
    assert (environment.environment_type, environment.username) == ("mac_local", sshd.user)
    assert Coordination.objects.get(coordination_id="deploy_001").status == C.COMPLETED


SEED_EXAMPLE = """\
import asyncio
import os
from powerautomation_client import (
    RemoteDeploymentCoordinator,
    RemoteEnvironmentConfig,
    RemoteEnvironmentType
)

async def deploy_distributed_system():
    coordinator = RemoteDeploymentCoordinator(
        url=os.environ["POWERAUTOMATION_URL"], token=os.environ["POWERAUTOMATION_TOKEN"]
    )

    # 注册本地环境
    mac_config = RemoteEnvironmentConfig(
        environment_id="mac_local_001",
        environment_type=RemoteEnvironmentType.MAC_LOCAL,
        connection_method="ssh",
        host="{host}",
        port={port},
        username="{user}",
        ssh_key_path="{key}",
        init_script_path="{script}"
    )

    coordinator.register_remote_environment(mac_config)

    # 执行协调部署
    result = await coordinator.coordinate_deployment(
        coordination_id="deploy_001",
        ec2_deployment_config={{"instance_type": "t3.medium"}},
        target_environments=["mac_local_001"]
    )

    print(f"部署状态: {{result.status.value}}")

# 运行
asyncio.run(deploy_distributed_system())
"""
