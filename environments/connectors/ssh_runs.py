"""Detached runs over SSH (issue 16): the init script runs under a small supervisor on the
remote machine, so closing the session (a worker killed, SIGTERM, a network drop) does not
stop it, and any worker can later read its output and exit code again.

The supervisor is `ssh_runs.sh`, POSIX `sh` only, sent whole over an open paramiko client
for every call (nothing is installed on the machine). Each run has a directory
`<run_directory>/<run_id>` (default `~/.powerautomation/runs/<run_id>`) holding its pid and
process group, its output as it is written and, once it ended, its exit code. Creating that
directory is the claim: a run id whose directory exists is never started again.

Every value that reaches the remote shell is validated here and shell-quoted; every answer
read back is bounded.
"""

import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko
from django.db import models

from environments.connectors.base import ConnectorError

DEFAULT_RUN_DIRECTORY = "~/.powerautomation/runs"
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_PATH_LENGTH = 1024
MAX_COMMAND_BYTES = 64 * 1024
# The most output one read returns; a caller follows a long output by offset.
MAX_OUTPUT_READ = 1024 * 1024
MAX_GRACE_SECONDS = 300
MAX_STALE_DAYS = 36500
# What a state line, a stop's line or stderr may take, at most.
STATE_LINE_BYTES = 256
STDERR_BYTES = 4096
# The answer to clean_stale: one run id a line.
MAX_CLEANED_ANSWER = 256 * 1024
CALL_TIMEOUT_SECONDS = 30.0
RECV_POLL_SECONDS = 0.2


def _program() -> str:
    """The supervisor without its comment lines: the same program in a smaller command."""
    text = Path(__file__).with_name("ssh_runs.sh").read_text()
    return "\n".join(line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")) + "\n"


PROGRAM = _program()


class RunStatus(models.TextChoices):
    NOT_STARTED = "not_started", "not started"  # no run directory: safe to start
    STARTING = "starting", "starting"  # the directory is claimed, the supervisor not yet up
    RUNNING = "running", "running"  # the supervisor's pid is alive
    ENDED = "ended", "ended"  # the exit code is recorded
    VANISHED = "vanished", "vanished"  # the supervisor is gone and left no exit code


@dataclass(frozen=True)
class RunState:
    status: RunStatus
    exit_code: int | None = None
    pid: int | None = None
    pgid: int | None = None
    output_bytes: int = 0


@dataclass(frozen=True)
class RunStart:
    started: bool  # False: the run directory already existed, nothing was started
    state: RunState


@dataclass(frozen=True)
class RunStop:
    signal: str  # TERM, or KILL when the group outlived the grace period; "" if never started
    processes_left: int  # of the run's process group, zombies not counted
    state: RunState  # before the stop


# --- checking what goes out ------------------------------------------------------------


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise ValueError(
            f"run id {run_id!r}: use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return run_id


def check_run_directory(path: str) -> str:
    """An absolute path or one under the remote user's home (`~/...`); no `..`, no control
    characters. Spaces and quotes are fine: the path is quoted, never parsed by a shell."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"run_directory must be a path of 1 to {MAX_PATH_LENGTH} characters")
    if any(ord(char) < 32 or ord(char) == 127 for char in path):
        raise ValueError("run_directory must not contain control characters")
    if not (path.startswith("/") or path == "~" or path.startswith("~/")):
        raise ValueError(f"run_directory {path!r}: use an absolute path or one starting with '~/'")
    if ".." in path.split("/"):
        raise ValueError(f"run_directory {path!r}: '..' is not allowed")
    return path


def _check_int(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return value


def script_command(command: str, env: dict[str, str]) -> str:
    """The command the supervisor runs: the environment exported, then `command`."""
    for name, value in env.items():
        if not ENV_NAME_PATTERN.fullmatch(name):
            raise ValueError(f"environment variable name {name!r} is not a valid shell name")
        if "\0" in value:
            raise ValueError(f"environment variable {name}: NUL is not allowed")
    if "\0" in command:
        raise ValueError("command: NUL is not allowed")
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
    text = (f"export {exports}\n" if exports else "") + command
    if len(text.encode()) > MAX_COMMAND_BYTES:
        raise ValueError(f"command and environment are over {MAX_COMMAND_BYTES} bytes")
    return text


def remote_command(action: str, run_directory: str, run_id: str, *args: str) -> str:
    values = [action, check_run_directory(run_directory), check_run_id(run_id), *args]
    return "sh -c " + shlex.quote(PROGRAM) + " pa-run " + " ".join(shlex.quote(value) for value in values)


# --- one call to the supervisor --------------------------------------------------------


class _Ended(Exception):
    """The caller had all it wanted before the call ended (its `ended` event was set)."""


def _call(
    client: paramiko.SSHClient,
    command: str,
    *,
    max_bytes: int,
    timeout: float,
    on_data: Callable[[bytes], None] | None = None,
    stop: threading.Event | None = None,
    ended: threading.Event | None = None,
    stderr_out: bytearray | None = None,
) -> bytes:
    """Run one supervisor call on its own channel; its stdout, at most `max_bytes` (handed
    to `on_data` piece by piece as it arrives instead, when given).

    A lost connection or a call that outlives `timeout` raises a retryable ConnectorError:
    the run itself goes on on the machine whatever happens to this channel. So does `stop`
    being set (reason `cancelled`): it ends the call, not the run."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise ConnectorError("the SSH connection is closed", reason="connection_lost", permanent=False)
    deadline = time.monotonic() + timeout
    stdout, stderr = bytearray(), bytearray()
    received = 0
    try:
        channel = transport.open_session(timeout=timeout)
        try:
            channel.settimeout(RECV_POLL_SECONDS)
            channel.exec_command(command)
            while True:
                while channel.recv_stderr_ready():  # drained as we go: a full window would stall
                    stderr += channel.recv_stderr(STDERR_BYTES)
                    del stderr[STDERR_BYTES:]
                try:
                    data = channel.recv(65536)
                except TimeoutError:
                    data = None
                if data == b"":
                    break
                if data:
                    received += len(data)
                    if on_data is None:
                        stdout += data
                    else:
                        on_data(data)
                    if ended is not None and ended.is_set():
                        raise _Ended()
                    if received > max_bytes:
                        raise ConnectorError(
                            f"the run supervisor answered more than {max_bytes} bytes",
                            reason="bad_answer",
                            permanent=True,
                        )
                if stop is not None and stop.is_set():
                    raise ConnectorError("stopped following the run", reason="cancelled", permanent=True)
                if ended is not None and ended.is_set():
                    raise _Ended()
                if time.monotonic() > deadline:
                    raise ConnectorError(
                        f"the run supervisor did not answer within {timeout:.0f} s", reason="timeout", permanent=False
                    )
            if not channel.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise ConnectorError("the run supervisor did not exit", reason="timeout", permanent=False)
            status = channel.exit_status
            while channel.recv_stderr_ready():
                stderr += channel.recv_stderr(STDERR_BYTES)
                del stderr[STDERR_BYTES:]
        finally:
            channel.close()
    except (paramiko.SSHException, OSError) as exc:
        raise ConnectorError(f"SSH connection lost: {exc}", reason="connection_lost", permanent=False) from None
    if status != 0:
        detail = stderr.decode(errors="replace").strip() or stdout[:STATE_LINE_BYTES].decode(errors="replace").strip()
        raise ConnectorError(
            f"the run supervisor failed (exit {status}): {detail}", reason="supervisor_failed", permanent=False
        )
    if stderr_out is not None:
        stderr_out += stderr
    return bytes(stdout)


def _optional_int(word: str, high: int) -> int | None:
    """A number the machine answered, or None ("-"): a value out of range (a machine that
    answers what it likes) is refused, never stored."""
    if word == "-":
        return None
    if not word.isdigit() or len(word) > 20 or int(word) > high:
        raise ValueError(word)
    return int(word)


# What a state line's numbers may be: an exit status (POSIX shells give 0-255; ksh93 gives
# 256 + a signal's number), process ids, a byte count.
STATE_LIMITS = (1023, 2**31 - 1, 2**31 - 1, 2**62)


def parse_state(line: bytes) -> RunState:
    words = line.decode("ascii", errors="replace").split()
    try:
        status = RunStatus(words[0])
        if len(words) != 5:
            raise ValueError(line)
        exit_code, pid, pgid, size = (
            _optional_int(word, high) for word, high in zip(words[1:], STATE_LIMITS, strict=True)
        )
    except (IndexError, ValueError):
        raise ConnectorError(
            f"the run supervisor's answer is not a state: {line[:STATE_LINE_BYTES]!r}",
            reason="bad_answer",
            permanent=True,
        ) from None
    return RunState(status=status, exit_code=exit_code, pid=pid, pgid=pgid, output_bytes=size or 0)


def _split_line(answer: bytes) -> tuple[bytes, bytes]:
    line, newline, rest = answer.partition(b"\n")
    if not newline:
        raise ConnectorError(
            f"the run supervisor's answer ended early: {answer[:STATE_LINE_BYTES]!r}",
            reason="bad_answer",
            permanent=True,
        )
    return line, rest


# --- the calls -------------------------------------------------------------------------


def run_start(
    client: paramiko.SSHClient,
    run_id: str,
    command: str,
    env: dict[str, str] | None = None,
    run_directory: str = DEFAULT_RUN_DIRECTORY,
    *,
    stale_days: int | None = None,
    timeout: float = CALL_TIMEOUT_SECONDS,
) -> RunStart:
    """Start `command` (a shell command line, run by `sh -c` in the login directory) under
    the supervisor, detached from this session. When the run's directory already exists
    nothing is started: `started` is False and `state` says what that run is doing. With
    `stale_days`, run directories untouched for longer are removed in the background (as
    run_clean_stale does), without another round trip."""
    script = script_command(command, env or {})
    stale = [] if stale_days is None else [str(_check_int("stale_days", stale_days, 0, MAX_STALE_DAYS))]
    answer = _call(
        client,
        remote_command("start", run_directory, run_id, PROGRAM, script, *stale),
        max_bytes=2 * STATE_LINE_BYTES,
        timeout=timeout,
    )
    verb, rest = _split_line(answer)
    return _run_start_answer(verb, _split_line(rest)[0])


def _follow_answer_bytes(limit: int, max_seconds: int) -> int:
    """The most a follow answer may take: the output, a "data N" line per look (ten a
    second) and the state line."""
    return limit + (max_seconds * 10 + 2) * 32 + STATE_LINE_BYTES


class _StartAnswer:
    """Splits start-and-follow's answer: the start's two lines (handed to `on_start` as soon
    as they arrive), then, for a run it started, follow's answer."""

    def __init__(self, on_start: Callable[[RunStart], None], follow: "_FollowAnswer"):
        self.on_start = on_start
        self.follow = follow
        self.head = bytearray()
        self.start: RunStart | None = None

    def feed(self, data: bytes) -> None:
        if self.start is not None:
            self.follow.feed(data)
            return
        self.head += data
        if self.head.count(b"\n") < 2:
            if len(self.head) > 2 * STATE_LINE_BYTES:
                raise ConnectorError(
                    "the run supervisor's start answer is garbled", reason="bad_answer", permanent=True
                )
            return
        verb, rest = _split_line(bytes(self.head))
        line, rest = _split_line(rest)
        self.start = _run_start_answer(verb, line)
        self.on_start(self.start)
        if rest:
            self.follow.feed(rest)


def _run_start_answer(verb: bytes, line: bytes) -> RunStart:
    if verb not in (b"started", b"already_started"):
        raise ConnectorError(
            f"the run supervisor could not start the run: {verb[:STATE_LINE_BYTES]!r}",
            reason="supervisor_failed",
            permanent=False,
        )
    return RunStart(started=verb == b"started", state=parse_state(line))


def run_start_follow(
    client: paramiko.SSHClient,
    run_id: str,
    command: str,
    env: dict[str, str],
    on_start: Callable[[RunStart], None],
    on_output: Callable[[bytes], None],
    run_directory: str = DEFAULT_RUN_DIRECTORY,
    *,
    stale_days: int | None = None,
    max_seconds: int = 30,
    limit: int = MAX_OUTPUT_READ,
    stop: threading.Event | None = None,
) -> tuple[RunStart, RunState | None]:
    """run_start, then for a run it started run_follow from byte 0, in one session. The
    state is None when the run was found started (nothing followed: follow it from the
    recorded offset)."""
    _check_int("max_seconds", max_seconds, 1, 3600)
    _check_int("limit", limit, 1, MAX_OUTPUT_READ)
    script = script_command(command, env)
    stale = "-" if stale_days is None else str(_check_int("stale_days", stale_days, 0, MAX_STALE_DAYS))
    follow = _FollowAnswer(on_output, limit)
    answer = _StartAnswer(on_start, follow)
    stderr = bytearray()
    command_line = remote_command("start", run_directory, run_id, PROGRAM, script, stale, str(max_seconds), str(limit))
    try:
        _call(
            client,
            command_line,
            max_bytes=2 * STATE_LINE_BYTES + _follow_answer_bytes(limit, max_seconds),
            timeout=max_seconds + CALL_TIMEOUT_SECONDS,
            on_data=answer.feed,
            stop=stop,
            ended=follow.full,
            stderr_out=stderr,
        )
    except _Ended:
        assert answer.start is not None
        return answer.start, RunState(status=RunStatus.RUNNING, output_bytes=follow.streamed)
    if answer.start is None:
        raise ConnectorError("the run supervisor's start answer ended early", reason="bad_answer", permanent=False)
    if not answer.start.started:
        return answer.start, None
    return answer.start, _follow_state(follow, stderr)


def _follow_state(follow: "_FollowAnswer", stderr: bytearray) -> RunState:
    # Streamed: the state is stderr's last line (anything a tool said goes before it).
    line = stderr.rstrip(b"\n").rpartition(b"\n")[2] if follow.mode == b"stream" else follow.state_line
    if not line:
        raise ConnectorError("the run supervisor's follow answer ended early", reason="bad_answer", permanent=False)
    return parse_state(bytes(line))


def run_state(
    client: paramiko.SSHClient,
    run_id: str,
    run_directory: str = DEFAULT_RUN_DIRECTORY,
    *,
    timeout: float = CALL_TIMEOUT_SECONDS,
) -> RunState:
    answer = _call(client, remote_command("state", run_directory, run_id), max_bytes=STATE_LINE_BYTES, timeout=timeout)
    return parse_state(_split_line(answer)[0])


def run_output(
    client: paramiko.SSHClient,
    run_id: str,
    offset: int,
    limit: int = 64 * 1024,
    run_directory: str = DEFAULT_RUN_DIRECTORY,
    *,
    timeout: float = CALL_TIMEOUT_SECONDS,
) -> tuple[RunState, bytes]:
    """The run's state, then at most `limit` bytes of its output after byte `offset`, in one
    round trip. The state is read first: when it says `ended`, the bytes up to the end of
    the output are all the script wrote (processes it left in the background may add more)."""
    _check_int("offset", offset, 0, 2**62)
    _check_int("limit", limit, 1, MAX_OUTPUT_READ)
    answer = _call(
        client,
        remote_command("output", run_directory, run_id, str(offset), str(limit)),
        max_bytes=STATE_LINE_BYTES + limit,
        timeout=timeout,
    )
    line, data = _split_line(answer)
    return parse_state(line), data[:limit]


class _FollowAnswer:
    """Splits follow's answer. Its first line says how it comes: "stream" (the output's
    bytes as they are written; the state line on stderr) or "frames" ("data N" lines each
    followed by N bytes, then the state line)."""

    def __init__(self, on_output: Callable[[bytes], None], limit: int):
        self.on_output = on_output
        self.limit = limit
        self.mode: bytes | None = None
        self.buffer = bytearray()
        self.pending = 0  # bytes of the current data frame still to come
        self.streamed = 0
        self.state_line: bytes | None = None
        self.full = threading.Event()  # a stream reached `limit`: the call may end

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if self.mode is None:
            line, newline, rest = bytes(self.buffer).partition(b"\n")
            if not newline:
                if len(self.buffer) > STATE_LINE_BYTES:
                    raise ConnectorError(
                        "the run supervisor's follow answer is garbled", reason="bad_answer", permanent=True
                    )
                return
            if line not in (b"stream", b"frames"):
                raise ConnectorError(
                    "the run supervisor's follow answer is garbled", reason="bad_answer", permanent=True
                )
            self.mode, self.buffer = line, bytearray(rest)
        if self.mode == b"stream":
            piece = bytes(self.buffer[: self.limit - self.streamed])
            self.buffer.clear()
            if piece:
                self.streamed += len(piece)
                self.on_output(piece)
            if self.streamed >= self.limit:
                self.full.set()
            return
        self._frames()

    def _frames(self) -> None:
        while self.buffer and self.state_line is None:
            if self.pending:
                piece = bytes(self.buffer[: self.pending])
                del self.buffer[: len(piece)]
                self.pending -= len(piece)
                self.on_output(piece)
                continue
            line, newline, rest = bytes(self.buffer).partition(b"\n")
            if not newline:
                if len(self.buffer) > STATE_LINE_BYTES:
                    raise ConnectorError(
                        "the run supervisor's follow answer is garbled", reason="bad_answer", permanent=True
                    )
                return
            self.buffer = bytearray(rest)
            if line.startswith(b"data "):
                self.pending = int(line[5:]) if line[5:].isdigit() else 0
            else:
                self.state_line = line


def run_follow(
    client: paramiko.SSHClient,
    run_id: str,
    offset: int,
    on_output: Callable[[bytes], None],
    run_directory: str = DEFAULT_RUN_DIRECTORY,
    *,
    max_seconds: int = 30,
    limit: int = MAX_OUTPUT_READ,
    stop: threading.Event | None = None,
) -> RunState:
    """Hand the run's output after byte `offset` to `on_output` as it is written, on one
    channel, until the run ended (or vanished), `max_seconds` passed or `limit` bytes came;
    then its state (`running` when the limit ended the call). Call again from the new
    offset while it says `running`."""
    _check_int("offset", offset, 0, 2**62)
    _check_int("limit", limit, 1, MAX_OUTPUT_READ)
    _check_int("max_seconds", max_seconds, 1, 3600)
    answer = _FollowAnswer(on_output, limit)
    stderr = bytearray()
    try:
        _call(
            client,
            remote_command("follow", run_directory, run_id, str(offset), str(max_seconds), str(limit)),
            max_bytes=_follow_answer_bytes(limit, max_seconds),
            timeout=max_seconds + CALL_TIMEOUT_SECONDS,
            on_data=answer.feed,
            stop=stop,
            ended=answer.full,
            stderr_out=stderr,
        )
    except _Ended:
        return RunState(status=RunStatus.RUNNING, output_bytes=offset + answer.streamed)
    return _follow_state(answer, stderr)


def run_stop(
    client: paramiko.SSHClient,
    run_id: str,
    grace_seconds: int = 10,
    run_directory: str = DEFAULT_RUN_DIRECTORY,
    *,
    timeout: float | None = None,
) -> RunStop:
    """TERM the run's process group, KILL it once `grace_seconds` passed, then count what
    is left of it (0 when the stop worked). Processes that left the group on purpose
    (`setsid`, a daemon's double fork) are out of its reach."""
    _check_int("grace_seconds", grace_seconds, 0, MAX_GRACE_SECONDS)
    answer = _call(
        client,
        remote_command("stop", run_directory, run_id, str(grace_seconds)),
        max_bytes=2 * STATE_LINE_BYTES,
        timeout=timeout or grace_seconds + CALL_TIMEOUT_SECONDS,
    )
    line, rest = _split_line(answer)
    words = _split_line(rest)[0].decode("ascii", errors="replace").split()
    if len(words) != 2 or not words[1].isdigit():
        raise ConnectorError(
            f"the run supervisor's stop answer is not understood: {rest[:STATE_LINE_BYTES]!r}",
            reason="bad_answer",
            permanent=True,
        )
    return RunStop(signal="" if words[0] == "none" else words[0], processes_left=int(words[1]), state=parse_state(line))


def run_cleanup(
    client: paramiko.SSHClient,
    run_id: str,
    run_directory: str = DEFAULT_RUN_DIRECTORY,
    *,
    timeout: float = CALL_TIMEOUT_SECONDS,
) -> RunState:
    """Remove the run's directory once its result is recorded. A running run is left alone
    (ConnectorError reason `run_active`): stop it first."""
    answer = _call(
        client, remote_command("cleanup", run_directory, run_id), max_bytes=STATE_LINE_BYTES, timeout=timeout
    )
    state = parse_state(_split_line(answer)[0])
    if state.status == RunStatus.RUNNING:
        raise ConnectorError(
            f"run {run_id} is still running; stop it before removing it", reason="run_active", permanent=True
        )
    return state


def run_clean_stale(
    client: paramiko.SSHClient,
    older_than_days: int,
    run_directory: str = DEFAULT_RUN_DIRECTORY,
    *,
    timeout: float = CALL_TIMEOUT_SECONDS,
) -> list[str]:
    """Remove the run directories untouched for more than `older_than_days` days (find's
    `-mtime +N`), except running ones; the removed run ids."""
    _check_int("older_than_days", older_than_days, 0, MAX_STALE_DAYS)
    # The run id slot is not used by this call; any valid id fills it.
    command = remote_command("clean_stale", run_directory, "stale", str(older_than_days))
    answer = _call(client, command, max_bytes=MAX_CLEANED_ANSWER, timeout=timeout)
    return [line for line in answer.decode("ascii", errors="replace").splitlines() if line]
