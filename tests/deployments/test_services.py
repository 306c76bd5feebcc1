import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError

from deployments.models import Coordination, CoordinationStatus as C, StageEvent, TriggerSource
from deployments.selectors import targets_waiting
from deployments.services import EnvironmentsBusy, coordination_start
from environments.models import RemoteEnvironment

pytestmark = pytest.mark.django_db


def start(**kwargs):
    kwargs.setdefault("triggered_by", TriggerSource.COMMAND)
    return coordination_start(**kwargs)


def field_errors(excinfo) -> dict:
    return excinfo.value.message_dict


def test_default_targets_are_the_enabled_environments(make_ssh_environment):
    make_ssh_environment("enabled_ssh", "./init_aicore.sh")
    make_ssh_environment("disabled_ssh", "./init_aicore.sh", enabled=False)
    RemoteEnvironment.objects.create(
        environment_id="api_env",
        environment_type="docker",
        connection_method="http_api",
        host="127.0.0.1",
        port=8082,
        api_token="t",
    )

    coordination = start(version="v1.2.3")

    assert sorted(t.environment_id for t in coordination.targets.all()) == ["api_env", "enabled_ssh"]
    assert coordination.status == C.PENDING
    assert coordination.coordination_id.startswith("deploy_")
    created = StageEvent.objects.get(coordination=coordination)
    assert (created.old_status, created.new_status) == ("", C.PENDING)


def test_generated_ids_have_the_documented_shape(make_ssh_environment):
    import re

    make_ssh_environment("env", "./init_aicore.sh")
    coordination = start()
    assert re.fullmatch(r"deploy_\d{8}_\d{6}_[0-9a-f]{4}", coordination.coordination_id)


def test_the_settings_in_force_are_copied_into_the_coordination(make_ssh_environment):
    from environments.models import SettingsBlock

    SettingsBlock.objects.create(name="deployment_settings", values={"parallel_limit": 7})
    make_ssh_environment("env", "./init_aicore.sh")
    assert start().settings["parallel_limit"] == 7


def test_ssh_settings_detach_and_run_directory_are_copied_into_the_coordination(make_ssh_environment):
    from environments.models import SettingsBlock

    SettingsBlock.objects.create(name="ssh_settings", values={"detach": False, "run_directory": "~/pa-runs"})
    make_ssh_environment("env", "./init_aicore.sh")
    settings = start().settings
    assert (settings["detach"], settings["run_directory"]) == (False, "~/pa-runs")


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"environment_ids": ["ghost"]}, "environments", "unknown environment(s): ghost"),
        ({"environment_ids": []}, "environments", "at least one"),
        ({"environment_ids": ["disabled_ssh"]}, "environments", "disabled"),
        ({"version": "v1; rm -rf /"}, "version", "letters, digits"),
        ({"ec2_instance_id": "i-xyz"}, "ec2_instance_id", "i-0123456789abcdef0"),
        ({"ec2_public_ip": "300.1.1.1"}, "ec2_public_ip", "not an IP address"),
        ({"coordination_id": "has space"}, "coordination_id", "letters, digits"),
        ({"ec2_deployment_config": ["not", "an", "object"]}, "ec2_deployment_config", "JSON object"),
        ({"triggered_by": "cron"}, "triggered_by", "must be one of"),
    ],
)
def test_bad_input_names_the_field_and_creates_nothing(make_ssh_environment, kwargs, field, text):
    make_ssh_environment("enabled_ssh", "./init_aicore.sh")
    make_ssh_environment("disabled_ssh", "./init_aicore.sh", enabled=False)
    RemoteEnvironment.objects.create(
        environment_id="api_env",
        environment_type="docker",
        connection_method="http_api",
        host="127.0.0.1",
        port=8082,
        api_token="t",
    )

    with pytest.raises(ValidationError) as excinfo:
        start(**kwargs)

    assert text in " ".join(field_errors(excinfo)[field])
    assert not Coordination.objects.exists()
    assert not StageEvent.objects.exists()


def test_a_coordination_id_can_be_used_once(make_ssh_environment):
    make_ssh_environment("env", "./init_aicore.sh")
    start(coordination_id="deploy_fixed")
    with pytest.raises(ValidationError) as excinfo:
        start(coordination_id="deploy_fixed")
    assert "already exists" in field_errors(excinfo)["coordination_id"][0]
    assert Coordination.objects.count() == 1


def test_no_enabled_environment_is_an_error():
    with pytest.raises(ValidationError) as excinfo:
        start()
    assert "no enabled environment" in field_errors(excinfo)["environments"][0]


def test_the_worker_task_is_queued_only_after_commit(make_ssh_environment, django_capture_on_commit_callbacks):
    from django_q.brokers import get_broker

    broker = get_broker()  # the ORM broker or Redis, whichever the settings chose
    make_ssh_environment("env", "./init_aicore.sh")
    queued_before = broker.queue_size()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        start()
        assert broker.queue_size() == queued_before
    for callback in callbacks:
        callback()
    assert broker.queue_size() == queued_before + 1


def test_starting_a_deployment_decrypts_no_secret(make_ssh_environment, settings):
    """Choosing the targets reads no secret (the runner loads each target again when it
    connects); before, every enabled environment's secrets were decrypted to check a
    connection method that the model's choices already guarantee."""
    make_ssh_environment("with_secret", "./init_aicore.sh", password="pw")  # noqa: S106 (test value)
    # Under another encryption key every stored secret is unreadable: reading one would raise.
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    coordination = start()
    named = start(environment_ids=["with_secret"])

    assert [t.environment_id for t in coordination.targets.all()] == ["with_secret"]
    assert [t.environment_id for t in named.targets.all()] == ["with_secret"]


@pytest.mark.parametrize("field", ["coordination_id", "version", "ec2_instance_id"])
def test_an_identifier_with_a_trailing_newline_is_refused(make_ssh_environment, field):
    make_ssh_environment("env_a", "./init_aicore.sh")
    value = {"coordination_id": "deploy_x", "version": "v1", "ec2_instance_id": "i-0123456789abcdef0"}[field]
    with pytest.raises(ValidationError) as excinfo:
        start(**{field: value + "\n"})
    assert field in field_errors(excinfo)


def test_targets_chosen_by_tag_are_the_enabled_tagged_ones_less_the_excluded(make_ssh_environment):
    make_ssh_environment("mac_one", "./init_aicore.sh", tags=["mac"])
    make_ssh_environment("mac_flaky", "./init_aicore.sh", tags=["mac", "flaky"])
    make_ssh_environment("mac_off", "./init_aicore.sh", tags=["mac"], enabled=False)
    make_ssh_environment("linux_one", "./init_aicore.sh", tags=["linux"])

    coordination = start(environment_ids=["linux_one"], tags=["mac"], exclude_tags=["flaky"])

    assert sorted(t.environment_id for t in coordination.targets.all()) == ["linux_one", "mac_one"]
    created = StageEvent.objects.get(coordination=coordination)
    assert created.data["environments"] == ["linux_one", "mac_one"]


@pytest.mark.parametrize("field", ["tags", "exclude_tags"])
def test_an_unknown_tag_names_the_field_and_creates_nothing(make_ssh_environment, field):
    make_ssh_environment("mac_one", "./init_aicore.sh", tags=["mac"])

    with pytest.raises(ValidationError) as excinfo:
        start(**{field: ["mac", "macc"]})

    assert field_errors(excinfo) == {field: ["unknown tag(s): macc (no environment has them)"]}
    assert not Coordination.objects.exists()
    assert not StageEvent.objects.exists()


def test_an_environment_left_pending_in_an_ended_coordination_is_not_busy(make_ssh_environment):
    make_ssh_environment("shared", "./init_aicore.sh")
    stale = start()
    # A target left unended in a coordination that ended (an older version, a hand edit).
    Coordination.objects.filter(pk=stale.pk).update(status=C.FAILED)

    newer = start(rollout={"concurrency": "reject"})

    assert newer.targets.get().environment_id == "shared"
    assert targets_waiting(list(newer.targets.all())) == {}


def test_reject_names_an_environment_pending_in_a_running_coordination(make_ssh_environment):
    make_ssh_environment("shared", "./init_aicore.sh")
    first = start()
    before = (Coordination.objects.count(), StageEvent.objects.count())

    with pytest.raises(EnvironmentsBusy) as refused:
        start(rollout={"concurrency": "reject"})

    assert refused.value.busy == {"shared": first.coordination_id}
    assert (Coordination.objects.count(), StageEvent.objects.count()) == before


def test_an_approval_records_who_gave_it_a_user_or_a_commands_machine_account(make_ssh_environment, admin_user):
    from deployments.api.serializers import CoordinationDetailSerializer
    from deployments.services import coordination_approve

    make_ssh_environment("env_0", "./init_aicore.sh")
    by_command, by_user = start(), start()
    Coordination.objects.filter(pk__in=[by_command.pk, by_user.pk]).update(status=C.AWAITING_APPROVAL)

    coordination_approve(coordination=by_command, actor="command (deploy@build-host)")
    coordination_approve(coordination=by_user, user=admin_user)

    assert Coordination.objects.get(pk=by_command.pk).approver == "command (deploy@build-host)"
    assert CoordinationDetailSerializer(Coordination.objects.get(pk=by_user.pk)).data["approved_by"] == "admin"
    shown = CoordinationDetailSerializer(Coordination.objects.get(pk=by_command.pk)).data
    assert shown["approved_by"] == "command (deploy@build-host)"
