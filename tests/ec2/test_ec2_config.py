"""`ec2_deployment_config` is checked when a coordination starts: every problem names
`ec2_deployment_config.<key>`, from the service, the API and `trigger_local --ec2-config`."""

from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from accounts.roles import ADMIN
from deployments.models import Coordination, TriggerSource
from deployments.services import coordination_start
from environments.models import RemoteEnvironment
from tests.factories import make_environment, make_user, token_client

pytestmark = pytest.mark.django_db

INSTANCE = "i-0123456789abcdef0"
IMAGE = "ami-0123456789abcdef0"


@pytest.fixture(autouse=True)
def environment(db) -> RemoteEnvironment:
    return make_environment("linux_local_001")


@pytest.fixture
def admin_client_api(db):
    return token_client(make_user("operator", ADMIN))


def start(config: dict, **kwargs) -> Coordination:
    return coordination_start(triggered_by=TriggerSource.COMMAND, ec2_deployment_config=config, **kwargs)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"instance_id": INSTANCE},
        {"instance_id": INSTANCE, "platform_health_url": "https://203.0.113.10/health"},
        {"platform_health_url": "http://127.0.0.1:8080/health"},
        {
            "image_id": IMAGE,
            "instance_type": "t3.micro",
            "key_name": "platform",
            "security_group_ids": ["sg-0123456789abcdef0"],
            "subnet_id": "subnet-0123456789abcdef0",
            "user_data": "#!/bin/sh\n./start.sh\n",
            "tags": {"Name": "powerautomation"},
        },
    ],
    ids=["reported", "wait", "wait_and_health", "health_only", "launch"],
)
def test_each_mode_is_accepted_and_recorded(config):
    assert start(config).ec2_deployment_config == config


@pytest.mark.parametrize(
    ("config", "key", "text"),
    [
        ({"region": "eu-west-1"}, "region", "unknown key"),
        ({"instance_id": "vm-1"}, "instance_id", "looks like i-0123456789abcdef0"),
        ({"instance_id": 7}, "instance_id", "non-empty string"),
        ({"image_id": "ubuntu", "instance_type": "t3.micro"}, "image_id", "looks like ami-"),
        ({"image_id": IMAGE}, "instance_type", "required with image_id"),
        ({"image_id": IMAGE, "instance_type": "T3 Micro"}, "instance_type", "looks like t3.micro"),
        ({"instance_id": INSTANCE, "image_id": IMAGE, "instance_type": "t3.micro"}, "instance_id", "not both"),
        ({"instance_id": INSTANCE, "user_data": "x"}, "user_data", "only used when launching"),
        ({"image_id": IMAGE, "instance_type": "t3.micro", "security_group_ids": "sg-1"}, "security_group_ids", "list"),
        ({"image_id": IMAGE, "instance_type": "t3.micro", "subnet_id": "net-1"}, "subnet_id", "subnet-"),
        ({"image_id": IMAGE, "instance_type": "t3.micro", "tags": ["Name"]}, "tags", "object"),
        ({"image_id": IMAGE, "instance_type": "t3.micro", "tags": {"aws:x": "y"}}, "tags", "aws:"),
        ({"image_id": IMAGE, "instance_type": "t3.micro", "tags": {"Name": 1}}, "tags", "string value"),
        ({"image_id": IMAGE, "instance_type": "t3.micro", "user_data": "x" * 16385}, "user_data", "16384 bytes"),
        ({"platform_health_url": "ftp://127.0.0.1/health"}, "platform_health_url", "http:// or https://"),
        ({"platform_health_url": "http://"}, "platform_health_url", "http:// or https://"),
    ],
)
def test_a_bad_config_names_the_key_and_starts_nothing(config, key, text):
    with pytest.raises(ValidationError) as excinfo:
        start(config)

    messages = excinfo.value.message_dict[f"ec2_deployment_config.{key}"]
    assert text in " ".join(messages)
    assert not Coordination.objects.exists()


def test_an_instance_id_that_contradicts_ec2_instance_id_is_refused():
    with pytest.raises(ValidationError) as excinfo:
        start({"instance_id": INSTANCE}, ec2_instance_id="i-0000000000000000f")

    assert "differs from ec2_instance_id" in excinfo.value.message_dict["ec2_deployment_config.instance_id"][0]


def test_the_api_answers_400_naming_the_key(admin_client_api):
    response = admin_client_api.post(
        "/api/deployment/trigger-local",
        {"ec2_deployment_config": {"image_id": IMAGE, "instance_type": "t3.micro", "colour": "blue"}},
        format="json",
    )

    assert response.status_code == 400
    assert list(response.json()) == ["ec2_deployment_config.colour"]
    assert not Coordination.objects.exists()


def test_the_api_queues_a_launch(admin_client_api):
    config = {"image_id": IMAGE, "instance_type": "t3.micro", "platform_health_url": "https://203.0.113.10/health"}

    response = admin_client_api.post("/api/deployment/trigger-local", {"ec2_deployment_config": config}, format="json")

    assert response.status_code == 202, response.content
    assert Coordination.objects.get().ec2_deployment_config == config


def run_trigger_local(*args: str) -> str:
    stdout = StringIO()
    call_command("trigger_local", *args, stdout=stdout, stderr=StringIO())
    return stdout.getvalue()


def test_trigger_local_takes_the_config_as_json():
    run_trigger_local("--ec2-config", f'{{"instance_id": "{INSTANCE}"}}')

    assert Coordination.objects.get().ec2_deployment_config == {"instance_id": INSTANCE}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("{instance_id: i-1}", "--ec2-config: not valid JSON"),
        ('["i-0123456789abcdef0"]', "--ec2-config: must be a JSON object"),
        ('{"image_id": "ami-1"}', "--ec2-config image_id: an AMI id looks like"),
    ],
)
def test_trigger_local_exits_2_naming_the_flag(value, text):
    with pytest.raises(CommandError) as excinfo:
        run_trigger_local("--ec2-config", value)

    assert excinfo.value.returncode == 2
    assert text in str(excinfo.value)
    assert not Coordination.objects.exists()
