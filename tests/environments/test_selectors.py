"""Which environments a deployment or a check takes: one rule for every caller."""

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError

from environments.connectors import CONNECTORS
from environments.models import SECRET_FIELDS, ConnectionMethod, RemoteEnvironment
from environments.selectors import environments_for_deployment, environments_for_scheduled_health_check

pytestmark = pytest.mark.django_db


def make_environment(environment_id: str, **fields) -> RemoteEnvironment:
    values = {
        "environment_type": "docker",
        "connection_method": "http_api",
        "host": "127.0.0.1",
        "port": 8080,
        "api_token": f"token-of-{environment_id}",
    }
    values.update(fields)
    return RemoteEnvironment.objects.create(environment_id=environment_id, **values)


def selection_error(**kwargs) -> dict:
    with pytest.raises(ValidationError) as caught:
        environments_for_deployment(**kwargs)
    return caught.value.message_dict


def ids(environments: list[RemoteEnvironment]) -> list[str]:
    return [environment.environment_id for environment in environments]


def test_no_ids_selects_every_enabled_environment():
    make_environment("b")
    make_environment("a")
    make_environment("off", enabled=False)
    assert ids(environments_for_deployment()) == ["a", "b"]


def test_no_ids_and_no_enabled_environment_is_an_error():
    make_environment("off", enabled=False)
    assert selection_error() == {"environments": ["there is no enabled environment to deploy to"]}


def test_named_environments_come_in_the_given_order_each_once():
    for environment_id in ("a", "b", "c"):
        make_environment(environment_id)
    assert ids(environments_for_deployment(environment_ids=["c", "a", "c", "b", "a"])) == ["c", "a", "b"]


def test_an_empty_list_is_an_error():
    make_environment("a")
    assert selection_error(environment_ids=[]) == {"environments": ["name at least one environment"]}


def test_unknown_ids_are_an_error_naming_them():
    make_environment("a")
    error = selection_error(environment_ids=["a", "ghost", "phantom"])
    assert error == {"environments": ["unknown environment(s): ghost, phantom"]}


def test_a_named_disabled_environment_is_an_error_naming_it():
    make_environment("a")
    make_environment("off", enabled=False)
    assert selection_error(environment_ids=["a", "off"]) == {"environments": ["disabled environment(s): off"]}


def test_selecting_environments_decrypts_no_secret(settings):
    make_environment("a", password="pw", webhook_secret="whsec")  # noqa: S106 (test values)
    # Under another encryption key every stored secret is unreadable: reading one would raise.
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    (environment,) = environments_for_deployment(environment_ids=["a"])
    assert environment.get_deferred_fields() >= set(SECRET_FIELDS)
    assert ids(environments_for_deployment()) == ["a"]


def test_every_connection_method_a_model_may_hold_has_a_connector():
    # Why the selector does not check for "connection method not supported yet".
    assert set(ConnectionMethod.values) == set(CONNECTORS)


def test_the_scheduled_health_check_takes_enabled_environments_with_a_health_check_url():
    make_environment("checked", health_check_url="http://127.0.0.1:1/health")
    make_environment("no-url")
    make_environment("off", enabled=False, health_check_url="http://127.0.0.1:1/health")
    assert ids(environments_for_scheduled_health_check()) == ["checked"]


def test_the_scheduled_health_check_decrypts_no_secret(settings):
    make_environment("checked", health_check_url="http://127.0.0.1:1/health")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    (environment,) = environments_for_scheduled_health_check()
    assert environment.get_deferred_fields() >= set(SECRET_FIELDS)
