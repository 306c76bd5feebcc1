"""The EC2 stage run in-process (the body of the worker task) against moto's EC2 endpoint
and a real sshd. Through a qcluster process: test_ec2_e2e.py."""

import time

import pytest

from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    Stage,
    StageEvent,
    TargetStatus as T,
    TriggerSource,
)
from deployments.services import coordination_cancel, coordination_start
from deployments.stage_log import format_event
from deployments.tasks import run_coordination
from environments.models import SettingsBlock
from tests.support.http import Answer
from tests.support.processes import in_thread

pytestmark = pytest.mark.django_db


@pytest.fixture
def environment(sshd, make_ssh_environment):
    """One environment whose script writes down the EC2 details it was given."""
    SettingsBlock.objects.update_or_create(
        name="default_settings", defaults={"values": {"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}}
    )
    seen = sshd.scripts / f"seen-{time.monotonic_ns()}"
    script = sshd.script(f"ec2-{seen.name}.sh", f'echo "$EC2_INSTANCE_ID $EC2_PUBLIC_IP" > "{seen}"\n')
    make_ssh_environment("linux_local_001", script)
    return seen


def start_and_run(ec2_deployment_config: dict, **kwargs) -> Coordination:
    coordination = coordination_start(
        triggered_by=TriggerSource.COMMAND, version="v9", ec2_deployment_config=ec2_deployment_config, **kwargs
    )
    run_coordination(coordination_pk=coordination.pk)
    coordination.refresh_from_db()
    return coordination


def ec2_lines(coordination: Coordination) -> list[str]:
    events = coordination.events.filter(stage=Stage.EC2).select_related("coordination")
    return [format_event(event) for event in events]


def assert_nothing_triggered(coordination: Coordination, seen) -> None:
    assert not StageEvent.objects.filter(coordination=coordination, new_status=T.TRIGGERING).exists()
    assert not seen.exists()
    for target in coordination.targets.all():
        assert (target.status, target.reason) == (T.CANCELLED, "ec2_failed")


def test_launch_mode_launches_waits_records_the_instance_then_deploys(moto, ami, environment, quick_ec2):
    config = {
        "image_id": ami,
        "instance_type": "t3.micro",
        "key_name": "platform-key",
        "user_data": "#!/bin/sh\necho platform\n",
        "tags": {"Name": "powerautomation-platform"},
    }

    coordination = start_and_run(config)

    assert coordination.status == C.COMPLETED, coordination.error
    (instance,) = [i for r in moto.client().describe_instances()["Reservations"] for i in r["Instances"]]
    assert coordination.ec2_instance_id == instance["InstanceId"]
    assert coordination.ec2_public_ip == instance["PublicIpAddress"]
    assert (instance["ImageId"], instance["InstanceType"], instance["KeyName"]) == (ami, "t3.micro", "platform-key")
    tags = {tag["Key"]: tag["Value"] for tag in instance["Tags"]}
    assert tags == {"Name": "powerautomation-platform", "powerautomation:coordination": coordination.coordination_id}
    assert environment.read_text().split() == [coordination.ec2_instance_id, coordination.ec2_public_ip]
    lines = ec2_lines(coordination)
    assert lines[0] == f"📡 stage 1: EC2 platform: launching {ami} as t3.micro through the EC2 API, version v9"
    assert f"☁️  launched {instance['InstanceId']} (t3.micro from {ami})" in lines
    assert f"☁️  {instance['InstanceId']} is running, public IP {instance['PublicIpAddress']}" in lines
    assert f"☁️  {instance['InstanceId']} passed its status checks" in lines
    assert lines[-1].startswith(f"✅ EC2 done: instance {instance['InstanceId']} is running")


def test_wait_mode_waits_for_the_named_instance_and_records_its_public_ip(moto, ami, environment, quick_ec2):
    instance = moto.client().run_instances(ImageId=ami, InstanceType="t3.small", MinCount=1, MaxCount=1)
    instance_id = instance["Instances"][0]["InstanceId"]

    coordination = start_and_run({"instance_id": instance_id})

    assert coordination.status == C.COMPLETED, coordination.error
    assert coordination.ec2_instance_id == instance_id
    assert coordination.ec2_public_ip == instance["Instances"][0]["PublicIpAddress"]
    assert environment.read_text().split() == [instance_id, coordination.ec2_public_ip]
    assert len(moto.client().describe_instances()["Reservations"]) == 1  # nothing launched


def test_an_unknown_instance_fails_the_stage_with_aws_error_code_and_triggers_nothing(moto, environment, quick_ec2):
    coordination = start_and_run({"instance_id": "i-0123456789abcdef0"})

    assert coordination.status == C.FAILED
    assert coordination.error.startswith("EC2 stage failed: InvalidInstanceID.NotFound: ")
    assert "i-0123456789abcdef0" in coordination.error
    failed = coordination.events.get(new_status=C.FAILED)
    assert failed.stage == Stage.EC2
    assert failed.data["error_code"] == "InvalidInstanceID.NotFound"
    assert_nothing_triggered(coordination, environment)


def test_a_terminated_instance_fails_at_once_instead_of_waiting(moto, ami, environment, settings):
    settings.EC2_POLL_SECONDS = 1
    settings.EC2_STAGE_TIMEOUT_SECONDS = 600
    client = moto.client()
    instance_id = client.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]
    client.terminate_instances(InstanceIds=[instance_id])

    started = time.monotonic()
    coordination = start_and_run({"instance_id": instance_id})

    assert time.monotonic() - started < 30
    assert coordination.status == C.FAILED
    assert coordination.error == (
        f"EC2 stage failed: InstanceNotRunning: instance {instance_id} is terminated; it will not run by itself"
    )
    assert_nothing_triggered(coordination, environment)


def test_launch_mode_with_a_recorded_instance_waits_for_it_instead_of_launching_another(
    moto, ami, environment, quick_ec2
):
    """A retry (or a run resumed after its worker died) carries the instance already launched."""
    client = moto.client()
    first = client.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0]

    coordination = start_and_run({"image_id": ami, "instance_type": "t3.micro"}, ec2_instance_id=first["InstanceId"])

    assert coordination.status == C.COMPLETED, coordination.error
    assert len(client.describe_instances()["Reservations"]) == 1
    assert (coordination.ec2_instance_id, coordination.ec2_public_ip) == (first["InstanceId"], first["PublicIpAddress"])
    assert any("was already launched for this run" in line for line in ec2_lines(coordination))


def test_platform_health_url_is_waited_for_before_the_environments(environment, http_server, quick_ec2):
    http_server.answer("/health", Answer(503), Answer(200))

    coordination = start_and_run({"platform_health_url": http_server.url("/health")})

    assert coordination.status == C.COMPLETED, coordination.error
    assert http_server.paths() == ["/health", "/health"]
    lines = ec2_lines(coordination)
    assert "☁️  platform not healthy yet: GET http" in " ".join(lines)
    assert any(line.startswith("☁️  platform healthy: GET ") for line in lines)
    health_seen = coordination.events.get(stage=Stage.EC2, data__healthy=True).id
    assert health_seen < coordination.events.get(new_status=T.TRIGGERING).id


def test_a_platform_that_never_turns_healthy_fails_the_stage_at_the_timeout(environment, http_server, settings):
    settings.EC2_POLL_SECONDS = 1
    settings.EC2_STAGE_TIMEOUT_SECONDS = 2
    http_server.answer("/health", Answer(503))

    coordination = start_and_run({"platform_health_url": http_server.url("/health")})

    assert coordination.status == C.FAILED
    assert coordination.error.startswith("EC2 stage failed: PlatformUnhealthy: not done within ")
    assert "HTTP 503" in coordination.error
    assert_nothing_triggered(coordination, environment)


@pytest.mark.django_db(transaction=True)
def test_cancel_during_the_ec2_stage_stops_it_and_starts_nothing(environment, http_server, settings):
    settings.EC2_POLL_SECONDS = 1
    settings.EC2_STAGE_TIMEOUT_SECONDS = 60
    http_server.answer("/health", Answer(503))
    coordination = coordination_start(
        triggered_by=TriggerSource.COMMAND, ec2_deployment_config={"platform_health_url": http_server.url("/health")}
    )
    runner = in_thread(run_coordination, coordination_pk=coordination.pk)
    deadline = time.monotonic() + 10
    while not http_server.requests and time.monotonic() < deadline:
        time.sleep(0.05)

    coordination_cancel(coordination=coordination)
    started = time.monotonic()
    runner.join(timeout=15)

    assert not runner.is_alive()
    assert time.monotonic() - started < 5
    coordination.refresh_from_db()
    assert coordination.status == C.CANCELLED
    assert not environment.exists()
    assert not StageEvent.objects.filter(coordination=coordination, new_status=T.TRIGGERING).exists()
    assert not coordination.events.filter(new_status=C.EC2_COMPLETED).exists()


def test_credentials_aws_refuses_fail_the_stage_with_its_code(moto_checking_credentials, environment, monkeypatch):
    for name, value in moto_checking_credentials.env.items():
        monkeypatch.setenv(name, value)

    coordination = start_and_run({"instance_id": "i-0123456789abcdef0"})

    assert coordination.status == C.FAILED
    assert coordination.error == (
        "EC2 stage failed: AuthFailure: AWS was not able to validate the provided access credentials"
    )
    assert_nothing_triggered(coordination, environment)
