"""The import_environments command: the remote_environments.json format, validated as a
whole (every problem named by environment and field), then upserted by environment_id all
or nothing."""

import json
import re
import resource
import subprocess
import sys
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from environments.agent_tokens import token_hash
from environments.config import ENVIRONMENT_FIELDS
from environments.models import SECRET_FIELDS, RemoteEnvironment, SettingsBlock
from tests.support.processes import manage, process_environment

ROOT = Path(__file__).resolve().parents[2]
# Test values, not credentials.
PASSWORD = "import-test-password-5d0e"  # noqa: S105
API_TOKEN = "import-test-token-a41c"  # noqa: S105
BLOCK_NAMES = ("default_settings", "ssh_settings", "deployment_settings", "notification_settings")

# The config file's size limit, as the README states it.
MAX_CONFIG_FILE_BYTES = 10 * 1024 * 1024

pytestmark = pytest.mark.django_db


@dataclass
class Output:
    stdout: str
    stderr: str


def readme_example() -> dict:
    """The first ```json block under the README's "## Config file" heading."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    _, found, section = readme.partition("\n## Config file")
    assert found, "README.md has no '## Config file' section"
    match = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert match, "the README's Config file section has no ```json block"
    return json.loads(match.group(1))


def ssh_entry(environment_id: str = "linux_local_001", **fields) -> dict:
    entry = {
        "environment_id": environment_id,
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": "linux-box.internal",
        "username": "deploy",
        "ssh_key_path": "~/.ssh/id_ed25519",
    }
    entry.update(fields)
    return entry


def http_api_entry(environment_id: str = "docker_local_001", **fields) -> dict:
    entry = {
        "environment_id": environment_id,
        "environment_type": "docker",
        "connection_method": "http_api",
        "host": "docker-host.internal",
        "port": 8082,
        "api_token": API_TOKEN,
    }
    entry.update(fields)
    return entry


def without(entry: dict, *keys: str) -> dict:
    return {key: value for key, value in entry.items() if key not in keys}


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


@pytest.fixture
def write_config(tmp_path):
    def write(data, name: str = "remote_environments.json") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
        return path

    return write


def run_import(path: Path, *options: str) -> Output:
    stdout, stderr = StringIO(), StringIO()
    call_command("import_environments", str(path), *options, stdout=stdout, stderr=stderr)
    return Output(stdout.getvalue(), stderr.getvalue())


def run_failing_import(path: Path, *options: str) -> tuple[CommandError, Output]:
    stdout, stderr = StringIO(), StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("import_environments", str(path), *options, stdout=stdout, stderr=stderr)
    return excinfo.value, Output(stdout.getvalue(), stderr.getvalue())


def import_data(write_config, data: dict, *options: str) -> Output:
    return run_import(write_config(data), *options)


# --- The README's example ---------------------------------------------------------------


def test_readme_example_shows_every_environment_field():
    shown = {key for entry in readme_example()["environments"] for key in entry}
    assert shown == set(ENVIRONMENT_FIELDS)


def test_readme_example_imports_with_every_field_stored_as_written(write_config):
    example = readme_example()

    run_import(write_config(example))

    assert RemoteEnvironment.objects.count() == len(example["environments"])
    for entry in example["environments"]:
        environment = RemoteEnvironment.objects.get(environment_id=entry["environment_id"])
        for key, value in entry.items():
            if key == "agent_token":  # write-only: kept as its hash
                assert environment.agent_token_hash == token_hash(value)
                continue
            assert getattr(environment, key) == value, f"{entry['environment_id']}.{key}"


def test_readme_example_secrets_read_back_decrypted(write_config):
    example = readme_example()
    secrets = [(entry["environment_id"], key, entry[key]) for entry in example["environments"] for key in entry]
    secrets = [(env_id, key, value) for env_id, key, value in secrets if key in SECRET_FIELDS]
    assert {key for _, key, _ in secrets} == set(SECRET_FIELDS)

    run_import(write_config(example))

    for environment_id, key, value in secrets:
        assert getattr(RemoteEnvironment.objects.get(environment_id=environment_id), key) == value


def test_readme_example_settings_blocks_are_stored_as_written(write_config):
    example = readme_example()

    run_import(write_config(example))

    stored = {block.name: block.values for block in SettingsBlock.objects.all()}
    assert stored == {name: example[name] for name in BLOCK_NAMES}


def test_readme_example_imports_warning_only_about_the_settings_not_used(write_config):
    example = readme_example()

    output = run_import(write_config(example))

    assert [line.partition(" (")[0] for line in output.stderr.splitlines()] == [
        "warning: ssh_settings.command_timeout: stored but not used",
        "warning: deployment_settings.log_level: stored but not used",
        "warning: notification_settings.email_notifications: stored but not used",
    ]
    assert f"{len(example['environments'])} created, 0 updated" in output.stdout


# --- Invalid files change nothing -------------------------------------------------------


def invalid_file() -> dict:
    return {
        "environments": [
            ssh_entry("good_one"),
            ssh_entry("bad_port", port=70000),
            without(ssh_entry("no_username"), "username"),
        ],
        "default_settings": {"timeout": 30},
    }


def test_invalid_file_exits_with_status_2(write_config):
    error, _ = run_failing_import(write_config(invalid_file()))

    assert error.returncode == 2
    assert "nothing was changed" in str(error)


def test_invalid_file_errors_name_each_environment_and_field(write_config):
    error, output = run_failing_import(write_config(invalid_file()))

    assert "environments[1] (bad_port).port" in output.stderr
    assert "environments[2] (no_username).username" in output.stderr
    assert "good_one" not in output.stderr
    assert "2 error(s)" in str(error)


def test_invalid_file_writes_nothing(write_config):
    import_data(
        write_config,
        {"environments": [ssh_entry("bad_port", description="before")], "default_settings": {"timeout": 60}},
    )
    before = snapshot()
    data = invalid_file()
    data["environments"].append(ssh_entry("new_and_valid"))

    run_failing_import(write_config(data))

    assert snapshot() == before


@pytest.mark.e2e
def test_command_process_exits_with_status_2_on_an_invalid_file(write_config, settings):
    path = write_config(invalid_file())

    result = manage(["import_environments", str(path)], process_environment())

    assert result.returncode == 2, result.stderr
    assert "environments[1] (bad_port).port" in result.stderr


# --- JSON types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("port", "22", "must be a whole number"),
        ("port", True, "must be a whole number"),
        ("timeout", 30.5, "must be a whole number"),
        ("enabled", "yes", "must be true or false"),
        ("username", 42, "must be a string"),
    ],
    ids=["port-as-string", "port-as-boolean", "timeout-as-float", "enabled-as-string", "username-as-number"],
)
def test_value_of_the_wrong_json_type_is_an_error_naming_the_field(write_config, field, value, problem):
    _, output = run_failing_import(write_config({"environments": [ssh_entry("typed", **{field: value})]}))

    assert f"environments[0] (typed).{field}: {problem}" in output.stderr
    assert not RemoteEnvironment.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("password", 987654321), ("api_token", ["token-in-a-list-xyz"]), ("password", {"secret": "pw-in-a-dict"})],
    ids=["password-as-number", "api-token-as-list", "password-as-object"],
)
def test_secret_of_the_wrong_type_is_reported_without_its_value(write_config, field, value):
    error, output = run_failing_import(write_config({"environments": [http_api_entry("typed", **{field: value})]}))

    assert f"environments[0] (typed).{field}: must be a string" in output.stderr
    for shown in (json.dumps(value), str(value), "987654321", "token-in-a-list-xyz", "pw-in-a-dict"):
        assert shown not in output.stderr
        assert shown not in str(error)


# --- Unknown keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "warning"),
    [
        ({"environments": [ssh_entry("known")], "version": 2}, "warning: version: unknown top-level key"),
        (
            {"environments": [ssh_entry("known", os_version="14.2")]},
            "warning: environments[0] (known).os_version: unknown field",
        ),
        (
            {"environments": [ssh_entry("known")], "ssh_settings": {"cipher": "aes256-ctr"}},
            "warning: ssh_settings.cipher: unknown setting",
        ),
    ],
    ids=["top-level", "in-an-environment", "in-a-settings-block"],
)
def test_unknown_key_is_a_warning_and_the_import_succeeds(write_config, data, warning):
    output = import_data(write_config, data)

    assert warning in output.stderr
    assert "error" not in output.stderr
    assert RemoteEnvironment.objects.filter(environment_id="known").exists()


@pytest.mark.parametrize(
    ("block", "key", "value", "reason"),
    [
        ("ssh_settings", "command_timeout", 60, "each environment's timeout bounds its run"),
        ("deployment_settings", "log_level", "DEBUG", "the LOG_LEVEL environment variable sets"),
        ("notification_settings", "email_notifications", True, "the platform sends no email"),
    ],
)
def test_a_setting_the_platform_does_not_use_is_a_warning_saying_what_governs_it(
    write_config, block, key, value, reason
):
    output = import_data(write_config, {"environments": [ssh_entry()], block: {key: value}})

    assert f"warning: {block}.{key}: stored but not used ({reason}" in output.stderr
    assert SettingsBlock.objects.get(name=block).values == {key: value}
    assert RemoteEnvironment.objects.filter(environment_id="linux_local_001").exists()


def test_unknown_setting_in_a_block_is_stored(write_config):
    import_data(write_config, {"environments": [], "ssh_settings": {"cipher": "aes256-ctr", "command_timeout": 60}})

    assert SettingsBlock.objects.get(name="ssh_settings").values == {"cipher": "aes256-ctr", "command_timeout": 60}


# --- Structure --------------------------------------------------------------------------


def test_duplicate_environment_id_in_the_file_is_an_error(write_config):
    data = {"environments": [ssh_entry("twice"), ssh_entry("twice", host="other.internal")]}

    error, output = run_failing_import(write_config(data))

    assert error.returncode == 2
    assert "environments[1] (twice).environment_id: 'twice' appears more than once" in output.stderr
    assert not RemoteEnvironment.objects.exists()


def test_a_file_with_two_environments_keys_exits_2_naming_the_key_and_prunes_nothing(write_config):
    import_data(write_config, {"environments": [ssh_entry("listed_first"), ssh_entry("listed_too")]})
    listed = ", ".join(json.dumps(ssh_entry(name)) for name in ("listed_first", "listed_too"))
    path = write_config(f'{{"environments": [{listed}], "environments": []}}')

    error, _ = run_failing_import(path, "--prune")

    assert error.returncode == 2
    assert str(error) == f"{path}: duplicate key 'environments': each key may appear only once in an object"
    assert set(RemoteEnvironment.objects.values_list("environment_id", flat=True)) == {"listed_first", "listed_too"}


def test_a_duplicate_key_inside_an_entry_is_named(write_config):
    entry = json.dumps(ssh_entry("twice_keyed"))[:-1] + ', "port": 2200, "port": 2201}'

    error, _ = run_failing_import(write_config(f'{{"environments": [{entry}]}}'))

    assert error.returncode == 2
    assert "duplicate key 'port'" in str(error)
    assert not RemoteEnvironment.objects.exists()


def test_a_file_nested_100000_deep_exits_2_naming_the_depth(write_config):
    path = write_config('{"environments": ' + "[" * 100_000)

    error, _ = run_failing_import(path)

    assert error.returncode == 2
    assert str(error) == f"{path}: nested deeper than 64 levels of arrays and objects"


def test_a_file_over_10_mib_exits_2_naming_the_limit(write_config):
    path = write_config('{"environments": [], "padding": "' + "x" * MAX_CONFIG_FILE_BYTES + '"}')

    error, _ = run_failing_import(path)

    assert error.returncode == 2
    assert str(error) == f"{path}: larger than 10 MiB, the limit for a config file"


def _at_most_a_gibibyte_of_memory() -> None:
    # Should the command ever read a device again, it fails in this child, not the machine.
    resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))


@pytest.mark.e2e
def test_a_device_is_refused_as_not_a_regular_file_with_status_2():
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "import_environments", "/dev/zero"],
        env=process_environment(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_at_most_a_gibibyte_of_memory,
    )

    assert result.returncode == 2, result.stderr[-2000:]
    assert "/dev/zero: not a regular file" in result.stderr


def test_a_description_with_a_nul_character_is_an_error_naming_the_field(write_config):
    _, output = run_failing_import(write_config({"environments": [ssh_entry("nul_text", description="a\x00b")]}))

    assert "environments[0] (nul_text).description: Control characters" in output.stderr
    assert not RemoteEnvironment.objects.exists()


def test_entry_without_environment_id_is_an_error(write_config):
    _, output = run_failing_import(write_config({"environments": [without(ssh_entry(), "environment_id")]}))

    assert "environments[0].environment_id: required" in output.stderr


@pytest.mark.parametrize(
    "data", [[ssh_entry()], {"environments": {"linux_local_001": ssh_entry()}}], ids=["list", "environments-as-object"]
)
def test_file_not_shaped_as_the_config_format_is_an_error(write_config, data):
    error, _ = run_failing_import(write_config(data))

    assert error.returncode == 2
    assert not RemoteEnvironment.objects.exists()


def test_file_that_is_not_json_exits_with_status_2(write_config):
    path = write_config('{"environments": [}')

    error, _ = run_failing_import(path)

    assert error.returncode == 2
    assert str(error).startswith(f"{path}: not valid JSON")


def test_missing_file_exits_with_status_2(tmp_path):
    path = tmp_path / "no-such-file.json"

    error, _ = run_failing_import(path)

    assert error.returncode == 2
    assert str(error) == f"{path}: cannot read the file: No such file or directory"


def test_invalid_settings_block_value_is_an_error_naming_the_setting(write_config):
    data = {"environments": [ssh_entry()], "deployment_settings": {"log_level": "LOUD"}}

    _, output = run_failing_import(write_config(data))

    assert "deployment_settings.log_level: must be one of" in output.stderr
    assert not RemoteEnvironment.objects.exists()


# --- Rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        (without(ssh_entry("env"), "username"), "username"),
        (without(ssh_entry("env"), "host"), "host"),
        (without(ssh_entry("env"), "ssh_key_path"), "ssh_key_path"),
        (without(http_api_entry("env"), "api_token"), "api_token"),
        (http_api_entry("env", api_token=""), "api_token"),
        (ssh_entry("env", port=0), "port"),
        (ssh_entry("env", port=65536), "port"),
        (ssh_entry("env", timeout=0), "timeout"),
        (ssh_entry("env", timeout=-5), "timeout"),
        (ssh_entry("env", environment_type="solaris_local"), "environment_type"),
        (ssh_entry("env", connection_method="telnet"), "connection_method"),
        (ssh_entry("has space"), "environment_id"),
        (
            {"environment_id": "env", "environment_type": "linux_local", "connection_method": "webhook", "host": "box"},
            "webhook_secret",
        ),
    ],
    ids=[
        "ssh-without-username",
        "ssh-without-host",
        "ssh-without-key-or-password",
        "http-api-without-token",
        "http-api-with-empty-token",
        "port-0",
        "port-65536",
        "timeout-0",
        "timeout-negative",
        "unknown-environment-type",
        "unknown-connection-method",
        "environment-id-with-a-space",
        "webhook-without-secret",
    ],
)
def test_entry_breaking_a_rule_is_an_error_naming_the_field(write_config, entry, field):
    error, output = run_failing_import(write_config({"environments": [entry]}))

    assert error.returncode == 2
    assert re.search(rf"^error: environments\[0\]( \([^)]*\))?\.{field}: ", output.stderr, re.MULTILINE), output.stderr
    assert not RemoteEnvironment.objects.exists()


@pytest.mark.parametrize(
    "entry",
    [
        without(ssh_entry("env", password=PASSWORD), "ssh_key_path"),
        ssh_entry("env", port=1, timeout=1),
        ssh_entry("env", port=65535),
        http_api_entry("env"),
        {
            "environment_id": "env",
            "environment_type": "linux_local",
            "connection_method": "webhook",
            "host": "box",
            "webhook_secret": "s",
        },
    ],
    ids=["ssh-with-password-only", "port-1-timeout-1", "port-65535", "http-api-with-token", "webhook-with-host"],
)
def test_entry_within_the_rules_is_accepted(write_config, entry):
    import_data(write_config, {"environments": [entry]})

    assert RemoteEnvironment.objects.filter(environment_id="env").exists()


# --- Upsert -----------------------------------------------------------------------------


def test_importing_again_with_a_changed_field_updates_it(write_config):
    import_data(write_config, {"environments": [ssh_entry("env", description="before")]})

    output = import_data(write_config, {"environments": [ssh_entry("env", description="after")]})

    assert "update env" in output.stdout.splitlines()
    assert "0 created, 1 updated, 0 unchanged" in output.stdout
    assert RemoteEnvironment.objects.get(environment_id="env").description == "after"


def test_importing_the_same_file_again_reports_it_unchanged_and_saves_nothing(write_config):
    path = write_config({"environments": [ssh_entry("env", password=PASSWORD, timeout=60)]})
    run_import(path)
    before = snapshot()

    output = run_import(path)

    assert "0 created, 0 updated, 1 unchanged, 0 deleted" in output.stdout
    assert "update env" not in output.stdout
    assert snapshot() == before


def test_entry_without_password_keeps_the_stored_password(write_config):
    import_data(write_config, {"environments": [without(ssh_entry("env", password=PASSWORD), "ssh_key_path")]})

    output = import_data(write_config, {"environments": [without(ssh_entry("env"), "ssh_key_path")]})

    assert RemoteEnvironment.objects.get(environment_id="env").password == PASSWORD
    assert "1 unchanged" in output.stdout


def test_entry_without_api_token_keeps_the_stored_api_token(write_config):
    import_data(write_config, {"environments": [http_api_entry("env", api_token=API_TOKEN)]})

    import_data(write_config, {"environments": [without(http_api_entry("env"), "api_token")]})

    assert RemoteEnvironment.objects.get(environment_id="env").api_token == API_TOKEN


def test_entry_without_enabled_keeps_the_stored_enabled_flag(write_config):
    import_data(write_config, {"environments": [ssh_entry("env", enabled=False)]})

    import_data(write_config, {"environments": [ssh_entry("env")]})

    assert RemoteEnvironment.objects.get(environment_id="env").enabled is False


def test_entry_tags_are_stored_in_their_order(write_config):
    import_data(write_config, {"environments": [ssh_entry("env", tags=["mac", "team-a"])]})

    assert RemoteEnvironment.objects.get(environment_id="env").tags == ["mac", "team-a"]


def test_importing_again_with_changed_tags_updates_them(write_config):
    import_data(write_config, {"environments": [ssh_entry("env", tags=["mac"])]})

    output = import_data(write_config, {"environments": [ssh_entry("env", tags=["mac", "flaky"])]})

    assert "update env" in output.stdout.splitlines()
    assert RemoteEnvironment.objects.get(environment_id="env").tags == ["mac", "flaky"]


def test_entry_without_tags_keeps_the_stored_tags(write_config):
    """A file written before tags existed must not wipe the tags an operator set since."""
    import_data(write_config, {"environments": [ssh_entry("env", tags=["mac"])]})

    output = import_data(write_config, {"environments": [ssh_entry("env")]})

    assert RemoteEnvironment.objects.get(environment_id="env").tags == ["mac"]
    assert "1 unchanged" in output.stdout


def test_entry_with_an_empty_tag_list_clears_the_stored_tags(write_config):
    import_data(write_config, {"environments": [ssh_entry("env", tags=["mac"])]})

    import_data(write_config, {"environments": [ssh_entry("env", tags=[])]})

    assert RemoteEnvironment.objects.get(environment_id="env").tags == []


@pytest.mark.parametrize(
    ("tags", "problem"),
    [
        ("mac", "must be a list of tags"),
        ({}, "must be a list of tags"),
        ([7], "every tag must be a string (got 7)"),
        (["Mac"], "'Mac' is not a tag"),
        (["mac", "mac"], "a tag may appear once (repeated: mac)"),
        ([f"t{i}" for i in range(21)], "at most 20 tags (got 21)"),
    ],
    ids=["string", "object", "number", "uppercase", "duplicate", "21-tags"],
)
def test_entry_tags_breaking_the_rule_are_an_error_naming_the_entry_and_writing_nothing(write_config, tags, problem):
    good = ssh_entry("good", tags=["mac"])
    error, output = run_failing_import(write_config({"environments": [good, ssh_entry("env", tags=tags)]}))

    assert error.returncode == 2
    assert f"error: environments[1] (env).tags: {problem}" in output.stderr, output.stderr
    assert not RemoteEnvironment.objects.exists()


def test_entry_without_an_ordinary_field_resets_it_to_its_default(write_config):
    import_data(write_config, {"environments": [ssh_entry("env", port=2222, description="old")]})

    import_data(write_config, {"environments": [ssh_entry("env")]})

    environment = RemoteEnvironment.objects.get(environment_id="env")
    assert (environment.port, environment.description) == (22, "")


@pytest.fixture
def stored_for_dry_run(write_config):
    import_data(
        write_config,
        {
            "environments": [ssh_entry("changed", description="before"), ssh_entry("not_in_file")],
            "default_settings": {"timeout": 60},
        },
    )
    return {
        "environments": [ssh_entry("changed", description="after"), ssh_entry("new")],
        "default_settings": {"timeout": 90},
    }


def test_dry_run_writes_nothing(write_config, stored_for_dry_run):
    before = snapshot()

    import_data(write_config, stored_for_dry_run, "--dry-run", "--prune")

    assert snapshot() == before


def test_dry_run_reports_what_would_change(write_config, stored_for_dry_run):
    output = import_data(write_config, stored_for_dry_run, "--dry-run", "--prune")

    lines = output.stdout.splitlines()
    assert {"would create new", "would update changed", "would delete not_in_file"} <= set(lines)
    assert lines[-1] == "dry run: 1 created, 1 updated, 0 unchanged, 1 deleted"


def test_prune_deletes_environments_not_in_the_file(write_config):
    import_data(write_config, {"environments": [ssh_entry("kept"), ssh_entry("gone")]})

    output = import_data(write_config, {"environments": [ssh_entry("kept")]}, "--prune")

    assert "delete gone" in output.stdout.splitlines()
    assert list(RemoteEnvironment.objects.values_list("environment_id", flat=True)) == ["kept"]


def test_without_prune_environments_not_in_the_file_are_kept(write_config):
    import_data(write_config, {"environments": [ssh_entry("kept"), ssh_entry("also_kept")]})

    output = import_data(write_config, {"environments": [ssh_entry("kept")]})

    assert "0 deleted" in output.stdout
    assert set(RemoteEnvironment.objects.values_list("environment_id", flat=True)) == {"kept", "also_kept"}


# --- Settings blocks as defaults --------------------------------------------------------


def test_default_settings_timeout_applies_to_entries_without_timeout(write_config):
    data = {
        "environments": [ssh_entry("no_timeout"), ssh_entry("own_timeout", timeout=600)],
        "default_settings": {"timeout": 45},
    }

    import_data(write_config, data)

    timeouts = dict(RemoteEnvironment.objects.values_list("environment_id", "timeout"))
    assert timeouts == {"no_timeout": 45, "own_timeout": 600}


def test_stored_default_timeout_applies_when_the_file_has_no_default_settings(write_config):
    import_data(write_config, {"environments": [], "default_settings": {"timeout": 75}})

    import_data(write_config, {"environments": [ssh_entry("no_timeout")]})

    assert RemoteEnvironment.objects.get(environment_id="no_timeout").timeout == 75


def test_ssh_default_key_path_applies_to_ssh_entries_with_neither_key_nor_password(write_config):
    data = {
        "environments": [without(ssh_entry("keyless"), "ssh_key_path")],
        "ssh_settings": {"default_key_path": "~/.ssh/deploy"},
    }

    import_data(write_config, data)

    assert RemoteEnvironment.objects.get(environment_id="keyless").ssh_key_path == "~/.ssh/deploy"


def test_ssh_default_key_path_leaves_entries_with_a_key_or_password_alone(write_config):
    data = {
        "environments": [
            ssh_entry("own_key", ssh_key_path="~/.ssh/own"),
            without(ssh_entry("password_only", password=PASSWORD), "ssh_key_path"),
        ],
        "ssh_settings": {"default_key_path": "~/.ssh/deploy"},
    }

    import_data(write_config, data)

    key_paths = dict(RemoteEnvironment.objects.values_list("environment_id", "ssh_key_path"))
    assert key_paths == {"own_key": "~/.ssh/own", "password_only": ""}


# --- Host key approval ------------------------------------------------------------------

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOO6/wqb4OSnbUGEUbiOZCt8iKLfjR5dTYcYuVfr04gB"


def test_a_host_key_the_file_brings_is_stamped_approved_now_by_no_user(write_config):
    import_data(write_config, {"environments": [ssh_entry(host_key=HOST_KEY)]})

    environment = RemoteEnvironment.objects.get()
    assert (environment.host_key, environment.host_key_approved_by) == (HOST_KEY, None)
    assert environment.host_key_approved_at is not None


def test_reimporting_the_same_host_key_keeps_when_it_was_approved(write_config):
    import_data(write_config, {"environments": [ssh_entry(host_key=HOST_KEY)]})
    approved_at = RemoteEnvironment.objects.get().host_key_approved_at

    import_data(write_config, {"environments": [ssh_entry(host_key=HOST_KEY, description="again")]})

    environment = RemoteEnvironment.objects.get()
    assert (environment.description, environment.host_key_approved_at) == ("again", approved_at)


def test_a_file_clearing_the_host_key_clears_its_approval(write_config):
    import_data(write_config, {"environments": [ssh_entry(host_key=HOST_KEY)]})

    import_data(write_config, {"environments": [ssh_entry(host_key="")]})

    environment = RemoteEnvironment.objects.get()
    assert (environment.host_key, environment.host_key_approved_at) == ("", None)


# --- Where secrets go -------------------------------------------------------------------


def test_an_entry_moving_a_stored_token_to_a_new_endpoint_without_it_is_refused(write_config):
    import_data(write_config, {"environments": [http_api_entry()]})
    before = snapshot()

    moved = without(http_api_entry(api_endpoint="http://127.0.0.1:9/listener"), "api_token")
    _, output = run_failing_import(write_config({"environments": [moved]}))

    assert "environments[0] (docker_local_001).api_token" in output.stderr
    assert "never sent to a new address" in output.stderr
    assert snapshot() == before


def test_an_entry_moving_a_token_to_a_new_endpoint_with_it_is_imported(write_config):
    import_data(write_config, {"environments": [http_api_entry()]})

    import_data(write_config, {"environments": [http_api_entry(api_endpoint="http://127.0.0.1:9/agent")]})

    environment = RemoteEnvironment.objects.get()
    assert (environment.api_endpoint, environment.api_token) == ("http://127.0.0.1:9/agent", API_TOKEN)


# --- Detached runs: detach and ssh_settings.run_directory ---------------------------------


@pytest.mark.parametrize("detach", [True, False, None])
def test_an_entry_stores_detach_true_false_or_null(write_config, detach):
    import_data(write_config, {"environments": [ssh_entry("env", detach=detach)]})

    assert RemoteEnvironment.objects.get(environment_id="env").detach is detach


def test_an_entry_without_detach_keeps_the_stored_override(write_config):
    import_data(write_config, {"environments": [ssh_entry("env", detach=False)]})

    output = import_data(write_config, {"environments": [ssh_entry("env")]})

    assert "0 created, 0 updated, 1 unchanged" in output.stdout
    assert RemoteEnvironment.objects.get(environment_id="env").detach is False


@pytest.mark.parametrize("value", ["yes", 1, "true", [], {}], ids=["yes", "one", "string-true", "list", "object"])
def test_a_detach_that_is_not_true_false_or_null_is_an_error_naming_the_entry_and_changes_nothing(write_config, value):
    import_data(write_config, {"environments": [ssh_entry("env", detach=True, description="before")]})
    before = snapshot()

    error, output = run_failing_import(
        write_config({"environments": [ssh_entry("env", detach=value, description="after")]})
    )

    assert error.returncode == 2
    assert "error: environments[0] (env).detach: must be true, false or null" in output.stderr
    assert snapshot() == before


@pytest.mark.parametrize(
    "block",
    [{"detach": False, "run_directory": "~/x"}, {"detach": True, "run_directory": "/abs"}, {"run_directory": ""}],
)
def test_ssh_settings_detach_and_run_directory_are_stored(write_config, block):
    import_data(write_config, {"environments": [ssh_entry()], "ssh_settings": block})

    assert SettingsBlock.objects.get(name="ssh_settings").values == block


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("detach", "yes", "must be true or false"),
        ("run_directory", "../x", "absolute path"),
        ("run_directory", "~/runs/../../x", "'..'"),
        ("run_directory", "rel/x", "absolute path"),
        ("run_directory", "/runs\nrm -rf /", "control characters"),
        ("run_directory", "/" + "a" * 4999, "1024"),
        ("run_directory", 5, "must be a string"),
    ],
    ids=["detach-yes", "dot-dot", "dot-dot-inside", "relative", "control-character", "5000-characters", "number"],
)
def test_a_bad_ssh_setting_for_detached_runs_is_an_error_naming_it_and_changes_nothing(
    write_config, key, value, problem
):
    import_data(write_config, {"environments": [ssh_entry("env")], "ssh_settings": {"run_directory": "/runs"}})
    before = snapshot()

    error, output = run_failing_import(
        write_config({"environments": [ssh_entry("env", description="changed")], "ssh_settings": {key: value}})
    )

    assert error.returncode == 2
    (line,) = [line for line in output.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: ssh_settings.{key}: ") and problem in line, line
    assert len(line) < 600  # a 5000-character value is not echoed whole
    assert snapshot() == before
