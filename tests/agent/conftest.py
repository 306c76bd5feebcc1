"""The agent as a real process on loopback, a real callback receiver, and an HTTP client.

Nothing here touches the database or imports Django models."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "agent" / "powerautomation_agent.py"
TOKEN = "agent-test-token-7f3a"
WAIT = 15.0  # upper bound on every wait in these tests

# Writes what it was told into files next to itself (its default working directory).
DEFAULT_SCRIPT = """\
echo run >> runs.txt
{
  echo "EC2_INSTANCE_ID=$EC2_INSTANCE_ID"
  echo "EC2_PUBLIC_IP=$EC2_PUBLIC_IP"
  echo "DEPLOYMENT_VERSION=$DEPLOYMENT_VERSION"
  echo "COORDINATION_ID=$COORDINATION_ID"
  echo "ENVIRONMENT_ID=$ENVIRONMENT_ID"
} > env.txt
echo "init output for $COORDINATION_ID"
echo "a line on stderr" >&2
"""

# Runs until the test creates the file `release` (at most 15 s).
BLOCKING_SCRIPT = """\
echo run >> runs.txt
i=0
while [ ! -f release ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i + 1)); done
echo released
"""


def wait_until(predicate, timeout: float = WAIT, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{message} not reached within {timeout} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_script(path: Path, body: str, executable: bool = True) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    if executable:
        path.chmod(0o755)
    return path


@dataclass
class Response:
    status: int
    headers: dict
    json: dict | None


def request(port: int, method: str, path: str, body=None, headers: dict | None = None) -> Response:
    """One request to 127.0.0.1:port; a dict body is sent as JSON, bytes as they are."""
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        payload = json.loads(raw) if raw else None
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)
    finally:
        connection.close()


@dataclass
class Callback:
    path: str
    headers: dict
    json: dict


class CallbackReceiver:
    """A loopback HTTP server that records every POST and answers with the queued statuses
    (200 once the queue is empty)."""

    def __init__(self):
        self.calls: list[Callback] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with owner.lock:
                    owner.calls.append(Callback(self.path, dict(self.headers), json.loads(raw)))
                    status = owner.statuses.pop(0) if owner.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/api/callbacks/one-time-token-123/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for_calls(self, count: int = 1) -> list[Callback]:
        wait_until(lambda: len(self.calls) >= count, message=f"{count} callback(s)")
        return list(self.calls)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class AgentProcess:
    port: int
    home: Path  # the script's folder, and its working directory
    process: subprocess.Popen
    log_path: Path
    token: str = TOKEN
    extra: dict = field(default_factory=dict)

    def post(self, path: str, body, headers: dict | None = None) -> Response:
        return request(self.port, "POST", path, body, headers)

    def trigger(self, body, token: str | None = TOKEN, **headers: str) -> Response:
        headers = {k.replace("_", "-"): v for k, v in headers.items()}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.post("/api/deploy/init", body, headers)

    def health(self) -> dict:
        response = request(self.port, "GET", "/health")
        assert response.status == 200
        return response.json

    def runs(self) -> int:
        path = self.home / "runs.txt"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def script_environment(self) -> dict[str, str]:
        lines = (self.home / "env.txt").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)

    def wait_idle(self) -> dict:
        return wait_until(lambda: (h := self.health())["running"] is None and h["last"] and h, message="idle agent")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def agent_environment() -> dict[str, str]:
    # The agent and its callbacks stay on loopback, whatever proxy this machine uses.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_agent_command(args: list[str], timeout: float = WAIT) -> subprocess.CompletedProcess:
    """Run the agent expecting it to refuse to start."""
    return subprocess.run(
        [sys.executable, str(AGENT), *args], capture_output=True, text=True, timeout=timeout, env=agent_environment()
    )


@pytest.fixture
def callback_receiver():
    receiver = CallbackReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def start_agent(tmp_path, callback_receiver):
    """Start the agent with `script` (a /bin/sh body) as its init script; stopped at the end,
    before the callback receiver, so a last callback still finds it."""
    started: list[AgentProcess] = []

    def start(script: str = DEFAULT_SCRIPT, *, webhook_secret: str | None = None, args=()) -> AgentProcess:
        home = tmp_path / f"agent-{len(started)}"
        home.mkdir()
        write_script(home / "init_aicore.sh", script)
        (home / "token.txt").write_text(TOKEN + "\n")
        command = [
            sys.executable,
            str(AGENT),
            "--port",
            str(port := free_port()),
            "--bind",
            "127.0.0.1",
            "--script",
            str(home / "init_aicore.sh"),
            "--token-file",
            str(home / "token.txt"),
            *args,
        ]
        if webhook_secret is not None:
            (home / "secret.txt").write_text(webhook_secret + "\n")
            command += ["--webhook-secret-file", str(home / "secret.txt")]
        log_path = tmp_path / f"agent-{len(started)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=agent_environment())
        agent = AgentProcess(port=port, home=home, process=process, log_path=log_path)
        started.append(agent)

        def listening():
            if process.poll() is not None:
                raise AssertionError(f"the agent exited with {process.returncode}:\n{log_path.read_text()}")
            with socket.socket() as sock:
                sock.settimeout(0.2)
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, message="agent listening")
        return agent

    yield start
    for agent in started:
        (agent.home / "release").touch()
        agent.stop()


@pytest.fixture
def agent(start_agent):
    return start_agent()


@pytest.fixture
def trigger_body(callback_receiver):
    def make(**overrides) -> dict:
        body = {
            "action": "init_local_environment",
            "script_path": "./init_aicore.sh",
            "working_directory": "/nonexistent",
            "environment_id": "mac-studio-1",
            "coordination_id": "coord-42",
            "ec2_instance_id": "i-0abc123",
            "ec2_public_ip": "127.0.0.1",
            "deployment_version": "v2.3.1",
            "timeout": 30,
            "timestamp": "2026-11-23T10:00:00Z",
            "callback_url": callback_receiver.url(),
        }
        body.update(overrides)
        return {k: v for k, v in body.items() if v is not ...}

    return make
