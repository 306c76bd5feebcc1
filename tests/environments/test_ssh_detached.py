"""The SSH connector's detached mode (environments/connectors/ssh_detached.py) against the
real OpenSSH server on loopback, with a reporter in place of the coordinator: no database.
The runner's side (re-attaching after a worker dies) is in
tests/deployments/test_detached_e2e.py."""

import dataclasses
import threading
import time
import uuid

import pytest

from environments.connectors import ConnectorError
from environments.connectors.base import RemoteRun
from environments.connectors.ssh import SSHConnector
from environments.connectors.ssh_runs import RunStatus, run_start, run_state, run_stop
from tests.environments.test_ssh_connector import make_context, make_target
from tests.support.ports import free_port
from tests.support.sshd import connect


class DetachedReporter:
    """Records what the connector reports, with each output's end offset; `ended` says
    whether the coordinator 'committed' the end (then the run directory may go)."""

    def __init__(self, *, commit_end: bool = True):
        self.stop = threading.Event()
        self.hand_over = threading.Event()
        self.started: list[str] = []
        self.pieces: list[tuple[str, int | None]] = []
        self.ends: list = []  # clean-ups handed over
        self.commit_end = commit_end

    def script_started(self, detail: str) -> None:
        self.started.append(detail)

    def output(self, text: str, *, end_offset: int | None = None) -> None:
        self.pieces.append((text, end_offset))

    def after_recorded(self, action) -> None:
        self.ends.append(action)
        action(self.commit_end)  # the coordinator committed the outcome at once (or never)

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.pieces)


def once(condition, action, timeout: float = 20.0) -> None:
    """Do `action` as soon as `condition` holds (not after a fixed delay: under load the
    script may not have started yet)."""

    def wait_then_act():
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        action()

    threading.Thread(target=wait_then_act, daemon=True).start()


@pytest.fixture
def runs(sshd):
    return str(sshd.scripts / f"runs-{uuid.uuid4().hex[:8]}")


def detached(sshd, script, runs, *, run=None, reporter=None, **overrides):
    run = run or RemoteRun(run_id=f"c1.{uuid.uuid4().hex[:6]}")
    target = make_target(sshd, script, run_directory=runs, **overrides)
    context = make_context(sshd, remote_run=run, deadline=time.time() + target.timeout)
    reporter = reporter or DetachedReporter()
    return SSHConnector(), target, context, reporter, run


def state_of(sshd, run, runs):
    client = connect(sshd)
    try:
        return run_state(client, run.run_id, runs)
    finally:
        client.close()


def test_a_detached_run_reports_its_output_offsets_and_exit_code_then_removes_its_directory(sshd, runs):
    # "é" is two bytes: split across writes, the offset still falls between characters.
    script = sshd.script(
        "detached-lines.sh",
        'printf "caf\\303"; sleep 0.3; printf "\\251 ok\\n"; echo "id=$ENVIRONMENT_ID"; echo err >&2; exit 4\n',
    )
    connector, target, context, reporter, run = detached(sshd, script, runs)
    result = connector.run(target, context, reporter)
    assert result.exit_code == 4
    assert reporter.text == "café ok\nid=linux_local_001\nerr\n"
    offsets = [offset for _, offset in reporter.pieces]
    assert offsets == sorted(offsets) and offsets[-1] == len(reporter.text.encode())
    assert all(len(text.encode()) <= (offset or 0) for text, offset in reporter.pieces)
    assert len(reporter.ends) == 1  # one clean-up, after the outcome was recorded
    assert "detached" in reporter.started[0]
    assert state_of(sshd, run, runs).status == RunStatus.NOT_STARTED  # removed once recorded


def test_the_directory_stays_when_the_end_was_not_committed(sshd, runs):
    script = sshd.script("detached-quick.sh", "echo done\n")
    connector, target, context, reporter, run = detached(
        sshd, script, runs, reporter=DetachedReporter(commit_end=False)
    )
    assert connector.run(target, context, reporter).exit_code == 0
    assert state_of(sshd, run, runs).status == RunStatus.ENDED  # proof it ran, for the next worker


def test_a_run_found_started_is_followed_from_the_recorded_offset_not_started_again(sshd, runs):
    counter = sshd.scripts / f"starts-{uuid.uuid4().hex[:6]}"
    script = sshd.script("detached-once.sh", f'echo x >> "{counter}"; echo one; sleep 0.5; echo two\n')
    connector, target, context, reporter, run = detached(sshd, script, runs)
    client = connect(sshd)
    try:  # a worker that started it and recorded its first line, then died
        assert run_start(client, run.run_id, f"exec {script}", {}, runs).started
        time.sleep(0.2)
    finally:
        client.close()
    adopted = RemoteRun(run_id=run.run_id, offset=len(b"one\n"), adopted=True)
    _, target, context, reporter, _ = detached(sshd, script, runs, run=adopted)
    assert connector.run(target, context, reporter).exit_code == 0
    assert reporter.text == "two\n"  # read on from the offset: nothing twice
    assert "already started" in reporter.started[0]
    assert counter.read_text() == "x\n"


def tracking(connector, *, redirect_after_start: int | None = None, reporter=None) -> list:
    """Record each client the connector opens; with `redirect_after_start`, every
    connection after the script started goes to that (closed) port."""
    opened: list = []
    original = connector._open

    def tracked_open(target, *args):
        if redirect_after_start and reporter.started:
            target = dataclasses.replace(target, port=redirect_after_start)
        client = original(target, *args)
        opened.append(client)
        return client

    connector._open = tracked_open
    return opened


def test_a_dropped_connection_is_ridden_out_and_the_run_ends_right(sshd, runs):
    script = sshd.script("detached-drop.sh", "echo before; sleep 1.5; echo after; exit 2\n")
    connector, target, context, reporter, run = detached(sshd, script, runs)
    opened = tracking(connector)
    once(lambda: reporter.text == "before\n", lambda: opened[-1].get_transport().sock.close())
    result = connector.run(target, context, reporter)
    assert result.exit_code == 2
    assert reporter.text == "before\nafter\n"
    assert len(opened) >= 2  # it connected again


def test_a_machine_that_cannot_be_reached_again_ends_unreachable_with_what_is_known(sshd, runs):
    script = sshd.script("detached-away.sh", "echo started; sleep 30\n")
    connector, target, context, reporter, run = detached(sshd, script, runs, timeout=4)
    opened = tracking(connector, redirect_after_start=free_port(), reporter=reporter)
    once(lambda: reporter.text == "started\n", lambda: opened[-1].get_transport().sock.close())
    try:
        with pytest.raises(ConnectorError) as error:
            connector.run(target, context, reporter)
        assert error.value.reason == "unreachable"
        assert error.value.data["started"] is True and error.value.data["offset"] == len(b"started\n")
        assert "outcome is unknown" in error.value.message
        assert reporter.text == "started\n"
    finally:
        client = connect(sshd)
        try:
            run_stop(client, run.run_id, 1, runs)
        finally:
            client.close()


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_cancel_and_timeout_stop_the_whole_process_group(sshd, runs, how):
    script = sshd.script("detached-hang.sh", "sleep 41 & echo up; sleep 42\n")
    connector, target, context, reporter, run = detached(sshd, script, runs, timeout=3 if how == "timeout" else 30)
    if how == "cancel":
        once(lambda: reporter.text.startswith("up\n"), reporter.stop.set)
    with pytest.raises(ConnectorError) as error:
        connector.run(target, context, reporter)
    assert error.value.reason == ("cancelled" if how == "cancel" else "timeout")
    assert error.value.data["signal"] == "TERM" and error.value.data["processes_left"] == 0
    assert reporter.text.startswith("up\n")  # then the shell may say its job was "Terminated"
    client = connect(sshd)
    try:
        _, stdout, _ = client.exec_command("ps -A -o args=", timeout=10)
        assert not [line for line in stdout.read().decode().splitlines() if line.startswith(("sleep 41", "sleep 42"))]
    finally:
        client.close()
    assert state_of(sshd, run, runs).status == RunStatus.NOT_STARTED  # its end recorded, then removed


def test_a_hand_over_lets_the_script_run_on(sshd, runs):
    script = sshd.script("detached-handover.sh", "echo a; sleep 1; echo b\n")
    connector, target, context, reporter, run = detached(sshd, script, runs)

    def shut_down_after_the_first_line():
        deadline = time.monotonic() + 20
        while reporter.text != "a\n" and time.monotonic() < deadline:
            time.sleep(0.02)
        reporter.hand_over.set()
        reporter.stop.set()

    threading.Thread(target=shut_down_after_the_first_line, daemon=True).start()
    with pytest.raises(ConnectorError) as error:
        connector.run(target, context, reporter)
    assert error.value.reason == "handed_over"
    assert reporter.text == "a\n" and not reporter.ends
    deadline = time.monotonic() + 30
    while (state := state_of(sshd, run, runs)).status != RunStatus.ENDED and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state.exit_code == 0 and state.output_bytes == len(b"a\nb\n")  # it ran to its end


def test_a_supervisor_that_fails_on_a_live_connection_fails_the_run_at_once(sshd):
    """A run directory the machine cannot make is an answer, not a dropped connection: the
    run fails naming it instead of being retried until the environment's timeout."""
    script = sshd.script("detached-never.sh", "echo never\n")
    connector, target, context, reporter, _ = detached(sshd, script, "/proc/no-runs-here", timeout=60)
    started = time.monotonic()
    with pytest.raises(ConnectorError) as error:
        connector.run(target, context, reporter)
    assert error.value.reason == "supervisor_failed"
    assert time.monotonic() - started < 30 and not reporter.started
