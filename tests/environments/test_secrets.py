"""Secrets (`password`, `api_token`) are encrypted at rest with FIELD_ENCRYPTION_KEY, fail
loudly under the wrong key, and never show in an environment's repr or str."""

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from environments.fields import SecretDecryptionError
from environments.models import RemoteEnvironment
from powerautomation.settings import env_list

# Test values, not credentials.
PASSWORD = "secrets-test-password-71b4"  # noqa: S105
API_TOKEN = "secrets-test-token-2e9d"  # noqa: S105

pytestmark = pytest.mark.django_db


def new_key() -> str:
    return Fernet.generate_key().decode()


def create_environment(**fields) -> RemoteEnvironment:
    values = {
        "environment_id": "windows_local_001",
        "environment_type": "windows_local",
        "connection_method": "ssh",
        "host": "win-build.internal",
        "username": "administrator",
        "password": PASSWORD,
        "api_token": API_TOKEN,
    }
    values.update(fields)
    environment = RemoteEnvironment(**values)
    environment.full_clean()
    environment.save()
    return environment


def raw_column(environment: RemoteEnvironment, column: str) -> str:
    assert column in ("password", "api_token")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM environments_remoteenvironment WHERE id = %s", [environment.pk])  # noqa: S608
        return cursor.fetchone()[0]


@pytest.mark.parametrize(("column", "plaintext"), [("password", PASSWORD), ("api_token", API_TOKEN)])
def test_secret_is_stored_encrypted(settings, column, plaintext):
    key = new_key()
    settings.FIELD_ENCRYPTION_KEYS = [key]
    environment = create_environment()

    stored = raw_column(environment, column)

    assert stored
    assert plaintext not in stored
    assert Fernet(key).decrypt(stored.encode()).decode() == plaintext


def test_secret_is_stored_encrypted_under_the_key_derived_from_secret_key(settings):
    settings.FIELD_ENCRYPTION_KEYS = []
    environment = create_environment()

    stored = raw_column(environment, "password")

    assert PASSWORD not in stored
    assert RemoteEnvironment.objects.get(pk=environment.pk).password == PASSWORD


def test_empty_secret_is_stored_empty():
    environment = create_environment(password="", ssh_key_path="~/.ssh/id_ed25519")

    assert raw_column(environment, "password") == ""
    assert RemoteEnvironment.objects.get(pk=environment.pk).password == ""


def test_secret_reads_back_decrypted():
    environment = create_environment()

    stored = RemoteEnvironment.objects.get(pk=environment.pk)

    assert (stored.password, stored.api_token) == (PASSWORD, API_TOKEN)


def test_reading_a_secret_with_a_different_key_raises_instead_of_returning_ciphertext(settings):
    settings.FIELD_ENCRYPTION_KEYS = [new_key()]
    environment = create_environment()
    ciphertext = raw_column(environment, "password")
    settings.FIELD_ENCRYPTION_KEYS = [new_key()]

    with pytest.raises(SecretDecryptionError) as excinfo:
        RemoteEnvironment.objects.get(pk=environment.pk)

    assert ciphertext not in str(excinfo.value)


def test_reading_a_secret_after_the_secret_key_changed_raises(settings):
    settings.FIELD_ENCRYPTION_KEYS = []
    environment = create_environment()
    settings.SECRET_KEY = settings.SECRET_KEY + "-changed"

    with pytest.raises(SecretDecryptionError):
        RemoteEnvironment.objects.get(pk=environment.pk)


def test_rotated_keys_read_a_secret_written_with_the_old_key(settings, monkeypatch):
    old, new = new_key(), new_key()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    environment = create_environment()
    monkeypatch.setenv("FIELD_ENCRYPTION_KEY", f"{new},{old}")
    settings.FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEY", [])

    stored = RemoteEnvironment.objects.get(pk=environment.pk)

    assert (stored.password, stored.api_token) == (PASSWORD, API_TOKEN)


def test_saving_under_rotated_keys_encrypts_with_the_new_key(settings):
    old, new = new_key(), new_key()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    environment = create_environment()
    settings.FIELD_ENCRYPTION_KEYS = [new, old]

    RemoteEnvironment.objects.get(pk=environment.pk).save()

    assert Fernet(new).decrypt(raw_column(environment, "password").encode()).decode() == PASSWORD
    settings.FIELD_ENCRYPTION_KEYS = [new]
    assert RemoteEnvironment.objects.get(pk=environment.pk).password == PASSWORD


@pytest.mark.parametrize(
    "keys",
    [["not-a-fernet-key"], [Fernet.generate_key().decode(), "not-a-fernet-key"], ["c2hvcnQ="]],
    ids=["garbage", "good-then-garbage", "too-short"],
)
def test_invalid_encryption_key_raises_improperly_configured_on_save(settings, keys):
    settings.FIELD_ENCRYPTION_KEYS = keys

    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEY"):
        create_environment()


def test_invalid_encryption_key_raises_improperly_configured_on_read(settings):
    environment = create_environment()
    settings.FIELD_ENCRYPTION_KEYS = ["not-a-fernet-key"]

    with pytest.raises(ImproperlyConfigured, match="FIELD_ENCRYPTION_KEY"):
        RemoteEnvironment.objects.get(pk=environment.pk)


def test_repr_and_str_never_contain_a_secret():
    environment = create_environment()
    stored = RemoteEnvironment.objects.get(pk=environment.pk)

    for instance in (environment, stored):
        for text in (repr(instance), str(instance)):
            assert PASSWORD not in text
            assert API_TOKEN not in text
