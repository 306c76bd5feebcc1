"""The original file's names for settings (global_settings, notification_settings.slack_webhook):
moved to today's names by an import, which says so; refused values name the field the file
wrote; an old and a new name that disagree are refused; an export writes today's names."""

import pytest

from environments.config import ConfigError, export_config
from environments.models import SettingsBlock
from environments.services import environments_import

pytestmark = pytest.mark.django_db

ENTRY = {
    "environment_id": "linux_001",
    "environment_type": "linux_local",
    "connection_method": "ssh",
    "host": "127.0.0.1",
    "username": "deploy",
    "ssh_key_path": "/nonexistent/key",
}


def imported(**blocks):
    return environments_import(data={"environments": [ENTRY], **blocks})


def test_the_original_names_are_stored_under_todays_and_reported():
    plan = imported(
        global_settings={"max_concurrent_deployments": 7, "default_timeout": 90, "retry_attempts": 1},
        notification_settings={"slack_webhook": "https://127.0.0.1:9/services/T/B/X"},
    )
    blocks = {block.name: block.values for block in SettingsBlock.objects.all()}
    assert blocks["deployment_settings"] == {"parallel_limit": 7}
    assert blocks["default_settings"] == {"timeout": 90, "retry_count": 1}
    assert blocks["notification_settings"] == {"notification_webhook": "https://127.0.0.1:9/services/T/B/X"}
    assert "global_settings.max_concurrent_deployments → deployment_settings.parallel_limit" in plan.mapped
    assert not [warning for warning in plan.warnings if "global_settings" in warning or "slack" in warning]
    exported = export_config(include_secrets=True)
    assert "global_settings" not in exported
    assert "slack_webhook" not in exported["notification_settings"]
    assert exported["deployment_settings"]["parallel_limit"] == 7


@pytest.mark.parametrize(
    ("blocks", "named"),
    [
        ({"global_settings": {"max_concurrent_deployments": 0}}, "global_settings.max_concurrent_deployments"),
        ({"global_settings": {"default_timeout": "300"}}, "global_settings.default_timeout"),
        ({"global_settings": {"health_check_interval": -5}}, "global_settings.health_check_interval"),
        ({"global_settings": []}, "global_settings: must be an object"),
        ({"notification_settings": {"slack_webhook": "ftp://127.0.0.1/x"}}, "notification_settings.slack_webhook"),
        (
            {"global_settings": {"retry_attempts": 2}, "default_settings": {"retry_count": 3}},
            "global_settings.retry_attempts and default_settings.retry_count",
        ),
    ],
)
def test_bad_values_name_the_field_the_file_wrote_and_change_nothing(blocks, named):
    with pytest.raises(ConfigError) as refused:
        imported(**blocks)
    assert any(named in error for error in refused.value.errors), refused.value.errors
    assert not SettingsBlock.objects.exists()


def test_the_same_value_under_both_names_is_fine():
    imported(global_settings={"retry_attempts": 2}, default_settings={"retry_count": 2})
    assert SettingsBlock.objects.get(name="default_settings").values == {"retry_count": 2}


def test_the_originals_docker_container_type_is_docker_here():
    plan = environments_import(data={"environments": [{**ENTRY, "environment_type": "docker_container"}]})
    assert plan.create[0].environment_type == "docker"
    assert "environments[0] (linux_001).environment_type docker_container → docker" in plan.mapped
