"""The local agent (agent/powerautomation_agent.py) as a real process on loopback, as the
coordinator's end-to-end tests meet it."""

import subprocess
import sys
from pathlib import Path

from tests.support.ports import free_port, wait_for_port
from tests.support.processes import ROOT, stop_process

AGENT = ROOT / "agent" / "powerautomation_agent.py"


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
