"""`manage.py trigger_local`'s own flags, checked before anything starts."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from deployments.models import Coordination
from tests.factories import make_environment

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("timeout", ["1e12", "inf", "nan", "604801"])
def test_a_wait_timeout_beyond_seven_days_is_refused_naming_the_flag_and_the_limit(timeout):
    make_environment("linux_local_001")

    with pytest.raises(CommandError) as raised:
        call_command("trigger_local", "--wait", "--timeout", timeout)

    assert "--timeout" in str(raised.value)
    assert "604800 seconds (7 days)" in str(raised.value)
    assert not Coordination.objects.exists()


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ('{"instance_id": ' * 100000 + '"i-1"' + "}" * 100000, "nested deeper than 64 levels"),
        ('{"instance_id": "i-0123456789abcdef0", "instance_id": "i-0fedcba9876543210"}', "duplicate key 'instance_id'"),
        ('{"instance_id": "i-0123456789abcdef0", "wait_seconds": NaN}', "NaN is not a JSON number"),
        ('{"instance_id": "i-0123456789abcdef0", "wait_seconds": 1e400}', "1e400 is out of range"),
    ],
    ids=["deep", "duplicate key", "NaN", "1e400"],
)
def test_an_ec2_config_that_is_not_strict_json_exits_2_naming_the_flag(config, problem):
    make_environment("linux_local_001")

    with pytest.raises(CommandError) as raised:
        call_command("trigger_local", "--ec2-config", config)

    assert raised.value.returncode == 2
    assert str(raised.value).startswith("--ec2-config: ")
    assert problem in str(raised.value)
    assert not Coordination.objects.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--tags", "mac,macc"], "--tags: unknown tag(s): macc (no environment has them)"),
        (["--exclude-tags", "flakey"], "--exclude-tags: unknown tag(s): flakey (no environment has them)"),
        (["--tags", "Mac"], "--tags: 'Mac' is not a tag"),
        (["--tags", " , "], "--tags: name at least one tag"),
        (["--tags", "mac", "--exclude-tags", "mac"], "--tags: nothing left to deploy to"),
        (["--environments", "mac_flaky", "--exclude-tags", "flaky"], "--environments: nothing left to deploy to"),
    ],
    ids=["unknown", "unknown-excluded", "malformed", "empty", "all-excluded", "named-excluded"],
)
def test_a_bad_tag_selection_exits_2_naming_the_flag_and_starts_nothing(arguments, message):
    make_environment("mac_one", tags=["mac"])
    make_environment("mac_flaky", tags=["mac", "flaky"])

    with pytest.raises(CommandError) as raised:
        call_command("trigger_local", *arguments)

    assert raised.value.returncode == 2
    assert str(raised.value).startswith(message)
    assert not Coordination.objects.exists()


def test_tags_and_names_queue_the_named_and_the_tagged_environments():
    make_environment("mac_one", tags=["mac"])
    make_environment("mac_flaky", tags=["mac", "flaky"])
    make_environment("linux_one", tags=["linux"])
    make_environment("plain")

    arguments = ["--environments", "plain", "--tags", "mac", "--exclude-tags", "flaky"]
    call_command("trigger_local", *arguments, stdout=StringIO())

    targets = Coordination.objects.get().targets.values_list("environment_id", flat=True)
    assert sorted(targets) == ["mac_one", "plain"]
