"""Editing a settings block in the admin follows the config file's rules: no way around
the bounds, the bounded JSON reader or the block names."""

import pytest

from environments.config import DeploymentDefaults
from environments.models import SettingsBlock

pytestmark = pytest.mark.django_db

ADD = "/admin/environments/settingsblock/add/"


def save(operator, name: str, values: str):
    return operator.post(ADD, {"name": name, "values": values})


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ('{"retry_delay": 1e400}', "retry_delay"),
        ('{"retry_delay": ' + "9" * 400 + "}", "retry_delay"),
        ('{"retry_count": "abc"}', "retry_count"),
        ('{"timeout": 1000000000000}', "timeout"),
        ('{"retry_count": 1, "retry_count": 2}', "retry_count"),
        ("[" * 100000, "deeper"),
    ],
)
def test_a_block_the_config_file_would_refuse_is_refused_naming_the_problem(operator, values, problem):
    response = save(operator, "default_settings", values)

    assert response.status_code == 200  # the form again, with its errors
    assert problem in response.content.decode()
    assert not SettingsBlock.objects.exists()


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ('{"detach": "yes"}', "ssh_settings.detach: must be true or false"),
        ('{"run_directory": "rel/x"}', "run_directory"),
    ],
)
def test_an_ssh_settings_block_with_a_bad_detach_or_run_directory_is_refused(operator, values, problem):
    response = save(operator, "ssh_settings", values)

    assert response.status_code == 200
    assert problem in response.content.decode()
    assert not SettingsBlock.objects.exists()


def test_an_ssh_settings_block_with_detach_and_a_run_directory_is_saved(operator):
    response = save(operator, "ssh_settings", '{"detach": false, "run_directory": "~/pa runs"}')

    assert response.status_code == 302
    assert SettingsBlock.objects.get(name="ssh_settings").values == {"detach": False, "run_directory": "~/pa runs"}


def test_a_block_name_the_platform_does_not_know_is_refused(operator):
    response = save(operator, "defaults_settings", '{"retry_count": 1}')

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not SettingsBlock.objects.exists()


def test_a_valid_block_is_saved(operator):
    response = save(operator, "default_settings", '{"retry_count": 1, "retry_delay": 2.5}')

    assert response.status_code == 302
    assert SettingsBlock.objects.get(name="default_settings").values == {"retry_count": 1, "retry_delay": 2.5}


@pytest.mark.parametrize("bad", ["abc", 10**400, None, [1]])
def test_a_stored_block_value_that_is_no_number_falls_back_to_the_default_not_the_maximum(bad):
    defaults = DeploymentDefaults.from_blocks(
        {"default_settings": {"retry_delay": bad, "retry_count": bad}, "deployment_settings": {"parallel_limit": bad}}
    )

    assert defaults.retry_count == (100 if bad == 10**400 else DeploymentDefaults.retry_count)
    assert defaults.retry_delay == (3600.0 if bad == 10**400 else DeploymentDefaults.retry_delay)
    assert defaults.parallel_limit == (10000 if bad == 10**400 else DeploymentDefaults.parallel_limit)
