"""Which environments a deployment or a check takes: one rule for every caller."""

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from environments.connectors import CONNECTORS
from environments.models import SECRET_FIELDS, ConnectionMethod, RemoteEnvironment
from environments.selectors import (
    environments_for_deployment,
    environments_for_scheduled_health_check,
    environments_tagged,
    tags_in_use,
)

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


# --- Selecting by tag ------------------------------------------------------------------------


@pytest.fixture
def fleet():
    """Macs, Linux boxes, one flaky, one disabled."""
    make_environment("mac_b", tags=["mac", "team-a"])
    make_environment("mac_a", tags=["mac"])
    make_environment("linux_a", tags=["linux", "team-a"])
    make_environment("linux_flaky", tags=["linux", "flaky"])
    make_environment("mac_off", tags=["mac", "retired"], enabled=False)
    make_environment("untagged")


def test_tags_select_the_enabled_environments_with_any_of_them_by_id(fleet):
    assert ids(environments_for_deployment(tags=["mac"])) == ["mac_a", "mac_b"]
    assert ids(environments_for_deployment(tags=["mac", "linux"])) == ["linux_a", "linux_flaky", "mac_a", "mac_b"]


def test_names_and_tags_select_the_names_in_order_then_the_tagged_each_once(fleet):
    selected = environments_for_deployment(environment_ids=["untagged", "mac_b"], tags=["mac"])
    assert ids(selected) == ["untagged", "mac_b", "mac_a"]


def test_exclude_tags_leave_out_environments_with_any_of_them_named_ones_too(fleet):
    assert ids(environments_for_deployment(exclude_tags=["flaky", "team-a"])) == ["mac_a", "untagged"]
    assert ids(environments_for_deployment(tags=["linux"], exclude_tags=["flaky"])) == ["linux_a"]
    named = environments_for_deployment(environment_ids=["linux_flaky", "mac_a"], exclude_tags=["flaky"])
    assert ids(named) == ["mac_a"]


def test_a_tag_only_disabled_environments_have_selects_nothing_and_says_so(fleet):
    assert selection_error(tags=["retired"]) == {"tags": ["no enabled environment has any of the tags: retired"]}


def test_a_tag_of_a_disabled_environment_adds_nothing_to_named_ones(fleet):
    assert ids(environments_for_deployment(environment_ids=["mac_a"], tags=["retired"])) == ["mac_a"]


@pytest.mark.parametrize("field", ["tags", "exclude_tags"])
def test_a_tag_no_environment_has_is_an_error_naming_the_field_and_the_tags(fleet, field):
    error = selection_error(**{field: ["mac", "windows", "arm"]})
    assert error == {field: ["unknown tag(s): windows, arm (no environment has them)"]}


@pytest.mark.parametrize("field", ["tags", "exclude_tags"])
def test_a_label_that_cannot_be_a_tag_is_an_error_naming_the_field(fleet, field):
    (message,) = selection_error(**{field: ["Mac"]})[field]
    assert message.startswith("'Mac' is not a tag")


def test_an_empty_list_of_tags_is_an_error_not_every_environment(fleet):
    assert selection_error(tags=[]) == {"tags": ["name at least one tag"]}


def test_an_empty_list_of_exclude_tags_excludes_nothing(fleet):
    assert len(environments_for_deployment(exclude_tags=[])) == 5


@pytest.mark.parametrize(
    ("selection", "field"),
    [
        ({"tags": ["linux"], "exclude_tags": ["linux"]}, "tags"),
        ({"environment_ids": ["linux_flaky"], "exclude_tags": ["flaky"]}, "environments"),
        ({"environment_ids": ["linux_flaky"], "tags": ["flaky"], "exclude_tags": ["flaky"]}, "tags"),
        ({"exclude_tags": ["mac", "linux", "team-a"]}, "exclude_tags"),
    ],
    ids=["tags", "names", "names-and-tags", "exclude-only"],
)
def test_a_selection_the_exclusion_empties_is_an_error_saying_why(selection, field):
    make_environment("linux_flaky", tags=["linux", "flaky"])
    make_environment("mac_a", tags=["mac", "team-a"])
    (message,) = selection_error(**selection)[field]
    assert message.startswith("nothing left to deploy to: every selected environment has one of the excluded tags")


def test_selecting_by_tag_decrypts_no_secret(fleet, settings):
    make_environment("secretive", tags=["mac"], password="pw")  # noqa: S106 (a test value)
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    selected = environments_for_deployment(tags=["mac"], exclude_tags=["flaky"])
    assert "secretive" in ids(selected)
    assert all(environment.get_deferred_fields() >= set(SECRET_FIELDS) for environment in selected)


def test_selecting_by_tag_takes_the_same_queries_for_any_number_of_environments():
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            environments_for_deployment(environment_ids=["named_0"], tags=["mac"], exclude_tags=["flaky"])
        return len(captured)

    for index in range(3):
        make_environment(f"named_{index}", tags=["mac", "flaky"] if index else ["mac"])
    few = queries()
    for index in range(3, 40):
        make_environment(f"named_{index}", tags=["mac"])
    assert queries() == few


def test_the_tag_filter_keeps_what_the_queryset_already_filtered(fleet):
    queryset = RemoteEnvironment.objects.filter(environment_id__startswith="mac")
    assert sorted(ids(environments_tagged(queryset, tags=["mac", "linux"]))) == ["mac_a", "mac_b", "mac_off"]


def test_tags_in_use_lists_every_tag_once_sorted_disabled_environments_too(fleet):
    assert tags_in_use() == ["flaky", "linux", "mac", "retired", "team-a"]


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
