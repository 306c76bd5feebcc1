"""Detached SSH runs end to end (issue 16): a real loopback sshd and real qcluster processes
killed with -9 or SIGTERM, connections dropped mid-run, cancels and timeouts, a worker that
died between "connected" and "started". Scripts record each start on the remote side; `ps`
through the same sshd says what is left of them on the machine."""

import contextlib
import os
import pwd
import signal
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    RunLease,
    StageEvent,
    TargetStatus as T,
    TriggerSource,
)
from deployments.runner.detached import run_id_for
from deployments.script_output import output_read
from deployments.services import coordination_cancel, coordination_start
from environments.connectors import ssh_runs
from environments.models import SettingsBlock
from tests.support.leases import wait_for_leases_to_expire
from tests.support.passes import sqlite_pass_only
from tests.support.processes import wait_until
from tests.support.sshd import connect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Short leases so a dead worker is noticed in seconds, not the production 30.
FAST_RECOVERY = {"DEPLOYMENT_LEASE_SECONDS": "2", "DEPLOYMENT_REQUEUE_SECONDS": "1", "Q_WORKERS": "1"}


@pytest.fixture
def remote(sshd):
    """A folder of this test's own on the remote side (the sshd lives for the session)."""
    folder = Path(tempfile.mkdtemp(prefix="detached-", dir=sshd.scripts))
    folder.chmod(0o777)
    return folder


# Lines printed before the sleep, a fifth of a second apart, each with its last character
# (✓, three bytes in UTF-8) written in two halves: a worker killed or let go mid-output, or
# mid-character, must leave an offset the next one reads on from without a loss or a repeat.
STREAMED_LINES = 10


def lines_script(remote: Path, name: str, *, seconds: float, code: int = 0) -> Path:
    """Records its start (and pid) on the remote side, streams lines, sleeps, prints three
    more and exits `code`."""
    path = remote / name
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$ENVIRONMENT_ID $$" >> "{remote}/starts"\n'
        f"n=1; while [ $n -le {STREAMED_LINES} ]; do\n"
        "  printf '%s before %s \\342\\234' \"$ENVIRONMENT_ID\" $n; sleep 0.1; printf '\\223\\n'; sleep 0.1\n"
        "  n=$((n + 1))\n"
        "done\n"
        f"sleep {seconds}\n"
        'for n in 1 2 3; do echo "$ENVIRONMENT_ID after $n ✓"; done\n'
        f"exit {code}\n",
        encoding="utf-8",
    )
    path.chmod(0o755)
    return path


def expected_output(environment_id: str) -> str:
    before = "".join(f"{environment_id} before {n} ✓\n" for n in range(1, STREAMED_LINES + 1))
    return before + "".join(f"{environment_id} after {n} ✓\n" for n in (1, 2, 3))


def long_script(remote: Path) -> Path:
    """Runs a minute, with a child `sleep` of its own in the background."""
    path = remote / "long.sh"
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$ENVIRONMENT_ID $$" >> "{remote}/starts"\n'
        "sleep 60 &\n"
        f'echo "$ENVIRONMENT_ID $!" >> "{remote}/children"\n'
        "echo started\n"
        "sleep 60\n"
    )
    path.chmod(0o755)
    return path


def starts(remote: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    path = remote / "starts"
    for line in path.read_text().splitlines() if path.exists() else []:
        env = line.split()[0]
        counts[env] = counts.get(env, 0) + 1
    return counts


def pids(remote: Path, name: str = "starts") -> dict[str, int]:
    return {line.split()[0]: int(line.split()[1]) for line in (remote / name).read_text().splitlines()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def remote_processes(sshd) -> list[tuple[int, int, str]]:
    """(pid, pgid, args) of every live process on the machine, as `ps` run through the
    sshd sees them (zombies left out)."""
    client = connect(sshd)
    try:
        _, stdout, _ = client.exec_command("ps -eo pid=,pgid=,stat=,args=", timeout=10)
        lines = stdout.read().decode().splitlines()
    finally:
        client.close()
    processes = []
    for line in lines:
        pid, pgid, stat, *args = line.split(None, 3)
        if not stat.startswith("Z"):
            processes.append((int(pid), int(pgid), args[0] if args else ""))
    return processes


def run_directories_left(sshd, coordination) -> list[str]:
    """The coordination's run directories still in the sshd user's ~/.powerautomation/runs."""
    runs = Path(pwd.getpwnam(sshd.user).pw_dir) / ".powerautomation" / "runs"
    run_ids = list(coordination.targets.values_list("remote_run_id", flat=True))
    assert all(run_ids), "every target ran detached"
    return [run_id for run_id in run_ids if (runs / run_id).exists()]


def settings_blocks(parallel_limit: int):
    SettingsBlock.objects.create(
        name="default_settings", values={"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    )
    SettingsBlock.objects.create(name="deployment_settings", values={"parallel_limit": parallel_limit})


def statuses(coordination) -> dict[str, str]:
    return dict(coordination.targets.values_list("environment_id", "status"))


def all_printing(coordination) -> bool:
    """Every script runs and its first line is in the record (the rest is on its way)."""
    targets = list(coordination.targets.all())
    return all(target.status == T.RUNNING and "before 1 ✓" in target.output_tail for target in targets)


def wait_for_the_end(coordination, timeout: float = 60) -> Coordination:
    wait_until(lambda: Coordination.objects.get(pk=coordination.pk).is_terminal, timeout, "the coordination to end")
    coordination.refresh_from_db()
    return coordination


def assert_whole_and_once(remote: Path, coordination, *, failing: tuple[str, ...] = ()) -> None:
    """Every script ran exactly once, each record holds its whole output (every line once, in
    order) and its exit code, and none is interrupted."""
    final = statuses(coordination)
    assert starts(remote) == dict.fromkeys(final, 1), starts(remote)
    for target in coordination.targets.all():
        assert output_read(target).text == expected_output(target.environment_id), target.environment_id
        if target.environment_id in failing:
            assert (target.status, target.reason, target.exit_code) == (T.FAILED, "exit_code", 3)
        else:
            assert (target.status, target.exit_code) == (T.SUCCEEDED, 0), (target.environment_id, target.error)
    assert not coordination.targets.filter(status=T.INTERRUPTED).exists()


def kill_9(cluster) -> None:
    os.killpg(cluster.process.pid, signal.SIGKILL)
    cluster.process.wait(timeout=10)


def test_kill_9_of_the_cluster_while_twenty_detached_scripts_run_loses_nothing(
    remote, make_ssh_environment, start_qcluster, sshd
):
    """The issue's case: the scripts keep running on the machine, the next cluster
    re-attaches to each from its recorded offset and records its real exit code."""
    settings_blocks(parallel_limit=20)
    for n in range(19):
        make_ssh_environment(f"env_{n:02}", lines_script(remote, "six.sh", seconds=4))
    make_ssh_environment("env_fails", lines_script(remote, "fails.sh", seconds=4, code=3))
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    first = start_qcluster(**FAST_RECOVERY)
    wait_until(lambda: all_printing(coordination), 60, "the 20 scripts to print their first lines")

    kill_9(first)
    # Killed mid-output: the rest of it (often the rest of a character) is read on from
    # the recorded offset.
    tails = coordination.targets.values_list("output_tail", flat=True)
    assert any(f"before {STREAMED_LINES} ✓" not in tail for tail in tails)
    # The worker's death ends no script: they go on writing to their run directories.
    assert all(alive(pid) for pid in pids(remote).values())
    wait_for_leases_to_expire()
    second = start_qcluster(**FAST_RECOVERY)

    wait_for_the_end(coordination)
    assert coordination.status == C.FAILED, second.output()[-4000:]
    assert_whole_and_once(remote, coordination, failing=("env_fails",))
    ended = StageEvent.objects.get(coordination=coordination, environment_id="", new_status=C.FAILED)
    assert ended.data["failed"] == ["env_fails"]
    reattached = StageEvent.objects.filter(coordination=coordination, message__startswith="re-attaching")
    assert reattached.count() == 20
    assert run_directories_left(sshd, coordination) == []


@sqlite_pass_only
def test_sigterm_to_the_cluster_lets_detached_scripts_run_on_and_the_next_cluster_re_attaches(
    remote, make_ssh_environment, start_qcluster, sshd
):
    settings_blocks(parallel_limit=5)
    for n in range(5):
        make_ssh_environment(f"env_{n}", lines_script(remote, "six.sh", seconds=4))
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    first = start_qcluster(**FAST_RECOVERY, DEPLOYMENT_SHUTDOWN_GRACE_SECONDS="1")
    wait_until(lambda: all_printing(coordination), 60, "the scripts to print their first lines")

    first.process.send_signal(signal.SIGTERM)
    try:
        first.process.wait(timeout=90)  # django-q2's own shutdown takes a while on 2 busy cores
    except subprocess.TimeoutExpired:
        pytest.fail(f"qcluster did not exit within 90 s of SIGTERM:\n{first.output()[-4000:]}")

    # Let go, not interrupted: the targets still run and no worker holds them (that the
    # scripts were not killed shows in their whole output and exit code below).
    assert set(statuses(coordination).values()) == {T.RUNNING}, first.output()[-4000:]
    assert not coordination.targets.filter(lease__isnull=False).exists()
    let_go = StageEvent.objects.filter(coordination=coordination, message__contains="let go by a worker shutting down")
    assert let_go.count() == 5

    start_qcluster(**FAST_RECOVERY)
    wait_for_the_end(coordination)
    assert coordination.status == C.COMPLETED
    assert_whole_and_once(remote, coordination)
    reattached = StageEvent.objects.filter(coordination=coordination, message__startswith="re-attaching")
    assert reattached.count() == 5
    assert run_directories_left(sshd, coordination) == []


def session_processes(sshd) -> set[int]:
    """The sshd processes serving connections: the listener's descendants named sshd."""
    table = subprocess.run(["ps", "-eo", "pid=,ppid=,comm="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for line in table.splitlines():
        pid, ppid, comm = line.split(None, 2)
        children.setdefault(int(ppid), []).append((int(pid), comm.strip()))
    found, parents = set(), [sshd.process.pid]
    while parents:
        for pid, comm in children.get(parents.pop(), []):
            if comm == "sshd":
                found.add(pid)
                parents.append(pid)
    return found


@sqlite_pass_only
def test_ssh_connections_dropped_mid_run_are_opened_again_and_the_runs_end_whole(
    remote, make_ssh_environment, start_qcluster, sshd
):
    settings_blocks(parallel_limit=3)
    for n in range(3):
        make_ssh_environment(f"env_{n}", lines_script(remote, "four.sh", seconds=2))
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    start_qcluster(**FAST_RECOVERY)
    wait_until(lambda: all_printing(coordination), 60, "the scripts to print their first lines")

    dropped = session_processes(sshd)
    assert dropped, "the worker follows the runs over open connections"
    for pid in dropped:
        with contextlib.suppress(ProcessLookupError):  # gone with its parent, or a call's end
            os.kill(pid, signal.SIGKILL)
    # The worker connects again (new sessions) while the scripts run on.
    wait_until(lambda: session_processes(sshd) - dropped, 10, "the worker to connect again")

    wait_for_the_end(coordination)
    assert coordination.status == C.COMPLETED
    assert_whole_and_once(remote, coordination)
    assert run_directories_left(sshd, coordination) == []


def stop_event(coordination, environment_id: str, status: str) -> StageEvent:
    return StageEvent.objects.get(coordination=coordination, environment_id=environment_id, new_status=status)


@sqlite_pass_only
def test_cancel_and_timeout_leave_no_process_of_the_script_on_the_machine(
    remote, make_ssh_environment, start_qcluster, sshd
):
    settings_blocks(parallel_limit=2)
    make_ssh_environment("times_out", long_script(remote), timeout=3)
    make_ssh_environment("cancelled", long_script(remote), timeout=60)
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    start_qcluster(**FAST_RECOVERY)

    def both_running():
        return len(pids(remote, "children")) == 2 if (remote / "children").exists() else False

    wait_until(both_running, 30, "both scripts and their children to run")
    scripts, children = pids(remote), pids(remote, "children")
    groups = {pgid for pid, pgid, _ in remote_processes(sshd) if pid in scripts.values()}
    assert len(groups) == 2  # each run is a process group of its own, found by `ps` over SSH

    wait_until(lambda: statuses(coordination)["times_out"] == T.FAILED, 30, "the timeout")
    coordination_cancel(coordination=coordination, actor="the e2e test")
    wait_for_the_end(coordination)
    # A cancel ends the coordination at once; its worker then stops the running script.
    wait_until(lambda: T.RUNNING not in statuses(coordination).values(), 30, "the cancelled script to stop")

    assert coordination.status == C.CANCELLED
    assert coordination.targets.get(environment_id="times_out").reason == "timeout"
    assert coordination.targets.get(environment_id="cancelled").status == T.CANCELLED
    for environment_id, status in (("times_out", T.FAILED), ("cancelled", T.CANCELLED)):
        data = stop_event(coordination, environment_id, status).data
        assert (data["signal"], data["processes_left"]) == ("TERM", 0), data
    assert remote_leftovers(sshd, scripts, children, groups) == []
    assert run_directories_left(sshd, coordination) == []


def remote_leftovers(sshd, scripts: dict[str, int], children: dict[str, int], groups: set[int]) -> list:
    """Processes of the scripts still on the machine: theirs, their children's, their groups'."""
    ours = {*scripts.values(), *children.values()}
    return [process for process in remote_processes(sshd) if process[0] in ours or process[1] in groups]


@sqlite_pass_only
def test_a_cancel_and_a_timeout_that_come_while_no_worker_follows_are_carried_out_by_the_next(
    remote, make_ssh_environment, start_qcluster, sshd
):
    """The cluster is killed; meanwhile one coordination is cancelled and the other's
    environment runs past its timeout. The next cluster re-attaches to both runs to stop them."""
    settings_blocks(parallel_limit=2)
    make_ssh_environment("times_out", long_script(remote), timeout=4)
    make_ssh_environment("cancelled", long_script(remote), timeout=60)
    timing_out = coordination_start(triggered_by=TriggerSource.COMMAND, environment_ids=["times_out"])
    cancelled = coordination_start(triggered_by=TriggerSource.COMMAND, environment_ids=["cancelled"])
    first = start_qcluster(**{**FAST_RECOVERY, "Q_WORKERS": "2"})

    def both_running():
        running = [statuses(coordination) for coordination in (timing_out, cancelled)]
        return running == [{"times_out": T.RUNNING}, {"cancelled": T.RUNNING}] and len(starts(remote)) == 2

    wait_until(both_running, 30, "both scripts to run")
    wait_until(lambda: len(pids(remote, "children")) == 2, 10, "both children to run")
    scripts, children = pids(remote), pids(remote, "children")
    groups = {pgid for pid, pgid, _ in remote_processes(sshd) if pid in scripts.values()}
    kill_9(first)
    coordination_cancel(coordination=cancelled, actor="the e2e test")
    wait_for_leases_to_expire()
    timeout_at = timing_out.targets.get().started_at.timestamp() + 4
    time.sleep(max(0.0, timeout_at - time.time()))  # the timeout passes while no worker follows
    start_qcluster(**FAST_RECOVERY)

    wait_for_the_end(timing_out)
    wait_until(lambda: statuses(cancelled) == {"cancelled": T.CANCELLED}, 30, "the cancelled run to stop")
    assert timing_out.targets.get().reason == "timeout"
    for coordination, status in ((timing_out, T.FAILED), (cancelled, T.CANCELLED)):
        (environment_id,) = statuses(coordination)
        data = stop_event(coordination, environment_id, status).data
        assert (data["signal"], data["processes_left"]) == ("TERM", 0), data
        assert run_directories_left(sshd, coordination) == []
    assert remote_leftovers(sshd, scripts, children, groups) == []


@sqlite_pass_only
def test_a_worker_dead_between_connected_and_started_leaves_the_decision_to_the_run_directory(
    remote, make_ssh_environment, start_qcluster, sshd
):
    """Both targets are `triggering` under a dead worker's lease, with their run ids: one
    run directory exists (that worker had started the script), the other does not (it
    died before). The next worker follows the first and starts the second, each once."""
    settings_blocks(parallel_limit=2)
    started_script = lines_script(remote, "three.sh", seconds=1)
    make_ssh_environment("started_before", started_script)
    make_ssh_environment("never_started", lines_script(remote, "quick.sh", seconds=0))
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    dead = RunLease.objects.create(
        coordination=coordination, owner="gone:1", is_lead=True, expires_at=timezone.now() - timedelta(minutes=1)
    )
    # What the dead worker's claim left (no transition table: the rows as a crash leaves them).
    Coordination.objects.filter(pk=coordination.pk).update(status=C.LOCAL_TRIGGERING, wave=1)
    for target in coordination.targets.all():
        CoordinationTarget.objects.filter(pk=target.pk).update(
            status=T.TRIGGERING, lease=dead, remote_run_id=run_id_for(coordination, target), started_at=timezone.now()
        )
    started = coordination.targets.get(environment_id="started_before")
    client = connect(sshd)
    try:
        start = ssh_runs.run_start(
            client, started.remote_run_id, f"exec {started_script}", {"ENVIRONMENT_ID": "started_before"}
        )
    finally:
        client.close()
    assert start.started

    start_qcluster(**FAST_RECOVERY)
    wait_for_the_end(coordination)
    assert coordination.status == C.COMPLETED
    assert_whole_and_once(remote, coordination)
    assert "already started" in stop_event(coordination, "started_before", T.RUNNING).message
    assert "already started" not in stop_event(coordination, "never_started", T.RUNNING).message
    assert run_directories_left(sshd, coordination) == []
