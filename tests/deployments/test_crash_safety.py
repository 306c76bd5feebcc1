"""Workers die; coordinations do not get stuck. Real qcluster processes killed with -9 or
SIGTERM mid-run, a loopback sshd whose scripts record every start on the remote side.

The kill and SIGTERM cases here run in attached mode (ssh_settings.detach false: the
session owns the script); detached runs, which outlive the worker, are in
test_detached_e2e.py."""

import os
import signal
import subprocess
import time

import pytest

from deployments.models import Coordination, CoordinationStatus as C, StageEvent, TargetStatus as T, TriggerSource
from deployments.services import coordination_start
from environments.models import SettingsBlock
from tests.support.leases import wait_for_leases_to_expire
from tests.support.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Short leases so a dead worker is noticed in seconds, not the production 30.
FAST_RECOVERY = {"DEPLOYMENT_LEASE_SECONDS": "2", "DEPLOYMENT_REQUEUE_SECONDS": "1", "Q_WORKERS": "1"}


@pytest.fixture
def remote(sshd, tmp_path_factory):
    """A folder of this test's own on the remote side (the sshd lives for the session)."""
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="run-", dir=sshd.scripts))
    folder.chmod(0o777)
    return folder


def script(remote, name: str, seconds: float):
    """Records each start (and its pid) on the remote side, then sleeps."""
    path = remote / name
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$ENVIRONMENT_ID $$" >> "{remote}/starts"\n'
        f"echo started\nsleep {seconds}\n"
        f'echo "$ENVIRONMENT_ID" >> "{remote}/finished"\n'
    )
    path.chmod(0o755)
    return path


def starts(remote) -> dict[str, int]:
    counts: dict[str, int] = {}
    path = remote / "starts"
    for line in path.read_text().splitlines() if path.exists() else []:
        env = line.split()[0]
        counts[env] = counts.get(env, 0) + 1
    return counts


def remote_pids(remote) -> list[int]:
    return [int(line.split()[1]) for line in (remote / "starts").read_text().splitlines()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_pids(cluster_pid: int) -> list[int]:
    """The processes running tasks: grandchildren of qcluster (under its sentinel) that
    have a coordinator's SSH connections open... found as the ones holding a lease."""
    from deployments.models import RunLease

    return sorted({int(owner.rsplit(":", 1)[1]) for owner in RunLease.objects.values_list("owner", flat=True)})


def statuses(coordination) -> dict[str, str]:
    return dict(coordination.targets.values_list("environment_id", "status"))


def settings_blocks(parallel_limit: int, *, detach: bool):
    SettingsBlock.objects.create(
        name="default_settings", values={"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    )
    SettingsBlock.objects.create(name="deployment_settings", values={"parallel_limit": parallel_limit})
    SettingsBlock.objects.create(name="ssh_settings", values={"detach": detach})


@pytest.fixture
def half_finished_run(remote, make_ssh_environment):
    """2 quick environments, 3 slow ones, 3 that can only start after a slow one ends;
    attached mode."""
    settings_blocks(parallel_limit=3, detach=False)
    for n in range(2):
        make_ssh_environment(f"a_quick_{n}", script(remote, "quick.sh", 0.1))
    for n in range(3):
        make_ssh_environment(f"b_slow_{n}", script(remote, "slow.sh", 30))
    for n in range(3):
        make_ssh_environment(f"c_later_{n}", script(remote, "later.sh", 0.1))
    return coordination_start(triggered_by=TriggerSource.COMMAND)


def slow_ones_running(coordination) -> bool:
    """The slow scripts run and their first output is in the record."""
    current = statuses(coordination)
    slow = coordination.targets.filter(environment_id__startswith="b_slow_", status=T.RUNNING)
    return (
        all(current[f"a_quick_{n}"] == T.SUCCEEDED for n in range(2))
        and all("started" in target.output_tail for target in slow)
        and slow.count() == 3
    )


def assert_recovered(remote, coordination):
    """Every environment ended; started ones ran once; the unknown ones are interrupted."""
    coordination.refresh_from_db()
    assert coordination.status == C.FAILED
    final = statuses(coordination)
    assert all(final[f"a_quick_{n}"] == T.SUCCEEDED for n in range(2)), final
    assert all(final[f"b_slow_{n}"] == T.INTERRUPTED for n in range(3)), final
    assert all(final[f"c_later_{n}"] == T.SUCCEEDED for n in range(3)), final
    assert set(starts(remote).values()) == {1}, starts(remote)
    assert len(starts(remote)) == 8
    slow = coordination.targets.get(environment_id="b_slow_0")
    assert "started" in slow.output_tail  # output received before the crash is kept
    assert not coordination.targets.exclude(status__in=[T.SUCCEEDED, T.INTERRUPTED]).exists()


def test_kill_9_of_the_cluster_mid_run_is_recovered_by_a_new_cluster(remote, half_finished_run, start_qcluster):
    coordination = half_finished_run
    first = start_qcluster(**FAST_RECOVERY)
    wait_until(lambda: slow_ones_running(coordination), 30, "the slow scripts to run")

    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    killed_at = time.monotonic()
    wait_for_leases_to_expire()
    start_qcluster(**FAST_RECOVERY)

    wait_until(lambda: Coordination.objects.get(pk=coordination.pk).is_terminal, 60, "the coordination to end")
    assert time.monotonic() - killed_at < 60
    assert_recovered(remote, coordination)
    # The sessions of the killed worker were hung up: no slow script is still running.
    wait_until(lambda: not [pid for pid in remote_pids(remote) if alive(pid)], 15, "the remote scripts to end")


@pytest.mark.parametrize("to_group", [False, True], ids=["sigterm-to-qcluster", "sigterm-to-the-worker-too"])
def test_sigterm_gives_running_sessions_a_grace_period_then_hands_the_rest_over(
    remote, half_finished_run, start_qcluster, to_group
):
    coordination = half_finished_run
    first = start_qcluster(**FAST_RECOVERY, DEPLOYMENT_SHUTDOWN_GRACE_SECONDS="1")
    wait_until(lambda: slow_ones_running(coordination), 30, "the slow scripts to run")

    if to_group:
        # The worker gets SIGTERM directly (as from `kill` or systemd's default control
        # group mode). django-q2's own parent process deadlocks on a group SIGTERM (its
        # sentinel dies inside a shared Event), so the test signals the worker alone.
        for pid in worker_pids(first.process.pid):
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not any(alive(pid) for pid in worker_pids(first.process.pid)), 30, "the worker to exit")
    else:
        first.process.send_signal(signal.SIGTERM)
        try:
            # Generous: the grace period is 1 s, but on a loaded 2-core machine django-q2's
            # own shutdown (pusher, workers, monitor) takes a while.
            first.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"qcluster did not exit within 90 s of SIGTERM:\n{first.output()}")

    # Nothing is left running: the slow sessions were hung up as interrupted; the rest
    # waits, pending, for a live worker.
    current = statuses(coordination)
    assert all(current[f"b_slow_{n}"] == T.INTERRUPTED for n in range(3)), f"{current}\n{first.output()[-4000:]}"
    assert all(current[f"c_later_{n}"] == T.PENDING for n in range(3)), current
    event = StageEvent.objects.filter(environment_id="b_slow_0", new_status=T.INTERRUPTED).get()
    assert "worker shut down" in event.message
    wait_until(lambda: not [pid for pid in remote_pids(remote) if alive(pid)], 15, "the remote scripts to end")

    start_qcluster(**FAST_RECOVERY)
    wait_until(lambda: Coordination.objects.get(pk=coordination.pk).is_terminal, 60, "the coordination to end")
    assert_recovered(remote, coordination)


def test_two_clusters_share_one_coordination_and_run_each_script_once(remote, make_ssh_environment, start_qcluster):
    settings_blocks(parallel_limit=8, detach=True)
    names = [f"env_{n:02}" for n in range(24)]
    for name in names:
        make_ssh_environment(name, script(remote, "shared.sh", 1))
    # More tasks than clusters: a busy cluster may hold one queued task in its own
    # prefetch queue (Redis broker) while the other takes the rest.
    shared = {**FAST_RECOVERY, "DEPLOYMENT_TASKS_PER_COORDINATION": "4"}
    start_qcluster(**shared)
    start_qcluster(**shared)

    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    wait_until(lambda: Coordination.objects.get(pk=coordination.pk).is_terminal, 90, "the coordination to end")

    coordination.refresh_from_db()
    assert coordination.status == C.COMPLETED
    assert starts(remote) == dict.fromkeys(names, 1)
    workers = {
        event.data["worker"] for event in StageEvent.objects.filter(coordination=coordination, new_status=T.TRIGGERING)
    }
    assert len(workers) == 2, workers


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="the 50-environment kill runs in the PostgreSQL + Redis suite (python -m tests.scaleout)",
)
def test_kill_9_mid_run_over_fifty_environments_on_postgres_and_redis(remote, make_ssh_environment, start_qcluster):
    """The issue's scale-out case: 50 environments whose script sleeps 5 s; the Redis broker
    has no acknowledgement, so only the reaper brings the run back. With 30 at a time the
    quick ten finish first, their slots go to the last slow ones, and the later ten are
    still pending at the kill. Attached mode."""
    settings_blocks(parallel_limit=30, detach=False)
    for n in range(10):
        make_ssh_environment(f"a_quick_{n:02}", script(remote, "quick.sh", 0.1))
    for n in range(30):
        make_ssh_environment(f"b_slow_{n:02}", script(remote, "slow5.sh", 5))
    for n in range(10):
        make_ssh_environment(f"c_later_{n:02}", script(remote, "later.sh", 0.1))
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    first = start_qcluster(**FAST_RECOVERY)

    def mid_run():
        current = statuses(coordination)
        quick_done = all(current[f"a_quick_{n:02}"] == T.SUCCEEDED for n in range(10))
        return quick_done and sum(1 for n in range(30) if current[f"b_slow_{n:02}"] == T.RUNNING) == 30

    wait_until(mid_run, 60, "30 slow scripts running")
    os.killpg(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=10)
    killed_at = time.monotonic()
    wait_for_leases_to_expire()
    start_qcluster(**FAST_RECOVERY)

    wait_until(lambda: Coordination.objects.get(pk=coordination.pk).is_terminal, 90, "the coordination to end")
    assert time.monotonic() - killed_at < 90
    coordination.refresh_from_db()
    final = statuses(coordination)
    assert coordination.status == C.FAILED
    assert [env for env, status in final.items() if status == T.SUCCEEDED] == sorted(
        [f"a_quick_{n:02}" for n in range(10)] + [f"c_later_{n:02}" for n in range(10)]
    )
    assert all(final[f"b_slow_{n:02}"] == T.INTERRUPTED for n in range(30)), final
    assert starts(remote) == dict.fromkeys(sorted(final), 1)
    wait_until(lambda: not [pid for pid in remote_pids(remote) if alive(pid)], 15, "the remote scripts to end")


@pytest.mark.skipif(
    bool(os.environ.get("REDIS_URL")),
    reason="the ORM broker keeps cluster stats in Django's cache; Redis keeps them as its own keys (e2e tests above)",
)
@pytest.mark.django_db
def test_a_worker_sees_its_cluster_stopping_past_the_keys_of_clusters_gone_before():
    """django-q2's own Stat.get_all() drops an expired cluster key and skips the next one,
    and writes the list back; the check reads the stats without either."""
    from types import SimpleNamespace

    from django.core.cache import cache
    from django_q.conf import Conf
    from django_q.signing import SignedPackage

    from deployments.cluster import cluster_of_worker_stopping

    ours = SimpleNamespace(workers=[os.getpid()], status=Conf.STOPPING)
    other = SimpleNamespace(workers=[1], status=Conf.IDLE)
    cache.set(Conf.Q_STAT, [f"{Conf.Q_STAT}:gone", f"{Conf.Q_STAT}:ours", f"{Conf.Q_STAT}:other"], None)
    cache.set(f"{Conf.Q_STAT}:ours", SignedPackage.dumps(ours, True), 30)
    cache.set(f"{Conf.Q_STAT}:other", SignedPackage.dumps(other, True), 30)

    assert cluster_of_worker_stopping(os.getpid()) is True
    assert cache.get(Conf.Q_STAT) == [f"{Conf.Q_STAT}:gone", f"{Conf.Q_STAT}:ours", f"{Conf.Q_STAT}:other"]

    cache.set(
        f"{Conf.Q_STAT}:ours", SignedPackage.dumps(SimpleNamespace(workers=[os.getpid()], status=Conf.IDLE), True)
    )
    assert cluster_of_worker_stopping(os.getpid()) is False
