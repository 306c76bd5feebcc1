"""Rollouts against real machines: a loopback sshd whose scripts record, on the remote side,
when each one starts and ends, and real qcluster processes (killed with -9 where the issue
asks). Waves, the failure budget, the approval gate and one run per machine."""

import os
import signal
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest

from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    RunLease,
    StageEvent,
    TargetStatus as T,
    TriggerSource,
)
from deployments.services import EnvironmentsBusy, coordination_approve, coordination_cancel, coordination_start
from environments.models import SettingsBlock
from tests.support.leases import wait_for_leases_to_expire
from tests.support.passes import sqlite_pass_only
from tests.support.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FAST_RECOVERY = {"DEPLOYMENT_LEASE_SECONDS": "2", "DEPLOYMENT_REQUEUE_SECONDS": "1", "Q_WORKERS": "2"}


@pytest.fixture
def remote(sshd):
    folder = Path(tempfile.mkdtemp(prefix="rollout-", dir=sshd.scripts))
    folder.chmod(0o777)
    return folder


def script(remote: Path, name: str, seconds: float, exit_code: int = 0) -> Path:
    """Appends `start <env> <time>` and, unless hung up, `end <env> <time>` to a log."""
    path = remote / name
    path.write_text(
        "#!/bin/sh\n"
        f'echo "start $ENVIRONMENT_ID $COORDINATION_ID $(date +%s.%N)" >> "{remote}/log"\n'
        f"echo started\nsleep {seconds}\n"
        f'echo "end $ENVIRONMENT_ID $COORDINATION_ID $(date +%s.%N)" >> "{remote}/log"\n'
        f"exit {exit_code}\n"
    )
    path.chmod(0o755)
    return path


def remote_log(remote: Path) -> list[tuple[str, str, str, float]]:
    path = remote / "log"
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        kind, environment_id, coordination_id, at = line.split()
        rows.append((kind, environment_id, coordination_id, float(at)))
    return rows


def times(remote: Path, kind: str) -> dict[str, float]:
    return {env: at for what, env, _, at in remote_log(remote) if what == kind}


def rollout_defaults(**deployment):
    SettingsBlock.objects.create(
        name="default_settings", values={"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    )
    SettingsBlock.objects.create(name="deployment_settings", values={"parallel_limit": 50, **deployment})


def ended(coordination: Coordination, timeout: float = 90) -> Coordination:
    wait_until(lambda: Coordination.objects.get(pk=coordination.pk).is_terminal, timeout, "the coordination to end")
    coordination.refresh_from_db()
    return coordination


def statuses(coordination) -> dict[str, str]:
    return dict(coordination.targets.values_list("environment_id", "status"))


@sqlite_pass_only  # wave sizes and the budget are Python; the 20-minute budget
def test_twenty_environments_run_in_waves_of_1_then_25_percent_then_the_rest(remote, make_ssh_environment, qcluster):
    rollout_defaults()
    names = [f"env_{n:02}" for n in range(20)]
    for name in names:
        make_ssh_environment(name, script(remote, "wave.sh", 0.3))

    coordination = coordination_start(triggered_by=TriggerSource.COMMAND, rollout={"batch_size": [1, "25%", "100%"]})
    assert coordination.rollout["waves"] == [1, 5, 14]
    coordination = ended(coordination)

    assert coordination.status == C.COMPLETED, coordination.error
    waves = dict(coordination.targets.values_list("environment_id", "wave"))
    assert waves == {name: 1 if n == 0 else 2 if n <= 5 else 3 for n, name in enumerate(names)}
    started, finished = times(remote, "start"), times(remote, "end")
    assert sorted(started) == names
    for wave in (2, 3):
        previous_end = max(finished[env] for env, number in waves.items() if number == wave - 1)
        first_start = min(started[env] for env, number in waves.items() if number == wave)
        assert first_start >= previous_end, f"wave {wave} started before wave {wave - 1} ended"
    messages = list(
        StageEvent.objects.filter(coordination=coordination, data__has_key="waves").values_list("message", flat=True)
    )
    assert messages == [
        "📦 wave 1 of 3: 1 environment",
        "📦 wave 2 of 3: 5 environments",
        "📦 wave 3 of 3: 14 environments",
    ]


def test_a_failing_canary_with_no_failures_allowed_runs_one_script_and_cancels_the_rest(
    remote, make_ssh_environment, qcluster
):
    rollout_defaults(batch_size=[1, "100%"], max_failures=0)
    for n in range(6):
        make_ssh_environment(f"env_{n}", script(remote, "broken.sh", 0, exit_code=1))

    coordination = ended(coordination_start(triggered_by=TriggerSource.COMMAND))

    assert coordination.status == C.FAILED
    assert list(times(remote, "start")) == ["env_0"]
    rest = coordination.targets.exclude(environment_id="env_0")
    assert set(rest.values_list("status", "reason")) == {(T.CANCELLED, "failure_budget")}
    assert "failure budget" in coordination.error
    assert not StageEvent.objects.filter(coordination=coordination, data__wave=2).exists()  # wave 2 never opened


@sqlite_pass_only  # wave sizes and the budget are Python; the 20-minute budget
def test_a_budget_of_two_stops_after_the_third_failure(remote, make_ssh_environment, qcluster):
    rollout_defaults(parallel_limit=1, max_failures=2)
    for n in range(5):
        make_ssh_environment(f"env_{n}", script(remote, "broken.sh", 0, exit_code=1))

    coordination = ended(coordination_start(triggered_by=TriggerSource.COMMAND))

    assert coordination.status == C.FAILED
    assert sorted(times(remote, "start")) == ["env_0", "env_1", "env_2"]
    assert statuses(coordination) == {
        "env_0": T.FAILED,
        "env_1": T.FAILED,
        "env_2": T.FAILED,
        "env_3": T.CANCELLED,
        "env_4": T.CANCELLED,
    }
    cancelled = coordination.targets.get(environment_id="env_3")
    assert cancelled.reason == "failure_budget"
    assert "3 environments failed, at most 2 may" in cancelled.error


def test_a_percentage_budget_is_resolved_against_the_targets_when_the_run_is_created(remote, make_ssh_environment):
    rollout_defaults()
    for n in range(10):
        make_ssh_environment(f"env_{n}", script(remote, "ok.sh", 0))
    coordination = coordination_start(
        triggered_by=TriggerSource.COMMAND, rollout={"max_failures": "25%", "batch_size": "30%"}
    )
    assert coordination.rollout["failure_budget"] == 2
    assert coordination.rollout["waves"] == [3, 3, 3, 1]


def awaiting(coordination) -> bool:
    return Coordination.objects.get(pk=coordination.pk).status == C.AWAITING_APPROVAL


def test_approval_gate_survives_a_kill_9_of_the_worker_and_then_runs_the_rest(
    remote, make_ssh_environment, start_qcluster, django_user_model, http_server
):
    rollout_defaults(batch_size=[1, "100%"], pause_after_first_batch="approval")
    SettingsBlock.objects.create(
        name="notification_settings",
        values={"enable_notifications": True, "notification_webhook": http_server.url("/hook")},
    )
    for n in range(4):
        make_ssh_environment(f"env_{n}", script(remote, "ok.sh", 0.1))
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    first = start_qcluster(**FAST_RECOVERY)
    wait_until(lambda: awaiting(coordination), 60, "the approval gate")
    wait_until(lambda: http_server.requests, 30, "the awaiting-approval notification")
    (announced,) = [request.json() for request in http_server.requests]
    assert announced["type"] == "coordination.awaiting_approval"
    assert announced["data"]["status"] == C.AWAITING_APPROVAL
    assert announced["text"].startswith(f"✋ Deployment {coordination.coordination_id} awaits approval")

    # Parked: the first wave ran, nothing of the second; no worker holds it.
    assert list(times(remote, "start")) == ["env_0"]
    assert not RunLease.objects.filter(coordination=coordination).exists()
    gate = StageEvent.objects.get(coordination=coordination, new_status=C.AWAITING_APPROVAL)
    assert gate.message.startswith("✋ first wave done (1 succeeded, 0 failed)")

    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    second = start_qcluster(**FAST_RECOVERY)
    time.sleep(3)  # the reaper's requeue period passes three times: the gate holds
    assert awaiting(coordination)
    assert list(times(remote, "start")) == ["env_0"]

    admin = django_user_model.objects.create_user("approver", password="x")
    coordination_approve(coordination=coordination, user=admin)
    coordination = ended(coordination)

    assert coordination.status == C.COMPLETED, second.output()[-3000:]
    assert sorted(times(remote, "start")) == ["env_0", "env_1", "env_2", "env_3"]
    assert coordination.approved_by == admin
    approved = StageEvent.objects.get(coordination=coordination, old_status=C.AWAITING_APPROVAL)
    assert (approved.new_status, approved.data) == (C.LOCAL_DEPLOYING, {"approved_by": "approver"})
    wait_until(lambda: len(http_server.requests) == 2, 30, "the end notification")
    assert http_server.requests[1].json()["type"] == "coordination.ended"


def test_cancel_while_awaiting_approval_cancels_the_rest(remote, make_ssh_environment, qcluster):
    rollout_defaults(batch_size=[1, "100%"], pause_after_first_batch="approval")
    for n in range(3):
        make_ssh_environment(f"env_{n}", script(remote, "ok.sh", 0))
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    wait_until(lambda: awaiting(coordination), 60, "the approval gate")

    coordination_cancel(coordination=coordination)

    coordination.refresh_from_db()
    assert coordination.status == C.CANCELLED
    assert statuses(coordination) == {"env_0": T.SUCCEEDED, "env_1": T.CANCELLED, "env_2": T.CANCELLED}
    assert list(times(remote, "start")) == ["env_0"]


def test_kill_9_mid_wave_never_runs_the_next_wave_early_nor_a_script_twice(
    remote, make_ssh_environment, start_qcluster
):
    """The second wave's scripts run detached: they go on while no worker lives, the new
    worker re-attaches and they end as they did; the third wave opens only after that."""
    rollout_defaults(batch_size=2)
    for n in range(6):
        make_ssh_environment(f"env_{n}", script(remote, f"env_{n}.sh", 0.1 if n in (0, 1, 4, 5) else 8))
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    first = start_qcluster(**FAST_RECOVERY)

    def second_wave_running():
        return coordination.targets.filter(wave=2, status=T.RUNNING).count() == 2

    try:
        wait_until(second_wave_running, 60, "the second wave to run")
    except AssertionError as timed_out:  # say what the worker did (a rare timeout under load)
        raise AssertionError(f"{timed_out}; {statuses(coordination)}\n{first.output()[-6000:]}") from None
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    wait_for_leases_to_expire()
    start_qcluster(**FAST_RECOVERY)
    coordination = ended(coordination)

    final = statuses(coordination)
    assert final == {f"env_{n}": T.SUCCEEDED for n in range(6)}
    log = remote_log(remote)
    assert sorted(env for kind, env, _, _ in log if kind == "start") == [f"env_{n}" for n in range(6)]
    # Wave 3 opened only once wave 2 had ended (its scripts' ends seen by the new worker).
    wave_2_ended = max(coordination.targets.filter(wave=2).values_list("finished_at", flat=True))
    third_started = min(times(remote, "start")[env] for env in ("env_4", "env_5"))
    assert third_started >= wave_2_ended.timestamp()


@sqlite_pass_only
def test_kill_9_during_a_pause_between_waves_waits_out_the_same_pause(remote, make_ssh_environment, start_qcluster):
    rollout_defaults(batch_size=1, batch_pause_seconds=4)
    for n in range(3):
        make_ssh_environment(f"env_{n}", script(remote, "ok.sh", 0))
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    first = start_qcluster(**FAST_RECOVERY)

    def pausing():
        return Coordination.objects.filter(pk=coordination.pk, wave=1, next_wave_at__isnull=False).exists()

    wait_until(pausing, 60, "the pause after wave 1")
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    resume_at = Coordination.objects.get(pk=coordination.pk).next_wave_at
    start_qcluster(**FAST_RECOVERY)
    coordination = ended(coordination)

    assert coordination.status == C.COMPLETED
    started = times(remote, "start")
    assert started["env_1"] >= resume_at.timestamp()
    assert sorted(started) == ["env_0", "env_1", "env_2"]
    pauses = StageEvent.objects.filter(coordination=coordination, data__has_key="pause_seconds")
    assert [event.data["wave"] for event in pauses] == [1, 2]  # one pause per gap, not a new one on takeover


# --- One run per machine ---------------------------------------------------------------------


def intervals(remote: Path) -> dict[str, tuple[float, float | None]]:
    rows = remote_log(remote)
    return {
        coordination_id: (
            next(at for kind, _, c, at in rows if kind == "start" and c == coordination_id),
            next((at for kind, _, c, at in rows if kind == "end" and c == coordination_id), None),
        )
        for coordination_id in {c for _, _, c, _ in rows}
    }


def test_queue_runs_the_second_coordination_on_a_machine_after_the_first(remote, make_ssh_environment, qcluster):
    rollout_defaults()
    make_ssh_environment("shared", script(remote, "slow.sh", 2))
    first = coordination_start(triggered_by=TriggerSource.COMMAND)
    wait_until(lambda: first.targets.filter(status=T.RUNNING).exists(), 60, "the first run to start")
    second = coordination_start(triggered_by=TriggerSource.COMMAND)

    waiting = second.targets.get()
    wait_until(
        lambda: CoordinationTarget.objects.filter(pk=waiting.pk, waiting_for=first.coordination_id).exists(),
        30,
        "the second run to wait for the first",
    )
    assert ended(second).status == C.COMPLETED
    assert ended(first).status == C.COMPLETED
    runs = intervals(remote)
    assert runs[second.coordination_id][0] >= runs[first.coordination_id][1], runs
    note = StageEvent.objects.get(target=waiting, data__waiting_for=first.coordination_id)
    assert note.message == f"waiting for {first.coordination_id}, which holds this environment"
    second_target = CoordinationTarget.objects.get(pk=waiting.pk)
    assert second_target.waiting_for == ""  # cleared once it started
    # Its own timeout counted from its own start: the run took its 2 s, not its wait.
    assert (second_target.finished_at - second_target.started_at) < timedelta(seconds=30)


def test_reject_refuses_a_coordination_over_a_busy_machine_and_changes_nothing(remote, make_ssh_environment, qcluster):
    rollout_defaults()
    make_ssh_environment("shared", script(remote, "slow.sh", 2))
    make_ssh_environment("free", script(remote, "ok.sh", 0))
    first = coordination_start(triggered_by=TriggerSource.COMMAND, environment_ids=["shared"])
    before = (Coordination.objects.count(), CoordinationTarget.objects.count(), StageEvent.objects.count())

    with pytest.raises(EnvironmentsBusy) as refused:
        coordination_start(triggered_by=TriggerSource.COMMAND, rollout={"concurrency": "reject"})

    assert refused.value.busy == {"shared": first.coordination_id}
    assert f"shared (in {first.coordination_id})" in refused.value.message
    assert (Coordination.objects.count(), CoordinationTarget.objects.count()) == before[:2]
    assert ended(first).status == C.COMPLETED
    # Once the first has ended, the machine is free again.
    assert ended(coordination_start(triggered_by=TriggerSource.COMMAND, rollout={"concurrency": "reject"})).status == (
        C.COMPLETED
    )


def test_supersede_hangs_up_the_older_run_and_runs_the_newer_after_it(remote, make_ssh_environment, qcluster):
    rollout_defaults()
    first_run_hangs = script(remote, "first-hangs.sh", 0)
    # The first run on the machine hangs (the newer one must hang it up); later ones end.
    first_run_hangs.write_text(
        first_run_hangs.read_text().replace(
            "sleep 0", f'[ -e "{remote}/ran" ] || {{ touch "{remote}/ran"; sleep 60; }}'
        )
    )
    make_ssh_environment("shared", first_run_hangs)
    make_ssh_environment("later", script(remote, "ok.sh", 0))
    first = coordination_start(
        triggered_by=TriggerSource.COMMAND, environment_ids=["shared", "later"], rollout={"batch_size": 1}
    )
    wait_until(lambda: first.targets.filter(status=T.RUNNING).exists(), 60, "the first run to start")

    second = coordination_start(
        triggered_by=TriggerSource.COMMAND, environment_ids=["shared", "later"], rollout={"concurrency": "supersede"}
    )
    first = ended(first, timeout=30)
    second = ended(second, timeout=60)

    assert first.status == C.CANCELLED
    assert first.error == f"superseded by {second.coordination_id}"
    older = first.targets.get(environment_id="shared")
    assert (older.status, older.reason) == (T.CANCELLED, "superseded")
    assert second.coordination_id in older.error
    never = first.targets.get(environment_id="later")
    assert (never.status, never.reason) == (T.CANCELLED, "superseded")
    assert second.status == C.COMPLETED
    log = remote_log(remote)
    first_start = next(at for kind, env, c, at in log if kind == "start" and c == first.coordination_id)
    second_start = next(at for kind, env, c, at in log if c == second.coordination_id and env == "shared")
    assert not [row for row in log if row[0] == "end" and row[2] == first.coordination_id]  # hung up
    assert second_start >= older.finished_at.timestamp() > first_start


@sqlite_pass_only
def test_a_rollout_longer_than_one_task_goes_on_in_fresh_tasks_between_waves(
    remote, make_ssh_environment, start_qcluster
):
    # Q_TIMEOUT 120 (its least) leaves each task 60 s. A wave whose environment timeout
    # (55 s) does not fit in what is left (the second, 12 s in) opens in a fresh task
    # instead of being cut off by the task's deadline.
    rollout_defaults(batch_size=1)
    for n in range(2):
        make_ssh_environment(f"env_{n}", script(remote, "slow.sh", 12), timeout=55)
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    cluster = start_qcluster(Q_TIMEOUT="120")

    coordination = ended(coordination, timeout=180)

    assert coordination.status == C.COMPLETED, (coordination.error, cluster.output()[-3000:])
    assert sorted(times(remote, "end")) == [f"env_{n}" for n in range(2)]
    handed = StageEvent.objects.filter(coordination=coordination, message__startswith="🔁 handed to a fresh worker")
    assert handed.count() >= 1
    assert "the next wave" in handed.first().message


def test_superseding_everything_a_parked_rollout_had_left_ends_it(remote, make_ssh_environment, qcluster):
    rollout_defaults(batch_size=[1, "100%"], pause_after_first_batch="approval")
    for n in range(3):
        make_ssh_environment(f"env_{n}", script(remote, "ok.sh", 0))
    parked = coordination_start(triggered_by=TriggerSource.COMMAND)
    wait_until(lambda: awaiting(parked), 60, "the approval gate")

    newer = coordination_start(
        triggered_by=TriggerSource.COMMAND,
        environment_ids=["env_1", "env_2"],
        rollout={"concurrency": "supersede", "pause_after_first_batch": None},
    )

    parked.refresh_from_db()
    assert parked.status == C.CANCELLED
    assert parked.error == f"superseded by {newer.coordination_id}"
    assert statuses(parked) == {"env_0": T.SUCCEEDED, "env_1": T.CANCELLED, "env_2": T.CANCELLED}
    assert ended(newer).status == C.COMPLETED
    started = [env for kind, env, c, _ in remote_log(remote) if kind == "start" and c == newer.coordination_id]
    assert sorted(started) == ["env_1", "env_2"]


def test_superseding_part_of_a_parked_rollout_leaves_it_awaiting_approval(remote, make_ssh_environment, qcluster):
    rollout_defaults(batch_size=[1, "100%"], pause_after_first_batch="approval")
    for n in range(3):
        make_ssh_environment(f"env_{n}", script(remote, "ok.sh", 0))
    parked = coordination_start(triggered_by=TriggerSource.COMMAND)
    wait_until(lambda: awaiting(parked), 60, "the approval gate")

    newer = coordination_start(
        triggered_by=TriggerSource.COMMAND,
        environment_ids=["env_1"],
        rollout={"concurrency": "supersede", "pause_after_first_batch": None},
    )

    assert awaiting(parked)
    assert ended(newer).status == C.COMPLETED
    coordination_approve(coordination=parked)
    parked = ended(parked)
    # env_1 went to the newer coordination; the approval ran what was left.
    assert statuses(parked) == {"env_0": T.SUCCEEDED, "env_1": T.CANCELLED, "env_2": T.SUCCEEDED}
    assert parked.targets.get(environment_id="env_1").reason == "superseded"
