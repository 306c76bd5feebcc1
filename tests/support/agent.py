"""The local agent (agent/powerautomation_agent.py) as a real process on loopback, a real
receiver for its callbacks, and a small HTTP client to talk to it.

`launch_agent` and `AgentProcess` serve the agent's own tests (tests/agent); `Agent` is the
agent as the coordinator's end-to-end tests meet it. Nothing here touches the database or
imports Django models."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support import processes
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import ROOT, stop_process

AGENT = ROOT / "agent" / "powerautomation_agent.py"
TOKEN = "agent-test-token-7f3a"
WAIT = 15.0  # upper bound on every wait in the agent tests

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
    """`processes.wait_until` with the agent tests' defaults: at most WAIT seconds, polled
    every 50 ms."""
    return processes.wait_until(predicate, timeout, message, interval=0.05)


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

    def wait_listening(self) -> None:
        def listening():
            if self.process.poll() is not None:
                raise AssertionError(f"the agent exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            with socket.socket() as sock:
                sock.settimeout(0.2)
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, message="agent listening")

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


def launch_agent(
    home: Path, log_path: Path, script: str, *, webhook_secret: str | None = None, args=()
) -> AgentProcess:
    """Start the agent in `home` (made here) with `script` (a /bin/sh body) as its init script
    and TOKEN as its token (`home` may be an earlier agent's, to restart it); it may not listen
    yet (`AgentProcess.wait_listening`)."""
    home.mkdir(exist_ok=True)
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
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=agent_environment())
    return AgentProcess(port=port, home=home, process=process, log_path=log_path)


class Agent:
    """The local agent as a real process on loopback, registered by the coordinator's
    end-to-end tests as an http_api or webhook environment."""

    def __init__(self, folder: Path, script_body: str, *, token: str = "", webhook_secret: str = ""):
        folder.mkdir(parents=True, exist_ok=True)
        self.script = folder / "init_aicore.sh"
        self.script.write_text("#!/bin/sh\n" + script_body)
        self.script.chmod(0o755)
        self.port = free_port()
        args = [sys.executable, str(AGENT), "--port", str(self.port)]
        args += ["--bind", "127.0.0.1", "--script", str(self.script)]
        token_file = folder / "token.txt"
        token_file.write_text(token or "unused-token")
        args += ["--token-file", str(token_file)]
        if webhook_secret:
            (folder / "secret.txt").write_text(webhook_secret)
            args += ["--webhook-secret-file", str(folder / "secret.txt")]
        self.log_path = folder / "agent.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port)

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
