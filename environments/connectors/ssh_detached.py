"""One detached SSH run, from the coordinator's side: start it (or find it started),
follow its output by byte offset, ride out dropped connections, stop it on a cancel or a
timeout, let it go on a worker's shutdown, and remove its run directory once its end is
recorded. The remote side is ssh_runs.sh; see docs/design/detached-ssh-runs.md.

What a worker that stops leaves behind is enough for the next one: the run id and the
offset recorded with the output (the coordinator's rows), and the run directory on the
machine. Its existence is the proof the script started; so a script is never started
twice for one target, and a re-attaching worker reads on from the recorded offset.
"""

import codecs
import functools
import math
import time
from collections.abc import Callable
from typing import TypeVar

import paramiko

from environments.connectors import ssh_runs
from environments.connectors.base import ConnectorError, DeploymentContext, RemoteRun, Reporter, RunResult, Target
from environments.connectors.ssh_runs import RunState, RunStatus

# A follow call returns at least this often, so a stop or the deadline is seen in time
# (follow also returns at once when `stop` is set).
FOLLOW_SECONDS = 30
# A dropped connection is tried again after this, doubling up to the cap, until the
# environment's timeout.
RECONNECT_FIRST_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 30.0
# TERM, then KILL after this many seconds (cancel, timeout).
STOP_GRACE_SECONDS = 10
# A run still `starting` after this long lost its supervisor before it could record a pid.
STARTING_LIMIT_SECONDS = 15
# Run directories untouched for longer are removed on the next start on the machine.
STALE_DAYS_DEFAULT = 30

Answer = TypeVar("Answer")


class DetachedRun:
    """Runs in a delivery thread; `connect` opens a new verified, authenticated client."""

    def __init__(
        self,
        target: Target,
        context: DeploymentContext,
        reporter: Reporter,
        connect: Callable[[], paramiko.SSHClient],
        *,
        command: str,
        env: dict[str, str],
        stale_days: int = STALE_DAYS_DEFAULT,
    ):
        assert context.remote_run is not None
        self.target = target
        self.run: RemoteRun = context.remote_run
        self.reporter = reporter
        self._connect = connect
        self.command = command
        self.env = env
        self.client: paramiko.SSHClient | None = None
        self.directory = target.run_directory or ssh_runs.DEFAULT_RUN_DIRECTORY
        self.stale_days = stale_days
        # The environment's timeout, counted from the claim (also across workers).
        remaining = context.deadline - time.time() if context.deadline else target.timeout
        self.deadline = time.monotonic() + max(0.0, remaining)
        self.output = OutputReader(reporter, self.run.offset)
        # Once it may have started, a lost connection is ridden out instead of failing.
        self.may_have_started = self.run.started or self.run.adopted
        self.reported_start = False
        self.retry_delay = RECONNECT_FIRST_SECONDS
        self.last_error: ConnectorError | None = None
        self.where = f"{target.host}:{target.port}"

    def execute(self) -> RunResult:
        try:
            if not self.may_have_started:
                self.client = self._connect()  # a failure here is retried like any connection
            if self.reporter.stop.is_set():
                self._stopped()  # never start what is being stopped (a cancel, an ended coordination)
            state = self._start() if not self.run.started else None
            return self._ended(self._follow(state, before=0))
        finally:
            if self.client is not None:
                self.client.close()

    # --- the run's life --------------------------------------------------------------

    def _start(self) -> RunState | None:
        """Start the run and follow it in the same session; the state it was left in, or
        None when the run was found started (then it is followed from the recorded offset).
        From the moment the start is sent the script may have started: a dropped connection
        is ridden out and the start repeated, which starts nothing a second time."""
        self.may_have_started = True
        try:
            _, state = self._call(
                lambda client: ssh_runs.run_start_follow(
                    client,
                    self.run.run_id,
                    self.command,
                    self.env,
                    self._started,
                    self.output.feed,
                    self.directory,
                    stale_days=self.stale_days,
                    max_seconds=self._follow_seconds(),
                    stop=self.reporter.stop,
                )
            )
        except ConnectorError as exc:
            if exc.reason != "cancelled" or not self.reporter.stop.is_set():
                raise
            return None  # stopped: `_follow` handles it
        return state

    def _started(self, start: ssh_runs.RunStart) -> None:
        if self.reported_start:
            return  # a start repeated after a dropped connection
        self.reported_start = True
        if start.started:
            detail = f"running {self.target.init_script_path} on {self.where} (detached, run {self.run.run_id})"
        else:
            detail = (
                f"{self.target.init_script_path} on {self.where} was already started (run {self.run.run_id}, "
                f"{start.state.status.label}): following it, not starting it again"
            )
        self.reporter.script_started(detail)

    def _follow(self, state: RunState | None, *, before: int) -> RunState:
        """Follow the output until the run ended or vanished; stop or let go as asked.
        `state`: what the start's own follow left (None: nothing yet)."""
        starting_since: float | None = None
        while True:
            if state is not None:
                # Ended, with every byte read (a machine that claims more than it sends ends too).
                received = self.output.received
                if state.status == RunStatus.ENDED and (received >= state.output_bytes or received == before):
                    return state
                if state.status in (RunStatus.VANISHED, RunStatus.NOT_STARTED):
                    return state  # NOT_STARTED: its directory is gone, and not by us
                if state.status == RunStatus.STARTING:
                    starting_since = starting_since or time.monotonic()
                    if time.monotonic() - starting_since > STARTING_LIMIT_SECONDS:
                        return RunState(status=RunStatus.VANISHED)
                    self.reporter.stop.wait(0.2)
            if self.reporter.stop.is_set():
                self._stopped()
            if time.monotonic() >= self.deadline:
                self._timed_out()
            before = self.output.received
            try:
                state = self._call(functools.partial(self._follow_once, seconds=self._follow_seconds()))
            except ConnectorError as exc:
                if exc.reason != "cancelled":
                    raise
                state = None  # `stop` was set: handled above

    def _follow_seconds(self) -> int:
        return max(1, min(FOLLOW_SECONDS, math.ceil(self.deadline - time.monotonic())))

    def _follow_once(self, client: paramiko.SSHClient, *, seconds: int) -> RunState:
        return ssh_runs.run_follow(
            client,
            self.run.run_id,
            self.output.received,
            self.output.feed,
            self.directory,
            max_seconds=seconds,
            stop=self.reporter.stop,
        )

    def _ended(self, state: RunState) -> RunResult:
        self.output.flush()
        if state.status != RunStatus.ENDED or state.exit_code is None:
            what = "its run directory is gone" if state.status == RunStatus.NOT_STARTED else "it left no exit code"
            raise ConnectorError(
                f"the script's supervisor on {self.where} is gone and {what} (the machine restarted, or the run "
                "was killed or removed there); its output up to then is kept",
                reason="vanished",
                permanent=True,
                data={"run_id": self.run.run_id, "remote_state": state.status.value},
            )
        self._clean_up_once_recorded()
        return RunResult(exit_code=state.exit_code)

    def _stopped(self) -> None:
        if self.reporter.hand_over.is_set():
            raise ConnectorError(
                f"let go: the worker is shutting down; the script keeps running on {self.where} and the next "
                "worker re-attaches to it",
                reason="handed_over",
                permanent=True,
                data={"run_id": self.run.run_id, "offset": self.output.received},
            )
        facts = self._stop_remote()
        raise ConnectorError("stopped: the coordination was cancelled", reason="cancelled", permanent=True, data=facts)

    def _timed_out(self) -> None:
        facts = self._stop_remote()
        raise ConnectorError(
            f"still running after the environment's timeout of {self.target.timeout} s; stopped",
            reason="timeout",
            permanent=True,
            data=facts,
        )

    def _stop_remote(self) -> dict:
        """TERM the run's process group, KILL it after the grace period and check it is
        gone; keep the output it wrote up to then. One try: a machine that cannot be
        reached keeps the script running, and the record says so."""
        facts: dict = {"run_id": self.run.run_id}
        try:
            stopped = self._call(
                lambda client: ssh_runs.run_stop(client, self.run.run_id, STOP_GRACE_SECONDS, self.directory),
                once=True,
            )
            facts.update(signal=stopped.signal, processes_left=stopped.processes_left)
            self._drain()
        except ConnectorError as exc:
            facts["stop_failed"] = f"{exc.message}; the script may still be running on {self.where}"
            return facts
        self._clean_up_once_recorded()  # a run killed with KILL leaves no exit code: its end all the same
        return facts

    def _drain(self) -> RunState:
        """Read the output to its end (after a stop nothing more is written)."""
        while True:
            state, data = self._call(
                lambda client: ssh_runs.run_output(
                    client, self.run.run_id, self.output.received, run_directory=self.directory
                ),
                once=True,
            )
            if data:
                self.output.feed(data)
            if not data or self.output.received >= state.output_bytes:
                self.output.flush()
                return state

    def _clean_up_once_recorded(self) -> None:
        client, self.client = self.client, None  # handed to the clean-up, which closes it
        self.reporter.after_recorded(clean_up(client, self._connect, self.run.run_id, self.directory))

    # --- the connection --------------------------------------------------------------

    def _client(self) -> paramiko.SSHClient:
        if self.client is None:
            self.client = self._connect()
        return self.client

    def _call(self, call: Callable[[paramiko.SSHClient], Answer], *, once: bool = False) -> Answer:
        """One supervisor call. Once the script may have started, a dropped connection is
        opened again (with backoff) and the call repeated: every call is safe to repeat (a
        second start finds the run directory and starts nothing)."""
        while True:
            try:
                answer = call(self._client())
            except ConnectorError as exc:
                if exc.permanent or once or not self.may_have_started or refused_on_a_live_connection(self.client, exc):
                    raise
                self._lost(exc)
                if self.reporter.stop.is_set():
                    self._stopped()
                continue
            self.retry_delay, self.last_error = RECONNECT_FIRST_SECONDS, None
            return answer

    def _lost(self, error: ConnectorError) -> None:
        """The connection dropped: wait, doubling up to a cap, then let the next call
        connect again. Past the environment's timeout the run is `interrupted`: the
        machine could not be reached again, its outcome is unknown."""
        if self.client is not None:
            self.client.close()
            self.client = None
        self.last_error = error
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._unreachable()
        self.reporter.stop.wait(min(self.retry_delay, left))
        self.retry_delay = min(self.retry_delay * 2, RECONNECT_MAX_SECONDS)

    def _unreachable(self) -> ConnectorError:
        self.output.flush()
        return unreachable(self.where, self.run, self.output.received, self.last_error)


class OutputReader:
    """Bytes of a run's output file to text for the reporter. A character cut in two waits
    for its other half, so the offset reported with each piece falls between characters."""

    def __init__(self, reporter: Reporter, offset: int):
        self.reporter = reporter
        self.received = offset  # bytes read from the output file
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        text = self.decoder.decode(data)
        if text:
            self.reporter.output(text, end_offset=self.received - len(self.decoder.getstate()[0]))

    def flush(self) -> None:
        text = self.decoder.decode(b"", final=True)
        if text:
            self.reporter.output(text, end_offset=self.received)


def refused_on_a_live_connection(client: paramiko.SSHClient | None, error: ConnectorError) -> bool:
    """The supervisor itself failed (no `sh`, a run directory it cannot make) while the
    connection stands: not a drop, so not ridden out. A drop also ends a call without an
    exit status (read as a failure): the dead transport tells them apart."""
    transport = client.get_transport() if client is not None else None
    return error.reason == "supervisor_failed" and transport is not None and transport.is_active()


def clean_up(
    client: paramiko.SSHClient | None, connect: Callable[[], paramiko.SSHClient], run_id: str, directory: str
) -> Callable[[bool], None]:
    """Remove a run's directory once its outcome is committed (until then it is the proof
    the script started), after the target is reported finished: the next target does not
    wait for it. Best effort: a directory left behind is removed as stale by a later run."""

    def action(recorded: bool) -> None:
        used = client
        try:
            if recorded:
                used = used or connect()
                ssh_runs.run_cleanup(used, run_id, directory, timeout=10)
        except ConnectorError:
            pass
        finally:
            if used is not None:
                used.close()

    return action


def unreachable(where: str, run: RemoteRun, received: int, last_error: ConnectorError | None) -> ConnectorError:
    """The machine could not be reached again before the environment's timeout: what is known."""
    started = run.started or received > 0
    known = "had started" if started else "may have started"
    detail = last_error.message if last_error else "no answer"
    return ConnectorError(
        f"{where} could not be reached again before the environment's timeout ({detail}); the script "
        f"{known}, and its output up to byte {received} is recorded; its outcome is unknown",
        reason="unreachable",
        permanent=True,
        data={"run_id": run.run_id, "offset": received, "started": started},
    )
