"""The SSH connector against a real OpenSSH server on loopback. No database involved:
connectors take a plain Target and report through a Reporter."""

import os
import threading
import time
import uuid

import pytest

from environments.connectors import ConnectorError, DeploymentContext, Target
from environments.connectors.ssh import SSHConnector, build_command, fingerprint, parse_host_key, script_invocation
from tests.support.ports import free_port
from tests.support.sshd import keygen


class RecordingReporter:
    def __init__(self):
        self.stop = threading.Event()
        self.started: list[str] = []
        self.chunks: list[tuple[float, str]] = []

    def script_started(self, detail: str) -> None:
        self.started.append(detail)

    def output(self, text: str) -> None:
        self.chunks.append((time.monotonic(), text))

    @property
    def text(self) -> str:
        return "".join(chunk for _, chunk in self.chunks)


def make_target(sshd, script, **overrides) -> Target:
    values = {
        "environment_id": "linux_local_001",
        "connection_method": "ssh",
        "host": sshd.host,
        "port": sshd.port,
        "username": sshd.user,
        "ssh_key_path": str(sshd.client_key),
        "init_script_path": str(script),
        "timeout": 20,
    }
    values.update(overrides)
    return Target(**values)


def make_context(sshd, **overrides) -> DeploymentContext:
    values = {
        "coordination_id": "deploy_20261123_120000_ab12",
        "ec2_instance_id": "i-0123456789abcdef0",
        "ec2_public_ip": "127.0.0.9",
        "deployment_version": "v1.0.0",
        "connect_timeout": 5,
        "known_hosts_path": str(sshd.known_hosts),
    }
    values.update(overrides)
    return DeploymentContext(**values)


def run(sshd, script, reporter=None, context=None, **overrides):
    reporter = reporter or RecordingReporter()
    result = SSHConnector().run(make_target(sshd, script, **overrides), context or make_context(sshd), reporter)
    return result, reporter


def test_script_sees_the_deployment_context_in_its_environment(sshd):
    script = sshd.script(
        "context.sh",
        'echo "instance=$EC2_INSTANCE_ID ip=$EC2_PUBLIC_IP version=$DEPLOYMENT_VERSION"\n'
        'echo "coordination=$COORDINATION_ID environment=$ENVIRONMENT_ID"\n',
    )
    result, reporter = run(sshd, script)
    assert result.exit_code == 0
    assert reporter.started
    assert "instance=i-0123456789abcdef0 ip=127.0.0.9 version=v1.0.0\n" in reporter.text
    assert "coordination=deploy_20261123_120000_ab12 environment=linux_local_001\n" in reporter.text
    assert "\r" not in reporter.text


def test_working_directory_is_where_the_script_runs(sshd):
    workdir = sshd.scripts / "work dir"
    workdir.mkdir()
    workdir.chmod(0o777)
    script = workdir / "init_aicore.sh"
    script.write_text("#!/bin/sh\npwd\n")
    script.chmod(0o755)
    result, reporter = run(sshd, "./init_aicore.sh", working_directory=str(workdir))
    assert result.exit_code == 0
    assert reporter.text.strip() == str(workdir)


def test_non_zero_exit_status_is_reported(sshd):
    script = sshd.script("fails.sh", "echo about to fail >&2\nexit 7\n")
    result, reporter = run(sshd, script)
    assert result.exit_code == 7
    assert "about to fail" in reporter.text


def remote_process_ends(pid_file, timeout=15.0) -> bool:
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_script_past_its_timeout_is_stopped(sshd):
    pid_file = sshd.scripts / "slow.pid"
    script = sshd.script("slow.sh", f"echo $$ > '{pid_file}'\necho started\nsleep 30\n")
    started = time.monotonic()
    with pytest.raises(ConnectorError) as caught:
        run(sshd, script, timeout=2)
    assert caught.value.reason == "timeout"
    assert caught.value.permanent
    assert time.monotonic() - started < 15
    # Closing the channel hung up the pseudo-terminal: the remote script is gone.
    assert remote_process_ends(pid_file)


def test_output_is_streamed_while_the_script_runs(sshd):
    script = sshd.script("phases.sh", "echo phase one\nsleep 2\necho phase two\n")
    result, reporter = run(sshd, script)
    assert result.exit_code == 0
    first = next(at for at, chunk in reporter.chunks if "phase one" in chunk)
    second = next(at for at, chunk in reporter.chunks if "phase two" in chunk)
    assert second - first >= 1.5, "phase one must arrive before the script ends"


def test_closed_port_is_a_retryable_connection_failure(sshd):
    with pytest.raises(ConnectorError) as caught:
        run(sshd, "./init_aicore.sh", port=free_port())
    assert caught.value.reason == "connection_failed"
    assert not caught.value.permanent
    assert caught.value.message.endswith(": Connection refused")


def test_wrong_client_key_is_a_permanent_auth_failure(sshd, tmp_path):
    keygen(tmp_path / "stranger")
    with pytest.raises(ConnectorError) as caught:
        run(sshd, "./init_aicore.sh", ssh_key_path=str(tmp_path / "stranger"))
    assert caught.value.reason == "auth_failed"
    assert caught.value.permanent


def test_missing_client_key_names_the_path(sshd, tmp_path):
    with pytest.raises(ConnectorError) as caught:
        run(sshd, "./init_aicore.sh", ssh_key_path=str(tmp_path / "absent"))
    assert caught.value.reason == "key_unreadable"
    assert str(tmp_path / "absent") in caught.value.message


def test_unknown_host_key_is_refused_with_its_fingerprint(sshd, tmp_path):
    marker = sshd.scripts / "unknown-host-ran"
    script = sshd.script("unknown-host.sh", f"touch '{marker}'\n")
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    with pytest.raises(ConnectorError) as caught:
        run(sshd, script, context=make_context(sshd, known_hosts_path=str(empty_known_hosts)))
    offered = fingerprint(parse_host_key(sshd.host_public_key))
    assert caught.value.reason == "host_key_unknown"
    assert caught.value.permanent
    assert offered in caught.value.message
    assert caught.value.data["fingerprint"] == offered
    assert not marker.exists()


def test_changed_host_key_is_refused_showing_both_fingerprints(sshd, tmp_path):
    marker = sshd.scripts / "changed-host-ran"
    script = sshd.script("changed-host.sh", f"touch '{marker}'\n")
    impostor = keygen(tmp_path / "impostor")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")
    with pytest.raises(ConnectorError) as caught:
        run(sshd, script, context=make_context(sshd, known_hosts_path=str(known_hosts)))
    assert caught.value.reason == "host_key_changed"
    assert "CHANGED" in caught.value.message
    assert fingerprint(parse_host_key(sshd.host_public_key)) in caught.value.message
    assert fingerprint(parse_host_key(impostor)) in caught.value.message
    assert not marker.exists()


def test_pinned_host_key_is_used_instead_of_known_hosts(sshd, tmp_path):
    script = sshd.script("pinned.sh", "echo pinned ok\n")
    no_known_hosts = str(tmp_path / "absent")
    context = make_context(sshd, known_hosts_path=no_known_hosts)
    result, reporter = run(sshd, script, context=context, host_key=sshd.host_public_key)
    assert result.exit_code == 0
    assert "pinned ok" in reporter.text

    wrong_pin = keygen(tmp_path / "other")
    with pytest.raises(ConnectorError) as caught:
        run(sshd, script, context=context, host_key=wrong_pin)
    assert caught.value.reason == "host_key_changed"


def test_hostile_script_path_runs_a_file_of_that_name_and_no_second_command(sshd):
    pwned = f"/tmp/pa-pwned-{uuid.uuid4().hex}"
    hostile = f"x; touch {pwned}"
    # Relative to the working directory, that path names a file in a folder "x; touch ".
    literal = sshd.scripts / hostile
    literal.parent.mkdir(parents=True)
    literal.write_text(f"#!/bin/sh\necho literal file ran\ntouch '{sshd.scripts}/literal-ran'\n")
    literal.chmod(0o755)
    result, reporter = run(sshd, hostile, working_directory=str(sshd.scripts))
    assert result.exit_code == 0
    assert "literal file ran" in reporter.text
    assert (sshd.scripts / "literal-ran").exists()
    assert not os.path.exists(pwned)


def test_hostile_context_values_reach_the_script_verbatim(sshd):
    pwned = sshd.scripts / "pwned-by-version"
    script = sshd.script("echo-version.sh", 'printf "%s\\n" "$DEPLOYMENT_VERSION"\n')
    hostile = f"$(touch {pwned})'; touch {pwned}; echo '"
    result, reporter = run(sshd, script, context=make_context(sshd, deployment_version=hostile))
    assert result.exit_code == 0
    assert reporter.text.strip() == hostile
    assert not pwned.exists()


def test_cancel_closes_the_running_session(sshd):
    pid_file = sshd.scripts / "cancellable.pid"
    script = sshd.script("cancellable.sh", f"echo $$ > '{pid_file}'\necho running\nsleep 30\n")
    reporter = RecordingReporter()
    threading.Timer(1.0, reporter.stop.set).start()
    with pytest.raises(ConnectorError) as caught:
        run(sshd, script, reporter=reporter)
    assert caught.value.reason == "cancelled"
    assert remote_process_ends(pid_file)


def test_command_quotes_paths_and_keeps_home_relative_paths():
    target = Target(
        environment_id="e",
        connection_method="ssh",
        init_script_path="~/aicore0624/init_aicore.sh",
        working_directory="~/my dir",
    )
    invocation = script_invocation(target)
    assert invocation == 'cd "$HOME"/\'my dir\' && exec "$HOME"/aicore0624/init_aicore.sh'
    command = build_command(target, DeploymentContext(coordination_id="c"))
    assert command.startswith("export ") and command.endswith(" && " + invocation)


def test_host_key_parsing_reads_a_public_key_line_and_rejects_garbage(sshd):
    key_type, blob = sshd.host_public_key.split()[:2]
    assert parse_host_key(f"{key_type} {blob} comment").get_base64() == blob
    with pytest.raises(ValueError):
        parse_host_key("ssh-ed25519")
    with pytest.raises(ValueError):
        parse_host_key("ssh-ed25519 not-base64!!")
