"""An environment's tags: one rule (environments/tags.py), held by the model's validator."""

import pytest
from django.core.exceptions import ValidationError

from environments.models import RemoteEnvironment
from environments.tags import split_tags, tags_problem
from tests.factories import make_environment

pytestmark = pytest.mark.django_db


def tags_error(value) -> list[str]:
    environment = RemoteEnvironment(
        environment_id="linux_001",
        environment_type="linux_local",
        connection_method="ssh",
        host="127.0.0.1",
        username="deploy",
        ssh_key_path="/keys/id_ed25519",
        tags=value,
    )
    with pytest.raises(ValidationError) as caught:
        environment.full_clean(validate_unique=False)
    return caught.value.message_dict["tags"]


@pytest.mark.parametrize(
    "tags",
    [[], ["mac"], ["team-a", "mac", "0.9_beta"], ["a" * 50], [f"t{i}" for i in range(20)]],
    ids=["none", "one", "kept-in-order", "50-long", "20"],
)
def test_tags_within_the_rule_are_stored_in_the_given_order(tags):
    environment = make_environment("linux_001", tags=tags)
    assert RemoteEnvironment.objects.get(pk=environment.pk).tags == tags


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("mac", "must be a list of tags"),
        ("", "must be a list of tags"),
        ({}, "must be a list of tags"),
        ({"mac": True}, "must be a list of tags"),
        ([1], "every tag must be a string (got 1)"),
        (["mac", None], "every tag must be a string (got None)"),
        (["Mac"], "'Mac' is not a tag"),
        (["team a"], "'team a' is not a tag"),
        (["-mac"], "'-mac' is not a tag"),
        (["mac\n"], "'mac\\n' is not a tag"),
        ([""], "'' is not a tag"),
        (["a" * 51], "is not a tag"),
        ([f"t{i}" for i in range(21)], "at most 20 tags (got 21)"),
        (["mac", "linux", "mac"], "a tag may appear once (repeated: mac)"),
    ],
    ids=[
        "string",
        "empty-string",
        "empty-object",
        "object",
        "number",
        "null-item",
        "uppercase",
        "space",
        "leading-dash",
        "trailing-newline",
        "empty-tag",
        "51-long",
        "21-tags",
        "duplicate",
    ],
)
def test_tags_breaking_the_rule_are_refused_naming_the_field(value, problem):
    (message,) = tags_error(value)
    assert problem in message


def test_a_huge_label_is_quoted_short_in_the_message():
    (message,) = tags_error(["x" * 100000])
    assert len(message) < 200


def test_null_tags_are_refused():
    assert tags_error(None) == ["This field cannot be null."]


def test_the_rule_gives_no_problem_for_valid_tags():
    assert tags_problem(["mac", "team-a"]) is None


def test_comma_separated_tags_are_stripped_and_empty_ones_dropped():
    assert split_tags(" mac, team-a ,,linux ") == ["mac", "team-a", "linux"]
    assert split_tags(" , ") == []
