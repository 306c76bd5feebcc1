"""End to end: `trigger_local --wait --ec2-config ...` in its own process, a real qcluster
process doing the EC2 stage against moto's EC2 endpoint, then the local environments over
a real sshd."""

import json

import pytest

from deployments.models import Coordination, CoordinationStatus as C, StageEvent, TargetStatus as T, TriggerSource
from deployments.services import coordination_start
from environments.models import SettingsBlock
from tests.support.http import Answer
from tests.support.processes import manage, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(moto, start_qcluster):
    """A qcluster that finds the emulator through boto3's standard chain, as on a worker host."""
    return start_qcluster(EC2_POLL_SECONDS="1", EC2_STAGE_TIMEOUT_SECONDS="60", **moto.env)


@pytest.fixture
def seen(sshd, make_ssh_environment):
    SettingsBlock.objects.create(
        name="default_settings", values={"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    )
    marker = sshd.scripts / "ec2-e2e-seen"
    marker.unlink(missing_ok=True)
    script = sshd.script("ec2-e2e.sh", f'echo "$ENVIRONMENT_ID $EC2_INSTANCE_ID $EC2_PUBLIC_IP" >> "{marker}"\n')
    make_ssh_environment("mac_local_001", script)
    make_ssh_environment("linux_local_001", script)
    return marker


def trigger(worker, ec2_config: dict, *args: str):
    return manage(["trigger_local", "--wait", "--ec2-config", json.dumps(ec2_config), *args], worker.env, timeout=120)


def test_a_launched_instance_is_waited_for_then_every_environment_deploys(moto, ami, worker, seen):
    config = {"image_id": ami, "instance_type": "t3.micro", "tags": {"Name": "platform"}}

    result = trigger(worker, config, "--version", "v9")

    assert result.returncode == 0, result.stdout + result.stderr + worker.output()
    coordination = Coordination.objects.get()
    instance_id, public_ip = coordination.ec2_instance_id, coordination.ec2_public_ip
    (instance,) = moto.client().describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"]
    assert (instance["ImageId"], instance["PublicIpAddress"]) == (ami, public_ip)
    lines = result.stdout.splitlines()
    expected_in_order = [
        f"📡 stage 1: EC2 platform: launching {ami} as t3.micro",
        f"☁️  launched {instance_id}",
        f"☁️  {instance_id} is running, public IP {public_ip}",
        f"☁️  {instance_id} passed its status checks",
        f"✅ EC2 done: instance {instance_id} is running (public IP {public_ip}), status checks ok",
        "💻 stage 2: triggering 2 environments",
        "🎉 all 2 succeeded",
    ]
    positions = [next(i for i, line in enumerate(lines) if line.startswith(text)) for text in expected_in_order]
    assert positions == sorted(positions)
    assert sorted(seen.read_text().splitlines()) == [
        f"linux_local_001 {instance_id} {public_ip}",
        f"mac_local_001 {instance_id} {public_ip}",
    ]


def test_a_bad_ami_fails_the_ec2_stage_with_aws_error_and_no_environment_is_triggered(moto, worker, seen):
    result = trigger(worker, {"image_id": "ami-0123456789abcdef0", "instance_type": "t3.micro"})

    assert result.returncode == 1, result.stdout + result.stderr + worker.output()
    assert "❌ failed: EC2 stage failed: InvalidAMIID.NotFound: " in result.stdout
    assert "stage 2" not in result.stdout
    coordination = Coordination.objects.get()
    assert coordination.status == C.FAILED
    assert coordination.events.get(new_status=C.FAILED).data["error_code"] == "InvalidAMIID.NotFound"
    assert not StageEvent.objects.filter(new_status=T.TRIGGERING).exists()
    assert set(coordination.targets.values_list("status", "reason")) == {(T.CANCELLED, "ec2_failed")}
    assert not seen.exists()
    assert moto.client().describe_instances()["Reservations"] == []


def test_a_worker_stopped_during_the_ec2_stage_hands_it_over_without_a_second_launch(
    moto, ami, start_qcluster, seen, http_server
):
    http_server.answer("/health", Answer(503))
    env = {**moto.env, "EC2_POLL_SECONDS": "1", "EC2_STAGE_TIMEOUT_SECONDS": "120"}
    first = start_qcluster(**env)
    config = {"image_id": ami, "instance_type": "t3.micro", "platform_health_url": http_server.url("/health")}
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND, ec2_deployment_config=config)
    wait_until(lambda: http_server.requests, 60, "the launched instance to be waited for")

    first.stop()  # SIGTERM, as systemd stops a worker
    coordination.refresh_from_db()
    assert coordination.status == C.EC2_DEPLOYING, first.output()
    http_server.answer("/health", Answer(200))
    second = start_qcluster(**env)
    wait_until(lambda: Coordination.objects.get().is_terminal, 60, "the run to end on the new worker")

    coordination.refresh_from_db()
    assert coordination.status == C.COMPLETED, coordination.error + second.output()
    (reservation,) = moto.client().describe_instances()["Reservations"]
    assert reservation["Instances"][0]["InstanceId"] == coordination.ec2_instance_id
    assert coordination.events.filter(message__contains="was already launched for this run").exists()
    assert len(seen.read_text().splitlines()) == 2
