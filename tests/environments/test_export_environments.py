"""The export_environments command: the stored environments and settings blocks in the
remote_environments.json format, secrets left out unless asked for."""

import json
import os
import stat
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from environments.models import RemoteEnvironment, SettingsBlock
from environments.services import environments_import

# Test values, not credentials.
PASSWORD = "export-test-password-3f9a"  # noqa: S105
API_TOKEN = "export-test-token-8c21"  # noqa: S105
WEBHOOK_SECRET = "whsec_ZXhwb3J0LXRlc3Qtd2ViaG9vay1zZWNyZXQ="  # noqa: S105
SLACK = "https://hooks.slack.com/services/T000/B000/slack-credential-5e77"  # a credential
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOO6/wqb4OSnbUGEUbiOZCt8iKLfjR5dTYcYuVfr04gB"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def environments():
    environments_import(
        data={
            "environments": [
                {
                    "environment_id": "windows_local_001",
                    "environment_type": "windows_local",
                    "connection_method": "ssh",
                    "host": "win-build.internal",
                    "port": 2222,
                    "username": "administrator",
                    "password": PASSWORD,
                    "host_key": HOST_KEY,
                    "detach": False,
                    "working_directory": "/c/aicore0624",
                    "description": "Windows machine",
                    "tags": ["windows", "team-a"],
                },
                {
                    "environment_id": "docker_local_001",
                    "environment_type": "docker",
                    "connection_method": "http_api",
                    "api_endpoint": "http://docker-host.internal:8082/api/deploy/init",
                    "api_token": API_TOKEN,
                    "health_check_url": "http://docker-host.internal:8082/health",
                    "timeout": 900,
                },
                {
                    "environment_id": "webhook_local_001",
                    "environment_type": "linux_local",
                    "connection_method": "webhook",
                    "webhook_url": "http://linux-box.internal:8083/webhook/deploy",
                    "webhook_secret": WEBHOOK_SECRET,
                    "enabled": False,
                },
            ],
            "default_settings": {"timeout": 120, "retry_count": 1},
            "ssh_settings": {
                "default_key_path": "~/.ssh/id_ed25519",
                "connection_timeout": 15,
                "detach": True,
                "run_directory": "~/.pa-runs",
            },
            "notification_settings": {"enable_notifications": True, "notification_webhook": SLACK},
        }
    )


def snapshot() -> dict:
    """Every stored column of every environment and settings block."""
    columns = [field.attname for field in RemoteEnvironment._meta.concrete_fields]
    return {
        "environments": {
            env.environment_id: {name: getattr(env, name) for name in columns}
            for env in RemoteEnvironment.objects.all()
        },
        "blocks": {block.name: (block.values, block.updated_at) for block in SettingsBlock.objects.all()},
    }


def export(*options: str) -> str:
    stdout = StringIO()
    call_command("export_environments", *options, stdout=stdout, stderr=StringIO())
    return stdout.getvalue()


def export_to(path: Path, *options: str) -> None:
    call_command("export_environments", str(path), *options, stdout=StringIO(), stderr=StringIO())


def test_export_leaves_secrets_out_by_default():
    text = export()

    for secret in (PASSWORD, API_TOKEN, WEBHOOK_SECRET, '"password"', '"api_token"', '"webhook_secret"'):
        assert secret not in text


def test_export_lists_every_environment_and_settings_block():
    data = json.loads(export())

    assert [entry["environment_id"] for entry in data["environments"]] == [
        "docker_local_001",
        "webhook_local_001",
        "windows_local_001",
    ]
    assert data["ssh_settings"] == {
        "default_key_path": "~/.ssh/id_ed25519",
        "connection_timeout": 15,
        "detach": True,
        "run_directory": "~/.pa-runs",
    }
    assert data["default_settings"] == {"timeout": 120, "retry_count": 1}


def test_export_writes_each_environments_tags_in_their_order_and_none_as_an_empty_list():
    entries = {entry["environment_id"]: entry for entry in json.loads(export())["environments"]}

    assert entries["windows_local_001"]["tags"] == ["windows", "team-a"]
    assert entries["docker_local_001"]["tags"] == []


def test_export_writes_a_detach_override_and_leaves_out_one_that_follows_ssh_settings():
    entries = {entry["environment_id"]: entry for entry in json.loads(export())["environments"]}

    assert entries["windows_local_001"]["detach"] is False
    assert "detach" not in entries["docker_local_001"]


def test_export_with_include_secrets_includes_them_in_plain_text():
    entries = {entry["environment_id"]: entry for entry in json.loads(export("--include-secrets"))["environments"]}

    assert entries["windows_local_001"]["password"] == PASSWORD
    assert entries["docker_local_001"]["api_token"] == API_TOKEN
    assert entries["webhook_local_001"]["webhook_secret"] == WEBHOOK_SECRET


def test_export_with_secrets_writes_a_file_only_its_owner_can_read(tmp_path):
    path = tmp_path / "remote_environments.json"

    export_to(path, "--include-secrets")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PASSWORD in path.read_text(encoding="utf-8")


def test_export_with_secrets_over_an_existing_readable_file_makes_it_owner_only(tmp_path):
    path = tmp_path / "remote_environments.json"
    path.write_text("{}", encoding="utf-8")
    os.chmod(path, 0o644)

    export_to(path, "--include-secrets")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PASSWORD in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("options", [[], ["--include-secrets"]], ids=["without-secrets", "with-secrets"])
def test_exported_file_imports_back_with_nothing_changed(tmp_path, options):
    path = tmp_path / "remote_environments.json"
    export_to(path, *options)
    before = snapshot()

    stdout = StringIO()
    call_command("import_environments", str(path), stdout=stdout, stderr=StringIO())

    assert stdout.getvalue().splitlines()[-1] == "0 created, 0 updated, 3 unchanged, 0 deleted"
    after = snapshot()
    assert after["environments"] == before["environments"]
    assert {name: values for name, (values, _) in after["blocks"].items()} == {
        name: values for name, (values, _) in before["blocks"].items()
    }


def test_export_shows_the_notification_webhook_only_as_its_host():
    data = json.loads(export())

    assert data["notification_settings"]["notification_webhook"] == "https://hooks.slack.com/***"
    assert json.loads(export("--include-secrets"))["notification_settings"]["notification_webhook"] == SLACK


def test_a_masked_webhook_that_is_not_the_stored_ones_is_refused_naming_it(tmp_path):
    data = json.loads(export())
    data["notification_settings"]["notification_webhook"] = "https://hooks.example.com/***"
    path = tmp_path / "remote_environments.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    stderr = StringIO()
    with pytest.raises(CommandError):
        call_command("import_environments", str(path), stdout=StringIO(), stderr=stderr)

    assert "notification_settings.notification_webhook: a masked URL" in stderr.getvalue()
    assert SettingsBlock.objects.get(name="notification_settings").values["notification_webhook"] == SLACK


def test_a_block_leaving_the_webhook_out_keeps_the_stored_one():
    environments_import(data={"environments": [], "notification_settings": {"enable_notifications": False}})

    values = SettingsBlock.objects.get(name="notification_settings").values
    assert values == {"enable_notifications": False, "notification_webhook": SLACK}
