"""What keeps a rollout honest when workers are slow, presumed dead or scarce: a task that
lost its lease claims nothing, long pauses and queue waits give their worker back, a
target stopped during its health check is not a failure, and runs left in ended
coordinations do not hold their machines. Real sshd and qcluster where a worker is needed."""

import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from deployments.leases import Heartbeat, LeaseLost, coordinations_reap, lease_acquire
from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    RunLease,
    StageEvent,
    TargetStatus as T,
    TriggerSource,
)
from deployments.runner.schedule import Delivery
from deployments.runner.stopping import StopKind, Stopping
from deployments.runner.waves import Waves
from deployments.selectors import targets_waiting
from deployments.services import coordination_cancel, coordination_start
from environments.config import DeploymentDefaults
from environments.connectors import DeploymentContext
from environments.models import SettingsBlock
from tests.deployments.test_rollouts import ended, remote_log, rollout_defaults, script, times
from tests.support.http import Answer
from tests.support.passes import sqlite_pass_only
from tests.support.processes import wait_until


def start(**kwargs) -> Coordination:
    return coordination_start(triggered_by=TriggerSource.COMMAND, **kwargs)


def delivery_of(coordination: Coordination, lease: RunLease) -> Delivery:
    defaults = DeploymentDefaults.from_json(coordination.settings)
    return Delivery(
        coordination,
        wave=1,
        lead=True,
        defaults=defaults,
        context=DeploymentContext(coordination_id=coordination.coordination_id),
        stopping=Stopping(coordination.pk),
        heartbeat=Heartbeat(lease),
    )


# --- In-process: the rules ---------------------------------------------------------------


@pytest.mark.django_db
def test_a_task_whose_lease_was_reaped_claims_nothing(make_ssh_environment):
    make_ssh_environment("env_0", "./init_aicore.sh")
    coordination = start()
    lease = lease_acquire(coordination=coordination, lead=True)
    RunLease.objects.filter(pk=lease.pk).delete()  # the reaper took it: another lead owns the run
    delivery = delivery_of(coordination, lease)
    target = coordination.targets.select_related("remote_environment").get()

    with pytest.raises(LeaseLost):
        delivery._claim([target])

    assert CoordinationTarget.objects.get(pk=target.pk).status == T.PENDING
    assert not StageEvent.objects.filter(target=target).exists()


@pytest.mark.django_db
def test_a_lead_that_finds_the_next_wave_opened_by_another_leaves_instead_of_delivering(make_ssh_environment):
    for n in range(2):
        make_ssh_environment(f"env_{n}", "./init_aicore.sh")
    coordination = start(rollout={"batch_size": 1})
    lease = lease_acquire(coordination=coordination, lead=True)
    waves = Waves(coordination, stopping=Stopping(coordination.pk), heartbeat=Heartbeat(lease))
    Coordination.objects.filter(pk=coordination.pk).update(wave=1)  # a newer lead opened wave 1

    with pytest.raises(LeaseLost):
        waves.advance()

    assert Coordination.objects.get(pk=coordination.pk).wave == 1


@pytest.mark.django_db
@pytest.mark.parametrize("status", [C.FAILED, C.COMPLETED, C.CANCELLED])
def test_a_run_stops_when_its_coordination_ended_elsewhere(make_ssh_environment, status):
    make_ssh_environment("env_0", "./init_aicore.sh")
    coordination = start()
    Coordination.objects.filter(pk=coordination.pk).update(status=status)
    stopping = Stopping(coordination.pk)

    stopping.check()

    assert stopping.stopped and stopping.kind == StopKind.CANCEL


@pytest.mark.django_db
def test_the_older_coordination_goes_first_on_every_machine_whatever_the_target_ids(make_ssh_environment):
    make_ssh_environment("x", "./init_aicore.sh")
    make_ssh_environment("y", "./init_aicore.sh")
    older = start(environment_ids=["y"])
    newer = start(environment_ids=["x", "y"])
    # The older one's target on x is created after the newer one's (concurrent starts
    # draw ids interleaved on PostgreSQL): it still does not wait for the newer one.
    x = newer.targets.get(environment_id="x").remote_environment
    older_on_x = CoordinationTarget.objects.create(coordination=older, remote_environment=x, environment_id="x")

    assert targets_waiting([older_on_x, older.targets.get(environment_id="y")]) == {}
    newer_waits = targets_waiting(list(newer.targets.all()))
    assert set(newer_waits.values()) == {older.coordination_id}
    assert len(newer_waits) == 2


@pytest.mark.django_db
def test_the_reaper_ends_a_run_left_going_in_an_ended_coordination(make_ssh_environment):
    make_ssh_environment("env_0", "./init_aicore.sh")
    stale = start()
    target = stale.targets.get()
    CoordinationTarget.objects.filter(pk=target.pk).update(status=T.RUNNING)
    Coordination.objects.filter(pk=stale.pk).update(status=C.CANCELLED)

    coordinations_reap()

    target.refresh_from_db()
    assert (target.status, target.reason) == (T.INTERRUPTED, "interrupted")
    event = StageEvent.objects.get(target=target, new_status=T.INTERRUPTED)
    assert "its coordination had ended" in event.message


@pytest.mark.django_db
def test_the_reaper_leaves_a_coordination_alone_until_its_long_pause_is_over(make_ssh_environment):
    make_ssh_environment("env_0", "./init_aicore.sh")
    make_ssh_environment("env_1", "./init_aicore.sh")
    coordination = start(rollout={"batch_size": 1})
    past = timezone.now() - timedelta(hours=1)
    Coordination.objects.filter(pk=coordination.pk).update(
        status=C.LOCAL_DEPLOYING, wave=1, next_wave_at=timezone.now() + timedelta(hours=3), created_at=past
    )
    assert coordinations_reap().requeued == 0

    Coordination.objects.filter(pk=coordination.pk).update(next_wave_at=past)
    assert coordinations_reap().requeued == 1


# --- Real workers ----------------------------------------------------------------------------


@pytest.fixture
def remote(sshd):
    folder = Path(tempfile.mkdtemp(prefix="recovery-", dir=sshd.scripts))
    folder.chmod(0o777)
    return folder


@sqlite_pass_only
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_pause_longer_than_a_task_frees_the_worker_once_and_the_rollout_goes_on_after_it(
    remote, make_ssh_environment, start_qcluster
):
    # Q_TIMEOUT 120 gives a task 60 s: a 35 s pause does not fit after the margin. The
    # worker is freed (one event, no task after task), and a worker takes it up after.
    rollout_defaults(batch_size=1, batch_pause_seconds=35)
    for n in range(2):
        make_ssh_environment(f"env_{n}", script(remote, "ok.sh", 0))
    coordination = start()
    first = start_qcluster(Q_TIMEOUT="120")
    sleeping = StageEvent.objects.filter(coordination=coordination, data__has_key="sleeping_until")
    wait_until(sleeping.exists, 60, "the pause to free the worker")
    time.sleep(3)

    assert sleeping.count() == 1
    assert not StageEvent.objects.filter(coordination=coordination, message__startswith="🔁").exists()
    assert not RunLease.objects.filter(coordination=coordination).exists()
    assert list(times(remote, "start")) == ["env_0"]

    resume_at = Coordination.objects.get(pk=coordination.pk).next_wave_at
    wait_until(lambda: timezone.now() > resume_at, 60, "the pause's end")
    first.stop()
    start_qcluster(Q_TIMEOUT="120")  # a worker that starts runs the reaper at once
    coordination = ended(coordination, timeout=60)

    assert coordination.status == C.COMPLETED
    assert times(remote, "start")["env_1"] >= resume_at.timestamp()


@sqlite_pass_only  # a queued task's wait is a Python rule; the 20-minute budget
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_queued_coordination_gives_its_worker_back_and_is_woken_when_the_machine_frees(
    remote, make_ssh_environment, start_qcluster
):
    rollout_defaults()
    # The first run holds the machine past the 10 s a queued task waits before it lets go;
    # the second (woken after it) is quick.
    slow_then_quick = script(remote, "slow_then_quick.sh", 0)
    body = slow_then_quick.read_text().replace(
        "sleep 0\n", f'if [ ! -e "{remote}/ran" ]; then touch "{remote}/ran"; sleep 14; else sleep 1; fi\n'
    )
    slow_then_quick.write_text(body)
    make_ssh_environment("shared", slow_then_quick)
    # The reaper's quiet period is an hour here: only the wake-up can bring the second back.
    start_qcluster(DEPLOYMENT_REQUEUE_SECONDS="3600", DEPLOYMENT_LEASE_SECONDS="1800")
    first = start()
    wait_until(lambda: first.targets.filter(status=T.RUNNING).exists(), 60, "the first run to start")
    second = start()

    def second_let_go():
        return (
            CoordinationTarget.objects.filter(coordination=second, waiting_for=first.coordination_id).exists()
            and not RunLease.objects.filter(coordination=second).exists()
        )

    wait_until(second_let_go, 40, "the second coordination to give its worker back while it waits")
    assert first.targets.get().status == T.RUNNING  # it let go while the machine was still busy

    assert ended(first).status == C.COMPLETED
    assert ended(second, timeout=60).status == C.COMPLETED
    runs = [(kind, c) for kind, _, c, _ in remote_log(remote)]
    assert runs == [
        ("start", first.coordination_id),
        ("end", first.coordination_id),
        ("start", second.coordination_id),
        ("end", second.coordination_id),
    ]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_target_stopped_during_its_health_check_is_cancelled_not_failed(
    remote, make_ssh_environment, http_server, qcluster
):
    SettingsBlock.objects.create(
        name="default_settings",
        values={"retry_count": 0, "retry_delay": 5, "health_check_retries": 5, "health_check_timeout": 5},
    )
    http_server.answer("/health", *[Answer(503, "starting")] * 10)
    make_ssh_environment("env_0", script(remote, "ok.sh", 0), health_check_url=http_server.url("/health"))
    coordination = start(rollout={"max_failures": 0})
    wait_until(lambda: http_server.requests, 60, "the first health check")

    coordination_cancel(coordination=coordination)

    coordination = ended(coordination)
    target = coordination.targets.get()
    wait_until(lambda: CoordinationTarget.objects.get(pk=target.pk).is_terminal, 30, "the target to end")
    target.refresh_from_db()
    assert (target.status, target.reason) == (T.CANCELLED, "cancelled")
    assert not StageEvent.objects.filter(target=target, new_status=T.FAILED).exists()
