"""Writes to environments save only what they own: a health result or a host key approval
recorded between reading an environment and saving it survives the save."""

import contextlib

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection
from django.db.models.signals import pre_save

from environments.agent_tokens import new_token, token_hash
from environments.models import Health, RemoteEnvironment, SettingsBlock
from environments.services import (
    environment_pin_host_key,
    environment_prepare,
    environment_record_health,
    environment_save,
    environment_set_agent_token,
    environments_import,
)

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOO6/wqb4OSnbUGEUbiOZCt8iKLfjR5dTYcYuVfr04gB"

pytestmark = pytest.mark.django_db


@pytest.fixture
def environment() -> RemoteEnvironment:
    return RemoteEnvironment.objects.create(
        environment_id="linux_001",
        environment_type="linux_local",
        connection_method="ssh",
        host="127.0.0.1",
        username="deploy",
        ssh_key_path="/keys/id_ed25519",
    )


@pytest.fixture
def approver():
    return get_user_model().objects.create_user(username="approver")


def record_a_health_result(environment: RemoteEnvironment) -> None:
    environment_record_health(environment_pk=environment.pk, healthy=True, detail="200 OK", latency_ms=12)


def approve_a_host_key(environment: RemoteEnvironment, user) -> None:
    environment_pin_host_key(environment=RemoteEnvironment.objects.get(pk=environment.pk), key=HOST_KEY, user=user)


@contextlib.contextmanager
def while_the_import_saves(write):
    """Run `write` once, just before the import saves its first environment (after it has
    read them all): what a concurrent request or worker does in that window."""
    done = []

    def receiver(sender, instance, **kwargs):
        if not done:
            done.append(instance)
            write()

    pre_save.connect(receiver, sender=RemoteEnvironment)
    try:
        yield
    finally:
        pre_save.disconnect(receiver, sender=RemoteEnvironment)
    assert done, "the import saved nothing"


def import_file(**fields) -> None:
    entry = {
        "environment_id": "linux_001",
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": "127.0.0.1",
        "username": "deploy",
        "ssh_key_path": "/keys/id_ed25519",
        **fields,
    }
    environments_import(data={"environments": [entry]})


def test_an_api_write_keeps_a_health_result_recorded_after_it_read_the_environment(environment):
    prepared = environment_prepare(data={"description": "renamed"}, current=environment, partial=True)
    record_a_health_result(environment)
    environment_save(environment=prepared)

    environment.refresh_from_db()
    assert (environment.description, environment.last_health) == ("renamed", Health.HEALTHY)
    assert (environment.last_health_detail, environment.last_health_latency_ms) == ("200 OK", 12)


def test_an_api_write_keeps_a_host_key_approved_after_it_read_the_environment(environment, approver):
    data = {"environment_type": "linux_local", "connection_method": "ssh", "host": "127.0.0.2", "username": "deploy"}
    prepared = environment_prepare(data={**data, "ssh_key_path": "/keys/other"}, current=environment)
    approve_a_host_key(environment, approver)
    environment_save(environment=prepared)

    environment.refresh_from_db()
    assert environment.host == "127.0.0.2"
    assert (environment.host_key, environment.host_key_approved_by) == (HOST_KEY, approver)
    assert environment.host_key_approved_at is not None


def test_an_import_keeps_a_health_result_recorded_while_it_ran(environment):
    with while_the_import_saves(lambda: record_a_health_result(environment)):
        import_file(description="from the file")

    environment.refresh_from_db()
    assert (environment.description, environment.last_health) == ("from the file", Health.HEALTHY)
    assert environment.last_health_at is not None


def test_an_import_keeps_a_host_key_approved_while_it_ran(environment, approver):
    with while_the_import_saves(lambda: approve_a_host_key(environment, approver)):
        import_file(description="from the file")

    environment.refresh_from_db()
    assert environment.description == "from the file"
    assert (environment.host_key, environment.host_key_approved_by) == (HOST_KEY, approver)


def test_saving_a_new_host_key_stamps_who_approved_it_and_when(environment, approver):
    prepared = environment_prepare(data={"host_key": HOST_KEY}, current=environment, partial=True)
    environment_save(environment=prepared, user=approver)

    environment.refresh_from_db()
    assert (environment.host_key, environment.host_key_approved_by) == (HOST_KEY, approver)
    assert environment.host_key_approved_at is not None


def test_saving_without_changing_the_host_key_keeps_its_approval(environment, approver):
    environment_save(environment=environment_prepare(data={"host_key": HOST_KEY}, current=environment, partial=True))
    approved_at = RemoteEnvironment.objects.get().host_key_approved_at

    again = environment_prepare(data={"host_key": HOST_KEY, "port": 2222}, current=environment, partial=True)
    environment_save(environment=again, user=approver)

    environment.refresh_from_db()
    assert (environment.port, environment.host_key_approved_at) == (2222, approved_at)
    assert environment.host_key_approved_by is None


def test_a_deferred_host_key_read_later_is_not_a_change(environment, approver):
    """Selectors hand out environments with fields deferred; loading one on access is a
    read, so saving neither writes it back nor re-stamps (or erases) its approval."""
    approve_a_host_key(environment, approver)
    deferred = RemoteEnvironment.objects.defer("host_key").get(pk=environment.pk)
    assert deferred.host_key == HOST_KEY  # loaded on access

    deferred.description = "renamed"
    environment_save(environment=deferred)  # no user: a command's write

    environment.refresh_from_db()
    assert (environment.description, environment.host_key_approved_by) == ("renamed", approver)


def test_a_host_key_is_saved_without_its_comment(environment, approver):
    environment.host_key = f"{HOST_KEY} root@build-box"
    environment_save(environment=environment, user=approver)

    environment.refresh_from_db()
    assert environment.host_key == HOST_KEY


def test_saving_an_environment_deleted_meanwhile_is_a_validation_error_naming_it(environment):
    stale = RemoteEnvironment.objects.get(pk=environment.pk)
    RemoteEnvironment.objects.filter(pk=environment.pk).delete()
    stale.description = "changed"

    with pytest.raises(ValidationError) as caught:
        environment_save(environment=stale)

    assert "deleted meanwhile" in caught.value.message_dict["environment_id"][0]
    assert not RemoteEnvironment.objects.filter(environment_id="linux_001").exists()


# --- The import's all-or-nothing when a write fails half-way ------------------------------

REFUSED_ID = "refused_by_the_database"


def refusing_trigger_sql(vendor: str, table: str) -> tuple[list[str], list[str]]:
    """The statements that create, then drop, a trigger rejecting REFUSED_ID's insert."""
    if vendor == "postgresql":
        return [
            "CREATE FUNCTION pa_test_refuse_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.environment_id = '{REFUSED_ID}' THEN RAISE EXCEPTION 'refused by the test'; END IF; "
            "RETURN NEW; END $$",
            f"CREATE TRIGGER pa_test_refuse_insert BEFORE INSERT ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION pa_test_refuse_insert()",
        ], [
            f"DROP TRIGGER IF EXISTS pa_test_refuse_insert ON {table}",
            "DROP FUNCTION IF EXISTS pa_test_refuse_insert()",
        ]
    return [
        f"CREATE TRIGGER pa_test_refuse_insert BEFORE INSERT ON {table} "
        f"WHEN NEW.environment_id = '{REFUSED_ID}' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    ], ["DROP TRIGGER IF EXISTS pa_test_refuse_insert"]


@pytest.fixture
def database_refusing_an_insert():
    """A trigger on this test's database that rejects inserting the environment
    REFUSED_ID: a write failing after others succeeded (a constraint, a full disk)."""
    create, drop = refusing_trigger_sql(connection.vendor, RemoteEnvironment._meta.db_table)
    with connection.cursor() as cursor:
        for statement in create:
            cursor.execute(statement)
    yield
    with connection.cursor() as cursor:
        for statement in drop:
            cursor.execute(statement)


def stored_state() -> dict:
    """Every column of every environment and settings block."""
    columns = [field.attname for field in RemoteEnvironment._meta.concrete_fields]
    return {
        "environments": {
            environment.environment_id: {name: getattr(environment, name) for name in columns}
            for environment in RemoteEnvironment.objects.all()
        },
        "blocks": {block.name: (block.values, block.updated_at) for block in SettingsBlock.objects.all()},
    }


def ssh_entry(environment_id: str, **fields) -> dict:
    return {
        "environment_id": environment_id,
        "environment_type": "linux_local",
        "connection_method": "ssh",
        "host": "127.0.0.1",
        "username": "deploy",
        "ssh_key_path": "/keys/id_ed25519",
        **fields,
    }


# Transactional: inside the test's own transaction a broken import's leftovers would be
# hidden behind that transaction's error instead of showing in the rows.
@pytest.mark.django_db(transaction=True)
def test_an_import_whose_write_fails_half_way_writes_nothing_settings_blocks_included(
    environment, database_refusing_an_insert
):
    SettingsBlock.objects.create(name="default_settings", values={"timeout": 60})
    before = stored_state()
    data = {
        "default_settings": {"timeout": 120},
        "deployment_settings": {"parallel_limit": 8},
        "environments": [
            ssh_entry("written_first"),
            ssh_entry(REFUSED_ID),
            ssh_entry("linux_001", description="changed by the file"),
        ],
    }

    with pytest.raises((DatabaseError, ValidationError)):
        environments_import(data=data)

    assert stored_state() == before


def test_setting_an_agent_token_stores_only_its_hash_and_keeps_what_others_wrote(environment):
    token = new_token()
    loaded = RemoteEnvironment.objects.get(pk=environment.pk)
    record_a_health_result(environment)

    environment_set_agent_token(environment=loaded, token=token)

    row = RemoteEnvironment.objects.filter(pk=environment.pk).values().get()
    assert row["agent_token_hash"] == token_hash(token) and token not in str(row)
    assert row["last_health"] == Health.HEALTHY


@pytest.mark.parametrize("taken", [False, True], ids=["too_short", "another_environments"])
def test_a_refused_agent_token_names_the_field_never_the_value_and_changes_nothing(environment, taken):
    token = new_token() if taken else "short"
    if taken:
        RemoteEnvironment.objects.create(
            environment_id="other", environment_type="docker", connection_method="polling", agent_token=token
        )
    before = new_token()
    environment_set_agent_token(environment=environment, token=before)

    with pytest.raises(ValidationError) as refused:
        environment_set_agent_token(environment=environment, token=token)

    assert list(refused.value.message_dict) == ["agent_token"]
    assert token not in str(refused.value)
    assert environment.agent_token_hash == token_hash(before)
    assert RemoteEnvironment.objects.get(pk=environment.pk).agent_token_hash == token_hash(before)
