"""Planning an import (environments.config.plan_import) without writing anything."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from environments.config import ConfigError, DeploymentDefaults, plan_import
from environments.models import RemoteEnvironment

pytestmark = pytest.mark.django_db


def entry(environment_id: str) -> dict:
    return {
        "environment_id": environment_id,
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": "127.0.0.1",
        "username": "deploy",
        "ssh_key_path": "/keys/id_ed25519",
    }


def queries_to_plan(count: int) -> int:
    RemoteEnvironment.objects.all().delete()
    ids = [f"env_{n:03}" for n in range(count)]
    RemoteEnvironment.objects.bulk_create(RemoteEnvironment(**entry(environment_id)) for environment_id in ids)
    data = {"environments": [{**entry(environment_id), "description": "changed"} for environment_id in ids]}
    with CaptureQueriesContext(connection) as queries:
        plan = plan_import(data)
    assert len(plan.update) == count
    return len(queries)


def test_planning_an_import_of_existing_environments_takes_the_same_queries_for_any_number():
    assert queries_to_plan(20) == queries_to_plan(1)


# --- Bounds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "key", "value", "limit"),
    [
        ("default_settings", "timeout", 10**12, "from 1 to 604800 seconds (7 days)"),
        ("default_settings", "retry_count", 10**6, "from 0 to 100"),
        ("default_settings", "retry_delay", 1e12, "from 0 to 3600 seconds"),
        ("default_settings", "retry_delay", float("nan"), "from 0 to 3600 seconds"),
        ("default_settings", "health_check_timeout", 1e12, "greater than 0 to 300 seconds"),
        ("default_settings", "health_check_retries", 10**6, "from 0 to 100"),
        ("ssh_settings", "connection_timeout", float("inf"), "greater than 0 to 300 seconds"),
        ("ssh_settings", "command_timeout", 10**12, "from 1 to 604800 seconds (7 days)"),
        ("deployment_settings", "parallel_limit", 10**9, "from 1 to 10000"),
    ],
)
def test_a_settings_block_number_beyond_its_bound_is_an_error_naming_the_setting_and_the_limit(
    block, key, value, limit
):
    with pytest.raises(ConfigError) as raised:
        plan_import({"environments": [entry("bounded")], block: {key: value}})

    assert any(error.startswith(f"{block}.{key}: must be") and limit in error for error in raised.value.errors)


@pytest.mark.parametrize(
    ("field", "value", "limit"), [("timeout", 10**12, "604800 seconds (7 days)"), ("port", 65536, "65535")]
)
def test_an_environment_number_beyond_its_bound_is_an_error_naming_the_field_and_the_limit(field, value, limit):
    with pytest.raises(ConfigError) as raised:
        plan_import({"environments": [{**entry("bounded"), field: value}]})

    assert any(
        error.startswith(f"environments[0] (bounded).{field}:") and limit in error for error in raised.value.errors
    )


# --- Detached runs: the defaults a coordination snapshots ----------------------------------


def test_the_defaults_take_detach_and_run_directory_from_ssh_settings():
    defaults = DeploymentDefaults.from_blocks({"ssh_settings": {"detach": False, "run_directory": "~/pa-runs"}})

    assert (defaults.detach, defaults.run_directory) == (False, "~/pa-runs")


def test_without_ssh_settings_runs_are_detached_under_the_default_run_directory():
    defaults = DeploymentDefaults.from_blocks({})

    assert (defaults.detach, defaults.run_directory) == (True, "")


def test_the_snapshot_carries_detach_and_run_directory():
    defaults = DeploymentDefaults.from_blocks({"ssh_settings": {"detach": False, "run_directory": "/srv/runs"}})

    restored = DeploymentDefaults.from_json(defaults.as_json())

    assert (restored.detach, restored.run_directory) == (False, "/srv/runs")
    assert restored == defaults


def test_a_snapshot_from_before_detached_runs_reads_as_detached_under_the_default_run_directory():
    old = {
        name: value for name, value in DeploymentDefaults().as_json().items() if name not in ("detach", "run_directory")
    }

    restored = DeploymentDefaults.from_json(old)

    assert (restored.detach, restored.run_directory) == (True, "")


@pytest.mark.parametrize(
    ("block", "override", "detached"),
    [(True, None, True), (False, None, False), (True, False, False), (False, True, True)],
)
def test_an_environments_own_detach_overrides_ssh_settings(block, override, detached):
    assert DeploymentDefaults(detach=block).detach_for(override) is detached


@pytest.mark.parametrize(("detach", "run_directory"), [("no", "../x"), (0, "/runs\n"), (None, "/" + "a" * 5000)])
def test_a_stored_value_that_escaped_validation_falls_back_to_the_default(detach, run_directory):
    defaults = DeploymentDefaults.from_json({"detach": detach, "run_directory": run_directory})

    assert (defaults.detach, defaults.run_directory) == (True, "")
