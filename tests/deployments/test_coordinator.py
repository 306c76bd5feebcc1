"""The coordinator run in-process (the body of the worker task) against a real sshd and
real loopback HTTP servers. The end-to-end path through a qcluster process is in
test_trigger_local_e2e.py."""

import time

import pytest

from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    StageEvent,
    TargetStatus as T,
    TriggerSource,
)
from deployments.services import coordination_start
from deployments.tasks import run_coordination
from deployments.transitions import transition
from environments.connectors.ssh import fingerprint, parse_host_key
from environments.models import Health, SettingsBlock
from tests.support.http import Answer
from tests.support.processes import in_thread

pytestmark = pytest.mark.django_db


def settings_blocks(**default_settings):
    values = {"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    values.update(default_settings)
    SettingsBlock.objects.update_or_create(name="default_settings", defaults={"values": values})


def start_and_run(**kwargs) -> Coordination:
    kwargs.setdefault("triggered_by", TriggerSource.COMMAND)
    coordination = coordination_start(**kwargs)
    run_coordination(coordination_pk=coordination.pk)
    coordination.refresh_from_db()
    return coordination


def statuses(events) -> list[str]:
    return [event.new_status for event in events if event.new_status]


def intervals(folder, names):
    """(start, end) wall-clock times the scripts wrote to folder/<name>.times."""
    result = []
    for name in names:
        start, end = (folder / f"{name}.times").read_text().split()
        result.append((float(start), float(end)))
    return result


def timed_script(sshd, seconds: float):
    """A script that records when it ran, so tests can see overlap without timing it."""
    return sshd.script(
        f"timed-{seconds}.sh",
        "start=$(date +%s.%N)\n"
        f"sleep {seconds}\n"
        f'echo "$start $(date +%s.%N)" > "{sshd.scripts}/$ENVIRONMENT_ID.times"\n',
    )


def test_every_environment_succeeding_completes_the_coordination(sshd, make_ssh_environment):
    settings_blocks()
    script = sshd.script("ok.sh", 'echo "hello from $ENVIRONMENT_ID"\n')
    make_ssh_environment("linux_local_001", script)
    make_ssh_environment("linux_local_002", script)

    coordination = start_and_run(version="v1.0.0", ec2_instance_id="i-0123456789abcdef0", ec2_public_ip="127.0.0.9")

    assert coordination.status == C.COMPLETED
    assert coordination.started_at and coordination.finished_at
    for target in coordination.targets.all():
        assert target.status == T.SUCCEEDED
        assert target.exit_code == 0
        assert target.attempts == 1
        assert f"hello from {target.environment_id}" in target.output_tail
    coordination_events = coordination.events.filter(environment_id="")
    assert statuses(coordination_events) == [
        C.PENDING,
        C.EC2_DEPLOYING,
        C.EC2_COMPLETED,
        C.LOCAL_TRIGGERING,
        C.LOCAL_DEPLOYING,
        C.LOCAL_COMPLETED,
        C.COMPLETED,
    ]
    for target in coordination.targets.all():
        assert statuses(target.events.all()) == [T.TRIGGERING, T.RUNNING, T.SUCCEEDED]


def test_twenty_environments_run_their_scripts_at_the_same_time(sshd, make_ssh_environment):
    settings_blocks()
    script = timed_script(sshd, 2)
    names = [f"linux_local_{n:03}" for n in range(20)]
    for name in names:
        make_ssh_environment(name, script)

    started = time.monotonic()
    coordination = start_and_run()
    elapsed = time.monotonic() - started

    assert coordination.status == C.COMPLETED
    runs = intervals(sshd.scripts, names)
    # Every script was running at one common moment: the last to start began before the
    # first to finish ended.
    assert max(start for start, _ in runs) < min(end for _, end in runs)
    assert elapsed < 20


def test_parallel_limit_caps_how_many_run_at_once(sshd, make_ssh_environment):
    settings_blocks()
    SettingsBlock.objects.create(name="deployment_settings", values={"parallel_limit": 2})
    script = timed_script(sshd, 1)
    names = [f"env_{n}" for n in range(4)]
    for name in names:
        make_ssh_environment(name, script)

    coordination = start_and_run()

    assert coordination.status == C.COMPLETED
    runs = intervals(sshd.scripts, names)
    most_at_once = max(sum(1 for s, e in runs if s <= moment < e) for moment, _ in runs)
    assert most_at_once == 2


def test_non_zero_exit_fails_the_environment_without_retrying(sshd, make_ssh_environment):
    settings_blocks(retry_count=3)
    make_ssh_environment("good", sshd.script("good.sh", "echo fine\n"))
    make_ssh_environment("bad", sshd.script("bad.sh", "echo broken >&2\nexit 3\n"))

    coordination = start_and_run()

    assert coordination.status == C.FAILED
    bad = coordination.targets.get(environment_id="bad")
    assert (bad.status, bad.reason, bad.exit_code, bad.attempts) == (T.FAILED, "exit_code", 3, 1)
    assert "broken" in bad.output_tail
    assert coordination.targets.get(environment_id="good").status == T.SUCCEEDED
    assert "1 of 2 environments failed: bad (exit_code)" in coordination.error


def test_connection_failures_are_retried_per_default_settings(sshd, make_ssh_environment):
    from tests.support.ports import free_port

    settings_blocks(retry_count=2, retry_delay=0)
    make_ssh_environment("unreachable", "./init_aicore.sh", port=free_port())

    coordination = start_and_run()

    target = coordination.targets.get()
    assert (target.status, target.reason, target.attempts) == (T.FAILED, "connection_failed", 3)
    retries = target.events.filter(new_status="", message__contains="retrying")
    assert retries.count() == 2
    assert coordination.status == C.FAILED


def test_auto_retry_off_means_one_attempt(sshd, make_ssh_environment):
    from tests.support.ports import free_port

    settings_blocks(retry_count=5)
    SettingsBlock.objects.create(name="deployment_settings", values={"auto_retry_on_failure": False})
    make_ssh_environment("unreachable", "./init_aicore.sh", port=free_port())

    target = start_and_run().targets.get()

    assert target.attempts == 1


def test_script_past_its_timeout_fails_with_reason_timeout(sshd, make_ssh_environment):
    settings_blocks()
    make_ssh_environment("slow", sshd.script("slow.sh", "echo begun\nsleep 60\n"), timeout=2)

    coordination = start_and_run()

    target = coordination.targets.get()
    assert (target.status, target.reason) == (T.FAILED, "timeout")
    assert "begun" in target.output_tail
    assert coordination.status == C.FAILED


def long_output_script(sshd, numbers: int, accents: int):
    """A script printing `numbers` comma-separated numbers, then `accents` two-byte 'é',
    then THE-END (no newlines, so the pseudo-terminal changes nothing); and that text."""
    script = sshd.script(
        f"long-output-{numbers}-{accents}.sh",
        f"i=0\nwhile [ $i -lt {numbers} ]; do printf '%d,' $i; i=$((i+1)); done\n"
        f"i=0\nwhile [ $i -lt {accents} ]; do printf '\\303\\251'; i=$((i+1)); done\n"
        "printf 'THE-END'\n",
    )
    return script, "".join(f"{n}," for n in range(numbers)) + "é" * accents + "THE-END"


def test_long_output_keeps_its_valid_utf8_end_within_the_bound_and_counts_every_byte(
    sshd, make_ssh_environment, settings
):
    settings_blocks()
    settings.DEPLOYMENT_OUTPUT_TAIL_BYTES = bound = 1024
    script, printed = long_output_script(sshd, numbers=20000, accents=600)
    # The bound's first byte is the second byte of an 'é': the cut splits a character.
    assert (bound - len(b"THE-END")) % 2 == 1 and len(("é" * 600 + "THE-END").encode("utf-8")) > bound
    make_ssh_environment("chatty", script)

    target = start_and_run().targets.get()

    assert target.status == T.SUCCEEDED
    assert target.output_bytes == len(printed.encode("utf-8"))
    tail = target.output_tail
    assert printed.endswith(tail), "the tail must be the output's end, every character whole"
    assert bound - 3 <= len(tail.encode("utf-8")) <= bound


def test_healthy_check_succeeds_and_records_the_environment_health(sshd, make_ssh_environment, http_server):
    settings_blocks()
    http_server.answer("/health", 200)
    environment = make_ssh_environment(
        "checked", sshd.script("ok.sh", "true\n"), health_check_url=http_server.url("/health")
    )

    coordination = start_and_run()

    assert coordination.status == C.COMPLETED
    assert http_server.paths() == ["/health"]
    environment.refresh_from_db()
    assert environment.last_health == Health.HEALTHY
    assert coordination.targets.get().events.filter(stage="verify", message__startswith="healthy").exists()


def test_failing_health_check_fails_the_environment_after_its_retries(sshd, make_ssh_environment, http_server):
    settings_blocks(health_check_retries=1)
    http_server.answer("/health", 503)
    environment = make_ssh_environment(
        "sick", sshd.script("ok.sh", "true\n"), health_check_url=http_server.url("/health")
    )

    coordination = start_and_run()

    target = coordination.targets.get()
    assert (target.status, target.reason, target.exit_code) == (T.FAILED, "health_check_failed", 0)
    assert "503" in target.error
    assert len(http_server.requests) == 2
    environment.refresh_from_db()
    assert environment.last_health == Health.UNHEALTHY
    assert coordination.status == C.FAILED


def test_a_health_check_redirecting_to_a_login_page_fails_the_environment(sshd, make_ssh_environment, http_server):
    settings_blocks()
    http_server.answer("/health", Answer(302, headers={"Location": http_server.url("/login")}))
    http_server.answer("/login", Answer(200, "<html>sign in</html>", headers={"Content-Type": "text/html"}))
    environment = make_ssh_environment(
        "behind_login", sshd.script("ok.sh", "true\n"), health_check_url=http_server.url("/health")
    )

    coordination = start_and_run()

    target = coordination.targets.get()
    assert (target.status, target.reason) == (T.FAILED, "health_check_failed")
    environment.refresh_from_db()
    assert environment.last_health == Health.UNHEALTHY
    assert coordination.status == C.FAILED


def test_health_checks_can_be_switched_off(sshd, make_ssh_environment, http_server):
    settings_blocks()
    SettingsBlock.objects.create(name="deployment_settings", values={"enable_health_check": False})
    http_server.answer("/health", 503)
    make_ssh_environment("unchecked", sshd.script("ok.sh", "true\n"), health_check_url=http_server.url("/health"))

    assert start_and_run().status == C.COMPLETED
    assert http_server.requests == []


def test_unknown_host_key_fails_the_environment_showing_the_fingerprint(sshd, make_ssh_environment, settings, tmp_path):
    settings_blocks(retry_count=3)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    settings.SSH_KNOWN_HOSTS = str(empty)
    make_ssh_environment("new_machine", sshd.script("ok.sh", "true\n"))

    coordination = start_and_run()

    target = coordination.targets.get()
    offered = fingerprint(parse_host_key(sshd.host_public_key))
    assert (target.status, target.reason, target.attempts) == (T.FAILED, "host_key_unknown", 1)
    assert offered in target.error
    event = target.events.get(new_status=T.FAILED)
    assert event.data["fingerprint"] == offered
    assert event.data["offered_key"].split()[1] == sshd.host_public_key.split()[1]


@pytest.mark.parametrize("known_hosts", ["", "no-such-known-hosts"], ids=["unset", "missing_file"])
def test_without_a_known_hosts_file_or_pinned_key_the_host_is_refused_and_nothing_runs(
    sshd, make_ssh_environment, settings, tmp_path, known_hosts
):
    """A fresh install: no SSH_KNOWN_HOSTS file and no pinned key. The offered key is never
    trusted on first use."""
    settings_blocks(retry_count=2)
    settings.SSH_KNOWN_HOSTS = str(tmp_path / known_hosts) if known_hosts else ""
    marker = sshd.scripts / f"fresh-install-ran-{known_hosts or 'unset'}"
    make_ssh_environment("fresh_machine", sshd.script(f"fresh-{known_hosts or 'unset'}.sh", f"touch '{marker}'\n"))

    coordination = start_and_run()

    target = coordination.targets.get()
    assert (target.status, target.reason, target.attempts) == (T.FAILED, "host_key_unknown", 1)
    assert target.events.get(new_status=T.FAILED).data["fingerprint"] == fingerprint(
        parse_host_key(sshd.host_public_key)
    )
    assert not marker.exists()
    assert coordination.status == C.FAILED


def test_secrets_never_reach_events_or_errors(sshd, make_ssh_environment):
    settings_blocks()
    password = "pw-8c1f5e-never-show-me"
    make_ssh_environment("with_password", "./init_aicore.sh", ssh_key_path="", password=password)

    coordination = start_and_run()

    target = coordination.targets.get()
    assert target.status == T.FAILED
    assert target.reason == "auth_failed"
    texts = [target.error, target.output_tail, coordination.error]
    for event in StageEvent.objects.all():
        texts += [event.message, repr(event.data)]
    assert not any(password in text for text in texts)


def test_running_a_finished_coordination_again_changes_nothing(sshd, make_ssh_environment):
    settings_blocks()
    make_ssh_environment("once", sshd.script("count.sh", f'echo run >> "{sshd.scripts}/count-runs"\n'))
    coordination = start_and_run()
    events_before = StageEvent.objects.count()

    run_coordination(coordination_pk=coordination.pk)

    assert StageEvent.objects.count() == events_before
    assert (sshd.scripts / "count-runs").read_text() == "run\n"


def test_redelivered_task_interrupts_started_environments_and_runs_the_rest(sshd, make_ssh_environment):
    """A worker died mid-run and the broker handed the task out again."""
    settings_blocks()
    script = sshd.script("count2.sh", f'echo "$ENVIRONMENT_ID" >> "{sshd.scripts}/ran"\n')
    make_ssh_environment("was_running", script)
    make_ssh_environment("never_started", script)
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    for status in (C.EC2_DEPLOYING, C.EC2_COMPLETED, C.LOCAL_TRIGGERING):
        assert transition(coordination, status)
    running = coordination.targets.get(environment_id="was_running")
    assert transition(running, T.TRIGGERING) and transition(running, T.RUNNING)

    run_coordination(coordination_pk=coordination.pk)

    coordination.refresh_from_db()
    running.refresh_from_db()
    assert running.status == T.INTERRUPTED
    assert coordination.targets.get(environment_id="never_started").status == T.SUCCEEDED
    assert (sshd.scripts / "ran").read_text() == "never_started\n"
    assert coordination.status == C.FAILED
    assert "was_running (interrupted)" in coordination.error


@pytest.mark.django_db(transaction=True)
def test_output_is_in_the_record_before_the_script_ends(sshd, make_ssh_environment):
    settings_blocks()
    make_ssh_environment("chatty", sshd.script("chatty.sh", "echo phase one\nsleep 3\necho phase two\n"))
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    runner = in_thread(run_coordination, coordination_pk=coordination.pk)
    seen_while_running = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and seen_while_running is None:
        target = CoordinationTarget.objects.get(coordination=coordination)
        if target.status == T.RUNNING and "phase one" in target.output_tail:
            seen_while_running = target.output_tail
        time.sleep(0.1)
    runner.join(timeout=30)

    assert seen_while_running is not None
    assert "phase two" not in seen_while_running
    target = CoordinationTarget.objects.get(coordination=coordination)
    assert target.status == T.SUCCEEDED
    assert "phase one\nphase two\n" in target.output_tail


def test_an_unreadable_secret_fails_the_coordination_instead_of_leaving_it_active(sshd, make_ssh_environment, settings):
    from cryptography.fernet import Fernet

    settings_blocks()
    make_ssh_environment("with_password", "./init_aicore.sh", password="stored-with-the-old-key")
    coordination = coordination_start(triggered_by=TriggerSource.COMMAND)
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    run_coordination(coordination_pk=coordination.pk)

    coordination.refresh_from_db()
    assert coordination.status == C.FAILED
    assert "cannot be decrypted" in coordination.error
    assert "stored-with-the-old-key" not in coordination.error
    assert coordination.targets.get().status == T.FAILED
