"""The model's own rules for an environment: its identifiers, and where its secrets may go."""

import pytest
from django.core.exceptions import ValidationError

from environments.models import RemoteEnvironment
from tests.factories import make_environment

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("field", "value"), [("environment_id", "linux_001\n"), ("host", "127.0.0.1\n")])
def test_an_identifier_with_a_trailing_newline_is_refused(field, value):
    """`$` in a pattern lets a final newline through; a newline in a host or an id would
    reach logs and shell commands."""
    values = {
        "environment_id": "linux_001",
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": "127.0.0.1",
        "username": "deploy",
        "ssh_key_path": "/keys/id_ed25519",
        field: value,
    }
    with pytest.raises(ValidationError) as caught:
        RemoteEnvironment(**values).full_clean(validate_unique=False)
    assert field in caught.value.message_dict


# --- A stored secret is never sent to a new address ----------------------------------------


def stored(**fields) -> RemoteEnvironment:
    """An environment as a write reads it back from the database."""
    return RemoteEnvironment.objects.get(pk=make_environment("env_one", **fields).pk)


HTTP_API = {
    "connection_method": "http_api",
    "api_endpoint": "http://127.0.0.1:8082/api/deploy/init",
    "api_token": "t-1",
}


@pytest.mark.parametrize(
    ("fields", "change", "secret"),
    [
        (HTTP_API, {"api_endpoint": "http://127.0.0.1:9999/steal"}, "api_token"),
        ({**HTTP_API, "api_endpoint": ""}, {"host": "127.0.0.2"}, "api_token"),
        ({**HTTP_API, "api_endpoint": ""}, {"port": 9999}, "api_token"),
        (
            {"connection_method": "webhook", "webhook_secret": "whsec_c2VjcmV0"},
            {"webhook_url": "http://127.0.0.1:1/"},
            "webhook_secret",
        ),
        ({"password": "pw-1", "ssh_key_path": ""}, {"host": "127.0.0.2"}, "password"),
        ({"password": "pw-1", "ssh_key_path": ""}, {"port": 2200}, "password"),
    ],
)
def test_changing_where_a_stored_secret_goes_without_giving_it_again_is_refused_naming_it(fields, change, secret):
    environment = stored(**fields)
    for name, value in change.items():
        setattr(environment, name, value)

    with pytest.raises(ValidationError) as excinfo:
        environment.full_clean()

    assert secret in excinfo.value.message_dict
    assert "never sent to a new address" in excinfo.value.message_dict[secret][0]


def test_a_secret_given_again_in_the_same_change_may_go_to_the_new_address():
    environment = stored(**HTTP_API)
    environment.api_endpoint = "http://127.0.0.1:9999/api/deploy/init"
    environment.give_secret("api_token", "t-1")  # the same value, typed again

    environment.full_clean()


def test_a_change_that_keeps_every_secrets_address_needs_no_secret_again():
    environment = stored(**{**HTTP_API, "host": "127.0.0.1"})
    environment.host = "127.0.0.2"  # the token goes to api_endpoint, which did not change
    environment.description = "moved"

    environment.full_clean()


@pytest.mark.parametrize("field", ["api_endpoint", "webhook_url", "health_check_url"])
@pytest.mark.parametrize("character", ["\x00", "\x1b"])
def test_a_url_with_a_control_character_is_refused_naming_the_field(field, character):
    """URLValidator lets NUL and ESC through; PostgreSQL refuses NUL in a write."""
    values = {
        "environment_id": "api_001",
        "environment_type": "docker",
        "connection_method": "http_api",
        "api_token": "token-value",
        "api_endpoint": "http://127.0.0.1:8082/api/deploy/init",
        field: f"http://127.0.0.1:8082/{character}x",
    }
    with pytest.raises(ValidationError) as caught:
        RemoteEnvironment(**values).full_clean(validate_unique=False)
    assert field in caught.value.message_dict
