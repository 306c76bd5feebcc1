"""End to end as the EC2 deploy script runs it: `manage.py trigger_local --wait` in its
own process, a real `qcluster` process doing the work, a real sshd on loopback."""

import json
import subprocess
import sys

import pytest

from deployments.models import Coordination, CoordinationStatus as C, TargetStatus as T
from deployments.services import coordination_cancel
from environments.models import SettingsBlock
from tests.support.processes import ROOT, manage, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def quick_retries(transactional_db):
    SettingsBlock.objects.create(
        name="default_settings", values={"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    )


def trigger(qcluster, *args, extra_env=None, timeout=120):
    env = dict(qcluster.env)
    env.update(extra_env or {})
    return manage(["trigger_local", *args], env, timeout=timeout)


def test_trigger_local_wait_runs_every_environment_and_prints_the_stage_log(
    sshd, make_ssh_environment, qcluster, quick_retries
):
    script = sshd.script(
        "init_aicore.sh", f'echo "$ENVIRONMENT_ID $DEPLOYMENT_VERSION $EC2_PUBLIC_IP" >> "{sshd.scripts}/seen"\n'
    )
    make_ssh_environment("mac_local_001", script)
    make_ssh_environment("linux_local_001", script)

    result = trigger(
        qcluster,
        "--wait",
        extra_env={
            "EC2_INSTANCE_ID": "i-0123456789abcdef0",
            "EC2_PUBLIC_IP": "127.0.0.9",
            "DEPLOYMENT_VERSION": "v1.0.0",
        },
    )

    assert result.returncode == 0, result.stdout + result.stderr + qcluster.output()
    lines = result.stdout.splitlines()
    assert lines[0].startswith("🚀 start deploy_")
    expected_in_order = [
        "📡 stage 1: EC2 platform",
        "✅ EC2 done",
        "💻 stage 2: triggering 2 environments",
        "🔍 stage 3: verifying",
        "🎉 all 2 succeeded",
        "⏱️  total ",
    ]
    positions = [next(i for i, line in enumerate(lines) if line.startswith(text)) for text in expected_in_order]
    assert positions == sorted(positions)
    for env in ("mac_local_001", "linux_local_001"):
        assert any(line.startswith(f"🔗 {env}") for line in lines)
        assert any(line.startswith(f"✅ {env}") for line in lines)
    seen = sorted((sshd.scripts / "seen").read_text().splitlines())
    assert seen == ["linux_local_001 v1.0.0 127.0.0.9", "mac_local_001 v1.0.0 127.0.0.9"]
    coordination = Coordination.objects.get()
    assert coordination.status == C.COMPLETED
    assert (coordination.version, coordination.ec2_instance_id) == ("v1.0.0", "i-0123456789abcdef0")
    assert coordination.triggered_by == "command"


def test_trigger_local_exits_1_and_names_the_failed_environment(sshd, make_ssh_environment, qcluster, quick_retries):
    make_ssh_environment("good_env", sshd.script("ok.sh", "true\n"))
    make_ssh_environment("broken_env", sshd.script("broken.sh", "exit 4\n"))

    result = trigger(qcluster, "--wait", "--version", "v2.0.0")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "❌ broken_env (exit_code: script exited with 4)" in result.stdout
    assert "❌ 1 of 2 failed" in result.stdout
    assert Coordination.objects.get().status == C.FAILED


def test_trigger_local_json_prints_the_final_record(sshd, make_ssh_environment, qcluster, quick_retries):
    make_ssh_environment("json_env", sshd.script("ok.sh", "echo out\n"))

    result = trigger(qcluster, "--wait", "--json", "--coordination-id", "deploy_json_1")

    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(result.stdout)
    assert record["coordination_id"] == "deploy_json_1"
    assert record["status"] == C.COMPLETED
    assert record["finished_at"] and record["started_at"] and record["created_at"]
    (env,) = record["environments"]
    assert {k: env[k] for k in ("environment_id", "status", "exit_code", "attempts", "error")} == {
        "environment_id": "json_env",
        "status": T.SUCCEEDED,
        "exit_code": 0,
        "attempts": 1,
        "error": "",
    }


def test_trigger_local_timeout_exits_3_while_the_run_goes_on(sshd, make_ssh_environment, qcluster, quick_retries):
    make_ssh_environment("slow_env", sshd.script("slow.sh", "sleep 4\n"))

    result = trigger(qcluster, "--wait", "--timeout", "1")

    assert result.returncode == 3, result.stdout + result.stderr
    assert "the run goes on" in result.stdout
    coordination = Coordination.objects.get()
    assert not coordination.is_terminal
    follow_up = manage(["deployment_status", coordination.coordination_id, "--json"], qcluster.env)
    assert json.loads(follow_up.stdout)["coordination_id"] == coordination.coordination_id


def test_trigger_local_rejects_bad_input_with_exit_2_and_starts_nothing(sshd, make_ssh_environment, qcluster):
    make_ssh_environment("known_env", sshd.script("ok.sh", "true\n"))

    unknown = trigger(qcluster, "--environments", "known_env,ghost_env")
    bad_ip = trigger(qcluster, extra_env={"EC2_PUBLIC_IP": "not-an-ip"})
    bad_timeout = trigger(qcluster, "--wait", "--timeout", "-5")

    assert unknown.returncode == 2
    assert "--environments: unknown environment(s): ghost_env" in unknown.stderr
    assert bad_ip.returncode == 2
    assert "EC2_PUBLIC_IP" in bad_ip.stderr
    assert bad_timeout.returncode == 2
    assert "--timeout" in bad_timeout.stderr
    assert not Coordination.objects.exists()


def test_trigger_local_with_no_environments_exits_2(qcluster):
    result = trigger(qcluster)
    assert result.returncode == 2
    assert "no enabled environment" in result.stderr


def test_trigger_local_wait_after_a_cancel_prints_the_hung_up_environments_before_it_exits(
    sshd, make_ssh_environment, qcluster, quick_retries
):
    """A cancelled coordination is terminal at once, while its running environments end
    about a second later, when the worker hangs them up; --wait follows until they have."""
    make_ssh_environment("slow_env", sshd.script("slow.sh", "sleep 60\n"))
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "trigger_local", "--wait", "--version", "v3.0.0"],
        env=qcluster.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: Coordination.objects.filter(targets__status=T.RUNNING).exists(), 60, "the script to start"
        )
        coordination_cancel(coordination=Coordination.objects.get())
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == 1, stdout + stderr + qcluster.output()
    lines = stdout.splitlines()
    cancelled = next((i for i, line in enumerate(lines) if line.startswith("🛑 cancelled:")), None)
    hung_up = next((i for i, line in enumerate(lines) if line.startswith("🛑 slow_env (cancelled")), None)
    assert cancelled is not None and hung_up is not None, stdout
    assert cancelled < hung_up < len(lines) - 1, stdout
    assert Coordination.objects.get().targets.get().status == T.CANCELLED


def test_trigger_local_tags_run_only_the_enabled_tagged_environments_less_the_excluded(
    sshd, make_ssh_environment, qcluster, quick_retries
):
    # A file of its own: the sshd (and its scripts folder) is shared by the whole session.
    script = sshd.script("init_tags.sh", f'echo "$ENVIRONMENT_ID" >> "{sshd.scripts}/seen-tags"\n')
    make_ssh_environment("mac_local_001", script, tags=["mac"])
    make_ssh_environment("mac_flaky", script, tags=["mac", "flaky"])
    make_ssh_environment("mac_off", script, tags=["mac"], enabled=False)
    make_ssh_environment("linux_local_001", script, tags=["linux"])
    make_ssh_environment("windows_local_001", script, tags=["windows"])

    result = trigger(qcluster, "--wait", "--tags", " mac, linux", "--exclude-tags", "flaky", "--version", "v4.0.0")

    assert result.returncode == 0, result.stdout + result.stderr + qcluster.output()
    assert "💻 stage 2: triggering 2 environments" in result.stdout
    assert sorted((sshd.scripts / "seen-tags").read_text().splitlines()) == ["linux_local_001", "mac_local_001"]
    coordination = Coordination.objects.get()
    assert coordination.status == C.COMPLETED
    assert sorted(coordination.targets.values_list("environment_id", flat=True)) == [
        "linux_local_001",
        "mac_local_001",
    ]
