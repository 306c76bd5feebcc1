"""Detached runs (environments/connectors/ssh_runs.py) against the real OpenSSH server on
loopback: the script outlives the client that started it, and a new client reads the rest
of its output and its exit code. No database involved."""

import shutil
import threading
import time
import uuid

import pytest

from environments.connectors import ConnectorError
from environments.connectors.ssh_runs import (
    PROGRAM,
    RunStatus,
    _call,
    _FollowAnswer,
    parse_state,
    remote_command,
    run_clean_stale,
    run_cleanup,
    run_follow,
    run_output,
    run_start,
    run_start_follow,
    run_state,
    run_stop,
)
from tests.support.sshd import connect


@pytest.fixture
def client(sshd):
    client = connect(sshd)
    yield client
    client.close()


@pytest.fixture
def runs(sshd):
    """A run directory of this test's own, writable by the login user."""
    path = sshd.scripts / f"runs-{uuid.uuid4().hex[:8]}"
    return str(path)


def wait_for(client, run_id, runs, status, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        state = run_state(client, run_id, runs)
        if state.status == status or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def remote(client, command: str) -> str:
    _, stdout, _ = client.exec_command(command, timeout=10)
    return stdout.read().decode()


def group_processes(client, pgid: int) -> list[str]:
    """The live (not zombie) processes of a process group, as `ps` on the machine sees them."""
    lines = remote(client, "ps -A -o pgid= -o pid= -o stat= -o args=").splitlines()
    return [line for line in lines if line.split()[0] == str(pgid) and not line.split()[2].startswith("Z")]


LINES_SCRIPT = 'i=1; while [ $i -le 10 ]; do echo "line $i"; i=$((i + 1)); sleep 0.2; done; exit {code}'
EXPECTED_LINES = "".join(f"line {i}\n" for i in range(1, 11))


@pytest.mark.parametrize("code", [0, 7])
def test_a_run_outlives_its_client_and_a_new_client_reads_the_rest_and_the_exit_code(sshd, runs, code):
    first = connect(sshd)
    start = run_start(first, "run-1", LINES_SCRIPT.format(code=code), {}, runs)
    assert start.started and start.state.status == RunStatus.RUNNING
    time.sleep(0.5)
    state, received = run_output(first, "run-1", 0, 64 * 1024, runs)
    assert state.status == RunStatus.RUNNING and received.startswith(b"line 1\n")
    first.get_transport().sock.close()  # the worker dies: its connection just drops
    first.close()

    second = connect(sshd)
    try:
        assert run_state(second, "run-1", runs).status == RunStatus.RUNNING
        while True:
            state, more = run_output(second, "run-1", len(received), 64 * 1024, runs)
            received += more
            if state.status == RunStatus.ENDED:
                break
            time.sleep(0.2)
        state, tail = run_output(second, "run-1", len(received), 64 * 1024, runs)
    finally:
        second.close()
    assert received.decode() + tail.decode() == EXPECTED_LINES
    assert state.exit_code == code
    assert state.output_bytes == len(EXPECTED_LINES)


def test_follow_streams_the_output_as_it_is_written_and_ends_with_the_exit_code(sshd, runs):
    first = connect(sshd)
    run_start(first, "followed", LINES_SCRIPT.format(code=5), {}, runs)
    pieces: list[bytes] = []
    state = run_follow(first, "followed", 0, pieces.append, runs, max_seconds=1)
    assert state.status == RunStatus.RUNNING and len(pieces) >= 2  # as written, not at the end
    first.get_transport().sock.close()
    first.close()

    second = connect(sshd)
    try:
        while state.status == RunStatus.RUNNING:
            state = run_follow(second, "followed", len(b"".join(pieces)), pieces.append, runs, max_seconds=1)
    finally:
        second.close()
    assert b"".join(pieces).decode() == EXPECTED_LINES
    assert state.status == RunStatus.ENDED and state.exit_code == 5


def test_a_stop_while_following_ends_the_call_not_the_run(client, runs):
    run_start(client, "keeps-going", "sleep 1; echo done", {}, runs)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(ConnectorError) as stopped:
        run_follow(client, "keeps-going", 0, lambda piece: None, runs, stop=stop)
    assert stopped.value.reason == "cancelled"
    assert wait_for(client, "keeps-going", runs, RunStatus.ENDED).exit_code == 0


def test_the_script_gets_its_environment_and_stderr_in_order_and_values_stay_literal(client, runs):
    env = {"COORDINATION_ID": "deploy_1", "TRICKY": 'it\'s $(touch /tmp/pwned) `x` "q"\nline 2'}
    command = 'echo "id=$COORDINATION_ID"; echo "$TRICKY"; echo to-stderr >&2; exit 3'
    assert run_start(client, "env-run", command, env, runs).started
    state = wait_for(client, "env-run", runs, RunStatus.ENDED)
    _, output = run_output(client, "env-run", 0, 4096, runs)
    assert state.exit_code == 3
    assert output.decode() == f"id=deploy_1\n{env['TRICKY']}\nto-stderr\n"


def test_starting_twice_for_one_run_id_starts_nothing_more(sshd, client, runs):
    counter = sshd.scripts / f"started-{uuid.uuid4().hex[:8]}"
    command = f"echo started >> '{counter}'; sleep 1"
    assert run_start(client, "once", command, {}, runs).started
    again = run_start(client, "once", command, {}, runs)
    assert not again.started and again.state.status == RunStatus.RUNNING
    wait_for(client, "once", runs, RunStatus.ENDED)
    after_end = run_start(connect(sshd), "once", command, {}, runs)
    assert not after_end.started and after_end.state.status == RunStatus.ENDED
    assert counter.read_text() == "started\n"


def test_stop_kills_the_whole_process_group_including_a_grandchild(client, runs):
    start = run_start(client, "stop-me", "sleep 37 & echo ready; sleep 38", {}, runs)
    pgid = start.state.pgid
    assert pgid and len(group_processes(client, pgid)) >= 3  # supervisor, script, sleep 38, sleep 37
    stopped = run_stop(client, "stop-me", 2, runs)
    assert stopped.signal == "TERM" and stopped.processes_left == 0
    assert group_processes(client, pgid) == []
    state = run_state(client, "stop-me", runs)
    assert state.status == RunStatus.ENDED and state.exit_code == 143


def test_a_script_that_ignores_term_is_killed_after_the_grace_period(client, runs):
    start = run_start(client, "stubborn", "trap '' TERM; sleep 37 & sleep 38", {}, runs)
    began = time.monotonic()
    stopped = run_stop(client, "stubborn", 1, runs)
    assert stopped.signal == "KILL" and stopped.processes_left == 0
    assert 1.0 <= time.monotonic() - began < 5
    assert group_processes(client, start.state.pgid) == []
    # The supervisor was killed with the group: no exit code, and the state says so.
    assert run_state(client, "stubborn", runs).status == RunStatus.VANISHED


def test_a_run_whose_supervisor_is_gone_without_an_exit_code_reads_as_vanished(client, runs):
    start = run_start(client, "lost", "sleep 38", {}, runs)
    remote(client, f"kill -KILL -{start.state.pgid}")  # the machine's reboot, as far as the run can tell
    state = wait_for(client, "lost", runs, RunStatus.VANISHED)
    assert state.status == RunStatus.VANISHED and state.exit_code is None and state.pid == start.state.pid


def test_a_run_never_started_reads_as_not_started(client, runs):
    assert run_state(client, "never", runs).status == RunStatus.NOT_STARTED
    assert run_output(client, "never", 0, 10, runs)[1] == b""
    assert run_stop(client, "never", 1, runs).signal == ""


def test_output_reads_are_bounded_by_offset_and_limit(client, runs):
    run_start(client, "big", "head -c 300000 /dev/zero | tr '\\0' x; printf END", {}, runs)
    state = wait_for(client, "big", runs, RunStatus.ENDED)
    assert state.output_bytes == 300003
    _, piece = run_output(client, "big", 299990, 5, runs)
    assert piece == b"xxxxx"
    _, end = run_output(client, "big", 299995, 1024 * 1024, runs)
    assert end == b"xxxxxEND"
    _, past = run_output(client, "big", 400000, 10, runs)
    assert past == b""


def test_cleanup_removes_an_ended_run_and_refuses_a_running_one(client, runs):
    run_start(client, "busy", "sleep 38", {}, runs)
    with pytest.raises(ConnectorError) as refused:
        run_cleanup(client, "busy", runs)
    assert refused.value.reason == "run_active"
    run_stop(client, "busy", 1, runs)
    assert run_cleanup(client, "busy", runs).status == RunStatus.ENDED
    assert run_state(client, "busy", runs).status == RunStatus.NOT_STARTED


def test_stale_run_directories_are_cleaned_but_recent_and_running_ones_kept(client, runs):
    for run_id, command in [("old-ended", "true"), ("old-running", "sleep 38"), ("recent", "true")]:
        run_start(client, run_id, command, {}, runs)
    wait_for(client, "old-ended", runs, RunStatus.ENDED)
    remote(client, f"touch -t 202001010000 '{runs}/old-ended' '{runs}/old-running'")
    assert run_clean_stale(client, 30, runs) == ["old-ended"]
    assert run_state(client, "old-running", runs).status == RunStatus.RUNNING
    assert run_state(client, "recent", runs).status == RunStatus.ENDED
    run_stop(client, "old-running", 1, runs)
    assert run_clean_stale(client, 30, "/nonexistent/runs") == []


def test_a_start_removes_stale_run_directories_in_the_background(client, runs):
    run_start(client, "old-one", "true", {}, runs)
    wait_for(client, "old-one", runs, RunStatus.ENDED)
    remote(client, f"touch -t 202001010000 '{runs}/old-one'")
    assert run_start(client, "new-one", "true", {}, runs, stale_days=30).started
    assert wait_for(client, "old-one", runs, RunStatus.NOT_STARTED).status == RunStatus.NOT_STARTED
    assert run_state(client, "new-one", runs).status in (RunStatus.RUNNING, RunStatus.ENDED)


def test_the_default_run_directory_is_under_the_login_users_home(client):
    run_id = f"home-{uuid.uuid4().hex[:8]}"
    run_start(client, run_id, "echo at home", {})
    try:
        assert wait_for(client, run_id, "~/.powerautomation/runs", RunStatus.ENDED).exit_code == 0
        assert remote(client, f"cat ~/.powerautomation/runs/{run_id}/output") == "at home\n"
        assert remote(client, "stat -c %a ~/.powerautomation/runs").strip() == "700"
    finally:
        run_cleanup(client, run_id)


def test_a_run_directory_with_spaces_and_quotes_is_one_path(sshd, client):
    runs = str(sshd.scripts / f'it\'s a "dir" $(x) {uuid.uuid4().hex[:6]}')
    run_start(client, "quoted", "echo ok", {}, runs)
    assert wait_for(client, "quoted", runs, RunStatus.ENDED).exit_code == 0
    assert (sshd.scripts / runs / "quoted" / "output").read_text() == "ok\n"


@pytest.mark.parametrize(
    "run_id", ["", ".", "..", "../x", "a/b", "-rf", "a b", "$(touch x)", "a;b", "x\n", "é", "a" * 129]
)
def test_hostile_run_ids_are_refused(client, runs, run_id):
    with pytest.raises(ValueError, match="run id"):
        run_start(client, run_id, "true", {}, runs)


@pytest.mark.parametrize(
    "path", ["", "runs", "./runs", "~other/runs", "/tmp/../etc", "~/a/../../b", "/tmp/x\ny", "/tmp/\0", "/" * 1025]
)
def test_hostile_run_directories_are_refused(client, path):
    with pytest.raises(ValueError, match="run_directory"):
        run_state(client, "r1", path)


def test_hostile_environment_names_and_numbers_are_refused(client, runs):
    with pytest.raises(ValueError, match="not a valid shell name"):
        run_start(client, "r1", "true", {"A;touch x": "1"}, runs)
    with pytest.raises(ValueError, match="limit"):
        run_output(client, "r1", 0, 10**12, runs)
    with pytest.raises(ValueError, match="offset"):
        run_output(client, "r1", -1, 10, runs)
    with pytest.raises(ValueError, match="grace_seconds"):
        run_stop(client, "r1", 10**9, runs)


TOOLS = ["sh", "mkdir", "sleep", "mv", "rm", "cat", "ps", "awk", "wc", "tr", "tail", "head", "setsid", "perl"]


@pytest.mark.parametrize(
    ("detached_by", "tools"),
    [
        ("perl", {name: shutil.which(name) for name in TOOLS if name != "setsid"}),
        ("session", {name: shutil.which(name) for name in TOOLS if name not in ("setsid", "perl")}),
        ("setsid", {name: shutil.which("busybox") for name in TOOLS if name != "perl"}),
    ],
    ids=["perl_no_setsid", "plain_sh_no_setsid_no_perl", "busybox_only"],
)
def test_every_way_of_detaching_outlives_the_client_and_stops_whole(sshd, runs, detached_by, tools):
    """macOS has no setsid(1): perl's POSIX::setsid does the same; without perl the run keeps
    the process group sshd made for the session. A busybox-only machine (Alpine) works too."""
    if not all(tools.values()):
        pytest.skip(f"not installed here: {[name for name, path in tools.items() if not path]}")
    bin_dir = sshd.scripts / f"bin-{uuid.uuid4().hex[:6]}"
    bin_dir.mkdir()
    bin_dir.chmod(0o755)
    for name, path in tools.items():
        (bin_dir / name).symlink_to(path)
    first = connect(sshd)
    start = remote_command("start", runs, "r1", PROGRAM, "sleep 37 & echo up; sleep 1")
    answer = _call(first, f"PATH={bin_dir} {start}", max_bytes=512, timeout=10).decode()
    first.get_transport().sock.close()
    first.close()
    assert answer.startswith("started\nrunning ")
    assert (sshd.scripts / runs / "r1" / "detached_by").read_text() == detached_by + "\n"
    pgid = int(answer.splitlines()[1].split()[3])
    second = connect(sshd)
    try:
        assert wait_for(second, "r1", runs, RunStatus.ENDED).exit_code == 0
        assert run_output(second, "r1", 0, 100, runs)[1] == b"up\n"
        assert group_processes(second, pgid)  # the grandchild still sleeps
        stop = f"PATH={bin_dir} {remote_command('stop', runs, 'r1', '1')}"
        assert _call(second, stop, max_bytes=512, timeout=10).decode().splitlines()[1] == "TERM 0"
        assert group_processes(second, pgid) == []
    finally:
        second.close()


@pytest.mark.parametrize(
    "line",
    [
        b"ended 99999999999999999999 10 10 5",  # an exit code no database column holds
        b"ended 3 10 10 -5",
        b"running - 10 10 5 extra",
        b"running - 10",
        b"ended 3 99999999999 10 5",
        b"finished 0 1 1 1",
        b"ended \xff 1 1 1",
    ],
)
def test_a_state_line_out_of_range_is_refused_not_stored(line):
    with pytest.raises(ConnectorError) as refused:
        parse_state(line)
    assert refused.value.reason == "bad_answer"


def test_a_state_line_in_range_is_read():
    state = parse_state(b"ended 255 4242 4242 1048576")
    assert (state.status, state.exit_code, state.pid, state.pgid, state.output_bytes) == (
        RunStatus.ENDED,
        255,
        4242,
        4242,
        1048576,
    )


def test_a_stream_follow_stops_at_its_limit_and_the_next_one_reads_on(client, runs):
    run_start(client, "big", "head -c 10000 /dev/zero | tr '\\0' x; sleep 2", {}, runs)
    time.sleep(0.5)
    pieces: list[bytes] = []
    state = run_follow(client, "big", 0, pieces.append, runs, limit=4096, max_seconds=5)
    assert state.status == RunStatus.RUNNING and state.output_bytes == 4096
    assert b"".join(pieces) == b"x" * 4096
    while state.status != RunStatus.ENDED:
        state = run_follow(client, "big", len(b"".join(pieces)), pieces.append, runs, max_seconds=5)
    assert b"".join(pieces) == b"x" * 10000 and state.exit_code == 0


def test_without_gnu_tail_follow_looks_every_tenth_of_a_second_in_frames(sshd, client, runs):
    """busybox, macOS: no `timeout`/GNU tail; the framed loop hands on the same bytes."""
    bin_dir = sshd.scripts / f"bin-{uuid.uuid4().hex[:6]}"
    bin_dir.mkdir()
    bin_dir.chmod(0o755)
    for name in ["sh", "sleep", "cat", "ps", "awk", "wc", "tail", "head", "kill"]:
        if shutil.which(name):
            (bin_dir / name).symlink_to(shutil.which("busybox") if name == "tail" else shutil.which(name))
    run_start(client, "framed", LINES_SCRIPT.format(code=6), {}, runs)
    answer = _FollowAnswer((pieces := []).append, 1 << 20)
    command = f"PATH={bin_dir} " + remote_command("follow", runs, "framed", "0", "10", str(1 << 20))
    _call(client, command, max_bytes=1 << 21, timeout=20, on_data=answer.feed)
    assert answer.mode == b"frames"
    assert b"".join(pieces).decode() == EXPECTED_LINES
    assert parse_state(answer.state_line).exit_code == 6


def test_start_and_follow_in_one_session_reads_a_large_output_whole(client, runs):
    """The start's own follow stops at its limit; the state then says how much there is."""
    pieces: list[bytes] = []
    starts = []
    start, state = run_start_follow(
        client,
        "big-start",
        "head -c 300000 /dev/zero | tr '\\0' y",
        {},
        starts.append,
        pieces.append,
        runs,
        limit=100_000,
    )
    assert start.started and starts == [start]
    while not (state and state.status == RunStatus.ENDED and len(b"".join(pieces)) >= state.output_bytes):
        state = run_follow(client, "big-start", len(b"".join(pieces)), pieces.append, runs, limit=100_000)
    assert b"".join(pieces) == b"y" * 300_000
    again, nothing = run_start_follow(client, "big-start", "true", {}, starts.append, pieces.append, runs)
    assert not again.started and nothing is None  # found: never started twice
