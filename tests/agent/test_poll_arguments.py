"""The polling mode's command line: refused flags exit 2 naming the flag, before anything
is sent anywhere (no network is needed: these fail at argument checking)."""

import subprocess
import sys

import pytest

from tests.support.agent import AGENT

TOKEN = "pa_agent_" + "t" * 40


@pytest.fixture
def files(tmp_path):
    script = tmp_path / "init_aicore.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    return ["--token-file", str(token), "--script", str(script)]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(AGENT), *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--poll", "http://10.20.30.40:8000", "--environment-id", "x"], "--poll"),
        (["--poll", "ftp://127.0.0.1", "--environment-id", "x"], "--poll"),
        (["--poll", "https://127.0.0.1"], "--environment-id"),
        (["--poll", "https://127.0.0.1", "--environment-id", "x", "--port", "8080"], "--port"),
        (["--port", "8080", "--environment-id", "x"], "--environment-id"),
        (["--poll", "https://127.0.0.1", "--environment-id", "x", "--ca-bundle", "/nonexistent.pem"], "--ca-bundle"),
        ([], "--poll"),
    ],
)
def test_refused_flags_exit_2_naming_the_flag(files, args, named):
    result = run(*args, *files)
    assert result.returncode == 2
    assert named in result.stderr
    assert TOKEN not in result.stderr + result.stdout


def test_plain_http_to_loopback_is_accepted_and_the_token_never_logged(files):
    # 127.0.0.0/8 needs no --allow-http; with nothing listening there it keeps retrying.
    process = subprocess.Popen(
        [sys.executable, str(AGENT), "--poll", "http://127.0.0.2:9", "--environment-id", "x", *files],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stderr.readline()
        assert "polling 127.0.0.2:9 as x" in line
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert TOKEN not in (process.stderr.read() or "")
