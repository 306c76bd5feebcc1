"""The rollout policy's rules: wave sizes, budgets, validation naming the field, the config
file's defaults, and the database's one-run-per-machine constraint."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from deployments.models import Coordination, CoordinationStatus as C, CoordinationTarget, StageEvent, TargetStatus as T
from deployments.services import coordination_start
from environments.config import ConfigError, plan_import
from environments.models import SettingsBlock
from environments.rollout import Rollout, parse_flag, problem
from tests.factories import make_coordination, make_environment

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("batch_size", "total", "waves"),
    [
        (None, 7, [7]),
        ([1, "25%", "100%"], 20, [1, 5, 14]),
        (2, 5, [2, 2, 1]),
        ("30%", 10, [3, 3, 3, 1]),
        (["10%"], 5, [1, 1, 1, 1, 1]),  # a percentage rounds down, but a wave has at least one
        ([1, 3], 8, [1, 3, 3, 1]),  # the last element repeats
        ([100], 3, [3]),
    ],
)
def test_wave_sizes_follow_ansible_serial(batch_size, total, waves):
    assert Rollout.from_json({"batch_size": batch_size}).wave_sizes(total) == waves


@pytest.mark.parametrize(
    ("max_failures", "total", "budget"), [(None, 10, None), (0, 10, 0), (2, 10, 2), ("25%", 10, 2), ("0%", 10, 0)]
)
def test_failure_budget_resolves_percentages_against_the_targets(max_failures, total, budget):
    assert Rollout.from_json({"max_failures": max_failures}).failure_budget(total) == budget


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("batch_size", [0]),
        ("batch_size", "150%"),
        ("batch_size", "0%"),
        ("batch_size", []),
        ("batch_size", [1] * 21),
        ("batch_size", True),
        ("batch_size", "ten"),
        ("max_failures", -1),
        ("max_failures", "101%"),
        ("max_failures", 1.5),
        ("pause_after_first_batch", "later"),
        ("pause_after_first_batch", -5),
        ("pause_after_first_batch", 86401),
        ("batch_pause_seconds", "10"),
        ("concurrency", "parallel"),
        ("parallelism", 3),
    ],
)
def test_bad_values_are_refused_naming_the_field_and_nothing_is_created(key, value):
    make_environment("env_a")
    before = (Coordination.objects.count(), StageEvent.objects.count())

    with pytest.raises(ValidationError) as refused:
        coordination_start(triggered_by="command", rollout={key: value})

    assert list(refused.value.message_dict) == [f"rollout.{key}"]
    assert problem(key, value) in refused.value.message_dict[f"rollout.{key}"]
    assert (Coordination.objects.count(), StageEvent.objects.count()) == before


def test_a_rollout_that_is_not_an_object_is_refused():
    make_environment("env_a")
    with pytest.raises(ValidationError) as refused:
        coordination_start(triggered_by="command", rollout=[1, 2])
    assert list(refused.value.message_dict) == ["rollout"]


def test_the_config_files_deployment_settings_hold_the_defaults_and_a_deployment_overrides_them():
    for n in range(4):
        make_environment(f"env_{n}")
    SettingsBlock.objects.create(
        name="deployment_settings",
        values={"batch_size": [1, "50%"], "max_failures": 1, "pause_after_first_batch": "approval"},
    )

    default = coordination_start(triggered_by="command")
    assert default.rollout == {
        "batch_size": [1, "50%"],
        "max_failures": 1,
        "pause_after_first_batch": "approval",
        "batch_pause_seconds": 0,
        "concurrency": "queue",
        "waves": [1, 2, 1],
        "failure_budget": 1,
    }
    assert list(default.targets.order_by("environment_id").values_list("wave", flat=True)) == [1, 2, 2, 3]

    overridden = coordination_start(
        triggered_by="command", rollout={"pause_after_first_batch": None, "max_failures": "50%"}
    )
    assert overridden.rollout["pause_after_first_batch"] is None
    assert overridden.rollout["failure_budget"] == 2
    assert overridden.rollout["waves"] == [1, 2, 1]


def test_the_config_file_refuses_bad_rollout_defaults_naming_each():
    data = {
        "environments": [],
        "deployment_settings": {"batch_size": [0], "max_failures": -1, "concurrency": "all"},
    }
    with pytest.raises(ConfigError) as refused:
        plan_import(data)
    text = "; ".join(refused.value.errors)
    for key in (
        "deployment_settings.batch_size",
        "deployment_settings.max_failures",
        "deployment_settings.concurrency",
    ):
        assert key in text


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("batch_size", "1,25%,100%", [1, "25%", "100%"]),
        ("batch_size", "5", 5),
        ("max_failures", "2", 2),
        ("max_failures", "10%", "10%"),
        ("pause_after_first_batch", "approval", "approval"),
        ("pause_after_first_batch", "30", 30),
        ("concurrency", "supersede", "supersede"),
        ("max_failures", "-1", -1),  # parsed, then refused by problem()
    ],
)
def test_command_line_values(key, text, value):
    assert parse_flag(key, text) == value


def test_the_database_lets_one_coordination_at_a_time_run_on_an_environment():
    make_environment("shared")
    make_coordination("deploy_one", C.LOCAL_DEPLOYING, {"shared": T.RUNNING})
    second = make_coordination("deploy_two", C.LOCAL_DEPLOYING, {"shared": T.PENDING}).targets.get()

    with pytest.raises(IntegrityError), transaction.atomic():
        CoordinationTarget.objects.filter(pk=second.pk).update(status=T.TRIGGERING)

    # Once the first run has ended, the second may start.
    CoordinationTarget.objects.filter(coordination__coordination_id="deploy_one").update(status=T.SUCCEEDED)
    assert CoordinationTarget.objects.filter(pk=second.pk).update(status=T.TRIGGERING) == 1


def test_a_huge_refused_value_is_quoted_only_in_part():
    from environments import rollout

    found = rollout.problem("batch_size", "9" * 2_000_000)

    assert found is not None and len(found) < 200
    assert "2000002 characters" in found
