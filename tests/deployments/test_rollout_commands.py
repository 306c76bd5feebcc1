"""The rollout from the command line, in process: `trigger_local`'s rollout flags (each one
and its bad values), a busy environment under `--concurrency reject`, `deployment_approve`
and `deployment_cancel`, how the stage log and `deployment_status` show a rollout."""

import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    Stage,
    StageEvent,
    TargetStatus as T,
    TriggerSource,
)
from deployments.services import coordination_start
from deployments.stage_log import format_event
from deployments.transitions import cancel_not_started, note, transition
from environments.models import SettingsBlock
from tests.factories import make_environment

pytestmark = pytest.mark.django_db

ACTOR = re.compile(r"command \([^\x00-\x1f\x7f]{1,64}@[^\x00-\x1f\x7f]{1,64}\)")


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def refused(*args) -> CommandError:
    with pytest.raises(CommandError) as raised:
        run(*args)
    return raised.value


def counts() -> tuple[int, int, int]:
    return Coordination.objects.count(), CoordinationTarget.objects.count(), StageEvent.objects.count()


@pytest.fixture
def eight_environments():
    for n in range(8):
        make_environment(f"env_{n}", tags=["linux"])


# --- trigger_local's rollout flags -------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--batch-size", "1,25%,100%"], {"batch_size": [1, "25%", "100%"], "waves": [1, 2, 5]}),
        (["--batch-size", "5"], {"batch_size": [5], "waves": [5, 3]}),
        (["--batch-size", " 25% "], {"batch_size": ["25%"], "waves": [2, 2, 2, 2]}),
        (["--max-failures", "2"], {"max_failures": 2, "failure_budget": 2}),
        (["--max-failures", "25%"], {"max_failures": "25%", "failure_budget": 2}),
        (["--max-failures", "0"], {"max_failures": 0, "failure_budget": 0}),
        (["--pause-after-first", "approval"], {"pause_after_first_batch": "approval"}),
        (["--pause-after-first", "30"], {"pause_after_first_batch": 30}),
        (["--batch-pause", "15"], {"batch_pause_seconds": 15}),
        (["--concurrency", "queue"], {"concurrency": "queue"}),
        (["--concurrency", "reject"], {"concurrency": "reject"}),
        (["--concurrency", "supersede"], {"concurrency": "supersede"}),
    ],
)
def test_each_rollout_flag_becomes_the_coordinations_rollout(eight_environments, arguments, expected):
    run("trigger_local", *arguments)

    rollout = Coordination.objects.get().rollout
    assert {key: rollout[key] for key in expected} == expected


def test_the_canary_then_25_percent_example_splits_twenty_environments_into_its_waves():
    for n in range(20):
        make_environment(f"env_{n:02}")

    output = run("trigger_local", "--batch-size", "1,25%", "--max-failures", "2", "--pause-after-first", "approval")

    coordination = Coordination.objects.get()
    assert output.startswith(f"🚀 queued {coordination.coordination_id}")
    assert coordination.rollout["waves"] == [1, 5, 5, 5, 4]
    assert coordination.rollout["failure_budget"] == 2
    assert list(coordination.targets.order_by("environment_id").values_list("wave", flat=True)) == (
        [1] + [2] * 5 + [3] * 5 + [4] * 5 + [5] * 4
    )


def test_flags_override_only_their_own_keys_of_the_config_files_defaults(eight_environments):
    SettingsBlock.objects.create(
        name="deployment_settings", values={"batch_size": [1, "100%"], "max_failures": 3, "batch_pause_seconds": 5}
    )

    run("trigger_local", "--max-failures", "0", "--concurrency", "supersede")

    rollout = Coordination.objects.get().rollout
    assert rollout["batch_size"] == [1, "100%"]
    assert rollout["waves"] == [1, 7]
    assert rollout["batch_pause_seconds"] == 5
    assert (rollout["max_failures"], rollout["failure_budget"], rollout["concurrency"]) == (0, 0, "supersede")


def test_without_rollout_flags_the_config_files_defaults_stand(eight_environments):
    SettingsBlock.objects.create(name="deployment_settings", values={"batch_size": 4, "max_failures": "50%"})

    run("trigger_local")

    rollout = Coordination.objects.get().rollout
    assert (rollout["waves"], rollout["failure_budget"]) == ([4, 4], 4)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--batch-size", "0"], "--batch-size: must be from 1 to 100000, not 0"),
        (["--batch-size", "0,100%"], "--batch-size: element 1: must be from 1 to 100000, not 0"),
        (["--batch-size", "1,,100%"], "--batch-size: element 2: must be a whole number or a percentage"),
        (["--batch-size", "150%"], "--batch-size: a percentage must be from 1% to 100%, not '150%'"),
        (["--batch-size", ""], "--batch-size: must be a whole number or a percentage such as \"25%\", not ''"),
        (["--batch-size", ",".join(["1"] * 21)], "--batch-size: a list of wave sizes must have 1 to 20 elements"),
        (["--max-failures", "-1"], "--max-failures: must be from 0 to 100000, not -1"),
        (["--max-failures", "101%"], "--max-failures: a percentage must be from 0% to 100%, not '101%'"),
        (["--pause-after-first", "soon"], '--pause-after-first: must be "approval" or a whole number of seconds'),
        (["--pause-after-first", "86401"], '--pause-after-first: must be "approval" or a whole number'),
        (["--batch-pause", "1.5"], "--batch-pause: must be a whole number of seconds from 0 to 86400"),
        (["--concurrency", "never"], "--concurrency: must be one of queue, reject, supersede, not 'never'"),
        (["--tags", "macc"], "--tags: unknown tag(s): macc (no environment has them)"),
    ],
)
def test_a_bad_rollout_value_exits_2_naming_its_flag_and_creates_nothing(eight_environments, arguments, message):
    coordination_start(triggered_by=TriggerSource.COMMAND, environment_ids=["env_0"])  # counts are not all 0
    before = counts()

    error = refused("trigger_local", "--wait", *arguments)

    assert error.returncode == 2
    assert str(error).startswith(message), str(error)
    assert counts() == before


def test_a_huge_flag_value_is_quoted_only_in_part(eight_environments):
    error = refused("trigger_local", "--batch-size", "9" * 100_000)

    assert error.returncode == 2
    assert str(error).startswith("--batch-size: ")
    assert len(str(error)) < 300
    assert not Coordination.objects.exists()


def test_reject_over_busy_environments_exits_2_naming_each_and_its_holder(eight_environments):
    coordination_start(triggered_by=TriggerSource.COMMAND, environment_ids=["env_1"], coordination_id="deploy_a")
    coordination_start(triggered_by=TriggerSource.COMMAND, environment_ids=["env_3"], coordination_id="deploy_b")
    before = counts()

    error = refused("trigger_local", "--wait", "--concurrency", "reject")

    assert error.returncode == 2
    assert "env_1 (in deploy_a)" in str(error) and "env_3 (in deploy_b)" in str(error)
    assert "nothing started" in str(error)
    assert counts() == before


def test_reject_from_the_config_files_defaults_exits_2_as_well(eight_environments):
    SettingsBlock.objects.create(name="deployment_settings", values={"concurrency": "reject"})
    coordination_start(triggered_by=TriggerSource.COMMAND, environment_ids=["env_1"], coordination_id="deploy_a")

    error = refused("trigger_local", "--environments", "env_1,env_2")

    assert error.returncode == 2
    assert "env_1 (in deploy_a)" in str(error)
    assert Coordination.objects.count() == 1


# --- deployment_approve and deployment_cancel --------------------------------------------------


def awaiting_approval(coordination_id: str = "deploy_gate") -> Coordination:
    """Three environments, waves of 1 and 2, the first wave succeeded: awaiting approval,
    moved there by the transitions a run makes."""
    for n in range(3):
        make_environment(f"env_{n}")
    coordination = coordination_start(
        triggered_by=TriggerSource.COMMAND,
        coordination_id=coordination_id,
        rollout={"batch_size": [1, "100%"], "pause_after_first_batch": "approval"},
    )
    for status in (C.EC2_DEPLOYING, C.EC2_COMPLETED, C.LOCAL_TRIGGERING):
        transition(coordination, status)
    Coordination.objects.filter(pk=coordination.pk).update(wave=1)
    canary = coordination.targets.get(wave=1)
    for status in (T.TRIGGERING, T.RUNNING, T.SUCCEEDED):
        transition(canary, status)
    transition(coordination, C.LOCAL_DEPLOYING, message="every environment of the first wave has ended")
    transition(
        coordination,
        C.AWAITING_APPROVAL,
        message="✋ first wave done (1 succeeded, 0 failed): awaiting an ADMIN's approval to start the other 2 "
        "environments",
    )
    return Coordination.objects.get(pk=coordination.pk)


def test_approve_moves_the_rollout_on_naming_the_machine_account():
    coordination = awaiting_approval()

    output = run("deployment_approve", "deploy_gate")

    assert output == "👍 approved deploy_gate: wave 2 of 2 starts (follow it with: deployment_status deploy_gate)\n"
    coordination.refresh_from_db()
    assert coordination.status == C.LOCAL_DEPLOYING
    assert coordination.approved_at is not None
    event = StageEvent.objects.get(coordination=coordination, old_status=C.AWAITING_APPROVAL)
    assert ACTOR.fullmatch(event.data["approved_by"]), event.data
    assert event.message == f"approved by {event.data['approved_by']}: the rollout goes on"


def test_approve_json_prints_the_coordination_as_deployment_status_does():
    awaiting_approval()

    record = json.loads(run("deployment_approve", "deploy_gate", "--json"))

    status = json.loads(run("deployment_status", "deploy_gate", "--json"))
    assert record.keys() == status.keys()
    assert {key: value for key, value in record.items() if key != "duration_seconds"} == {
        key: value for key, value in status.items() if key != "duration_seconds"
    }
    assert record["status"] == C.LOCAL_DEPLOYING
    assert record["approved_at"] and record["wave"] == 1
    assert record["rollout"]["waves"] == [1, 2]


def test_a_second_approval_exits_1_and_changes_nothing():
    awaiting_approval()
    run("deployment_approve", "deploy_gate")
    before = counts()

    error = refused("deployment_approve", "deploy_gate")

    assert error.returncode == 1
    assert str(error) == "coordination deploy_gate is local_deploying, not awaiting approval"
    assert counts() == before


def test_approving_a_coordination_that_does_not_await_approval_exits_1():
    make_environment("env_a")
    coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_plain")

    error = refused("deployment_approve", "deploy_plain")

    assert error.returncode == 1
    assert "deploy_plain is pending, not awaiting approval" in str(error)
    assert Coordination.objects.get().status == C.PENDING


def test_cancel_while_awaiting_approval_cancels_the_rest():
    coordination = awaiting_approval()

    output = run("deployment_cancel", "deploy_gate")

    assert output == "🛑 cancelled deploy_gate\n"
    coordination.refresh_from_db()
    assert coordination.status == C.CANCELLED
    assert ACTOR.fullmatch(coordination.error.removeprefix("cancelled by ")), coordination.error
    assert dict(coordination.targets.values_list("environment_id", "status")) == {
        "env_0": T.SUCCEEDED,
        "env_1": T.CANCELLED,
        "env_2": T.CANCELLED,
    }


def test_cancel_of_a_running_coordination_says_the_worker_hangs_up_its_running_scripts():
    make_environment("env_a")
    make_environment("env_b")
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_run")
    for status in (C.EC2_DEPLOYING, C.EC2_COMPLETED, C.LOCAL_TRIGGERING):
        transition(coordination, status)
    target = coordination.targets.get(environment_id="env_a")
    transition(target, T.TRIGGERING)
    transition(target, T.RUNNING)

    output = run("deployment_cancel", "deploy_run", "--json")

    record = json.loads(output)
    assert record["status"] == C.CANCELLED
    assert {env["environment_id"]: env["status"] for env in record["environments"]} == {
        "env_a": T.RUNNING,
        "env_b": T.CANCELLED,
    }


def test_cancel_names_how_many_running_environments_the_worker_hangs_up():
    make_environment("env_a")
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_run")
    for status in (C.EC2_DEPLOYING, C.EC2_COMPLETED, C.LOCAL_TRIGGERING):
        transition(coordination, status)
    target = coordination.targets.get()
    transition(target, T.TRIGGERING)

    output = run("deployment_cancel", "deploy_run")

    assert output == "🛑 cancelled deploy_run: the worker hangs up the 1 running environment\n"


def test_cancelling_an_ended_coordination_exits_1_and_changes_nothing():
    awaiting_approval()
    run("deployment_cancel", "deploy_gate")
    before = counts()

    error = refused("deployment_cancel", "deploy_gate")

    assert error.returncode == 1
    assert str(error) == "coordination deploy_gate has already ended: it is cancelled"
    assert counts() == before


@pytest.mark.parametrize("command", ["deployment_approve", "deployment_cancel", "deployment_status"])
def test_an_unknown_coordination_exits_2_naming_the_id(command):
    error = refused(command, "deploy_nope")

    assert error.returncode == 2
    assert str(error) == "coordination_id: no coordination 'deploy_nope'"


@pytest.mark.parametrize("command", ["deployment_approve", "deployment_cancel", "deployment_status"])
@pytest.mark.parametrize(
    ("coordination_id", "shown"),
    [
        ("deploy 1; rm -rf /", "'deploy 1; rm -rf /'"),
        ("deploy\x1b[31m\n", "'deploy\\x1b[31m\\n'"),
        ("", "''"),
        ("d" * 100_000, "'" + "d" * 100 + "'… (100000 characters)"),
    ],
    ids=["spaces", "control characters", "empty", "huge"],
)
def test_a_malformed_id_exits_2_naming_it_escaped_and_bounded(command, coordination_id, shown):
    awaiting_approval()
    before = counts()

    error = refused(command, coordination_id)

    assert error.returncode == 2
    assert str(error).startswith(f"coordination_id: {shown} is not a coordination id (use 1-100 letters")
    assert counts() == before
    assert Coordination.objects.get().status == C.AWAITING_APPROVAL


def test_the_machine_account_is_named_without_control_characters_and_bounded(monkeypatch):
    monkeypatch.setenv("LOGNAME", "ev\x1b[31mil\nroot\x07" + "x" * 500)
    awaiting_approval()

    run("deployment_approve", "deploy_gate")

    approved_by = StageEvent.objects.get(old_status=C.AWAITING_APPROVAL).data["approved_by"]
    assert approved_by.startswith("command (ev[31milrootxxx")
    assert ACTOR.fullmatch(approved_by) and len(approved_by) < 150


@pytest.mark.parametrize("command", ["deployment_approve", "deployment_cancel", "trigger_local"])
def test_the_commands_skip_djangos_system_checks(command):
    from django.core.management import load_command_class

    assert load_command_class("deployments", command).requires_system_checks == []


# --- deployment_status and the stage log -----------------------------------------------------------


def test_status_shows_the_rollout_the_wave_and_how_to_approve():
    awaiting_approval()

    text = run("deployment_status", "deploy_gate")

    assert "deploy_gate: awaiting_approval" in text
    assert (
        "  rollout: 2 waves (1, 2), wave 1 of 2; no failure budget; after wave 1: an ADMIN's approval; "
        "concurrency queue" in text
    )
    assert "✋ awaiting approval: python manage.py deployment_approve deploy_gate" in text
    assert "deployment_cancel deploy_gate stops it" in text
    assert re.search(r"env_0 +succeeded +exit - +attempts 0  wave 1", text), text
    assert re.search(r"env_2 +pending .* wave 2", text), text
    assert "approved by" not in text
    summary = run("deployment_status")
    assert re.search(r"deploy_gate +awaiting_approval .* wave 1 of 2", summary), summary


def test_status_shows_who_approved_and_the_budget():
    awaiting_approval()
    Coordination.objects.filter(coordination_id="deploy_gate").update(
        rollout={**Coordination.objects.get().rollout, "max_failures": "50%", "failure_budget": 1}
    )
    run("deployment_approve", "deploy_gate")

    text = run("deployment_status", "deploy_gate")

    assert "failure budget 1 (50%): no environment starts once more fail" in text
    approved = re.search(r"  approved by (command \(.*\)) at \d{4}-", text)
    assert approved and ACTOR.fullmatch(approved.group(1)), text
    assert "awaiting approval:" not in text


def test_status_of_a_single_wave_coordination_says_so():
    make_environment("env_a")
    coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_one")

    text = run("deployment_status", "deploy_one")

    assert "  rollout: one wave of every environment; no failure budget; concurrency queue" in text
    assert " wave " not in text.split("rollout:")[1].split("\n", 1)[1]  # no wave column


def test_status_says_which_coordination_a_queued_environment_waits_for():
    make_environment("env_a")
    coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_first")
    second = coordination_start(triggered_by=TriggerSource.COMMAND, coordination_id="deploy_second")
    second.targets.update(waiting_for="deploy_first")

    text = run("deployment_status", "deploy_second")

    assert "(waiting for deploy_first, which holds this environment)" in text


def lines_of(coordination: Coordination, **filters) -> list[str]:
    events = StageEvent.objects.filter(coordination=coordination, **filters).select_related("coordination")
    return [format_event(event) for event in events.order_by("id")]


def test_the_stage_log_shows_waves_pauses_the_gate_and_the_approval():
    coordination = awaiting_approval()
    note(coordination, "📦 wave 1 of 2: 1 environment", stage=Stage.TRIGGER, data={"wave": 1, "waves": 2})
    note(coordination, "⏸️ pausing 30 s before wave 2 of 2", stage=Stage.RUN, data={"pause_seconds": 30})
    note(coordination, "🔁 handed to a fresh worker task: the next wave", stage=Stage.COORDINATION)
    run("deployment_approve", "deploy_gate")

    lines = lines_of(coordination, environment_id="")

    assert lines[0].startswith("🚀 start deploy_gate: created by command for 3 environments in 2 waves")
    assert "⏳ every environment of the first wave has ended" in lines
    assert (
        "✋ first wave done (1 succeeded, 0 failed): awaiting an ADMIN's approval to start the other 2 environments"
        in lines
    )
    assert lines[-4:-1] == [
        "📦 wave 1 of 2: 1 environment",
        "⏸️ pausing 30 s before wave 2 of 2",
        "🔁 handed to a fresh worker task: the next wave",
    ]
    assert re.fullmatch(r"👍 approved by command \(.+\): the rollout goes on", lines[-1]), lines[-1]


def test_the_stage_log_shows_waits_supersedes_and_the_failure_budget():
    coordination = awaiting_approval()
    first, second = coordination.targets.filter(wave=2).order_by("environment_id")
    note(
        coordination,
        "waiting for deploy_older, which holds this environment",
        stage=Stage.TRIGGER,
        target=first,
        data={"waiting_for": "deploy_older"},
    )
    note(
        coordination,
        "superseded by deploy_newer: hanging up the run",
        stage=Stage.RUN,
        target=second,
        data={"superseded_by": "deploy_newer"},
    )
    cancel_not_started([first], reason="superseded by deploy_newer", code="superseded")
    cancel_not_started(
        [second],
        reason="the failure budget is spent: 1 environment failed, at most 0 may",
        code="failure_budget",
    )
    reasons = "env_0 (exit_code); env_1 (superseded); env_2 (failure_budget)"
    transition(
        coordination,
        C.FAILED,
        message=f"the failure budget (0 failures allowed) is spent; 3 of 3 environments failed: {reasons}",
        data={"failed": ["env_0", "env_1", "env_2"], "total": 3, "reasons": reasons},
    )

    lines = lines_of(coordination)

    assert lines[-5:] == [
        "⏳ env_1: waiting for deploy_older, which holds this environment",
        "✂️  env_2: superseded by deploy_newer: hanging up the run",
        "🛑 env_1 (superseded: not started: superseded by deploy_newer)",
        "🛑 env_2 (failure_budget: not started: the failure budget is spent: 1 environment failed, at most 0 may)",
        f"❌ the failure budget (0 failures allowed) is spent; 3 of 3 environments failed: {reasons}",
    ]


@pytest.mark.parametrize(
    ("rollout", "line"),
    [
        (None, "⏳ every environment has started; waiting for the scripts"),
        ({"batch_size": 1}, "⏳ every environment of this wave has started; waiting for the scripts"),
    ],
)
def test_the_stage_log_says_which_environments_have_started(rollout, line):
    make_environment("env_a")
    make_environment("env_b")
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND, rollout=rollout)
    for status in (C.EC2_DEPLOYING, C.EC2_COMPLETED, C.LOCAL_TRIGGERING):
        transition(coordination, status)
    transition(coordination, C.LOCAL_DEPLOYING, message="every environment has started")

    assert lines_of(coordination)[-1] == line
