"""Rollouts from the command line, end to end: `manage.py trigger_local --wait`,
`deployment_approve` and `deployment_cancel` in processes of their own, a real `qcluster`
doing the work, a real sshd on loopback running scripts that record what ran."""

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    StageEvent,
    TargetStatus as T,
    TriggerSource,
)
from deployments.services import coordination_cancel, coordination_start
from environments.models import SettingsBlock
from tests.support.passes import sqlite_pass_only
from tests.support.processes import ROOT, manage, stop_process, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GATE = ["--batch-size", "1,100%", "--pause-after-first", "approval"]


@pytest.fixture
def remote(sshd, transactional_db):
    """A folder of this test's own on the sshd's side, for its scripts and their log; no
    connection retries (a failure is the script's)."""
    SettingsBlock.objects.create(
        name="default_settings", values={"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    )
    folder = Path(tempfile.mkdtemp(prefix="rollout-cmd-", dir=sshd.scripts))
    folder.chmod(0o777)
    return folder


def script(remote: Path, name: str, body: str = "exit 0") -> Path:
    """Logs `<environment>` to `ran` when it starts, then runs `body`."""
    path = remote / name
    path.write_text(f'#!/bin/sh\necho "$ENVIRONMENT_ID" >> "{remote}/ran"\n{body}\n')
    path.chmod(0o755)
    return path


def ran(remote: Path) -> list[str]:
    path = remote / "ran"
    return path.read_text().splitlines() if path.exists() else []


def cluster_ready(qcluster) -> None:
    """The cluster has started (its workers take tasks from now on)."""
    wait_until(lambda: "running." in qcluster.output(), 60, "the cluster to start")


class Follower:
    """`manage.py trigger_local ARGS` in a process of its own; its output lines, read as
    they come."""

    def __init__(self, env: dict[str, str], *args: str):
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "trigger_local", *args],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.errors), daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def printed(self, start: str) -> list[int]:
        """The numbers of the lines printed so far that start with `start`."""
        return [number for number, line in enumerate(list(self.lines)) if line.startswith(start)]

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=10)
        return code

    def stop(self) -> None:
        stop_process(self.process)

    def output(self) -> str:
        return "\n".join(self.lines + ["--- stderr:"] + self.errors)


def gate_reached(coordination_id: str) -> bool:
    return Coordination.objects.filter(coordination_id=coordination_id, status=C.AWAITING_APPROVAL).exists()


def test_wait_follows_the_canary_through_the_approval_gate_to_the_end(remote, make_ssh_environment, qcluster):
    for n in range(3):
        make_ssh_environment(f"env_{n}", script(remote, "ok.sh"))
    follower = Follower(qcluster.env, "--wait", *GATE, "--coordination-id", "deploy_gate_a")
    try:
        wait_until(lambda: gate_reached("deploy_gate_a"), 90, "the approval gate")
        approve_line = "✋ awaiting approval: python manage.py deployment_approve deploy_gate_a"
        wait_until(lambda: follower.printed(approve_line), 30, "the approval line")
        # Parked: the canary ran, nothing else; the command still waits.
        assert ran(remote) == ["env_0"]
        assert follower.printed("📦 wave 1 of 2: 1 environment"), follower.output()
        assert not follower.printed("📦 wave 2")
        assert follower.process.poll() is None

        approved = manage(["deployment_approve", "deploy_gate_a"], qcluster.env)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert approved.stdout.startswith("👍 approved deploy_gate_a: wave 2 of 2 starts")
        code = follower.finish(timeout=90)
    finally:
        follower.stop()

    assert code == 0, follower.output() + qcluster.output()[-3000:]
    assert sorted(ran(remote)) == ["env_0", "env_1", "env_2"]
    in_order = [
        "📦 wave 1 of 2: 1 environment",
        "✋ first wave done (1 succeeded, 0 failed)",
        approve_line,
        "👍 approved by command (",
        "📦 wave 2 of 2: 2 environments",
        "🎉 all 3 succeeded",
    ]
    positions = [follower.printed(start) for start in in_order]
    assert all(len(found) == 1 for found in positions), follower.output()  # the approval line only once
    assert [found[0] for found in positions] == sorted(found[0] for found in positions), follower.output()
    assert Coordination.objects.get().status == C.COMPLETED


@sqlite_pass_only  # the command's exit codes; the 20-minute budget
def test_timeout_exits_3_while_awaiting_approval_and_cancel_ends_the_rest(remote, make_ssh_environment, qcluster):
    for n in range(3):
        make_ssh_environment(f"env_{n}", script(remote, "ok.sh"))
    cluster_ready(qcluster)  # the --timeout counts from the trigger: the cluster is up before it

    waited = manage(
        ["trigger_local", "--wait", "--timeout", "5", "--json", *GATE, "--coordination-id", "deploy_gate_b"],
        qcluster.env,
    )

    assert waited.returncode == 3, waited.stdout + waited.stderr + qcluster.output()[-3000:]
    assert json.loads(waited.stdout)["status"] == C.AWAITING_APPROVAL  # the record as the wait ended
    # With --json, stdout is the record alone: the approval line goes to stderr.
    assert "✋ awaiting approval: python manage.py deployment_approve deploy_gate_b" in waited.stderr
    assert gate_reached("deploy_gate_b")

    cancelled = manage(["deployment_cancel", "deploy_gate_b"], qcluster.env)
    again = manage(["deployment_cancel", "deploy_gate_b"], qcluster.env)

    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert cancelled.stdout == "🛑 cancelled deploy_gate_b\n"
    coordination = Coordination.objects.get()
    assert coordination.status == C.CANCELLED
    assert coordination.error.startswith("cancelled by command (")
    assert dict(coordination.targets.values_list("environment_id", "status")) == {
        "env_0": T.SUCCEEDED,
        "env_1": T.CANCELLED,
        "env_2": T.CANCELLED,
    }
    assert again.returncode == 1
    assert "coordination deploy_gate_b has already ended: it is cancelled" in again.stderr
    assert ran(remote) == ["env_0"]


def test_reject_over_a_busy_environment_exits_2_naming_it_and_its_holder(remote, make_ssh_environment, qcluster):
    make_ssh_environment("shared", script(remote, "slow.sh", "sleep 30"))
    make_ssh_environment("free", script(remote, "ok.sh"))
    holder = coordination_start(
        triggered_by=TriggerSource.COMMAND, environment_ids=["shared"], coordination_id="deploy_holder"
    )
    try:
        wait_until(lambda: holder.targets.filter(status=T.RUNNING).exists(), 60, "the holder's run to start")

        refused = manage(["trigger_local", "--wait", "--concurrency", "reject"], qcluster.env)

        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "shared (in deploy_holder)" in refused.stderr
        assert "nothing started" in refused.stderr
        assert list(Coordination.objects.values_list("coordination_id", flat=True)) == ["deploy_holder"]
        assert not CoordinationTarget.objects.exclude(coordination=holder).exists()
        assert not StageEvent.objects.exclude(coordination=holder).exists()
        assert ran(remote) == ["shared"]
    finally:
        coordination_cancel(coordination=holder)


def test_a_failing_canary_with_no_failures_allowed_runs_one_script_and_exits_1(remote, make_ssh_environment, qcluster):
    for n in range(3):
        make_ssh_environment(f"env_{n}", script(remote, "broken.sh", "exit 7"))

    result = manage(["trigger_local", "--wait", "--max-failures", "0", "--batch-size", "1,100%"], qcluster.env)

    assert result.returncode == 1, result.stdout + result.stderr + qcluster.output()[-3000:]
    assert ran(remote) == ["env_0"]
    assert "❌ env_0 (exit_code: script exited with 7)" in result.stdout
    assert "🛑 env_1 (failure_budget: not started: the failure budget is spent" in result.stdout
    assert "❌ the failure budget (0 failures allowed) is spent" in result.stdout
    assert "📦 wave 2" not in result.stdout
    coordination = Coordination.objects.get()
    assert coordination.status == C.FAILED
    assert set(coordination.targets.exclude(environment_id="env_0").values_list("status", "reason")) == {
        (T.CANCELLED, "failure_budget")
    }
