"""Polling agents end to end: agent/powerautomation_agent.py --poll as real processes
against the platform's web process (gunicorn) and a real qcluster, beside a loopback sshd
and the listening agent for http_api. Every script records each start in a file, so "ran
once" is counted, not assumed."""

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployments.models import (
    Coordination,
    CoordinationStatus as C,
    CoordinationTarget,
    TargetStatus as T,
)
from environments.agent_tokens import new_token
from environments.models import RemoteEnvironment, SettingsBlock
from tests.support.agent import Agent
from tests.support.leases import wait_for_leases_to_expire
from tests.support.passes import sqlite_pass_only
from tests.support.processes import ROOT, manage, stop_process, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT = ROOT / "agent" / "powerautomation_agent.py"
WAIT = 60
# Records its start, its pid and its variables; blocks until `release` exists (at most 60 s).
SCRIPT = """\
echo start >> runs.txt
echo $$ > pid.txt
echo "hello from $ENVIRONMENT_ID $DEPLOYMENT_VERSION $COORDINATION_ID"
i=0
while [ -n "$BLOCK" ] && [ ! -f release ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
echo "done on $ENVIRONMENT_ID"
exit ${EXIT_CODE:-0}
"""


class PollingAgent:
    """`powerautomation_agent.py --poll` as a real process, in a folder of its own."""

    def __init__(self, folder: Path, url: str, environment_id: str, token: str, *, block: bool = False, **env):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        script = folder / "init_aicore.sh"
        if not script.exists():
            script.write_text("#!/bin/sh\n" + SCRIPT)
            script.chmod(0o755)
        token_file = folder / f"token-{os.getpid()}-{time.monotonic_ns()}"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        self.log_path = folder / f"agent-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")
        environment = dict(os.environ, BLOCK="1" if block else "", **env)
        self.process = subprocess.Popen(
            [sys.executable, str(AGENT), "--poll", url, "--environment-id", environment_id]
            + ["--token-file", str(token_file), "--script", str(script)],
            cwd=folder,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def runs(self) -> int:
        path = self.folder / "runs.txt"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def release(self) -> None:
        (self.folder / "release").write_text("")

    def script_pid(self) -> int:
        return int((self.folder / "pid.txt").read_text())

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            stop_process(self.process)
        self.log.close()


@pytest.fixture
def polling_agents(tmp_path):
    started: list[PollingAgent] = []

    def start(name: str, url: str, environment_id: str, token: str, **kwargs) -> PollingAgent:
        agent = PollingAgent(tmp_path / name, url, environment_id, token, **kwargs)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def polling_environment(environment_id: str, *, timeout: int = 60) -> str:
    token = new_token()
    environment = RemoteEnvironment(
        environment_id=environment_id,
        environment_type="mac_local",
        connection_method="polling",
        poll_interval=1,
        timeout=timeout,
    )
    environment.agent_token = token
    environment.full_clean()
    environment.save()
    return token


@pytest.fixture
def platform(web_server, start_qcluster):
    SettingsBlock.objects.create(
        name="default_settings", values={"retry_count": 0, "retry_delay": 0, "health_check_retries": 0}
    )
    return web_server


def trigger(cluster, *args: str) -> subprocess.CompletedProcess:
    return manage(["trigger_local", *args], cluster.env, timeout=120)


def target(environment_id: str) -> CoordinationTarget:
    return CoordinationTarget.objects.get(environment_id=environment_id)


def status_is(environment_id: str, *statuses: str):
    return lambda: CoordinationTarget.objects.filter(environment_id=environment_id, status__in=statuses).exists()


def test_ssh_http_api_and_polling_environments_in_one_deployment_each_run_once(
    sshd, make_ssh_environment, platform, start_qcluster, polling_agents, tmp_path
):
    cluster = start_qcluster(PLATFORM_BASE_URL=platform)
    ssh_marker = sshd.scripts / "ssh-ran.txt"
    make_ssh_environment("linux_001", sshd.script("init.sh", f'echo run >> "{ssh_marker}"\necho ssh says hi\n'))
    api_agent = Agent(tmp_path / "api", "echo run >> runs.txt\necho api says hi\n", token="api-token-e2e-polling")
    try:
        RemoteEnvironment.objects.create(
            environment_id="docker_001",
            environment_type="docker",
            connection_method="http_api",
            host="127.0.0.1",
            port=api_agent.port,
            api_token="api-token-e2e-polling",  # noqa: S106
            timeout=30,
        )
        token = polling_environment("laptop_001")
        laptop = polling_agents("laptop", platform, "laptop_001", token)

        result = trigger(cluster, "--wait", "--version", "v9")

        assert result.returncode == 0, result.stdout + result.stderr + cluster.output() + laptop.output()
        assert Coordination.objects.get().status == C.COMPLETED
        assert laptop.runs() == 1
        assert len(ssh_marker.read_text().splitlines()) == 1
        assert (api_agent.script.parent / "runs.txt").read_text().count("run") == 1
        polled = target("laptop_001")
        assert polled.status == T.SUCCEEDED and polled.exit_code == 0
        coordination_id = Coordination.objects.get().coordination_id
        assert f"hello from laptop_001 v9 {coordination_id}\n" in polled.output_tail
        assert "done on laptop_001" in polled.output_tail
        assert token not in laptop.output() and token not in cluster.output()
    finally:
        api_agent.stop()


def test_a_worker_killed_mid_run_changes_nothing_for_a_polling_run(platform, start_qcluster, polling_agents):
    cluster = start_qcluster(DEPLOYMENT_LEASE_SECONDS="3")
    token = polling_environment("laptop_001")
    laptop = polling_agents("laptop", platform, "laptop_001", token, block=True)
    assert trigger(cluster, "--version", "v1").returncode == 0
    wait_until(status_is("laptop_001", T.RUNNING), WAIT, "the agent took the run")

    os.killpg(cluster.process.pid, signal.SIGKILL)
    cluster.process.wait(timeout=10)
    laptop.release()
    # Recorded by the web process from the agent's report: no worker is alive.
    wait_until(status_is("laptop_001", T.SUCCEEDED), WAIT, "the agent's result recorded")

    # The dead worker's lease runs out; a new worker's start-up reaper then takes the rest.
    wait_for_leases_to_expire()
    replacement = start_qcluster(DEPLOYMENT_LEASE_SECONDS="3")
    wait_until(
        lambda: Coordination.objects.filter(status=C.COMPLETED).exists(),
        WAIT,
        "a new worker closed the coordination",
    )
    assert laptop.runs() == 1, replacement.output() + laptop.output()
    assert "done on laptop_001" in target("laptop_001").output_tail


def test_an_agent_killed_mid_run_loses_it_with_its_output_kept(platform, start_qcluster, polling_agents):
    cluster = start_qcluster(AGENT_HEARTBEAT_TIMEOUT_SECONDS="4")
    token = polling_environment("laptop_001")
    laptop = polling_agents("laptop", platform, "laptop_001", token, block=True)
    assert trigger(cluster).returncode == 0
    wait_until(lambda: "hello from laptop_001" in target("laptop_001").output_tail, WAIT, "the first output line")

    laptop.kill()
    killed = time.monotonic()
    wait_until(status_is("laptop_001", T.FAILED), WAIT, "the run failed")

    lost = target("laptop_001")
    assert lost.reason == "agent_lost", lost.error
    assert time.monotonic() - killed < 4 + 10  # the bound, plus the lead's one-second look
    assert "hello from laptop_001" in lost.output_tail
    wait_until(lambda: Coordination.objects.filter(status=C.FAILED).exists(), WAIT, "the coordination failed")


def test_two_agents_with_one_token_run_the_script_once(platform, start_qcluster, polling_agents, tmp_path):
    cluster = start_qcluster()
    token = polling_environment("laptop_001")
    first = polling_agents("laptop", platform, "laptop_001", token)
    second = polling_agents("laptop", platform, "laptop_001", token)  # the same folder: one runs.txt

    result = trigger(cluster, "--wait")

    assert result.returncode == 0, result.stdout + first.output() + second.output()
    time.sleep(3)  # three more polls each: nothing else is offered, nothing runs again
    assert first.runs() == 1


def test_a_cancel_reaches_the_agent_which_kills_the_script(platform, start_qcluster, polling_agents):
    cluster = start_qcluster()
    token = polling_environment("laptop_001")
    laptop = polling_agents("laptop", platform, "laptop_001", token, block=True)
    assert trigger(cluster).returncode == 0
    wait_until(lambda: (laptop.folder / "pid.txt").exists(), WAIT, "the script started")
    pid = laptop.script_pid()

    coordination = Coordination.objects.get()
    result = manage(["deployment_cancel", coordination.coordination_id], cluster.env, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
    wait_until(lambda: not _alive(pid), WAIT, "the script was killed")
    cancelled = target("laptop_001")
    assert cancelled.status == T.CANCELLED
    assert Coordination.objects.get().status == C.CANCELLED
    assert "done on laptop_001" not in cancelled.output_tail
    assert laptop.runs() == 1


@sqlite_pass_only  # the agent's token and its absence are Python rules; the 20-minute budget
def test_a_wrong_token_claims_nothing_and_an_agent_that_comes_up_in_time_runs(platform, start_qcluster, polling_agents):
    cluster = start_qcluster()
    token = polling_environment("laptop_001", timeout=60)
    other = polling_environment("desktop_001")
    RemoteEnvironment.objects.filter(environment_id="desktop_001").update(enabled=False)
    assert trigger(cluster, "--environments", "laptop_001").returncode == 0
    wait_until(status_is("laptop_001", T.TRIGGERING), WAIT, "the run offered")

    wrong = polling_agents("wrong", platform, "laptop_001", "pa_agent_" + "w" * 40)
    borrowed = polling_agents("borrowed", platform, "laptop_001", other)
    time.sleep(4)  # several polls each, all refused
    assert target("laptop_001").status == T.TRIGGERING
    assert wrong.runs() == borrowed.runs() == 0
    assert "401" in wrong.output()

    laptop = polling_agents("laptop", platform, "laptop_001", token)
    wait_until(lambda: Coordination.objects.filter(status=C.COMPLETED).exists(), WAIT, "completed")
    assert laptop.runs() == 1


@sqlite_pass_only  # the agent's token and its absence are Python rules; the 20-minute budget
def test_an_agent_that_never_comes_fails_the_run_agent_offline(platform, start_qcluster):
    cluster = start_qcluster()
    polling_environment("laptop_001", timeout=3)

    result = trigger(cluster, "--wait")

    assert result.returncode == 1, result.stdout
    offline = target("laptop_001")
    assert (offline.status, offline.reason) == (T.FAILED, "agent_offline")
    assert "agent never seen" in offline.error


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class LossyProxy:
    """A loopback HTTP proxy in front of the platform that loses every second answer to an
    output request: the request reaches the platform, the agent never hears back."""

    def __init__(self, upstream: str):
        host, port = upstream.removeprefix("http://").split(":")
        proxy = self
        self.output_requests = 0
        self.lost = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {name: value for name, value in self.headers.items() if name.lower() != "host"}
                connection.request("POST", self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                connection.close()
                if self.path.endswith("/output"):
                    proxy.output_requests += 1
                    if proxy.output_requests % 2 == 0:
                        proxy.lost += 1
                        self.close_connection = True
                        return  # the answer is lost on the way back
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_output_whose_answers_are_lost_arrives_whole_and_once(platform, start_qcluster, polling_agents, tmp_path):
    cluster = start_qcluster()
    token = polling_environment("laptop_001")
    proxy = LossyProxy(platform)
    try:
        folder = tmp_path / "laptop"
        folder.mkdir()
        script = folder / "init_aicore.sh"
        script.write_text('#!/bin/sh\nfor i in $(seq 1 40); do echo "line $i é"; sleep 0.05; done\n')
        script.chmod(0o755)
        laptop = polling_agents("laptop", proxy.url, "laptop_001", token)

        result = trigger(cluster, "--wait")

        assert result.returncode == 0, result.stdout + laptop.output()
        assert proxy.lost >= 2, "the proxy lost no answer: the test proves nothing"
        expected = "".join(f"line {i} é\n" for i in range(1, 41))
        finished = target("laptop_001")
        assert finished.output_tail == expected
        assert finished.output_bytes == len(expected.encode())
    finally:
        proxy.stop()
