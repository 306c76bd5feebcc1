"""History retention (deployments/retention.py, `prune_history`, the daily schedule), on
rows written directly: which coordinations go, which stay, and what is reported."""

import json
import logging
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import CASCADE, SET_NULL
from django.utils import timezone
from django_q.models import Schedule

from deployments import retention
from deployments.apps import ensure_retention_schedule
from deployments.models import (
    COORDINATION_ACTIVE,
    CallbackToken,
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    OutputChunk,
    RunLease,
    StageEvent,
    TargetStatus as T,
)
from deployments.retention import RETENTION_SCHEDULE_NAME, AgeError, history_prune, parse_age
from deployments.script_output import output_append
from deployments.tasks import prune_history
from tests.factories import make_coordination

pytestmark = pytest.mark.django_db

LONG_AGO = timezone.now() - timedelta(days=400)


def old_coordination(coordination_id: str, targets: dict[str, str], *, status=C.COMPLETED, days_ago=400, **fields):
    """A coordination finished (or, unfinished, created) `days_ago` days ago, `days_ago`
    also ordering creation: the larger, the older."""
    coordination = make_coordination(coordination_id, status, targets, **fields)
    when = timezone.now() - timedelta(days=days_ago)
    finished = when if status not in COORDINATION_ACTIVE else None
    Coordination.objects.filter(pk=coordination.pk).update(created_at=when, finished_at=finished)
    return coordination


def prune(*args: str) -> str:
    out = StringIO()
    call_command("prune_history", *args, stdout=out)
    return out.getvalue()


def row_counts() -> dict[str, int]:
    return {
        "coordinations": Coordination.objects.count(),
        "coordination_targets": CoordinationTarget.objects.count(),
        "stage_events": StageEvent.objects.count(),
        "callback_tokens": CallbackToken.objects.count(),
        "run_leases": RunLease.objects.count(),
        "output_chunks": OutputChunk.objects.count(),
    }


def remaining() -> set[str]:
    return set(Coordination.objects.values_list("coordination_id", flat=True))


@pytest.mark.parametrize(
    ("text", "seconds"), [("45s", 45), ("30m", 1800), ("12h", 43200), ("90d", 90 * 86400), ("0s", 0)]
)
def test_an_age_is_a_whole_number_and_a_unit(text, seconds):
    assert parse_age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["90", "d", "-1d", "1.5d", "90x", "", "90 days", "9" * 13 + "d", "36501d", "٣d"])
def test_an_age_without_a_known_unit_or_beyond_its_bound_is_refused(text):
    with pytest.raises(AgeError):
        parse_age(text)


@pytest.mark.parametrize("flags", [["--older-than", "90"], ["--older-than", "99999999d"], ["--older-than", "1y"]])
def test_a_bad_age_exits_2_naming_the_flag_and_deletes_nothing(flags):
    old_coordination("deploy_old", {"env_a": T.SUCCEEDED})

    with pytest.raises(CommandError) as caught:
        prune(*flags, "--keep-last", "0")

    assert caught.value.returncode == 2
    assert str(caught.value).startswith("--older-than: ")
    assert remaining() == {"deploy_old"}


@pytest.mark.parametrize("value", ["-1", "x", "10001", "1.5"])
def test_a_bad_keep_last_exits_2_naming_the_flag_and_deletes_nothing(value):
    old_coordination("deploy_old", {"env_a": T.SUCCEEDED})

    with pytest.raises(CommandError) as caught:
        prune("--older-than", "1d", "--keep-last", value)

    assert caught.value.returncode == 2
    assert str(caught.value).startswith("--keep-last: ")
    assert remaining() == {"deploy_old"}


def test_only_coordinations_finished_before_the_cutoff_go():
    old_coordination("deploy_old", {"env_a": T.SUCCEEDED}, days_ago=100)
    old_coordination("deploy_recent", {"env_a": T.FAILED}, status=C.FAILED, days_ago=80)

    prune("--older-than", "90d", "--keep-last", "0")

    assert remaining() == {"deploy_recent"}


def test_a_coordination_without_a_finish_time_counts_from_its_creation():
    old = old_coordination("deploy_old", {"env_a": T.SUCCEEDED}, days_ago=100)
    new = old_coordination("deploy_new", {"env_a": T.SUCCEEDED}, days_ago=10)
    Coordination.objects.filter(pk__in=[old.pk, new.pk]).update(finished_at=None)

    prune("--older-than", "90d", "--keep-last", "0")

    assert remaining() == {"deploy_new"}


def test_an_unfinished_coordination_is_never_deleted():
    for status in sorted(COORDINATION_ACTIVE):
        old_coordination(f"deploy_{status}", {f"env_{status}": T.PENDING}, status=status)
    # Cancelled, but an environment it hangs up is still running: not finished yet.
    old_coordination("deploy_hanging_up", {"env_x": T.CANCELLED, "env_y": T.RUNNING}, status=C.CANCELLED)
    old_coordination("deploy_triggering", {"env_z": T.TRIGGERING}, status=C.FAILED)
    old_coordination("deploy_done", {"env_done": T.SUCCEEDED})
    unfinished = remaining() - {"deploy_done"}

    out = prune("--older-than", "0s", "--keep-last", "0")

    assert remaining() == unfinished
    assert "  coordinations: 1" in out


def test_a_coordination_a_running_one_retries_stays_until_that_one_ends():
    original = old_coordination("deploy_original", {"env_a": T.FAILED}, status=C.FAILED)
    old_coordination("deploy_retry", {"env_a": T.RUNNING}, status=C.LOCAL_DEPLOYING, days_ago=1, retry_of=original)

    prune("--older-than", "0s", "--keep-last", "0")

    assert Coordination.objects.get(coordination_id="deploy_retry").retry_of_id == original.pk


def test_each_environment_keeps_its_newest_finished_coordinations():
    # env_a: in 7 finished coordinations; env_b: in the oldest of them, which stays for env_b.
    for days_ago in range(100, 107):
        targets = {"env_a": T.SUCCEEDED, **({"env_b": T.FAILED} if days_ago == 106 else {})}
        old_coordination(f"deploy_{days_ago}", targets, days_ago=days_ago)
    # A running coordination on env_a is not one of its last finished ones.
    old_coordination("deploy_running", {"env_a": T.RUNNING}, status=C.LOCAL_DEPLOYING, days_ago=1)

    prune("--older-than", "90d", "--keep-last", "5")
    assert remaining() == {f"deploy_{days_ago}" for days_ago in (100, 101, 102, 103, 104, 106)} | {"deploy_running"}

    prune("--older-than", "90d", "--keep-last", "1")
    assert remaining() == {"deploy_100", "deploy_106", "deploy_running"}

    prune("--older-than", "90d", "--keep-last", "0")
    assert remaining() == {"deploy_running"}


def test_the_counts_printed_are_the_rows_removed_with_every_row_that_hangs_on_them():
    gone = old_coordination("deploy_old", {"env_a": T.SUCCEEDED, "env_b": T.FAILED}, status=C.FAILED)
    target = gone.targets.get(environment_id="env_a")
    CallbackToken.objects.create(target=target, token_hash="a" * 64, expires_at=LONG_AGO)
    RunLease.objects.create(coordination=gone, owner="host:1", is_lead=True, expires_at=LONG_AGO)
    StageEvent.objects.create(coordination=gone, stage="coordination", old_status="pending", new_status="failed")
    CoordinationTarget.objects.filter(pk=target.pk).update(**output_append(target, "done\n", secrets=()))
    old_coordination("deploy_kept", {"env_c": T.SUCCEEDED}, days_ago=1)
    before = row_counts()

    out = prune("--older-than", "30d", "--keep-last", "0")

    after = row_counts()
    removed = {table: before[table] - after[table] for table in before}
    assert removed == {
        "coordinations": 1,
        "coordination_targets": 2,
        "stage_events": 3,
        "callback_tokens": 1,
        "run_leases": 1,
        "output_chunks": 1,
    }
    for table, rows in removed.items():
        assert f"  {table}: {rows}" in out
    assert remaining() == {"deploy_kept"}


def test_a_dry_run_counts_the_same_rows_and_deletes_nothing():
    for number in range(4):
        gone = old_coordination(f"deploy_{number}", {"env_a": T.SUCCEEDED, "env_b": T.SUCCEEDED})
        CallbackToken.objects.create(target=gone.targets.first(), token_hash=str(number) * 64, expires_at=LONG_AGO)
        target = gone.targets.first()
        CoordinationTarget.objects.filter(pk=target.pk).update(
            **output_append(target, "x" * 100_000 + "\n", secrets=())  # two pieces of output
        )
    before = row_counts()

    dry = json.loads(prune("--older-than", "1d", "--keep-last", "1", "--dry-run", "--json"))

    assert row_counts() == before
    assert dry["dry_run"] is True
    real = json.loads(prune("--older-than", "1d", "--keep-last", "1", "--json"))
    assert real["deleted"] == dry["deleted"]
    after = row_counts()
    assert real["deleted"] == {table: before[table] - after[table] for table in before}
    assert real["deleted"]["coordinations"] == 3
    assert real["deleted"]["output_chunks"] == 6  # the output goes with its coordination


def test_json_is_one_object_with_the_cutoff_and_the_counts_per_table():
    old_coordination("deploy_old", {"env_a": T.SUCCEEDED})

    report = json.loads(prune("--older-than", "12h", "--keep-last", "0", "--json"))

    assert report["keep_last"] == 0
    assert report["dry_run"] is False
    cutoff = datetime.fromisoformat(report["cutoff"])
    assert timezone.now() - timedelta(hours=12, minutes=1) < cutoff < timezone.now() - timedelta(hours=12)
    assert {name: rows for name, rows in report["deleted"].items() if rows} == {
        "coordinations": 1,
        "coordination_targets": 1,
        "stage_events": 1,
    }
    assert {"run_leases", "callback_tokens"} <= set(report["deleted"])


def test_more_coordinations_than_one_batch_go_in_several_short_transactions(monkeypatch):
    monkeypatch.setattr(retention, "BATCH_COORDINATIONS", 3)
    monkeypatch.setattr(retention, "BATCH_TARGETS", 4)
    for number in range(7):
        old_coordination(f"deploy_{number}", {"env_a": T.SUCCEEDED})
    old_coordination("deploy_wide", {f"env_{n}": T.SUCCEEDED for n in range(6)})  # over BATCH_TARGETS alone

    report = history_prune(older_than=timedelta(days=1), keep_last=0)

    assert report.batches == 4  # 3, 3, then 1: the wide one (6 targets) goes on its own
    assert report.deleted["coordinations"] == 8
    assert report.deleted["coordination_targets"] == 13
    assert not Coordination.objects.exists()


def test_every_row_pointing_at_a_coordination_or_a_target_goes_with_it_or_lets_go():
    """No PROTECT or RESTRICT (a prune would stop) and no DO_NOTHING (rows left pointing
    at nothing) on a relation to what a prune deletes."""
    for model in retention.pruned_models():
        for relation in model._meta.related_objects:
            assert relation.on_delete in (CASCADE, SET_NULL), f"{relation.related_model.__name__}.{relation.name}"


def test_migrate_keeps_a_daily_prune_with_the_configured_days(settings):
    schedule = Schedule.objects.get(name=RETENTION_SCHEDULE_NAME)  # written by the test database's migrate
    assert (schedule.func, schedule.schedule_type) == ("deployments.tasks.prune_history", Schedule.DAILY)
    assert schedule.args == repr(settings.HISTORY_RETENTION_DAYS) == "180"

    settings.HISTORY_RETENTION_DAYS = 30
    ensure_retention_schedule(sender=None)
    assert Schedule.objects.get(name=RETENTION_SCHEDULE_NAME).args == "30"

    settings.HISTORY_RETENTION_DAYS = 0
    ensure_retention_schedule(sender=None)
    assert not Schedule.objects.filter(name=RETENTION_SCHEDULE_NAME).exists()

    settings.HISTORY_RETENTION_DAYS = 7
    ensure_retention_schedule(sender=None)
    assert Schedule.objects.get(name=RETENTION_SCHEDULE_NAME).args == "7"


def test_the_scheduled_task_prunes_keeping_the_last_5_and_logs_what_it_deleted(caplog):
    for days_ago in range(200, 207):
        old_coordination(f"deploy_{days_ago}", {"env_a": T.SUCCEEDED}, days_ago=days_ago)
    old_coordination("deploy_recent", {"env_b": T.SUCCEEDED}, days_ago=10)

    with caplog.at_level(logging.INFO, logger="deployments.tasks"):
        result = prune_history(180)

    assert remaining() == {f"deploy_{days_ago}" for days_ago in range(200, 205)} | {"deploy_recent"}
    assert result.startswith("deleted 2 coordinations, 2 coordination_targets, 2 stage_events")
    assert result in caplog.text
